//! Every hit lands: exact counts through /hits and in SQLite after SIGTERM, counts that continue
//! across restarts, a bounded loss on SIGKILL, and the same on the epoll driver.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::{db_counts, db_sum, Images, Keiko, Options, Response};

/// `clients` threads each make `per_client` GET / requests on one keep-alive connection and one
/// more with Connection: close; returns how many 200 image responses they received.
fn load(keiko: &Keiko, clients: usize, per_client: usize) -> u64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut ok = 0;
                    let mut conn = keiko.connect();
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    for _ in 0..per_client {
                        conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                        let r = Response::read(&mut reader, false).unwrap();
                        ok += u64::from(r.status == 200 && r.header("Content-Type") == Some("image/webp"));
                    }
                    ok + u64::from(keiko.get("/").status == 200)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn every_hit_is_in_hits_and_in_the_database_after_sigterm() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let keiko = Keiko::start(images.path(), &db);
    let served = load(&keiko, 8, 50);
    assert_eq!(served, 8 * 51);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(keiko.hits().values().sum::<u64>(), served, "/hits shows hits older than a flush window");

    let (status, took, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(db_sum(&db), served, "SELECT sum(count) FROM hits after SIGTERM; log:\n{log}");
}

#[test]
fn sigterm_right_after_a_burst_still_flushes_every_hit() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    // A long flush interval: nothing is written before shutdown, so the final flush must do it.
    let keiko = Keiko::start_with(images.path(), &db, Options::default().arg("--flush-ms", "60000"));
    let served = load(&keiko, 4, 25);
    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");
    assert_eq!(db_sum(&db), served, "log:\n{log}");
}

#[test]
fn a_restart_continues_the_counts() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let first = Keiko::start(images.path(), &db);
    for _ in 0..10 {
        first.get("/images/photo.jpg");
    }
    assert!(first.terminate(Duration::from_secs(5)).0.success());

    let second = Keiko::start(images.path(), &db);
    assert_eq!(second.hits()["photo.jpg"], 10, "counts from the database show in /hits");
    for _ in 0..5 {
        second.get("/images/photo.jpg");
    }
    assert!(second.terminate(Duration::from_secs(5)).0.success());
    assert_eq!(db_counts(&db)["photo.jpg"], 15);
    assert_eq!(db_counts(&db).len(), 1, "only images that were served have rows");
}

#[test]
fn sigkill_loses_at_most_the_last_flush_window() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let keiko = Keiko::start(images.path(), &db);
    let served = load(&keiko, 4, 20);
    std::thread::sleep(Duration::from_millis(400)); // several 50 ms flush windows
    keiko.kill();
    assert_eq!(db_sum(&db), served, "hits older than a flush window survive SIGKILL");

    let restarted = Keiko::start(images.path(), &db);
    assert_eq!(restarted.hits().values().sum::<u64>(), served, "the database reopens cleanly");
}

#[test]
fn a_database_locked_by_another_process_delays_hits_but_loses_none() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let keiko = Keiko::start(images.path(), &db);
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let served = load(&keiko, 4, 25);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(keiko.hits().values().sum::<u64>(), served, "/hits counts what the database cannot take yet");
    let metrics = String::from_utf8(keiko.get("/metrics").body).unwrap();
    assert!(metrics.contains("\nkeiko_db_writable 0\n"), "{metrics}");
    assert!(keiko.log().contains("cannot write hits to the database"), "{}", keiko.log());

    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");
    assert_eq!(
        log.matches("cannot write hits").count(),
        1,
        "one line per state change, not per retry:\n{log}"
    );
    assert_eq!(db_sum(&db), served, "{log}");
}

#[test]
fn the_epoll_driver_serves_and_accounts_the_same() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let keiko =
        Keiko::start_with(images.path(), &db, Options::default().env("MONOIO_FORCE_LEGACY_DRIVER", "1"));
    let log = keiko.log();
    assert!(log.contains("(epoll)"), "ready line must name the epoll driver:\n{log}");
    assert_eq!(log.matches("io_uring is not available").count(), 1, "exactly one warning:\n{log}");
    let served = load(&keiko, 4, 25);
    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");
    assert_eq!(db_sum(&db), served);
}

#[test]
fn the_io_uring_driver_is_used_where_available() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start(images.path(), &tmp.path().join("k.db"));
    let log = keiko.log();
    if monoio::utils::detect_uring() {
        assert!(log.contains("(io_uring)") && !log.contains("not available"), "{log}");
    } else {
        assert!(log.contains("(epoll)") && log.contains("io_uring is not available"), "{log}");
    }
}
