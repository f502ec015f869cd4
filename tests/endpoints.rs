//! Every endpoint of the HTTP interface, against the real binary.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use common::{Images, Keiko, Options};

fn start() -> (Images, tempfile::TempDir, Keiko) {
    common::start_standard(Options::default())
}

#[test]
fn get_root_serves_a_random_webp_with_the_contract_headers() {
    let (_images, _tmp, keiko) = start();
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let r = keiko.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("image/webp"));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert_eq!(r.header("Content-Length").unwrap().parse::<usize>().unwrap(), r.body.len());
        assert!(r.header("Date").is_some_and(|d| d.ends_with(" GMT")), "Date header: {:?}", r.header("Date"));
        assert!(common::first_frame(&r.body).is_some(), "the body must be a decodable WebP");
        let name = r.header("X-Image-Name").unwrap().to_string();
        assert!(Images::standard_names().contains(&name.as_str()), "unexpected image {name}");
        seen.insert(name);
    }
    assert_eq!(seen.len(), 4, "60 random picks should reach all 4 images, got {seen:?}");
}

#[test]
fn a_query_string_changes_nothing() {
    let (_images, _tmp, keiko) = start();
    let r = keiko.get("/?x=1&size=big");
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("image/webp")));
    let r = keiko.get("/images/alpha.png?download=1");
    assert_eq!((r.status, r.header("X-Image-Name")), (200, Some("alpha.png")));
    assert_eq!(keiko.get("/healthz?verbose").status, 200);
}

#[test]
fn head_root_sends_the_headers_without_a_body_or_a_hit() {
    let (_images, _tmp, keiko) = start();
    let mut s = keiko.connect();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = std::io::BufReader::new(s);
    let head = common::Response::read(&mut reader, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("image/webp"));
    assert!(head.header("Content-Length").unwrap().parse::<usize>().unwrap() > 0);
    let next = common::Response::read(&mut reader, false).unwrap();
    assert_eq!(
        (next.status, &next.body[..]),
        (200, &b"ok\n"[..]),
        "no body bytes may follow a HEAD response"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(keiko.hits().values().sum::<u64>(), 0, "HEAD counts no hit");
}

#[test]
fn get_images_by_name_serves_that_image_and_counts_it() {
    let (_images, _tmp, keiko) = start();
    for name in Images::standard_names() {
        let r = keiko.get(&format!("/images/{name}"));
        assert_eq!((r.status, r.header("X-Image-Name")), (200, Some(name)), "/images/{name}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let hits = keiko.hits();
    assert!(Images::standard_names().iter().all(|n| hits[*n] == 1), "{hits:?}");
}

#[test]
fn unknown_names_and_paths_outside_the_catalogue_are_404() {
    let (images, _tmp, keiko) = start();
    std::fs::write(images.path().join("../secret.png"), b"x").ok();
    for path in [
        "/images/missing.png",
        "/images/",
        "/images/notes.txt",
        "/images/broken.png",
        "/images/../secret.png",
        "/images/%2e%2e/secret.png",
        "/images/%2E%2E%2Fsecret.png",
        "/images//etc/passwd",
        "/images/%2Fetc%2Fpasswd",
        "/images/alpha.png%00",
        "/images/..%5Calpha.png",
        "/nope",
        "/images",
        "/hits/",
    ] {
        let r = keiko.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("X-Image-Name").is_none(), "{path}");
    }
}

#[test]
fn hits_reports_every_image_including_older_hits() {
    let (_images, _tmp, keiko) = start();
    let before = keiko.hits();
    assert_eq!(before.len(), 4);
    assert!(before.values().all(|&n| n == 0), "{before:?}");
    for _ in 0..25 {
        keiko.get("/");
    }
    keiko.get("/images/photo.jpg");
    std::thread::sleep(Duration::from_millis(200)); // more than --flush-ms 50
    let r = keiko.get("/hits");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let hits: std::collections::HashMap<String, u64> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits.values().sum::<u64>(), 26);
    assert!(hits["photo.jpg"] >= 1);
}

#[test]
fn healthz_is_200() {
    let (_images, _tmp, keiko) = start();
    let r = keiko.get("/healthz");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
}

#[test]
fn metrics_are_valid_prometheus_text_with_the_promised_series() {
    let (_images, _tmp, keiko) = start();
    keiko.get("/");
    keiko.get("/nope");
    std::thread::sleep(Duration::from_millis(200));
    let r = keiko.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    for series in [
        r#"keiko_requests_total{route="/",status="200"} 1"#,
        r#"keiko_requests_total{route="other",status="404"} 1"#,
        "keiko_hits_served_total 1",
        "keiko_hits_persisted_total 1",
        "keiko_hits_pending 0",
        "keiko_flush_duration_seconds_count",
        "keiko_open_connections ",
        "keiko_connections_refused_total 0",
        "keiko_send_timeouts_total 0",
        "keiko_db_writable 1",
        "keiko_flush_failures_total 0",
        "keiko_uptime_seconds",
        r#"keiko_request_duration_seconds_bucket{route="/",le="5e-05"}"#,
        r#"keiko_request_duration_seconds_bucket{route="/",le="1"} 1"#,
        r#"keiko_request_duration_seconds_bucket{route="/",le="+Inf"} 1"#,
        r#"keiko_request_duration_seconds_count{route="/"} 1"#,
        r#"keiko_request_duration_seconds_count{route="other"} 1"#,
        r#"keiko_request_duration_seconds_sum{route="/"}"#,
        r#"keiko_loop_busy_seconds_total{loop="1"}"#,
        r#"keiko_loop_busy_ratio{loop="0"}"#,
        "keiko_render_queue_depth 0",
        "keiko_encode_duration_seconds_count",
        "keiko_render_duration_seconds_count 0",
        "keiko_upload_duration_seconds_count 0",
    ] {
        assert!(text.lines().any(|l| l.starts_with(series)), "missing {series} in:\n{text}");
    }

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test (scripts/test.sh installs it: apt-get install prometheus)");
    promtool.stdin.as_ref().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_paths_are_404_and_other_methods_are_405_with_allow() {
    let (_images, _tmp, keiko) = start();
    assert_eq!(keiko.get("/favicon.ico").status, 404);
    for (method, path) in
        [("POST", "/"), ("DELETE", "/hits"), ("PUT", "/images/alpha.png"), ("OPTIONS", "/healthz")]
    {
        let r = keiko.request(&format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{method} {path}");
    }
    let r = keiko.request("POST /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404);
}
