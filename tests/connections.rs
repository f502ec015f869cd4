//! Connection handling: keep-alive, close, HTTP/1.0, pipelining, requests split into single bytes.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::{closed_by_server, Images, Keiko, Options, Response};

fn start() -> (Images, tempfile::TempDir, Keiko) {
    common::start_standard(Options::default())
}

#[test]
fn http11_keeps_the_connection_alive_by_default() {
    let (_images, _tmp, keiko) = start();
    let mut s = keiko.connect();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for i in 0..5 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = Response::read(&mut reader, false).unwrap_or_else(|| panic!("request {i} got no response"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), None, "keep-alive is the HTTP/1.1 default");
    }
}

#[test]
fn connection_close_is_honoured() {
    let (_images, _tmp, keiko) = start();
    let mut s = keiko.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let r = Response::read(&mut reader, false).unwrap();
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader), "the server must close after Connection: close");
}

#[test]
fn http10_closes_unless_it_asks_for_keep_alive() {
    let (_images, _tmp, keiko) = start();
    let mut s = keiko.connect();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    assert_eq!(Response::read(&mut reader, false).unwrap().status, 200);
    assert!(closed_by_server(&mut reader), "HTTP/1.0 without keep-alive closes");

    let mut s = keiko.connect();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for _ in 0..3 {
        s.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let r = Response::read(&mut reader, false).unwrap();
        assert_eq!((r.status, r.header("Connection")), (200, Some("keep-alive")));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_images, _tmp, keiko) = start();
    let names = ["photo.jpg", "alpha.png", "anim.gif", "input.webp", "photo.jpg"];
    let mut batch = String::new();
    for name in names {
        batch += &format!("GET /images/{name} HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    batch += "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut s = keiko.connect();
    s.write_all(batch.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    for name in names {
        let r = Response::read(&mut reader, false).unwrap();
        assert_eq!(r.header("X-Image-Name"), Some(name));
    }
    assert_eq!(Response::read(&mut reader, true).unwrap().status, 200);
    assert_eq!(Response::read(&mut reader, false).unwrap().status, 404);
}

#[test]
fn a_long_pipeline_larger_than_the_read_buffer_is_answered_completely() {
    let (_images, _tmp, keiko) = start();
    let one = "GET /healthz HTTP/1.1\r\nHost: pipelined.example\r\nUser-Agent: keiko-tests\r\n\r\n";
    let count = 400; // ~30 KB of requests, several times the 8 KiB buffer
    let mut s = keiko.connect();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let all = one.repeat(count);
        std::thread::spawn(move || s.write_all(all.as_bytes()).unwrap())
    };
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for i in 0..count {
        let r = Response::read(&mut reader, false).unwrap_or_else(|| panic!("response {i} missing"));
        assert_eq!(r.status, 200, "response {i}");
    }
    writer.join().unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(Response::read(&mut reader, false).unwrap().status, 200);
}

#[test]
fn a_request_arriving_one_byte_at_a_time_still_works() {
    let (_images, _tmp, keiko) = start();
    let mut s = keiko.connect();
    s.set_nodelay(true).unwrap();
    for b in b"GET /images/alpha.png HTTP/1.1\r\nHost: t\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = Response::read(&mut BufReader::new(s), false).unwrap();
    assert_eq!((r.status, r.header("X-Image-Name")), (200, Some("alpha.png")));
}

/// An image whose WebP (~6 MB: noise does not compress) is larger than the most a socket's send
/// buffer grows to (net.ipv4.tcp_wmem, 4 MiB by default), so sending it must wait for the reader.
fn large_image(images: &Images) -> Vec<u8> {
    let (width, height) = (1600, 1250);
    let mut state = 0x2545_f491_u32;
    let noise: Vec<u8> = (0..width * height * 4)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if i % 4 == 3 {
                255
            } else {
                state as u8
            }
        })
        .collect();
    images.add("noise.png", &common::png(&noise, width, height));
    noise
}

#[test]
fn large_bodies_arrive_whole_over_keep_alive_pipelining_and_to_a_slow_reader() {
    let images = Images::standard();
    let pixels = large_image(&images);
    let tmp = tempfile::tempdir().unwrap();
    for driver in ["io_uring", "epoll"] {
        let mut options = Options::default();
        if driver == "epoll" {
            options = options.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
        }
        let keiko = Keiko::start_with(images.path(), &tmp.path().join(format!("{driver}.db")), options);
        let check = |r: &Response, what: &str| {
            assert_eq!(r.status, 200, "{driver} {what}");
            let decoded =
                webp::Decoder::new(&r.body).decode().unwrap_or_else(|| panic!("{driver} {what}: bad WebP"));
            let rgb: Vec<u8> = pixels.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            assert!(*decoded == rgb[..], "{driver} {what}: pixels differ");
        };

        let mut s = keiko.connect();
        s.write_all(b"GET /images/noise.png HTTP/1.1\r\nHost: t\r\n\r\nHEAD /images/noise.png HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        s.write_all(
            b"GET /images/noise.png HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let first = Response::read(&mut reader, false).unwrap();
        assert!(first.body.len() > 5_000_000, "the test image must be large: {}", first.body.len());
        check(&first, "pipelined GET");
        let head = Response::read(&mut reader, true).unwrap();
        assert_eq!(head.header("Content-Length").unwrap().parse::<usize>().unwrap(), first.body.len());
        check(&Response::read(&mut reader, false).unwrap(), "GET after HEAD");
        assert_eq!(Response::read(&mut reader, false).unwrap().body, b"ok\n", "{driver}: no stray bytes");

        // A reader that takes its time makes the server wait for room in the socket.
        let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        slow.set_recv_buffer_size(4096).unwrap();
        slow.connect(&keiko.addr.into()).unwrap();
        let mut slow: std::net::TcpStream = slow.into();
        slow.write_all(b"GET /images/noise.png HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut trickle = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = std::io::Read::read(&mut slow, &mut chunk).unwrap();
            if n == 0 {
                break;
            }
            trickle.extend_from_slice(&chunk[..n]);
            if trickle.len() < 64 * 1024 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let r = Response::read(&mut BufReader::new(&trickle[..]), false).unwrap();
        check(&r, "slow reader");
    }
}

#[test]
fn a_client_that_takes_no_bytes_is_cut_off_while_a_slow_steady_reader_finishes() {
    let images = Images::standard();
    let pixels = large_image(&images);
    let tmp = tempfile::tempdir().unwrap();
    let small_window = |keiko: &Keiko| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&keiko.addr.into()).unwrap();
        let mut s: std::net::TcpStream = s.into();
        s.write_all(b"GET /images/noise.png HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        s
    };
    for driver in ["io_uring", "epoll"] {
        let mut options = Options::default().env("KEIKO_SEND_TIMEOUT_MS", "1000");
        if driver == "epoll" {
            options = options.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
        }
        let keiko = Keiko::start_with(images.path(), &tmp.path().join(format!("{driver}.db")), options);
        assert!(common::eventually(Duration::from_secs(30), || keiko.get("/images/noise.png").status == 200));

        let mut stalled = small_window(&keiko);
        let mut steady = small_window(&keiko);
        // The steady reader pauses for less than the timeout, many times over: it takes longer
        // than the timeout in all, yet is never cut off.
        let started = std::time::Instant::now();
        let mut body = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut since_pause = 0;
        loop {
            let n = std::io::Read::read(&mut steady, &mut chunk).expect("the steady reader is not reset");
            body.extend_from_slice(&chunk[..n]);
            since_pause += n;
            if since_pause >= 1 << 20 {
                std::thread::sleep(Duration::from_millis(400));
                since_pause = 0;
            }
            if let Some(r) = Response::read(&mut BufReader::new(&body[..]), false) {
                let rgb: Vec<u8> = pixels.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                assert!(*webp::Decoder::new(&r.body).decode().expect("a WebP") == rgb[..], "{driver}: whole");
                break;
            }
            assert!(n > 0, "{driver}: the steady reader's connection ended early");
        }
        assert!(started.elapsed() > Duration::from_millis(1500), "{driver}: took longer than the timeout");
        drop(steady);

        assert!(
            common::eventually(Duration::from_secs(5), || keiko.metric("keiko_send_timeouts_total") == 1.0),
            "{driver}: the stalled client is cut off"
        );
        assert!(common::eventually(Duration::from_secs(2), || keiko.metric("keiko_open_connections") <= 1.0));
        let mut drained = Vec::new();
        let ended = std::io::Read::read_to_end(&mut stalled, &mut drained);
        assert!(ended.is_err() || drained.len() < 5_000_000, "{driver}: the stalled client got a reset");
        assert_eq!(keiko.get("/healthz").status, 200);
    }
}
