//! Stable identities for hit accounting: one [`Tally`] per image name, created the first time the
//! library sees that name and kept for the life of the process.
//!
//! The hot path sends a tally's small integer id instead of a catalogue index, because indexes
//! move whenever the library publishes a new snapshot. The tally also carries the running total
//! that `/hits` reports: the database's count as the writer last read it (every node's hits, when
//! several share the database) plus this node's hits not yet committed. Only the writer thread
//! sets it. The registry itself is touched by the library when an image
//! appears and by the writer when it meets an id it has not seen yet, never by an event loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub(crate) struct Tally {
    pub(crate) id: u32,
    pub(crate) name: Arc<str>,
    total: AtomicU64,
}

impl Tally {
    /// Hits recorded so far: the database's count plus this node's hits not yet in it.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Adds `n` hits; called by the writer thread only, so a load and a store suffice.
    pub(super) fn add(&self, n: u64) {
        self.total.store(self.total.load(Relaxed) + n, Relaxed);
    }

    /// Sets the total, from the database's count (writer thread only).
    pub(super) fn set(&self, total: u64) {
        self.total.store(total, Relaxed);
    }
}

pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

struct Inner {
    by_id: Vec<Arc<Tally>>,
    by_name: HashMap<Arc<str>, Arc<Tally>>,
    /// Counts in the database as last read, by name, for names not interned yet.
    stored: HashMap<String, u64>,
}

impl Registry {
    /// A registry whose tallies start from the database's counts `stored`.
    pub(crate) fn new(stored: HashMap<String, u64>) -> Registry {
        Registry { inner: Mutex::new(Inner { by_id: Vec::new(), by_name: HashMap::new(), stored }) }
    }

    /// The tally for `name`, created with the next id if the name is new.
    pub(crate) fn intern(&self, name: &str) -> Arc<Tally> {
        let mut inner = self.lock();
        if let Some(tally) = inner.by_name.get(name) {
            return tally.clone();
        }
        let name: Arc<str> = name.into();
        let start = inner.stored.remove(&*name).unwrap_or(0);
        let id = u32::try_from(inner.by_id.len()).expect("fewer than 2^32 image names");
        let tally = Arc::new(Tally { id, name: name.clone(), total: AtomicU64::new(start) });
        inner.by_id.push(tally.clone());
        inner.by_name.insert(name, tally.clone());
        tally
    }

    /// Takes the database's counts: an interned name's total becomes its count plus what
    /// `uncommitted` says this node holds for its id; the others wait for their name to appear.
    pub(crate) fn apply_counts(&self, counts: HashMap<String, u64>, uncommitted: impl Fn(u32) -> u64) {
        let mut inner = self.lock();
        for (name, count) in counts {
            match inner.by_name.get(name.as_str()) {
                Some(tally) => tally.set(count + uncommitted(tally.id)),
                None => {
                    inner.stored.insert(name, count);
                }
            }
        }
    }

    /// Every tally with an id at or above `from`, in id order (for the writer to catch up).
    pub(crate) fn since(&self, from: usize) -> Vec<Arc<Tally>> {
        self.lock().by_id.get(from..).unwrap_or_default().to_vec()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `{"<name>": count, ...}` for `tallies`, in their order.
pub(crate) fn write_json<'a>(tallies: impl Iterator<Item = &'a Tally>, out: &mut Vec<u8>) {
    let counts: serde_json::Map<String, serde_json::Value> =
        tallies.map(|t| (t.name.to_string(), t.total().into())).collect();
    serde_json::to_writer(out, &counts).expect("a JSON map of numbers always serializes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_id_and_starts_from_the_stored_count() {
        let registry = Registry::new(HashMap::from([("b.png".to_string(), 41)]));
        let a = registry.intern("a.png");
        let b = registry.intern("b.png");
        assert_eq!((a.id, b.id), (0, 1));
        assert_eq!((a.total(), b.total()), (0, 41));
        assert!(Arc::ptr_eq(&registry.intern("a.png"), &a), "the same name is the same tally");
        assert_eq!(registry.since(1).iter().map(|t| t.id).collect::<Vec<_>>(), [1]);
        assert!(registry.since(5).is_empty());
        b.add(1);
        let mut json = Vec::new();
        write_json([&*a, &*b].into_iter(), &mut json);
        assert_eq!(json, br#"{"a.png":0,"b.png":42}"#);
    }
}
