//! Startup: configuration from flags and environment, every way startup can fail (each with a
//! non-zero exit and a message that names the problem), and a library that has nothing to serve
//! yet (not a failure: keiko listens and answers 503 until an image arrives).

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
        ("--send-timeout-ms", "KEIKO_SEND_TIMEOUT_MS"),
        ("--cache-dir", "KEIKO_CACHE_DIR"),
        ("--webp", "KEIKO_WEBP"),
        ("--max-side", "KEIKO_MAX_SIDE"),
        ("--max-pixels", "KEIKO_MAX_PIXELS"),
        ("--max-file-bytes", "KEIKO_MAX_FILE_BYTES"),
        ("--encoders", "KEIKO_ENCODERS"),
        ("--rescan-secs", "KEIKO_RESCAN_SECS"),
        ("--drain-ms", "KEIKO_DRAIN_MS"),
    ] {
        assert!(
            help.contains(flag) && help.contains(&format!("env: {var}")),
            "{flag}/{var} missing:\n{help}"
        );
    }
}

#[test]
fn a_directory_without_usable_images_serves_503_until_one_arrives() {
    let images = Images::empty();
    images.add("broken.png", b"not a png");
    images.add("readme.txt", b"hello");
    let tmp = tempfile::tempdir().unwrap();
    let keiko =
        Keiko::start_with(images.path(), &tmp.path().join("k.db"), Options::default().listening_only());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !keiko.log().contains("no usable image") {
        assert!(std::time::Instant::now() < deadline, "no log line about the empty library: {}", keiko.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = keiko.log();
    assert!(log.contains(images.path().to_str().unwrap()), "the line names the directory: {log}");
    assert!(log.contains("broken.png"), "the broken file is named in a warning: {log}");
    for path in ["/", "/readyz"] {
        let r = keiko.get(path);
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")), "{path}");
    }
    assert_eq!(keiko.get("/healthz").status, 200, "liveness is not readiness");
    assert_eq!(keiko.metric("keiko_hits_served_total"), 0.0, "a 503 counts no hit");

    images.add("late.png", &common::png(&common::pattern(4, 4, false), 4, 4));
    keiko.wait_ready(Duration::from_secs(10));
    let r = keiko.get("/");
    assert_eq!((r.status, r.header("X-Image-Name")), (200, Some("late.png")));
}

#[test]
fn a_missing_image_directory_fails_at_once_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let started = std::time::Instant::now();
    let out = fails(
        &["--images", "/no/such/dir", "--db", tmp.path().join("k.db").to_str().unwrap()],
        &[("KEIKO_ADDR", &format!("127.0.0.1:{port}"))],
    );
    assert!(stderr(&out).contains("cannot read image directory /no/such/dir"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing may still listen");
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
    assert!(warnings[0].contains("a damaged or truncated PNG"), "said in keiko's words: {log}");
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
        (&missing_folder, "missing/folder does not exist"),
        (&a_directory, "it is a directory"),
    ] {
        let out = fails(&["--images", images.path().to_str().unwrap(), "--db", db.to_str().unwrap()], &[]);
        let err = stderr(&out);
        assert!(err.contains(db.to_str().unwrap()) && err.contains(expect), "{db:?}: {err}");
        assert!(err.matches("unable to open database file").count() <= 1, "said once at most: {err}");
    }
}

#[test]
fn a_bad_value_from_the_environment_names_its_variable() {
    let out = fails(&[], &[("KEIKO_THREADS", "banana")]);
    let err = stderr(&out);
    assert!(err.contains("banana") && err.contains("KEIKO_THREADS"), "{err}");
    let out = fails(&[], &[("KEIKO_WEBP", "lossy:150")]);
    assert!(stderr(&out).contains("KEIKO_WEBP"), "{}", stderr(&out));
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
    // The ready line and the library's line come in either order (a small library may finish first).
    let (mut ready, mut complete) = (None, None);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    while ready.is_none() || complete.is_none() {
        let line = lines.next().expect("keiko exited before ready").unwrap();
        if line.contains("ready: listening") {
            ready = Some(line);
        } else if line.contains("library complete") {
            complete = Some(line);
        }
    }
    let (ready, complete) = (ready.unwrap(), complete.unwrap());
    assert!(ready.contains(&format!("127.0.0.1:{port}")) && ready.contains("3 thread(s)"), "{ready}");
    assert!(complete.contains("4 images"), "{complete}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(common::wait_for(&mut child, Duration::from_secs(5)).success());
    assert!(db.exists());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_stop_with_a_drain_keeps_serving_while_readyz_says_503() {
    let options = Options::default().arg("--drain-ms", "1500");
    let (_images, _tmp, keiko) = common::start_standard(options);
    assert_eq!(keiko.get("/readyz").status, 200);
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(keiko.pid(), libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(400));
    let ready = keiko.get("/readyz");
    assert_eq!((ready.status, &ready.body[..]), (503, &b"draining: shutting down\n"[..]));
    let image = keiko.request("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(image.status, 200, "images are still served while draining");
    assert_eq!(image.header("Connection"), Some("close"), "so that clients move to other nodes");
    let (status, took, log) = keiko.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert!(took >= Duration::from_millis(600), "the drain lasts its 1.5 s before the stop ({took:?})");
    assert!(log.contains("draining for 1500 ms"), "{log}");
}
