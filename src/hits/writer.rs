//! The hit writer: one OS thread that drains the channel every few milliseconds, coalesces the
//! hits per image, and commits them in one transaction every flush interval (or sooner when many
//! have piled up).
//!
//! When a flush fails (database locked by another process, disk full, file made read-only) the
//! coalesced counts simply stay in memory, bounded by the number of images, while the writer goes
//! on draining and retries with exponential backoff; it logs once when flushing starts failing
//! and once when it recovers. When told to finish (after the event loops have stopped), or when
//! every sender is gone, it drains and flushes what is left, retrying for a short while, and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::{Hit, Registry, Store, Tally};
use crate::metrics::WriterStats;

/// Longest sleep between two drains of the channel.
const MAX_TICK: Duration = Duration::from_millis(10);
/// Flush early once this many hits wait, whatever the interval.
const FLUSH_AT_HITS: u64 = 10_000;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// At shutdown, how long the writer keeps retrying a failing database before giving up.
const FINAL_FLUSH_GRACE: Duration = Duration::from_secs(3);

/// The running writer thread.
pub struct WriterThread {
    thread: JoinHandle<()>,
    finish: Arc<AtomicBool>,
}

impl WriterThread {
    /// Writes every hit sent so far, then ends the thread. Call it once no thread sends any more.
    pub fn finish(self) -> std::thread::Result<()> {
        self.finish.store(true, Ordering::Release);
        self.thread.join()
    }
}

pub fn spawn_writer(
    store: Store,
    hits: Receiver<Hit>,
    registry: &'static Registry,
    stats: &'static WriterStats,
    flush_interval: Duration,
) -> std::io::Result<WriterThread> {
    let writer = Writer {
        pending: Vec::new(),
        tallies: Vec::new(),
        pending_hits: 0,
        store,
        registry,
        stats,
        failing_since: None,
        retry_delay: FIRST_RETRY,
    };
    let finish = Arc::new(AtomicBool::new(false));
    let told = finish.clone();
    let thread = std::thread::Builder::new()
        .name("keiko-hits".into())
        .spawn(move || writer.run(hits, flush_interval, &told))?;
    Ok(WriterThread { thread, finish })
}

struct Writer {
    store: Store,
    registry: &'static Registry,
    /// Every tally the registry had when an id was last met, indexed by id.
    tallies: Vec<Arc<Tally>>,
    /// Hits per image id drained but not yet committed.
    pending: Vec<u64>,
    pending_hits: u64,
    stats: &'static WriterStats,
    failing_since: Option<Instant>,
    retry_delay: Duration,
}

impl Writer {
    fn run(mut self, hits: Receiver<Hit>, flush_interval: Duration, finish: &AtomicBool) {
        if let Some(ms) = super::debug_knob("KEIKO_DEBUG_WRITER_STALL_MS") {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let tick = flush_interval.min(MAX_TICK);
        let mut next_flush = Instant::now() + flush_interval;
        loop {
            std::thread::sleep(tick);
            // Read before draining: whatever was sent before `finish` was set is drained below.
            let finishing = finish.load(Ordering::Acquire);
            let open = self.drain(&hits);
            let now = Instant::now();
            if finishing || !open {
                self.final_flush();
                return;
            }
            if self.pending_hits > 0 && (now >= next_flush || self.pending_hits >= FLUSH_AT_HITS) {
                next_flush = if self.flush() { now + flush_interval } else { now + self.retry_delay };
            } else if now >= next_flush {
                next_flush = now + flush_interval;
            }
        }
    }

    /// Moves every queued hit into `pending` and `totals`; false once all senders are gone.
    fn drain(&mut self, hits: &Receiver<Hit>) -> bool {
        loop {
            match hits.try_recv() {
                Ok(Hit { image, count }) => {
                    let (image, count) = (image as usize, u64::from(count));
                    if image >= self.tallies.len() {
                        let newer = self.registry.since(self.tallies.len());
                        self.tallies.extend(newer);
                        self.pending.resize(self.tallies.len(), 0);
                    }
                    let Some(tally) = self.tallies.get(image) else {
                        tracing::error!("a hit names image id {image}, which was never registered");
                        continue;
                    };
                    tally.add(count);
                    self.pending[image] += count;
                    self.pending_hits += count;
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Commits `pending`; on failure keeps it for the next attempt. True when it committed.
    fn flush(&mut self) -> bool {
        let started = Instant::now();
        let hits =
            self.tallies.iter().map(|t| &*t.name).zip(self.pending.iter().copied()).filter(|(_, n)| *n > 0);
        match self.store.add(hits) {
            Ok(()) => {
                self.stats.flushed(self.pending_hits, started.elapsed());
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        "database writes work again after {:.1} s; {} pending hits written",
                        since.elapsed().as_secs_f64(),
                        self.pending_hits
                    );
                }
                self.pending.fill(0);
                self.pending_hits = 0;
                self.retry_delay = FIRST_RETRY;
                true
            }
            Err(e) => {
                self.stats.flush_failed();
                if self.failing_since.is_none() {
                    self.failing_since = Some(started);
                    tracing::warn!(
                        "cannot write hits to the database ({e}); keeping {} hits in memory and retrying",
                        self.pending_hits
                    );
                } else {
                    self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
                }
                false
            }
        }
    }

    fn final_flush(&mut self) {
        let deadline = Instant::now() + FINAL_FLUSH_GRACE;
        while self.pending_hits > 0 && !self.flush() {
            if Instant::now() >= deadline {
                tracing::error!(
                    "shutting down with {} hits that could not be written to the database",
                    self.pending_hits
                );
                return;
            }
            std::thread::sleep(FIRST_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::collections::HashMap;

    fn leak<T>(t: T) -> &'static T {
        Box::leak(Box::new(t))
    }

    #[test]
    fn every_hit_is_coalesced_and_lands_by_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let registry = leak(Registry::new(HashMap::from([("a.png".to_string(), 5)])));
        let metrics = leak(Metrics::new(1));
        let (tx, rx) = super::super::channel();
        let (a, b) = (registry.intern("a.png"), registry.intern("b.png"));
        let handle = spawn_writer(
            Store::open(&path).unwrap(),
            rx,
            registry,
            &metrics.writer,
            Duration::from_millis(20),
        )
        .unwrap();
        for i in 0..1000u32 {
            tx.send(Hit { image: i % 2, count: 1 }).unwrap();
        }
        tx.send(Hit { image: 1, count: 7 }).unwrap();
        handle.finish().unwrap();

        assert_eq!((a.total(), b.total()), (505, 507), "totals include the starting counts");
        let counts = Store::open(&path).unwrap().counts().unwrap();
        assert_eq!((counts["a.png"], counts["b.png"]), (500, 507));
    }

    #[test]
    fn a_locked_database_delays_hits_but_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let registry = leak(Registry::new(HashMap::new()));
        let a = registry.intern("a.png");
        let metrics = leak(Metrics::new(1));
        let store = Store::open(&path).unwrap();

        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let (tx, rx) = super::super::channel();
        let handle = spawn_writer(store, rx, registry, &metrics.writer, Duration::from_millis(5)).unwrap();
        for _ in 0..10 {
            tx.send(Hit { image: 0, count: 1 }).unwrap();
        }
        let failures = || {
            let mut text = String::new();
            metrics.render(&mut text);
            let line =
                text.lines().find(|l| l.starts_with("keiko_flush_failures_total ")).unwrap().to_string();
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        };
        let failed = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            failures() > 0
        });
        assert!(failed, "the writer should have hit the lock");
        assert_eq!(a.total(), 10, "/hits still sees hits the database has not taken");
        let reader = rusqlite::Connection::open(&path).unwrap();
        let stored: i64 =
            reader.query_row("SELECT coalesce(sum(count), 0) FROM hits", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 0, "nothing can be committed while the lock is held");

        locker.execute_batch("COMMIT").unwrap();
        drop(locker);
        drop(tx);
        handle.finish().unwrap();
        assert_eq!(Store::open(&path).unwrap().counts().unwrap()["a.png"], 10);
    }
}
