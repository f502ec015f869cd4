//! The directory watch: an inotify subscription on the image directory (through `notify`) and
//! what its events say about each file, so that the reconciler neither takes a file that is still
//! being written nor waits for one that was closed or renamed into place.
//!
//! Events only ever lead to a rescan soon after; the directory listing stays the truth. Where
//! there is no inotify (network filesystems, exhausted watches) the periodic rescan and a quiet
//! time on modification times stand in for it.

use std::collections::HashSet;
use std::path::Path;

use crossbeam_channel::Sender;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use super::scan;

/// What the events said since the last scan.
#[derive(Default)]
pub(super) struct Watch {
    /// Names inotify reports written to and not yet closed.
    writing: HashSet<String>,
    /// Names closed after writing, or renamed into place, since the last scan.
    closed: HashSet<String>,
}

/// What an event asks of the reconciler.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Something may have changed: scan soon.
    Change,
    /// Nothing to look at (keiko's own reads, a write still under way).
    Nothing,
}

impl Watch {
    /// Takes note of one event.
    pub(super) fn note(&mut self, event: notify::Result<notify::Event>) -> Seen {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::debug!("directory watch error: {e}");
                return Seen::Change;
            }
        };
        let names =
            event.paths.iter().filter_map(|p| p.file_name()?.to_str()).filter(|n| scan::is_candidate(n));
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for name in names {
                    self.writing.remove(name);
                    self.closed.insert(name.to_string());
                }
            }
            // keiko's own reads open and close files too: nothing changed.
            EventKind::Access(_) => return Seen::Nothing,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                for name in names {
                    self.writing.insert(name.to_string());
                }
                return Seen::Nothing;
            }
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
                for name in names {
                    self.writing.remove(name);
                    self.closed.insert(name.to_string());
                }
            }
            _ => {}
        }
        Seen::Change
    }

    /// Whether `name` is being written (opened for writing and not closed yet).
    pub(super) fn is_writing(&self, name: &str) -> bool {
        self.writing.contains(name)
    }

    /// Gives up waiting for `name`'s close (its event may have been lost).
    pub(super) fn forget_writing(&mut self, name: &str) {
        self.writing.remove(name);
    }

    /// Whether an event vouched that `name` is whole (closed after writing, or renamed into place).
    pub(super) fn vouched(&self, name: &str) -> bool {
        self.closed.contains(name)
    }

    /// A scan has looked at every vouched name.
    pub(super) fn scanned(&mut self) {
        self.closed.clear();
    }
}

/// An inotify watch on `dir` feeding `events`, or None (with a warning) where there is none.
pub(super) fn start(
    dir: &Path,
    events: Sender<notify::Result<notify::Event>>,
) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event| {
        let _ = events.send(event);
    })
    .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch {} for changes ({e}); relying on the periodic rescan (--rescan-secs)",
                dir.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RemoveKind};

    fn event(kind: EventKind, name: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(Path::new("/images").join(name)))
    }

    #[test]
    fn a_file_is_vouched_for_once_it_is_closed_and_not_while_it_is_written() {
        let mut watch = Watch::default();
        let write = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Content));
        assert_eq!(watch.note(event(write, "a.png")), Seen::Nothing);
        assert!(watch.is_writing("a.png") && !watch.vouched("a.png"));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(watch.note(event(close, "a.png")), Seen::Change);
        assert!(!watch.is_writing("a.png") && watch.vouched("a.png"));
        watch.scanned();
        assert!(!watch.vouched("a.png"));
        assert_eq!(watch.note(event(EventKind::Remove(RemoveKind::File), "a.png")), Seen::Change);
        assert_eq!(watch.note(event(EventKind::Create(CreateKind::File), "notes.txt")), Seen::Change);
        assert!(!watch.is_writing("notes.txt"), "only image names are followed");
        assert_eq!(watch.note(event(EventKind::Access(AccessKind::Read), "a.png")), Seen::Nothing);
    }
}
