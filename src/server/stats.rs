//! What the event loops count: responses by route and status, their latency by route, open and
//! refused connections, how busy each loop is, and how long uploads take. Exposed on `/metrics`.
//!
//! Each loop owns a cache-line-padded [`ThreadStats`] and is the only thread that writes it, so
//! counting costs the hot path loads and stores (no locked instruction, no line shared with
//! another core); only a scrape reads across loops, summing as it renders. The label sets are
//! the [`Route`] and [`Status`] enums themselves (`enum_map`), so no route or status can be
//! missing from a table at run time.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use enum_map::EnumMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::http::response::Status;
use crate::http::route::Route;
use crate::metrics::{
    counter, decades, family, gauge, histogram, Histogram, OwnedCounter, Summed, WORK_BOUNDS,
};
use crate::variants::spec::Codec;

/// Upper bounds of the request-latency buckets, in nanoseconds (50 µs to 1 s).
const LATENCY_BOUNDS: [u64; 14] = decades(50_000);
/// Upper bounds of the upload-duration buckets, in nanoseconds (1 ms to 5 s).
const UPLOAD_BOUNDS: [u64; 11] = WORK_BOUNDS;

type Latency = Histogram<{ LATENCY_BOUNDS.len() }>;

#[derive(Debug)]
pub(crate) struct ServerStats {
    loops: Box<[CachePadded<ThreadStats>]>,
    /// Time to check and store one upload, on any loop's blocking pool.
    uploads: Histogram<{ UPLOAD_BOUNDS.len() }>,
}

/// One event loop's counters; only that loop's thread writes them.
#[derive(Debug)]
pub(crate) struct ThreadStats {
    requests: EnumMap<Route, EnumMap<Status, OwnedCounter>>,
    latency: EnumMap<Route, Latency>,
    open_connections: OwnedCounter,
    refused_connections: OwnedCounter,
    send_timeouts: OwnedCounter,
    /// Pictures sent and the bytes of their bodies, by format.
    pictures: EnumMap<Codec, OwnedCounter>,
    picture_bytes: EnumMap<Codec, OwnedCounter>,
    /// CPU time the loop's thread has used, and the share of the last second it was busy (in
    /// millionths), both as of its last tick.
    busy_nanos: AtomicU64,
    busy_ppm: AtomicU64,
}

impl Default for ThreadStats {
    fn default() -> Self {
        ThreadStats {
            requests: EnumMap::default(),
            latency: EnumMap::from_fn(|_| Histogram::new(&LATENCY_BOUNDS)),
            open_connections: OwnedCounter::default(),
            refused_connections: OwnedCounter::default(),
            send_timeouts: OwnedCounter::default(),
            pictures: EnumMap::default(),
            picture_bytes: EnumMap::default(),
            busy_nanos: AtomicU64::new(0),
            busy_ppm: AtomicU64::new(0),
        }
    }
}

impl ServerStats {
    pub(crate) fn new(loops: usize) -> ServerStats {
        ServerStats {
            loops: (0..loops).map(|_| CachePadded::new(ThreadStats::default())).collect(),
            uploads: Histogram::new(&UPLOAD_BOUNDS),
        }
    }

    /// The counters of event loop `index`, for that loop alone to write.
    pub(crate) fn thread(&self, index: usize) -> &ThreadStats {
        &self.loops[index]
    }

    pub(crate) fn uploaded(&self, took: Duration) {
        self.uploads.observe(took);
    }

    fn sum(&self, of: impl Fn(&ThreadStats) -> u64) -> u64 {
        self.loops.iter().map(|t| of(t)).sum()
    }
}

impl ThreadStats {
    /// A response sent: counted by route and status, its latency by route.
    pub(crate) fn responded(&self, route: Route, status: Status, took: Duration) {
        self.requests[route][status].add(1);
        self.latency[route].observe_owned(took);
    }

    /// A picture sent (a whole image or a rendition), of `bytes` bytes of body.
    pub(crate) fn sent_picture(&self, codec: Codec, bytes: usize) {
        self.pictures[codec].add(1);
        self.picture_bytes[codec].add(bytes as u64);
    }

    /// A response that never began with a request's bytes (a timed-out head): counted, not timed.
    pub(crate) fn counted(&self, route: Route, status: Status) {
        self.requests[route][status].add(1);
    }

    /// The loop thread's CPU time now, and its busy share of the window just ended.
    pub(crate) fn set_busy(&self, cpu: Duration, ratio: f64) {
        self.busy_nanos.store(u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.busy_ppm.store((ratio.clamp(0.0, 1.0) * 1e6) as u64, Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.open_connections.add(1);
    }

    pub(crate) fn connection_refused(&self) {
        self.refused_connections.add(1);
    }

    /// Connections reset because their client took no bytes for the send timeout.
    pub(crate) fn send_timed_out(&self, connections: u64) {
        self.send_timeouts.add(connections);
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.sub(1);
    }
}

impl Collector for ServerStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let requests = EnumMap::<Route, ()>::default().into_iter().flat_map(|(route, ())| {
            EnumMap::<Status, ()>::default().into_iter().map(move |(status, ())| {
                let n = self.sum(|t| t.requests[route][status].get());
                (([("route", route.label())], [("status", status.code())]), ConstCounter::new(n))
            })
        });
        family(&mut encoder, "keiko_requests", "HTTP responses sent, by route and status.", requests)?;
        let by_format = |of: fn(&ThreadStats, Codec) -> u64| {
            EnumMap::<Codec, ()>::default().into_iter().map(move |(codec, ())| {
                ([("format", codec.name())], ConstCounter::new(self.sum(|t| of(t, codec))))
            })
        };
        family(
            &mut encoder,
            "keiko_pictures_sent",
            "Pictures sent (whole images and renditions), by format.",
            by_format(|t, codec| t.pictures[codec].get()),
        )?;
        family(
            &mut encoder,
            "keiko_picture_bytes_sent",
            "Bytes of the bodies of the pictures sent, by format.",
            by_format(|t, codec| t.picture_bytes[codec].get()),
        )?;
        let latency = EnumMap::<Route, ()>::default().into_iter().map(|(route, ())| {
            let mut total = Summed::new(&LATENCY_BOUNDS);
            for t in self.loops.iter() {
                t.latency[route].sum_into(&mut total);
            }
            ([("route", route.label())], total)
        });
        family(
            &mut encoder,
            "keiko_request_duration_seconds",
            "From a request's first byte read to its response's last byte handed to the kernel, by route.",
            latency,
        )?;
        gauge(
            &mut encoder,
            "keiko_open_connections",
            "Client connections open now.",
            self.sum(|t| t.open_connections.get()),
        )?;
        counter(
            &mut encoder,
            "keiko_connections_refused",
            "Connections closed at accept because their thread had --max-conns open.",
            self.sum(|t| t.refused_connections.get()),
        )?;
        counter(
            &mut encoder,
            "keiko_send_timeouts",
            "Connections reset because their client took no bytes of a response for --send-timeout-ms.",
            self.sum(|t| t.send_timeouts.get()),
        )?;
        let busy = self
            .loops
            .iter()
            .enumerate()
            .map(|(i, t)| ([("loop", i)], ConstCounter::new(t.busy_nanos.load(Relaxed) as f64 / 1e9)));
        family(
            &mut encoder,
            "keiko_loop_busy_seconds",
            "CPU time each event loop's thread has used (its rate is the loop's busy fraction).",
            busy,
        )?;
        let ratio = self
            .loops
            .iter()
            .enumerate()
            .map(|(i, t)| ([("loop", i)], ConstGauge::new(t.busy_ppm.load(Relaxed) as f64 / 1e6)));
        family(
            &mut encoder,
            "keiko_loop_busy_ratio",
            "Share of the last second each event loop was busy.",
            ratio,
        )?;
        histogram(
            &mut encoder,
            "keiko_upload_duration_seconds",
            "Time to check and store one upload.",
            &self.uploads.summed(),
        )
    }
}
