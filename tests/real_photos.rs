//! Photos as cameras and phones write them, against the real binary: stored sideways with an EXIF
//! orientation, in a colour space other than sRGB, in CMYK. Every image is made by the test (the
//! jpeg-encoder, png and libwebp encoders, moxcms for the colour conversions, ghostscript's CMYK
//! profile from Debian's libgs-common), served by keiko and compared, decoded, with the upright sRGB
//! original it was made from.

mod common;

use common::{difference, served_rgb as served, Images, Keiko, Options};
use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use moxcms::{ColorProfile, Layout, TransformOptions};

/// The upright original: 64x40, four flat quadrants (so that JPEG's error stays small and any
/// turn or mirror moves a colour to another corner), wider than high.
fn upright() -> RgbImage {
    RgbImage::from_fn(64, 40, |x, y| match (x < 32, y < 20) {
        (true, true) => image::Rgb([200, 40, 40]),
        (false, true) => image::Rgb([40, 180, 60]),
        (true, false) => image::Rgb([50, 70, 200]),
        (false, false) => image::Rgb([230, 210, 60]),
    })
}

/// The image a camera stores for `tag`: the upright one turned back, so that applying the tag
/// makes it upright again.
fn stored(tag: u8) -> RgbImage {
    let undo = match tag {
        6 => 8,
        8 => 6,
        other => other,
    };
    let mut image = DynamicImage::ImageRgb8(upright());
    image.apply_orientation(Orientation::from_exif(undo).unwrap());
    image.into_rgb8()
}

/// A little-endian EXIF block (from its TIFF header) holding the orientation tag only.
fn exif(tag: u8) -> Vec<u8> {
    let mut exif = b"II*\0\x08\0\0\0\x01\0".to_vec();
    exif.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, tag, 0, 0, 0, 0, 0, 0, 0]);
    exif
}

fn jpeg(image: &RgbImage, app_segments: &[(u8, Vec<u8>)], icc: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 95);
    for (n, data) in app_segments {
        encoder.add_app_segment(*n, data).unwrap();
    }
    if let Some(icc) = icc {
        encoder.add_icc_profile(icc).unwrap();
    }
    encoder
        .encode(image.as_raw(), image.width() as u16, image.height() as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

/// An RGB PNG with an `eXIf` chunk and/or an `iCCP` profile.
fn png(image: &RgbImage, exif: Option<&[u8]>, icc: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut info = png::Info::with_size(image.width(), image.height());
    info.color_type = png::ColorType::Rgb;
    info.icc_profile = icc.map(|icc| icc.to_vec().into());
    let mut writer = png::Encoder::with_info(&mut out, info).unwrap().write_header().unwrap();
    if let Some(exif) = exif {
        writer.write_chunk(png::chunk::ChunkType(*b"eXIf"), exif).unwrap();
    }
    writer.write_image_data(image.as_raw()).unwrap();
    drop(writer);
    out
}

/// A lossless WebP in the extended format with an `EXIF` chunk.
fn webp(image: &RgbImage, exif: &[u8]) -> Vec<u8> {
    let mut config = webp::WebPConfig::new().unwrap();
    config.lossless = 1;
    let simple = webp::Encoder::new(image.as_raw(), webp::PixelLayout::Rgb, image.width(), image.height())
        .encode_advanced(&config)
        .unwrap();
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = kind.to_vec();
        c.extend((data.len() as u32).to_le_bytes());
        c.extend(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let (w, h) = ((image.width() - 1).to_le_bytes(), (image.height() - 1).to_le_bytes());
    let vp8x = [0x08, 0, 0, 0, w[0], w[1], w[2], h[0], h[1], h[2]];
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(&simple[12..]);
    body.extend(chunk(b"EXIF", exif));
    let mut file = b"RIFF".to_vec();
    file.extend((body.len() as u32).to_le_bytes());
    file.extend(body);
    file
}

fn start(images: &Images, tmp: &tempfile::TempDir) -> Keiko {
    Keiko::start_with(images.path(), &tmp.path().join("k.db"), Options::default())
}

#[test]
fn every_exif_orientation_is_served_upright_from_jpeg_png_and_webp() {
    let images = Images::empty();
    for tag in 1..=8 {
        let image = stored(tag);
        images.add(
            &format!("o{tag}.jpg"),
            &jpeg(&image, &[(1, [b"Exif\0\0".as_slice(), &exif(tag)].concat())], None),
        );
        images.add(&format!("o{tag}.png"), &png(&image, Some(&exif(tag)), None));
        images.add(&format!("o{tag}.webp"), &webp(&image, &exif(tag)));
    }
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    for tag in 1..=8 {
        for ext in ["jpg", "png", "webp"] {
            let name = format!("o{tag}.{ext}");
            let (mean, _) = difference(&name, &served(&keiko, &name), &upright());
            let tolerance = if ext == "jpg" { 4.0 } else { 0.0 };
            assert!(mean <= tolerance, "{name}: mean difference {mean:.2} from the upright original");
        }
        let info = keiko.get(&format!("/images/o{tag}.jpg/info"));
        let text = String::from_utf8_lossy(&info.body);
        assert!(text.contains("\"width\":64") && text.contains("\"height\":40"), "o{tag}.jpg: {text}");
        assert!(text.contains("\"format\":\"JPEG\"") && text.contains("\"frames\":1"), "o{tag}.jpg: {text}");
    }
    let rendition = keiko.get("/images/o6.jpg/32/40");
    assert_eq!(rendition.status, 200);
    let turned = webp::Decoder::new(&rendition.body).decode().unwrap();
    assert_eq!(
        (turned.width(), turned.height()),
        (32, 40),
        "a rendition of a turned photo has the asked shape"
    );
}

/// `original` converted from sRGB into the space of `profile`, as a camera would store it.
fn stored_in(profile: &ColorProfile, original: &RgbImage) -> RgbImage {
    let srgb = ColorProfile::new_srgb();
    let to =
        srgb.create_transform_8bit(Layout::Rgb, profile, Layout::Rgb, TransformOptions::default()).unwrap();
    let mut data = vec![0; original.as_raw().len()];
    to.transform(original.as_raw(), &mut data).unwrap();
    RgbImage::from_raw(original.width(), original.height(), data).unwrap()
}

/// A photo-like sRGB original: smooth ramps in all three channels.
fn ramps() -> RgbImage {
    RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 255 / 95) as u8, (y * 255 / 63) as u8, ((x + y) * 255 / 158) as u8])
    })
}

#[test]
fn display_p3_and_adobe_rgb_photos_come_back_in_srgb() {
    let images = Images::empty();
    let original = ramps();
    for (name, profile) in [("p3", ColorProfile::new_display_p3()), ("adobe", ColorProfile::new_adobe_rgb())]
    {
        let stored = stored_in(&profile, &original);
        let icc = profile.encode().unwrap();
        images.add(&format!("{name}.png"), &png(&stored, None, Some(&icc)));
        images.add(&format!("{name}.jpg"), &jpeg(&stored, &[], Some(&icc)));
        images.add(&format!("{name}-unmanaged.png"), &png(&stored, None, None));
    }
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    for name in ["p3.png", "p3.jpg", "adobe.png", "adobe.jpg"] {
        let (mean, _) = difference(name, &served(&keiko, name), &original);
        let tolerance = if name.ends_with("jpg") { 2.5 } else { 1.0 };
        assert!(mean <= tolerance, "{name}: mean difference {mean:.2} from the sRGB original");
    }
    for name in ["p3-unmanaged.png", "adobe-unmanaged.png"] {
        let (mean, _) = difference(name, &served(&keiko, name), &original);
        assert!(mean > 3.0, "{name}: without its profile the numbers are shown as sRGB ({mean:.2})");
    }
}

/// Ghostscript's default CMYK profile, from Debian's libgs-common.
fn cmyk_profile() -> Vec<u8> {
    std::fs::read(common::debian("libgs-common", "/usr/share/color/icc/ghostscript/default_cmyk.icc"))
        .unwrap()
}

#[test]
fn a_cmyk_jpeg_with_its_profile_comes_back_in_srgb() {
    let icc = cmyk_profile();
    let profile = ColorProfile::new_from_slice(&icc).unwrap();
    let original = ramps();
    let srgb = ColorProfile::new_srgb();
    let to_cmyk =
        srgb.create_transform_8bit(Layout::Rgb, &profile, Layout::Rgba, TransformOptions::default()).unwrap();
    let mut cmyk = vec![0; original.as_raw().len() / 3 * 4];
    to_cmyk.transform(original.as_raw(), &mut cmyk).unwrap();
    // What sRGB reaches through the CMYK gamut and back: the best a CMYK photo can come out.
    let back =
        profile.create_transform_8bit(Layout::Rgba, &srgb, Layout::Rgb, TransformOptions::default()).unwrap();
    let mut reachable = vec![0; original.as_raw().len()];
    back.transform(&cmyk, &mut reachable).unwrap();
    let reachable = RgbImage::from_raw(original.width(), original.height(), reachable).unwrap();

    let mut file = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut file, 95);
    encoder.add_icc_profile(&icc).unwrap();
    encoder
        .encode(&cmyk, original.width() as u16, original.height() as u16, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let images = Images::empty();
    images.add("cmyk.jpg", &file);
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    let (mean, _) = difference("cmyk.jpg", &served(&keiko, "cmyk.jpg"), &reachable);
    assert!(mean <= 2.5, "cmyk.jpg: mean difference {mean:.2} from the original through its profile");
}

#[test]
fn an_upload_of_a_turned_photo_reports_its_upright_size() {
    let token = "real-photos-t0ken";
    let images = Images::empty();
    images.add("first.png", &png(&upright(), None, None));
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start_with(
        images.path(),
        &tmp.path().join("k.db"),
        Options::default().env("KEIKO_ADMIN_TOKEN", token),
    );
    let body = jpeg(&stored(6), &[(1, [b"Exif\0\0".as_slice(), &exif(6)].concat())], None);
    let head = format!(
        "PUT /images/turned.jpg HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend(&body);
    let mut s = keiko.connect();
    std::io::Write::write_all(&mut s, &raw).unwrap();
    let r = common::Response::read(&mut std::io::BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("\"width\":64") && text.contains("\"height\":40"), "{text}");
}

#[test]
fn tiff_bmp_and_jpeg_xl_are_served_with_their_exact_pixels() {
    let original = ramps();
    let (w, h) = original.dimensions();
    let images = Images::empty();
    let mut tiff = std::io::Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut tiff)
        .unwrap()
        .write_image::<tiff::encoder::colortype::RGB8>(w, h, original.as_raw())
        .unwrap();
    images.add("scan.tif", &tiff.into_inner());
    let mut bmp = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::bmp::BmpEncoder::new(&mut bmp),
        original.as_raw(),
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    images.add("paint.bmp", &bmp);
    let options = zune_core::options::EncoderOptions::new(
        w as usize,
        h as usize,
        zune_core::colorspace::ColorSpace::RGB,
        zune_core::bit_depth::BitDepth::Eight,
    );
    let mut jxl = Vec::new();
    zune_jpegxl::JxlSimpleEncoder::new(original.as_raw(), options).encode(&mut jxl).unwrap();
    images.add("modern.jxl", &jxl);
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    for name in ["scan.tif", "paint.bmp", "modern.jxl"] {
        let (mean, max) = difference(name, &served(&keiko, name), &original);
        assert_eq!((mean, max), (0.0, 0), "{name}: lossless in, lossless WebP out");
    }
}

/// A HEIC (HEVC, x265) or AVIF (AV1, libaom) made by the system's libheif at high quality, with
/// `icc` as its colour profile. Through libheif's C API: libheif-rs 0.20 cannot attach a profile
/// (it passes the profile type without the NUL libheif looks for).
#[cfg(feature = "heif")]
fn heif(av1: bool, image: &RgbImage, icc: Option<&[u8]>) -> Vec<u8> {
    use libheif_sys as lh;
    let ok = |e: lh::heif_error, what: &str| assert_eq!(e.code, 0, "libheif: {what}");
    let (w, h) = (image.width() as i32, image.height() as i32);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = std::ffi::CString::new(file.path().to_str().unwrap()).unwrap();
    // SAFETY: every pointer comes from libheif and is released once; the plane is written within
    // its rows (stride bytes apart, width x 3 bytes each).
    unsafe {
        let mut picture = std::ptr::null_mut();
        let (rgb, interleaved) =
            (lh::heif_colorspace_heif_colorspace_RGB, lh::heif_chroma_heif_chroma_interleaved_RGB);
        ok(lh::heif_image_create(w, h, rgb, interleaved, &mut picture), "image");
        ok(lh::heif_image_add_plane(picture, lh::heif_channel_heif_channel_interleaved, w, h, 8), "plane");
        let mut stride = 0;
        let plane = lh::heif_image_get_plane(picture, lh::heif_channel_heif_channel_interleaved, &mut stride);
        for (y, row) in image.as_raw().chunks(w as usize * 3).enumerate() {
            std::ptr::copy_nonoverlapping(row.as_ptr(), plane.add(y * stride as usize), row.len());
        }
        if let Some(icc) = icc {
            let set = lh::heif_image_set_raw_color_profile(
                picture,
                c"prof".as_ptr(),
                icc.as_ptr().cast(),
                icc.len(),
            );
            ok(set, "profile");
        }
        let context = lh::heif_context_alloc();
        let mut encoder = std::ptr::null_mut();
        let format = if av1 {
            lh::heif_compression_format_heif_compression_AV1
        } else {
            lh::heif_compression_format_heif_compression_HEVC
        };
        ok(lh::heif_context_get_encoder_for_format(context, format, &mut encoder), "encoder");
        ok(lh::heif_encoder_set_lossy_quality(encoder, 95), "quality");
        ok(
            lh::heif_context_encode_image(context, picture, encoder, std::ptr::null(), std::ptr::null_mut()),
            "encode",
        );
        ok(lh::heif_context_write_to_file(context, path.as_ptr()), "write");
        lh::heif_encoder_release(encoder);
        lh::heif_image_release(picture);
        lh::heif_context_free(context);
    }
    std::fs::read(file.path()).unwrap()
}

#[cfg(feature = "heif")]
#[test]
fn heic_and_avif_decode_to_their_original_pixels_and_their_profile_to_srgb() {
    let images = Images::empty();
    let p3 = ColorProfile::new_display_p3();
    let in_p3 = stored_in(&p3, &ramps());
    let icc = p3.encode().unwrap();
    for (ext, av1) in [("heic", false), ("avif", true)] {
        images.add(&format!("plain.{ext}"), &heif(av1, &ramps(), None));
        images.add(&format!("p3.{ext}"), &heif(av1, &in_p3, Some(&icc)));
    }
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    for name in ["plain.heic", "p3.heic", "plain.avif", "p3.avif"] {
        let (mean, _) = difference(name, &served(&keiko, name), &ramps());
        assert!(mean <= 3.0, "{name}: mean difference {mean:.2} from the sRGB original");
    }
    let (unmanaged, _) = difference("p3", &in_p3, &ramps());
    assert!(unmanaged > 4.0, "the profile matters here: {unmanaged:.2} without it");
}

#[cfg(not(feature = "heif"))]
#[test]
fn a_build_without_libheif_says_once_why_it_skips_heic_and_avif() {
    let images = Images::empty();
    images.add("first.png", &png(&upright(), None, None));
    images.add("phone.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic and the rest of a phone photo");
    images.add("modern.avif", b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf and the rest");
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    assert_eq!(keiko.get("/images/phone.heic").status, 404);
    let log = keiko.log();
    for name in ["phone.heic", "modern.avif"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("skipping {name}"))).collect();
        assert_eq!(lines.len(), 1, "{name}: one warning: {log}");
        assert!(lines[0].contains("--features heif"), "{}", lines[0]);
    }
    assert!(
        log.contains("(reads JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG XL (HEIC and AVIF need --features heif))"),
        "{log}"
    );
}
