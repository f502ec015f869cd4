//! The write routes against the real binary: off without a token, the token checked, names
//! checked, and a deleted image never served again while its hits stay in the database.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::{Images, Keiko, Options};

const TOKEN: &str = "t0ken-for-tests";

fn with_token() -> (Images, tempfile::TempDir, Keiko) {
    common::start_standard(Options::default().env("KEIKO_ADMIN_TOKEN", TOKEN))
}

fn delete(keiko: &Keiko, path: &str, authorization: Option<&str>) -> common::Response {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    keiko.request(&format!("DELETE {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"))
}

#[test]
fn without_a_token_the_write_routes_do_not_exist() {
    let (images, _tmp, keiko) = common::start_standard(Options::default());
    let r = delete(&keiko, "/images/photo.jpg", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(r.status, 405);
    assert!(images.path().join("photo.jpg").exists());
}

#[test]
fn a_missing_or_wrong_token_gets_401_and_changes_nothing() {
    let (images, _tmp, keiko) = with_token();
    for auth in
        [None, Some("Bearer wrong"), Some("Basic dDB rZW4="), Some(TOKEN), Some("Bearer t0ken-for-test")]
    {
        let r = delete(&keiko, "/images/photo.jpg", auth);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"), "{auth:?}");
    }
    assert!(images.path().join("photo.jpg").exists());
    assert_eq!(keiko.get("/images/photo.jpg").status, 200);
    assert!(!keiko.log().contains(TOKEN), "the token must never be logged");
}

#[test]
fn a_deleted_image_is_never_served_again_and_keeps_its_hits() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("keiko.db");
    let keiko = Keiko::start_with(images.path(), &db, Options::default().env("KEIKO_ADMIN_TOKEN", TOKEN));
    for _ in 0..3 {
        assert_eq!(keiko.get("/images/photo.jpg").status, 200);
    }
    let bearer = format!("Bearer {TOKEN}");
    let r = delete(&keiko, "/images/photo.jpg", Some(&bearer));
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert!(!images.path().join("photo.jpg").exists());
    assert_eq!(keiko.get("/images/photo.jpg").status, 404, "gone as soon as the 204 is out");
    for _ in 0..40 {
        assert_ne!(keiko.get("/").header("X-Image-Name"), Some("photo.jpg"));
    }
    assert_eq!(delete(&keiko, "/images/photo.jpg", Some(&bearer)).status, 404, "already gone");
    assert!(!keiko.hits().contains_key("photo.jpg"));
    keiko.terminate(Duration::from_secs(10));
    assert_eq!(common::db_counts(&db).get("photo.jpg"), Some(&3), "its hits stay in the database");
}

#[test]
fn bad_names_get_400_and_touch_nothing() {
    let (images, _tmp, keiko) = with_token();
    std::fs::create_dir(images.path().join("dir.png")).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    for (path, status) in [
        ("/images/..", 400),
        ("/images/%2E%2E%2Fphoto.jpg", 400),
        ("/images/sub%2Fphoto.jpg", 400),
        ("/images/a%00.png", 400),
        ("/images/.hidden.png", 400),
        ("/images/notes.txt", 400),
        ("/images/dir.png", 404),
        ("/images/nope.png", 404),
    ] {
        let r = delete(&keiko, path, Some(&bearer));
        assert_eq!(r.status, status, "{path}: {}", String::from_utf8_lossy(&r.body));
    }
    assert!(images.path().join("dir.png").is_dir() && images.path().join("notes.txt").exists());
    assert_eq!(keiko.get("/images/photo.jpg").status, 200);
}

#[test]
fn the_token_can_come_from_a_file_and_bad_token_settings_stop_keiko() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let keiko = Keiko::start_with(
        images.path(),
        &tmp.path().join("keiko.db"),
        Options::default().env("KEIKO_ADMIN_TOKEN_FILE", file.to_str().unwrap()),
    );
    assert_eq!(delete(&keiko, "/images/alpha.png", Some(&format!("Bearer {TOKEN}"))).status, 204);
    drop(keiko);

    std::fs::write(&file, "\n").unwrap();
    let empty = common::command()
        .env("KEIKO_IMAGES", images.path())
        .env("KEIKO_DB", tmp.path().join("k2.db"))
        .env("KEIKO_ADMIN_TOKEN_FILE", &file)
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("admin token is empty"));
    let both = common::command()
        .env("KEIKO_IMAGES", images.path())
        .env("KEIKO_DB", tmp.path().join("k3.db"))
        .env("KEIKO_ADMIN_TOKEN", TOKEN)
        .env("KEIKO_ADMIN_TOKEN_FILE", &file)
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(!String::from_utf8_lossy(&both.stderr).contains(TOKEN), "not even in an error");
}

fn put(keiko: &Keiko, name: &str, body: &[u8], auth: Option<&str>) -> common::Response {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "PUT /images/{name} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = keiko.connect();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    common::Response::read(&mut BufReader::new(s), false).expect("a response")
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[test]
fn an_uploaded_image_is_stored_durably_and_served_within_two_seconds() {
    let (images, _tmp, keiko) = with_token();
    let png = common::png(&common::pattern(20, 10, false), 20, 10);
    let r = put(&keiko, "new%20one.png", &png, Some(&bearer()));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Location"), Some("/images/new%20one.png"));
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (info["name"].as_str(), info["width"].as_u64(), info["height"].as_u64()),
        (Some("new one.png"), Some(20), Some(10))
    );
    assert_eq!(std::fs::read(images.path().join("new one.png")).unwrap(), png, "stored byte for byte");
    assert!(common::eventually(Duration::from_secs(2), || keiko.get("/images/new%20one.png").status == 200));
    assert!(
        common::eventually(Duration::from_secs(2), || keiko.get("/").header("X-Image-Name")
            == Some("new%20one.png")),
        "chosen at random"
    );
    let before = keiko.get("/images/new%20one.png").header("ETag").unwrap().to_string();
    let other = common::png(&common::pattern(12, 12, true), 12, 12);
    assert_eq!(put(&keiko, "new%20one.png", &other, Some(&bearer())).status, 200, "a replacement");
    assert!(common::eventually(Duration::from_secs(2), || {
        keiko.get("/images/new%20one.png").header("ETag").is_some_and(|e| e != before)
    }));
    let leftovers: Vec<_> = std::fs::read_dir(images.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".keiko-upload"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind");
}

#[test]
fn uploads_are_refused_with_a_clear_status_and_nothing_written() {
    let options = Options::default()
        .env("KEIKO_ADMIN_TOKEN", TOKEN)
        .env("KEIKO_MAX_UPLOAD_BYTES", "4000")
        .env("KEIKO_MAX_PIXELS", "1000000");
    let (images, _tmp, keiko) = common::start_standard(options);
    std::fs::create_dir(images.path().join("dir.png")).unwrap();
    let png = common::png(&common::pattern(8, 8, false), 8, 8);
    let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bomb.extend(100_000u32.to_be_bytes());
    bomb.extend(100_000u32.to_be_bytes());
    bomb.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    for (name, body, auth, status) in [
        ("a.png", &png[..], None, 401),
        ("a.png", &png[..], Some("Bearer nope"), 401),
        ("a.png", b"not an image at all", Some(bearer().as_str()), 415),
        ("a.png", &bomb[..], Some(bearer().as_str()), 415),
        ("a.png", &png[..png.len() / 2], Some(bearer().as_str()), 415),
        ("a.png", &[0u8; 5000][..], Some(bearer().as_str()), 413),
        ("..", &png[..], Some(bearer().as_str()), 400),
        ("x%2Fa.png", &png[..], Some(bearer().as_str()), 400),
        ("a.exe", &png[..], Some(bearer().as_str()), 400),
        ("dir.png", &png[..], Some(bearer().as_str()), 400),
    ] {
        let r = put(&keiko, name, body, auth);
        assert_eq!(r.status, status, "{name} ({} bytes): {}", body.len(), String::from_utf8_lossy(&r.body));
    }
    assert!(!images.path().join("a.png").exists(), "nothing written");
    assert!(images.path().join("dir.png").is_dir());
    assert_eq!(keiko.get("/").status, 200);
}

#[test]
fn bodies_may_be_chunked_or_wait_for_100_continue_and_slow_ones_time_out() {
    let options = Options::default().env("KEIKO_ADMIN_TOKEN", TOKEN).env("KEIKO_BODY_TIMEOUT_MS", "500");
    let (images, _tmp, keiko) = common::start_standard(options);
    let png = common::png(&common::pattern(8, 8, false), 8, 8);

    let mut s = keiko.connect();
    let head = format!("PUT /images/chunked.png HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n", bearer());
    s.write_all(head.as_bytes()).unwrap();
    for part in png.chunks(7) {
        s.write_all(format!("{:x}\r\n", part.len()).as_bytes()).unwrap();
        s.write_all(part).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r = common::Response::read(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read(images.path().join("chunked.png")).unwrap(), png);

    let mut s = keiko.connect();
    let head = format!(
        "PUT /images/expect.png HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        bearer(),
        png.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    reader.read_line(&mut line).unwrap();
    s.write_all(&png).unwrap();
    assert_eq!(common::Response::read(&mut reader, false).unwrap().status, 201);

    let mut s = keiko.connect();
    let head = format!(
        "PUT /images/slow.png HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
        bearer(),
        png.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&png[..10]).unwrap();
    let r = common::Response::read(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 408);
    assert!(!images.path().join("slow.png").exists());
}

#[test]
fn concurrent_uploads_to_one_name_leave_one_whole_file() {
    let (images, _tmp, keiko) = with_token();
    let a = common::png(&common::pattern(30, 30, false), 30, 30);
    let b = common::png(&common::pattern(31, 17, true), 31, 17);
    std::thread::scope(|s| {
        for i in 0..6 {
            let (keiko, body) = (&keiko, if i % 2 == 0 { &a } else { &b });
            s.spawn(move || {
                let r = put(keiko, "race.png", body, Some(&bearer()));
                assert!(r.status == 200 || r.status == 201, "{}", r.status);
            });
        }
    });
    let stored = std::fs::read(images.path().join("race.png")).unwrap();
    assert!(stored == a || stored == b, "never a mix of two uploads");
}

fn post(keiko: &Keiko, target: &str, content_type: Option<&str>, body: &[u8]) -> common::Response {
    let ct = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n",
        bearer(),
        body.len()
    );
    let mut s = keiko.connect();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    common::Response::read(&mut BufReader::new(s), false).expect("a response")
}

#[test]
fn post_takes_raw_or_multipart_bodies_and_names_them() {
    let (images, _tmp, keiko) = with_token();
    let png = common::png(&common::pattern(9, 9, false), 9, 9);
    let r = post(&keiko, "/images?name=posted.png", None, &png);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Location"), Some("/images/posted.png"));
    assert_eq!(std::fs::read(images.path().join("posted.png")).unwrap(), png);

    let jpeg = common::jpeg(&common::pattern(10, 7, false), 10, 7);
    let r = post(&keiko, "/images", None, &jpeg);
    assert_eq!(r.status, 201);
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let name = info["name"].as_str().unwrap().to_string();
    assert!(name.ends_with(".jpg") && name.len() == 20, "named by its content's hash: {name}");
    assert_eq!(&info["sha256"].as_str().unwrap()[..16], &name[..16]);

    let gif = common::gif(6, 5);
    let mut form = b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nignored\r\n".to_vec();
    form.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"from form.gif\"\r\n",
    );
    form.extend_from_slice(b"Content-Type: image/gif\r\n\r\n");
    form.extend_from_slice(&gif);
    form.extend_from_slice(b"\r\n--XyZ--\r\n");
    let r = post(&keiko, "/images", Some("multipart/form-data; boundary=XyZ"), &form);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read(images.path().join("from form.gif")).unwrap(), gif);
    let r = post(&keiko, "/images", Some("multipart/form-data; boundary=XyZ"), b"--XyZ--\r\n");
    assert_eq!(r.status, 400, "no image part");
    assert!(common::eventually(Duration::from_secs(2), || keiko.get("/images/from%20form.gif").status == 200));
}

#[test]
fn identical_content_is_stored_once_and_can_be_looked_up() {
    let (images, _tmp, keiko) = with_token();
    let png = common::png(&common::pattern(11, 11, false), 11, 11);
    assert_eq!(put(&keiko, "first.png", &png, Some(&bearer())).status, 201);
    let r = put(&keiko, "second.png", &png, Some(&bearer()));
    assert_eq!(r.status, 201);
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info["linked_to"], "first.png");
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(images.path().join("first.png")).unwrap(),
        std::fs::metadata(images.path().join("second.png")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "one file, two names");
    assert!(common::eventually(Duration::from_secs(2), || {
        keiko.get("/images/first.png").status == 200 && keiko.get("/images/second.png").status == 200
    }));

    let sha = info["sha256"].as_str().unwrap().to_string();
    let ask = |sha: &str, auth: bool| {
        let auth = if auth { format!("Authorization: {}\r\n", bearer()) } else { String::new() };
        keiko.request(&format!(
            "GET /images?sha256={sha} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"
        ))
    };
    let r = ask(&sha, true);
    assert_eq!(r.status, 200);
    let found: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(found["name"], "first.png");
    assert_eq!(ask(&"0".repeat(64), true).status, 404);
    assert_eq!(ask("xyz", true).status, 400);
    assert_eq!(ask(&sha, false).status, 401);
}

#[test]
fn a_body_shorter_than_announced_gets_400_and_deletes_racing_gets_leave_whole_answers() {
    let (images, _tmp, keiko) = with_token();
    let mut s = keiko.connect();
    let head = format!(
        "PUT /images/short.png HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Length: 5000\r\n\r\n",
        bearer()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b"only a little").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let r = common::Response::read(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(!images.path().join("short.png").exists());

    let statuses = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    (0..60)
                        .map(|_| {
                            let r = keiko.get("/images/anim.gif");
                            assert!(r.status == 404 || common::is_whole_webp(&r.body), "a torn body");
                            r.status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(delete(&keiko, "/images/anim.gif", Some(&bearer())).status, 204);
        readers.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<u16>>()
    });
    assert!(statuses.iter().all(|&s| s == 200 || s == 404), "{statuses:?}");
    assert_eq!(keiko.get("/images/anim.gif").status, 404);
}

#[test]
fn a_name_without_an_extension_gets_its_contents() {
    let (images, _tmp, keiko) = with_token();
    let jpeg = common::jpeg(&common::pattern(6, 6, false), 6, 6);
    let r = put(&keiko, "kitten", &jpeg, Some(&bearer()));
    assert_eq!((r.status, r.header("Location")), (201, Some("/images/kitten.jpg")));
    assert!(images.path().join("kitten.jpg").exists() && !images.path().join("kitten").exists());
    assert_eq!(put(&keiko, "kitten.txt", &jpeg, Some(&bearer())).status, 400);
}

#[test]
fn planted_symlinks_never_redirect_an_upload_and_no_hidden_file_is_left() {
    use std::os::unix::fs::{symlink, MetadataExt};
    let (images, tmp, keiko) = with_token();
    let outside = tmp.path().join("outside.png");
    let png = common::png(&common::pattern(13, 13, false), 13, 13);
    std::fs::write(&outside, &png).unwrap();
    // The same bytes behind a symlink in the directory: deduplication must not link to the link.
    symlink(&outside, images.path().join("evil.png")).unwrap();
    // And symlinks at every temporary name the old scheme would have used next.
    for n in 0..8 {
        let name = format!(".keiko-upload-{}-{n}", keiko.pid());
        symlink(&outside, images.path().join(name)).unwrap();
    }
    let r = put(&keiko, "new.png", &png, Some(&bearer()));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info["linked_to"], serde_json::Value::Null, "not linked to a symlink");
    let stored = std::fs::symlink_metadata(images.path().join("new.png")).unwrap();
    assert!(stored.is_file(), "the upload is a regular file, not a link to a link");
    assert_eq!(std::fs::read(images.path().join("new.png")).unwrap(), png);
    assert_eq!(std::fs::metadata(&outside).unwrap().nlink(), 1, "the outside file gained no name");

    let other = common::png(&common::pattern(9, 9, true), 9, 9);
    assert_eq!(put(&keiko, "other.png", &other, Some(&bearer())).status, 201);
    assert_eq!(std::fs::read(&outside).unwrap(), png, "nothing was written through a planted link");

    // Deduplicated bytes uploaded again to names that already hold them, then deleted.
    assert_eq!(put(&keiko, "same.png", &other, Some(&bearer())).status, 201, "linked to other.png");
    for name in ["same.png", "other.png", "same.png"] {
        assert_eq!(put(&keiko, name, &other, Some(&bearer())).status, 200, "{name} again");
    }
    for name in ["same.png", "other.png"] {
        assert_eq!(delete(&keiko, &format!("/images/{name}"), Some(&bearer())).status, 204);
    }
    let planted: Vec<String> = (0..8).map(|n| format!(".keiko-upload-{}-{n}", keiko.pid())).collect();
    let hidden: Vec<String> = std::fs::read_dir(images.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".keiko-upload") && !planted.contains(name))
        .collect();
    assert!(hidden.is_empty(), "no temporary file left behind: {hidden:?}");
    for name in &planted {
        let meta = std::fs::symlink_metadata(images.path().join(name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name}: the planted link is untouched (too new to sweep)");
    }
}
