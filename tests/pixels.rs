//! The served WebP is lossless: decoding it gives back exactly the source image's pixels, for
//! every input format (colour of fully transparent pixels included).

mod common;

use common::{Images, Keiko};

/// Source pixels as RGBA, decoded independently of keiko where the format allows it.
fn expected(name: &str) -> (u32, u32, Vec<u8>) {
    match name {
        "alpha.png" => (16, 12, common::pattern(16, 12, true)),
        "input.webp" => (10, 10, common::pattern(10, 10, true)),
        // JPEG is lossy: what must survive is what a JPEG decoder makes of the file.
        "photo.jpg" => {
            let jpeg = common::jpeg(&common::pattern(24, 16, false), 24, 16);
            let mut d = zune_jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg));
            let rgb = d.decode().unwrap();
            (24, 16, rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect())
        }
        // First frame of the GIF: palette index i % 2 over (10,20,30) and (200,100,50).
        "anim.gif" => (
            8,
            6,
            (0..48).flat_map(|i| if i % 2 == 0 { [10, 20, 30, 255] } else { [200, 100, 50, 255] }).collect(),
        ),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn decoded_webp_pixels_equal_the_source_pixels() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start(images.path(), &tmp.path().join("k.db"));
    for name in Images::standard_names() {
        let r = keiko.get(&format!("/images/{name}"));
        assert_eq!(r.status, 200, "{name}");
        let served = common::first_frame(&r.body).unwrap_or_else(|| panic!("{name}: not a WebP"));
        let (w, h, want) = expected(name);
        assert_eq!((served.width, served.height), (w, h), "{name}: dimensions");
        let got = served.rgba;
        let first_diff = got.chunks(4).zip(want.chunks(4)).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: pixel {first_diff:?} differs");
    }
}

#[test]
fn the_bundled_assets_all_load() {
    let tmp = tempfile::tempdir().unwrap();
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/images");
    let keiko = Keiko::start(&assets, &tmp.path().join("k.db"));
    let hits = keiko.hits();
    let mut names: Vec<_> = hits.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["astronaut.png", "camera.png", "chelsea.png", "coffee.jpg", "horse.gif", "rocket.jpg"]
    );
    for name in names {
        let r = keiko.get(&format!("/images/{name}"));
        assert!(webp::Decoder::new(&r.body).decode().is_some(), "{name}");
    }
}
