//! keiko: serves a random image from a directory as WebP, from the page cache, on one io_uring
//! event loop per core, and records every hit in SQLite (or, for a fleet, PostgreSQL) without ever
//! making a request wait for it.
//!
//! ```text
//!  library:  images/ --watch, encode at idle priority, on-disk cache--> catalogue snapshots
//!  serving:  client --> loop 0..N (monoio, SO_REUSEPORT, own snapshot) --pre-built bytes--> client
//!                            | hit: +1 in the loop's own table; every 10 ms one try_send per image
//!                            v
//!            crossbeam channel --> writer thread --one transaction per flush--> SQLite or PostgreSQL
//! ```
//!
//! The rooms: [`config`] turns flags and environment into what the program uses; `library` owns
//! the directory (scan, watch, encode pool, disk cache) and publishes `catalog` snapshots;
//! `store` puts that directory in an S3-compatible bucket shared by a fleet, with its encodings;
//! [`http`] parses, frames bodies, routes and builds responses, with no I/O; `server` runs the
//! loops, the connections and the handlers; [`variants`] makes renditions off the loops; `hits`
//! carries hits to the database; `admin` holds the write routes' rules; `metrics` exposes what
//! every room counts; `dashboard` is the operator's page.
//!
//! [`start`] wires the pieces together, listening before the library has looked at a single
//! image, and returns the [`Running`] server; the binary owns the signals and calls
//! [`Running::rescan`], [`Running::drain`] and [`Running::stop`], which lets tests run keiko in
//! their own process.
//!
//! Errors follow one rule. Where a caller branches on the cause, the error is a typed enum (a
//! refused upload, a body that is too large or malformed, a request that is rejected, a refused
//! parameter); at the edges, where the cause is only reported (startup, a render, the database,
//! the filesystem), it is an `anyhow::Error` with context. No error is a bare `String`.

mod admin;
mod catalog;
mod clients;
pub mod config;
mod dashboard;
mod hits;
pub mod http;
mod library;
mod metrics;
mod server;
pub mod signing;
mod store;
mod test_hooks;
pub mod variants;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::admin::{Admin, Remote};
use crate::config::Config;
use crate::hits::{HitStats, Registry, WriterThread};
use crate::library::{Library, LibraryStats, Trigger};
use crate::metrics::Exposition;
use crate::server::{Driver, Flags, Server, ServerStats, Shared};
use crate::store::announce::{Announcer, Listener};
use crate::store::mirror::{self, Mirror, Nudger};
use crate::store::stats::StoreStats;
use crate::store::{Bucket, Failure, Location};
use crate::variants::{VariantStats, Variants};

/// The hit store, for the baseline and for tests that drive a database directly.
pub use crate::hits::{Database, Store};

/// What `keiko-baseline` (src/bin) builds the original server's per-request work from: keiko's
/// own parts, so that the two are compared like for like.
pub mod baseline {
    pub use crate::library::decode::{decode, probe};
    pub use crate::library::encode::encode;
    pub use crate::library::scan::list;
    pub use crate::library::{Limits, Options as LibraryOptions, Settings};
    pub use crate::server::bind;
}

/// What `tests/quality.rs` measures against other encoders: keiko's own AVIF encoder, as the
/// backfill and the renditions run it.
pub mod measure {
    pub use crate::library::avif::{encode_at as encode_avif, SPEED as AVIF_SPEED};
    pub use crate::library::pixels::Pixels;
}

/// A keiko that serves until it is stopped.
pub struct Running {
    addr: SocketAddr,
    server: Server,
    library: Library,
    follower: Option<Follower>,
    writer: WriterThread,
    hit_stats: &'static HitStats,
    database: String,
}

/// Starts keiko: opens the database, binds the listeners, starts the library, the hit writer,
/// the render threads and the event loops, and returns once every loop serves. An error means
/// it could not start, and says why.
pub fn start(config: Config) -> anyhow::Result<Running> {
    let started = Instant::now();
    share_one_malloc_arena();
    let threads = config.thread_count()?;
    let library_options = config.library()?;
    let variant_options = config.variants()?;
    let admin_token = config.admin_token()?;
    let signing = config.signing()?.map(leak);
    let cors_origin = config.cors_origin()?;
    let trusted_proxies = config.trusted_proxies()?;
    let presets: &'static http::route::Presets = leak(config.presets()?);
    let bucket = config.bucket()?;
    let mirror_options = config.mirror()?;
    let mut store = Store::open(&config.db)?;
    let known = store.starting_counts()?;
    let database = store.describe();
    let registry: &'static Registry = leak(Registry::new(known));
    let server_stats = leak(ServerStats::new(threads));
    let hit_stats = leak(HitStats::new(threads));
    let library_stats = leak(LibraryStats::default());
    let variant_stats = leak(VariantStats::default());
    let mut exposition = Exposition::new();
    exposition.register(server_stats);
    exposition.register(hit_stats);
    exposition.register(library_stats);
    exposition.register(variant_stats);
    let store_stats = bucket.is_some().then(|| leak(StoreStats::default()));
    if let Some(stats) = store_stats {
        exposition.register(stats);
    }
    let bucket = match (bucket, store_stats) {
        (Some(location), Some(stats)) => Some(Arc::new(open_bucket(&location, stats)?)),
        _ => None,
    };

    let fd_limit = server::raise_fd_limit();
    let listeners = server::bind(config.addr, threads)?;
    let addr = listeners[0].local_addr()?;
    let images = library_options.images.clone();
    if bucket.is_some() {
        std::fs::create_dir_all(&images)
            .with_context(|| format!("cannot create the bucket's mirror {}", images.display()))?;
    }
    let shared_encodings = bucket.clone().map(|b| b as Arc<dyn library::Shared>);
    let (library, published) = Library::start(library_options, shared_encodings, registry, library_stats)?;
    let follower = match &bucket {
        Some(bucket) => Some(Follower::start(bucket.clone(), mirror_options, &library, &config.db)?),
        None => None,
    };
    let (hits_tx, hits_rx) = hits::channel();
    let writer = hits::spawn_writer(store, hits_rx, registry, &hit_stats.writer, config.flush_interval())
        .context("cannot start the hit writer")?;
    let shared_renditions =
        bucket.clone().filter(|_| config.store_renditions).map(|b| b as Arc<dyn library::Shared>);
    let variants = Variants::start(variant_options, shared_renditions, variant_stats)
        .context("cannot start the render threads")?;
    variants.warm(presets.variants().collect(), published).context("cannot start the preset thread")?;
    let admin = admin_token.map(|token| {
        let remote = bucket
            .clone()
            .zip(follower.as_ref())
            .map(|(bucket, follower)| Remote { bucket, mirror: follower.nudger.clone() });
        leak(Admin::new(token, images, library.rescanner(), remote, config.upload_limits()))
    });
    let shared = leak(Shared {
        published,
        router: http::route::Router::new(admin.is_some(), presets),
        presets_only: config
            .presets_only
            .then(|| format!("renditions: this server serves only its {presets}")),
        variants,
        admin,
        store: store_stats,
        exposition: leak(exposition),
        stats: server_stats,
        timeouts: config.timeouts(),
        cors_origin,
        signing,
        trusted_proxies,
        max_conns: config.max_conns as usize,
        timer: quanta::Clock::new(),
        flags: Flags::default(),
    });
    let (server, driver) = server::start(listeners, shared, hits_tx, hit_stats, Driver::detect())?;
    tracing::info!(
        "ready: listening on http://{addr}, {threads} thread(s) ({}), images from {} (reads {}), \
         hits in {database}, cache in {}, open-file limit {fd_limit}, started in {} ms",
        driver.name(),
        config.images.display(),
        library::decode::READS,
        config.cache_dir().display(),
        started.elapsed().as_millis()
    );
    Ok(Running { addr, server, library, follower, writer, hit_stats, database })
}

/// `target` signed with the first of the configured signing keys, expiring `expires_in` seconds
/// from now when given: what `keiko sign` prints.
pub fn sign(config: &Config, target: &str, expires_in: Option<u64>) -> anyhow::Result<String> {
    let signing =
        config.signing()?.context("no signing key: set KEIKO_SIGNING_KEYS or KEIKO_SIGNING_KEYS_FILE")?;
    anyhow::ensure!(
        target.starts_with('/'),
        "the target is a path with its query, starting with '/': {target:?}"
    );
    anyhow::ensure!(
        !target.split(['?', '&']).any(|p| p.starts_with("sig=")),
        "the target already has a sig parameter"
    );
    let target = match expires_in {
        Some(secs) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let joiner = if target.contains('?') { '&' } else { '?' };
            format!("{target}{joiner}exp={}", now + secs)
        }
        None => target.to_string(),
    };
    Ok(signing.sign(&target))
}

impl Running {
    /// The address the listeners are bound to (the actual port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Looks at the whole image directory again now (what SIGHUP asks for).
    pub fn rescan(&self) {
        self.library.rescan(Trigger::Signal);
    }

    /// Begins a graceful stop: `/readyz` answers 503 and every response closes its connection,
    /// while the loops go on serving, so that a load balancer moves traffic away first.
    pub fn drain(&self) {
        self.server.drain();
    }

    /// Stops accepting, lets every loop finish the responses in flight, stops the library and
    /// writes every hit the loops handed over. An error means hits were lost, and says so.
    pub fn stop(self) -> anyhow::Result<()> {
        self.server.stop();
        if let Some(follower) = self.follower {
            follower.stop();
        }
        self.library.stop();
        if self.writer.finish().is_err() {
            anyhow::bail!("the hit writer panicked: hits since the last flush are lost");
        }
        tracing::info!(
            "stopped: {} hits served, {} written to {}",
            self.hit_stats.served(),
            self.hit_stats.writer.persisted(),
            self.database
        );
        Ok(())
    }
}

/// Connects to the bucket of an s3:// library and checks it: a bucket that refuses (missing, of
/// another layout, without the permissions keiko needs) stops the start; one that does not answer
/// is retried in the background while the node serves its mirror of the last run.
fn open_bucket(location: &Location, stats: &'static StoreStats) -> anyhow::Result<Bucket> {
    let bucket = Bucket::connect(location, stats)?;
    match bucket.check() {
        Ok(()) => {}
        Err(Failure::Refused(why)) => anyhow::bail!("cannot use {location} as the image library: {why}"),
        Err(unreachable) => tracing::warn!(
            "{location}: {unreachable}; starting with the images this node copied before, and retrying"
        ),
    }
    Ok(bucket)
}

/// What follows a bucket: the mirror, and with a shared PostgreSQL database the listener for the
/// other nodes' changes.
struct Follower {
    mirror: Mirror,
    nudger: Nudger,
    listener: Option<Listener>,
}

impl Follower {
    fn start(
        bucket: Arc<Bucket>,
        options: mirror::Options,
        library: &Library,
        database: &hits::Database,
    ) -> anyhow::Result<Follower> {
        let postgres = database.postgres_url().map(hits::postgres_config).transpose()?;
        let announcer =
            postgres.clone().map(Announcer::start).transpose().context("cannot start the announcer")?;
        let (mirror, nudger) = Mirror::start(bucket, options, library.rescanner(), announcer)
            .context("cannot start the bucket's mirror")?;
        let listener = match postgres {
            Some(config) => {
                let mirror = nudger.clone();
                let listener = Listener::start(config, move || mirror.announced());
                Some(listener.context("cannot start the fleet's listener")?)
            }
            None => None,
        };
        Ok(Follower { mirror, nudger, listener })
    }

    fn stop(self) {
        if let Some(listener) = self.listener {
            listener.stop();
        }
        self.mirror.stop();
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
