//! One event loop's own state, shared by its accept loop, its ticker and its connections and by
//! nothing on another thread: its clone of the catalogue snapshot, its memo of renditions, this
//! second's Date tails, its coarse clock, its counters, its end of the hit channel and its table
//! of connections. Everything is a `Cell` or `RefCell`: one thread, no locks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use super::conns::Conns;
use super::shared::Shared;
use super::stats::ThreadStats;
use super::wire::Wire;
use crate::catalog::Catalog;
use crate::hits::Recorder;
use crate::http::request::MAX_HEAD;
use crate::http::response::Tails;
use crate::variants::{Key, Rendered};

/// Longest time between two ticks: how late a loop may see a new catalogue snapshot.
pub(crate) const MAX_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Connections' read buffers and Wires kept for the next connections (each 8 KiB and a little).
const MAX_SPARE: usize = 256;

pub(crate) struct Worker {
    pub(crate) shared: &'static Shared,
    pub(crate) stats: &'static ThreadStats,
    pub(crate) hits: Recorder,
    pub(crate) conns: Conns,
    /// This loop's own clone of the newest catalogue snapshot. The `Rc` is what a response in
    /// flight holds on to: cloning it touches no counter another thread touches.
    catalog: RefCell<Rc<Catalog>>,
    generation: Cell<u64>,
    tails: RefCell<Rc<Tails>>,
    /// Renditions this loop served since its last tick, so that a popular one is found without
    /// touching the shared cache's lock. Cleared on every tick, so it never keeps alive for long
    /// what the shared cache has let go.
    memo: RefCell<HashMap<Key, Arc<Rendered>>>,
    /// Milliseconds since the thread started, as of the last tick.
    clock: Cell<u64>,
    /// The clock requests are timed with: the CPU's time-stamp counter where it is invariant
    /// (quanta calibrates it and falls back to the monotonic clock where it is not), a few
    /// nanoseconds a read, where the vDSO's clock_gettime costs about fifty here.
    pub(crate) timer: quanta::Clock,
    /// Set from shutdown or the drain before it: every answer closes its connection.
    closing: Cell<bool>,
    /// Read buffers and Wires of connections that ended, so that a new connection (one per
    /// request with `Connection: close`) allocates neither.
    spare: RefCell<Vec<(Vec<u8>, Wire)>>,
}

impl Worker {
    pub(crate) fn new(shared: &'static Shared, stats: &'static ThreadStats, hits: Recorder) -> Worker {
        let worker = Worker {
            shared,
            stats,
            hits,
            conns: Conns::default(),
            catalog: RefCell::new(Rc::default()),
            generation: Cell::new(u64::MAX),
            tails: RefCell::new(Rc::new(Tails::at(SystemTime::now(), shared.cors_origin.as_deref()))),
            memo: RefCell::new(HashMap::new()),
            clock: Cell::new(0),
            timer: shared.timer.clone(),
            closing: Cell::new(false),
            spare: RefCell::new(Vec::with_capacity(MAX_SPARE)),
        };
        worker.refresh_catalog();
        worker
    }

    /// An empty read buffer of `MAX_HEAD` bytes and a cleared Wire for a new connection.
    pub(crate) fn buffers(&self) -> (Vec<u8>, Wire) {
        self.spare.borrow_mut().pop().unwrap_or_else(|| (Vec::with_capacity(MAX_HEAD), Wire::new()))
    }

    /// Takes back what [`Worker::buffers`] gave a connection that ended.
    pub(crate) fn give_back(&self, mut buf: Vec<u8>, mut wire: Wire) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            buf.clear();
            wire.clear();
            spare.push((buf, wire));
        }
    }

    /// The catalogue snapshot to answer from.
    pub(crate) fn catalog(&self) -> Rc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Takes the library's newest snapshot if it published one since the last look.
    pub(crate) fn refresh_catalog(&self) {
        let published = self.shared.published;
        let generation = published.generation();
        if generation != self.generation.get() {
            let catalog = Catalog::clone(&published.load());
            self.hits.cover(catalog.id_bound());
            *self.catalog.borrow_mut() = Rc::new(catalog);
            self.generation.set(generation);
        }
    }

    pub(crate) fn memo(&self, key: &Key) -> Option<Arc<Rendered>> {
        self.memo.borrow().get(key).cloned()
    }

    pub(crate) fn remember(&self, key: Key, rendered: Arc<Rendered>) {
        self.memo.borrow_mut().insert(key, rendered);
    }

    /// This second's Date and Connection header lines.
    pub(crate) fn tails(&self) -> Rc<Tails> {
        self.tails.borrow().clone()
    }

    /// A clock in milliseconds, as precise as the tick.
    pub(crate) fn now(&self) -> u64 {
        self.clock.get()
    }

    /// True once draining or shutdown began: answer with `Connection: close`, so that clients
    /// move to the nodes that stay.
    pub(crate) fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Every answer from now on closes its connection.
    pub(crate) fn close_every_connection(&self) {
        self.closing.set(true);
    }

    /// The ticker's housekeeping: the newest snapshot, an empty memo, the clock, and a new Date
    /// line when the second changed.
    pub(crate) fn tick(&self, clock_ms: u64, new_second: Option<SystemTime>) {
        self.refresh_catalog();
        self.memo.borrow_mut().clear();
        self.clock.set(clock_ms);
        if let Some(now) = new_second {
            *self.tails.borrow_mut() = Rc::new(Tails::at(now, self.shared.cors_origin.as_deref()));
        }
    }
}
