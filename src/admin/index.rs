//! Which file of the image directory holds given content, by SHA-256: what `GET /images?sha256=`
//! answers and what lets an identical upload under another name become a hard link instead of a
//! second copy.
//!
//! Kept per file name with the file's stamp, and brought up to date on each use by listing the
//! directory and hashing only the files whose stamp changed (all of them, once, on first use).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::library::scan::{self, Stamp};

pub(crate) type Sha256Digest = [u8; 32];

#[derive(Default)]
pub(crate) struct ContentIndex {
    files: Mutex<HashMap<String, (Stamp, Sha256Digest)>>,
}

pub(crate) fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256::digest(bytes).into()
}

impl ContentIndex {
    /// A file of `dir` whose content has this digest, if any. Blocking: lists and maybe reads.
    pub(crate) fn find(&self, dir: &Path, digest: &Sha256Digest) -> io::Result<Option<String>> {
        let listing = scan::list(dir)?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.retain(|name, _| listing.files.iter().any(|f| &f.name == name));
        for found in &listing.files {
            if files.get(&found.name).is_some_and(|(stamp, _)| *stamp == found.stamp) {
                continue;
            }
            // A file removed since the listing is simply not indexed.
            if let Ok(bytes) = std::fs::read(&found.path) {
                files.insert(found.name.clone(), (found.stamp, sha256(&bytes)));
            }
        }
        let mut matches: Vec<&String> =
            files.iter().filter(|(_, (_, d))| d == digest).map(|(n, _)| n).collect();
        matches.sort();
        Ok(matches.first().map(|n| n.to_string()))
    }
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
        let index = ContentIndex::default();
        assert_eq!(index.find(dir.path(), &sha256(b"one")).unwrap().as_deref(), Some("a.png"));
        assert_eq!(index.find(dir.path(), &sha256(b"three")).unwrap(), None);
        std::fs::write(dir.path().join("b.png"), b"three!").unwrap();
        assert_eq!(index.find(dir.path(), &sha256(b"three!")).unwrap().as_deref(), Some("b.png"));
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        assert_eq!(index.find(dir.path(), &sha256(b"one")).unwrap(), None);
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
