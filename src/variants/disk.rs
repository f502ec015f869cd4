//! Renditions on disk (`<cache dir>/variants/<key>.<ext>`), so that a restart does not render
//! again what it rendered before, within a byte budget.
//!
//! Files are written under a temporary dot-name and renamed into place, so a crash never leaves
//! a half file under a key; a file read back must still pass the same whole-file check a fresh
//! render does. Any URL can ask for a new rendition, so the directory must not grow without end:
//! when a write takes it past the budget, the files least recently used (by modification time,
//! which a read refreshes) are removed until it is back under nine tenths of it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

pub(crate) struct Disk {
    dir: PathBuf,
    budget: u64,
    used: AtomicU64,
    next_temp: AtomicU64,
    /// Held while old files are removed (one sweep at a time).
    sweep: Mutex<()>,
}

impl Disk {
    /// Opens (creating it if needed) `dir`; None, with one warning, when it cannot be written.
    pub(crate) fn open(dir: &Path, budget: u64) -> Option<Disk> {
        let disk = Disk {
            dir: dir.to_path_buf(),
            budget,
            used: AtomicU64::new(0),
            next_temp: AtomicU64::new(0),
            sweep: Mutex::new(()),
        };
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| disk.write(".keiko-write-test", b"ok")) {
            tracing::warn!("cannot write renditions to {} ({e}): keeping them in memory only", dir.display());
            return None;
        }
        let _ = std::fs::remove_file(dir.join(".keiko-write-test"));
        let mut used = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
            } else {
                used += entry.metadata().map_or(0, |m| m.len());
            }
        }
        disk.used.store(used, Ordering::Relaxed);
        Some(disk)
    }

    /// The file stored under `name`, if there is one that `whole` accepts (else it is removed).
    pub(crate) fn get(&self, name: &str, whole: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        if !whole(&bytes) {
            tracing::warn!("discarding damaged rendition {}", path.display());
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Marks it as recently used for the sweep.
        let _ = File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        Some(bytes)
    }

    /// Stores `bytes` under `name`; a failure is logged and otherwise ignored (the rendition is
    /// still served from memory).
    pub(crate) fn put(&self, name: &str, bytes: &[u8]) {
        if let Err(e) = self.write(name, bytes) {
            tracing::warn!("cannot store rendition {name} in {}: {e}", self.dir.display());
            return;
        }
        let used = self.used.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if used > self.budget {
            self.remove_least_recently_used();
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = File::create(&temp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| std::fs::rename(&temp, self.dir.join(name)));
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    fn remove_least_recently_used(&self) {
        let Ok(_sweeping) = self.sweep.try_lock() else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        files.sort_unstable();
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        let target = self.budget / 10 * 9;
        for (_, len, path) in files {
            if used <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                used -= len;
            }
        }
        self.used.store(used, Ordering::Relaxed);
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_back_and_damaged_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1 << 20).unwrap();
        disk.put("a.txt", b"hello");
        assert_eq!(disk.get("a.txt", |b| b == b"hello").as_deref(), Some(&b"hello"[..]));
        assert_eq!(disk.get("a.txt", |_| false), None);
        assert!(!dir.path().join("a.txt").exists(), "a damaged file is removed");
        assert_eq!(disk.get("missing.txt", |_| true), None);
    }

    #[test]
    fn the_budget_is_kept_by_removing_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1000).unwrap();
        for i in 0..4 {
            if i == 3 {
                assert!(disk.get("0.bin", |_| true).is_some(), "read: now the most recent");
            }
            disk.put(&format!("{i}.bin"), &[0; 300]);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(disk.used() <= 900, "{}", disk.used());
        assert!(dir.path().join("0.bin").exists(), "recently read, so kept");
        assert!(dir.path().join("3.bin").exists(), "just written, so kept");
        assert!(!dir.path().join("1.bin").exists(), "least recently used, so removed");
        let reopened = Disk::open(dir.path(), 1000).unwrap();
        assert_eq!(reopened.used(), disk.used());
    }
}
