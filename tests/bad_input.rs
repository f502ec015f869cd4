//! Bad input gets a clear status and nothing worse: malformed and oversized requests, bodies on
//! GET, slow and idle clients, and file names that are not safe in a header.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{closed_by_server, Images, Keiko, Options, Response};

/// Sends `raw`, expects one response with `status` and then the server closing the connection.
fn assert_answered_then_closed(keiko: &Keiko, raw: &[u8], status: u16) {
    let mut s = keiko.connect();
    s.write_all(raw).unwrap();
    let mut reader = BufReader::new(s);
    let r = Response::read(&mut reader, false)
        .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(raw)));
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(raw));
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader), "connection left open after {status}");
}

#[test]
fn malformed_requests_get_400_and_close() {
    let (_images, _tmp, keiko) = common::start_standard(Options::default());
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 TLS hello\r\n\r\n",
    ] {
        assert_answered_then_closed(&keiko, raw, 400);
    }
}

#[test]
fn a_header_section_over_8_kib_gets_431_and_close() {
    let (_images, _tmp, keiko) = common::start_standard(Options::default());
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    raw.resize(9 * 1024, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    assert_answered_then_closed(&keiko, &raw, 431);

    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..100 {
        many += &format!("X-{i}: {i}\r\n");
    }
    many += "\r\n";
    assert_answered_then_closed(&keiko, many.as_bytes(), 431);
}

#[test]
fn a_body_sent_with_get_is_refused_and_never_read_as_the_next_request() {
    let (_images, tmp, keiko) = common::start_standard(Options::default());
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len());
    let mut s = keiko.connect();
    s.write_all(raw.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    assert_eq!(Response::read(&mut reader, false).unwrap().status, 400);
    assert!(closed_by_server(&mut reader), "no second response may follow");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(keiko.hits().values().sum::<u64>(), 0, "the refused GET counts no hit");
    drop(tmp);
}

#[test]
fn a_slow_client_times_out_with_408_and_does_not_hold_up_others() {
    let (_images, _tmp, keiko) =
        common::start_standard(Options::default().arg("--header-timeout-ms", "1500"));
    let started = Instant::now();
    let mut slow = keiko.connect();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut idle = keiko.connect();

    // Meanwhile other clients are served, long before the slow one times out.
    for _ in 0..20 {
        assert_eq!(keiko.get("/healthz").status, 200);
    }
    assert!(started.elapsed() < Duration::from_millis(1000), "normal requests waited for the slow client");

    let mut reader = BufReader::new(slow);
    let r = Response::read(&mut reader, false).expect("a 408 response");
    assert_eq!(r.status, 408);
    assert!(closed_by_server(&mut reader));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(4),
        "timed out after {waited:?}"
    );

    // The idle connection (no byte sent) is closed quietly, without a response.
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let n = idle.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection is closed without a response: {:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn a_client_trickling_bytes_is_cut_off_at_the_header_timeout() {
    let (_images, _tmp, keiko) = common::start_standard(Options::default().arg("--header-timeout-ms", "500"));
    let started = Instant::now();
    let mut s = keiko.connect();
    let mut closed = false;
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let mut reader = BufReader::new(s);
    if !closed {
        let r = Response::read(&mut reader, false).expect("a 408 response");
        assert_eq!(r.status, 408);
    }
    assert!(started.elapsed() < Duration::from_secs(3), "bytes every 100 ms must not extend the timeout");
}

#[test]
fn unsafe_file_names_are_escaped_in_x_image_name() {
    let images = Images::empty();
    let png = common::png(&common::pattern(4, 4, false), 4, 4);
    let names = ["evil\r\nX-Injected: yes.png", "quote\"d 'name'.png", "café ☕.png", "per%cent.png"];
    for name in names {
        images.add(name, &png);
    }
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start(images.path(), &tmp.path().join("k.db"));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..80 {
        let r = keiko.get("/");
        assert_eq!(r.header("X-Injected"), None, "a file name injected a header");
        let escaped = r.header("X-Image-Name").unwrap().to_string();
        assert!(escaped.bytes().all(|b| b.is_ascii_graphic()), "unescaped byte in {escaped:?}");
        // The escaped name doubles as the path to fetch the same image.
        let again = keiko.get(&format!("/images/{escaped}"));
        assert_eq!((again.status, again.header("X-Image-Name")), (200, Some(escaped.as_str())));
        seen.insert(escaped);
    }
    assert_eq!(seen.len(), names.len(), "{seen:?}");
    assert!(seen.contains("evil%0D%0AX-Injected:%20yes.png"), "{seen:?}");
    std::thread::sleep(Duration::from_millis(200));
    let hits = keiko.hits();
    assert!(names.iter().all(|n| hits.contains_key(*n)), "/hits keeps the real names: {hits:?}");
}
