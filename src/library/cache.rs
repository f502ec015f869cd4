//! The on-disk cache of encodings, so that a restart re-encodes nothing.
//!
//! Each encoding is a plain WebP file named by its key, `<key>.webp`, where the key hashes the
//! source's content together with the encoding settings: the same photo under two names is stored
//! once, and a change of settings finds no entry and encodes anew while the old files serve. Files
//! are written under a temporary dot-name, synced and renamed into place, so a crash never leaves
//! a half file under a key. A file that is nevertheless damaged is discarded and encoded again,
//! never served: the manifest records each file's size and modification time as keiko wrote it,
//! so any later write to it (even one that keeps its length) shows in the `statx` a warm start
//! makes anyway, and a file that is truncated or overwritten from its start also fails the
//! whole-WebP header check. Nothing hashes the cached bytes at startup, which would cost a read
//! of the whole cache (1.7 GB for 1,000 lossless photos) on every restart.
//!
//! The manifest (`manifest.json`) remembers, per source file name, the file's [`Stamp`], its
//! content hash and format, and which key it was last served from (or why it failed). With it a
//! restart matches stamps instead of reading and hashing every source.
//!
//! When the directory cannot be written, keiko still serves: encodings are then kept in memory
//! (sealed memfds), one warning is logged, and `keiko_cache_writable` shows 0.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::decode::Format;
use super::encode::Encoding;
use super::scan::Stamp;
use super::stats::LibraryStats;
use crate::catalog::Body;

const MANIFEST: &str = "manifest.json";
const MANIFEST_VERSION: u32 = 1;

/// What the cache remembers of one source file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) stamp: Stamp,
    #[serde(flatten)]
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// Encoded: the content's hash (hex), its format, the key it is served from, and how its cache
    /// file looked when keiko wrote or first opened it (None while it is held in memory).
    Encoded {
        hash: String,
        format: Format,
        key: String,
        #[serde(default)]
        written: Option<Written>,
    },
    /// Could not be served, and why; tried again only once the file changes.
    Failed { reason: String },
}

/// A cache file's size and modification time, and the digest of its bytes (which ETags are made
/// of, kept here so that a warm start need not read every file). Copying the cache with its times
/// kept (rsync -a, cp -a) keeps size and time; any write to the file changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Written {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_digest")]
    pub(crate) digest: Option<u128>,
}

/// Digests as 32 hex digits: JSON numbers stop at 64 bits.
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(digest: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match digest {
            Some(d) => s.serialize_str(&format!("{d:032x}")),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        let hex = Option::<String>::deserialize(d)?;
        hex.map(|h| u128::from_str_radix(&h, 16).map_err(serde::de::Error::custom)).transpose()
    }
}

impl Written {
    fn of(meta: &Metadata) -> Written {
        Written {
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            digest: None,
        }
    }

    fn same_file(&self, other: &Written) -> bool {
        (self.size, self.mtime_ns) == (other.size, other.mtime_ns)
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// The image directory the records describe.
    images: PathBuf,
    records: Vec<Record>,
}

/// What a fleet shares through its object store (see `store`): encodings, looked in before
/// encoding and given what this node encodes, and (when asked) renditions. `name` is a path under
/// the store's own prefix: `encodings/<key>.webp`, `encodings/<key>.avif`, `renditions/<file>`.
pub(crate) trait Shared: Send + Sync {
    /// What another node made, if it is there (and the store answers).
    fn fetch(&self, name: &str) -> Option<Vec<u8>>;
    /// Offers what was made here to the other nodes; a failure only costs them the work.
    fn publish(&self, name: &str, bytes: &[u8]);
}

pub(crate) struct Cache {
    dir: PathBuf,
    shared: Option<Arc<dyn Shared>>,
    writable: AtomicBool,
    /// Makes temporary names unique among the encoding threads.
    next_temp: AtomicU64,
    stats: &'static LibraryStats,
}

/// The cache key of `content` encoded with `encoding`: 128 bits of BLAKE3, in hex.
pub(crate) fn key(content: &blake3::Hash, encoding: &Encoding) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(content.as_bytes());
    hasher.update(encoding.to_string().as_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

impl Cache {
    /// Opens (creating it if needed) the cache in `dir`; an unusable directory is logged once and
    /// makes the cache hold encodings in memory.
    pub(crate) fn open(dir: &Path, shared: Option<Arc<dyn Shared>>, stats: &'static LibraryStats) -> Cache {
        let cache = Cache {
            dir: dir.to_path_buf(),
            shared,
            writable: AtomicBool::new(true),
            next_temp: AtomicU64::new(0),
            stats,
        };
        let probe = std::fs::create_dir_all(dir)
            .and_then(|()| cache.write_atomically(&dir.join(".keiko-write-test"), b"ok"))
            .and_then(|()| std::fs::remove_file(dir.join(".keiko-write-test")));
        match probe {
            Ok(()) => cache.remove_temporaries(),
            Err(e) => cache.not_writable(&e),
        }
        stats.set_cache_writable(cache.writable.load(Ordering::Relaxed));
        cache
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    fn not_writable(&self, e: &dyn std::fmt::Display) {
        if self.writable.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "cache directory {} is not writable ({e}): serving anyway, with new encodings held in \
                 memory and encoded again at the next start",
                self.dir.display()
            );
            self.stats.set_cache_writable(false);
        }
    }

    /// A WebP encoding's file is its key with `.webp`; an AVIF encoding's key ends in `.avif`
    /// already (see `backfill::key`).
    fn file_name(key: &str) -> String {
        if key.ends_with(".avif") {
            key.to_string()
        } else {
            format!("{key}.webp")
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(Cache::file_name(key))
    }

    /// The encoding under `key` from this node's cache, else from the fleet's (and then kept in
    /// this node's cache too).
    pub(crate) fn get_or_fetch(&self, key: &str) -> Option<(Body, Option<Written>)> {
        if let Some((body, written)) = self.get(key, None) {
            return Some((body, Some(written)));
        }
        let bytes = self.shared.as_ref()?.fetch(&format!("encodings/{}", Cache::file_name(key)))?;
        match self.put(key, &bytes) {
            Ok(stored) => Some(stored),
            Err(e) => {
                tracing::warn!(
                    "discarding the shared encoding {}: {e:#}; encoding it here",
                    Cache::file_name(key)
                );
                None
            }
        }
    }

    /// Whether encodings are shared with a fleet.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Offers an encoding just made here to the fleet, when it shares them.
    pub(crate) fn share(&self, key: &str, bytes: &[u8]) {
        if let Some(shared) = &self.shared {
            shared.publish(&format!("encodings/{}", Cache::file_name(key)), bytes);
        }
    }

    /// The encoding stored under `key`, if there is a whole one that (when `expected` is known)
    /// has not changed since keiko wrote it; a damaged or changed file is removed.
    pub(crate) fn get(&self, key: &str, expected: Option<Written>) -> Option<(Body, Written)> {
        let path = self.path(key);
        let file = File::open(&path).ok()?;
        let mut written = Written::of(&file.metadata().ok()?);
        let checked = if expected.is_some_and(|e| !e.same_file(&written)) {
            Err(anyhow::anyhow!("it was written to after keiko wrote it"))
        } else {
            Body::map(file, written.size as usize, expected.and_then(|e| e.digest))
        };
        match checked {
            Ok(body) => {
                written.digest = Some(body.digest());
                Some((body, written))
            }
            Err(e) => {
                tracing::warn!("discarding cache file {}: {e:#}; it will be encoded again", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `webp` under `key` and returns it ready to serve, with how its file looks (or from
    /// memory, with None, if the disk refuses).
    pub(crate) fn put(&self, key: &str, webp: &[u8]) -> anyhow::Result<(Body, Option<Written>)> {
        if self.is_writable() {
            let path = self.path(key);
            match self.write_atomically(&path, webp) {
                Ok(()) => {
                    let file = File::open(&path).context("cannot reopen the cache file")?;
                    let mut written = Written::of(&file.metadata().context("cannot stat the cache file")?);
                    written.digest = Some(crate::catalog::digest(webp));
                    return Ok((Body::map(file, written.size as usize, written.digest)?, Some(written)));
                }
                Err(e) => self.not_writable(&e),
            }
        }
        Ok((Body::in_memory(webp)?, None))
    }

    /// Writes `bytes` to `path` through a synced temporary file in the same directory.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            std::fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Temporary files left by a crash: never under a key, so never served; just removed.
    fn remove_temporaries(&self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes every encoding whose key is not in `keep`; returns how many bytes that freed.
    pub(crate) fn collect_garbage(&self, keep: &HashSet<&str>) -> u64 {
        let mut freed = 0;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(key) =
                name.to_str().and_then(|n| n.strip_suffix(".webp").or(n.ends_with(".avif").then_some(n)))
            else {
                continue;
            };
            if !keep.contains(key) {
                let size = entry.metadata().map_or(0, |m| m.len());
                if std::fs::remove_file(entry.path()).is_ok() {
                    freed += size;
                }
            }
        }
        freed
    }

    /// The records saved for `images`, or none when the manifest is missing, unreadable, from
    /// another version or about another directory.
    pub(crate) fn load_manifest(&self, images: &Path) -> Vec<Record> {
        let path = self.dir.join(MANIFEST);
        let Ok(text) = std::fs::read(&path) else { return Vec::new() };
        match serde_json::from_slice::<Manifest>(&text) {
            Ok(m) if m.version == MANIFEST_VERSION && m.images == images => m.records,
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}; every image will be looked at again", path.display());
                Vec::new()
            }
        }
    }

    pub(crate) fn save_manifest(&self, images: &Path, records: Vec<Record>) {
        if !self.is_writable() {
            return;
        }
        let manifest = Manifest { version: MANIFEST_VERSION, images: images.to_path_buf(), records };
        let json = serde_json::to_vec(&manifest).expect("the manifest always serializes");
        if let Err(e) = self.write_atomically(&self.dir.join(MANIFEST), &json) {
            self.not_writable(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> &'static LibraryStats {
        Box::leak(Box::default())
    }

    fn webp() -> Vec<u8> {
        let mut config = webp::WebPConfig::new().unwrap();
        config.lossless = 1;
        webp::Encoder::new(&[1, 2, 3], webp::PixelLayout::Rgb, 1, 1)
            .encode_advanced(&config)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn keys_follow_content_and_settings() {
        let a = blake3::hash(b"a");
        let lossless = Encoding { quality: None, max_side: 0, animation: None };
        let lossy = Encoding { quality: Some(75), max_side: 0, animation: None };
        assert_eq!(key(&a, &lossless), key(&a, &lossless));
        assert_ne!(key(&a, &lossless), key(&a, &lossy));
        assert_ne!(key(&a, &lossless), key(&blake3::hash(b"b"), &lossless));
        assert_eq!(key(&a, &lossless).len(), 32);
    }

    #[test]
    fn stored_encodings_come_back_and_damaged_ones_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None, stats());
        assert!(cache.is_writable());
        let webp = webp();
        let (body, written) = cache.put("k1", &webp).unwrap();
        assert_eq!(body.bytes(), &webp[..]);
        assert_eq!(cache.get("k1", written).unwrap().0.bytes(), &webp[..]);
        assert!(cache.get("missing", None).is_none());

        std::fs::write(dir.path().join("k2.webp"), &webp[..webp.len() - 3]).unwrap();
        assert!(cache.get("k2", None).is_none(), "a truncated file is not served");
        assert!(!dir.path().join("k2.webp").exists(), "and is removed");

        std::fs::write(dir.path().join(".tmp-1-1"), b"half").unwrap();
        let _reopened = Cache::open(dir.path(), None, stats());
        assert!(!dir.path().join(".tmp-1-1").exists(), "crash leftovers are removed at open");

        let (_, written) = cache.put("k4", &webp).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut same_length = webp.clone();
        same_length[webp.len() / 2] ^= 0xff;
        std::fs::write(dir.path().join("k4.webp"), &same_length).unwrap();
        assert!(cache.get("k4", written).is_none(), "a file written to since is not served");
        assert!(!dir.path().join("k4.webp").exists());

        cache.put("k3", &webp).unwrap();
        let freed = cache.collect_garbage(&HashSet::from(["k1"]));
        assert_eq!(freed, webp.len() as u64);
        assert!(cache.get("k1", None).is_some() && cache.get("k3", None).is_none());
    }

    #[test]
    fn the_manifest_round_trips_for_its_own_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None, stats());
        let records = vec![
            Record {
                name: "a.png".into(),
                stamp: Stamp { ino: 1, size: 2, mtime_ns: 3 },
                outcome: Outcome::Encoded {
                    hash: "ab".into(),
                    format: Format::Png,
                    key: "k".into(),
                    written: Some(Written { size: 5, mtime_ns: 6, digest: Some(7) }),
                },
            },
            Record {
                name: "b.jpg".into(),
                stamp: Stamp::default(),
                outcome: Outcome::Failed { reason: "the file is empty".into() },
            },
        ];
        cache.save_manifest(Path::new("/images"), records.clone());
        assert_eq!(cache.load_manifest(Path::new("/images")), records);
        assert!(cache.load_manifest(Path::new("/other")).is_empty());
        std::fs::write(dir.path().join(MANIFEST), b"{not json").unwrap();
        assert!(cache.load_manifest(Path::new("/images")).is_empty());
    }

    #[test]
    fn an_unwritable_directory_still_serves_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("file-in-the-way");
        std::fs::write(&blocked, b"x").unwrap();
        let cache = Cache::open(&blocked.join("cache"), None, stats());
        assert!(!cache.is_writable());
        let webp = webp();
        let (body, written) = cache.put("k", &webp).unwrap();
        assert_eq!((body.bytes(), written), (&webp[..], None));
    }
}
