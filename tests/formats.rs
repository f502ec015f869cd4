//! The formats a client gets, over real sockets: AVIF, WebP or JPEG chosen by `Accept` (with
//! `Vary: Accept`) or fixed by the URL (an extension, `?format=`), each decoded by its reference
//! decoder (avifdec, dwebp, djpeg, from Debian) to the size asked for; an ETag and a 304 per
//! representation; and the rendition options: `fit`, `dpr`, `q` and the smart crops.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{debian, eventually, first_frame, Images, Keiko, Options, Response};

const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
const SAFARI: &str = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,\
                      image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
const FIREFOX: &str = "image/avif,image/webp,*/*";

/// A 96x64 photo-like JPEG (a gradient with noise) and a 300x100 PNG, flat grey but for a busy,
/// colourful square at its left end.
fn library() -> Images {
    let images = Images::empty();
    let mut rng = fastrand::Rng::with_seed(9);
    let photo: Vec<u8> = (0..96 * 64u32)
        .flat_map(|i| {
            [(i % 96) as u8 * 2, (i / 96) as u8 * 3, 120, 255].map(|c| c.saturating_add(rng.u8(..16)))
        })
        .collect();
    images.add("photo.jpg", &common::jpeg(&photo, 96, 64));
    let mut subject = vec![128u8; 300 * 100 * 4];
    for y in 20..80 {
        for x in 10..70 {
            let at = (y * 300 + x) * 4;
            subject[at..at + 3].copy_from_slice(&[rng.u8(150..), rng.u8(..120), rng.u8(..)]);
        }
    }
    images.add("subject.png", &common::png(&subject, 300, 100));
    images
}

fn start(images: &Images, tmp: &Path, webp: &str) -> Keiko {
    Keiko::start_with(images.path(), &tmp.join("keiko.db"), Options::default().arg("--webp", webp))
}

fn get(keiko: &Keiko, path: &str, accept: Option<&str>) -> Response {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    keiko.request(&format!("GET {path} HTTP/1.1\r\nHost: k\r\n{accept}Connection: close\r\n\r\n"))
}

/// The size `body` decodes to with the reference decoder of `content_type`.
fn decoded_size(body: &[u8], content_type: &str) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, body).unwrap();
    let output = dir.path().join("out.png");
    let (tool, args): (_, Vec<&std::ffi::OsStr>) = match content_type {
        "image/avif" => (debian("libavif-bin", "avifdec"), vec![input.as_ref(), output.as_ref()]),
        "image/webp" => (debian("webp", "dwebp"), vec![input.as_ref(), "-o".as_ref(), output.as_ref()]),
        "image/jpeg" => (
            debian("libjpeg-turbo-progs", "djpeg"),
            vec!["-outfile".as_ref(), output.as_ref(), input.as_ref()],
        ),
        other => panic!("no reference decoder for {other}"),
    };
    let status = Command::new(&tool).args(args).output().unwrap();
    assert!(
        status.status.success(),
        "{} refused it: {}",
        tool.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    let size = imagesize::size(&output).unwrap();
    (size.width, size.height)
}

fn avif_ready(keiko: &Keiko) -> bool {
    eventually(Duration::from_secs(120), || keiko.metric("keiko_library_avif_images{state=\"ready\"}") >= 1.0)
}

#[test]
fn accept_headers_get_the_documented_format_with_vary() {
    let (images, tmp) = (library(), tempfile::tempdir().unwrap());
    let keiko = start(&images, tmp.path(), "auto");
    assert!(avif_ready(&keiko), "the JPEG got no AVIF encoding; log:\n{}", keiko.log());
    for (client, accept, want) in [
        ("chrome", Some(CHROME), "image/avif"),
        ("safari", Some(SAFARI), "image/avif"),
        ("firefox", Some(FIREFOX), "image/avif"),
        ("none", None, "image/webp"),
        ("anything", Some("*/*"), "image/webp"),
        ("jpeg only", Some("image/jpeg"), "image/jpeg"),
        ("old safari", Some("image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"), "image/jpeg"),
    ] {
        for path in ["/images/photo.jpg", "/images/photo.jpg/40/30", "/images/photo.jpg?grayscale"] {
            let r = get(&keiko, path, accept);
            assert_eq!(r.status, 200, "{client} {path}");
            assert_eq!(r.header("content-type"), Some(want), "{client} {path}");
            assert_eq!(r.header("vary"), Some("Accept"), "{client} {path}");
            let size = if path.contains("/40/30") { (40, 30) } else { (96, 64) };
            assert_eq!(decoded_size(&r.body, want), size, "{client} {path}");
        }
    }
    for format in ["avif", "webp", "jpeg"] {
        let sent = keiko.metric(&format!("keiko_pictures_sent_total{{format=\"{format}\"}}"));
        let bytes = keiko.metric(&format!("keiko_picture_bytes_sent_total{{format=\"{format}\"}}"));
        assert!(sent >= 6.0 && bytes > sent * 50.0, "{format}: {sent} pictures, {bytes} bytes");
    }
    let random = get(&keiko, "/", None);
    assert_eq!((random.header("vary"), random.header("content-type")), (Some("Accept"), Some("image/webp")));
    let info = String::from_utf8(get(&keiko, "/images/photo.jpg/info", None).body).unwrap();
    assert!(info.contains("\"representations\":{\"webp\":") && info.contains("\"avif\":"), "{info}");
    let png = String::from_utf8(get(&keiko, "/images/subject.png/info", None).body).unwrap();
    assert!(!png.contains("\"avif\""), "a lossless WebP gets no AVIF: {png}");
    assert_eq!(get(&keiko, "/images/subject.png", Some(CHROME)).header("content-type"), Some("image/webp"));
}

#[test]
fn a_format_in_the_url_overrides_accept_without_vary() {
    let (images, tmp) = (library(), tempfile::tempdir().unwrap());
    let keiko = start(&images, tmp.path(), "auto");
    assert!(avif_ready(&keiko));
    for (path, want, size) in [
        ("/images/photo.jpg?format=jpeg", "image/jpeg", (96, 64)),
        ("/images/photo.jpg?format=webp", "image/webp", (96, 64)),
        ("/images/photo.jpg?format=avif", "image/avif", (96, 64)),
        ("/images/photo.jpg/30/20.avif", "image/avif", (30, 20)),
        ("/images/photo.jpg/30/20.jpg", "image/jpeg", (30, 20)),
        ("/images/subject.png/30.webp", "image/webp", (30, 30)),
        ("/images/subject.png?format=avif", "image/avif", (300, 100)),
        ("/seed/s/12/8.jpeg", "image/jpeg", (12, 8)),
        ("/40/20.avif", "image/avif", (40, 20)),
    ] {
        for accept in [Some(CHROME), Some("image/jpeg"), None] {
            let r = get(&keiko, path, accept);
            assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.header("content-type"), Some(want), "{path} {accept:?}");
            assert_eq!(r.header("vary"), None, "{path}: the URL fixed the format");
            assert_eq!(decoded_size(&r.body, want), size, "{path}");
        }
    }
    assert_eq!(get(&keiko, "/images/photo.jpg/30/20.png", None).status, 400);
}

#[test]
fn every_representation_has_its_own_etag_and_304() {
    let (images, tmp) = (library(), tempfile::tempdir().unwrap());
    let keiko = start(&images, tmp.path(), "auto");
    assert!(avif_ready(&keiko));
    let mut tags = Vec::new();
    for (path, accept) in [
        ("/images/photo.jpg", Some(CHROME)),
        ("/images/photo.jpg", None),
        ("/images/photo.jpg", Some("image/jpeg")),
        ("/images/photo.jpg/30/20", Some(CHROME)),
        ("/images/photo.jpg/30/20.jpg", None),
    ] {
        let r = get(&keiko, path, accept);
        let etag = r.header("etag").unwrap_or_else(|| panic!("{path} {accept:?}: no ETag")).to_string();
        let accept_line = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        let again = keiko.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: k\r\n{accept_line}If-None-Match: {etag}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(again.status, 304, "{path} {accept:?}");
        assert!(again.body.is_empty());
        tags.push(etag);
    }
    let mut unique = tags.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tags.len(), "{tags:?}");
}

#[test]
fn fit_dpr_quality_and_smart_crops() {
    let (images, tmp) = (library(), tempfile::tempdir().unwrap());
    let keiko = start(&images, tmp.path(), "lossless");
    keiko.wait_ready(Duration::from_secs(60));
    let size = |path: &str| {
        let r = get(&keiko, path, None);
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        decoded_size(&r.body, r.header("content-type").unwrap())
    };
    assert_eq!(size("/images/photo.jpg/1000/1000?fit=inside"), (96, 64), "inside never enlarges");
    assert_eq!(size("/images/photo.jpg/48/48?fit=inside"), (48, 32));
    assert_eq!(size("/images/photo.jpg/48/48?fit=contain"), (48, 48));
    assert_eq!(size("/images/photo.jpg/20/50?fit=fill"), (20, 50));
    assert_eq!(size("/images/photo.jpg/30/20?dpr=2"), (60, 40), "dpr multiplies");
    assert_eq!(size("/images/photo.jpg/30/20?dpr=1.5&fit=inside"), (45, 30));
    assert_eq!(get(&keiko, "/images/photo.jpg/3000/20?dpr=2", None).status, 400);
    let low = get(&keiko, "/images/photo.jpg/90/60.jpg?q=10", None).body.len();
    let high = get(&keiko, "/images/photo.jpg/90/60.jpg?q=95", None).body.len();
    assert!(low * 2 < high, "q=10 is {low} bytes, q=95 {high}");
    // The subject is at the left end: a square crop from the centre is flat grey, the smart crops
    // keep the subject.
    let spread = |path: &str| {
        let frame =
            first_frame(&get(&keiko, path, None).body).unwrap_or_else(|| panic!("{path}: not a WebP"));
        let greys = frame.rgba.chunks(4).filter(|p| p[..3].iter().all(|&c| c.abs_diff(128) <= 6)).count();
        greys as f64 / (frame.rgba.len() / 4) as f64
    };
    assert!(spread("/images/subject.png/100/100") > 0.95, "the centre crop misses the subject");
    for crop in ["entropy", "attention"] {
        let grey = spread(&format!("/images/subject.png/100/100?crop={crop}"));
        assert!(grey < 0.8, "{crop}: {:.0}% of the crop is background", grey * 100.0);
    }
}

#[test]
fn a_lossless_library_has_no_avif_and_accept_gets_webp() {
    let (images, tmp) = (library(), tempfile::tempdir().unwrap());
    let keiko = start(&images, tmp.path(), "lossless");
    keiko.wait_ready(Duration::from_secs(60));
    let r = get(&keiko, "/images/photo.jpg", Some(CHROME));
    assert_eq!((r.header("content-type"), r.header("vary")), (Some("image/webp"), Some("Accept")));
    assert_eq!(keiko.metric("keiko_library_avif_images{state=\"ready\"}"), 0.0);
    assert_eq!(keiko.metric("keiko_library_avif_images{state=\"waiting\"}"), 0.0);
    let explicit = get(&keiko, "/images/photo.jpg?format=avif", None);
    assert_eq!(explicit.header("content-type"), Some("image/avif"), "rendered on request");
}

#[test]
fn avif_past_its_limit_is_webp_when_negotiated_and_refused_when_asked_for() {
    let (images, tmp) = (library(), tempfile::tempdir().unwrap());
    let options = Options::default().arg("--webp", "auto").arg("--avif-max-megapixels", "1");
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("keiko.db"), options);
    assert!(avif_ready(&keiko));
    let big = get(&keiko, "/images/photo.jpg/1200/1000", Some(CHROME));
    assert_eq!((big.status, big.header("content-type")), (200, Some("image/webp")), "1.2 MP: WebP");
    let small = get(&keiko, "/images/photo.jpg/100/80", Some(CHROME));
    assert_eq!(small.header("content-type"), Some("image/avif"), "within the limit: AVIF");
    let refused = get(&keiko, "/images/photo.jpg/1200/1000.avif", None);
    assert_eq!(refused.status, 400);
    let why = String::from_utf8_lossy(&refused.body);
    assert!(why.contains("KEIKO_AVIF_MAX_MEGAPIXELS"), "{why}");
}
