//! The library's state and the encoders' work, exposed on `/metrics`. The gauges are set by the
//! library thread alone; the counters are added to by every encoding thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::metrics::{counter, decades, family, gauge, histogram, Histogram};

/// Upper bounds of the encode-duration buckets, in nanoseconds (5 ms to 10 s).
const ENCODE_BOUNDS: [u64; 11] = decades(5_000_000);

#[derive(Debug)]
pub(crate) struct LibraryStats {
    files: AtomicU64,
    ready: AtomicU64,
    failed: AtomicU64,
    waiting: AtomicU64,
    body_bytes: AtomicU64,
    cache_writable: AtomicBool,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    avif_ready: AtomicU64,
    avif_waiting: AtomicU64,
    avif_encodes: Histogram<{ ENCODE_BOUNDS.len() }>,
    encodes: Histogram<{ ENCODE_BOUNDS.len() }>,
}

impl Default for LibraryStats {
    fn default() -> Self {
        LibraryStats {
            files: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            cache_writable: AtomicBool::new(true),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            avif_ready: AtomicU64::new(0),
            avif_waiting: AtomicU64::new(0),
            avif_encodes: Histogram::new(&ENCODE_BOUNDS),
            encodes: Histogram::new(&ENCODE_BOUNDS),
        }
    }
}

impl LibraryStats {
    pub(crate) fn set_library(
        &self,
        files: usize,
        ready: usize,
        failed: usize,
        waiting: usize,
        body_bytes: usize,
    ) {
        self.files.store(files as u64, Relaxed);
        self.ready.store(ready as u64, Relaxed);
        self.failed.store(failed as u64, Relaxed);
        self.waiting.store(waiting as u64, Relaxed);
        self.body_bytes.store(body_bytes as u64, Relaxed);
    }

    pub(crate) fn set_cache_writable(&self, writable: bool) {
        self.cache_writable.store(writable, Relaxed);
    }

    pub(crate) fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Relaxed);
    }

    pub(crate) fn encoded(&self, took: Duration) {
        self.encodes.observe(took);
    }

    /// The AVIF backfill's progress: images served with an AVIF encoding, and those waiting for one.
    pub(crate) fn set_avif(&self, ready: usize, waiting: usize) {
        self.avif_ready.store(ready as u64, Relaxed);
        self.avif_waiting.store(waiting as u64, Relaxed);
    }

    pub(crate) fn avif_encoded(&self, took: Duration) {
        self.avif_encodes.observe(took);
    }
}

impl Collector for LibraryStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let states = [
            ("all", &self.files),
            ("ready", &self.ready),
            ("failed", &self.failed),
            ("waiting", &self.waiting),
        ]
        .map(|(state, n)| ([("state", state)], ConstGauge::new(n.load(Relaxed))));
        family(&mut encoder, "keiko_library_images", "Image files in the library, by state.", states)?;
        gauge(
            &mut encoder,
            "keiko_library_body_bytes",
            "Bytes of the WebP bodies being served.",
            self.body_bytes.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "keiko_cache_writable",
            "1 while the encoding cache directory takes new files, 0 while encodings are kept in memory.",
            u64::from(self.cache_writable.load(Relaxed)),
        )?;
        counter(
            &mut encoder,
            "keiko_cache_hits",
            "Encodings found in the on-disk cache.",
            self.cache_hits.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_cache_misses",
            "Images that had to be encoded because the cache had no encoding for them.",
            self.cache_misses.load(Relaxed),
        )?;
        histogram(
            &mut encoder,
            "keiko_encode_duration_seconds",
            "Time to decode and encode one image.",
            &self.encodes.summed(),
        )?;
        let avif = [("ready", &self.avif_ready), ("waiting", &self.avif_waiting)]
            .map(|(state, n)| ([("state", state)], ConstGauge::new(n.load(Relaxed))));
        family(
            &mut encoder,
            "keiko_library_avif_images",
            "Images served with an AVIF encoding beside the WebP one, and images waiting for the backfill to make one.",
            avif,
        )?;
        histogram(
            &mut encoder,
            "keiko_avif_encode_duration_seconds",
            "Time to decode one image again and encode it as AVIF (the backfill).",
            &self.avif_encodes.summed(),
        )
    }
}
