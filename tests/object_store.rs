//! The library in object storage, against a real S3-compatible store (Garage, tests/common/
//! garage.rs): the bucket listed and followed, encodings published once and fetched by a second
//! node instead of encoded, writes through any node seen by the others at once (PostgreSQL
//! NOTIFY), the store stopped and resumed under load with no failed request and no lost hit, a
//! bucket that refuses stopping the start with a clear message, and credentials from the shared
//! AWS files, never in the log.

mod common;

use std::io::{BufReader, Write};
use std::path::Path;
use std::time::Duration;

use common::garage::{self, Garage};
use common::postgres::{self, Postgres};
use common::{eventually, jpeg, pattern, png, Keiko, Load, Options};

const TOKEN: &str = "t0ken-for-object-store";
const LIBRARY: &str = "s3://keiko/lib";

fn photo(width: u32) -> Vec<u8> {
    jpeg(&pattern(width, 48, false), width, 48)
}

/// A node on the bucket with its own cache and, unless `db` is given, its own SQLite database.
fn node(garage: &Garage, db: Option<&Postgres>, options: Options) -> Keiko {
    let tmp = tempfile::tempdir().unwrap().keep();
    let mut options = options.arg("--cache-dir", tmp.join("cache").to_str().unwrap());
    for (key, value) in garage.env() {
        options = options.env(&key, &value);
    }
    let db = match db {
        Some(pg) => {
            options = options.env("PGPASSWORD", postgres::PASSWORD);
            pg.url().into()
        }
        None => tmp.join("keiko.db"),
    };
    Keiko::start_with(Path::new(LIBRARY), &db, options)
}

fn names(keiko: &Keiko) -> Vec<String> {
    let mut names: Vec<String> = keiko.hits().into_keys().collect();
    names.sort();
    names
}

fn put(keiko: &Keiko, name: &str, body: &[u8]) -> common::Response {
    let head = format!(
        "PUT /images/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = keiko.connect();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    common::Response::read(&mut BufReader::new(s), false).expect("a response")
}

fn delete(keiko: &Keiko, name: &str) -> common::Response {
    keiko.request(&format!(
        "DELETE /images/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ))
}

fn no_secret_in(log: &str) {
    assert!(!log.contains(garage::SECRET), "the secret key must never be logged:\n{log}");
}

#[test]
fn a_bucket_is_listed_followed_and_its_encodings_made_once_for_the_fleet() {
    let garage = Garage::start();
    garage.put("lib/a.jpg", &photo(64));
    garage.put("lib/b.png", &png(&pattern(40, 30, true), 40, 30));
    garage.put("lib/c.jpg", &photo(72));
    garage.put("lib/notes.txt", b"not an image");
    garage.put("lib/.hidden.jpg", &photo(80));
    garage.put("lib/sub/d.jpg", &photo(88));
    garage.put("elsewhere.jpg", &photo(96));

    // `auto`: the JPEGs are lossy WebP, and so also get an AVIF.
    let auto = || Options::default().arg("--webp", "auto").env("KEIKO_STORE_RENDITIONS", "true");
    let first = node(&garage, None, auto().arg("--store-poll-ms", "200"));
    assert_eq!(names(&first), ["a.jpg", "b.png", "c.jpg"], "only the images directly under the prefix");
    assert_eq!(first.metric("keiko_store_up"), 1.0);
    assert_eq!(first.metric("keiko_cache_misses_total"), 3.0, "the first node encodes each image");
    assert!(
        eventually(Duration::from_secs(60), || first.metric(r#"keiko_library_avif_images{state="waiting"}"#)
            == 0.0),
        "the AVIF backfill should finish:\n{}",
        first.log()
    );
    let shared = garage.keys("lib/.keiko/encodings");
    assert_eq!(shared.iter().filter(|k| k.ends_with(".webp")).count(), 3, "{shared:?}");
    assert_eq!(shared.iter().filter(|k| k.ends_with(".avif")).count(), 2, "the two JPEGs: {shared:?}");

    garage.put("lib/e.jpg", &photo(104));
    assert!(
        eventually(Duration::from_secs(5), || first.get("/images/e.jpg").status == 200),
        "a new object is served within the poll:\n{}",
        first.log()
    );
    garage.delete("lib/a.jpg");
    assert!(
        eventually(Duration::from_secs(5), || first.get("/images/a.jpg").status == 404),
        "a deleted object stops being served:\n{}",
        first.log()
    );
    assert!(eventually(Duration::from_secs(60), || first
        .metric(r#"keiko_library_avif_images{state="waiting"}"#)
        == 0.0));

    let second = node(&garage, None, auto());
    assert_eq!(names(&second), ["b.png", "c.jpg", "e.jpg"]);
    assert_eq!(second.metric("keiko_cache_misses_total"), 0.0, "nothing encoded:\n{}", second.log());
    assert_eq!(second.metric("keiko_store_encodings_fetched_total"), 3.0 + 2.0, "3 WebP and 2 AVIF");
    assert!(eventually(Duration::from_secs(10), || second
        .metric("keiko_library_avif_images{state=\"ready\"}")
        == 2.0));
    assert_eq!(second.metric("keiko_avif_encode_duration_seconds_count"), 0.0, "no AVIF encoded either");
    assert_eq!(second.get("/images/c.jpg").body, first.get("/images/c.jpg").body, "the same bytes");

    let thumb = first.get("/images/c.jpg/36/24");
    assert_eq!(thumb.status, 200);
    assert_eq!(first.metric("keiko_render_duration_seconds_count"), 1.0);
    assert_eq!(garage.keys("lib/.keiko/renditions").len(), 1, "a rendition shared when asked");
    assert_eq!(second.get("/images/c.jpg/36/24").body, thumb.body, "the second node fetches it");
    assert_eq!(second.metric("keiko_render_duration_seconds_count"), 0.0, "and renders nothing");
    no_secret_in(&first.log());
    no_secret_in(&second.log());
}

#[test]
fn writes_through_any_node_reach_the_bucket_and_every_node_at_once() {
    let garage = Garage::start();
    garage.put("lib/a.jpg", &photo(64));
    let pg = Postgres::start();
    // Polls far apart: only PostgreSQL's NOTIFY can make the others see a write within seconds.
    let options = || Options::default().env("KEIKO_ADMIN_TOKEN", TOKEN).arg("--store-poll-ms", "600000");
    let one = node(&garage, Some(&pg), options());
    let two = node(&garage, Some(&pg), options());

    let upload = png(&pattern(50, 40, false), 50, 40);
    let r = put(&one, "new.png", &upload);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(garage.get("lib/new.png").as_deref(), Some(&upload[..]), "durable in the bucket first");
    for keiko in [&one, &two] {
        assert!(
            eventually(Duration::from_secs(5), || keiko.get("/images/new.png").status == 200),
            "every node serves an upload within seconds:\n{}",
            keiko.log()
        );
    }
    assert_eq!(put(&two, "new.png", &upload).status, 200, "a replacement is no creation");

    let r = delete(&two, "new.png");
    assert_eq!(r.status, 204);
    assert_eq!(two.get("/images/new.png").status, 404, "gone on the deleting node at once");
    assert!(garage.get("lib/new.png").is_none());
    assert!(
        eventually(Duration::from_secs(5), || one.get("/images/new.png").status == 404),
        "gone on the other node within seconds:\n{}",
        one.log()
    );
    assert_eq!(delete(&one, "new.png").status, 404);
    no_secret_in(&one.log());
}

#[test]
fn the_store_down_under_load_fails_no_request_and_loses_no_hit() {
    let mut garage = Garage::start();
    garage.put("lib/a.jpg", &photo(64));
    garage.put("lib/b.jpg", &photo(72));
    let keiko =
        node(&garage, None, Options::default().env("KEIKO_ADMIN_TOKEN", TOKEN).arg("--store-poll-ms", "200"));
    let load = Load::start(keiko.addr, 4);
    std::thread::sleep(Duration::from_millis(500));

    garage.stop();
    assert!(
        eventually(Duration::from_secs(10), || keiko.metric("keiko_store_up") == 0.0),
        "the mirror notices:\n{}",
        keiko.log()
    );
    let ready = keiko.get("/readyz");
    assert_eq!(ready.status, 200, "still ready: it serves what it has");
    let detail = String::from_utf8_lossy(&ready.body).to_string();
    assert!(detail.contains("object store has not answered"), "{detail}");
    let r = put(&keiko, "late.png", &png(&pattern(20, 20, false), 20, 20));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert_eq!(delete(&keiko, "a.jpg").status, 503);
    assert!(keiko.metric(r#"keiko_store_errors_total{op="list"}"#) >= 1.0);
    std::thread::sleep(Duration::from_secs(3));

    garage.resume();
    garage.wait_answering();
    assert!(
        eventually(Duration::from_secs(40), || keiko.metric("keiko_store_up") == 1.0),
        "the mirror retries with backoff and finds it again:\n{}",
        keiko.log()
    );
    assert_eq!(keiko.get("/readyz").body, b"ready\n");
    let report = load.stop();
    assert_eq!(report.failures, 0, "no request fails while the store is away:\n{}", keiko.log());
    assert_eq!(names(&keiko), ["a.jpg", "b.jpg"]);
    let served = keiko.metric("keiko_hits_served_total") as u64;
    let db = keiko.db.clone();
    let (status, _, log) = keiko.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert_eq!(common::db_sum(&db), served, "every hit is in the database:\n{log}");
    assert_eq!(log.matches("cannot follow s3://keiko/lib").count(), 1, "one line down:\n{log}");
    assert_eq!(log.matches("answers again").count(), 1, "one line back:\n{log}");
    no_secret_in(&log);
}

#[test]
fn a_key_that_decodes_to_a_path_is_skipped_and_nothing_is_written_outside_the_mirror() {
    let garage = Garage::start();
    garage.put("lib/a.jpg", &photo(64));
    garage.put_raw("lib/..%2Fescape.jpg", &photo(72));
    garage.put_raw("lib/%2Ftmp%2Fkeiko-escape-test.jpg", &photo(80));
    garage.put_raw("lib/caf%C3%A9.jpg", &photo(88));
    let tmp = tempfile::tempdir().unwrap();
    let mut options = Options::default().arg("--cache-dir", tmp.path().join("cache").to_str().unwrap());
    for (key, value) in garage.env() {
        options = options.env(&key, &value);
    }
    let keiko = Keiko::start_with(Path::new(LIBRARY), &tmp.path().join("k.db"), options);
    assert_eq!(names(&keiko), ["a.jpg", "café.jpg"], "a percent-encoded name is served decoded");
    assert!(!tmp.path().join("cache/escape.jpg").exists(), "nothing written beside the mirror");
    assert!(!Path::new("/tmp/keiko-escape-test.jpg").exists(), "nor anywhere else");
    let log = keiko.log();
    // `../escape.jpg` starts with a dot: not an image name at all, like a hidden file.
    assert_eq!(log.matches("holds '/'").count(), 1, "one warning:\n{log}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(keiko.log().matches("holds '/'").count(), 1, "not again at the next listing");
}

/// Runs keiko on `library` with `env` until it exits (it must refuse to start); its log.
fn refused_start(garage: &Garage, library: &str, env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = common::command();
    cmd.args(["--addr", "127.0.0.1:0", "--images", library])
        .arg("--db")
        .arg(tmp.path().join("k.db"))
        .envs(garage.env())
        .envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "keiko should refuse {library} with {env:?}:\n{log}");
    no_secret_in(&log);
    log
}

#[test]
fn a_bucket_that_refuses_stops_the_start_with_a_clear_message() {
    let garage = Garage::start();
    garage.put("nested/photos/a.jpg", &photo(64));
    let log = refused_start(&garage, "s3://no-such-bucket/lib", &[]);
    assert!(log.contains("cannot use s3://no-such-bucket/lib as the image library"), "{log}");
    let log = refused_start(&garage, LIBRARY, &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")]);
    assert!(log.contains("cannot use s3://keiko/lib as the image library"), "{log}");
    let log = refused_start(&garage, LIBRARY, &[("AWS_REGION", "us-east-1")]);
    assert!(log.contains("cannot use s3://keiko/lib as the image library"), "a wrong region: {log}");
    let log = refused_start(&garage, "s3://keiko/nested", &[]);
    assert!(log.contains("holds no image directly, only the prefixes photos/"), "{log}");
    garage.put("lib/.keiko/layout", b"somebody else's layout\n");
    let log = refused_start(&garage, LIBRARY, &[]);
    assert!(log.contains("is not keiko's layout 1"), "{log}");
    let log = refused_start(&garage, "s3://Bad_Bucket", &[]);
    assert!(log.contains("a bucket name is 3 to 63 lowercase letters"), "{log}");
}

#[test]
fn credentials_come_from_the_shared_aws_files_as_aws_tools_read_them() {
    let garage = Garage::start();
    garage.put("lib/a.jpg", &photo(64));
    let aws = garage.dir().join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = GKnotthisone\naws_secret_access_key = nope\n\n[fleet]\n\
             aws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage::KEY_ID,
            garage::SECRET
        ),
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!("[profile fleet]\nregion = {}\nendpoint_url = {}\n", garage::REGION, garage.endpoint()),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = common::command();
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"] {
        cmd.env_remove(key);
    }
    cmd.args(["--addr", "127.0.0.1:0", "--images", LIBRARY, "--threads", "1"])
        .arg("--db")
        .arg(tmp.path().join("k.db"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .env("HOME", garage.dir())
        .env("AWS_PROFILE", "fleet")
        .env("AWS_SHARED_CREDENTIALS_FILE", aws.join("credentials"))
        .env("AWS_CONFIG_FILE", aws.join("config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    });
    let mirrored = tmp.path().join("cache/originals/a.jpg");
    let copied = eventually(Duration::from_secs(30), || mirrored.exists());
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = lines.join().unwrap();
    assert!(copied, "the profile's credentials, region and endpoint reach the bucket:\n{log}");
    no_secret_in(&log);
}
