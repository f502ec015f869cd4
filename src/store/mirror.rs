//! The mirror: one thread that keeps a directory of the node's cache equal to the bucket's
//! originals, so that the library follows a bucket exactly as it follows a local directory
//! (inotify on the mirror, stamps, renames, the manifest across restarts) and a request never
//! waits for the store.
//!
//! It lists the bucket at start and then every `poll` (and at once when a write route of this
//! node changed the bucket, or another node announced that it did), copies what is new or changed
//! (by size and modification time, which the copy takes from the listing) through a temporary
//! dot-name renamed into place, and removes what the bucket no longer holds. Only a complete
//! listing removes anything. An original over the library's file size limit is not copied.
//!
//! While the store does not answer, the mirror keeps what it has and tries again after 1 s,
//! doubling to 30 s; the library's first scan waits for the first listing, or for the first
//! failure, after which the node serves the mirror left by its last run.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::announce::Announcer;
use super::{Bucket, Failure, Object};
use crate::library::scan::{Shown, UPLOAD_TEMP_PREFIX};
use crate::library::{Rescanner, Trigger};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Why the mirror should list the bucket now.
pub(crate) enum Nudge {
    /// A write route of this node changed the bucket: list, then tell the other nodes.
    Wrote,
    /// Another node changed the bucket.
    Announced,
    Stop,
}

/// Tells the mirror that the bucket changed.
#[derive(Clone)]
pub(crate) struct Nudger(Sender<Nudge>);

impl Nudger {
    pub(crate) fn wrote(&self) {
        let _ = self.0.send(Nudge::Wrote);
    }

    pub(crate) fn announced(&self) {
        let _ = self.0.send(Nudge::Announced);
    }
}

/// The running mirror thread.
pub(crate) struct Mirror {
    nudges: Sender<Nudge>,
    thread: JoinHandle<()>,
}

/// What the mirror needs to know.
pub(crate) struct Options {
    pub(crate) dir: PathBuf,
    pub(crate) poll: Duration,
    pub(crate) max_file_bytes: u64,
}

impl Mirror {
    /// Starts following `bucket` into `options.dir`; `library` is asked to scan once the first
    /// listing is copied (or has failed).
    pub(crate) fn start(
        bucket: Arc<Bucket>,
        options: Options,
        library: Rescanner,
        announcer: Option<Announcer>,
    ) -> anyhow::Result<(Mirror, Nudger)> {
        let (nudges, received) = crossbeam_channel::unbounded();
        let nudger = Nudger(nudges.clone());
        let state = State { bucket, options, warned: HashSet::new(), copies: 0 };
        let thread = std::thread::Builder::new()
            .name("keiko-mirror".into())
            .spawn(move || state.run(received, library, announcer))?;
        Ok((Mirror { nudges, thread }, nudger))
    }

    pub(crate) fn stop(self) {
        let _ = self.nudges.send(Nudge::Stop);
        super::join_briefly(self.thread, "mirror");
    }
}

struct State {
    bucket: Arc<Bucket>,
    options: Options,
    /// Originals that cannot be copied (over the size limit, a name the disk refuses, an object
    /// the store refuses), warned about once each until that changes.
    warned: HashSet<String>,
    /// Makes temporary names unique.
    copies: u64,
}

impl State {
    fn run(mut self, nudges: Receiver<Nudge>, library: Rescanner, mut announcer: Option<Announcer>) {
        let mut first = true;
        let mut retry = FIRST_RETRY;
        let mut announce = false;
        let mut down: Option<Instant> = None;
        loop {
            let wait = match self.sync() {
                Ok(changed) => {
                    if let Some(since) = down.take() {
                        tracing::info!(
                            "{} answers again after {} s",
                            self.bucket.location(),
                            since.elapsed().as_secs()
                        );
                    }
                    if changed > 0 {
                        tracing::debug!("mirrored {changed} change(s) of {}", self.bucket.location());
                    }
                    if std::mem::take(&mut announce) {
                        if let Some(announcer) = &mut announcer {
                            announcer.announce();
                        }
                    }
                    retry = FIRST_RETRY;
                    self.options.poll
                }
                Err(failure) => {
                    if down.is_none() {
                        tracing::warn!(
                            "cannot follow {}: {failure}; serving what this node has, retrying with backoff",
                            self.bucket.location()
                        );
                        down = Some(Instant::now());
                    }
                    let wait = retry;
                    retry = (retry * 2).min(LAST_RETRY);
                    wait
                }
            };
            if std::mem::take(&mut first) {
                library.rescan(Trigger::Store);
            }
            match nudges.recv_timeout(wait) {
                Ok(Nudge::Wrote) => announce = true,
                Ok(Nudge::Announced) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Ok(Nudge::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            // Several nudges at once make one listing.
            for nudge in nudges.try_iter() {
                match nudge {
                    Nudge::Wrote => announce = true,
                    Nudge::Announced => {}
                    Nudge::Stop => return,
                }
            }
        }
    }

    /// Makes the mirror equal to the bucket; returns how many files it copied or removed.
    fn sync(&mut self) -> Result<usize, Failure> {
        let objects = self.bucket.list()?;
        self.bucket.stats.listed(objects.len());
        let mut local = mirrored(&self.options.dir);
        let mut changed = 0;
        for object in &objects {
            let here = local.remove(&object.name);
            if let Some(why) = self.not_copied(object) {
                if self.warned.insert(object.name.clone()) {
                    tracing::warn!("skipping {} of the bucket: {why}; not copied", Shown(&object.name));
                }
                if here.is_some() {
                    changed += usize::from(std::fs::remove_file(self.options.dir.join(&object.name)).is_ok());
                }
                continue;
            }
            if here == Some((object.size, object.modified)) {
                self.warned.remove(&object.name);
                continue;
            }
            changed += usize::from(self.copy(object)?);
        }
        // What the bucket no longer holds.
        for name in local.keys() {
            changed += usize::from(std::fs::remove_file(self.options.dir.join(name)).is_ok());
        }
        Ok(changed)
    }

    /// Why an original is not copied at all, if it is not.
    fn not_copied(&self, object: &Object) -> Option<String> {
        if object.name.len() > 255 {
            Some("its name is longer than a file name may be (255 bytes)".into())
        } else if object.size > self.options.max_file_bytes {
            let limit = self.options.max_file_bytes;
            Some(format!("{} bytes, over the limit of {limit} (KEIKO_MAX_FILE_BYTES)", object.size))
        } else {
            None
        }
    }

    /// Copies one original into place; false when it went from the bucket meanwhile or the
    /// local disk refused (logged; the next listing tries again).
    fn copy(&mut self, object: &Object) -> Result<bool, Failure> {
        self.copies += 1;
        let temp = self.options.dir.join(format!(
            "{UPLOAD_TEMP_PREFIX}mirror-{}-{}",
            std::process::id(),
            self.copies
        ));
        let copied = self.bucket.download(&object.name, &temp, self.options.max_file_bytes);
        let placed = match copied {
            Ok(Some(bytes)) => {
                self.bucket.stats.downloaded(bytes);
                place(&temp, &self.options.dir.join(&object.name), object.modified)
            }
            Ok(None) => Ok(false),
            Err(Failure::Refused(why)) => Err(std::io::Error::other(why)),
            Err(unreachable) => {
                let _ = std::fs::remove_file(&temp);
                return Err(unreachable);
            }
        };
        match placed {
            Ok(placed) => {
                self.warned.remove(&object.name);
                Ok(placed)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                if self.warned.insert(object.name.clone()) {
                    tracing::warn!(
                        "cannot copy {} from the bucket: {e}; trying again at each listing",
                        Shown(&object.name)
                    );
                }
                Ok(false)
            }
        }
    }
}

/// Gives the copy the listing's modification time (what the next listing is compared with)
/// and renames it over `path`.
fn place(temp: &Path, path: &Path, modified: SystemTime) -> std::io::Result<bool> {
    let file = std::fs::File::options().write(true).open(temp)?;
    file.set_modified(modified)?;
    drop(file);
    std::fs::rename(temp, path)?;
    Ok(true)
}

/// The mirror's images by name, with their size and modification time.
fn mirrored(dir: &Path) -> HashMap<String, (u64, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            (!name.starts_with('.')).then_some((name, (meta.len(), meta.modified().ok()?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_copy_takes_the_listing_time_so_the_next_listing_finds_it_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(format!("{UPLOAD_TEMP_PREFIX}mirror-1-1"));
        std::fs::write(&temp, b"abc").unwrap();
        let listed = UNIX_EPOCH + Duration::from_millis(1_765_000_000_123);
        assert!(place(&temp, &dir.path().join("a.jpg"), listed).unwrap());
        std::fs::write(dir.path().join(".hidden.jpg"), b"x").unwrap();
        let found = mirrored(dir.path());
        assert_eq!(found.len(), 1, "temporary and hidden files are not the mirror's: {:?}", found.keys());
        assert_eq!(found["a.jpg"], (3, listed));
    }
}
