//! Hits in PostgreSQL, against a real server (tests/common/postgres.rs): the server stopped
//! under load loses no hit, two nodes sharing the table sum exactly, and credentials come from
//! the PG variables or the password file without ever reaching the log.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::postgres::{self, Postgres};
use common::{eventually, Images, Keiko, Load, Options};

fn node(images: &Images, pg: &Postgres, options: Options) -> Keiko {
    let cache = tempfile::tempdir().unwrap().keep();
    let options = options.arg("--cache-dir", cache.to_str().unwrap());
    Keiko::start_with(images.path(), std::path::Path::new(&pg.url()), options)
}

fn with_password() -> Options {
    Options::default().env("PGPASSWORD", postgres::PASSWORD)
}

#[test]
fn postgres_stopped_for_ten_seconds_under_load_loses_no_hit() {
    let images = Images::standard();
    let mut pg = Postgres::start();
    let keiko = node(&images, &pg, with_password());
    let load = Load::start(keiko.addr, 4);
    std::thread::sleep(Duration::from_secs(1));

    pg.stop();
    let served_at_stop = keiko.metric("keiko_hits_served_total") as u64;
    assert!(
        eventually(Duration::from_secs(10), || keiko.metric("keiko_db_writable") == 0.0),
        "the writer should notice the server is gone:\n{}",
        keiko.log()
    );
    std::thread::sleep(Duration::from_secs(10));
    let shown: u64 = keiko.hits().values().sum();
    assert!(
        shown > served_at_stop,
        "/hits goes on counting what the database cannot take: {shown} <= {served_at_stop}"
    );
    pg.resume();
    assert!(
        eventually(Duration::from_secs(15), || keiko.metric("keiko_db_writable") == 1.0),
        "keiko should reconnect:\n{}",
        keiko.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    assert_eq!(report.failures, 0, "serving must go on while the database is away:\n{}", keiko.log());
    let served = keiko.metric("keiko_hits_served_total") as u64;
    assert!(served >= report.ok());
    let (status, _, log) = keiko.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert_eq!(pg.sum(), served, "every hit served is in PostgreSQL once it is back:\n{log}");
    assert_eq!(log.matches("cannot write hits to the database").count(), 1, "one line down:\n{log}");
    assert_eq!(log.matches("database writes work again").count(), 1, "one line back:\n{log}");
    assert!(!log.contains(postgres::PASSWORD), "the password must never be logged:\n{log}");
}

#[test]
fn two_nodes_sharing_one_database_sum_exactly() {
    let images = Images::standard();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let pgpass = postgres::password_file(dir.path(), &format!("127.0.0.1:*:*:keiko:{}", postgres::PASSWORD));
    let options = || Options::default().env("PGPASSFILE", pgpass.to_str().unwrap());
    let (a, b) = (node(&images, &pg, options()), node(&images, &pg, options()));
    let (load_a, load_b) = (Load::start(a.addr, 3), Load::start(b.addr, 3));
    std::thread::sleep(Duration::from_secs(3));
    let (report_a, report_b) = (load_a.stop(), load_b.stop());
    assert_eq!(report_a.failures + report_b.failures, 0);
    let served = |k: &Keiko| k.metric("keiko_hits_served_total") as u64;
    let total = served(&a) + served(&b);
    assert!(total >= report_a.ok() + report_b.ok() && report_a.ok() > 0 && report_b.ok() > 0);
    let fleet_view = |k: &Keiko| k.hits().values().sum::<u64>();
    assert!(
        eventually(Duration::from_secs(15), || fleet_view(&a) == total && fleet_view(&b) == total),
        "each node's /hits shows both nodes' hits: {} and {} of {total}",
        fleet_view(&a),
        fleet_view(&b)
    );
    let (by_a, by_b) = (a.hits(), b.hits());
    assert_eq!(by_a, by_b, "both nodes report the same counts per image");
    for keiko in [a, b] {
        let (status, _, log) = keiko.terminate(Duration::from_secs(10));
        assert!(status.success(), "{log}");
    }
    assert_eq!(pg.sum(), total, "the database holds exactly the image responses of both nodes");
    let mut expected = report_a.by_name.clone();
    for (name, n) in report_b.by_name {
        *expected.entry(name).or_default() += n;
    }
    assert_eq!(pg.counts(), expected, "and per image");
}

/// Starts keiko on `db`, which must refuse to start: its stderr (the wait is bounded).
fn refused_start(images: &Images, db: &str, env: &[(&str, &str)]) -> String {
    let mut child = common::command()
        .args(["--addr", "127.0.0.1:0", "--images"])
        .arg(images.path())
        .args(["--db", db])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_for(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "keiko started:\n{stderr}");
    stderr
}

#[test]
fn a_wrong_password_stops_startup_with_a_clear_error_that_hides_it() {
    let images = Images::standard();
    let pg = Postgres::start();
    let url = format!("postgres://keiko:not-{}@127.0.0.1:{}/hits", postgres::PASSWORD, pg.port);
    let stderr = refused_start(&images, &url, &[]);
    assert!(stderr.contains("cannot use PostgreSQL at postgres://keiko@127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("password authentication failed"), "{stderr}");
    assert!(!stderr.contains("not-s3cret"), "the password must not be shown:\n{stderr}");
}

#[test]
fn a_flush_retried_after_a_lost_reply_is_added_once() {
    use keiko::{Database, Store};
    let pg = Postgres::start();
    let url = format!("postgres://keiko:{}@127.0.0.1:{}/hits", postgres::PASSWORD, pg.port);
    let mut store = Store::open(&Database::Postgres(url)).unwrap();
    let first = store.add(&["a.png", "b.png"], &[3, 4], 1).unwrap();
    assert_eq!((first["a.png"], first["b.png"]), (3, 4));
    let retried = store.add(&["a.png", "b.png"], &[3, 4], 1).unwrap();
    assert!(retried.is_empty(), "the same flush number again adds nothing");
    let next = store.add(&["a.png"], &[1], 2).unwrap();
    assert_eq!(next["a.png"], 4);
    assert_eq!(pg.sum(), 8);
}

#[test]
fn a_node_started_while_postgres_is_down_serves_and_writes_its_hits_once_it_is_up() {
    let images = Images::standard();
    let mut pg = Postgres::start();
    pg.stop();
    let keiko = node(&images, &pg, with_password());
    for _ in 0..20 {
        assert_eq!(keiko.get("/").status, 200, "serving does not wait for the database");
    }
    assert!(
        eventually(Duration::from_secs(5), || keiko.hits().values().sum::<u64>() == 20),
        "/hits counts what waits in memory"
    );
    assert!(keiko.log().contains("does not answer"), "{}", keiko.log());
    pg.resume();
    assert!(
        eventually(Duration::from_secs(15), || keiko.metric("keiko_hits_persisted_total") == 20.0),
        "the held hits are written once PostgreSQL answers:\n{}",
        keiko.log()
    );
    assert_eq!(pg.sum(), 20);
    let (status, _, log) = keiko.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
}

#[test]
fn a_hits_table_of_another_shape_stops_startup_naming_the_schema() {
    let images = Images::standard();
    let pg = Postgres::start();
    pg.execute("CREATE TABLE hits (name TEXT, count INTEGER)");
    let stderr = refused_start(&images, &pg.url(), &[("PGPASSWORD", postgres::PASSWORD)]);
    assert!(
        stderr.contains("does not have the expected schema: name TEXT PRIMARY KEY, count BIGINT"),
        "{stderr}"
    );
}
