//! The object store as `/metrics` and `/readyz` show it: whether it answers (and since when it
//! does not), what the last listing held, and what went through it. Every thread that talks to
//! the bucket adds to these; none of them is on a request's path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;

use crate::metrics::{counter, family, gauge};

/// What keiko asks of the bucket, for the error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Get,
    Put,
    Delete,
}

const OPS: [Op; 4] = [Op::List, Op::Get, Op::Put, Op::Delete];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    /// Unix seconds since when the store has not answered; 0 while it answers.
    down_since: AtomicU64,
    errors: [AtomicU64; 4],
    objects: AtomicU64,
    last_listing: AtomicU64,
    downloaded: AtomicU64,
    downloaded_bytes: AtomicU64,
    fetched: AtomicU64,
    published: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).max(1)
}

impl StoreStats {
    /// The store answered.
    pub(crate) fn answered(&self) {
        self.down_since.store(0, Relaxed);
    }

    /// A request to the store failed without an answer (unreachable, timed out, 5xx).
    pub(crate) fn unreachable(&self, op: Op) {
        self.failed(op);
        let _ = self.down_since.compare_exchange(0, unix_now(), Relaxed, Relaxed);
    }

    /// A request failed with an answer (refused, not found where it must be).
    pub(crate) fn failed(&self, op: Op) {
        self.errors[OPS.iter().position(|o| *o == op).unwrap_or(0)].fetch_add(1, Relaxed);
    }

    /// How long the store has not answered, None while it answers.
    pub(crate) fn down_for(&self) -> Option<u64> {
        match self.down_since.load(Relaxed) {
            0 => None,
            since => Some(unix_now().saturating_sub(since)),
        }
    }

    pub(crate) fn listed(&self, objects: usize) {
        self.objects.store(objects as u64, Relaxed);
        self.last_listing.store(unix_now(), Relaxed);
    }

    pub(crate) fn downloaded(&self, bytes: u64) {
        self.downloaded.fetch_add(1, Relaxed);
        self.downloaded_bytes.fetch_add(bytes, Relaxed);
    }

    /// An encoding another node made was fetched instead of encoding it here.
    pub(crate) fn fetched(&self) {
        self.fetched.fetch_add(1, Relaxed);
    }

    /// An encoding made here was published for the other nodes.
    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }
}

impl Collector for StoreStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        gauge(
            &mut encoder,
            "keiko_store_up",
            "1 while the object store answers, 0 while it does not (the node serves what it has).",
            u64::from(self.down_since.load(Relaxed) == 0),
        )?;
        gauge(
            &mut encoder,
            "keiko_store_down_seconds",
            "How long the object store has not answered; 0 while it answers.",
            self.down_for().unwrap_or(0),
        )?;
        let errors = OPS.map(|op| {
            let n = self.errors[OPS.iter().position(|o| *o == op).unwrap_or(0)].load(Relaxed);
            ([("op", op.name())], ConstCounter::new(n))
        });
        family(
            &mut encoder,
            "keiko_store_errors",
            "Failed requests to the object store, by operation.",
            errors,
        )?;
        gauge(
            &mut encoder,
            "keiko_store_objects",
            "Originals in the bucket at the last listing.",
            self.objects.load(Relaxed),
        )?;
        gauge(
            &mut encoder,
            "keiko_store_last_listing_timestamp_seconds",
            "When the bucket was last listed in full (Unix time).",
            self.last_listing.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_store_downloads",
            "Originals copied from the bucket to this node's mirror.",
            self.downloaded.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_store_download_bytes",
            "Bytes of originals copied from the bucket.",
            self.downloaded_bytes.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_store_encodings_fetched",
            "Encodings (and shared renditions) another node made, fetched from the bucket instead of made here.",
            self.fetched.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "keiko_store_encodings_published",
            "Encodings (and shared renditions) made here and published in the bucket for the other nodes.",
            self.published.load(Relaxed),
        )
    }
}
