//! The image API against the real binary: sizes, seeds, effects, the render cache and its limits,
//! the list and info, conditional GETs, ASCII art and its gzip form, and bad parameters.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::{Images, Keiko, Options, Response};

fn start() -> (Images, tempfile::TempDir, Keiko) {
    common::start_standard(Options::default())
}

fn decoded(r: &Response) -> webp::WebPImage {
    assert_eq!(r.header("Content-Type"), Some("image/webp"));
    webp::Decoder::new(&r.body).decode().expect("a decodable WebP")
}

#[test]
fn sizes_come_out_exactly_as_asked() {
    let (_images, _tmp, keiko) = start();
    for (path, want) in [
        ("/20/10", (20, 10)),
        ("/7", (7, 7)),
        ("/images/photo.jpg/30/40", (30, 40)),
        ("/images/alpha.png/5", (5, 5)),
        ("/seed/abc/64/48", (64, 48)),
        ("/images/photo.jpg?grayscale", (24, 16)),
    ] {
        let r = keiko.get(path);
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        let image = common::first_frame(&r.body).expect("a decodable WebP");
        assert_eq!((image.width, image.height), want, "{path}");
    }
}

#[test]
fn random_routes_are_never_cached_and_named_ones_carry_an_etag() {
    let (_images, _tmp, keiko) = start();
    for path in ["/", "/20/10", "/7?blur", "/seed/x", "/seed/x/3/3", "/ascii"] {
        let r = keiko.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{path}");
        assert_eq!(r.header("ETag"), None, "{path}");
    }
    for path in [
        "/images/photo.jpg",
        "/images/photo.jpg/3/3",
        "/images/photo.jpg?grayscale",
        "/images/photo.jpg/ascii",
    ] {
        let r = keiko.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Cache-Control"), Some("public, max-age=86400"), "{path}");
        let etag = r.header("ETag").unwrap_or_else(|| panic!("{path}: no ETag"));
        assert!(etag.len() == 34 && etag.starts_with('"') && etag.ends_with('"'), "{path}: {etag}");
    }
}

#[test]
fn seeds_pick_the_same_image_and_spread_over_all_of_them() {
    let (_images, _tmp, keiko) = start();
    let name = |path: &str| keiko.get(path).header("X-Image-Name").unwrap().to_string();
    assert_eq!(name("/seed/hello"), name("/seed/hello"));
    assert_eq!(name("/seed/hello"), name("/seed/hello/9/9"), "a size does not change the pick");
    let mut counts: HashMap<String, u32> = HashMap::new();
    for seed in 0..200 {
        *counts.entry(name(&format!("/seed/s{seed}"))).or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|&n| (25..=75).contains(&n)), "200 seeds over 4 images: {counts:?}");
}

#[test]
fn grayscale_makes_channels_equal_and_blur_changes_pixels() {
    let (_images, _tmp, keiko) = start();
    let gray = decoded(&keiko.get("/images/photo.jpg/24/16?grayscale"));
    assert!(gray.chunks(if gray.is_alpha() { 4 } else { 3 }).all(|p| p[0] == p[1] && p[1] == p[2]));
    let plain = decoded(&keiko.get("/images/photo.jpg/24/16"));
    assert!(plain.chunks(3).any(|p| p[0] != p[1]), "the source has colour");
    let blurred = decoded(&keiko.get("/images/photo.jpg/24/16?blur=3"));
    assert_eq!((blurred.width(), blurred.height()), (24, 16));
    assert_ne!(&*plain, &*blurred);
    let both = decoded(&keiko.get("/images/photo.jpg/24/16?blur&grayscale"));
    assert!(both.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    assert_ne!(&*both, &*gray, "blurred too");
}

#[test]
fn every_image_served_counts_one_hit_for_its_source() {
    let (_images, _tmp, keiko) = start();
    for path in [
        "/images/photo.jpg/10/10",
        "/images/photo.jpg?blur",
        "/images/photo.jpg/ascii",
        "/images/alpha.png/3",
    ] {
        assert_eq!(keiko.get(path).status, 200, "{path}");
    }
    let seeded = keiko.get("/seed/z/4/4").header("X-Image-Name").unwrap().to_string();
    let head = keiko.request("HEAD /images/photo.jpg/10/10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(head.status, 200);
    let mut want: HashMap<String, u64> = HashMap::from([("photo.jpg".into(), 3), ("alpha.png".into(), 1)]);
    *want.entry(seeded).or_default() += 1;
    assert!(
        common::eventually(Duration::from_secs(2), || {
            keiko.hits().into_iter().filter(|(_, n)| *n > 0).collect::<HashMap<_, _>>() == want
        }),
        "hits {:?}, want {want:?}",
        keiko.hits()
    );
}

#[test]
fn a_matching_if_none_match_gets_304_without_a_body_or_a_hit() {
    let (_images, _tmp, keiko) = start();
    for path in ["/images/alpha.png", "/images/alpha.png/8/8?grayscale", "/images/alpha.png/ascii?width=20"] {
        let first = keiko.get(path);
        let etag = first.header("ETag").unwrap().to_string();
        std::thread::sleep(Duration::from_millis(300));
        let before = keiko.hits()["alpha.png"];
        for inm in [etag.clone(), format!("W/{etag}"), format!("\"nope\", {etag}"), "*".into()] {
            let r = keiko.request(&format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: {inm}\r\nConnection: close\r\n\r\n"
            ));
            assert_eq!((r.status, r.body.len()), (304, 0), "{path} with {inm}");
            assert_eq!(r.header("ETag"), Some(etag.as_str()), "{path}");
            assert!(r.header("Cache-Control").is_some_and(|c| c.starts_with("public")));
        }
        let r = keiko.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\"\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!((r.status, r.body), (200, first.body), "{path}: another tag gets the image");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(keiko.hits()["alpha.png"], before + 1, "{path}: only the 200 counted");
    }
}

#[test]
fn etags_stay_the_same_across_a_restart() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("keiko.db");
    let paths = ["/images/photo.jpg", "/images/photo.jpg/9/7?blur=2", "/images/anim.gif/ascii"];
    let tags = |keiko: &Keiko| paths.map(|p| keiko.get(p).header("ETag").unwrap().to_string());
    let keiko = Keiko::start(images.path(), &db);
    let before = tags(&keiko);
    keiko.terminate(Duration::from_secs(10));
    // With the renditions' disk cache gone too, so that they are rendered again.
    let _ = std::fs::remove_dir_all(tmp.path().join("keiko-cache/variants"));
    let keiko = Keiko::start(images.path(), &db);
    assert_eq!(tags(&keiko), before);
}

#[test]
fn the_list_pages_through_every_image_with_link_headers() {
    let (_images, _tmp, keiko) = start();
    let page = |n: u32| keiko.get(&format!("/v2/list?page={n}&limit=3"));
    let first = page(1);
    assert_eq!((first.status, first.header("Content-Type")), (200, Some("application/json")));
    assert_eq!(first.header("Link"), Some("</v2/list?page=2&limit=3>; rel=\"next\""));
    let second = page(2);
    assert_eq!(second.header("Link"), Some("</v2/list?page=1&limit=3>; rel=\"prev\""));
    let third = page(3);
    assert_eq!(third.header("Link"), Some("</v2/list?page=2&limit=3>; rel=\"prev\""));
    assert_eq!(third.body, b"[]");
    let items: Vec<serde_json::Value> = [first, second]
        .iter()
        .flat_map(|r| serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).unwrap())
        .collect();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, Images::standard_names(), "every image once, in name order");
    let photo = items.iter().find(|i| i["name"] == "photo.jpg").unwrap();
    assert_eq!((photo["width"].as_u64(), photo["height"].as_u64()), (Some(24), Some(16)));
    assert_eq!(photo["download_url"], "/images/photo.jpg");
    let image = keiko.get("/images/photo.jpg");
    assert_eq!(photo["bytes"].as_u64(), Some(image.body.len() as u64));

    let default = keiko.get("/v2/list");
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&default.body).unwrap().len(), 4);
    assert_eq!(default.header("Link"), None, "one page holds all four");

    let info =
        || serde_json::from_slice::<serde_json::Value>(&keiko.get("/images/photo.jpg/info").body).unwrap();
    assert_eq!(info()["name"], "photo.jpg");
    assert!(common::eventually(Duration::from_secs(2), || info()["hits"] == 1), "{}", info());
    assert_eq!(keiko.get("/images/nope.jpg/info").status, 404);
}

#[test]
fn ascii_art_has_the_asked_width_and_gzips_to_the_same_text() {
    let (_images, _tmp, keiko) = start();
    let plain = keiko.get("/images/photo.jpg/ascii?width=48");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));
    let text = String::from_utf8(plain.body.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 16, "48 columns of a 3:2 image in 2:1 character cells");
    assert!(lines.iter().all(|l| l.len() == 48), "{text}");
    assert_eq!(keiko.get("/images/photo.jpg/ascii").body.split(|&b| b == b'\n').next().unwrap().len(), 80);

    let gzipped = keiko.request(
        "GET /images/photo.jpg/ascii?width=48 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(gzipped.header("Content-Encoding"), Some("gzip"));
    assert_ne!(gzipped.header("ETag"), plain.header("ETag"), "each representation has its own tag");
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gzipped.body[..]).read_to_end(&mut back).unwrap();
    assert_eq!(back, plain.body);
    let refused = keiko.request(
        "GET /images/photo.jpg/ascii?width=48 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip;q=0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((refused.header("Content-Encoding"), &refused.body), (None, &plain.body));
    let random = keiko.get("/ascii?width=8");
    assert!(String::from_utf8(random.body).unwrap().lines().all(|l| l.len() == 8));
}

#[test]
fn bad_parameters_get_400_naming_them() {
    let (_images, _tmp, keiko) =
        common::start_standard(Options::default().env("KEIKO_MAX_PIXELS", "1000000"));
    for (path, names) in [
        ("/0/10", "width"),
        ("/-5", "size"),
        ("/abc1/2", ""),
        ("/12px", "size"),
        ("/10/10?blur=11", "blur"),
        ("/10/10?blur=2&blur=3", "blur"),
        ("/images/photo.jpg?grayscale=maybe", "grayscale"),
        ("/images/photo.jpg/ascii?width=4", "width"),
        ("/v2/list?limit=1000", "limit"),
        ("/v2/list?page=-1", "page"),
        ("/2000/2000", "size"),
        ("/images/photo.jpg/1/2/3", "path"),
    ] {
        let r = keiko.get(path);
        if names.is_empty() {
            assert_eq!(r.status, 404, "{path}");
            continue;
        }
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{path}: {body}");
        assert!(body.starts_with(names), "{path}: {body}");
    }
    let long_seed = format!("/seed/{}", "x".repeat(200));
    assert_eq!(keiko.get(&long_seed).status, 400);
    let long_name = format!("/images/{}/info", "n".repeat(900));
    assert_eq!(keiko.get(&long_name).status, 400);
    assert_eq!(keiko.get("/images/nope.jpg/10/10").status, 404);
    assert_eq!(keiko.get("/").status, 200, "still serving");
}

#[test]
fn absolute_form_targets_are_served() {
    let (_images, _tmp, keiko) = start();
    let r = keiko.request(
        "GET http://127.0.0.1:1/images/photo.jpg/6/4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!((decoded(&r).width(), decoded(&r).height()), (6, 4));
    let r = keiko.request("GET http://t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("image/webp")));
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test hooks: cargo test --features test-hooks")]
fn concurrent_requests_for_one_new_rendition_share_one_render() {
    let (_images, _tmp, keiko) =
        common::start_standard(Options::default().env("KEIKO_DEBUG_RENDER_DELAY_MS", "500"));
    let bodies: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| keiko.get("/images/photo.jpg/17/11"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(bodies.iter().all(|r| r.status == 200 && r.body == bodies[0].body));
    assert_eq!(keiko.metric("keiko_render_duration_seconds_count"), 1.0, "one render for eight requests");
    let again = keiko.get("/images/photo.jpg/17/11");
    assert_eq!(again.body, bodies[0].body);
    assert_eq!(keiko.metric("keiko_render_duration_seconds_count"), 1.0, "then served from memory");
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test hooks: cargo test --features test-hooks")]
fn a_full_render_queue_answers_503_with_retry_after() {
    let options = Options::default()
        .env("KEIKO_DEBUG_RENDER_DELAY_MS", "1500")
        .env("KEIKO_RENDERERS", "1")
        .env("KEIKO_RENDER_QUEUE", "1");
    let (_images, _tmp, keiko) = common::start_standard(options);
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=4)
            .map(|n| {
                let keiko = &keiko;
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 * n));
                    keiko.get(&format!("/images/photo.jpg/{n}/{n}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<&Response> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "one renders, one waits, the others are refused: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|r| r.status == 200 || r.status == 503));
    assert!(busy.iter().all(|r| r.header("Retry-After") == Some("1")));
    assert!(keiko.metric("keiko_render_rejected_total") >= 1.0);
    assert_eq!(keiko.get("/images/photo.jpg").status, 200, "whole images are served meanwhile");
}

#[test]
fn renditions_in_memory_stay_within_their_budget() {
    let options = Options::default().env("KEIKO_VARIANT_MEMORY_MB", "1").env("KEIKO_VARIANT_DISK_MB", "0");
    let (_images, _tmp, keiko) = common::start_standard(options);
    let mut served = 0;
    for side in 600..622 {
        let r = keiko.get(&format!("/images/photo.jpg/{side}/{side}"));
        assert_eq!(r.status, 200, "{side}");
        served += r.body.len();
    }
    let held = keiko.metric("keiko_variant_memory_bytes");
    assert!(served > 2 << 20, "the test must serve more than the budget: {served}");
    assert!(held > 0.0 && held <= f64::from(1 << 20), "{held} bytes held after serving {served}");
    assert_eq!(keiko.metric("keiko_render_duration_seconds_count"), 22.0);
}

#[test]
fn abandoned_renders_stop_spending_cpu() {
    let options = Options::default().env("KEIKO_RENDERERS", "1").env("KEIKO_VARIANT_DISK_MB", "0");
    let (_images, _tmp, keiko) = common::start_standard(options);
    // What one such render costs when its client waits for it.
    let before = keiko.threads_cpu_time("keiko-render-");
    assert_eq!(keiko.get("/images/photo.jpg/1000/1000?blur=10").status, 200);
    let whole = keiko.threads_cpu_time("keiko-render-") - before;
    // Four clients ask for four more and hang up at once.
    let before = keiko.threads_cpu_time("keiko-render-");
    for n in 1..=4 {
        let mut s = keiko.connect();
        write!(s, "GET /images/photo.jpg/{}/1000?blur=10 HTTP/1.1\r\nHost: t\r\n\r\n", 1000 + n).unwrap();
    }
    assert!(
        common::eventually(Duration::from_secs(20), || keiko.metric("keiko_renders_cancelled_total") >= 4.0),
        "every abandoned render is cancelled: {}",
        keiko.metric("keiko_renders_cancelled_total")
    );
    let spent = keiko.threads_cpu_time("keiko-render-");
    std::thread::sleep(Duration::from_millis(500));
    let later = keiko.threads_cpu_time("keiko-render-");
    assert!(later - spent <= Duration::from_millis(20), "render CPU still grows: {spent:?} then {later:?}");
    assert!(
        spent - before < whole * 2,
        "four abandoned renders cost {:?}, one whole render {whole:?}",
        spent - before
    );
    assert_eq!(keiko.metric("keiko_render_duration_seconds_count"), 1.0, "only the awaited one finished");
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test hooks: cargo test --features test-hooks")]
fn renders_whose_clients_left_are_cancelled_and_free_the_queue() {
    let options = Options::default()
        .env("KEIKO_DEBUG_RENDER_DELAY_MS", "400")
        .env("KEIKO_RENDERERS", "1")
        .env("KEIKO_RENDER_QUEUE", "4");
    let (_images, _tmp, keiko) = common::start_standard(options);
    // Four clients ask for new renditions and hang up at once.
    for n in 1..=4 {
        let mut s = keiko.connect();
        s.write_all(format!("GET /images/photo.jpg/{n}/{} HTTP/1.1\r\nHost: t\r\n\r\n", n + 1).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        common::eventually(Duration::from_secs(5), || keiko.metric("keiko_renders_cancelled_total") >= 3.0),
        "the renders no one waits for stop: {}",
        keiko.metric("keiko_renders_cancelled_total")
    );
    assert!(keiko.metric("keiko_render_duration_seconds_count") <= 1.0, "at most the first one rendered");
    let r = keiko.get("/images/photo.jpg/5/6");
    assert_eq!(r.status, 200, "the queue has room again");
    let again = keiko.get("/images/photo.jpg/1/2");
    assert_eq!(again.status, 200, "a cancelled rendition is rendered anew when asked again");
}
