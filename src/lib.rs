//! keiko: serves a random image from a directory as WebP, from memory, on one io_uring event loop
//! per core, and records every hit in SQLite without ever making a request wait for it.
//!
//! ```text
//!  startup:  images/ --decode+encode on every core--> catalog (immutable, &'static)
//!  serving:  client --> loop 0..N (monoio, SO_REUSEPORT) --pre-built bytes--> client
//!                            | hit (8 bytes, try_send)
//!                            v
//!            crossbeam channel --> writer thread --one transaction per flush--> SQLite (WAL)
//! ```
//!
//! [`run`] wires the pieces together in that order and owns the shutdown sequence: stop the
//! loops, then let the writer flush every hit they handed over.

pub mod catalog;
pub mod config;
pub mod hits;
pub mod http;
pub mod metrics;
pub mod server;

use std::time::Instant;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::hits::{Store, Totals};
use crate::metrics::Metrics;
use crate::server::{Driver, Shared};

/// Runs keiko until SIGINT or SIGTERM; an error means it could not start.
pub fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    share_one_malloc_arena();
    let threads = config.thread_count()?;
    let store = Store::open(&config.db)?;
    let known = store.counts().with_context(|| format!("cannot read hits from {}", config.db.display()))?;
    let catalog = leak(Catalog::load(&config.images, config::available_cores())?);
    release_startup_memory();
    let totals =
        leak(Totals::new(catalog.entries().iter().map(|e| known.get(&e.name).copied().unwrap_or(0))));
    let metrics = leak(Metrics::new(threads));

    let fd_limit = server::raise_fd_limit();
    let listeners = server::bind(config.addr, threads)?;
    let addr = listeners[0].local_addr()?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let (hits_tx, hits_rx) = hits::channel();
    let names = catalog.entries().iter().map(|e| e.name.clone()).collect();
    let writer = hits::spawn_writer(store, hits_rx, names, totals, &metrics.writer, config.flush_interval())
        .context("cannot start the hit writer")?;
    let shared =
        leak(Shared::new(catalog, totals, metrics, config.header_timeout(), config.max_conns as usize));
    let (server, driver) = server::start(listeners, shared, hits_tx, Driver::detect())?;
    tracing::info!(
        "ready: listening on http://{addr}, {threads} thread(s) ({}), {} images, cache {} bytes, \
         open-file limit {fd_limit}, started in {} ms",
        driver.name(),
        catalog.len(),
        catalog.bytes(),
        started.elapsed().as_millis()
    );

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    tracing::info!("received {}, shutting down", if signal == SIGINT { "SIGINT" } else { "SIGTERM" });
    server.stop();
    if writer.finish().is_err() {
        anyhow::bail!("the hit writer panicked: hits since the last flush are lost");
    }
    tracing::info!(
        "stopped: {} hits served, {} written to {}",
        metrics.hits_served(),
        metrics.writer.persisted(),
        config.db.display()
    );
    Ok(())
}

/// Decoding and encoding went through tens of MiB that neither mimalloc (Rust's side) nor glibc's
/// malloc (libwebp's and SQLite's) hands back to the OS by itself; the server keeps none of it.
fn release_startup_memory() {
    // SAFETY: both only release free memory.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
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
