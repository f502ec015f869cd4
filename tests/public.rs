//! A public deployment against the real binary: signed URLs (valid, wrong, expired, rotated
//! keys, a URL signed for one size used for another, `keiko sign`), presets (served by name,
//! made ahead of any request, presets-only mode), per-client render budgets with the client
//! taken from X-Forwarded-For only behind a trusted proxy, and CORS.

mod common;

use std::time::Duration;

use common::{Images, Keiko, Options};

const KEY: &str = "public-test-key-0123456789";
const OLD_KEY: &str = "retired-test-key-0123456789";

/// `keiko sign` with the given keys in the environment.
fn sign(keys: &str, target: &str, expires_in: Option<&str>) -> String {
    let mut command = common::command();
    command.env("KEIKO_SIGNING_KEYS", keys).arg("sign").arg(target);
    if let Some(secs) = expires_in {
        command.args(["--expires-in", secs]);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "keiko sign: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn start(options: Options) -> (Images, tempfile::TempDir, Keiko) {
    common::start_standard(options)
}

#[test]
fn with_signing_keys_renditions_need_a_valid_signature_and_whole_images_do_not() {
    let options = Options::default().env("KEIKO_SIGNING_KEYS", &format!("{KEY},{OLD_KEY}"));
    let (_images, _tmp, keiko) = start(options);
    let renders = || keiko.metric("keiko_render_duration_seconds_count");

    let signed = sign(KEY, "/images/photo.jpg/20/10?blur=1", None);
    assert!(signed.starts_with("/images/photo.jpg/20/10?blur=1&sig="), "{signed}");
    assert_eq!(keiko.get(&signed).status, 200, "signed with the first key");
    let by_old = sign(OLD_KEY, "/images/photo.jpg/21/10", None);
    assert_eq!(keiko.get(&by_old).status, 200, "a key being rotated out still verifies");
    let rendered = renders();

    let wrong = sign("some-other-key-0123456789", "/images/photo.jpg/22/10", None);
    let other_size = signed.replacen("/20/10", "/30/10", 1);
    let expired = sign(KEY, "/images/photo.jpg/23/10", Some("0"));
    for (target, why) in [
        ("/images/photo.jpg/24/10".to_string(), "needs a signature"),
        (wrong, "does not match"),
        (other_size, "does not match"),
        (format!("{signed}&grayscale"), "needs a signature"),
    ] {
        let r = keiko.get(&target);
        assert_eq!(r.status, 403, "{target}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(why),
            "{target}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    let r = keiko.get(&expired);
    assert_eq!(r.status, 403, "{expired}");
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
    assert_eq!(renders(), rendered, "no refused request rendered anything");
    assert_eq!(keiko.get("/images/photo.jpg").status, 200, "whole images need no signature");
    assert_eq!(keiko.get("/").status, 200);
    assert!(!keiko.log().contains(KEY) && !keiko.log().contains(OLD_KEY), "keys never logged");
}

#[test]
fn signing_scope_all_covers_whole_images_and_bad_keys_stop_startup() {
    let options = Options::default().env("KEIKO_SIGNING_KEYS", KEY).env("KEIKO_SIGNING_SCOPE", "all");
    let (_images, _tmp, keiko) = start(options);
    assert_eq!(keiko.get("/images/photo.jpg").status, 403);
    assert_eq!(keiko.get(&sign(KEY, "/images/photo.jpg", None)).status, 200);
    assert_eq!(keiko.get("/").status, 403);
    assert_eq!(keiko.get(&sign(KEY, "/", None)).status, 200);
    assert_eq!(keiko.get("/healthz").status, 200, "operator routes are not image routes");

    let out = common::command().env("KEIKO_SIGNING_KEYS", "short").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signing key 1 of 1") && !err.contains("short"), "{err}");
    let out = common::command().arg("sign").arg("/1/1").env_remove("KEIKO_SIGNING_KEYS").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no signing key"));
}

#[test]
fn presets_are_made_ahead_and_presets_only_refuses_every_other_rendition() {
    let options = Options::default()
        .env("KEIKO_PRESETS", "thumb=/12/8 soft=/12/8?blur=2&grayscale")
        .env("KEIKO_PRESETS_ONLY", "true")
        .env("KEIKO_SIGNING_KEYS", KEY);
    let (_images, _tmp, keiko) = start(options);
    let images = common::Images::standard_names().len() as f64;
    assert!(
        common::eventually(Duration::from_secs(20), || keiko.metric("keiko_presets_made_total")
            >= 2.0 * images),
        "every preset of every image made after the library is ready: {}",
        keiko.metric("keiko_presets_made_total")
    );
    let renders = keiko.metric("keiko_render_duration_seconds_count");
    let r = keiko.get("/images/photo.jpg?preset=thumb");
    assert_eq!(
        (r.status, r.header("Content-Type")),
        (200, Some("image/webp")),
        "a preset needs no signature"
    );
    let decoded = webp::Decoder::new(&r.body).decode().unwrap();
    assert_eq!((decoded.width(), decoded.height()), (12, 8));
    assert_eq!(keiko.get("/?preset=soft").status, 200);
    assert_eq!(keiko.metric("keiko_render_duration_seconds_count"), renders, "no cold render on a request");

    for target in ["/images/photo.jpg/12/8", "/12/8", "/ascii", "/images/photo.jpg?blur=2"] {
        let r = keiko.get(target);
        assert_eq!(r.status, 403, "{target}");
        assert!(String::from_utf8_lossy(&r.body).contains("only its presets: thumb, soft"), "{target}");
    }
    let signed = sign(KEY, "/images/photo.jpg/12/8", None);
    assert_eq!(keiko.get(&signed).status, 403, "presets-only holds for signed URLs too");
    let r = keiko.get("/?preset=nope");
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("no preset named 'nope'"));
}

/// `GET target` carrying `X-Forwarded-For: list`.
fn forwarded(keiko: &Keiko, target: &str, list: &str) -> common::Response {
    keiko.request(&format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {list}\r\nConnection: close\r\n\r\n"
    ))
}

#[test]
fn each_client_has_a_budget_of_renders_and_forwarded_addresses_count_only_from_trusted_proxies() {
    let options = Options::default()
        .env("KEIKO_CLIENT_RENDER_BURST", "3")
        .env("KEIKO_CLIENT_RENDERS_PER_SECOND", "0.2")
        .env("KEIKO_TRUSTED_PROXIES", "127.0.0.1");
    let (_images, _tmp, keiko) = start(options);
    let get = |target: &str, client: &str| forwarded(&keiko, target, &format!("198.51.100.1, {client}"));
    for n in 1..=3 {
        assert_eq!(get(&format!("/images/photo.jpg/{n}/{n}"), "203.0.113.5").status, 200, "render {n}");
    }
    let refused = get("/images/photo.jpg/4/4", "203.0.113.5");
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry), "Retry-After {retry}");
    assert_eq!(get("/images/photo.jpg/1/1", "203.0.113.5").status, 200, "a cached rendition never counts");
    assert_eq!(get("/images/photo.jpg/4/4", "203.0.113.6").status, 200, "another client has its own budget");
    assert!(keiko.metric("keiko_render_budget_refusals_total") >= 1.0);

    // From an untrusted peer the header is ignored: every request is the peer's own.
    let options = Options::default()
        .env("KEIKO_CLIENT_RENDER_BURST", "2")
        .env("KEIKO_CLIENT_RENDERS_PER_SECOND", "0.2");
    let (_images2, _tmp2, keiko2) = start(options);
    let forged = |target: &str, client: &str| forwarded(&keiko2, target, client);
    assert_eq!(forged("/images/photo.jpg/1/1", "192.0.2.1").status, 200);
    assert_eq!(forged("/images/photo.jpg/2/2", "192.0.2.2").status, 200);
    assert_eq!(forged("/images/photo.jpg/3/3", "192.0.2.3").status, 429, "a forged header buys nothing");
}

#[test]
fn read_routes_send_cors_and_answer_preflights_and_bad_origins_stop_startup() {
    let options = Options::default().env("KEIKO_CORS_ORIGIN", "https://example.com");
    let (_images, _tmp, keiko) = start(options);
    let r = keiko.get("/images/photo.jpg");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("https://example.com"));
    assert_eq!(keiko.get("/metrics").header("Access-Control-Allow-Origin"), None);
    let r = keiko.request("OPTIONS /images/photo.jpg/10/10 HTTP/1.1\r\nHost: t\r\nOrigin: https://example.com\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Methods"), Some("GET, HEAD"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("https://example.com"));
    assert_eq!(keiko.metric("keiko_render_duration_seconds_count"), 0.0, "a preflight renders nothing");
    let r = keiko.get("/nope/nope/nope");
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));

    let out = common::command().env("KEIKO_CORS_ORIGIN", "https://a.com/x").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("KEIKO_CORS_ORIGIN"));
}
