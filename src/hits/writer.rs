//! The hit writer: one OS thread that drains the channel every few milliseconds, coalesces the
//! hits per image, and commits them in one transaction every flush interval (or sooner when many
//! have piled up). Every second it also reads back every image's count, so that `/hits` shows
//! what other nodes sharing the database added too.
//!
//! When a flush fails (database locked by another process, disk full, PostgreSQL restarting or
//! unreachable) the coalesced counts simply stay in memory, bounded by the number of images,
//! while the writer goes on draining and retries with exponential backoff; it logs once when
//! flushing starts failing and once when it recovers. A failed batch is retried as it was, with
//! its flush number, so that a store which can tell an already-committed batch (PostgreSQL)
//! never adds it twice; hits drained meanwhile wait for the next batch. When told to finish
//! (after the event loops have stopped), or when every sender is gone, it drains and flushes
//! what is left, retrying for a short while, and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::WriterStats;
use super::{Hit, Registry, Store, Tally};
use crate::test_hooks;

/// Longest sleep between two drains of the channel.
const MAX_TICK: Duration = Duration::from_millis(10);
/// Flush early once this many hits wait, whatever the interval.
const FLUSH_AT_HITS: u64 = 10_000;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// At shutdown, how long the writer keeps retrying a failing database before giving up.
const FINAL_FLUSH_GRACE: Duration = Duration::from_secs(3);
/// How often the database's counts are read back for `/hits`.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The running writer thread.
pub(crate) struct WriterThread {
    thread: JoinHandle<()>,
    finish: Arc<AtomicBool>,
}

impl WriterThread {
    /// Writes every hit sent so far, then ends the thread. Call it once no thread sends any more.
    pub(crate) fn finish(self) -> std::thread::Result<()> {
        self.finish.store(true, Ordering::Release);
        self.thread.join()
    }
}

pub(crate) fn spawn_writer(
    store: Store,
    hits: Receiver<Hit>,
    registry: &'static Registry,
    stats: &'static WriterStats,
    flush_interval: Duration,
) -> std::io::Result<WriterThread> {
    let writer = Writer {
        store,
        registry,
        tallies: Vec::new(),
        pending: Vec::new(),
        held: Vec::new(),
        held_hits: 0,
        batch: None,
        last_seq: 0,
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
    /// Hits per image id drained but in no batch yet.
    pending: Vec<u64>,
    /// Hits per image id drained but not committed: `pending` plus the batch.
    held: Vec<u64>,
    held_hits: u64,
    /// The batch being written, kept as it is until a flush of it succeeds.
    batch: Option<Batch>,
    last_seq: u64,
    stats: &'static WriterStats,
    failing_since: Option<Instant>,
    retry_delay: Duration,
}

struct Batch {
    seq: u64,
    ids: Vec<usize>,
    counts: Vec<i64>,
    hits: u64,
}

impl Writer {
    fn run(mut self, hits: Receiver<Hit>, flush_interval: Duration, finish: &AtomicBool) {
        if let Some(ms) = test_hooks::knob(test_hooks::WRITER_STALL_MS) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let tick = flush_interval.min(MAX_TICK);
        let mut next_flush = Instant::now() + flush_interval;
        let mut next_refresh = Instant::now() + REFRESH_EVERY;
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
            if self.held_hits > 0 && (now >= next_flush || self.held_hits >= FLUSH_AT_HITS) {
                next_flush = if self.flush() { now + flush_interval } else { now + self.retry_delay };
            } else if now >= next_flush {
                next_flush = now + flush_interval;
            }
            if now >= next_refresh && self.failing_since.is_none() {
                self.refresh();
                next_refresh = now + REFRESH_EVERY;
            }
        }
    }

    /// Moves every queued hit into `pending`; false once all senders are gone.
    fn drain(&mut self, hits: &Receiver<Hit>) -> bool {
        loop {
            match hits.try_recv() {
                Ok(Hit { image, count }) => {
                    let (image, count) = (image as usize, u64::from(count));
                    if image >= self.tallies.len() {
                        let newer = self.registry.since(self.tallies.len());
                        self.tallies.extend(newer);
                        self.pending.resize(self.tallies.len(), 0);
                        self.held.resize(self.tallies.len(), 0);
                    }
                    let Some(tally) = self.tallies.get(image) else {
                        tracing::error!("a hit names image id {image}, which was never registered");
                        continue;
                    };
                    tally.add(count);
                    self.pending[image] += count;
                    self.held[image] += count;
                    self.held_hits += count;
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Commits the batch, first making one of `pending` if there is none; on failure keeps it for
    /// the next attempt. True when it committed.
    fn flush(&mut self) -> bool {
        let started = Instant::now();
        let batch = self.batch.get_or_insert_with(|| {
            self.last_seq += 1;
            let mut ids: Vec<usize> = (0..self.pending.len()).filter(|&id| self.pending[id] > 0).collect();
            // One order for every node, so that concurrent flushes lock rows alike.
            ids.sort_unstable_by(|&a, &b| self.tallies[a].name.cmp(&self.tallies[b].name));
            let counts: Vec<i64> = ids
                .iter()
                .map(|&id| i64::try_from(std::mem::take(&mut self.pending[id])).unwrap_or(i64::MAX))
                .collect();
            let hits = counts.iter().map(|&c| c as u64).sum();
            Batch { seq: self.last_seq, ids, counts, hits }
        });
        let names: Vec<&str> = batch.ids.iter().map(|&id| &*self.tallies[id].name).collect();
        match self.store.add(&names, &batch.counts, batch.seq) {
            Ok(totals) => {
                let batch = self.batch.take().expect("the batch just written");
                for (&id, &count) in batch.ids.iter().zip(&batch.counts) {
                    self.held[id] -= count as u64;
                    let tally = &self.tallies[id];
                    if let Some(&total) = totals.get(&*tally.name) {
                        tally.set(total + self.held[id]);
                    }
                }
                self.held_hits -= batch.hits;
                self.stats.flushed(batch.hits, started.elapsed());
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        "database writes work again after {:.1} s; {} held hits written",
                        since.elapsed().as_secs_f64(),
                        batch.hits
                    );
                }
                self.retry_delay = FIRST_RETRY;
                true
            }
            Err(e) => {
                self.stats.flush_failed();
                if self.failing_since.is_none() {
                    self.failing_since = Some(started);
                    tracing::warn!(
                        "cannot write hits to the database at {} ({e:#}); keeping {} hits in memory and retrying",
                        self.store.describe(),
                        self.held_hits
                    );
                } else {
                    self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
                }
                false
            }
        }
    }

    /// Reads every count back, so that `/hits` includes what other writers added.
    fn refresh(&mut self) {
        match self.store.counts() {
            Ok(counts) => {
                self.registry.apply_counts(counts, |id| self.held.get(id as usize).copied().unwrap_or(0))
            }
            Err(e) => tracing::debug!("cannot read the counts back: {e:#}"),
        }
    }

    fn final_flush(&mut self) {
        let deadline = Instant::now() + FINAL_FLUSH_GRACE;
        while self.held_hits > 0 {
            if self.flush() {
                continue;
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    "shutting down with {} hits that could not be written to {}",
                    self.held_hits,
                    self.store.describe()
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
    use crate::hits::{Database, HitStats};
    use std::collections::HashMap;

    fn leak<T>(t: T) -> &'static T {
        Box::leak(Box::new(t))
    }

    #[test]
    fn every_hit_is_coalesced_and_lands_by_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let mut store = Store::open(&Database::Sqlite(path.clone())).unwrap();
        store.add(&["a.png"], &[5], 1).unwrap();
        let registry = leak(Registry::new(store.counts().unwrap()));
        let stats = leak(HitStats::new(1));
        let (tx, rx) = super::super::channel();
        let (a, b) = (registry.intern("a.png"), registry.intern("b.png"));
        let handle = spawn_writer(store, rx, registry, &stats.writer, Duration::from_millis(20)).unwrap();
        for i in 0..1000u32 {
            tx.send(Hit { image: i % 2, count: 1 }).unwrap();
        }
        tx.send(Hit { image: 1, count: 7 }).unwrap();
        handle.finish().unwrap();

        assert_eq!((a.total(), b.total()), (505, 507), "totals include the starting counts");
        let counts = Store::open(&Database::Sqlite(path.clone())).unwrap().counts().unwrap();
        assert_eq!((counts["a.png"], counts["b.png"]), (505, 507));
    }

    #[test]
    fn a_locked_database_delays_hits_but_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let registry = leak(Registry::new(HashMap::new()));
        let a = registry.intern("a.png");
        let stats = leak(HitStats::new(1));
        let store = Store::open(&Database::Sqlite(path.clone())).unwrap();

        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let (tx, rx) = super::super::channel();
        let handle = spawn_writer(store, rx, registry, &stats.writer, Duration::from_millis(5)).unwrap();
        for _ in 0..10 {
            tx.send(Hit { image: 0, count: 1 }).unwrap();
        }
        let failed = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            stats.writer.flush_failures() > 0
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
        assert_eq!(Store::open(&Database::Sqlite(path.clone())).unwrap().counts().unwrap()["a.png"], 10);
    }
}
