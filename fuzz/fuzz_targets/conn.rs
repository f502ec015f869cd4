//! Fuzzes keiko's request reading the way `src/server/conn.rs` drives it, minus the socket.
//!
//! Input: byte 0 says how many of the next bytes (0..=16) are read sizes, used in turn and cycled
//! (a size of 0, or no sizes at all, means "as much as fits"); everything after them is what the
//! client sends. The model keeps conn.rs's buffer of at most `MAX_HEAD` bytes, reads only into its
//! free room, parses complete heads one after another (pipelining) until `Partial`, and stops at a
//! rejection, a `Connection: close` request or the end of the input. It checks:
//!
//! - `parse` and the router (with and without the write routes) never panic;
//! - a `Complete` head's `len` is in `1..=` the bytes available (0 would loop forever, more would
//!   overrun the buffer), and its path and query lie inside that head, the path without a `?`;
//! - every parameter `route` accepts is within its documented range (sizes 1..=5000, blur 0..=10,
//!   ASCII widths, page and limit, seed and name lengths, presets), names and seeds are one path segment,
//!   a refusal's message (echoed in the 400 body) is short and free of control characters, only
//!   GET and HEAD reach a read endpoint, and no write endpoint exists without the write routes;
//! - the buffer never exceeds `MAX_HEAD`, and a full buffer never parses as `Partial`: conn.rs
//!   would then read into zero bytes of room and drop the connection without an answer;
//! - the loop ends: every round consumes input, and with the checks above that is enough;
//! - how the bytes were split into reads changes nothing: the transcript (every request with its
//!   position in the stream, the rejection, the unparsed rest) equals the one from reading as much
//!   as fits each time. Otherwise a client's TCP segmentation would change what keiko answers.

#![no_main]

use keiko::http::request::{parse, Method, Parsed, Rejection, MAX_HEAD};
use keiko::http::response::Connection;
use keiko::http::route::{Endpoint, Pick, Presets, Route, Router, MAX_LIMIT, MAX_SEED};
use keiko::variants::spec::Variant;
use keiko::variants::spec::{Crop, Fit, Form, ASCII_WIDTHS, MAX_BLUR, MAX_FRAME, MAX_SIDE};
use libfuzzer_sys::fuzz_target;

/// What the connection did, with positions as offsets into the client's byte stream.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Request {
        at: usize,
        len: usize,
        method: Method,
        path: (usize, usize),
        connection: Connection,
        /// The route, or None when a parameter was refused.
        route: Option<Route>,
    },
    Rejected {
        at: usize,
        rejection: Rejection,
    },
    /// The client stopped sending; `unparsed` bytes of an incomplete head were left.
    Eof {
        unparsed: usize,
    },
}

/// The presets the router knows while fuzzing: `?preset=` names one of these or is refused.
static PRESETS: std::sync::LazyLock<Presets> =
    std::sync::LazyLock::new(|| Presets::parse("thumb=/30/20 soft=/30/20?blur=2&grayscale art=/ascii?width=40").unwrap());

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let (reads, stream) = rest.split_at(usize::from(n % 17).min(rest.len()));
    let transcript = serve(stream, reads);
    if reads.iter().any(|&r| r != 0) {
        assert_eq!(transcript, serve(stream, &[]), "outcome depends on the read sizes");
    }
});

/// The offset of `part` in `head`, which must contain it (an empty part may be a static "/").
fn inside(head: &[u8], part: &[u8]) -> usize {
    let offset = (part.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
    assert!(
        part == b"/" || part.is_empty() || (offset <= head.len() && part.len() <= head.len() - offset),
        "{part:?} outside the head"
    );
    offset.min(head.len())
}

/// Routes `method`, `path` and `query` with and without the write routes, and checks every
/// accepted parameter against its limits and every endpoint against the method.
fn check_route(method: Method, path: &[u8], query: &[u8]) -> Option<Route> {
    let read_only = Router::new(false, &PRESETS).route(method, path, query);
    if let Ok(endpoint) = &read_only {
        let write = matches!(endpoint, Endpoint::Upload { .. } | Endpoint::Delete { .. } | Endpoint::Lookup { .. });
        assert!(!write, "a write endpoint without the write routes: {endpoint:?}");
    }
    let endpoint = match Router::new(true, &PRESETS).route(method, path, query) {
        Ok(endpoint) => endpoint,
        Err(bad) => {
            assert!(!bad.0.is_empty() && bad.0.len() < 200, "message {:?}", bad.0);
            assert!(!bad.0.chars().any(char::is_control), "control character in {:?}", bad.0);
            return None;
        }
    };
    let reads = matches!(method, Method::Get | Method::Head);
    let segment = |bytes: &[u8]| assert!(!bytes.is_empty() && !bytes.contains(&b'/'), "segment {bytes:?}");
    match endpoint {
        Endpoint::Image { pick, variant } => {
            assert!(reads, "{method:?} made a read endpoint");
            match pick {
                Pick::Named(name) => segment(name),
                Pick::Seed(seed) => {
                    segment(seed);
                    assert!(seed.len() <= MAX_SEED);
                }
                Pick::Random => {}
            }
            if let Some(v) = variant {
                check_variant(v);
            }
        }
        Endpoint::Preset { pick, variant } => {
            assert!(reads, "{method:?} made a preset endpoint");
            if let Pick::Named(name) = pick {
                segment(name);
            }
            assert!(PRESETS.variants().any(|p| p == variant), "{variant:?} is not a preset");
        }
        Endpoint::Info(name) | Endpoint::Thumbnail(name) => segment(name),
        Endpoint::List { page, limit } => assert!(page >= 1 && (1..=MAX_LIMIT).contains(&limit)),
        Endpoint::Delete { name } => {
            assert_eq!(method, Method::Delete);
            segment(name);
        }
        Endpoint::Upload { name } => match method {
            Method::Put => segment(name.expect("a PUT names its image")),
            _ => assert_eq!(method, Method::Post),
        },
        Endpoint::Lookup { .. } => assert!(reads, "{method:?} made a lookup"),
        Endpoint::MethodNotAllowed { .. } => assert!(!reads, "{method:?} is allowed everywhere keiko serves"),
        _ => {}
    }
    Some(endpoint.route())
}

/// A rendition the router accepted keeps every documented limit.
fn check_variant(v: Variant) {
    assert!(v.blur <= MAX_BLUR);
    assert!(v.frame.is_none_or(|frame| frame <= MAX_FRAME));
    assert!(v.quality.is_none_or(|q| (1..=100).contains(&q)));
    assert!(v.crop == Crop::Centre || v.fit == Fit::Cover, "a crop only covers");
    match v.form {
        Form::Picture(Some((w, h))) => {
            assert!((1..=MAX_SIDE).contains(&u32::from(w)) && (1..=MAX_SIDE).contains(&u32::from(h)))
        }
        Form::Picture(None) => {
            assert!(v.fit == Fit::Cover && v.crop == Crop::Centre, "a fit or crop without a size");
            let changed = v.blur > 0 || v.grayscale || v.frame.is_some() || v.codec.is_some() || v.quality.is_some();
            assert!(changed, "a variant without a change")
        }
        Form::Ascii(width) => {
            assert!(ASCII_WIDTHS.contains(&width));
            assert!(v.codec.is_none() && v.quality.is_none(), "a format for ASCII art");
        }
    }
}

/// conn.rs's read-parse loop over `stream`, with read sizes taken from `reads`.
fn serve(stream: &[u8], reads: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut reads = reads.iter().cycle();
    let mut buf = Vec::with_capacity(MAX_HEAD);
    let (mut sent, mut start) = (0, 0); // bytes of `stream` read so far; stream offset of buf[0]
    loop {
        let mut used = 0;
        loop {
            let at = start + used;
            match parse(&buf[used..]) {
                Parsed::Partial => {
                    assert!(buf.len() - used < MAX_HEAD, "Partial for a full buffer");
                    break;
                }
                Parsed::Complete { request, len } => {
                    assert!(len > 0 && len <= buf.len() - used, "len {len} of {} bytes", buf.len() - used);
                    let head = &buf[used..used + len];
                    let (path, query) = (request.path, request.query);
                    let offset = inside(head, path);
                    inside(head, query);
                    assert!(!path.contains(&b'?'), "query left in path {path:?}");
                    let route = check_route(request.method, path, query);
                    let (method, connection) = (request.method, request.connection);
                    let path = (at + offset, path.len());
                    events.push(Event::Request { at, len, method, path, connection, route });
                    used += len;
                    if connection == Connection::Close {
                        return events;
                    }
                }
                Parsed::Rejected(rejection) => {
                    events.push(Event::Rejected { at, rejection });
                    return events;
                }
            }
        }
        buf.drain(..used);
        start += used;

        let room = MAX_HEAD - buf.len();
        assert!(room > 0, "reading into a full buffer");
        let want = match reads.next() {
            Some(&size) if size > 0 => usize::from(size),
            _ => room,
        };
        let n = want.min(room).min(stream.len() - sent);
        if n == 0 {
            events.push(Event::Eof { unparsed: buf.len() });
            return events;
        }
        buf.extend_from_slice(&stream[sent..sent + n]);
        sent += n;
        assert!(buf.len() <= MAX_HEAD);
    }
}
