//! Hit accounting, kept off the request path.
//!
//! ```text
//! event-loop threads                          writer thread (one)                 SQLite
//! Recorder::record(image) --try_send(Hit)-->  drain every tick, coalesce  --one tx per flush-->  hits
//!        | channel full: count locally          per image, update Totals     (prepared upserts)
//!        '-- retried on the thread's tick       (what /hits reports)
//! ```
//!
//! The hot path only ever does a non-blocking `try_send` of 8 bytes onto a bounded, lock-free
//! crossbeam channel. It never waits: if the writer has fallen so far behind that the channel is
//! full, the hit is added to the thread's own per-image counts and sent later, so nothing is
//! dropped. The writer wakes on a timer rather than on every message, so senders never pay for
//! waking it.

mod store;
mod writer;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use store::Store;
pub use writer::spawn_writer;

/// Room for this many hits between two drains of the writer (which drains every few ms).
const CHANNEL_CAPACITY: usize = 1 << 16;

/// `count` hits on the image at `image` in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub image: u32,
    pub count: u32,
}

pub fn channel() -> (Sender<Hit>, Receiver<Hit>) {
    let capacity = debug_knob("KEIKO_DEBUG_CHANNEL_CAPACITY").map_or(CHANNEL_CAPACITY, |c| c as usize);
    crossbeam_channel::bounded(capacity.max(1))
}

/// A number from the environment, read by debug builds only: the integration tests use these to
/// shrink the channel and stall the writer, faults a release build meets only under extreme load.
fn debug_knob(name: &str) -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(name).ok()?.parse().ok()
}

/// Hits per image known to the writer: the database's counts at startup plus every hit drained
/// since. This is what `/hits` reports; only the writer thread adds to it.
pub struct Totals {
    counts: Box<[AtomicU64]>,
}

impl Totals {
    pub fn new(initial: impl IntoIterator<Item = u64>) -> Totals {
        Totals { counts: initial.into_iter().map(AtomicU64::new).collect() }
    }

    pub fn get(&self, image: usize) -> u64 {
        self.counts[image].load(Relaxed)
    }

    /// `{"<name>": count, ...}` for every image, `names` in catalogue order.
    pub fn write_json<'a>(&self, names: impl Iterator<Item = &'a str>, out: &mut Vec<u8>) {
        let counts: serde_json::Map<String, serde_json::Value> = names
            .zip(self.counts.iter())
            .map(|(name, c)| (name.to_owned(), c.load(Relaxed).into()))
            .collect();
        serde_json::to_writer(out, &counts).expect("a JSON map of numbers always serializes");
    }

    fn add(&self, image: usize, n: u64) {
        let c = &self.counts[image];
        c.store(c.load(Relaxed) + n, Relaxed);
    }
}

/// An event-loop thread's end of the channel.
pub struct Recorder {
    tx: Sender<Hit>,
    /// Hits per image that found the channel full, waiting to be sent.
    held: RefCell<Vec<u32>>,
}

impl Recorder {
    pub fn new(tx: Sender<Hit>, images: usize) -> Recorder {
        Recorder { tx, held: RefCell::new(vec![0; images]) }
    }

    /// Records one hit. Never blocks, never allocates, never drops the hit.
    pub fn record(&self, image: usize) {
        if let Err(e) = self.tx.try_send(Hit { image: image as u32, count: 1 }) {
            self.hold(e.into_inner());
        }
    }

    fn hold(&self, hit: Hit) {
        let mut held = self.held.borrow_mut();
        held[hit.image as usize] = held[hit.image as usize].saturating_add(hit.count);
    }

    /// Sends what was held back while the channel was full, as far as there is room now.
    pub fn retry_held(&self) {
        let mut held = self.held.borrow_mut();
        for (image, count) in held.iter_mut().enumerate().filter(|(_, c)| **c > 0) {
            match self.tx.try_send(Hit { image: image as u32, count: *count }) {
                Ok(()) => *count = 0,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// At shutdown: sends everything held back, waiting for room if it must.
    pub fn send_held(&self) {
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
        let recorder = Recorder::new(tx, 3);
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
        let recorder = Recorder::new(tx, 2);
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
