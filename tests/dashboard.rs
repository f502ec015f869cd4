//! `/dashboard` in a real browser: Debian's Chromium, headless, loads the page from a running
//! keiko, lets it poll for a few (virtual) seconds, and the test reads the DOM it built: every
//! image's card must show the count `/hits` reports, the thumbnails must load, and loading them
//! must not count a hit. A screenshot is kept in target/test-artifacts/dashboard.png.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, start_standard, Keiko, Options};

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is not installed: scripts/test.sh installs Debian's chromium package")
}

/// Chromium, headless, with the flags a closed sandbox needs, run at most a minute.
fn headless(url: &str, profile: &Path, extra: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the first `<div class="{class}">` after `from` in `dom`.
fn div_text<'d>(dom: &'d str, from: usize, class: &str) -> &'d str {
    let open = format!("<div class=\"{class}\">");
    let at = dom[from..].find(&open).unwrap_or_else(|| panic!("no {open} after {from}")) + from + open.len();
    &dom[at..at + dom[at..].find('<').unwrap()]
}

fn settled_hits(keiko: &Keiko) -> std::collections::HashMap<String, u64> {
    let mut last = keiko.hits();
    assert!(eventually(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(200));
        let now = keiko.hits();
        std::mem::replace(&mut last, now.clone()) == now
    }));
    last
}

#[test]
fn the_dashboard_shows_the_counts_hits_reports_with_thumbnails_in_chromium() {
    let (_images, tmp, keiko) = start_standard(Options::default());
    for i in 0..40 {
        keiko.get(if i % 4 == 0 { "/images/photo.jpg" } else { "/" });
    }
    let before = settled_hits(&keiko);
    let url = format!("http://{}/dashboard", keiko.addr);

    let dom = headless(&url, &tmp.path().join("profile-dom"), &["--dump-dom"]);
    let polls: u32 = dom
        .split("data-polls=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the page never polled:\n{dom}"));
    assert!(polls >= 2, "{polls} polls");

    let after = keiko.hits();
    assert_eq!(after, before, "loading the dashboard and its thumbnails counts no hit");
    for (name, count) in &after {
        let card = dom.find(&format!("data-name=\"{name}\"")).unwrap_or_else(|| panic!("no card for {name}"));
        assert_eq!(div_text(&dom, card, "hits"), count.to_string(), "the card of {name}");
        let thumb_class = &dom[card..card + dom[card..].find("<img").unwrap()];
        assert!(!thumb_class.contains("broken"), "the thumbnail of {name} did not load:\n{thumb_class}");
    }
    let total: u64 = after.values().sum();
    assert!(dom.contains(&format!("id=\"total-hits\">{total}<")), "the total {total} is shown");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &url,
        &tmp.path().join("profile-shot"),
        &["--window-size=1280,1000", &format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot, {} bytes", png.len());
    println!("screenshot: {}", shot.display());
}
