//! The in-process tier: keiko started in this process (`keiko::start`), every endpoint asked with
//! every method over a real socket, with and without the write routes; and the drain, which
//! must close the connection of every route's answer.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::inprocess::InProcess;
use common::{Images, Response};

const TOKEN: &str = "in-process-t0ken";
const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"];
/// Every read path keiko serves (a GET gets 200), one of each kind.
const READ_PATHS: [&str; 14] = [
    "/",
    "/8/6",
    "/seed/s",
    "/ascii",
    "/images/alpha.png/8/6",
    "/images/alpha.png/info",
    "/images/alpha.png/ascii",
    "/v2/list",
    "/hits",
    "/healthz",
    "/readyz",
    "/metrics",
    "/dashboard",
    "/dashboard/thumb/alpha.png",
];
const SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn raw(method: &str, path: &str, extra: &str) -> String {
    let body = if matches!(method, "PUT" | "POST") { "Content-Length: 0\r\n" } else { "" };
    format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{body}{extra}Connection: close\r\n\r\n")
}

/// The read paths a browser on another origin may use (CORS): the image and catalogue routes.
fn is_public(path: &str) -> bool {
    !matches!(
        path,
        "/hits" | "/healthz" | "/readyz" | "/metrics" | "/dashboard" | "/dashboard/thumb/alpha.png"
    ) && !path.starts_with("/images?")
}

/// What keiko must answer: the status, and the `Allow` header of a 405.
fn expected(method: &str, path: &str, writes: bool) -> (u16, Option<&'static str>) {
    let read = matches!(method, "GET" | "HEAD");
    match path {
        "/nope" => (404, None),
        "/0/0" => (400, None),
        _ if method == "OPTIONS" && is_public(path) => (204, None),
        "/images/alpha.png" => match (method, writes) {
            _ if read => (200, None),
            ("PUT" | "DELETE", true) => (401, None),
            (_, true) => (405, Some("GET, HEAD, PUT, DELETE")),
            (_, false) => (405, Some("GET, HEAD")),
        },
        _ if path.starts_with("/images?") => match (method, writes) {
            (_, false) => (404, None),
            ("GET" | "HEAD" | "POST", true) => (401, None),
            (_, true) => (405, Some("GET, HEAD, POST")),
        },
        _ if read => (200, None),
        _ => (405, Some("GET, HEAD")),
    }
}

#[test]
fn every_endpoint_answers_every_method_with_its_status_and_allow_list() {
    let images = Images::standard();
    for writes in [false, true] {
        let args: &[&str] = if writes { &["--admin-token", TOKEN] } else { &[] };
        let keiko = InProcess::start(images.path(), args);
        let lookup = format!("/images?sha256={SHA256}");
        let paths = READ_PATHS.iter().copied().chain(["/images/alpha.png", lookup.as_str(), "/nope", "/0/0"]);
        for path in paths {
            for method in METHODS {
                let r = keiko.request(&raw(method, path, ""));
                let (status, allow) = expected(method, path, writes);
                let case = format!("{method} {path} (write routes {})", if writes { "on" } else { "off" });
                assert_eq!(r.status, status, "{case}");
                assert_eq!(r.header("Allow"), allow, "{case}");
                // Every answer counted under a public route carries it, errors too; uploads and
                // deletions (write routes) do not.
                let write = writes && path == "/images/alpha.png" && matches!(method, "PUT" | "DELETE");
                let cors = is_public(path) && !matches!(path, "/nope" | "/0/0") && !write;
                assert_eq!(r.header("Access-Control-Allow-Origin"), cors.then_some("*"), "{case}");
                if r.header("Content-Type").is_some_and(|t| !t.starts_with("image/")) {
                    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"), "{case}");
                }
                if method == "HEAD" {
                    let mut all = Vec::new();
                    let mut s = TcpStream::connect(keiko.addr).unwrap();
                    s.write_all(raw(method, path, "").as_bytes()).unwrap();
                    s.read_to_end(&mut all).unwrap();
                    assert!(all.ends_with(b"\r\n\r\n"), "{case}: a HEAD answer has no body");
                }
            }
        }
        keiko.stop();
    }
}

/// Sends `raw` on a keep-alive connection and returns the response and whether keiko closed the
/// connection within `wait` after it.
fn closed_after(keiko: &InProcess, raw: &str, wait: Duration) -> (Response, bool) {
    let stream = TcpStream::connect(keiko.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&stream).write_all(raw.as_bytes()).unwrap();
    let mut reader = BufReader::new(&stream);
    let response = Response::read(&mut reader, raw.starts_with("HEAD")).expect("a response");
    stream.set_read_timeout(Some(wait)).unwrap();
    let closed = matches!(reader.read(&mut [0; 16]), Ok(0));
    (response, closed)
}

#[test]
fn a_drain_closes_every_route_s_connection() {
    let images = Images::standard();
    let keiko = InProcess::start(images.path(), &["--admin-token", TOKEN]);
    let keep_alive = |method: &str, path: &str, extra: &str| {
        let body = if matches!(method, "PUT" | "POST") { "Content-Length: 0\r\n" } else { "" };
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{body}{extra}\r\n")
    };
    let (before, closed) = closed_after(&keiko, &keep_alive("GET", "/", ""), Duration::from_millis(200));
    assert_eq!((before.status, closed), (200, false), "before the drain connections stay open");

    keiko.running().drain();
    std::thread::sleep(Duration::from_millis(250));
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let lookup = format!("/images?sha256={SHA256}");
    let mut requests: Vec<(String, u16)> = READ_PATHS
        .iter()
        .map(|p| (keep_alive("GET", p, ""), if *p == "/readyz" { 503 } else { 200 }))
        .collect();
    requests.extend([
        (keep_alive("HEAD", "/images/alpha.png", ""), 200),
        (keep_alive("GET", &lookup, &auth), 404),
        (keep_alive("DELETE", "/images/missing.png", &auth), 404),
        (keep_alive("PUT", "/images/empty.png", &auth), 415),
        (keep_alive("DELETE", "/images/alpha.png", ""), 401),
        (keep_alive("OPTIONS", "/", ""), 204),
        (keep_alive("OPTIONS", "/metrics", ""), 405),
        (keep_alive("GET", "/nope", ""), 404),
        (keep_alive("GET", "/0/0", ""), 400),
    ]);
    for (raw, status) in requests {
        let (r, closed) = closed_after(&keiko, &raw, Duration::from_secs(5));
        let case = raw.lines().next().unwrap();
        assert_eq!(r.status, status, "{case}");
        assert_eq!(r.header("Connection"), Some("close"), "{case}");
        assert!(closed, "{case}: the connection stayed open during the drain");
    }
    keiko.stop();
}
