//! The reconciler: the library thread's loop. It compares what the directory holds now with what
//! it knew (by [`Stamp`], and at startup by the cache's manifest), sends new and changed files to
//! the encode pool, withdraws removed ones at once, follows renames without encoding again, and
//! publishes a new catalogue snapshot when what can be served changed.
//!
//! A replaced file keeps serving its old encoding until the new one is ready; a file that failed
//! stays failed until it changes. A file that the watch reports as still being written is left
//! alone until it is closed (or renamed into place); without watch events a new file is taken once
//! its modification time is [`QUIET`] old. Snapshots go out at most every [`PUBLISH_EVERY`], and
//! the first scan's completion is logged once and makes the snapshot ready (`/readyz`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver};

use super::backfill;
use super::cache::{self, Outcome, Record};
use super::pool::{self, Done, Job};
use super::scan::{self, Found, Shown, Stamp};
use super::state::{State, Tracked};
use super::watch::Seen;
use super::{Control, Trigger};
use crate::catalog::{Catalog, Image};

/// Quiet time after a directory event before rescanning, so a burst of events makes one scan.
const SETTLE: Duration = Duration::from_millis(100);
/// Age a new file's modification time must reach when no close or rename event vouches for it.
const QUIET: Duration = Duration::from_secs(1);
/// A file reported as being written but left untouched this long is taken anyway (its close
/// event may have been lost when inotify's queue overflowed).
const STALE_WRITE: Duration = Duration::from_secs(30);
/// Least time between two published snapshots while images keep becoming ready.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Time between two log lines saying how far the AVIF backfill has got.
const AVIF_LOG_EVERY: Duration = Duration::from_secs(30);
/// Longest time the manifest lags behind while a long encode runs.
const SAVE_EVERY: Duration = Duration::from_secs(5);

impl State {
    pub(super) fn run(
        mut self,
        control: Receiver<Control>,
        events: Receiver<notify::Result<notify::Event>>,
        done: Receiver<Done>,
        avif_done: Receiver<backfill::Done>,
    ) {
        let mut next_rescan = self.rescan_every.map(|every| Instant::now() + every);
        loop {
            // While held, only a message wakes the thread: no scan may start yet.
            let scans = if self.held { [None, None] } else { [self.rescan_at, next_rescan] };
            let wake =
                scans.into_iter().chain([self.publish_due(Instant::now(), PUBLISH_EVERY)]).flatten().min();
            let timeout =
                wake.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            select! {
                recv(control) -> message => match message {
                    Ok(Control::Rescan(trigger)) => {
                        match trigger {
                            Trigger::Signal => tracing::info!("rescanning {} (SIGHUP)", self.images.display()),
                            Trigger::Write => tracing::debug!("rescanning {} (a write route changed it)", self.images.display()),
                            Trigger::Store => self.held = false,
                        }
                        self.rescan_at = Some(Instant::now());
                    }
                    Ok(Control::Stop) | Err(_) => break,
                },
                recv(events) -> event => {
                    if let Ok(event) = event {
                        self.on_event(event);
                    }
                }
                recv(done) -> finished => {
                    if let Ok(finished) = finished {
                        self.on_done(finished);
                    }
                }
                recv(avif_done) -> finished => {
                    if let Ok(finished) = finished {
                        self.on_avif(finished);
                    }
                }
                default(timeout) => {}
            }
            let now = Instant::now();
            let due = self.rescan_at.is_some_and(|at| at <= now) || next_rescan.is_some_and(|at| at <= now);
            if due && !self.held {
                self.rescan_at = None;
                next_rescan = self.rescan_every.map(|every| now + every);
                self.scan();
            }
            self.after_changes(now);
        }
        if self.unsaved {
            self.save_manifest();
        }
    }

    fn on_event(&mut self, event: notify::Result<notify::Event>) {
        if self.watch.note(event) == Seen::Change {
            self.rescan_soon();
        }
    }

    fn rescan_soon(&mut self) {
        let at = Instant::now() + SETTLE;
        self.rescan_at = Some(self.rescan_at.map_or(at, |t| t.min(at)));
    }

    /// Compares the directory with what is known: queues new and changed files, withdraws
    /// removed ones.
    fn scan(&mut self) {
        let mut listing = match scan::list(&self.images) {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(
                    "cannot read image directory {}: {e}; serving what was there",
                    self.images.display()
                );
                return;
            }
        };
        self.note_skipped(&listing);
        match listing.sweep_leftovers() {
            0 => {}
            n => tracing::info!("removed {n} temporary file(s) of uploads that never finished"),
        }
        let now = SystemTime::now();
        let mut present = HashSet::with_capacity(listing.files.len());
        let mut candidates = Vec::new();
        for found in listing.files {
            present.insert(found.name.clone());
            if self.files.get(&found.name).is_some_and(|t| t.stamp == found.stamp) {
                continue;
            }
            let vouched = self.watch.vouched(&found.name);
            let age = found.stamp.age(now);
            if self.watch.is_writing(&found.name) {
                if age < STALE_WRITE {
                    continue;
                }
                self.watch.forget_writing(&found.name);
            }
            if !vouched && age < QUIET && self.first_scan.is_none() {
                self.rescan_at = Some(Instant::now() + (QUIET - age));
                continue;
            }
            candidates.push(found);
        }
        self.watch.scanned();
        // Removed files, by stamp: a rename shows up as one of these plus a new name.
        let removed: Vec<String> = self.files.keys().filter(|n| !present.contains(*n)).cloned().collect();
        let mut moved = HashMap::new();
        for name in removed {
            if let Some(gone) = self.files.remove(&name) {
                self.changed |= gone.serving.is_some();
                self.queued -= usize::from(gone.queued);
                self.unsaved = true;
                tracing::debug!("{} was removed", Shown(&name));
                if !gone.queued {
                    moved.insert(gone.stamp, gone);
                }
            }
        }
        // With a fleet's shared encodings, each node takes new images in an order of its own, so
        // that nodes starting together mostly encode different images and fetch the others'.
        if self.cache.is_shared() {
            fastrand::shuffle(&mut candidates);
        }
        for found in candidates {
            match moved.remove(&found.stamp) {
                Some(renamed) => self.renamed(found, renamed),
                None => self.consider(found),
            }
        }
        self.known.clear();
        if self.first_scan.is_some() && self.queued == 0 {
            self.first_scan_complete();
        }
    }

    fn note_skipped(&mut self, listing: &scan::Listing) {
        if listing.subdirs != self.subdirs {
            if listing.subdirs > 0 {
                tracing::info!(
                    "{} holds {} subdirectories; they are not served (only files directly in it are)",
                    self.images.display(),
                    listing.subdirs
                );
            }
            self.subdirs = listing.subdirs;
        }
        for raw in &listing.not_utf8 {
            if self.warned_not_utf8.insert(raw.clone()) {
                tracing::warn!("skipping {}: its file name is not UTF-8", Shown(&raw.to_string_lossy()));
            }
        }
    }

    /// A file that was renamed: the same content under a new name keeps its encoding (and gets the
    /// new name's hit identity).
    fn renamed(&mut self, found: Found, old: Tracked) {
        let serving = old.serving.map(|(image, key)| {
            let name = self.registry.intern(&found.name);
            (Arc::new(image.renamed(name, self.max_age)), key)
        });
        self.changed |= serving.is_some();
        self.files.insert(
            found.name,
            Tracked {
                stamp: found.stamp,
                serving,
                record: old.record,
                queued: false,
                avif_done: old.avif_done,
            },
        );
    }

    /// A new or changed file: serve it from the cache if its encoding is there, else queue it.
    fn consider(&mut self, found: Found) {
        let known = self.known.remove(&found.name).filter(|r| r.stamp == found.stamp);
        let tracked = self.files.entry(found.name.clone()).or_insert(Tracked {
            stamp: found.stamp,
            serving: None,
            record: None,
            queued: false,
            avif_done: false,
        });
        tracked.stamp = found.stamp;
        match known.map(|r| r.outcome) {
            Some(Outcome::Encoded { hash, format, key: served, written }) => {
                let wanted = blake3::Hash::from_hex(&hash)
                    .ok()
                    .map(|h| cache::key(&h, &self.settings.for_source(format)));
                if let Some(key) = wanted.filter(|k| *k == served) {
                    let unstamped = written.is_none_or(|w| w.digest.is_none());
                    if let Some((body, written)) = self.cache.get(&key, written) {
                        self.stats.cache_hit();
                        self.unsaved |= unstamped;
                        let image = Arc::new(Image::new(
                            self.registry.intern(&found.name),
                            Arc::new(body),
                            format,
                            self.max_age,
                        ));
                        tracked.serving = Some((image, key.clone()));
                        tracked.record = Some(Outcome::Encoded { hash, format, key, written: Some(written) });
                        tracked.avif_done = false;
                        self.changed = true;
                        if let Some(first) = &mut self.first_scan {
                            first.from_cache += 1;
                        }
                        self.want_avif(found.name);
                        return;
                    }
                } else if let Some((body, _)) = self.cache.get(&served, written) {
                    // Encoded with other settings: serve that until the new encoding is ready.
                    let name = self.registry.intern(&found.name);
                    let image = Arc::new(Image::new(name, Arc::new(body), format, self.max_age));
                    tracked.serving = Some((image, served));
                    self.changed = true;
                }
            }
            Some(Outcome::Failed { reason }) => {
                tracing::warn!("skipping {}: {reason} (unchanged since it failed)", Shown(&found.name));
                tracked.record = Some(Outcome::Failed { reason });
                return;
            }
            None => {}
        }
        if !tracked.queued {
            tracked.queued = true;
            self.queued += 1;
        }
        let _ = self.jobs.send(Job { name: found.name, path: found.path, stamp: found.stamp });
    }

    fn on_done(&mut self, done: Done) {
        let Some(tracked) = self.files.get_mut(&done.name).filter(|t| t.queued && t.stamp == done.stamp)
        else {
            // Removed or changed again since: a newer job (if any) decides.
            return;
        };
        tracked.queued = false;
        self.queued -= 1;
        self.unsaved = true;
        match done.result {
            pool::Result::Ready { body, outcome } => {
                let Outcome::Encoded { key, format, .. } = &outcome else {
                    unreachable!("ready means encoded")
                };
                let image =
                    Arc::new(Image::new(self.registry.intern(&done.name), body, *format, self.max_age));
                tracked.serving = Some((image, key.clone()));
                tracked.record = Some(outcome);
                tracked.avif_done = false;
                self.changed = true;
                if let Some(first) = &mut self.first_scan {
                    first.encoded += 1;
                }
                self.want_avif(done.name.clone());
            }
            pool::Result::Failed(reason) => {
                tracing::warn!("skipping {}: {reason}", Shown(&done.name));
                self.changed |= tracked.serving.take().is_some();
                tracked.record = Some(Outcome::Failed { reason });
            }
            pool::Result::Unsettled => {
                tracked.stamp = Stamp::default();
                self.rescan_soon();
            }
        }
        if self.first_scan.is_some() && self.queued == 0 {
            self.first_scan_complete();
        }
    }

    /// Puts `name`, just made servable, in line for the AVIF backfill, when there is one and the
    /// image takes an AVIF: its WebP is lossy (a lossless setting asks for exact pixels) and a
    /// still (an animation stays an animated WebP).
    fn want_avif(&mut self, name: String) {
        let Some(t) = self.files.get_mut(&name).filter(|_| self.avif_jobs.is_some()) else { return };
        let takes_avif = match (&t.record, &t.serving) {
            (Some(Outcome::Encoded { format, .. }), Some((image, _))) => {
                self.settings.for_source(*format).quality.is_some() && image.webp.body.frames() == 1
            }
            _ => false,
        };
        if takes_avif {
            self.avif_waiting.push_back(name);
        } else {
            t.avif_done = true;
        }
    }

    /// Hands the backfill its next image, if it is idle and no WebP encode is waiting (WebP first).
    fn next_avif(&mut self) {
        let Some(jobs) = &self.avif_jobs else { return };
        if self.avif_busy || self.queued > 0 {
            return;
        }
        while let Some(name) = self.avif_waiting.pop_front() {
            let Some(t) = self.files.get_mut(&name) else { continue };
            let (Some(Outcome::Encoded { hash, format, .. }), Some(_)) = (&t.record, &t.serving) else {
                continue;
            };
            if t.avif_done || t.queued {
                continue;
            }
            let Ok(hash) = blake3::Hash::from_hex(hash) else {
                t.avif_done = true;
                continue;
            };
            let job = backfill::Job {
                path: self.images.join(&name),
                name,
                stamp: t.stamp,
                hash,
                format: *format,
                encoding: self.settings.for_source(*format),
            };
            self.avif_busy = jobs.send(job).is_ok();
            return;
        }
    }

    fn on_avif(&mut self, done: backfill::Done) {
        self.avif_busy = false;
        let Some(t) = self.files.get_mut(&done.name).filter(|t| t.stamp == done.stamp && !t.queued) else {
            return;
        };
        t.avif_done = true;
        match done.result {
            backfill::Result::Ready(body) => {
                if let Some((image, key)) = &t.serving {
                    t.serving = Some((Arc::new(image.with_avif(body, self.max_age)), key.clone()));
                    self.changed = true;
                }
            }
            backfill::Result::Skipped(why) => {
                tracing::warn!("{}: no AVIF encoding: {why}", Shown(&done.name))
            }
            backfill::Result::Unsettled => {}
        }
        let with =
            self.files.values().filter(|t| t.serving.as_ref().is_some_and(|(i, _)| i.avif.is_some())).count();
        // Also when nothing is published (an image skipped): the gauges must not keep it waiting.
        self.stats.set_avif(with, self.avif_waiting.len());
        let now = Instant::now();
        let finished = self.avif_waiting.is_empty();
        if finished || now >= self.avif_logged + AVIF_LOG_EVERY {
            self.avif_logged = now;
            match finished {
                true => tracing::info!("AVIF backfill: done, {with} images have an AVIF encoding"),
                false => tracing::info!(
                    "AVIF backfill: {with} images have an AVIF encoding, {} waiting",
                    self.avif_waiting.len()
                ),
            }
        }
    }

    fn first_scan_complete(&mut self) {
        let Some(first) = self.first_scan.take() else { return };
        let failed = self.failed();
        let ready = self.files.values().filter(|t| t.serving.is_some()).count();
        if ready == 0 {
            tracing::warn!(
                "no usable image in {} yet (looked for {} files); /readyz and GET / answer 503 until one arrives",
                self.images.display(),
                scan::EXTENSIONS.join(", ")
            );
        }
        tracing::info!(
            "library complete: {ready} images ({} from the cache, {} encoded), {failed} failed, in {} ms",
            first.from_cache,
            first.encoded,
            first.started.elapsed().as_millis()
        );
        self.changed = true;
        self.publish_now();
        release_memory();
    }

    fn after_changes(&mut self, now: Instant) {
        self.next_avif();
        if self.publish_due(now, PUBLISH_EVERY).is_some_and(|at| at <= now) {
            self.publish_now();
        }
        let idle = self.queued == 0 && self.first_scan.is_none();
        if self.unsaved && (idle || now >= self.last_save + SAVE_EVERY) {
            self.save_manifest();
            if idle {
                self.collect_garbage();
                release_memory();
            }
        }
    }

    fn publish_now(&mut self) {
        let catalog = Catalog::new(self.serving(), self.first_scan.is_none());
        self.stats.set_library(
            self.files.len(),
            catalog.len(),
            self.failed(),
            self.queued,
            catalog.body_bytes(),
        );
        self.stats.set_avif(catalog.with_avif(), self.avif_waiting.len() + usize::from(self.avif_busy));
        self.published.publish(catalog);
        self.changed = false;
        self.last_publish = Some(Instant::now());
    }

    fn save_manifest(&mut self) {
        let records = self
            .files
            .iter()
            .filter_map(|(name, t)| {
                Some(Record { name: name.clone(), stamp: t.stamp, outcome: t.record.clone()? })
            })
            .collect();
        self.cache.save_manifest(&self.images, records);
        self.unsaved = false;
        self.last_save = Instant::now();
    }

    /// Removes cache files that nothing serves or will serve (old settings, removed sources).
    fn collect_garbage(&self) {
        let mut keep: HashSet<&str> = HashSet::new();
        for t in self.files.values() {
            if let Some((_, key)) = &t.serving {
                keep.insert(key);
            }
            if let Some(Outcome::Encoded { key, .. }) = &t.record {
                keep.insert(key);
            }
        }
        // The AVIF encodings of what is recorded, made or still to come.
        let avif_keys: Vec<String> = self
            .files
            .values()
            .filter_map(|t| match &t.record {
                Some(Outcome::Encoded { hash, format, .. }) => {
                    let hash = blake3::Hash::from_hex(hash).ok()?;
                    Some(backfill::key(&hash, &self.settings.for_source(*format)))
                }
                _ => None,
            })
            .collect();
        keep.extend(avif_keys.iter().map(String::as_str));
        let freed = self.cache.collect_garbage(&keep);
        if freed > 0 {
            tracing::info!("removed {freed} bytes of encodings nothing serves from the cache");
        }
    }
}

/// Decoding and encoding went through memory that neither mimalloc (Rust's side) nor glibc's
/// malloc (libwebp's) hands back to the OS by itself; the server keeps none of it.
fn release_memory() {
    // SAFETY: both only release free memory.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
}
