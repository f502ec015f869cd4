//! Hostile files, in the image directory and as uploads, against the real binary: metadata that
//! would inflate to hundreds of megabytes, images whose data ends early or never comes, and files
//! the content index must hash without holding them. Memory is asserted from the server's own
//! peak (VmHWM), and the same file gets the same verdict in the directory and as an upload.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::{Images, Keiko, Options};

const TOKEN: &str = "hostile-files-t0ken";
/// What each bomb would inflate to.
const BOMB_BYTES: usize = 512 << 20;
/// The server's peak memory must stay under this, far below one inflated bomb.
const PEAK_RSS_KIB: u64 = 160 << 10;

/// `png` with a chunk of `kind` holding `data` inserted after its header chunk.
fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut out = png[..33].to_vec();
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    out.extend(crc.sum().to_be_bytes());
    out.extend(&png[33..]);
    out
}

/// A keyword, a NUL, compression method 0, then zeros that inflate to [`BOMB_BYTES`].
fn bomb_payload(keyword: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_BYTES >> 20 {
        z.write_all(&zeros).unwrap();
    }
    let mut payload = [keyword, b"\0\0"].concat();
    payload.extend(z.finish().unwrap());
    payload
}

fn put(keiko: &Keiko, name: &str, body: &[u8]) -> common::Response {
    let head = format!(
        "PUT /images/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut s = keiko.connect();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    common::Response::read(&mut BufReader::new(s), false).expect("a response")
}

fn start(images: &Images, tmp: &tempfile::TempDir) -> Keiko {
    let options = Options::default().env("KEIKO_ADMIN_TOKEN", TOKEN).arg("--max-upload-bytes", "10000000");
    Keiko::start_with(images.path(), &tmp.path().join("k.db"), options)
}

#[test]
fn metadata_bombs_never_inflate_in_the_library_or_in_an_upload() {
    let small = common::png(&common::pattern(10, 10, false), 10, 10);
    let text_bomb = with_chunk(&small, b"zTXt", &bomb_payload(b"Comment"));
    let profile_bomb = with_chunk(&small, b"iCCP", &bomb_payload(b"icc"));
    assert!(text_bomb.len() < 1_000_000, "a small file: {} bytes", text_bomb.len());
    let images = Images::standard();
    images.add("text-bomb.png", &text_bomb);
    images.add("profile-bomb.png", &profile_bomb);
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);

    assert_eq!(keiko.get("/images/text-bomb.png").status, 200, "compressed text is left alone");
    assert_eq!(keiko.get("/images/profile-bomb.png").status, 200, "decoded without the oversized profile");
    assert_eq!(put(&keiko, "text-upload.png", &text_bomb).status, 201);
    assert_eq!(put(&keiko, "profile-upload.png", &profile_bomb).status, 201);

    let peak = keiko.peak_rss_kib();
    assert!(peak < PEAK_RSS_KIB, "peak RSS {peak} KiB, over {PEAK_RSS_KIB} KiB");
}

/// A JPEG whose header claims `width` x `height` (its frame header rewritten).
fn claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out.windows(2).position(|w| w[0] == 0xff && matches!(w[1], 0xc0..=0xc2)).unwrap();
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

#[test]
fn images_whose_data_ends_early_are_refused_in_the_library_and_as_uploads() {
    let jpeg = common::jpeg(&common::pattern(64, 48, false), 64, 48);
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    let liar = claiming(&jpeg[..jpeg.len().min(633)], 7000, 7000);
    let png = common::png(&common::pattern(64, 48, true), 64, 48);
    let short_png = png[..png.len() * 2 / 3].to_vec();
    let images = Images::standard();
    for (name, bytes) in [("truncated.jpg", &truncated), ("liar.jpg", &liar), ("short.png", &short_png)] {
        images.add(name, bytes);
    }
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    for (name, bytes) in [("truncated.jpg", &truncated), ("liar.jpg", &liar), ("short.png", &short_png)] {
        assert_eq!(keiko.get(&format!("/images/{name}")).status, 404, "{name} is not served");
        let r = put(&keiko, &format!("up-{name}"), bytes);
        assert_eq!(r.status, 415, "{name}: {}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("damaged or truncated"), "{name}");
    }
    assert_eq!(put(&keiko, "whole.jpg", &jpeg).status, 201, "the whole file is fine");
}

#[test]
fn an_image_too_long_for_webp_is_accepted_and_served_smaller() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    let long = common::png(&vec![200; 17_000 * 2 * 4], 17_000, 2);
    assert_eq!(put(&keiko, "long.png", &long).status, 201);
    assert!(common::eventually(Duration::from_secs(10), || keiko.get("/images/long.png").status == 200));
    let body = keiko.get("/images/long.png").body;
    let decoded = webp::Decoder::new(&body).decode().expect("a WebP");
    assert_eq!((decoded.width(), decoded.height()), (16_383, 1));
}

#[test]
fn the_content_index_hashes_files_as_a_stream_and_skips_oversized_ones() {
    let images = Images::standard();
    // Sparse: no disk used, but a reader that slurps them would hold every byte.
    let huge = std::fs::File::create(images.path().join("huge.png")).unwrap();
    huge.set_len(1 << 30).unwrap();
    let under = std::fs::File::create(images.path().join("under.png")).unwrap();
    under.set_len(90 << 20).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    let zeros = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(vec![0u8; 90 << 20]);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let r = keiko.request(&format!(
        "GET /images?sha256={zeros} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 200, "the 90 MiB file is indexed: {}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("under.png"));
    let peak = keiko.peak_rss_kib();
    assert!(peak < 80 << 10, "peak RSS {peak} KiB: a file was held whole");
}

/// A GIF of `frames` frames of `side` x `side`, each one flat colour: kilobytes on disk,
/// `frames` x `side`² pixels decoded.
fn flat_gif(side: u16, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, side, side, &[0, 0, 0, 255, 255, 255]).unwrap();
        for n in 0..frames {
            let pixels = vec![(n % 2) as u8; usize::from(side) * usize::from(side)];
            let frame = gif::Frame {
                width: side,
                height: side,
                delay: 5,
                buffer: pixels.into(),
                ..Default::default()
            };
            encoder.write_frame(&frame).unwrap();
        }
    }
    out
}

/// A TIFF whose header claims `width` x `height` over a few real pixels.
fn tiff_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut out)
        .unwrap()
        .write_image::<tiff::encoder::colortype::RGB8>(2, 2, &[9; 12])
        .unwrap();
    let mut tiff = out.into_inner();
    let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
    let entries = u16::from_le_bytes(tiff[ifd..ifd + 2].try_into().unwrap()) as usize;
    for entry in (0..entries).map(|n| ifd + 2 + n * 12) {
        let tag = u16::from_le_bytes(tiff[entry..entry + 2].try_into().unwrap());
        let value = match tag {
            256 => width,
            257 => height,
            _ => continue,
        };
        // The encoder writes both as LONG (type 4), one value, inline.
        assert_eq!(
            u16::from_le_bytes(tiff[entry + 2..entry + 4].try_into().unwrap()),
            4,
            "tag {tag} is a LONG"
        );
        tiff[entry + 8..entry + 12].copy_from_slice(&value.to_le_bytes());
    }
    tiff
}

#[test]
fn an_animation_past_its_budget_and_a_lying_tiff_cost_no_memory() {
    // 40 frames of 2000 x 2000: 160 megapixels, past the default 100 of --animation-megapixels.
    let animation = flat_gif(2000, 40);
    assert!(animation.len() < 2_000_000, "a small file: {} bytes", animation.len());
    let liar = tiff_claiming(100_000, 100_000);
    let images = Images::standard();
    images.add("bomb.gif", &animation);
    images.add("liar.tif", &liar);
    let tmp = tempfile::tempdir().unwrap();
    let keiko = start(&images, &tmp);
    let body = keiko.get("/images/bomb.gif").body;
    let still = webp::Decoder::new(&body).decode().expect("served as a still");
    assert_eq!((still.width(), still.height()), (2000, 2000));
    assert!(
        keiko.log().contains("bomb.gif: an animation of 26 or more frames of 2000x2000 is past the budget"),
        "{}",
        keiko.log()
    );
    assert_eq!(keiko.get("/images/liar.tif").status, 404);
    assert!(keiko.log().contains("skipping liar.tif: it is 100000x100000"), "{}", keiko.log());
    let r = put(&keiko, "liar-upload.tif", &liar);
    assert_eq!(r.status, 415, "{}", String::from_utf8_lossy(&r.body));
    let peak = keiko.peak_rss_kib();
    assert!(peak < PEAK_RSS_KIB, "peak RSS {peak} KiB, over {PEAK_RSS_KIB} KiB");
}
