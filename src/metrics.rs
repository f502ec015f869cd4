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

/// Upper bounds, in nanoseconds, of the request-latency histogram buckets (50 µs to 1 s); a
/// 15th bucket counts the slower ones.
const LATENCY_BOUNDS_NS: [u64; 14] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;
/// Upper bounds, in seconds, of the upload-duration histogram buckets.
const UPLOAD_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Upper bounds, in seconds, of the flush-duration histogram buckets.
const FLUSH_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Upper bounds, in seconds, of the render-duration histogram buckets.
const RENDER_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Upper bounds, in seconds, of the encode-duration histogram buckets.
const ENCODE_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    started: Instant,
    threads: Box<[CachePadded<ThreadStats>]>,
    pub writer: WriterStats,
    pub library: LibraryStats,
    pub variants: VariantStats,
    /// Time to check and store one upload, on the loops' blocking pools.
    uploads: Histogram<{ UPLOAD_BUCKETS.len() }>,
}

/// One event-loop thread's counters; only that thread writes them.
#[derive(Default)]
pub struct ThreadStats {
    requests: [[AtomicU64; Status::ALL.len()]; Route::ALL.len()],
    /// Responses per route by latency bucket (not cumulative), and their summed nanoseconds.
    latency: [[AtomicU64; LATENCY_BUCKETS]; Route::ALL.len()],
    latency_nanos: [AtomicU64; Route::ALL.len()],
    hits_served: AtomicU64,
    open_connections: AtomicU64,
    refused_connections: AtomicU64,
    /// CPU time the loop's thread has used, and the share of the last second it was busy (in
    /// millionths), both as of its last tick.
    busy_nanos: AtomicU64,
    busy_ppm: AtomicU64,
}

/// The hit writer's counters; only the writer thread writes them.
pub struct WriterStats {
    persisted: AtomicU64,
    flush_failures: AtomicU64,
    failing: AtomicBool,
    flushes: Histogram<{ FLUSH_BUCKETS.len() }>,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            persisted: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            flushes: Histogram::new(&FLUSH_BUCKETS),
        }
    }
}

/// A histogram with fixed bucket bounds, written with `fetch_add` (it has several writers).
struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    nanos: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, "histogram", help);
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.nanos.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The library's state and the encoders' work. The gauges are set by the library thread alone;
/// the counters are added to by every encoding thread.
pub struct LibraryStats {
    files: AtomicU64,
    ready: AtomicU64,
    failed: AtomicU64,
    waiting: AtomicU64,
    body_bytes: AtomicU64,
    cache_writable: AtomicBool,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    encodes: Histogram<{ ENCODE_BUCKETS.len() }>,
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
            encodes: Histogram::new(&ENCODE_BUCKETS),
        }
    }
}

impl LibraryStats {
    pub fn set_library(&self, files: usize, ready: usize, failed: usize, waiting: usize, body_bytes: usize) {
        self.files.store(files as u64, Relaxed);
        self.ready.store(ready as u64, Relaxed);
        self.failed.store(failed as u64, Relaxed);
        self.waiting.store(waiting as u64, Relaxed);
        self.body_bytes.store(body_bytes as u64, Relaxed);
    }

    pub fn set_cache_writable(&self, writable: bool) {
        self.cache_writable.store(writable, Relaxed);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Relaxed);
    }

    pub fn encoded(&self, took: Duration) {
        self.encodes.observe(took);
    }

    fn render(&self, out: &mut String) {
        family(out, "keiko_library_images", "gauge", "Image files in the library, by state.");
        let files = self.files.load(Relaxed);
        let (ready, failed, waiting) =
            (self.ready.load(Relaxed), self.failed.load(Relaxed), self.waiting.load(Relaxed));
        let _ = writeln!(out, "keiko_library_images{{state=\"all\"}} {files}");
        let _ = writeln!(out, "keiko_library_images{{state=\"ready\"}} {ready}");
        let _ = writeln!(out, "keiko_library_images{{state=\"failed\"}} {failed}");
        let _ = writeln!(out, "keiko_library_images{{state=\"waiting\"}} {waiting}");
        sample(
            out,
            "keiko_library_body_bytes",
            "gauge",
            "Bytes of the WebP bodies being served.",
            self.body_bytes.load(Relaxed),
        );
        sample(
            out,
            "keiko_cache_writable",
            "gauge",
            "1 while the encoding cache directory takes new files, 0 while encodings are kept in memory.",
            u64::from(self.cache_writable.load(Relaxed)),
        );
        sample(
            out,
            "keiko_cache_hits_total",
            "counter",
            "Encodings found in the on-disk cache.",
            self.cache_hits.load(Relaxed),
        );
        sample(
            out,
            "keiko_cache_misses_total",
            "counter",
            "Images that had to be encoded because the cache had no encoding for them.",
            self.cache_misses.load(Relaxed),
        );
        self.encodes.render(out, "keiko_encode_duration_seconds", "Time to decode and encode one image.");
    }
}

/// The renditions' cache and render pool; written by the loops and the render threads.
pub struct VariantStats {
    memory_hits: AtomicU64,
    memory_misses: AtomicU64,
    disk_hits: AtomicU64,
    rejected: AtomicU64,
    queued: AtomicU64,
    memory_bytes: AtomicU64,
    disk_bytes: AtomicU64,
    renders: Histogram<{ RENDER_BUCKETS.len() }>,
}

impl Default for VariantStats {
    fn default() -> Self {
        VariantStats {
            memory_hits: AtomicU64::new(0),
            memory_misses: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
            renders: Histogram::new(&RENDER_BUCKETS),
        }
    }
}

impl VariantStats {
    pub fn looked_up(&self, found: bool) {
        let counter = if found { &self.memory_hits } else { &self.memory_misses };
        counter.fetch_add(1, Relaxed);
    }

    pub fn from_disk(&self) {
        self.disk_hits.fetch_add(1, Relaxed);
    }

    pub fn rendered(&self, took: Duration) {
        self.renders.observe(took);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    pub fn set_queued(&self, n: usize) {
        self.queued.store(n as u64, Relaxed);
    }

    pub fn set_memory_bytes(&self, n: u64) {
        self.memory_bytes.store(n, Relaxed);
    }

    pub fn set_disk_bytes(&self, n: u64) {
        self.disk_bytes.store(n, Relaxed);
    }

    fn render(&self, out: &mut String) {
        family(out, "keiko_variant_lookups_total", "counter", "Renditions looked up in memory, by result.");
        let _ =
            writeln!(out, "keiko_variant_lookups_total{{result=\"hit\"}} {}", self.memory_hits.load(Relaxed));
        let _ = writeln!(
            out,
            "keiko_variant_lookups_total{{result=\"miss\"}} {}",
            self.memory_misses.load(Relaxed)
        );
        sample(
            out,
            "keiko_variant_disk_hits_total",
            "counter",
            "Renditions read back from disk instead of rendered.",
            self.disk_hits.load(Relaxed),
        );
        sample(
            out,
            "keiko_render_rejected_total",
            "counter",
            "Requests answered 503 because the render queue was full.",
            self.rejected.load(Relaxed),
        );
        sample(
            out,
            "keiko_render_queue_depth",
            "gauge",
            "Renders waiting for a thread.",
            self.queued.load(Relaxed),
        );
        sample(
            out,
            "keiko_variant_memory_bytes",
            "gauge",
            "Bytes of renditions held in memory.",
            self.memory_bytes.load(Relaxed),
        );
        sample(
            out,
            "keiko_variant_disk_bytes",
            "gauge",
            "Bytes of renditions stored on disk.",
            self.disk_bytes.load(Relaxed),
        );
        self.renders.render(out, "keiko_render_duration_seconds", "Time to render one rendition.");
    }
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
            library: LibraryStats::default(),
            variants: VariantStats::default(),
            uploads: Histogram::new(&UPLOAD_BUCKETS),
        }
    }

    pub fn uploaded(&self, took: Duration) {
        self.uploads.observe(took);
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
        self.render_latency(out);
        sample(out, "keiko_hits_served_total", "counter", "Image responses that counted a hit.", served);
        sample(out, "keiko_hits_persisted_total", "counter", "Hits committed to the database.", persisted);
        sample(
            out,
            "keiko_hits_pending",
            "gauge",
            "Hits served but not yet committed to the database.",
            served.saturating_sub(persisted),
        );
        sample(
            out,
            "keiko_flush_failures_total",
            "counter",
            "Database flushes that failed and will be retried.",
            w.flush_failures.load(Relaxed),
        );
        sample(
            out,
            "keiko_db_writable",
            "gauge",
            "1 while the last database flush succeeded, 0 while flushes are failing.",
            u64::from(!w.failing.load(Relaxed)),
        );

        w.flushes.render(
            out,
            "keiko_flush_duration_seconds",
            "Time taken by each database flush (one transaction).",
        );

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
        family(
            out,
            "keiko_loop_busy_seconds_total",
            "counter",
            "CPU time each event loop's thread has used (its rate is the loop's busy fraction).",
        );
        for (i, t) in self.threads.iter().enumerate() {
            let secs = t.busy_nanos.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "keiko_loop_busy_seconds_total{{loop=\"{i}\"}} {secs}");
        }
        family(out, "keiko_loop_busy_ratio", "gauge", "Share of the last second each event loop was busy.");
        for (i, t) in self.threads.iter().enumerate() {
            let ratio = t.busy_ppm.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "keiko_loop_busy_ratio{{loop=\"{i}\"}} {ratio}");
        }
        self.library.render(out);
        self.variants.render(out);
        self.uploads.render(out, "keiko_upload_duration_seconds", "Time to check and store one upload.");
        family(out, "keiko_uptime_seconds", "gauge", "Seconds since keiko started.");
        let _ = writeln!(out, "keiko_uptime_seconds {:.3}", self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    fn render_latency(&self, out: &mut String) {
        let name = "keiko_request_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "From a request's first byte read to its response's last byte handed to the kernel, by route.",
        );
        for route in Route::ALL {
            let r = route as usize;
            let label = route.label();
            let mut cumulative = 0;
            for (b, bound) in LATENCY_BOUNDS_NS.iter().enumerate() {
                cumulative += self.threads.iter().map(|t| t.latency[r][b].load(Relaxed)).sum::<u64>();
                let le = *bound as f64 / 1e9;
                let _ = writeln!(out, "{name}_bucket{{route=\"{label}\",le=\"{le}\"}} {cumulative}");
            }
            let slower: u64 =
                self.threads.iter().map(|t| t.latency[r][LATENCY_BUCKETS - 1].load(Relaxed)).sum();
            let count = cumulative + slower;
            let nanos: u64 = self.threads.iter().map(|t| t.latency_nanos[r].load(Relaxed)).sum();
            let _ = writeln!(out, "{name}_bucket{{route=\"{label}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{route=\"{label}\"}} {}", nanos as f64 / 1e9);
            let _ = writeln!(out, "{name}_count{{route=\"{label}\"}} {count}");
        }
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
    /// A response sent: counted by route and status, its latency by route.
    pub fn responded(&self, route: Route, status: Status, took: Duration) {
        let r = route as usize;
        add(&self.requests[r][status as usize], 1);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket =
            LATENCY_BOUNDS_NS.iter().position(|&bound| nanos <= bound).unwrap_or(LATENCY_BUCKETS - 1);
        add(&self.latency[r][bucket], 1);
        add(&self.latency_nanos[r], nanos);
    }

    /// A response that never began with a request's bytes (a timed-out head): counted, not timed.
    pub fn request(&self, route: Route, status: Status) {
        add(&self.requests[route as usize][status as usize], 1);
    }

    /// The loop thread's CPU time now, and its busy share of the window just ended.
    pub fn set_busy(&self, cpu: Duration, ratio: f64) {
        self.busy_nanos.store(u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.busy_ppm.store((ratio.clamp(0.0, 1.0) * 1e6) as u64, Relaxed);
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
        self.flushes.observe(took);
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
