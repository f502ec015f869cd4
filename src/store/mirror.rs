//! The mirror: one thread that keeps a directory of the node's cache equal to the bucket's
//! originals, so that the library follows a bucket exactly as it follows a local directory
//! (inotify on the mirror, stamps, renames, the manifest across restarts) and a request never
//! waits for the store.
//!
//! It lists the bucket at start and then every `poll` (and at once, but at most every
//! [`LEAST_GAP`], when a write route of this node changed the bucket or another node announced
//! that it did), copies what is new or changed through a temporary dot-name renamed into place,
//! and removes what the bucket no longer holds. Only a complete listing removes anything. A copy
//! keeps the listing's size, modification time and ETag (in the `user.keiko.etag` extended
//! attribute, where the filesystem has them), which the next listing is compared with. An
//! original over the library's file size limit, or whose name cannot be a file name of the
//! directory, is not copied; one that cannot be copied is skipped with one warning, and the
//! others are copied all the same.
//!
//! While the store does not answer, the mirror keeps what it has and tries again after 1 s,
//! doubling to 10 s; the library's first scan waits for the first sync (every original copied),
//! or for the first failure, after which the node serves the mirror left by its last run.

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
const LAST_RETRY: Duration = Duration::from_secs(10);
/// Least time between two listings, however many nudges arrive (any database user may NOTIFY).
const LEAST_GAP: Duration = Duration::from_millis(200);
/// Where a copy keeps its object's ETag.
const ETAG_ATTRIBUTE: &std::ffi::CStr = c"user.keiko.etag";

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
    fn run(mut self, nudges: Receiver<Nudge>, library: Rescanner, announcer: Option<Announcer>) {
        let mut first = true;
        let mut retry = FIRST_RETRY;
        let mut announce = false;
        let mut down: Option<Instant> = None;
        let mut listed_at: Option<Instant> = None;
        loop {
            if let Some(gap) = listed_at.map(|at| LEAST_GAP.saturating_sub(at.elapsed())) {
                std::thread::sleep(gap);
            }
            listed_at = Some(Instant::now());
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
                        if let Some(announcer) = &announcer {
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
            if here.as_ref().is_some_and(|here| here.is(object)) {
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
        if object.name.contains(['/', '\\', '\0']) {
            Some("its name, decoded, holds '/', '\\' or NUL".into())
        } else if object.name.len() > 255 {
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
        let copied = self.bucket.download(object, &temp, self.options.max_file_bytes);
        let placed = match copied {
            Ok(Some(bytes)) => {
                self.bucket.stats.downloaded(bytes);
                place(&temp, &self.options.dir.join(&object.name), object)
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

/// Gives the copy the listing's modification time and ETag (what the next listing is compared
/// with) and renames it over `path`.
fn place(temp: &Path, path: &Path, object: &Object) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::options().write(true).open(temp)?;
    file.set_modified(object.modified)?;
    if let Some(etag) = &object.etag {
        // SAFETY: the name is a C string, the value a live buffer of the length given. A
        // filesystem without extended attributes refuses: size and time are then compared alone.
        unsafe {
            libc::fsetxattr(file.as_raw_fd(), ETAG_ATTRIBUTE.as_ptr(), etag.as_ptr().cast(), etag.len(), 0)
        };
    }
    drop(file);
    std::fs::rename(temp, path)?;
    Ok(true)
}

/// A copy in the mirror, as the listing it came from described its object.
#[derive(Debug, PartialEq, Eq)]
struct Copy {
    size: u64,
    modified: SystemTime,
    etag: Option<String>,
}

impl Copy {
    /// Whether this is a copy of `object` as listed now.
    fn is(&self, object: &Object) -> bool {
        (self.size, self.modified) == (object.size, object.modified)
            && (self.etag.is_none() || self.etag == object.etag)
    }
}

/// The mirror's images by name.
fn mirrored(dir: &Path) -> HashMap<String, Copy> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            let copy =
                Copy { size: meta.len(), modified: meta.modified().ok()?, etag: etag_of(&entry.path()) };
            (!name.starts_with('.')).then_some((name, copy))
        })
        .collect()
}

fn etag_of(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut value = [0u8; 256];
    // SAFETY: both names are C strings; the buffer is live and its length is given.
    let read = unsafe {
        libc::getxattr(path.as_ptr(), ETAG_ATTRIBUTE.as_ptr(), value.as_mut_ptr().cast(), value.len())
    };
    let read = usize::try_from(read).ok()?;
    String::from_utf8(value[..read].to_vec()).ok()
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
        let object = Object {
            key: object_store::path::Path::from("lib/a.jpg"),
            name: "a.jpg".into(),
            size: 3,
            modified: UNIX_EPOCH + Duration::from_millis(1_765_000_000_123),
            etag: Some("\"900150983cd24fb0\"".into()),
        };
        assert!(place(&temp, &dir.path().join("a.jpg"), &object).unwrap());
        std::fs::write(dir.path().join(".hidden.jpg"), b"x").unwrap();
        let found = mirrored(dir.path());
        assert_eq!(found.len(), 1, "temporary and hidden files are not the mirror's: {:?}", found.keys());
        let copy = &found["a.jpg"];
        assert!(copy.is(&object), "{copy:?}");
        assert!(!copy.is(&Object { size: 4, ..object.clone() }));
        // Rewritten with the same size in the same millisecond: only the ETag tells.
        let rewritten = Object { etag: Some("\"other\"".into()), ..object.clone() };
        if copy.etag.is_some() {
            assert!(!copy.is(&rewritten));
        }
    }
}
