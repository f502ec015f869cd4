//! Real-world files (tests/samples, with their licences in tests/samples/LICENSES.md) served by the
//! real binary and compared with what an independent reference decoder makes of them: netpbm for
//! TIFF and BMP, libjxl's djxl for JPEG XL, Little CMS's jpgicc for a phone's Display P3 JPEG,
//! libheif's heif-convert for HEIC and AVIF. The tools come from Debian and are installed when
//! missing; keiko's default is lossless WebP, so what it serves is exactly what it decoded.

mod common;

use std::path::Path;
use std::process::Command;

use common::{difference, served_rgb as served, Images, Keiko, Options};
use image::RgbImage;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples");

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A binary PPM (P6), 8 or 16 bits a sample; 16-bit samples rounded to 8 bits.
fn ppm(bytes: &[u8]) -> RgbImage {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..at]).unwrap().to_string());
    }
    assert_eq!(fields[0], "P6", "not a binary PPM");
    let (width, height, max): (u32, u32, u32) =
        (fields[1].parse().unwrap(), fields[2].parse().unwrap(), fields[3].parse().unwrap());
    let raw = &bytes[at + 1..];
    let data = if max > 255 {
        raw.chunks_exact(2)
            .map(|b| ((u32::from(u16::from_be_bytes([b[0], b[1]])) * 255 + max / 2) / max) as u8)
            .collect()
    } else {
        raw.to_vec()
    };
    RgbImage::from_raw(width, height, data).expect("a whole PPM")
}

/// An 8-bit PNG's pixels as RGB (alpha dropped), and its colour profile.
fn png(bytes: &[u8]) -> (RgbImage, Option<Vec<u8>>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let icc = reader.info().icc_profile.as_deref().map(<[u8]>::to_vec);
    let mut data = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut data).unwrap();
    data.truncate(frame.buffer_size());
    let data = match frame.color_type {
        png::ColorType::Rgb => data,
        png::ColorType::Rgba => data.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        other => panic!("reference PNG in {other:?}"),
    };
    (RgbImage::from_raw(frame.width, frame.height, data).unwrap(), icc)
}

fn jpeg(bytes: &[u8]) -> RgbImage {
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options);
    let data = decoder.decode().unwrap();
    let (width, height) = decoder.dimensions().unwrap();
    RgbImage::from_raw(width as u32, height as u32, data).unwrap()
}

/// keiko serving copies of the named samples.
fn serve(names: &[&str]) -> (Images, tempfile::TempDir, Keiko) {
    let images = Images::empty();
    for name in names {
        images.add(name, &std::fs::read(Path::new(SAMPLES).join(name)).unwrap());
    }
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("k.db"), Options::default());
    (images, tmp, keiko)
}

/// Every one of `names` served at `size` and within `tolerance` (mean difference) of the first,
/// which is stored upright.
fn all_like_the_first(keiko: &Keiko, names: &[&str], size: (u32, u32), tolerance: f64) {
    let upright = served(keiko, names[0]);
    assert_eq!(upright.dimensions(), size, "{}", names[0]);
    for name in &names[1..] {
        let (mean, _) = difference(name, &served(keiko, name), &upright);
        assert!(mean <= tolerance, "{name}: mean difference {mean:.2} from {}", names[0]);
    }
}

#[test]
fn the_eight_orientations_and_an_iphone_photo_are_served_upright() {
    let names: Vec<String> = (1..=8).map(|n| format!("orientation_{n}.jpg")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("iphone4s_orientation6.jpg");
    let (_images, _tmp, keiko) = serve(&all);
    all_like_the_first(&keiko, &all[..8], (50, 70), 6.0);
    let phone = served(&keiko, "iphone4s_orientation6.jpg");
    assert_eq!(phone.dimensions(), (102, 205), "stored 205x102, shown a quarter turned");
}

#[test]
fn tiff_and_bmp_match_netpbm() {
    let tifftopnm = common::debian("netpbm", "tifftopnm");
    let bmptopnm = common::debian("netpbm", "bmptopnm");
    let files = ["rgb8_lzw.tiff", "rgb16_pixelmator.tiff", "rgb24.bmp"];
    let (_images, _tmp, keiko) = serve(&files);
    for name in files {
        let converter = if name.ends_with("bmp") { &bmptopnm } else { &tifftopnm };
        let out = Command::new(converter).arg(Path::new(SAMPLES).join(name)).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let (mean, max) = difference(name, &served(&keiko, name), &ppm(&out.stdout));
        assert!(max <= 1 && mean < 0.01, "{name}: mean {mean:.3}, largest {max} from netpbm");
    }
}

#[test]
fn jpeg_xl_matches_djxl() {
    let djxl = common::debian("libjxl-tools", "djxl");
    let name = "tulips_cc0_cjxl.jxl";
    let (_images, tmp, keiko) = serve(&[name]);
    let reference = tmp.path().join("reference.png");
    run(Command::new(djxl).arg(Path::new(SAMPLES).join(name)).arg(&reference));
    let (reference, _) = png(&std::fs::read(&reference).unwrap());
    let (mean, max) = difference(name, &served(&keiko, name), &reference);
    assert!(mean <= 0.5 && max <= 4, "{name}: mean {mean:.3}, largest {max} from djxl");
}

#[test]
fn a_display_p3_phone_photo_matches_little_cms() {
    let jpgicc = common::debian("liblcms2-utils", "jpgicc");
    let name = "iphone14promax_displayp3.jpg";
    let (_images, tmp, keiko) = serve(&[name]);
    let converted = tmp.path().join("srgb.jpg");
    // Its embedded profile to sRGB, relative colorimetric, at JPEG's best quality.
    run(Command::new(jpgicc).args(["-t1", "-q100"]).arg(Path::new(SAMPLES).join(name)).arg(&converted));
    let reference = jpeg(&std::fs::read(&converted).unwrap());
    let shown = served(&keiko, name);
    let (mean, _) = difference(name, &shown, &reference);
    assert!(mean <= 1.5, "{name}: mean difference {mean:.2} from Little CMS's sRGB");
    let unmanaged = jpeg(&std::fs::read(Path::new(SAMPLES).join(name)).unwrap());
    let (apart, _) = difference(name, &unmanaged, &reference);
    assert!(apart > mean * 2.0, "{name}: the profile matters here ({apart:.2} without it, {mean:.2} with)");
}

#[cfg(feature = "heif")]
#[test]
fn heic_and_avif_match_heif_convert() {
    let heif_convert = common::debian("libheif-examples", "heif-convert");
    // heif-convert writes every top-level image, numbered when there are several; keiko serves the
    // primary one, which is the second of pug_p3_3images.heic's three (heif-info says so).
    let files = [("hopper.avif", "out.png"), ("pug_p3_3images.heic", "out-2.png")];
    let (_images, tmp, keiko) = serve(&files.map(|(name, _)| name));
    for (name, primary) in files {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        run(Command::new(&heif_convert).arg(Path::new(SAMPLES).join(name)).arg(dir.join("out.png")));
        let (mut reference, icc) = png(&std::fs::read(dir.join(primary)).unwrap());
        // heif-convert keeps the profile beside the pixels; keiko shows them in sRGB.
        if let Some(icc) = icc {
            let profile = moxcms::ColorProfile::new_from_slice(&icc).unwrap();
            let transform = profile
                .create_transform_8bit(
                    moxcms::Layout::Rgb,
                    &moxcms::ColorProfile::new_srgb(),
                    moxcms::Layout::Rgb,
                    moxcms::TransformOptions::default(),
                )
                .unwrap();
            let mut srgb = vec![0; reference.as_raw().len()];
            transform.transform(reference.as_raw(), &mut srgb).unwrap();
            reference = RgbImage::from_raw(reference.width(), reference.height(), srgb).unwrap();
        }
        let (mean, max) = difference(name, &served(&keiko, name), &reference);
        assert!(mean <= 0.5 && max <= 4, "{name}: mean {mean:.3}, largest {max} from heif-convert");
    }
}

#[cfg(feature = "heif")]
#[test]
fn heif_rotation_and_mirror_properties_are_applied() {
    let files = ["rot0mir0.avif", "rot1mir0.avif", "rot2mir1.avif"];
    let (_images, _tmp, keiko) = serve(&files);
    // Each is the photo encoded anew, so they differ by their own compression, not by a turn.
    all_like_the_first(&keiko, &files, (640, 427), 12.0);
}

/// Frame count, the start of each frame and the end of the last, in ms, of an animated WebP.
fn webp_timing(webp: &[u8]) -> (usize, Vec<i32>) {
    let decoded = webp::AnimDecoder::new(webp).decode().unwrap();
    let ends: Vec<i32> = (&decoded).into_iter().map(|f| f.get_time_ms()).collect();
    (decoded.len(), ends)
}

#[test]
fn animated_gif_and_webp_stay_animated_with_their_timing() {
    let files = ["animated_star_4frames.gif", "animated_10frames.webp"];
    let (_images, _tmp, keiko) = serve(&files);
    // The GIF's own delays, in hundredths of a second, as the gif crate reads them.
    let gif_bytes = std::fs::read(Path::new(SAMPLES).join(files[0])).unwrap();
    let mut reader = gif::DecodeOptions::new().read_info(gif_bytes.as_slice()).unwrap();
    let mut ends = Vec::new();
    let mut at = 0;
    while let Some(frame) = reader.read_next_frame().unwrap() {
        at += i32::from(frame.delay) * 10;
        ends.push(at);
    }
    let served_gif = keiko.get("/images/animated_star_4frames.gif").body;
    assert_eq!(webp_timing(&served_gif), (4, ends), "the GIF's frames and delays");
    let source = std::fs::read(Path::new(SAMPLES).join(files[1])).unwrap();
    let served_webp = keiko.get("/images/animated_10frames.webp").body;
    assert_eq!(webp_timing(&served_webp), webp_timing(&source), "the WebP's frames and timing");
    let info =
        String::from_utf8_lossy(&keiko.get("/images/animated_star_4frames.gif/info").body).into_owned();
    assert!(
        info.contains("\"width\":159")
            && info.contains("\"format\":\"GIF\"")
            && info.contains("\"frames\":4"),
        "{info}"
    );
    // A rendition is animated too, with the same timing, at the asked size; ?frame=N is a still.
    let rendition = keiko.get("/images/animated_star_4frames.gif/80/60?grayscale").body;
    assert_eq!(webp_timing(&rendition), webp_timing(&served_gif), "the rendition's frames and timing");
    let first = webp::AnimDecoder::new(&rendition).decode().unwrap();
    assert_eq!((first.get_frame(0).unwrap().width(), first.get_frame(0).unwrap().height()), (80, 60));
    let still = keiko.get("/images/animated_star_4frames.gif?frame=2").body;
    let frame = webp::Decoder::new(&still).decode().expect("a still WebP");
    assert_eq!((frame.width(), frame.height()), (159, 159));
    let third = webp::AnimDecoder::new(&served_gif).decode().unwrap();
    assert_eq!(&*frame, third.get_frame(2).unwrap().get_image(), "frame 2, exactly");
}

#[test]
fn an_animation_past_the_budget_is_served_as_its_first_frame_with_a_warning() {
    let name = "animated_10frames.webp";
    let images = Images::empty();
    images.add(name, &std::fs::read(Path::new(SAMPLES).join(name)).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let options = Options::default().env("KEIKO_ANIMATION_FRAMES", "9");
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("k.db"), options);
    let body = keiko.get(&format!("/images/{name}")).body;
    assert!(webp::Decoder::new(&body).decode().is_some(), "a still WebP");
    let log = keiko.log();
    let warning = log.lines().find(|l| l.contains("past the budget")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        warning.contains("10 frames of 400x400") && warning.contains("its first frame is served"),
        "{warning}"
    );
}
