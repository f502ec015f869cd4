//! The reconciler's state: every source file the library knows (its stamp, what is served under
//! its name, what the manifest should remember of it), the encodings in flight, and the pending
//! scan, publish and save. It lives on the library thread alone, so none of it is locked; the
//! behaviour that changes it is in [`super::reconcile`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::backfill;
use super::cache::{Cache, Outcome, Record};
use super::encode::Settings;
use super::pool::Job;
use super::scan::Stamp;
use super::stats::LibraryStats;
use super::watch::Watch;
use crate::catalog::{Image, Published};
use crate::hits::Registry;

/// One source file the library knows.
pub(super) struct Tracked {
    pub(super) stamp: Stamp,
    /// What is served under this name now, and the cache key it came from.
    pub(super) serving: Option<(Arc<Image>, String)>,
    /// What the cache should remember of it (None while its first encoding is under way).
    pub(super) record: Option<Outcome>,
    pub(super) queued: bool,
    /// Whether the AVIF backfill is done with what is served (made one, or gave up on it).
    pub(super) avif_done: bool,
}

pub(super) struct FirstScan {
    pub(super) started: Instant,
    pub(super) from_cache: usize,
    pub(super) encoded: usize,
}

pub(super) struct State {
    pub(super) images: PathBuf,
    pub(super) cache: Arc<Cache>,
    pub(super) settings: Settings,
    pub(super) max_age: u32,
    pub(super) rescan_every: Option<Duration>,
    pub(super) files: HashMap<String, Tracked>,
    /// The manifest's records, by name, until the first scan has used them.
    pub(super) known: HashMap<String, Record>,
    pub(super) jobs: Sender<Job>,
    pub(super) queued: usize,
    /// The AVIF backfill: where it takes jobs (None when it is off), the names waiting for it in
    /// order, whether it is encoding one now, and when it last said how far it has got.
    pub(super) avif_jobs: Option<Sender<backfill::Job>>,
    pub(super) avif_waiting: VecDeque<String>,
    pub(super) avif_busy: bool,
    pub(super) avif_logged: Instant,
    /// Until the first scan is complete: when it started, and where its images came from.
    pub(super) first_scan: Option<FirstScan>,
    /// What the directory watch says about files being written.
    pub(super) watch: Watch,
    pub(super) rescan_at: Option<Instant>,
    /// The first scan waits until the object-store mirror has copied the bucket (`Trigger::Store`).
    pub(super) held: bool,
    /// What can be served changed since the last snapshot.
    pub(super) changed: bool,
    pub(super) last_publish: Option<Instant>,
    /// Records changed since the manifest was last saved.
    pub(super) unsaved: bool,
    pub(super) last_save: Instant,
    pub(super) subdirs: usize,
    pub(super) warned_not_utf8: HashSet<std::ffi::OsString>,
    pub(super) published: &'static Published,
    pub(super) registry: &'static Registry,
    pub(super) stats: &'static LibraryStats,
}

impl State {
    /// State for a library on `images`, before its first scan, with the manifest's records `known`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        images: PathBuf,
        cache: Arc<Cache>,
        settings: Settings,
        max_age: u32,
        rescan_every: Option<Duration>,
        held: bool,
        known: Vec<Record>,
        jobs: Sender<Job>,
        avif_jobs: Option<Sender<backfill::Job>>,
        published: &'static Published,
        registry: &'static Registry,
        stats: &'static LibraryStats,
    ) -> State {
        State {
            images,
            cache,
            settings,
            max_age,
            rescan_every,
            files: HashMap::new(),
            known: known.into_iter().map(|r| (r.name.clone(), r)).collect(),
            jobs,
            queued: 0,
            avif_jobs,
            avif_waiting: VecDeque::new(),
            avif_busy: false,
            avif_logged: Instant::now(),
            first_scan: Some(FirstScan { started: Instant::now(), from_cache: 0, encoded: 0 }),
            watch: Watch::default(),
            rescan_at: Some(Instant::now()),
            held,
            changed: false,
            last_publish: None,
            unsaved: false,
            last_save: Instant::now(),
            subdirs: 0,
            warned_not_utf8: HashSet::new(),
            published,
            registry,
            stats,
        }
    }

    /// Files whose last encoding failed.
    pub(super) fn failed(&self) -> usize {
        self.files.values().filter(|t| matches!(t.record, Some(Outcome::Failed { .. }))).count()
    }

    /// The images being served now.
    pub(super) fn serving(&self) -> Vec<Arc<Image>> {
        self.files.values().filter_map(|t| Some(t.serving.as_ref()?.0.clone())).collect()
    }

    /// When the next snapshot should go out: None while nothing changed, `now` for the first.
    pub(super) fn publish_due(&self, now: Instant, every: Duration) -> Option<Instant> {
        self.changed.then(|| self.last_publish.map_or(now, |at| at + every))
    }
}
