//! The live library over real sockets: images added, replaced, renamed and removed while clients
//! load keiko; the on-disk cache across restarts (nothing re-encoded, damaged files encoded
//! again, an unwritable directory); hostile sources; settings changes; signals.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{db_counts, eventually, jpeg, pattern, png, Images, Keiko, Load, Options};

/// The dimensions of the WebP that `/images/<name>` serves, or its status when not 200.
fn served_size(keiko: &Keiko, name: &str) -> Result<(u32, u32), u16> {
    size_of(&keiko.get(&format!("/images/{name}")))
}

fn size_of(r: &common::Response) -> Result<(u32, u32), u16> {
    if r.status != 200 {
        return Err(r.status);
    }
    let image = common::first_frame(&r.body).expect("a decodable WebP");
    Ok((image.width, image.height))
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "webp"))
        .collect();
    files.sort();
    files
}

/// The test's own requests, tallied by the image each 200 named, for exact hit accounting.
#[derive(Default)]
struct Own(std::collections::HashMap<String, u64>);

impl Own {
    fn size(&mut self, keiko: &Keiko, name: &str) -> Result<(u32, u32), u16> {
        let r = keiko.get(&format!("/images/{name}"));
        self.count(&r);
        size_of(&r)
    }

    fn count(&mut self, r: &common::Response) {
        if r.status == 200 {
            *self.0.entry(r.header("X-Image-Name").unwrap().to_string()).or_default() += 1;
        }
    }
}

/// How long a new or replaced image may take to appear: it must be encoded first, at nice 19,
/// behind the load and every other test of the suite. Renames and removals need no encode and
/// are held to 2 s.
const ENCODED: Duration = Duration::from_secs(10);

#[test]
fn images_added_replaced_renamed_and_removed_under_load_are_followed_and_every_hit_lands() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let keiko = Keiko::start(images.path(), &db);
    let load = Load::start(keiko.addr, 4);
    let mut own = Own::default();
    std::thread::sleep(Duration::from_millis(200));

    images.add("added.png", &png(&pattern(7, 5, false), 7, 5));
    assert!(eventually(ENCODED, || own.size(&keiko, "added.png") == Ok((7, 5))), "added");

    // An editor's save: write a temporary file, then rename it over the image.
    images.add(".photo.jpg.swp", &jpeg(&pattern(30, 20, false), 30, 20));
    std::fs::rename(images.path().join(".photo.jpg.swp"), images.path().join("photo.jpg")).unwrap();
    assert!(eventually(ENCODED, || own.size(&keiko, "photo.jpg") == Ok((30, 20))), "replaced");

    std::fs::rename(images.path().join("alpha.png"), images.path().join("beta.png")).unwrap();
    assert!(eventually(Duration::from_secs(2), || own.size(&keiko, "alpha.png") == Err(404)), "renamed away");
    assert_eq!(own.size(&keiko, "beta.png"), Ok((16, 12)), "renamed to");

    std::fs::remove_file(images.path().join("anim.gif")).unwrap();
    assert!(eventually(Duration::from_secs(2), || own.size(&keiko, "anim.gif") == Err(404)), "removed");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..200 {
        let r = keiko.get("/");
        assert_ne!(r.header("X-Image-Name"), Some("anim.gif"), "a removed image is never chosen");
        own.count(&r);
    }
    let report = load.stop();
    let (status, _, log) = keiko.terminate(Duration::from_secs(5));
    assert!(status.success(), "{log}");

    assert_eq!(report.failures, 0, "{log}");
    assert_eq!(report.torn, 0, "every response is one whole WebP");
    assert!(report.ok() > 100, "the load ran: {report:?}");
    for name in ["added.png", "beta.png", "photo.jpg", "input.webp"] {
        assert!(
            report.by_name.get(name).copied().unwrap_or(0) > 0,
            "{name} chosen at random: {:?}",
            report.by_name
        );
    }
    let stored = db_counts(&db);
    assert!(stored.get("anim.gif").copied().unwrap_or(0) > 0, "a removed image keeps its hits: {stored:?}");
    let mut expected = own.0;
    for (name, n) in report.by_name {
        *expected.entry(name).or_default() += n;
    }
    assert_eq!(stored, expected, "every hit on the right name");
}

#[test]
fn each_image_is_served_as_soon_as_it_is_encoded_before_the_library_is_complete() {
    let images = Images::empty();
    images.add("a-small.png", &png(&pattern(8, 8, false), 8, 8));
    // Noise encodes slowly in lossless WebP: these keep the one encoder busy for a while.
    let mut rng = 1u32;
    for name in ["b-noise.png", "c-noise.png", "d-noise.png"] {
        let noise: Vec<u8> = (0..1024 * 1024 * 4)
            .map(|i| {
                rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if i % 4 == 3 {
                    255
                } else {
                    (rng >> 24) as u8
                }
            })
            .collect();
        images.add(name, &png(&noise, 1024, 1024));
    }
    let tmp = tempfile::tempdir().unwrap();
    let options = Options::default().arg("--encoders", "1").listening_only();
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("k.db"), options);
    assert!(eventually(Duration::from_secs(10), || keiko.get("/").status == 200), "{}", keiko.log());
    assert_eq!(keiko.get("/readyz").status, 503, "the first image is served while the rest encode");
    assert_eq!(keiko.get("/").header("X-Image-Name"), Some("a-small.png"));
    keiko.wait_ready(Duration::from_secs(60));
}

#[test]
fn a_file_still_being_written_is_not_read_until_it_is_closed() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start(images.path(), &tmp.path().join("k.db"));
    let whole = png(&pattern(9, 9, false), 9, 9);
    let mut file = std::fs::File::create(images.path().join("slow.png")).unwrap();
    file.write_all(&whole[..whole.len() / 2]).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(served_size(&keiko, "slow.png"), Err(404));
    file.write_all(&whole[whole.len() / 2..]).unwrap();
    drop(file);
    assert!(eventually(ENCODED, || served_size(&keiko, "slow.png") == Ok((9, 9))));
    assert!(!keiko.log().contains("skipping slow.png"), "never read half-way: {}", keiko.log());
}

#[test]
fn a_restart_re_encodes_nothing_and_a_damaged_cache_file_is_encoded_again() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let keiko = Keiko::start(images.path(), &db);
    assert_eq!(keiko.metric("keiko_encode_duration_seconds_count"), 4.0);
    keiko.terminate(Duration::from_secs(5));
    let cache = tmp.path().join("k-cache");
    assert_eq!(cache_files(&cache).len(), 4);

    let keiko = Keiko::start(images.path(), &db);
    assert_eq!(keiko.metric("keiko_encode_duration_seconds_count"), 0.0, "a warm restart encodes nothing");
    assert_eq!(keiko.metric("keiko_cache_hits_total"), 4.0);
    assert!(keiko.log().contains("(4 from the cache, 0 encoded)"), "{}", keiko.log());
    keiko.terminate(Duration::from_secs(5));

    // One file cut short, one overwritten with garbage of the same length, and one with a single
    // byte changed in the middle (length and header kept).
    let files = cache_files(&cache);
    let cut = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &cut[..cut.len() / 2]).unwrap();
    let garbage = vec![0x5a; std::fs::metadata(&files[1]).unwrap().len() as usize];
    std::fs::write(&files[1], garbage).unwrap();
    let mut flipped = std::fs::read(&files[2]).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    std::fs::write(&files[2], &flipped).unwrap();

    let keiko = Keiko::start(images.path(), &db);
    assert_eq!(
        keiko.metric("keiko_encode_duration_seconds_count"),
        3.0,
        "only the damaged three: {}",
        keiko.log()
    );
    for name in Images::standard_names() {
        let r = keiko.get(&format!("/images/{name}"));
        assert!(r.status == 200 && common::is_whole_webp(&r.body), "{name}");
        common::first_frame(&r.body).expect("decodable");
    }
    assert_eq!(keiko.log().matches("discarding cache file").count(), 3, "{}", keiko.log());
    assert_eq!(cache_files(&cache).len(), 4);
    assert!(!cache_files(&cache).iter().any(|f| std::fs::read(f).unwrap() == flipped), "never served, gone");
}

#[test]
fn an_unwritable_cache_directory_still_serves_and_says_so() {
    let images = Images::standard();
    let tmp = tempfile::tempdir().unwrap();
    let in_the_way = tmp.path().join("a-file");
    std::fs::write(&in_the_way, b"x").unwrap();
    let options = Options::default().arg("--cache-dir", in_the_way.join("cache").to_str().unwrap());
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("k.db"), options);
    assert_eq!(keiko.metric("keiko_cache_writable"), 0.0);
    for name in Images::standard_names() {
        assert!(served_size(&keiko, name).is_ok(), "{name}");
    }
    let log = keiko.log();
    assert_eq!(log.matches("is not writable").count(), 1, "one warning: {log}");
}

#[test]
fn hostile_sources_are_skipped_with_one_line_each_and_memory_stays_bounded() {
    let images = Images::standard();
    // A PNG whose header claims 100,000 x 100,000 pixels (40 GB decoded), and one claiming 8,000 x
    // 8,000 (64 MP) which passes the header check of the default limit only if the limit is off.
    let bomb = |w: u32, h: u32| {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 6, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
        png.extend(&ihdr);
        png.extend([0; 4]);
        png.extend(b"\0\0\0\0IDAT\0\0\0\0");
        png
    };
    images.add("bomb.png", &bomb(100_000, 100_000));
    images.add("big.png", &bomb(8_000, 8_000));
    images.add("empty.jpg", b"");
    images.add("text.gif", b"just some text, not a GIF");
    let cut = jpeg(&pattern(64, 64, false), 64, 64);
    images.add("cut.jpg", &cut[..cut.len() / 3]);
    images.add("huge.webp", &vec![0; 3 << 20]);
    let tmp = tempfile::tempdir().unwrap();
    let options = Options::default().arg("--max-file-bytes", &(2 << 20).to_string());
    let keiko = Keiko::start_with(images.path(), &tmp.path().join("k.db"), options);
    let log = keiko.log();
    for (name, why) in [
        ("bomb.png", "100000x100000"),
        ("big.png", "KEIKO_MAX_PIXELS"),
        ("empty.jpg", "the file is empty"),
        ("text.gif", "not a JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG XL, HEIC or AVIF"),
        ("huge.webp", "KEIKO_MAX_FILE_BYTES"),
        ("broken.png", "damaged or truncated PNG"),
    ] {
        let lines: Vec<_> = log.lines().filter(|l| l.contains(&format!("skipping {name}:"))).collect();
        assert_eq!(lines.len(), 1, "{name}: {log}");
        assert!(lines[0].contains(why), "{name}: {}", lines[0]);
    }
    assert!(keiko.rss_kib() < 100 * 1024, "RSS {} KiB", keiko.rss_kib());
    assert_eq!(
        keiko.metric("keiko_library_images{state=\"ready\"}"),
        4.0 + f64::from(served_size(&keiko, "cut.jpg").is_ok())
    );
    assert!(keiko.metric("keiko_library_images{state=\"failed\"}") >= 6.0);

    // A failed file is not looked at again until it changes.
    std::thread::sleep(Duration::from_millis(300));
    let before = keiko.log().matches("skipping").count();
    unsafe { libc::kill(keiko.pid(), libc::SIGHUP) };
    assert!(eventually(Duration::from_secs(2), || keiko.log().contains("rescanning")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(keiko.log().matches("skipping").count(), before, "no decode loop: {}", keiko.log());
}

#[test]
fn changed_settings_re_encode_in_the_background_while_the_old_encodings_serve() {
    let images = Images::empty();
    let noisy: Vec<u8> =
        (0..96 * 64u32).flat_map(|i| [(i * 7919 % 256) as u8, (i % 96) as u8, 50, 255]).collect();
    images.add("photo.jpg", &jpeg(&noisy, 96, 64));
    images.add("logo.png", &png(&pattern(96, 64, false), 96, 64));
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("k.db");
    let lossless = Keiko::start(images.path(), &db);
    let before = lossless.get("/images/photo.jpg").body;
    lossless.terminate(Duration::from_secs(5));

    let options = Options::default().arg("--webp", "auto").arg("--max-side", "48").listening_only();
    let auto = Keiko::start_with(images.path(), &db, options);
    assert!(eventually(Duration::from_secs(5), || auto.get("/images/photo.jpg").status == 200));
    auto.wait_ready(Duration::from_secs(10));
    assert_eq!(auto.metric("keiko_encode_duration_seconds_count"), 2.0);
    let after = auto.get("/images/photo.jpg").body;
    assert_eq!(&after[12..16], b"VP8 ", "auto encodes a JPEG lossy");
    assert!(after.len() < before.len());
    assert_eq!(served_size(&auto, "photo.jpg"), Ok((48, 32)), "downscaled to --max-side");
    let logo = auto.get("/images/logo.png").body;
    assert_eq!(&logo[12..16], b"VP8L", "auto keeps a PNG lossless");
    auto.terminate(Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(5), || cache_files(&tmp.path().join("k-cache")).len() == 2),
        "old encodings removed"
    );
}

#[test]
fn signals_that_would_end_the_process_lose_no_hit() {
    let (_images, _tmp, keiko) = common::start_standard(Options::default());
    for signal in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM, libc::SIGRTMIN() + 3] {
        for _ in 0..20 {
            assert_eq!(keiko.get("/").status, 200);
        }
        unsafe { libc::kill(keiko.pid(), signal) };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(keiko.get("/healthz").status, 200, "alive after signal {signal}: {}", keiko.log());
    }
    let db = keiko.db.clone();
    let (status, _, log) = keiko.terminate(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert_eq!(common::db_sum(&db), 100, "{log}");
}

#[test]
fn subdirectories_are_not_served_and_that_is_logged_once() {
    let images = Images::standard();
    std::fs::create_dir(images.path().join("more")).unwrap();
    std::fs::write(images.path().join("more/inner.png"), png(&pattern(4, 4, false), 4, 4)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keiko = Keiko::start(images.path(), &tmp.path().join("k.db"));
    assert_eq!(keiko.log().matches("1 subdirectories; they are not served").count(), 1, "{}", keiko.log());
    assert_eq!(keiko.get("/images/more%2Finner.png").status, 404);
    assert_eq!(keiko.hits().len(), 4);
}
