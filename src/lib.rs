//! keiko: serves a random image from a directory as WebP, from the page cache, on one io_uring
//! event loop per core, and records every hit in SQLite (or, for a fleet, PostgreSQL) without ever
//! making a request wait for it.
//!
//! ```text
//!  library:  images/ --watch, encode at idle priority, on-disk cache--> catalogue snapshots
//!  serving:  client --> loop 0..N (monoio, SO_REUSEPORT, own snapshot) --pre-built bytes--> client
//!                            | hit (8 bytes, try_send)
//!                            v
//!            crossbeam channel --> writer thread --one transaction per flush--> SQLite or PostgreSQL
//! ```
//!
//! [`run`] wires the pieces together, listening before the library has looked at a single image,
//! and owns the signals: SIGHUP rescans the directory, the stopping signals stop the loops and let
//! the writer flush every hit they handed over, and the other catchable signals that would end the
//! process are logged and ignored, so none of them can lose a hit.

pub mod admin;
pub mod catalog;
pub mod config;
pub mod dashboard;
pub mod hits;
pub mod http;
pub mod library;
pub mod metrics;
pub mod server;
pub mod variants;

use std::time::Instant;

use anyhow::Context;
use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;

use crate::admin::Admin;
use crate::config::Config;
use crate::hits::{Registry, Store};
use crate::library::Library;
use crate::metrics::Metrics;
use crate::server::{Driver, Shared};
use crate::variants::Variants;

/// Signals that stop keiko gracefully.
const STOP: [i32; 4] = [SIGINT, SIGTERM, SIGQUIT, SIGXCPU];
/// Signals whose default action would end the process without a flush: logged and ignored.
const IGNORED: [i32; 8] =
    [SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGIO, libc::SIGPWR, libc::SIGSTKFLT, SIGXFSZ];

/// Runs keiko until a stopping signal; an error means it could not start.
pub fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    share_one_malloc_arena();
    let threads = config.thread_count()?;
    let library_options = config.library()?;
    let variant_options = config.variants()?;
    let admin_token = config.admin_token()?;
    let mut store = Store::open(&config.db)?;
    let known = store.starting_counts()?;
    let database = store.describe();
    let registry: &'static Registry = leak(Registry::new(known));
    let metrics = leak(Metrics::new(threads));

    let fd_limit = server::raise_fd_limit();
    let listeners = server::bind(config.addr, threads)?;
    let addr = listeners[0].local_addr()?;
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    let mut signals = Signals::new(STOP.iter().chain(&[SIGHUP]).chain(&IGNORED).copied().chain(realtime))
        .context("cannot install signal handlers")?;
    let (library, published) = Library::start(library_options, registry, &metrics.library)?;
    let (hits_tx, hits_rx) = hits::channel();
    let writer = hits::spawn_writer(store, hits_rx, registry, &metrics.writer, config.flush_interval())
        .context("cannot start the hit writer")?;
    let variants =
        Variants::start(variant_options, &metrics.variants).context("cannot start the render threads")?;
    let admin = admin_token.map(|token| {
        leak(Admin::new(token, config.images.clone(), library.rescanner(), config.upload_limits()))
    });
    let shared = leak(Shared::new(
        published,
        metrics,
        variants,
        admin,
        config.header_timeout(),
        config.max_conns as usize,
    ));
    let (server, driver) = server::start(listeners, shared, hits_tx, Driver::detect())?;
    tracing::info!(
        "ready: listening on http://{addr}, {threads} thread(s) ({}), images from {}, hits in {database}, \
         cache in {}, open-file limit {fd_limit}, started in {} ms",
        driver.name(),
        config.images.display(),
        config.cache_dir().display(),
        started.elapsed().as_millis()
    );

    let signal = signals
        .forever()
        .find(|&signal| match signal {
            SIGHUP => {
                library.rescan();
                false
            }
            s if STOP.contains(&s) => true,
            s => {
                tracing::info!("ignoring {} (SIGINT or SIGTERM stops keiko)", signal_name(s));
                false
            }
        })
        .unwrap_or(SIGTERM);
    if config.drain_ms > 0 {
        tracing::info!(
            "received {}: draining for {} ms (/readyz answers 503), then shutting down",
            signal_name(signal),
            config.drain_ms
        );
        server.drain();
        std::thread::sleep(config.drain());
    } else {
        tracing::info!("received {}, shutting down", signal_name(signal));
    }
    server.stop();
    library.stop();
    if writer.finish().is_err() {
        anyhow::bail!("the hit writer panicked: hits since the last flush are lost");
    }
    tracing::info!(
        "stopped: {} hits served, {} written to {}",
        metrics.hits_served(),
        metrics.writer.persisted(),
        database
    );
    Ok(())
}

fn signal_name(signal: i32) -> String {
    signal_hook::low_level::signal_name(signal).map_or_else(|| format!("signal {signal}"), str::to_string)
}

/// Rust code allocates through mimalloc; only libwebp (encoding at startup) and SQLite (the hit
/// writer) go through glibc's malloc, which would give each of those threads an arena of its own
/// and keep ~20 MB of the encoders' freed pages resident for good (malloc_trim does not return
/// them). One shared arena is plenty for so few callers.
fn share_one_malloc_arena() {
    // SAFETY: mallopt only changes allocator tuning; no allocation is in flight on another thread.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Startup state that lives as long as the process, shared by reference and never copied.
fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}
