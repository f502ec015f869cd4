//! Which file of the image directory holds given content, by SHA-256: what `GET /images?sha256=`
//! answers and what lets an identical upload under another name become a hard link instead of a
//! second copy.
//!
//! Kept per file name with the file's stamp, and brought up to date on each use by listing the
//! directory and hashing only the files whose stamp changed (all of them, once, on first use).
//! Files are hashed as a stream, in a fixed buffer, and files over the library's size limit
//! (`--max-file-bytes`, which it would never serve) are not hashed at all: a huge file in the
//! directory costs no memory.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::library::scan::{self, Stamp};

pub(crate) type Sha256Digest = [u8; 32];

pub(crate) struct ContentIndex {
    files: Mutex<HashMap<String, (Stamp, Sha256Digest)>>,
    max_file_bytes: u64,
}

pub(crate) fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256::digest(bytes).into()
}

impl ContentIndex {
    pub(crate) fn new(max_file_bytes: u64) -> ContentIndex {
        ContentIndex { files: Mutex::default(), max_file_bytes }
    }

    /// A file of `dir` whose content has this digest, if any (the first by name). Blocking:
    /// lists and maybe reads.
    pub(crate) fn find(&self, dir: &Path, digest: &Sha256Digest) -> io::Result<Option<String>> {
        Ok(self.matches(dir, digest)?.into_iter().next())
    }

    /// Like [`find`](Self::find), but only a regular file, never a symlink: what an upload may be
    /// hard-linked to (a link to a symlink would serve whatever it points at, inside the
    /// directory or not).
    pub(crate) fn find_regular(&self, dir: &Path, digest: &Sha256Digest) -> io::Result<Option<String>> {
        let matches = self.matches(dir, digest)?;
        Ok(matches
            .into_iter()
            .find(|name| std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_file())))
    }

    /// The names of the files of `dir` whose content has this digest, sorted.
    fn matches(&self, dir: &Path, digest: &Sha256Digest) -> io::Result<Vec<String>> {
        let listing = scan::list(dir)?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.retain(|name, _| listing.files.iter().any(|f| &f.name == name));
        for found in &listing.files {
            if files.get(&found.name).is_some_and(|(stamp, _)| *stamp == found.stamp) {
                continue;
            }
            // A file removed (or grown past the limit) since the listing is simply not indexed.
            match hash_file(&found.path, self.max_file_bytes) {
                Ok(Some(hashed)) => files.insert(found.name.clone(), (found.stamp, hashed)),
                _ => files.remove(&found.name),
            };
        }
        let mut matches: Vec<String> =
            files.iter().filter(|(_, (_, d))| d == digest).map(|(n, _)| n.clone()).collect();
        matches.sort();
        Ok(matches)
    }
}

/// The SHA-256 of a file's content, read as a stream; None when it holds more than `max_bytes`.
fn hash_file(path: &Path, max_bytes: u64) -> io::Result<Option<Sha256Digest>> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > max_bytes {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    // A file that grows while it is read is cut at the limit, and then not indexed.
    let read = io::copy(&mut io::Read::take(file, max_bytes + 1), &mut hasher)?;
    Ok((read <= max_bytes).then(|| hasher.finalize().into()))
}

/// A digest from its 64 hex digits.
pub(crate) fn parse_hex(hex: &[u8]) -> Option<Sha256Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        digest[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}

pub(crate) fn to_hex(digest: &Sha256Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_by_content_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"one").unwrap();
        std::fs::write(dir.path().join("b.png"), b"two").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"one").unwrap();
        let index = ContentIndex::new(1 << 20);
        assert_eq!(index.find(dir.path(), &sha256(b"one")).unwrap().as_deref(), Some("a.png"));
        assert_eq!(index.find(dir.path(), &sha256(b"three")).unwrap(), None);
        std::fs::write(dir.path().join("b.png"), b"three!").unwrap();
        assert_eq!(index.find(dir.path(), &sha256(b"three!")).unwrap().as_deref(), Some("b.png"));
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        assert_eq!(index.find(dir.path(), &sha256(b"one")).unwrap(), None);
    }

    #[test]
    fn files_over_the_size_limit_are_not_indexed_and_symlinks_are_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.png"), vec![7u8; 101]).unwrap();
        std::fs::write(dir.path().join("b.png"), b"small").unwrap();
        std::os::unix::fs::symlink(dir.path().join("b.png"), dir.path().join("a.png")).unwrap();
        let index = ContentIndex::new(100);
        assert_eq!(index.find(dir.path(), &sha256(&[7u8; 101])).unwrap(), None, "over the limit");
        assert_eq!(index.find(dir.path(), &sha256(b"small")).unwrap().as_deref(), Some("a.png"));
        assert_eq!(index.find_regular(dir.path(), &sha256(b"small")).unwrap().as_deref(), Some("b.png"));
    }

    #[test]
    fn hex_digests_round_trip() {
        let d = sha256(b"x");
        assert_eq!(parse_hex(to_hex(&d).as_bytes()), Some(d));
        assert_eq!(parse_hex(to_hex(&d).to_uppercase().as_bytes()), Some(d));
        for bad in [&b""[..], b"abc", &[b'g'; 64]] {
            assert_eq!(parse_hex(bad), None);
        }
    }
}
