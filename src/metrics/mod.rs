//! `/metrics`: every subsystem's stats in the Prometheus text format (0.0.4), rendered only when a
//! scrape asks, never on the request path.
//!
//! Each subsystem owns its stats next to its code (`server::stats`, `hits::stats`,
//! `library::stats`, `variants::stats`) and implements prometheus-client's [`Collector`] for them.
//! This module knows none of them: keiko's start registers each collector in an [`Exposition`],
//! and the `/metrics` handler asks it to render. It also holds the building blocks the stats are
//! made of, so that they count the same way everywhere: [`Histogram`] (the one histogram type)
//! and [`OwnedCounter`] (a counter with exactly one writing thread, which costs the hot path a
//! load and a store, no locked instruction).

mod histogram;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub(crate) use histogram::{Histogram, Summed};

/// Histogram bounds in nanoseconds: `N` steps of 1, 2.5 and 5 per decade, from `from`, which must
/// be one of those steps (50 µs: 50 µs, 100 µs, 250 µs, 500 µs, 1 ms, …).
pub(crate) const fn decades<const N: usize>(from: u64) -> [u64; N] {
    let mut bounds = [0; N];
    let mut bound = from;
    let mut i = 0;
    while i < N {
        bounds[i] = bound;
        // 1 -> 2.5 -> 5 -> 10: the step's leading digits decide the next.
        let mut scale = 1;
        while bound / scale >= 10 {
            scale *= 10;
        }
        bound = match bound / scale {
            1 => bound * 5 / 2,
            _ => bound * 2,
        };
        i += 1;
    }
    bounds
}

/// Bounds for work that takes from a millisecond to seconds (a render, an upload): 1 ms to 1 s in
/// decades, then 5 s.
pub(crate) const WORK_BOUNDS: [u64; 11] = {
    let first: [u64; 10] = decades(1_000_000);
    let mut bounds = [5_000_000_000; 11];
    let mut i = 0;
    while i < 10 {
        bounds[i] = first[i];
        i += 1;
    }
    bounds
};

/// The Content-Type of what [`Exposition::render`] writes.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every registered collector, rendered on demand.
pub(crate) struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// An exposition that already reports keiko's uptime.
    pub(crate) fn new() -> Exposition {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Uptime(Instant::now())));
        Exposition { registry }
    }

    /// Adds stats that live as long as the process.
    pub(crate) fn register(&mut self, collector: &'static dyn Collector) {
        self.registry.register_collector(Box::new(Static(collector)));
    }

    /// Appends the text exposition of every metric to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
            .expect("writing to a String cannot fail");
    }
}

#[derive(Debug)]
struct Static(&'static dyn Collector);

impl Collector for Static {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }
}

#[derive(Debug)]
struct Uptime(Instant);

impl Collector for Uptime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        gauge(
            &mut encoder,
            "keiko_uptime_seconds",
            "Seconds since keiko started.",
            self.0.elapsed().as_secs_f64(),
        )
    }
}

/// A counter that only one thread ever writes: adding is a load and a store (plain moves on
/// x86), never a read-modify-write, and readers on other threads see a recent value.
#[derive(Debug, Default)]
pub(crate) struct OwnedCounter(AtomicU64);

impl OwnedCounter {
    /// Adds `n`; only the owning thread may call it.
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n`; only the owning thread may call it.
    pub(crate) fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One unlabelled counter (`_total` is added to `name`).
pub(crate) fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One unlabelled gauge.
pub(crate) fn gauge<V>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: V) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let metric =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One unlabelled histogram.
pub(crate) fn histogram<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    summed: &Summed<N>,
) -> fmt::Result {
    let metric =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Histogram)?;
    summed.encode(metric)
}

/// A family of counters or gauges, one sample per label set.
pub(crate) fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric,
{
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else { return Ok(()) };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The value of the sample `series` (name and labels as printed) in an exposition.
    pub(crate) fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn decades_step_by_one_two_and_a_half_and_five() {
        let latency: [u64; 14] = decades(50_000);
        assert_eq!(latency[..5], [50_000, 100_000, 250_000, 500_000, 1_000_000]);
        assert_eq!(latency[13], 1_000_000_000);
        assert_eq!(WORK_BOUNDS[9..], [1_000_000_000, 5_000_000_000]);
    }

    #[test]
    fn an_owned_counter_counts_and_the_uptime_is_exposed() {
        let c = OwnedCounter::default();
        c.add(3);
        c.sub(1);
        assert_eq!(c.get(), 2);
        let mut text = String::new();
        Exposition::new().render(&mut text);
        assert!(value(&text, "keiko_uptime_seconds") >= 0.0);
        assert!(text.contains("# TYPE keiko_uptime_seconds gauge\n"), "{text}");
    }
}
