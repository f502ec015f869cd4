//! The one histogram type: fixed bucket bounds in nanoseconds, counted in atomics so that any
//! thread may read it while it is written.
//!
//! Two ways to write, one type. [`Histogram::observe`] uses `fetch_add` and suits a histogram that
//! several threads write (encoders, render threads, uploads on any loop).
//! [`Histogram::observe_owned`] is for a histogram that only one thread writes (each event loop
//! times its own requests): a load and a store per field, no locked instruction, which is what
//! the hot path can afford. A scrape sums the histograms it is given into a [`Summed`], which
//! prometheus-client encodes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

#[derive(Debug)]
pub(crate) struct Histogram<const N: usize> {
    /// Upper bounds of the buckets, in nanoseconds, ascending; slower observations only count.
    bounds: &'static [u64; N],
    /// Observations per bucket, not cumulative.
    buckets: [AtomicU64; N],
    count: AtomicU64,
    nanos: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub(crate) const fn new(bounds: &'static [u64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation; any thread may call it.
    pub(crate) fn observe(&self, took: Duration) {
        let nanos = nanos(took);
        if let Some(bucket) = self.bucket(nanos) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.nanos.fetch_add(nanos, Relaxed);
    }

    /// Counts one observation from the only thread that writes this histogram.
    pub(crate) fn observe_owned(&self, took: Duration) {
        let nanos = nanos(took);
        if let Some(bucket) = self.bucket(nanos) {
            add_owned(&self.buckets[bucket], 1);
        }
        add_owned(&self.count, 1);
        add_owned(&self.nanos, nanos);
    }

    fn bucket(&self, nanos: u64) -> Option<usize> {
        self.bounds.iter().position(|&bound| nanos <= bound)
    }

    /// Adds what this histogram counted to `total`.
    pub(crate) fn sum_into(&self, total: &mut Summed<N>) {
        for (sum, bucket) in total.buckets.iter_mut().zip(&self.buckets) {
            *sum += bucket.load(Relaxed);
        }
        total.count += self.count.load(Relaxed);
        total.nanos += self.nanos.load(Relaxed);
    }

    /// What this histogram counted, for encoding.
    pub(crate) fn summed(&self) -> Summed<N> {
        let mut total = Summed::new(self.bounds);
        self.sum_into(&mut total);
        total
    }
}

fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

fn add_owned(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Histograms added up at scrape time (for example one per event loop).
#[derive(Debug)]
pub(crate) struct Summed<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [u64; N],
    count: u64,
    nanos: u64,
}

impl<const N: usize> Summed<N> {
    pub(crate) fn new(bounds: &'static [u64; N]) -> Self {
        Summed { bounds, buckets: [0; N], count: 0, nanos: 0 }
    }
}

impl<const N: usize> EncodeMetric for Summed<N> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let buckets: [(f64, u64); N] =
            std::array::from_fn(|i| (self.bounds[i] as f64 / 1e9, self.buckets[i]));
        encoder.encode_histogram::<NoLabelSet>(self.nanos as f64 / 1e9, self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::value;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;

    const BOUNDS: [u64; 3] = [100_000, 5_000_000, 1_000_000_000];

    #[derive(Debug)]
    struct Both(&'static Histogram<3>, &'static Histogram<3>);

    impl Collector for Both {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            let mut total = self.0.summed();
            self.1.sum_into(&mut total);
            let metric = encoder.encode_descriptor("t_seconds", "test", None, MetricType::Histogram)?;
            total.encode(metric)
        }
    }

    #[test]
    fn owned_and_shared_writes_sum_into_cumulative_buckets() {
        static SHARED: Histogram<3> = Histogram::new(&BOUNDS);
        static OWNED: Histogram<3> = Histogram::new(&BOUNDS);
        SHARED.observe(Duration::from_nanos(500));
        SHARED.observe(Duration::from_millis(3));
        OWNED.observe_owned(Duration::from_millis(5));
        OWNED.observe_owned(Duration::from_secs(2));
        static BOTH: Both = Both(&SHARED, &OWNED);
        let mut exposition = crate::metrics::Exposition::new();
        exposition.register(&BOTH);
        let mut text = String::new();
        exposition.render(&mut text);
        assert_eq!(value(&text, r#"t_seconds_bucket{le="0.0001"}"#), 1.0);
        assert_eq!(value(&text, r#"t_seconds_bucket{le="0.005"}"#), 3.0, "bounds are inclusive");
        assert_eq!(value(&text, r#"t_seconds_bucket{le="1"}"#), 3.0);
        assert_eq!(value(&text, r#"t_seconds_bucket{le="+Inf"}"#), 4.0);
        assert_eq!(value(&text, "t_seconds_count"), 4.0);
        assert!((value(&text, "t_seconds_sum") - 2.0080005).abs() < 1e-9, "{text}");
    }
}
