//! How many bytes AVIF needs for the visual quality of WebP, measured, not assumed: a benchmark
//! harness, ignored by `cargo test` (it takes minutes), run by `scripts/avif-bench.sh`.
//!
//! For each photo (JPEGs and PNGs from `KEIKO_QUALITY_PHOTOS`, at most `KEIKO_QUALITY_COUNT` of them), it
//! encodes lossy WebP (libwebp, as keiko does) and AVIF (keiko's own encoder by default, or the
//! one `KEIKO_AVIF_ENCODER` names to compare with: `ravif`, or `avifenc ARGS` for libaom; one
//! thread each, at `KEIKO_AVIF_SPEED`, keiko's by default) at a sweep of qualities, decodes each with a reference
//! decoder (libwebp; avifdec from Debian for AVIF), and scores it against the source with
//! SSIMULACRA2 (the `ssimulacra2` crate: 90 is visually lossless, 70 high quality, 50 medium).
//! Then, for each target score, it finds by linear interpolation the bytes each format needs
//! to reach it, and prints per photo and in medians: the bytes, AVIF's share of WebP's, the
//! qualities that reach the score, and the encode times.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const WEBP_QUALITIES: [u8; 8] = [30, 40, 50, 60, 70, 75, 80, 90];
const AVIF_QUALITIES: [u8; 8] = [20, 30, 40, 50, 60, 70, 80, 90];
const TARGETS: [f64; 3] = [50.0, 65.0, 80.0];

struct Point {
    quality: u8,
    bytes: usize,
    score: f64,
    millis: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn score(source: &[u8], width: usize, height: usize, distorted: &[u8]) -> f64 {
    let frame = |rgb: &[u8]| {
        let data = rgb.chunks(3).map(|p| [p[0], p[1], p[2]].map(|c| f32::from(c) / 255.0)).collect();
        ssimulacra2::Rgb::new(
            data,
            width,
            height,
            ssimulacra2::TransferCharacteristic::SRGB,
            ssimulacra2::ColorPrimaries::BT709,
        )
        .unwrap()
    };
    ssimulacra2::compute_frame_ssimulacra2(frame(source), frame(distorted)).unwrap()
}

fn webp(rgb: &[u8], width: usize, height: usize, quality: u8) -> (Vec<u8>, Vec<u8>) {
    let mut config = webp::WebPConfig::new().unwrap();
    config.lossless = 0;
    config.quality = f32::from(quality);
    let bytes = webp::Encoder::new(rgb, webp::PixelLayout::Rgb, width as u32, height as u32)
        .encode_advanced(&config)
        .unwrap()
        .to_vec();
    let decoded = webp::Decoder::new(&bytes).decode().unwrap().to_vec();
    (bytes, decoded)
}

/// Which AVIF encoder the harness measures (`KEIKO_AVIF_ENCODER`).
#[derive(Clone, Copy)]
enum AvifEncoder<'a> {
    /// keiko's own (rav1e at 4:2:0): the default.
    Keiko,
    /// ravif 0.13 (rav1e at 4:4:4 with ravif's speed tweaks).
    Ravif,
    /// Debian's avifenc (libavif 0.11 with libaom 3.6), with these arguments.
    Avifenc(&'a str),
}

impl<'a> AvifEncoder<'a> {
    fn named(name: &'a str) -> AvifEncoder<'a> {
        match name {
            "" | "keiko" => AvifEncoder::Keiko,
            "ravif" => AvifEncoder::Ravif,
            _ => match name.strip_prefix("avifenc") {
                Some(args) => AvifEncoder::Avifenc(args),
                None => panic!("KEIKO_AVIF_ENCODER: keiko, ravif or avifenc [ARGS], not {name}"),
            },
        }
    }
}

/// `rgb` encoded by Debian's avifenc at `quality` (mapped onto libaom's 0-63 quantizer).
fn avifenc(rgb: &[u8], width: usize, height: usize, quality: u8, speed: u8, args: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.png"), dir.path().join("out.avif"));
    let mut png = png::Encoder::new(std::fs::File::create(&input).unwrap(), width as u32, height as u32);
    png.set_color(png::ColorType::Rgb);
    png.write_header().unwrap().write_image_data(rgb).unwrap();
    let quantizer = ((100 - u32::from(quality)) * 63 / 100).to_string();
    let avifenc = common::debian("libavif-bin", "avifenc");
    let done = Command::new(avifenc)
        .args(["-j", "1", "-s", &speed.to_string(), "--min", &quantizer, "--max", &quantizer])
        .args(args.split_whitespace())
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(done.status.success(), "avifenc: {}", String::from_utf8_lossy(&done.stderr));
    std::fs::read(&output).unwrap()
}

fn avif(
    rgb: &[u8],
    width: usize,
    height: usize,
    quality: u8,
    speed: u8,
    encoder: AvifEncoder,
) -> (Vec<u8>, Vec<u8>) {
    use rgb::FromSlice;
    let bytes = match encoder {
        AvifEncoder::Keiko => {
            let pixels = keiko::measure::Pixels::rgb(width as u32, height as u32, rgb.to_vec());
            keiko::measure::encode_avif(&pixels, quality, speed).unwrap()
        }
        AvifEncoder::Ravif => {
            ravif::Encoder::new()
                .with_quality(f32::from(quality))
                .with_speed(speed)
                .with_num_threads(Some(1))
                .encode_rgb(ravif::Img::new(rgb.as_rgb(), width, height))
                .unwrap()
                .avif_file
        }
        AvifEncoder::Avifenc(args) => avifenc(rgb, width, height, quality, speed, args),
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.avif"), dir.path().join("out.png"));
    std::fs::write(&input, &bytes).unwrap();
    let avifdec = common::debian("libavif-bin", "avifdec");
    let done = Command::new(avifdec).args(["--depth", "8"]).arg(&input).arg(&output).output().unwrap();
    assert!(done.status.success(), "avifdec: {}", String::from_utf8_lossy(&done.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&output).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let decoded = buf[..info.buffer_size()].chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
    (bytes, decoded)
}

/// A JPEG or an 8-bit PNG as RGB rows (any alpha dropped), with its width and height.
fn read_rgb(photo: &std::path::Path) -> (Vec<u8>, usize, usize) {
    let bytes = std::fs::read(photo).unwrap();
    if photo.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = info.color_type.samples();
        assert!(channels >= 3, "{}: a grey PNG; the harness measures colour photos", photo.display());
        let rgb = buf[..info.buffer_size()].chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
        return (rgb, info.width as usize, info.height as usize);
    }
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(&bytes), options);
    let rgb = decoder.decode().unwrap();
    let (width, height) = decoder.dimensions().unwrap();
    (rgb, width, height)
}

/// The bytes at which `points` (by rising quality) reach `target`, interpolated; None if never.
fn bytes_at(points: &[Point], target: f64) -> Option<(f64, f64)> {
    points.windows(2).find_map(|w| {
        let (a, b) = (&w[0], &w[1]);
        if a.score <= target && target <= b.score && b.score > a.score {
            let t = (target - a.score) / (b.score - a.score);
            let bytes = a.bytes as f64 + t * (b.bytes as f64 - a.bytes as f64);
            Some((bytes, f64::from(a.quality) + t * f64::from(b.quality - a.quality)))
        } else {
            None
        }
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[test]
#[ignore = "a benchmark of minutes: scripts/avif-bench.sh runs it"]
fn avif_bytes_against_webp_at_equal_ssimulacra2() {
    let dir = PathBuf::from(std::env::var("KEIKO_QUALITY_PHOTOS").unwrap_or_else(|_| "assets/images".into()));
    let count: usize = env_or("KEIKO_QUALITY_COUNT", 8);
    let encoder_name = std::env::var("KEIKO_AVIF_ENCODER").unwrap_or_default();
    let encoder = AvifEncoder::named(&encoder_name);
    let speed: u8 = env_or("KEIKO_AVIF_SPEED", keiko::measure::AVIF_SPEED);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| ["jpg", "jpeg", "png"].iter().any(|x| e.eq_ignore_ascii_case(x)))
        })
        .collect();
    photos.sort();
    photos.truncate(count);
    assert!(!photos.is_empty(), "no JPEG in {}", dir.display());
    println!(
        "SSIMULACRA2 against the source; AVIF by {} at speed {speed}, one thread; {} photos from {}",
        if encoder_name.is_empty() { "keiko" } else { &encoder_name },
        photos.len(),
        dir.display()
    );
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); TARGETS.len()];
    let mut qualities: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); TARGETS.len()];
    let (mut webp_ms, mut avif_ms, mut megapixels) = (Vec::new(), Vec::new(), Vec::new());
    for photo in &photos {
        let (rgb, width, height) = read_rgb(photo);
        megapixels.push((width * height) as f64 / 1e6);
        let sweep = |encode: &dyn Fn(u8) -> (Vec<u8>, Vec<u8>), qualities: &[u8]| -> Vec<Point> {
            qualities
                .iter()
                .map(|&quality| {
                    let started = Instant::now();
                    let (bytes, decoded) = encode(quality);
                    let millis = started.elapsed().as_secs_f64() * 1e3;
                    Point { quality, bytes: bytes.len(), score: score(&rgb, width, height, &decoded), millis }
                })
                .collect()
        };
        let webp_points = sweep(&|q| webp(&rgb, width, height, q), &WEBP_QUALITIES);
        let avif_points = sweep(&|q| avif(&rgb, width, height, q, speed, encoder), &AVIF_QUALITIES);
        let name = photo.file_name().unwrap().to_string_lossy();
        for (codec, points) in [("webp", &webp_points), ("avif", &avif_points)] {
            let line: Vec<String> =
                points.iter().map(|p| format!("q{} {}B {:.1}", p.quality, p.bytes, p.score)).collect();
            println!("{name} {width}x{height} {codec}: {}", line.join(", "));
        }
        webp_ms.push(median(webp_points.iter().map(|p| p.millis).collect()));
        avif_ms.push(median(avif_points.iter().map(|p| p.millis).collect()));
        for (i, &target) in TARGETS.iter().enumerate() {
            if let (Some((w, wq)), Some((a, aq))) =
                (bytes_at(&webp_points, target), bytes_at(&avif_points, target))
            {
                ratios[i].push(a / w);
                qualities[i].0.push(wq);
                qualities[i].1.push(aq);
            }
        }
    }
    println!("\n| SSIMULACRA2 | photos | AVIF bytes / WebP bytes (median) | WebP quality | AVIF quality |");
    println!("|---:|---:|---:|---:|---:|");
    for (i, target) in TARGETS.iter().enumerate() {
        println!(
            "| {target} | {} | {:.2} | {:.0} | {:.0} |",
            ratios[i].len(),
            median(ratios[i].clone()),
            median(qualities[i].0.clone()),
            median(qualities[i].1.clone())
        );
    }
    let per_mp = |ms: &[f64]| median(ms.iter().zip(&megapixels).map(|(ms, mp)| ms / mp).collect());
    println!(
        "\nencode (with the reference decode and the score) per megapixel, median: WebP {:.0} ms, AVIF at speed {speed} {:.0} ms",
        per_mp(&webp_ms),
        per_mp(&avif_ms)
    );
}
