//! What hit accounting has done: hits each event loop served (counted by its own [`Recorder`],
//! one writer per counter) and what the writer thread committed, exposed on `/metrics`.
//!
//! [`Recorder`]: super::Recorder

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::{counter, decades, gauge, histogram, Histogram, OwnedCounter};

/// Upper bounds of the flush-duration buckets, in nanoseconds (0.5 ms to 1 s).
const FLUSH_BOUNDS: [u64; 11] = decades(500_000);

#[derive(Debug)]
pub(crate) struct HitStats {
    /// Hits served, one counter per event loop, written by that loop's recorder alone.
    served: Box<[CachePadded<OwnedCounter>]>,
    pub(crate) writer: WriterStats,
}

/// The hit writer's counters; only the writer thread writes them.
#[derive(Debug)]
pub(crate) struct WriterStats {
    persisted: OwnedCounter,
    flush_failures: OwnedCounter,
    failing: AtomicBool,
    flushes: Histogram<{ FLUSH_BOUNDS.len() }>,
}

impl HitStats {
    pub(crate) fn new(loops: usize) -> HitStats {
        HitStats {
            served: (0..loops).map(|_| CachePadded::new(OwnedCounter::default())).collect(),
            writer: WriterStats {
                persisted: OwnedCounter::default(),
                flush_failures: OwnedCounter::default(),
                failing: AtomicBool::new(false),
                flushes: Histogram::new(&FLUSH_BOUNDS),
            },
        }
    }

    /// Event loop `index`'s counter of hits served.
    pub(crate) fn served_by(&self, index: usize) -> &OwnedCounter {
        &self.served[index]
    }

    /// Hits served by every loop.
    pub(crate) fn served(&self) -> u64 {
        self.served.iter().map(|c| c.get()).sum()
    }
}

impl WriterStats {
    pub(crate) fn persisted(&self) -> u64 {
        self.persisted.get()
    }

    pub(crate) fn flush_failures(&self) -> u64 {
        self.flush_failures.get()
    }

    pub(crate) fn flushed(&self, hits: u64, took: Duration) {
        self.persisted.add(hits);
        self.flushes.observe(took);
        self.failing.store(false, Relaxed);
    }

    pub(crate) fn flush_failed(&self) {
        self.flush_failures.add(1);
        self.failing.store(true, Relaxed);
    }
}

impl Collector for HitStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let w = &self.writer;
        // Persisted first: every persisted hit was served before, so pending never goes negative.
        let persisted = w.persisted();
        let served = self.served();
        counter(&mut encoder, "keiko_hits_served", "Image responses that counted a hit.", served)?;
        counter(&mut encoder, "keiko_hits_persisted", "Hits committed to the database.", persisted)?;
        gauge(
            &mut encoder,
            "keiko_hits_pending",
            "Hits served but not yet committed to the database.",
            served.saturating_sub(persisted),
        )?;
        counter(
            &mut encoder,
            "keiko_flush_failures",
            "Database flushes that failed and will be retried.",
            w.flush_failures(),
        )?;
        gauge(
            &mut encoder,
            "keiko_db_writable",
            "1 while the last database flush succeeded, 0 while flushes are failing.",
            u64::from(!w.failing.load(Relaxed)),
        )?;
        histogram(
            &mut encoder,
            "keiko_flush_duration_seconds",
            "Time taken by each database flush (one transaction).",
            &w.flushes.summed(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::value;
    use crate::metrics::Exposition;

    fn render(stats: &'static HitStats) -> String {
        let mut exposition = Exposition::new();
        exposition.register(stats);
        let mut text = String::new();
        exposition.render(&mut text);
        text
    }

    #[test]
    fn counts_from_every_loop_are_summed_with_the_writer_s() {
        let stats: &'static HitStats = Box::leak(Box::new(HitStats::new(2)));
        stats.served_by(0).add(1);
        stats.served_by(1).add(2);
        stats.writer.flushed(2, Duration::from_millis(3));
        let text = render(stats);
        assert_eq!(value(&text, "keiko_hits_served_total"), 3.0);
        assert_eq!(value(&text, "keiko_hits_persisted_total"), 2.0);
        assert_eq!(value(&text, "keiko_hits_pending"), 1.0);
        assert_eq!(value(&text, r#"keiko_flush_duration_seconds_bucket{le="0.0025"}"#), 0.0);
        assert_eq!(value(&text, r#"keiko_flush_duration_seconds_bucket{le="0.005"}"#), 1.0);
        assert_eq!(value(&text, r#"keiko_flush_duration_seconds_bucket{le="+Inf"}"#), 1.0);
        assert_eq!(value(&text, "keiko_flush_duration_seconds_sum"), 0.003);
        assert_eq!(value(&text, "keiko_db_writable"), 1.0);
    }

    #[test]
    fn failing_flushes_show_until_one_succeeds() {
        let stats: &'static HitStats = Box::leak(Box::new(HitStats::new(1)));
        stats.writer.flush_failed();
        let text = render(stats);
        assert_eq!(value(&text, "keiko_db_writable"), 0.0);
        assert_eq!(value(&text, "keiko_flush_failures_total"), 1.0);
        stats.writer.flushed(0, Duration::ZERO);
        assert_eq!(value(&render(stats), "keiko_db_writable"), 1.0);
    }
}
