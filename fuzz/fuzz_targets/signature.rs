//! Fuzzes the signed-URL check (`src/signing.rs`) with whatever a client can put in a path and a
//! query. It checks that the check never panics; that a target signed by `Signing::sign` passes,
//! split at its first `?` as a request line would be; that changing any one byte of a signed
//! target's path or signed part makes it fail; and that a signature by a key that is not
//! configured never passes.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use keiko::signing::{Keys, Scope, Signing};
use libfuzzer_sys::fuzz_target;

static SIGNING: std::sync::LazyLock<Signing> = std::sync::LazyLock::new(|| {
    Signing::new(Keys::parse("fuzz-key-0123456789, second-key-0123456").unwrap(), Scope::Renditions)
});
static STRANGER: std::sync::LazyLock<Signing> =
    std::sync::LazyLock::new(|| Signing::new(Keys::parse("not-configured-0123456").unwrap(), Scope::Renditions));

fuzz_target!(|data: &[u8]| {
    let Some((&flip, rest)) = data.split_first() else { return };
    let now = UNIX_EPOCH + Duration::from_secs(1_000);
    // Anything at all: no panic, whatever the answer.
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let _ = SIGNING.check(path, query, now);

    // A target as a client would sign it: a path, then maybe a query without a `sig`.
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if !text.starts_with('/') || text.contains(['#', ' ']) || text.contains("sig=") || text.contains("exp=") {
        return;
    }
    let signed = SIGNING.sign(text);
    let (path, query) = signed.split_once('?').expect("a signed target has a query");
    assert_eq!(SIGNING.check(path.as_bytes(), query.as_bytes(), now), Ok(()), "{signed}");
    let foreign = STRANGER.sign(text);
    let (fpath, fquery) = foreign.split_once('?').unwrap();
    assert!(SIGNING.check(fpath.as_bytes(), fquery.as_bytes(), now).is_err(), "a stranger's key passed");

    // One byte of the signed part changed: the signature no longer holds.
    let mut tampered = signed.clone().into_bytes();
    let signed_len = text.len();
    let at = usize::from(flip) % signed_len;
    tampered[at] = tampered[at].wrapping_add(1).max(1);
    if tampered[at] == b'?' || tampered[..signed_len].contains(&b'?') != text.contains('?') {
        return;
    }
    let tampered = String::from_utf8_lossy(&tampered).into_owned();
    if let Some((path, query)) = tampered.split_once('?') {
        if tampered != signed {
            assert!(SIGNING.check(path.as_bytes(), query.as_bytes(), now).is_err(), "{tampered} passed");
        }
    }
});
