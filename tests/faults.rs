//! keiko under faults: connection floods, running out of file descriptors, thousands of idle and
//! slow clients, a panicking handler, a stalled hit writer, a database that is locked, full or
//! read-only, and restarts under load. Each test checks that serving goes on and that no hit is
//! lost (or, for SIGKILL, at most one flush window).
//!
//! Latency figures are printed, not asserted tightly: these run on a shared machine in a debug
//! build. The bounds below only catch a server that stopped or blocked; `scripts/soak.sh` and the
//! benchmarks measure the release build.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{closed_by_server, db_sum, eventually, Images, Keiko, Load, Options, Response};

/// These tests load the machine and watch how keiko holds up, so they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request on a keep-alive connection, for a connection kept across a test.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> Option<Response> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).ok()?;
    Response::read(&mut BufReader::new(s), false)
}

#[test]
fn connections_past_max_conns_are_closed_at_once_and_the_served_ones_go_on() {
    let _serial = serial();
    let (_images, _tmp, keiko) =
        common::start_standard(Options::default().arg("--threads", "1").arg("--max-conns", "20"));
    let mut served: Vec<TcpStream> = (0..20).map(|_| keiko.connect()).collect();
    for (i, s) in served.iter_mut().enumerate() {
        assert_eq!(keep_alive_get(s, "/healthz").map(|r| r.status), Some(200), "connection {i}");
    }
    for i in 0..10 {
        let mut extra = keiko.connect();
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(closed_by_server(&mut extra), "connection {} past the limit was not closed", 21 + i);
    }
    for (i, s) in served.iter_mut().enumerate() {
        assert_eq!(
            keep_alive_get(s, "/").map(|r| r.status),
            Some(200),
            "served connection {i} after the flood"
        );
    }
    let metrics = String::from_utf8(keep_alive_get(&mut served[0], "/metrics").unwrap().body).unwrap();
    assert_eq!(common::metric_in(&metrics, "keiko_connections_refused_total"), 10.0);

    served.truncate(5);
    assert!(
        eventually(Duration::from_secs(5), || keiko.get("/healthz").status == 200),
        "room freed by closed connections must be used again"
    );
    assert_eq!(
        keiko.log().matches("closing new ones").count(),
        1,
        "one line per state change:\n{}",
        keiko.log()
    );
}

#[test]
fn running_out_of_file_descriptors_pauses_accepting_without_spinning() {
    let _serial = serial();
    let (_images, _tmp, keiko) =
        common::start_standard(Options::default().arg("--threads", "1").fd_limit(256));
    common::raise_fd_limit(1024);
    let sockets: Vec<TcpStream> = (0..400).map(|_| keiko.connect()).collect();
    assert!(
        eventually(Duration::from_secs(5), || keiko.log().contains("Too many open files")),
        "keiko should have run out of descriptors:\n{}",
        keiko.log()
    );
    let before = keiko.cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = keiko.cpu_time() - before;
    println!("CPU used in 2 s while out of descriptors: {used:?}");
    assert!(
        used < Duration::from_millis(500),
        "keiko spins while out of descriptors: {used:?} of CPU in 2 s"
    );

    drop(sockets);
    assert!(
        eventually(Duration::from_secs(10), || {
            TcpStream::connect(keiko.addr)
                .is_ok_and(|mut s| keep_alive_get(&mut s, "/").is_some_and(|r| r.status == 200))
        }),
        "keiko must serve again once descriptors are free:\n{}",
        keiko.log()
    );
    let log = keiko.log();
    assert_eq!(log.matches("Too many open files").count(), 1, "one line per state change:\n{log}");
    assert!(log.contains("accepting connections again"), "{log}");
}

#[test]
fn thousands_of_idle_connections_and_a_slowloris_do_not_delay_others_and_time_out() {
    let _serial = serial();
    const IDLE: usize = 5000;
    if common::raise_fd_limit(IDLE as u64 + 1000) < IDLE as u64 + 1000 {
        panic!("this test needs an open-file limit of {} (ulimit -Hn)", IDLE + 1000);
    }
    let (_images, _tmp, keiko) =
        common::start_standard(Options::default().arg("--header-timeout-ms", "3000"));
    // Idle keep-alive connections: each made one request and then went quiet. (Connections that
    // never send a byte are held back by the kernel, TCP_DEFER_ACCEPT, and reach keiko later.)
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| keiko.connect()).collect();
    for s in &mut idle {
        s.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    }
    for (i, s) in idle.iter_mut().enumerate() {
        let r = Response::read(&mut BufReader::new(s), true);
        assert_eq!(r.map(|r| r.status), Some(200), "idle connection {i}'s first request");
    }
    let slowloris = {
        let mut s = keiko.connect();
        std::thread::spawn(move || {
            let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in head {
                if s.write_all(&[*b]).is_err() {
                    return s;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            s
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || keiko.metric("keiko_open_connections") >= IDLE as f64),
        "the idle connections should all be open"
    );

    let mut latencies = Vec::new();
    let mut s = keiko.connect();
    for i in 0..200 {
        let started = Instant::now();
        let r = if i % 2 == 0 { keep_alive_get(&mut s, "/") } else { Some(keiko.get("/healthz")) };
        latencies.push(started.elapsed());
        assert_eq!(r.map(|r| r.status), Some(200), "request {i} next to {IDLE} idle connections");
    }
    latencies.sort();
    println!(
        "next to {IDLE} idle connections and a slowloris: median {:?}, p99 {:?}, max {:?}",
        latencies[100], latencies[198], latencies[199]
    );
    assert!(latencies[199] < Duration::from_secs(1), "a request waited {:?}", latencies[199]);

    // The header timeout (3 s, swept every 750 ms) closes every one of them.
    drop(s);
    assert!(
        eventually(Duration::from_secs(8), || keiko.metric("keiko_open_connections") <= 1.0),
        "idle connections must be closed after the header timeout: {} still open",
        keiko.metric("keiko_open_connections")
    );
    for (i, mut c) in idle.into_iter().enumerate().step_by(500) {
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert!(matches!(c.read(&mut [0; 16]), Ok(0)), "idle connection {i} was not closed quietly");
    }
    let mut slow = slowloris.join().unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408 "),
        "the slowloris gets 408 or a close: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test hooks: cargo test --features test-hooks")]
fn a_panicking_handler_closes_only_its_own_connection() {
    let _serial = serial();
    let (_images, _tmp, keiko) = common::start_standard(Options::default().arg("--threads", "1"));
    let db = keiko.db.clone();
    let mut bystander = keiko.connect();
    let mut served = 0;
    for round in 0..5 {
        assert_eq!(keep_alive_get(&mut bystander, "/").map(|r| r.status), Some(200), "round {round}");
        served += 1;
        let mut victim = keiko.connect();
        victim.write_all(b"GET /debug/panic HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert!(closed_by_server(&mut victim), "round {round}: the panicking connection must close");
    }
    assert_eq!(keep_alive_get(&mut bystander, "/").map(|r| r.status), Some(200), "after the panics");
    served += 1;
    served += (0..20).filter(|_| keiko.get("/").status == 200).count() as u64;
    drop(bystander);
    assert!(eventually(Duration::from_secs(2), || keiko.metric("keiko_open_connections") == 1.0));

    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("a connection handler panicked").count(), 5, "{log}");
    assert_eq!(db_sum(&db), served, "hits keep being counted after panics:\n{log}");
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test hooks: cargo test --features test-hooks")]
fn a_stalled_writer_never_blocks_serving_and_loses_no_hit() {
    let _serial = serial();
    const STALL: Duration = Duration::from_secs(5);
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let options = Options::default()
        .env("KEIKO_DEBUG_WRITER_STALL_MS", &STALL.as_millis().to_string())
        .env("KEIKO_DEBUG_CHANNEL_CAPACITY", "8");
    let started = Instant::now();
    let keiko = Keiko::start_with(images.path(), &db, options);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut s = keiko.connect();
            std::thread::spawn(move || {
                (0..250).filter(|_| keep_alive_get(&mut s, "/").is_some_and(|r| r.status == 200)).count()
            })
        })
        .collect();
    let served: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let hits_meanwhile: u64 = keiko.hits().values().sum();
    assert!(started.elapsed() < STALL, "the load took {:?}, longer than the stall", started.elapsed());
    assert_eq!(served, 1000, "every request is served while the writer is stalled");
    assert_eq!(hits_meanwhile, 0, "the writer was stalled, so nothing was drained yet");

    assert!(
        eventually(STALL + Duration::from_secs(5), || keiko.hits().values().sum::<u64>() == 1000),
        "hits held while the channel was full must all arrive: {:?}",
        keiko.hits()
    );
    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");
    assert_eq!(db_sum(&db), 1000, "{log}");
}

/// Serves `keiko` with a background load through `fault`, which starts when the load does and
/// must end the fault before returning; then checks that serving never stopped, that every hit
/// reached the database by shutdown, and that memory stayed flat. Returns the load's report.
fn under_load(keiko: Keiko, db: &Path, fault: impl FnOnce(&Keiko)) -> common::LoadReport {
    let load = Load::start(keiko.addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = keiko.rss_kib();
    fault(&keiko);
    let rss_after = keiko.rss_kib();
    let report = load.stop();
    println!(
        "{} responses, {} failures; latency median {:?}, p99 {:?}, max {:?}; RSS {} -> {} KiB",
        report.ok(),
        report.failures,
        report.latency(0.5),
        report.latency(0.99),
        report.latency(1.0),
        rss_before,
        rss_after
    );
    assert_eq!(report.failures, 0, "serving must never stop:\n{}", keiko.log());
    assert!(report.latency(1.0) < Duration::from_secs(1), "a request waited {:?}", report.latency(1.0));
    assert!(rss_after < rss_before + 16 * 1024, "memory grew from {rss_before} to {rss_after} KiB");
    let hits_served = keiko.metric("keiko_hits_served_total") as u64;
    assert!(hits_served >= report.ok());
    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");
    assert_eq!(db_sum(db), hits_served, "every hit must be in the database once the fault clears:\n{log}");
    assert_eq!(log.matches("cannot write hits to the database").count(), 1, "one line per failure:\n{log}");
    assert_eq!(log.matches("database writes work again").count(), 1, "one line per recovery:\n{log}");
    report
}

/// Waits until /metrics shows the writer failing, for at least `hold`, with hits still served.
fn wait_while_failing(keiko: &Keiko, hold: Duration) {
    assert!(
        eventually(Duration::from_secs(5), || keiko.metric("keiko_db_writable") == 0.0),
        "/metrics must show the database as not writable:\n{}",
        keiko.log()
    );
    let pending = keiko.metric("keiko_hits_pending");
    std::thread::sleep(hold);
    assert!(keiko.metric("keiko_hits_pending") > pending, "hits are still served and counted meanwhile");
    assert!(keiko.metric("keiko_flush_failures_total") >= 1.0);
}

#[test]
fn a_database_locked_for_ten_seconds_under_load_loses_no_hit() {
    let _serial = serial();
    let (_images, _tmp, keiko) = common::start_standard(Options::default());
    let db = keiko.db.clone();
    under_load(keiko, &db, |keiko| {
        let locker = rusqlite::Connection::open(&db).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        wait_while_failing(keiko, Duration::from_secs(10));
        locker.execute_batch("COMMIT").unwrap();
    });
}

/// A small tmpfs, mounted for one test and unmounted when dropped. Needs root (CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mounting a tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&block[..512]).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_delays_hits_but_loses_none() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let images = Images::standard();
    let db: PathBuf = fs.path().join("k.db");
    let keiko = Keiko::start(images.path(), &db);
    under_load(keiko, &db, |keiko| {
        let filler = fs.path().join("filler");
        fill(&filler);
        wait_while_failing(keiko, Duration::from_secs(3));
        std::fs::remove_file(&filler).unwrap();
    });
}

/// Sets or clears the immutable attribute, which makes even root's writes through files it
/// already has open fail (EPERM): the database turning read-only under a running keiko.
fn set_immutable(files: &[PathBuf], immutable: bool) {
    let flag = if immutable { "+i" } else { "-i" };
    let out = Command::new("chattr").arg(flag).args(files).output().unwrap();
    assert!(out.status.success(), "chattr {flag} {files:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_database_made_read_only_delays_hits_but_loses_none() {
    let _serial = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: chattr +i needs root");
        return;
    }
    let (_images, _tmp, keiko) = common::start_standard(Options::default());
    let db = keiko.db.clone();
    let files = [db.clone(), db.with_file_name("keiko.db-wal")];
    under_load(keiko, &db, |keiko| {
        set_immutable(&files, true);
        wait_while_failing(keiko, Duration::from_secs(3));
        set_immutable(&files, false);
    });
}

#[test]
fn sigterm_under_load_exits_cleanly_and_every_delivered_hit_is_counted() {
    let _serial = serial();
    let (_images, _tmp, keiko) = common::start_standard(Options::default());
    let db = keiko.db.clone();
    const CLIENTS: usize = 8;
    let load = Load::start(keiko.addr, CLIENTS);
    std::thread::sleep(Duration::from_secs(1));
    let (status, took, log) = keiko.terminate(Duration::from_secs(5));
    let report = load.stop();
    assert!(status.success(), "exit status {status:?}:\n{log}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let stored = db_sum(&db);
    println!("{} responses delivered, {stored} hits stored, shutdown took {took:?}", report.ok());
    assert!(report.ok() > 0);
    assert!(
        (report.ok()..=report.ok() + CLIENTS as u64).contains(&stored),
        "stored {stored} hits for {} delivered responses (at most {CLIENTS} more may have been in flight):\n{log}",
        report.ok()
    );
}

#[test]
fn sigkill_under_load_then_restart_loses_at_most_one_flush_window() {
    let _serial = serial();
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let flush = Duration::from_millis(100);
    let keiko = Keiko::start_with(images.path(), &db, Options::default().arg("--flush-ms", "100"));
    const CLIENTS: usize = 8;
    let load = Load::start(keiko.addr, CLIENTS);
    std::thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    keiko.kill();
    let report = load.stop();

    let restarted = Keiko::start(images.path(), &db);
    let stored: u64 = restarted.hits().values().sum();
    // A hit is committed within one flush interval plus the writer's 10 ms drain tick; allow
    // the same again for scheduling on a busy machine.
    let window = 2 * (flush + Duration::from_millis(10));
    let safe = report.delivered.iter().filter(|t| **t + window < killed_at).count() as u64;
    println!(
        "{} delivered before SIGKILL, {safe} of them older than {window:?}, {stored} stored",
        report.ok()
    );
    assert!(safe > 0);
    assert!(
        stored >= safe && stored <= report.ok() + CLIENTS as u64,
        "after SIGKILL and restart {stored} hits are stored; {safe} responses were older than a flush window"
    );
    assert_eq!(restarted.get("/").status, 200, "the restarted server serves");
}
