//! The write routes against the real binary: off without a token, the token checked, names
//! checked, and a deleted image never served again while its hits stay in the database.

mod common;

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
