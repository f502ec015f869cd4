//! Counters behind `/metrics`, rendered in the Prometheus text format.
//!
//! Counting must cost the hot path next to nothing, so every counter has exactly one writer: each
//! event-loop thread owns a cache-line-padded [`ThreadStats`] and the hit writer owns
//! [`WriterStats`]. A single writer needs no read-modify-write: it loads, adds and stores with
//! relaxed ordering (plain moves on x86), and no two threads ever contend for a line. Only
//! `/metrics` reads across threads, summing as it renders.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::http::response::Status;
use crate::http::route::Route;

/// Upper bounds, in seconds, of the flush-duration histogram buckets.
const FLUSH_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

pub struct Metrics {
    started: Instant,
    threads: Box<[CachePadded<ThreadStats>]>,
    pub writer: WriterStats,
}

/// One event-loop thread's counters; only that thread writes them.
#[derive(Default)]
pub struct ThreadStats {
    requests: [[AtomicU64; Status::ALL.len()]; Route::ALL.len()],
    hits_served: AtomicU64,
    open_connections: AtomicU64,
    refused_connections: AtomicU64,
}

/// The hit writer's counters; only the writer thread writes them.
#[derive(Default)]
pub struct WriterStats {
    persisted: AtomicU64,
    flush_failures: AtomicU64,
    failing: AtomicBool,
    flush_buckets: [AtomicU64; FLUSH_BUCKETS.len()],
    flush_count: AtomicU64,
    flush_nanos: AtomicU64,
}

/// Adds to a counter from its only writer: a load and a store, no locked instruction.
fn add(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

impl Metrics {
    pub fn new(threads: usize) -> Metrics {
        Metrics {
            started: Instant::now(),
            threads: (0..threads).map(|_| CachePadded::new(ThreadStats::default())).collect(),
            writer: WriterStats::default(),
        }
    }

    /// The counters of event-loop thread `index`, for that thread alone to write.
    pub fn thread(&self, index: usize) -> &ThreadStats {
        &self.threads[index]
    }

    pub fn hits_served(&self) -> u64 {
        self.threads.iter().map(|t| t.hits_served.load(Relaxed)).sum()
    }

    /// Appends the Prometheus text exposition of every metric to `out`.
    pub fn render(&self, out: &mut String) {
        let w = &self.writer;
        // Persisted first: every persisted hit was served before, so pending never goes negative.
        let persisted = w.persisted.load(Relaxed);
        let served = self.hits_served();

        family(out, "keiko_requests_total", "counter", "HTTP responses sent, by route and status.");
        for route in Route::ALL {
            for status in Status::ALL {
                let n: u64 = self
                    .threads
                    .iter()
                    .map(|t| t.requests[route as usize][status as usize].load(Relaxed))
                    .sum();
                let _ = writeln!(
                    out,
                    "keiko_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                    route.label(),
                    status.code()
                );
            }
        }
        sample(out, "keiko_hits_served_total", "counter", "Image responses that counted a hit.", served);
        sample(out, "keiko_hits_persisted_total", "counter", "Hits committed to SQLite.", persisted);
        sample(
            out,
            "keiko_hits_pending",
            "gauge",
            "Hits served but not yet committed to SQLite.",
            served.saturating_sub(persisted),
        );
        sample(
            out,
            "keiko_flush_failures_total",
            "counter",
            "SQLite flushes that failed and will be retried.",
            w.flush_failures.load(Relaxed),
        );
        sample(
            out,
            "keiko_db_writable",
            "gauge",
            "1 while the last SQLite flush succeeded, 0 while flushes are failing.",
            u64::from(!w.failing.load(Relaxed)),
        );

        family(
            out,
            "keiko_flush_duration_seconds",
            "histogram",
            "Time taken by each SQLite flush transaction.",
        );
        let mut cumulative = 0;
        for (bound, bucket) in FLUSH_BUCKETS.iter().zip(&w.flush_buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "keiko_flush_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = w.flush_count.load(Relaxed);
        let _ = writeln!(out, "keiko_flush_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ =
            writeln!(out, "keiko_flush_duration_seconds_sum {}", w.flush_nanos.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "keiko_flush_duration_seconds_count {count}");

        let open: u64 = self.threads.iter().map(|t| t.open_connections.load(Relaxed)).sum();
        family(out, "keiko_open_connections", "gauge", "Client connections open now.");
        let _ = writeln!(out, "keiko_open_connections {open}");
        let refused: u64 = self.threads.iter().map(|t| t.refused_connections.load(Relaxed)).sum();
        sample(
            out,
            "keiko_connections_refused_total",
            "counter",
            "Connections closed at accept because their thread had --max-conns open.",
            refused,
        );
        family(out, "keiko_uptime_seconds", "gauge", "Seconds since keiko started.");
        let _ = writeln!(out, "keiko_uptime_seconds {:.3}", self.started.elapsed().as_secs_f64());
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

impl ThreadStats {
    pub fn request(&self, route: Route, status: Status) {
        add(&self.requests[route as usize][status as usize], 1);
    }

    pub fn hit_served(&self) {
        add(&self.hits_served, 1);
    }

    pub fn connection_opened(&self) {
        add(&self.open_connections, 1);
    }

    pub fn connection_refused(&self) {
        add(&self.refused_connections, 1);
    }

    pub fn connection_closed(&self) {
        self.open_connections.store(self.open_connections.load(Relaxed) - 1, Relaxed);
    }
}

impl WriterStats {
    pub fn persisted(&self) -> u64 {
        self.persisted.load(Relaxed)
    }

    pub fn flushed(&self, hits: u64, took: Duration) {
        add(&self.persisted, hits);
        add(&self.flush_count, 1);
        add(&self.flush_nanos, u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        let secs = took.as_secs_f64();
        if let Some(i) = FLUSH_BUCKETS.iter().position(|&b| secs <= b) {
            add(&self.flush_buckets[i], 1);
        }
        self.failing.store(false, Relaxed);
    }

    pub fn flush_failed(&self) {
        add(&self.flush_failures, 1);
        self.failing.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counts_from_every_thread_are_summed() {
        let m = Metrics::new(2);
        m.thread(0).request(Route::Random, Status::Ok);
        m.thread(1).request(Route::Random, Status::Ok);
        m.thread(1).request(Route::Unknown, Status::NotFound);
        m.thread(0).hit_served();
        m.thread(1).hit_served();
        m.thread(1).hit_served();
        m.thread(0).connection_opened();
        m.thread(1).connection_opened();
        m.thread(1).connection_closed();
        m.writer.flushed(2, Duration::from_millis(3));

        let mut text = String::new();
        m.render(&mut text);
        assert_eq!(value(&text, r#"keiko_requests_total{route="/",status="200"}"#), 2.0);
        assert_eq!(value(&text, r#"keiko_requests_total{route="other",status="404"}"#), 1.0);
        assert_eq!(value(&text, "keiko_hits_served_total"), 3.0);
        assert_eq!(value(&text, "keiko_hits_persisted_total"), 2.0);
        assert_eq!(value(&text, "keiko_hits_pending"), 1.0);
        assert_eq!(value(&text, "keiko_open_connections"), 1.0);
        assert_eq!(value(&text, r#"keiko_flush_duration_seconds_bucket{le="0.0025"}"#), 0.0);
        assert_eq!(value(&text, r#"keiko_flush_duration_seconds_bucket{le="0.005"}"#), 1.0);
        assert_eq!(value(&text, r#"keiko_flush_duration_seconds_bucket{le="+Inf"}"#), 1.0);
        assert_eq!(value(&text, "keiko_flush_duration_seconds_sum"), 0.003);
        assert_eq!(value(&text, "keiko_db_writable"), 1.0);
    }

    #[test]
    fn failing_flushes_show_until_one_succeeds() {
        let m = Metrics::new(1);
        m.writer.flush_failed();
        let mut text = String::new();
        m.render(&mut text);
        assert_eq!(value(&text, "keiko_db_writable"), 0.0);
        assert_eq!(value(&text, "keiko_flush_failures_total"), 1.0);
        m.writer.flushed(0, Duration::ZERO);
        text.clear();
        m.render(&mut text);
        assert_eq!(value(&text, "keiko_db_writable"), 1.0);
    }
}
