//! Test harness: starts the real keiko binary on a free port (`--addr 127.0.0.1:0`, the actual
//! address read from its ready line) with a temporary image directory and database, and talks to
//! it over plain TCP so every byte on the wire is the test's choice.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zune_core::colorspace::ColorSpace;
use zune_image::codecs::ImageFormat;
use zune_image::image::Image;

pub mod garage;
pub mod inprocess;
pub mod postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_keiko");

/// A directory of test images in every supported format, plus files keiko must skip or ignore.
pub struct Images {
    pub dir: tempfile::TempDir,
}

/// The pixels of a generated test image, as RGBA.
pub fn pattern(width: u32, height: u32, transparent_corner: bool) -> Vec<u8> {
    (0..height)
        .flat_map(|y| {
            (0..width).flat_map(move |x| {
                let a = if transparent_corner && x < 2 && y < 2 { 0 } else { 255 };
                [(x * 37 % 256) as u8, (y * 59 % 256) as u8, ((x + y) * 13 % 256) as u8, a]
            })
        })
        .collect()
}

pub fn png(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    Image::from_u8(rgba, width as usize, height as usize, ColorSpace::RGBA)
        .write_to_vec(ImageFormat::PNG)
        .unwrap()
}

pub fn jpeg(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    let rgb: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    Image::from_u8(&rgb, width as usize, height as usize, ColorSpace::RGB)
        .write_to_vec(ImageFormat::JPEG)
        .unwrap()
}

/// A two-frame GIF, which keiko serves as a two-frame animated WebP.
pub fn gif(width: u16, height: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = gif::Encoder::new(&mut out, width, height, &[10, 20, 30, 200, 100, 50]).unwrap();
    let first: Vec<u8> = (0..usize::from(width) * usize::from(height)).map(|i| (i % 2) as u8).collect();
    let mut frame = gif::Frame { width, height, ..Default::default() };
    frame.buffer = std::borrow::Cow::Owned(first);
    enc.write_frame(&frame).unwrap();
    frame.buffer = std::borrow::Cow::Owned(vec![1; usize::from(width) * usize::from(height)]);
    enc.write_frame(&frame).unwrap();
    drop(enc);
    out
}

pub fn webp_input(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut config = webp::WebPConfig::new().unwrap();
    config.lossless = 1;
    config.exact = 1;
    webp::Encoder::new(rgba, webp::PixelLayout::Rgba, width, height)
        .encode_advanced(&config)
        .unwrap()
        .to_vec()
}

impl Images {
    /// `alpha.png` (with transparent pixels that keep their colour), `photo.jpg`, `anim.gif`,
    /// `input.webp`, plus `broken.png` (not an image) and `notes.txt` (ignored).
    pub fn standard() -> Images {
        let images = Images::empty();
        images.add("alpha.png", &png(&pattern(16, 12, true), 16, 12));
        images.add("photo.jpg", &jpeg(&pattern(24, 16, false), 24, 16));
        images.add("anim.gif", &gif(8, 6));
        images.add("input.webp", &webp_input(&pattern(10, 10, true), 10, 10));
        images.add("broken.png", b"\x89PNG\r\n\x1a\nthis is not a png");
        images.add("notes.txt", b"not an image");
        images
    }

    pub fn empty() -> Images {
        Images { dir: tempfile::tempdir().unwrap() }
    }

    pub fn add(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(name), bytes).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Names keiko loads from [`Images::standard`].
    pub fn standard_names() -> [&'static str; 4] {
        ["alpha.png", "anim.gif", "input.webp", "photo.jpg"]
    }
}

/// How to start keiko: flags, extra environment, optionally an open-file limit, and whether to
/// wait for `/readyz` (the library's first scan) or only for the listening socket.
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub fd_limit: Option<u64>,
    pub wait_ready: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            args: vec!["--threads".into(), "2".into(), "--flush-ms".into(), "50".into()],
            env: Vec::new(),
            fd_limit: None,
            wait_ready: true,
        }
    }
}

impl Options {
    /// Sets `flag`, replacing a default for it.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        if let Some(at) = self.args.iter().position(|a| a == flag) {
            self.args.drain(at..at + 2);
        }
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Returns as soon as keiko listens, without waiting for `/readyz`.
    pub fn listening_only(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Starts keiko with this soft and hard RLIMIT_NOFILE, like `ulimit -n` in a shell.
    pub fn fd_limit(mut self, limit: u64) -> Self {
        self.fd_limit = Some(limit);
        self
    }
}

/// keiko on [`Images::standard`] with a fresh database; keep all three alive for the whole test.
pub fn start_standard(options: Options) -> (Images, tempfile::TempDir, Keiko) {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("keiko.db"), options);
    (images, tmp, keiko)
}

/// A running keiko.
pub struct Keiko {
    child: Child,
    pub addr: SocketAddr,
    pub db: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// A command for the keiko binary with no KEIKO_* variable inherited from the test's environment.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("KEIKO_") || key.starts_with("MONOIO_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("KEIKO_LOG", "info");
    cmd
}

impl Keiko {
    pub fn start(images: &Path, db: &Path) -> Keiko {
        Keiko::start_with(images, db, Options::default())
    }

    pub fn start_with(images: &Path, db: &Path, options: Options) -> Keiko {
        let mut cmd = command();
        cmd.arg("--addr").arg("127.0.0.1:0").arg("--images").arg(images).arg("--db").arg(db);
        cmd.args(&options.args).envs(options.env.iter().map(|(k, v)| (k, v)));
        if let Some(limit) = options.fd_limit {
            let limit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let ready = line
                    .split("listening on http://")
                    .nth(1)
                    .map(|rest| rest.split(',').next().unwrap().parse());
                sink.lock().unwrap().push(line.clone());
                if let Some(addr) = ready {
                    let _ = ready_tx.send(addr.unwrap());
                }
            }
        });
        let addr = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("keiko did not become ready; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let keiko = Keiko { child, addr, db: db.to_path_buf(), log };
        if options.wait_ready {
            keiko.wait_ready(Duration::from_secs(60));
        }
        keiko
    }

    /// Waits until `/readyz` answers 200 (the first scan of the library is done).
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.get("/readyz").status != 200 {
            assert!(Instant::now() < deadline, "keiko did not become ready; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Resident memory of the keiko process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The most resident memory the keiko process has had (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// CPU time (user + system, all threads) the keiko process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// CPU time (user + system) used so far by the keiko threads whose names start with `prefix`.
    pub fn threads_cpu_time(&self, prefix: &str) -> Duration {
        let mut ticks = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// The value of an unlabelled series in /metrics, asked on a fresh connection.
    pub fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.get("/metrics").body).unwrap();
        metric_in(&text, series)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// One request on a fresh connection, `Connection: close`.
    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    }

    pub fn request(&self, raw: &str) -> Response {
        request_at(self.addr, raw)
    }

    pub fn hits(&self) -> HashMap<String, u64> {
        let r = self.get("/hits");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status.
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        let started = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_for(&mut self.child, limit);
        std::thread::sleep(Duration::from_millis(50));
        (status, started.elapsed(), self.log())
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Keiko {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keiko did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request, sent as `raw` on a fresh connection to `addr`, and its response.
pub fn request_at(addr: SocketAddr, raw: &str) -> Response {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = s;
    s.write_all(raw.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    Response::read(&mut reader, raw.starts_with("HEAD")).expect("a response")
}

/// Polls `check` every 20 ms until it holds or `limit` passes; the last answer.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The value of `series` in a /metrics text.
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// Raises this test process's soft open-file limit to at least `want` (up to the hard limit);
/// returns the limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// Sum of every image's count in the database.
pub fn db_sum(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT coalesce(sum(count), 0) FROM hits", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

pub fn db_counts(db: &Path) -> HashMap<String, u64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT name, count FROM hits").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Reads one response; `head_only` for responses to HEAD (no body despite Content-Length).
    /// None when the connection closed or failed before the whole response arrived.
    pub fn read(reader: &mut impl BufRead, head_only: bool) -> Option<Response> {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let l = line.strip_suffix("\r\n")?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(": ").expect("header line");
            headers.push((k.to_string(), v.to_string()));
        }
        let mut r = Response { status, headers, body: Vec::new() };
        // 204 and 304 never have a body (RFC 9110), whatever their headers say.
        if !head_only && status != 204 && status != 304 {
            let len: usize = r.header("Content-Length").expect("Content-Length").parse().unwrap();
            r.body = vec![0; len];
            reader.read_exact(&mut r.body).ok()?;
        }
        Some(r)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// True when the server closed the connection (EOF) within the read timeout.
pub fn closed_by_server(reader: &mut impl Read) -> bool {
    match reader.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// What a background load saw.
#[derive(Default, Debug)]
pub struct LoadReport {
    /// 200 image responses received whole, with the time each one finished.
    pub delivered: Vec<Instant>,
    /// Anything else: error statuses, resets, refused connections, truncated responses.
    pub failures: u64,
    /// Time from sending each request to having its whole response, for every delivered one.
    pub latencies: Vec<Duration>,
    /// Delivered responses by `X-Image-Name`.
    pub by_name: HashMap<String, u64>,
    /// 200 responses whose body is not one whole WebP file (a RIFF header matching its length).
    pub torn: u64,
}

impl LoadReport {
    pub fn ok(&self) -> u64 {
        self.delivered.len() as u64
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn latency(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
    }
}

/// `clients` threads sending `GET /` to keiko until stopped, half of them on keep-alive
/// connections and half with a new connection per request.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || client(addr, i % 2 == 0, &stop))
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops every client after its current request and sums what they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadReport::default();
        for c in self.clients {
            let r = c.join().unwrap();
            all.delivered.extend(r.delivered);
            all.failures += r.failures;
            all.latencies.extend(r.latencies);
            all.torn += r.torn;
            for (name, n) in r.by_name {
                *all.by_name.entry(name).or_default() += n;
            }
        }
        all.delivered.sort();
        all
    }
}

fn client(addr: SocketAddr, keep_alive: bool, stop: &std::sync::atomic::AtomicBool) -> LoadReport {
    let mut report = LoadReport::default();
    let request: &[u8] = if keep_alive {
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    };
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let started = Instant::now();
        if conn.is_none() {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    conn = Some(BufReader::new(s));
                }
                Err(_) => {
                    report.failures += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let reader = conn.as_mut().unwrap();
        let answered = reader.get_mut().write_all(request).ok().and_then(|()| Response::read(reader, false));
        match answered {
            Some(r) if r.status == 200 && r.header("Content-Type") == Some("image/webp") => {
                report.delivered.push(Instant::now());
                report.latencies.push(started.elapsed());
                report.torn += u64::from(!is_whole_webp(&r.body));
                *report.by_name.entry(r.header("X-Image-Name").unwrap_or("?").to_string()).or_default() += 1;
                if !keep_alive || r.header("Connection") == Some("close") {
                    conn = None;
                }
            }
            _ => {
                report.failures += 1;
                conn = None;
            }
        }
    }
    report
}

/// The first frame of a served WebP (an animation's first canvas), as RGBA.
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

/// `body` decoded as a still WebP or, failing that, as an animation's first frame.
pub fn first_frame(body: &[u8]) -> Option<Frame> {
    if let Some(still) = webp::Decoder::new(body).decode() {
        let rgba = if still.is_alpha() {
            still.to_vec()
        } else {
            still.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
        };
        return Some(Frame { width: still.width(), height: still.height(), rgba });
    }
    let animation = webp::AnimDecoder::new(body).decode().ok()?;
    let frame = animation.get_frame(0)?;
    let rgba = match frame.get_layout() {
        webp::PixelLayout::Rgba => frame.get_image().to_vec(),
        _ => frame.get_image().chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
    };
    Some(Frame { width: frame.width(), height: frame.height(), rgba })
}

/// Whether `body` is one complete WebP file: its RIFF header's size matches its length.
pub fn is_whole_webp(body: &[u8]) -> bool {
    body.len() >= 16
        && &body[..4] == b"RIFF"
        && &body[8..12] == b"WEBP"
        && u32::from_le_bytes(body[4..8].try_into().unwrap()) as usize + 8 == body.len()
}

/// `/images/<name>` as keiko serves it, decoded to RGB (alpha dropped; an animation's first frame).
pub fn served_rgb(keiko: &Keiko, name: &str) -> image::RgbImage {
    let r = keiko.get(&format!("/images/{name}"));
    assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
    let frame = first_frame(&r.body).unwrap_or_else(|| panic!("{name}: not a WebP"));
    let rgb = frame.rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    image::RgbImage::from_raw(frame.width, frame.height, rgb).unwrap()
}

/// The mean and largest absolute difference per sample of two images of the same size.
pub fn difference(name: &str, a: &image::RgbImage, b: &image::RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions(), "{name}: size");
    let diffs: Vec<u8> = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).collect();
    (diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64, *diffs.iter().max().unwrap())
}

/// `file`, an absolute path or a program on the PATH, installed from Debian's `package` when it is
/// missing (scripts/test.sh installs them all beforehand; this serves a lone `cargo test`).
pub fn debian(package: &str, file: &str) -> PathBuf {
    let find = || {
        if file.starts_with('/') {
            Some(PathBuf::from(file)).filter(|p| p.exists())
        } else {
            std::env::var_os("PATH")
                .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(file)).find(|p| p.exists()))
        }
    };
    if let Some(found) = find() {
        return found;
    }
    let installed =
        Command::new("apt-get").args(["install", "-y", "-qq", package]).status().is_ok_and(|s| s.success());
    assert!(installed, "apt-get install {package} failed");
    find().unwrap_or_else(|| panic!("{package} has no {file}"))
}
