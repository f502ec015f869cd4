//! Startup: configuration from flags and environment, and every way startup can fail, each with
//! a non-zero exit and a message that names the problem, before anything listens.

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

use common::{command, Images, Keiko, Options};

/// Runs keiko expecting it to fail quickly; returns its output.
fn fails(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args).envs(env.iter().copied());
    let child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "keiko {args:?} should fail; it exited with {:?}", out.status);
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_documents_every_option_and_its_variable() {
    let out = command().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, var) in [
        ("--addr", "KEIKO_ADDR"),
        ("--threads", "KEIKO_THREADS"),
        ("--images", "KEIKO_IMAGES"),
        ("--db", "KEIKO_DB"),
        ("--flush-ms", "KEIKO_FLUSH_MS"),
        ("--header-timeout-ms", "KEIKO_HEADER_TIMEOUT_MS"),
    ] {
        assert!(
            help.contains(flag) && help.contains(&format!("env: {var}")),
            "{flag}/{var} missing:\n{help}"
        );
    }
}

#[test]
fn a_directory_without_usable_images_fails_naming_it() {
    let images = Images::empty();
    images.add("broken.png", b"not a png");
    images.add("readme.txt", b"hello");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = fails(
        &["--images", images.path().to_str().unwrap(), "--db", tmp.path().join("k.db").to_str().unwrap()],
        &[("KEIKO_ADDR", &format!("127.0.0.1:{port}"))],
    );
    let err = stderr(&out);
    assert!(err.contains("no usable image") && err.contains(images.path().to_str().unwrap()), "{err}");
    assert!(err.contains("broken.png"), "the broken file is named in a warning: {err}");
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing may have listened");

    let out = fails(&["--images", "/no/such/dir", "--db", tmp.path().join("k.db").to_str().unwrap()], &[]);
    assert!(stderr(&out).contains("/no/such/dir"), "{}", stderr(&out));
}

#[test]
fn a_broken_file_is_skipped_with_one_warning_naming_it() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start(images.path(), &tmp.path().join("k.db"));
    let log = keiko.log();
    let warnings: Vec<_> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("broken.png"), "{log}");
    assert!(log.lines().all(|l| !l.trim().is_empty()), "the warning is one line: {log:?}");
    assert!(!log.contains("notes.txt"), "other files are ignored silently: {log}");
    assert_eq!(keiko.hits().len(), 4);
}

#[test]
fn an_unusable_database_fails_with_a_clear_message() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let not_sqlite = tmp.path().join("not-sqlite.db");
    std::fs::write(&not_sqlite, vec![b'#'; 8192]).unwrap();
    let missing_folder = tmp.path().join("missing/folder/k.db");
    let a_directory = tmp.path().to_path_buf();
    for (db, expect) in [
        (&not_sqlite, "not a database"),
        (&missing_folder, "unable to open database file"),
        (&a_directory, "unable to open database file"),
    ] {
        let out = fails(&["--images", images.path().to_str().unwrap(), "--db", db.to_str().unwrap()], &[]);
        let err = stderr(&out);
        assert!(err.contains(db.to_str().unwrap()) && err.contains(expect), "{db:?}: {err}");
    }
}

/// Starts keiko on `addr` with good images and database; it must fail saying the address is in use.
fn assert_in_use(addr: &str) {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let out = fails(
        &["--addr", addr, "--images", images.path().to_str().unwrap(), "--db", db.to_str().unwrap()],
        &[],
    );
    let err = stderr(&out);
    assert!(err.contains(addr) && err.contains("in use"), "{err}");
}

#[test]
fn an_address_in_use_fails_with_a_clear_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_in_use(&taken.local_addr().unwrap().to_string());
}

#[test]
fn a_port_held_by_another_reuseport_socket_is_reported_in_use() {
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    other.listen(16).unwrap();
    assert_in_use(&other.local_addr().unwrap().as_socket().unwrap().to_string());
}

#[test]
fn bad_configuration_is_refused_with_a_message() {
    for (env, expect) in [
        (("KEIKO_THREADS", "many"), "--threads"),
        (("KEIKO_THREADS", "100000"), "KEIKO_THREADS"),
        (("KEIKO_FLUSH_MS", "0"), "--flush-ms"),
        (("KEIKO_ADDR", "localhost:80:80"), "--addr"),
        (("KEIKO_HEADER_TIMEOUT_MS", "-5"), "--header-timeout-ms"),
    ] {
        let out = fails(&[], &[env]);
        assert!(stderr(&out).contains(expect), "{env:?}: {}", stderr(&out));
    }
}

#[test]
fn flags_win_over_environment_variables() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start_with(
        images.path(),
        &tmp.path().join("k.db"),
        Options::default().arg("--threads", "1").env("KEIKO_THREADS", "3").env("KEIKO_IMAGES", "/nowhere"),
    );
    assert!(keiko.log().contains("1 thread(s)"), "{}", keiko.log());
    let (status, _, _) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success());
}

#[test]
fn environment_variables_configure_keiko() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("env.db");
    let port = free_port();
    let mut child = command()
        .env("KEIKO_ADDR", format!("127.0.0.1:{port}"))
        .env("KEIKO_THREADS", "3")
        .env("KEIKO_IMAGES", images.path())
        .env("KEIKO_DB", &db)
        .env("KEIKO_FLUSH_MS", "20")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    while !line.contains("ready") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "keiko exited before ready"
        );
    }
    assert!(line.contains(&format!("127.0.0.1:{port}")) && line.contains("3 thread(s)"), "{line}");
    assert!(line.contains("4 images"), "{line}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(common::wait_for(&mut child, Duration::from_secs(5)).success());
    assert!(db.exists());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
