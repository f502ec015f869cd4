//! What the renditions' caches and render threads have done, written by the event loops (lookups,
//! rejections) and the render threads (renders, bytes held), exposed on `/metrics`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;

use crate::metrics::{counter, family, gauge, histogram, Histogram, WORK_BOUNDS};

/// Upper bounds of the render-duration buckets, in nanoseconds (1 ms to 5 s).
const RENDER_BOUNDS: [u64; 11] = WORK_BOUNDS;

#[derive(Debug)]
pub(crate) struct VariantStats {
    memory_hits: AtomicU64,
    memory_misses: AtomicU64,
    disk_hits: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    warmed: AtomicU64,
    over_budget: AtomicU64,
    pixels_in_flight: AtomicU64,
    queued: AtomicU64,
    memory_bytes: AtomicU64,
    disk_bytes: AtomicU64,
    renders: Histogram<{ RENDER_BOUNDS.len() }>,
}

impl Default for VariantStats {
    fn default() -> Self {
        VariantStats {
            memory_hits: AtomicU64::new(0),
            memory_misses: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            warmed: AtomicU64::new(0),
            over_budget: AtomicU64::new(0),
            pixels_in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
            renders: Histogram::new(&RENDER_BOUNDS),
        }
    }
}

impl VariantStats {
    pub(crate) fn looked_up(&self, found: bool) {
        let counter = if found { &self.memory_hits } else { &self.memory_misses };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn read_from_disk(&self) {
        self.disk_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn rendered(&self, took: Duration) {
        self.renders.observe(took);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    pub(crate) fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }

    pub(crate) fn warmed(&self) {
        self.warmed.fetch_add(1, Relaxed);
    }

    pub(crate) fn over_budget(&self) {
        self.over_budget.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_pixels_in_flight(&self, n: u64) {
        self.pixels_in_flight.store(n, Relaxed);
    }

    pub(crate) fn set_queued(&self, n: usize) {
        self.queued.store(n as u64, Relaxed);
    }

    pub(crate) fn set_memory_bytes(&self, n: u64) {
        self.memory_bytes.store(n, Relaxed);
    }

    pub(crate) fn set_disk_bytes(&self, n: u64) {
        self.disk_bytes.store(n, Relaxed);
    }
}

impl Collector for VariantStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let lookups = [("hit", &self.memory_hits), ("miss", &self.memory_misses)]
            .map(|(result, n)| ([("result", result)], ConstCounter::new(n.load(Relaxed))));
        family(&mut encoder, "keiko_variant_lookups", "Renditions looked up in memory, by result.", lookups)?;
        counter(
            &mut encoder,
            "keiko_variant_disk_hits",
            "Renditions read back from disk instead of rendered.",
            self.disk_hits.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_renders_cancelled",
            "Renders stopped because every client waiting for them had gone.",
            self.cancelled.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_presets_made",
            "Preset renditions made (or read from disk) ahead of any request.",
            self.warmed.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_render_budget_refusals",
            "Requests answered 429 because their client had used its budget of renders.",
            self.over_budget.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_render_rejected",
            "Requests answered 503 because the render queue was full.",
            self.rejected.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "keiko_render_pixels_in_flight",
            "Pixels held by renders in progress, as of the last one to start (within --render-megapixels).",
            self.pixels_in_flight.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "keiko_render_queue_depth",
            "Renders waiting for a thread.",
            self.queued.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "keiko_variant_memory_bytes",
            "Bytes of renditions held in memory.",
            self.memory_bytes.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "keiko_variant_disk_bytes",
            "Bytes of renditions stored on disk.",
            self.disk_bytes.load(Relaxed),
        )?;
        histogram(
            &mut encoder,
            "keiko_render_duration_seconds",
            "Time to render one rendition.",
            &self.renders.summed(),
        )
    }
}
