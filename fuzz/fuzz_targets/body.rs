//! Fuzzes the write routes' body reader (`src/http/body.rs`) the way `src/server/writes.rs`
//! drives it: fed whatever each read returned.
//!
//! Input: byte 0 picks the framing (even: chunked; odd: a Content-Length taken from byte 1) and,
//! from its high bits, the limit; the next up to 8 bytes are read sizes (cycled; 0 = all that is
//! left); the rest is what the client sends. It checks that the reader never panics, never takes
//! more than it is given, never holds more than the limit, gives the same body or error however
//! the bytes were split, and, for a Content-Length, returns exactly that many bytes.

#![no_main]

use keiko::http::body::{Body, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&length, rest)) = rest.split_first() else { return };
    let limit = 1u64 << (mode >> 4);
    let framing = if mode & 1 == 0 { Framing::Chunked } else { Framing::Length(u64::from(length)) };
    let (reads, stream) = rest.split_at(rest.len().min(8));
    let whole = read(framing, limit, stream, &[]);
    if reads.iter().any(|&r| r != 0) {
        assert_eq!(read(framing, limit, stream, reads), whole, "outcome depends on the read sizes");
    }
    if let (Framing::Length(n), Some(Ok((body, _)))) = (framing, &whole) {
        assert_eq!(body.len() as u64, n);
        assert_eq!(&body[..], &stream[..n as usize]);
    }
});

/// The body (and how many bytes it took) or the error, or None while it is incomplete.
fn read(framing: Framing, limit: u64, stream: &[u8], reads: &[u8]) -> Option<Result<(Vec<u8>, usize), String>> {
    let mut body = match Body::new(framing, limit) {
        Ok(body) => body,
        Err(e) => return Some(Err(format!("{e:?}"))),
    };
    let mut sizes = reads.iter().cycle();
    let mut at = 0;
    while !body.is_done() {
        if at == stream.len() {
            return None;
        }
        let size = match sizes.next() {
            Some(&n) if n > 0 => usize::from(n),
            _ => stream.len() - at,
        };
        let piece = &stream[at..(at + size).min(stream.len())];
        match body.feed(piece) {
            Ok(took) => {
                assert!(took <= piece.len(), "took {took} of {}", piece.len());
                assert!(took == piece.len() || body.is_done(), "stopped early while not done");
                at += took;
            }
            Err(e) => return Some(Err(format!("{e:?}"))),
        }
    }
    let bytes = body.into_bytes();
    assert!(bytes.len() as u64 <= limit, "{} bytes over the limit {limit}", bytes.len());
    Some(Ok((bytes, at)))
}
