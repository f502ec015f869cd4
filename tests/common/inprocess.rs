//! keiko started inside the test's own process (`keiko::start`), for the fast tier: no binary to
//! spawn and no log to scrape, and the test can call [`keiko::Running`]'s drain and stop itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use keiko::config::Config;

use super::{request_at, Response};

pub struct InProcess {
    running: Option<keiko::Running>,
    pub addr: SocketAddr,
    _db: tempfile::TempDir,
}

impl InProcess {
    /// keiko on `images` with one event loop, a fresh database and the flags in `args`, once
    /// `/readyz` answers 200.
    pub fn start(images: &Path, args: &[&str]) -> InProcess {
        let db = tempfile::tempdir().unwrap();
        let db_path = db.path().join("keiko.db");
        let mut argv = vec!["keiko", "--addr", "127.0.0.1:0", "--threads", "1", "--flush-ms", "20"];
        argv.extend(["--images", images.to_str().unwrap(), "--db", db_path.to_str().unwrap()]);
        argv.extend_from_slice(args);
        let config = Config::try_parse_from(argv).unwrap();
        let running = keiko::start(config).unwrap();
        let keiko = InProcess { addr: running.addr(), running: Some(running), _db: db };
        let deadline = Instant::now() + Duration::from_secs(30);
        while keiko.get("/readyz").status != 200 {
            assert!(Instant::now() < deadline, "keiko did not become ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        keiko
    }

    pub fn request(&self, raw: &str) -> Response {
        request_at(self.addr, raw)
    }

    /// One GET on a fresh connection, `Connection: close`.
    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    }

    pub fn running(&self) -> &keiko::Running {
        self.running.as_ref().unwrap()
    }

    pub fn stop(mut self) {
        self.running.take().unwrap().stop().unwrap();
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop();
        }
    }
}
