//! Hit accounting, kept off the request path.
//!
//! ```text
//! event-loop threads                          writer thread (one)          SQLite or PostgreSQL
//! Recorder::record(id) ---try_send(Hit)-->    drain every tick, coalesce  --one tx per flush-->  hits
//!        | channel full: count locally          per image, add to its Tally  (prepared upserts)
//!        '-- retried on the thread's tick       (what /hits reports, with the
//!                                               database's counts read back every second)
//! ```
//!
//! A hit names its image by a [`Tally`] id from the [`Registry`]: one id per image name for the
//! life of the process, never reused, so a hit served just before its image is removed, renamed
//! or replaced still lands on the right row.
//!
//! The hot path only ever does a non-blocking `try_send` of 8 bytes onto a bounded, lock-free
//! crossbeam channel. It never waits: if the writer has fallen so far behind that the channel is
//! full, the hit is added to the thread's own per-image counts and sent later, so nothing is
//! dropped. The writer wakes on a timer rather than on every message, so senders never pay for
//! waking it.

mod libpq;
mod postgres;
mod registry;
mod sqlite;
mod stats;
mod store;
mod writer;

use std::cell::RefCell;

use crossbeam_channel::{Receiver, Sender, TrySendError};

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

/// An event-loop thread's end of the channel.
pub(crate) struct Recorder {
    tx: Sender<Hit>,
    /// Hits per image that found the channel full, waiting to be sent.
    held: RefCell<Vec<u32>>,
    /// This loop's count of hits served (it is their only writer).
    served: &'static OwnedCounter,
}

impl Recorder {
    pub(crate) fn new(tx: Sender<Hit>, served: &'static OwnedCounter) -> Recorder {
        Recorder { tx, held: RefCell::new(Vec::new()), served }
    }

    /// Makes room to hold hits on images with ids below `ids`, so that [`Recorder::record`] never
    /// allocates. Called whenever the thread takes a new catalogue snapshot.
    pub(crate) fn cover(&self, ids: usize) {
        let mut held = self.held.borrow_mut();
        if held.len() < ids {
            held.resize(ids, 0);
        }
    }

    /// Records one hit on the image with id `image`. Never blocks, never drops the hit, and never
    /// allocates for an image the last [`Recorder::cover`] covered.
    pub(crate) fn record(&self, image: u32) {
        self.served.add(1);
        if let Err(e) = self.tx.try_send(Hit { image, count: 1 }) {
            self.hold(e.into_inner());
        }
    }

    fn hold(&self, hit: Hit) {
        let mut held = self.held.borrow_mut();
        let at = hit.image as usize;
        if at >= held.len() {
            held.resize(at + 1, 0);
        }
        held[at] = held[at].saturating_add(hit.count);
    }

    /// Sends what was held back while the channel was full, as far as there is room now.
    pub(crate) fn retry_held(&self) {
        let mut held = self.held.borrow_mut();
        for (image, count) in held.iter_mut().enumerate().filter(|(_, c)| **c > 0) {
            match self.tx.try_send(Hit { image: image as u32, count: *count }) {
                Ok(()) => *count = 0,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// At shutdown: sends everything held back, waiting for room if it must.
    pub(crate) fn send_held(&self) {
        let mut held = self.held.borrow_mut();
        for (image, count) in held.iter_mut().enumerate().filter(|(_, c)| **c > 0) {
            if self.tx.send(Hit { image: image as u32, count: *count }).is_err() {
                tracing::error!("hit writer is gone: {count} hits on image {image} are lost");
            }
            *count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_holds_hits_instead_of_dropping_them() {
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
        assert_eq!(drained(&rx), [1, 1, 0], "the channel took the first two");
        recorder.retry_held();
        assert_eq!(drained(&rx), [1, 1, 0], "room for two more messages");
        recorder.retry_held();
        assert_eq!(drained(&rx), [0, 0, 3], "held counts go as one message per image");
        recorder.retry_held();
        assert_eq!(drained(&rx), [0, 0, 0], "nothing left, nothing sent twice");
    }

    #[test]
    fn send_held_delivers_everything_at_shutdown() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let recorder = Recorder::new(tx, Box::leak(Box::default()));
        for image in [1, 1, 1, 0] {
            recorder.record(image);
        }
        let reader = std::thread::spawn(move || rx.iter().map(|h| (h.image, h.count)).collect::<Vec<_>>());
        recorder.send_held();
        drop(recorder);
        let mut got = reader.join().unwrap();
        got.sort();
        assert_eq!(got, [(0, 1), (1, 1), (1, 2)]);
    }
}
