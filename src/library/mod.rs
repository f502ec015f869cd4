//! The live library: owns the image directory, follows it, keeps its encodings in the on-disk
//! cache, and publishes a new catalogue snapshot whenever what can be served changes.
//!
//! ```text
//!  inotify (watch) ──┐                             ┌─> encode pool (nice 19) ───┐
//!  periodic rescan ──┼─> library thread: reconcile ┤                            ├─> snapshot ─> Published
//!  SIGHUP, uploads ──┘   (stamps vs. known)        └─<── ready / failed ────────┘      (event loops take it
//!                                                                                       on their tick)
//! ```
//!
//! One thread owns all the state ([`state`]), so none of it is locked; [`reconcile`] is what it
//! does with each event, [`watch`] what inotify tells it, [`scan`] how the directory is listed,
//! [`pool`] the encoding threads, [`cache`] the encodings on disk with their manifest. This file
//! is the handle the rest of keiko holds: start, rescan, stop.

pub(crate) mod animation;
pub(crate) mod avif;
mod backfill;
mod cache;
pub(crate) mod decode;
mod develop;
pub(crate) mod encode;
#[cfg(feature = "heif")]
mod heif;
pub(crate) mod jpeg;
pub(crate) mod pixels;
mod pool;
mod reconcile;
pub(crate) mod scan;
mod state;
mod stats;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Sender;

pub(crate) use cache::Shared;
pub use encode::{Settings, WebpMode};
pub use pool::Limits;
pub(crate) use pool::{lower_priority, Priority};
pub(crate) use stats::LibraryStats;

use crate::catalog::{Catalog, Published};
use crate::hits::Registry;
use cache::Cache;
use state::State;

/// Where the library is and how it encodes.
#[derive(Debug, Clone)]
pub struct Options {
    pub images: PathBuf,
    pub cache: PathBuf,
    pub settings: Settings,
    pub limits: Limits,
    pub encoders: usize,
    /// Time between full rescans (the fallback where inotify sees nothing); None = never.
    pub rescan: Option<Duration>,
    /// Seconds caches may keep `/images/<name>` responses (part of each image's pre-built head).
    pub max_age: u32,
    /// The AVIF backfill's limit: images of more pixels get no AVIF; 0 turns the backfill off.
    pub avif_max_pixels: u64,
}

/// The running library thread.
pub(crate) struct Library {
    control: Sender<Control>,
    thread: JoinHandle<()>,
}

/// Why the library should look at the directory again, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The operator sent SIGHUP.
    Signal,
    /// An upload or a deletion went through the write routes.
    Write,
    /// The object-store mirror has copied its first listing (or found the store unreachable):
    /// the first scan, which waits for it, may begin.
    Store,
}

/// Asks the library thread to look at the directory again.
#[derive(Clone)]
pub(crate) struct Rescanner(Sender<Control>);

impl Rescanner {
    pub(crate) fn rescan(&self, trigger: Trigger) {
        let _ = self.0.send(Control::Rescan(trigger));
    }

    /// One that reaches no library, for tests.
    #[cfg(test)]
    pub(crate) fn detached() -> Rescanner {
        Rescanner(crossbeam_channel::unbounded().0)
    }
}

enum Control {
    Rescan(Trigger),
    Stop,
}

impl Library {
    /// Checks the image directory (a missing or unreadable one is an error at once), then starts
    /// the library thread, which publishes into the returned slot as images become ready. With
    /// `shared` set, the directory is an object store's mirror: the fleet's encodings are looked
    /// for there before encoding, and the first scan waits for the mirror's first listing.
    pub(crate) fn start(
        options: Options,
        shared: Option<Arc<dyn Shared>>,
        registry: &'static Registry,
        stats: &'static LibraryStats,
    ) -> anyhow::Result<(Library, &'static Published)> {
        let images = std::fs::canonicalize(&options.images)
            .and_then(|dir| std::fs::read_dir(&dir).map(|_| dir))
            .with_context(|| format!("cannot read image directory {}", options.images.display()))?;
        let held = shared.is_some();
        let cache = Arc::new(Cache::open(&options.cache, shared, stats));
        let known = cache.load_manifest(&images);
        let (jobs, done) =
            pool::spawn(options.encoders, options.settings, options.limits, cache.clone(), stats)
                .context("cannot start the encoding threads")?;
        let avif_on = options.avif_max_pixels > 0 && !matches!(options.settings.mode, WebpMode::Lossless);
        let (avif_jobs, avif_done) = if avif_on {
            let (jobs, done) = backfill::spawn(options.limits, options.avif_max_pixels, cache.clone(), stats)
                .context("cannot start the AVIF encoding thread")?;
            (Some(jobs), done)
        } else {
            (None, crossbeam_channel::never())
        };
        let (events_tx, events) = crossbeam_channel::unbounded();
        let watcher = watch::start(&images, events_tx);
        let published: &'static Published = Box::leak(Box::new(Published::new(Catalog::default())));
        let (control, control_rx) = crossbeam_channel::unbounded();
        let state = State::new(
            images,
            cache,
            options.settings,
            options.max_age,
            options.rescan,
            held,
            known,
            jobs,
            avif_jobs,
            published,
            registry,
            stats,
        );
        let thread = std::thread::Builder::new()
            .name("keiko-library".into())
            .spawn(move || {
                let _watcher = watcher;
                state.run(control_rx, events, done, avif_done)
            })
            .context("cannot start the library thread")?;
        Ok((Library { control, thread }, published))
    }

    /// Looks at the whole directory again now.
    pub(crate) fn rescan(&self, trigger: Trigger) {
        let _ = self.control.send(Control::Rescan(trigger));
    }

    /// A handle that asks for a rescan from elsewhere (the write routes).
    pub(crate) fn rescanner(&self) -> Rescanner {
        Rescanner(self.control.clone())
    }

    /// Stops following the directory. Encodings under way are abandoned: their temporary files
    /// are never served and are removed at the next start.
    pub(crate) fn stop(self) {
        let _ = self.control.send(Control::Stop);
        if self.thread.join().is_err() {
            tracing::error!("the library thread panicked");
        }
    }
}
