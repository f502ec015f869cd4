//! One event-loop thread: a monoio runtime (io_uring, or epoll where there is none) with its own
//! SO_REUSEPORT listener, serving every connection it accepts from start to end. Nothing here is
//! shared with the other loops except the read-only [`Shared`] and the write-only hit channel.
//!
//! Besides the accept loop each thread runs a ticker that, ten times a second, takes the library's
//! newest catalogue snapshot if there is one, renders the Date header, advances the coarse clock
//! used for the header timeout and ends overdue waits; and a second task sends the loop's hits to
//! the writer in one batch every 10 ms. At shutdown the listener has been shut down from outside, which ends the accept loop;
//! the thread then wakes the connections that wait for a request, lets the others finish their
//! response, and hands back held hits before returning.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use super::conn;
use super::shared::Shared;
use super::stats::ThreadStats;
use super::worker::{Worker, MAX_TICK};
use crate::hits::{Recorder, BATCH_EVERY};

/// io_uring submission queue size: room for a burst of accepts, reads and writes per loop turn.
const URING_ENTRIES: u32 = 4096;
/// How long shutdown waits for responses in flight before the thread exits regardless.
const DRAIN_GRACE: Duration = Duration::from_secs(3);
/// Pause after accept fails for lack of file descriptors or memory, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a window the busy fraction is averaged over.
const BUSY_WINDOW: Duration = Duration::from_secs(1);

/// The event loop an I/O driver runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    IoUring,
    /// monoio's legacy driver, for kernels or sandboxes without io_uring.
    Epoll,
}

impl Driver {
    /// io_uring when this kernel offers what monoio needs, epoll otherwise (with one warning).
    pub(crate) fn detect() -> Driver {
        if monoio::utils::detect_uring() {
            return Driver::IoUring;
        }
        let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        let why = if forced { "MONOIO_FORCE_LEGACY_DRIVER is set" } else { "the kernel does not offer it" };
        warn_io_uring_unavailable(why);
        Driver::Epoll
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// The one warning about falling back to epoll, however many threads fall back.
fn warn_io_uring_unavailable(why: &str) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!("io_uring is not available ({why}): serving with the slower epoll driver")
    });
}

/// Why an event loop could not start.
#[derive(Debug)]
pub(crate) struct NotStarted(pub(crate) String);

/// Runs event loop `index` until shutdown, reporting on `ready` whether it could start.
pub(crate) fn run(
    index: usize,
    listener: std::net::TcpListener,
    shared: &'static Shared,
    hits: Recorder,
    driver: Driver,
    ready: mpsc::Sender<Result<Driver, NotStarted>>,
) {
    let stats = shared.stats.thread(index);
    let worker = Rc::new(Worker::new(shared, stats, hits));
    // The write routes' file work (unlink, fsync) runs on a small blocking pool, off the loop.
    let blocking = || Box::new(DefaultThreadPool::new(2));
    if driver == Driver::IoUring {
        let builder = RuntimeBuilder::<IoUringDriver>::new().with_entries(URING_ENTRIES).enable_timer();
        let builder = if shared.admin.is_some() { builder.attach_thread_pool(blocking()) } else { builder };
        match builder.build() {
            Ok(mut rt) => return rt.block_on(serve(listener, worker, Driver::IoUring, ready)),
            Err(e) => warn_io_uring_unavailable(&e.to_string()),
        }
    }
    let builder = RuntimeBuilder::<LegacyDriver>::new().enable_timer();
    let builder = if shared.admin.is_some() { builder.attach_thread_pool(blocking()) } else { builder };
    match builder.build() {
        Ok(mut rt) => rt.block_on(serve(listener, worker, Driver::Epoll, ready)),
        Err(e) => {
            let _ = ready.send(Err(NotStarted(format!("event loop {index} cannot start: {e}"))));
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    w: Rc<Worker>,
    driver: Driver,
    ready: mpsc::Sender<Result<Driver, NotStarted>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(NotStarted(format!("cannot listen: {e}"))));
            return;
        }
    };
    let _ = ready.send(Ok(driver));
    let running = Rc::new(std::cell::Cell::new(true));
    monoio::spawn(tick(w.clone(), running.clone()));
    monoio::spawn(send_hits(w.clone(), running.clone()));
    accept(&listener, &w).await;

    running.set(false);
    w.close_every_connection();
    w.conns.end_waits();
    let deadline = Instant::now() + DRAIN_GRACE;
    while w.conns.len() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    w.hits.send_all();
}

async fn accept(listener: &TcpListener, w: &Rc<Worker>) {
    // Log lines go out when a condition starts and ends, not once per refused connection.
    let (mut full, mut starved) = (false, false);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if std::mem::take(&mut starved) {
                    tracing::info!("accepting connections again");
                }
                if w.conns.len() >= w.shared.max_conns {
                    // Closed at once: the connections being served keep their share of the loop.
                    drop(stream);
                    w.stats.connection_refused();
                    if !std::mem::replace(&mut full, true) {
                        tracing::warn!(
                            "{} open connections on this thread: closing new ones until some end",
                            w.shared.max_conns
                        );
                    }
                    continue;
                }
                full = false;
                // A new connection sees the newest snapshot at once, so that two connections in a
                // row never see an image on one loop and miss it on another.
                w.refresh_catalog();
                monoio::spawn(contain_panics(conn::serve(stream, w.clone())));
            }
            Err(_) if w.shared.flags.stopping() => return,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                if !std::mem::replace(&mut starved, true) {
                    tracing::warn!("accept failed: {e}; retrying every {} ms", ACCEPT_BACKOFF.as_millis());
                }
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => tracing::debug!("accept failed: {e}"),
        }
    }
}

/// A panic while serving one connection ends that connection only (its socket and table slot are
/// released as the task unwinds); the loop and its other connections go on. A combinator, not an
/// `async fn`: that would hold the connection's future twice (as argument and as awaitee) and
/// double every connection's task.
fn contain_panics(connection: impl Future<Output = ()>) -> impl Future<Output = ()> {
    AssertUnwindSafe(connection).catch_unwind().map(|served| {
        if served.is_err() {
            tracing::error!("a connection handler panicked; that connection was closed");
        }
    })
}

async fn tick(w: Rc<Worker>, running: Rc<std::cell::Cell<bool>>) {
    let timeouts = w.shared.timeouts;
    let shortest = Duration::from_millis(timeouts.header_ms.min(timeouts.send_ms));
    let every = (shortest / 4).clamp(Duration::from_millis(25), MAX_TICK);
    let started = Instant::now();
    let mut second = unix_second(SystemTime::now());
    let mut busy = BusyMeter::new();
    while running.get() {
        monoio::time::sleep(every).await;
        busy.sample(w.stats);
        if w.shared.flags.draining() {
            w.close_every_connection();
        }
        let now = SystemTime::now();
        let new_second = (unix_second(now) != second).then_some(now);
        second = unix_second(now);
        let clock = started.elapsed().as_millis() as u64;
        w.tick(clock, new_second);
        let cut_off = w.conns.expire(clock, timeouts);
        w.stats.send_timed_out(cut_off);
    }
}

/// Sends the loop's hits to the writer in one batch every [`BATCH_EVERY`].
async fn send_hits(w: Rc<Worker>, running: Rc<std::cell::Cell<bool>>) {
    while running.get() {
        monoio::time::sleep(BATCH_EVERY).await;
        w.hits.send_batch();
    }
}

/// Measures the loop's busy fraction from its thread's CPU clock: io_uring waits sleep off the
/// CPU, so CPU time over wall time is the share of time spent working (kernel time included).
struct BusyMeter {
    window_start: Instant,
    cpu_at_start: Duration,
}

impl BusyMeter {
    fn new() -> BusyMeter {
        BusyMeter { window_start: Instant::now(), cpu_at_start: thread_cpu_time() }
    }

    fn sample(&mut self, stats: &ThreadStats) {
        let elapsed = self.window_start.elapsed();
        if elapsed < BUSY_WINDOW {
            return;
        }
        let cpu = thread_cpu_time();
        let ratio = cpu.saturating_sub(self.cpu_at_start).as_secs_f64() / elapsed.as_secs_f64();
        stats.set_busy(cpu, ratio);
        *self = BusyMeter { window_start: Instant::now(), cpu_at_start: cpu };
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn unix_second(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
