//! Hit accounting, kept off the request path.
//!
//! ```text
//! event-loop threads                          writer thread (one)          SQLite or PostgreSQL
//! Recorder::record(id): counts[id] += 1       drain every tick, coalesce  --one tx per flush-->  hits
//!   every 10 ms: try_send(Hit) per image -->    per image, add to its Tally  (prepared upserts)
//!   (channel full: kept for the next batch)     (what /hits reports, with the
//!                                               database's counts read back every second)
//! ```
//!
//! A hit names its image by a [`Tally`] id from the [`Registry`]: one id per image name for the
//! life of the process, never reused, so a hit served just before its image is removed, renamed
//! or replaced still lands on the right row.
//!
//! The hot path only adds one to the loop's own count for the image: no atomic read-modify-write,
//! no cache line shared with another core. Every [`BATCH_EVERY`] the loop sends one 8-byte
//! message per image it served onto a bounded, lock-free crossbeam channel with `try_send`; it
//! never waits: if the writer has fallen so far behind that the channel is full, the counts stay
//! in the loop's table for the next batch, so nothing is dropped. The writer wakes on a timer
//! rather than on every message, so senders never pay for waking it.

mod libpq;
mod postgres;
mod registry;
mod sqlite;
mod stats;
mod store;
mod writer;

use std::cell::RefCell;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// How a fleet's other users of its PostgreSQL database connect (the object store's announcements).
pub(crate) use libpq::config as postgres_config;
pub(crate) use registry::{write_json, Registry, Tally};
pub(crate) use stats::{HitStats, WriterStats};
pub use store::{Database, Store};
pub(crate) use writer::{spawn_writer, WriterThread};

use crate::metrics::OwnedCounter;
use crate::test_hooks;

/// Room for this many hits between two drains of the writer (which drains every few ms).
const CHANNEL_CAPACITY: usize = 1 << 16;

/// `count` hits on the image whose [`Tally`] has the id `image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) image: u32,
    pub(crate) count: u32,
}

pub(crate) fn channel() -> (Sender<Hit>, Receiver<Hit>) {
    let capacity = test_hooks::knob(test_hooks::CHANNEL_CAPACITY).map_or(CHANNEL_CAPACITY, |c| c as usize);
    crossbeam_channel::bounded(capacity.max(1))
}

/// An event-loop thread's end of the channel: hits are added up per image in the loop's own
/// table (a plain increment, nothing shared with another core) and sent in batches, one message
/// per image hit since the last batch, every [`BATCH_EVERY`].
pub(crate) struct Recorder {
    tx: Sender<Hit>,
    table: RefCell<Table>,
    /// This loop's count of hits served (it is their only writer).
    served: &'static OwnedCounter,
}

/// How often a loop sends its batch: the most a hit waits before the writer can see it.
pub(crate) const BATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Default)]
struct Table {
    /// Hits not sent yet, by image id.
    counts: Vec<u32>,
    /// The ids whose count is not zero, so a batch looks at no other.
    pending: Vec<u32>,
}

impl Recorder {
    pub(crate) fn new(tx: Sender<Hit>, served: &'static OwnedCounter) -> Recorder {
        Recorder { tx, table: RefCell::new(Table::default()), served }
    }

    /// Makes room for hits on images with ids below `ids`, so that [`Recorder::record`] never
    /// allocates. Called whenever the thread takes a new catalogue snapshot.
    pub(crate) fn cover(&self, ids: usize) {
        let mut table = self.table.borrow_mut();
        if table.counts.len() < ids {
            table.counts.resize(ids, 0);
            let pending = table.pending.len();
            table.pending.reserve(ids.saturating_sub(pending));
        }
    }

    /// Records one hit on the image with id `image`. Never blocks, never drops the hit, and never
    /// allocates for an image the last [`Recorder::cover`] covered.
    pub(crate) fn record(&self, image: u32) {
        self.served.add(1);
        self.hold(Hit { image, count: 1 });
    }

    fn hold(&self, hit: Hit) {
        let mut table = self.table.borrow_mut();
        let at = hit.image as usize;
        if at >= table.counts.len() {
            table.counts.resize(at + 1, 0);
        }
        if table.counts[at] == 0 {
            table.pending.push(hit.image);
        }
        table.counts[at] = table.counts[at].saturating_add(hit.count);
    }

    /// Sends the batch, as far as the channel has room; what does not fit waits for the next.
    pub(crate) fn send_batch(&self) {
        let mut table = self.table.borrow_mut();
        let Table { counts, pending } = &mut *table;
        while let Some(&image) = pending.last() {
            let count = std::mem::take(&mut counts[image as usize]);
            match self.tx.try_send(Hit { image, count }) {
                Ok(()) => {
                    pending.pop();
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    counts[image as usize] = count;
                    return;
                }
            }
        }
    }

    /// At shutdown: sends everything not sent yet, waiting for room if it must.
    pub(crate) fn send_all(&self) {
        let mut table = self.table.borrow_mut();
        let Table { counts, pending } = &mut *table;
        for image in pending.drain(..) {
            let count = std::mem::take(&mut counts[image as usize]);
            if self.tx.send(Hit { image, count }).is_err() {
                tracing::error!("hit writer is gone: {count} hits on image {image} are lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_go_in_batches_and_a_full_channel_holds_them_instead_of_dropping_them() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let recorder = Recorder::new(tx, Box::leak(Box::default()));
        recorder.cover(3);
        for image in [0, 1, 2, 2, 0, 1, 2] {
            recorder.record(image);
        }
        let drained = |rx: &Receiver<Hit>| {
            let mut per_image = [0u32; 3];
            for hit in rx.try_iter() {
                per_image[hit.image as usize] += hit.count;
            }
            per_image
        };
        assert_eq!(drained(&rx), [0, 0, 0], "nothing is sent before the batch");
        recorder.send_batch();
        assert_eq!(drained(&rx).iter().sum::<u32>(), 5, "the channel took two of three messages");
        recorder.send_batch();
        assert_eq!(drained(&rx).iter().sum::<u32>(), 2, "the rest went with the next batch");
        recorder.send_batch();
        assert_eq!(drained(&rx), [0, 0, 0], "nothing left, nothing sent twice");
    }

    #[test]
    fn send_all_delivers_everything_at_shutdown() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let recorder = Recorder::new(tx, Box::leak(Box::default()));
        for image in [1, 1, 1, 0] {
            recorder.record(image);
        }
        let reader = std::thread::spawn(move || rx.iter().map(|h| (h.image, h.count)).collect::<Vec<_>>());
        recorder.send_all();
        drop(recorder);
        let mut got = reader.join().unwrap();
        got.sort();
        assert_eq!(got, [(0, 1), (1, 3)]);
    }
}
