//! The soak's bad-input client (`scripts/soak.sh` runs it beside its wrk clients, against the
//! keiko it started): for a while, one connection per request, it sends malformed requests (400),
//! heads over 8 KiB or 64 lines (431), a GET with a body (400), unknown paths (404) and HEAD /
//! (200 with no body), and starts slow heads that it abandons, half of them with a reset. It
//! counts every outcome and writes them as JSON for the soak's verdict.
//!
//! Ignored by default: it runs for as long as it is told. Run alone (`cargo test --test soak --
//! --ignored`), it starts keiko in this process, runs for `SOAK_SECS` (10 by default) and fails on
//! any unexpected outcome. `SOAK_ADDR` points it at a running keiko instead, and `SOAK_OUT` names
//! the JSON file to write.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::inprocess::InProcess;
use common::Images;

/// The longest wait for any answer: more is a hang.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Between two fast cases: about 40 requests a second.
const PAUSE: Duration = Duration::from_millis(20);

/// What happened to each case, and the first few surprises.
#[derive(Default, serde::Serialize)]
struct Tally {
    counts: BTreeMap<String, BTreeMap<String, u64>>,
    problems: Vec<String>,
}

struct Client {
    addr: SocketAddr,
    deadline: Instant,
    max_cases: u64,
    tally: Mutex<Tally>,
}

impl Client {
    fn note(&self, case: &str, outcome: &str, ok: bool, detail: &str) {
        let mut tally = self.tally.lock().unwrap();
        *tally.counts.entry(case.into()).or_default().entry(outcome.into()).or_default() += 1;
        if !ok && tally.problems.len() < 20 {
            tally.problems.push(format!("{case}: {outcome} {detail}").trim_end().to_string());
        }
    }

    fn running(&self, n: u64) -> bool {
        Instant::now() < self.deadline && n < self.max_cases
    }

    /// Sends `raw` on a new connection and reads until keiko closes it: the outcome and the data.
    fn exchange(&self, raw: &[u8]) -> (&'static str, Vec<u8>) {
        let mut s = match TcpStream::connect_timeout(&self.addr, TIMEOUT) {
            Ok(s) => s,
            Err(e) => return ("connect-error", format!("{e}").into_bytes()),
        };
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        // keiko may answer before it has read everything: then read what it sent.
        let _ = s.write_all(raw);
        let mut data = Vec::new();
        let mut chunk = [0u8; 65536];
        while data.len() < 1 << 20 {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return ("timeout", Vec::new())
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return ("reset", Vec::new()),
                Err(e) => return ("error", format!("{e}").into_bytes()),
            }
        }
        (if data.is_empty() { "closed" } else { "answered" }, data)
    }

    /// The quick cases, one after another.
    fn fast(&self) {
        let big = [&b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: "[..], &[b'a'; 9 * 1024], b"\r\n\r\n"].concat();
        let many: Vec<u8> = [b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec()]
            .into_iter()
            .chain((0..100).map(|i| format!("X-{i}: {i}\r\n").into_bytes()))
            .chain([b"\r\n".to_vec()])
            .flatten()
            .collect();
        let cases: [(&str, &[u8], u16); 10] = [
            ("malformed", b"GARBAGE\r\n\r\n", 400),
            ("bad-version", b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400),
            ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
            (
                "cl-and-te",
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
                400,
            ),
            ("binary", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 TLS hello\r\n\r\n", 400),
            ("get-with-body", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd", 400),
            ("oversized-head", &big, 431),
            ("too-many-headers", &many, 431),
            ("unknown-path", b"GET /no/such/thing?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 404),
            ("head", b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200),
        ];
        let mut n = 0;
        while self.running(n) {
            let (name, raw, want) = cases[(n % cases.len() as u64) as usize];
            n += 1;
            let (outcome, data) = self.exchange(raw);
            let shown = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
            if outcome != "answered" {
                // A clean close (no answer) is acceptable for bad input; a hang or reset is not.
                self.note(name, outcome, outcome == "closed", &shown);
            } else if let Some(status) = status_of(&data) {
                let mut ok = status == want;
                let text = String::from_utf8_lossy(&data).to_ascii_lowercase();
                if ok && name == "head" {
                    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                    ok = body.is_empty() && head.contains("\r\ncontent-type: image/webp");
                }
                let outcome = if !ok && name == "head" && status == 200 {
                    "200-bad-head".into()
                } else {
                    status.to_string()
                };
                self.note(name, &outcome, ok, &shown);
            } else {
                self.note(name, "garbled", false, &shown);
            }
            std::thread::sleep(PAUSE);
        }
    }

    /// Starts a request head, sends a little more a moment later, then abandons it: with a FIN, or
    /// every other time with a reset.
    fn slow(&self, seed: u64) {
        let mut n = seed;
        while self.running(n) {
            n += 1;
            let mut s = match TcpStream::connect_timeout(&self.addr, TIMEOUT) {
                Ok(s) => s,
                Err(e) => {
                    self.note("slow-partial-head", "connect-error", false, &e.to_string());
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            let sent = s.write_all(b"GET / HT").and_then(|()| {
                std::thread::sleep(Duration::from_millis(300));
                s.write_all(b"TP/1.1\r\nHost: t\r\nX-Slow: ")
            });
            if let Err(e) = sent {
                self.note("slow-partial-head", "error", false, &e.to_string());
                continue;
            }
            std::thread::sleep(Duration::from_millis(300));
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            match s.read(&mut [0u8; 4096]) {
                // keiko answers a partial head only when the header timeout (10 s) expires.
                Ok(0) => self.note("slow-partial-head", "closed-early", false, ""),
                Ok(_) => self.note("slow-partial-head", "answered-early", false, ""),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if n % 2 == 1 {
                        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
                        self.note("slow-partial-head", "abandoned-rst", true, "");
                    } else {
                        self.note("slow-partial-head", "abandoned", true, "");
                    }
                }
                Err(e) => self.note("slow-partial-head", "error", false, &e.to_string()),
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The status code of an HTTP/1.x response that starts `data`.
fn status_of(data: &[u8]) -> Option<u16> {
    let rest = data.strip_prefix(b"HTTP/1.1 ").or_else(|| data.strip_prefix(b"HTTP/1.0 "))?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    (rest.get(3) == Some(&b' ')).then_some(code)
}

#[test]
#[ignore = "the soak's client: scripts/soak.sh runs it (alone it runs for SOAK_SECS, default 10 s)"]
fn bad_input_client() {
    let secs: u64 = std::env::var("SOAK_SECS").map_or(10, |s| s.parse().expect("SOAK_SECS: seconds"));
    let images = Images::standard();
    let (own, addr) = match std::env::var("SOAK_ADDR") {
        Ok(addr) => (None, addr.to_socket_addrs().unwrap().next().expect("SOAK_ADDR: host:port")),
        Err(_) => {
            let keiko = InProcess::start(images.path(), &[]);
            let addr = keiko.addr;
            (Some(keiko), addr)
        }
    };
    let client = Client {
        addr,
        deadline: Instant::now() + Duration::from_secs(secs),
        max_cases: secs * 100 + 100,
        tally: Mutex::default(),
    };
    std::thread::scope(|s| {
        s.spawn(|| client.fast());
        for seed in 0..2 {
            let client = &client;
            s.spawn(move || client.slow(seed));
        }
    });
    let tally = client.tally.into_inner().unwrap();
    let json = serde_json::to_string_pretty(&tally).unwrap();
    match std::env::var("SOAK_OUT") {
        Ok(path) => std::fs::write(path, json).unwrap(),
        Err(_) => println!("{json}"),
    }
    if let Some(keiko) = own {
        keiko.stop();
        assert!(tally.problems.is_empty(), "unexpected outcomes: {:?}", tally.problems);
        for case in ["malformed", "oversized-head", "unknown-path", "head", "slow-partial-head"] {
            assert!(tally.counts.contains_key(case), "{case} never ran");
        }
    }
}
