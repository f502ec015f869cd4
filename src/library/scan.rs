//! What counts as an image of the library, and the cheap change detector that lets a restart skip
//! every file it has seen before.
//!
//! The rules (README, "The image directory"): only the files directly in the directory are served;
//! subdirectories are not entered (counted, and logged once). A name must be UTF-8, must not start
//! with a dot (hidden files, and the temporary names editors and uploaders write before renaming),
//! and must end in a supported extension. A symbolic link is followed: a link to a regular file
//! serves that file under the link's name, a link to a directory counts as a subdirectory.
//!
//! A file's [`Stamp`] (inode, size, modification time in nanoseconds) changes whenever its content
//! is replaced by any usual means (write, truncate, rename over it), so an unchanged stamp means
//! an unchanged file without reading a byte of it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name extensions that are loaded (case-insensitive); every other file is ignored.
/// Also HEIC, HEIF and AVIF in a build without libheif: such a file is then skipped with a warning
/// that says how to build a keiko that reads it, rather than silently.
pub(crate) const EXTENSIONS: [&str; 12] =
    ["jpg", "jpeg", "png", "gif", "webp", "tif", "tiff", "bmp", "jxl", "heic", "heif", "avif"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
        }
    }

    /// How long ago the file was last modified (zero when its time is in the future).
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        let now_ns = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        Duration::from_nanos(now_ns.saturating_sub(self.mtime_ns).max(0) as u64)
    }
}

/// How the temporary files of uploads begin (see `admin`): a dot-name, never served.
pub(crate) const UPLOAD_TEMP_PREFIX: &str = ".keiko-upload-";

/// How long an upload's temporary file must have been left unchanged before a scan removes it:
/// far longer than the moment between its last write and its rename (another node sharing the
/// directory may be writing one), short enough that a crash's leftover soon goes.
const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// A candidate image file of the directory.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub path: PathBuf,
    pub stamp: Stamp,
}

#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<Found>,
    /// Subdirectories (and links to directories), which are not served.
    pub subdirs: usize,
    /// Names that are not UTF-8, which cannot be served or counted.
    pub not_utf8: Vec<OsString>,
    /// Temporary files of uploads that never finished (a crash between write and rename).
    pub leftovers: Vec<PathBuf>,
}

impl Listing {
    /// Removes the [`leftovers`](Listing::leftovers), so that deleted content cannot live on under
    /// a hidden name; returns how many went.
    pub(crate) fn sweep_leftovers(&mut self) -> usize {
        std::mem::take(&mut self.leftovers).iter().filter(|path| std::fs::remove_file(path).is_ok()).count()
    }
}

fn is_upload_temp(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(UPLOAD_TEMP_PREFIX.as_bytes())
}

/// Whether an entry has been left unchanged for `age`. The change time, because a new hard link
/// keeps its file's modification time.
fn unchanged_for(meta: &Metadata, now: SystemTime, age: Duration) -> bool {
    let changed = UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64);
    now.duration_since(changed).is_ok_and(|since| since >= age)
}

/// A file name as a log line may show it: control characters escaped (`\n`, `\u{1b}`), so that a
/// name cannot forge a log line or colour a terminal.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` may be an image of the library by its name alone.
pub(crate) fn is_candidate(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Lists `dir` by the rules above.
pub fn list(dir: &Path) -> std::io::Result<Listing> {
    list_at(dir, SystemTime::now())
}

fn list_at(dir: &Path, now: SystemTime) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(file_type) = entry.file_type() else { continue };
        if is_upload_temp(&entry.file_name()) {
            if !file_type.is_dir()
                && entry.metadata().is_ok_and(|meta| unchanged_for(&meta, now, LEFTOVER_AGE))
            {
                listing.leftovers.push(entry.path());
            }
            continue;
        }
        // Follow links; a broken one, or a file removed since readdir, is simply not there.
        let meta = if file_type.is_symlink() { std::fs::metadata(entry.path()) } else { entry.metadata() };
        let Ok(meta) = meta else { continue };
        if meta.is_dir() {
            listing.subdirs += 1;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if is_candidate(&name) => {
                listing.files.push(Found { path: entry.path(), name, stamp: Stamp::of(&meta) })
            }
            Ok(_) => {}
            Err(raw) => listing.not_utf8.push(raw),
        }
    }
    listing.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_image_files_directly_in_the_directory_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png", "noext", ".a.png.tmp"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        std::fs::write(dir.path().join("sub.png/inner.png"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("b.png"), dir.path().join("link.png")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("sub.png"), dir.path().join("dirlink")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone.png"), dir.path().join("broken.png")).unwrap();

        let listing = list(dir.path()).unwrap();
        let names: Vec<_> = listing.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.JPG", "b.png", "c.webp", "link.png"]);
        assert_eq!(listing.subdirs, 2);
        let (b, link) = (&listing.files[1], &listing.files[3]);
        assert_eq!(b.stamp, link.stamp, "a link serves its target's content");
    }

    #[test]
    fn unfinished_upload_files_are_swept_once_they_are_old() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(format!("{UPLOAD_TEMP_PREFIX}1-0-abc"));
        std::fs::write(&temp, b"deleted content").unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let mut now = list(dir.path()).unwrap();
        assert!(now.leftovers.is_empty(), "one being written may belong to a running upload");
        assert_eq!(now.sweep_leftovers(), 0);
        let mut later =
            list_at(dir.path(), SystemTime::now() + LEFTOVER_AGE + Duration::from_secs(1)).unwrap();
        assert_eq!(later.leftovers, std::slice::from_ref(&temp));
        assert_eq!(later.files.len(), 1, "only a.png is an image");
        assert_eq!(later.sweep_leftovers(), 1);
        assert!(!temp.exists());
    }

    #[test]
    fn names_in_logs_cannot_break_a_line() {
        let shown = Shown("a\nERROR forged\u{1b}[31m.png").to_string();
        assert_eq!(shown, "a\\nERROR forged\\u{1b}[31m.png");
        assert_eq!(Shown("café.png").to_string(), "café.png");
    }

    #[test]
    fn a_rewrite_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        std::fs::write(&path, b"one").unwrap();
        let before = Stamp::of(&std::fs::metadata(&path).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(&path, b"two").unwrap();
        let after = Stamp::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(before, after);
        assert!(after.age(SystemTime::now()) < Duration::from_secs(5));
    }
}
