//! The library in S3-compatible object storage (`KEIKO_IMAGES=s3://bucket/prefix`), so that a
//! fleet shares its images and their encodings instead of copying a directory to every node.
//!
//! ```text
//!  s3://bucket/prefix/<name>                       the originals (objects directly under the prefix)
//!  s3://bucket/prefix/.keiko/layout                which layout keiko keeps there, checked at start
//!  s3://bucket/prefix/.keiko/encodings/<key>.webp  encodings any node made: content and settings
//!  s3://bucket/prefix/.keiko/encodings/<key>.avif  in the key, so a node fetches instead of encoding
//!  s3://bucket/prefix/.keiko/renditions/<file>      with --store-renditions: renditions, the same way
//! ```
//!
//! The bucket is never on a request's path. [`mirror`] copies the originals into a directory of
//! the node's cache, which the library follows exactly as it follows a local image directory;
//! the encode threads look in the bucket before encoding and publish what they encode
//! ([`crate::library::Shared`]); the write routes put and delete originals in the bucket before
//! they answer, and [`announce`] tells the other nodes through PostgreSQL when the fleet shares
//! one. While the store does not answer, a node serves what it has, stays ready and retries
//! with backoff; `/metrics` and `/readyz` say so ([`stats`]).
//!
//! object_store speaks S3 (and signs SigV4); [`profile`] finds its settings the way AWS tools do.
//! Its requests run on one small tokio runtime of their own, called from keiko's blocking threads.

pub(crate) mod announce;
pub(crate) mod mirror;
mod profile;
pub(crate) mod stats;

use std::path::Path as FsPath;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::library::scan::is_candidate;
use profile::Profile;
use stats::{Op, StoreStats};

/// What `.keiko/layout` holds in a bucket laid out as described above.
const LAYOUT: &str = "keiko bucket layout 1: originals under the prefix, encodings under .keiko/encodings/\n";
/// The largest encoding fetched from the bucket (a lossless 100-megapixel WebP is below it).
const MAX_ENCODING_BYTES: usize = 512 << 20;

/// Where the library is in object storage: `s3://bucket` or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the whole bucket.
    pub prefix: String,
}

impl FromStr for Location {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Location> {
        let rest =
            url.strip_prefix("s3://").context("an object-store library is an s3://bucket/prefix URL")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{url:?}: a bucket name is 3 to 63 lowercase letters, digits, '-' and '.'"
        );
        let prefix = prefix.trim_matches('/');
        anyhow::ensure!(
            Path::parse(prefix).is_ok() && !prefix.contains("//"),
            "{url:?}: the prefix must be a plain path (no empty, '.' or '..' segments)"
        );
        Ok(Location { bucket: bucket.into(), prefix: prefix.into() })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            prefix => write!(f, "s3://{}/{prefix}", self.bucket),
        }
    }
}

/// Why a request to the store failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer (refused connection, timeout, a 5xx after the retries): try again later.
    Unreachable(String),
    /// An answer that refuses (permissions, no such bucket, a wrong region): the operator must act.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) => write!(f, "the object store does not answer: {why}"),
            Failure::Refused(why) => write!(f, "the object store refused: {why}"),
        }
    }
}

/// An original in the bucket, as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object {
    /// Its key as listed, which is what is read: another tool may have written a key that
    /// object_store would encode differently from `name`.
    key: Path,
    /// The file name it is served under: the key's last segment, percent-decoded.
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) modified: SystemTime,
    /// Changes with every write of the object, even one of the same size in the same second.
    pub(crate) etag: Option<String>,
}

/// The bucket, and the runtime its requests run on.
pub(crate) struct Bucket {
    location: Location,
    prefix: Path,
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    pub(crate) stats: &'static StoreStats,
}

impl Bucket {
    /// A client for `location`, its settings from the environment and the shared AWS files.
    pub(crate) fn connect(location: &Location, stats: &'static StoreStats) -> anyhow::Result<Bucket> {
        let profile = Profile::resolve()?;
        let mut builder = profile
            .apply(AmazonS3Builder::new())
            .with_bucket_name(&location.bucket)
            .with_region(profile.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    // A whole request, body included: a 100 MB original at 1 MB/s.
                    .with_timeout(Duration::from_secs(120)),
            )
            // Retries are short: the mirror and the callers retry again with their own backoff,
            // and an upload must answer 503 soon rather than hang while the store is down.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            });
        if let Some(endpoint) = &profile.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().with_context(|| format!("cannot use {location}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keiko-store-io")
            .enable_all()
            .build()
            .context("cannot start the object store's I/O thread")?;
        Ok(Bucket {
            location: location.clone(),
            prefix: Path::parse(&location.prefix).expect("checked when the URL was read"),
            store,
            runtime,
            stats,
        })
    }

    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    /// Checks at startup that the bucket is there, laid out for keiko (or empty of keiko's
    /// files) and that this node may list, read, write and delete in it.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        let (objects, prefixes) = self.list_all()?;
        let foreign: Vec<&String> = prefixes.iter().filter(|p| !p.starts_with('.')).collect();
        if objects.is_empty() && !foreign.is_empty() {
            let shown: Vec<String> = foreign.iter().take(3).map(|p| format!("{p}/")).collect();
            return Err(Failure::Refused(format!(
                "{} holds no image directly, only the prefixes {}: keiko serves the objects directly \
                 under the prefix (KEIKO_IMAGES=s3://bucket/prefix), so point it at one of those",
                self.location,
                shown.join(", ")
            )));
        }
        let layout = self.keiko("layout");
        match self.get(&layout, LAYOUT.len() * 4)? {
            Some(found) if found == LAYOUT.as_bytes() => {}
            Some(found) => {
                return Err(Failure::Refused(format!(
                    "{}/.keiko/layout is not keiko's layout 1 ({:?}): another version of keiko, or \
                     another program, keeps this prefix",
                    self.location,
                    String::from_utf8_lossy(&found[..found.len().min(80)])
                )))
            }
            None => self.put(&layout, LAYOUT.as_bytes().to_vec())?,
        }
        let probe = self.keiko(&format!("probe-{}-{:016x}", std::process::id(), fastrand::u64(..)));
        self.put(&probe, b"keiko checks that it may write here\n".to_vec())?;
        let read = self.get(&probe, 1024)?;
        self.delete(&probe)?;
        if read.is_none() {
            return Err(Failure::Refused(format!(
                "{}: an object just written cannot be read",
                self.location
            )));
        }
        Ok(())
    }

    /// The originals: objects directly under the prefix whose names the library serves.
    pub(crate) fn list(&self) -> Result<Vec<Object>, Failure> {
        self.list_all().map(|(objects, _)| objects)
    }

    /// The originals and the names of the prefixes below the prefix. Of two keys that decode to
    /// one name (`a b.jpg`, `a%20b.jpg`), the first listed is the original.
    fn list_all(&self) -> Result<(Vec<Object>, Vec<String>), Failure> {
        let prefix = (!self.location.prefix.is_empty()).then_some(&self.prefix);
        let listed = self.run(Op::List, self.store.list_with_delimiter(prefix))?;
        let mut names = std::collections::HashSet::new();
        let objects = listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = decoded(meta.location.filename()?);
                (is_candidate(&name) && names.insert(name.clone())).then(|| Object {
                    name,
                    size: meta.size,
                    modified: meta.last_modified.into(),
                    etag: meta.e_tag,
                    key: meta.location,
                })
            })
            .collect();
        let prefixes = listed.common_prefixes.iter().filter_map(|p| p.filename().map(decoded)).collect();
        Ok((objects, prefixes))
    }

    /// Copies an original into the file `to` (created), refusing more than `max_bytes`;
    /// Ok(None) when it is gone from the bucket. A failure of the local file is `Refused`.
    pub(crate) fn download(
        &self,
        object: &Object,
        to: &FsPath,
        max_bytes: u64,
    ) -> Result<Option<u64>, Failure> {
        use std::io::Write;
        let copy = async {
            let got = match self.store.get(&object.key).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut file = std::fs::File::create(to).map_err(io_error)?;
            let mut stream = got.into_stream();
            let mut copied = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                copied += chunk.len() as u64;
                if copied > max_bytes {
                    return Err(io_error(std::io::Error::other(format!("over {max_bytes} bytes"))));
                }
                file.write_all(&chunk).map_err(io_error)?;
            }
            Ok(Some(copied))
        };
        self.run(Op::Get, copy)
    }

    /// Whether original `name` is in the bucket.
    pub(crate) fn contains(&self, name: &str) -> Result<bool, Failure> {
        let head = async {
            match self.store.head(&self.original(name)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        };
        self.run(Op::Get, head)
    }

    /// Stores original `name`; durable in the bucket when this returns Ok.
    pub(crate) fn put_original(&self, name: &str, bytes: Vec<u8>) -> Result<(), Failure> {
        self.put(&self.original(name), bytes)
    }

    /// Deletes original `name`.
    pub(crate) fn delete_original(&self, name: &str) -> Result<(), Failure> {
        self.delete(&self.original(name))
    }

    fn original(&self, name: &str) -> Path {
        self.prefix.child(name)
    }

    fn keiko(&self, name: &str) -> Path {
        self.prefix.child(".keiko").child(name)
    }

    /// Where `name` (`encodings/<file>`, `renditions/<file>`) of the fleet's shared work is.
    fn shared(&self, name: &str) -> Path {
        name.split('/').fold(self.prefix.child(".keiko"), |path, part| path.child(part))
    }

    fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), Failure> {
        self.run(Op::Put, self.store.put(path, PutPayload::from(bytes))).map(|_| ())
    }

    fn delete(&self, path: &Path) -> Result<(), Failure> {
        self.run(Op::Delete, self.store.delete(path))
    }

    /// The object at `path`, None when there is none; more than `max_bytes` is refused.
    fn get(&self, path: &Path, max_bytes: usize) -> Result<Option<Vec<u8>>, Failure> {
        let read = async {
            match self.store.get(path).await {
                Ok(got) if got.meta.size > max_bytes as u64 => Err(io_error(std::io::Error::other(format!(
                    "{path} is {} bytes, over {max_bytes}",
                    got.meta.size
                )))),
                Ok(got) => got.bytes().await.map(|b| Some(b.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        self.run(Op::Get, read)
    }

    /// Runs one request to completion on the store's runtime, counting its outcome.
    fn run<T>(
        &self,
        op: Op,
        request: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, Failure> {
        match self.runtime.block_on(request) {
            Ok(value) => {
                self.stats.answered();
                Ok(value)
            }
            Err(e) => {
                let failure = classify(&e);
                match &failure {
                    Failure::Unreachable(_) => self.stats.unreachable(op),
                    Failure::Refused(_) => {
                        self.stats.answered();
                        self.stats.failed(op);
                    }
                }
                Err(failure)
            }
        }
    }
}

/// While the store does not answer (the mirror found so, and retries), the encode threads neither
/// wait for it nor log each image: they encode, and what they make is not published.
impl crate::library::Shared for Bucket {
    fn fetch(&self, name: &str) -> Option<Vec<u8>> {
        if self.stats.down_for().is_some() {
            return None;
        }
        match self.get(&self.shared(name), MAX_ENCODING_BYTES) {
            Ok(Some(bytes)) => {
                self.stats.fetched();
                Some(bytes)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("cannot look for {name} in {}: {e}", self.location);
                None
            }
        }
    }

    fn publish(&self, name: &str, bytes: &[u8]) {
        if self.stats.down_for().is_some() {
            return;
        }
        match self.put(&self.shared(name), bytes.to_vec()) {
            Ok(()) => self.stats.published(),
            Err(Failure::Unreachable(why)) => tracing::debug!("cannot publish {name}: {why}"),
            Err(e) => tracing::warn!(
                "cannot publish {name} in {}: {e}; other nodes will make it themselves",
                self.location
            ),
        }
    }
}

/// Sorts an error into no answer (retry later) and an answer that refuses. object_store does
/// not expose the HTTP status of most errors, so some are told by their message.
fn classify(e: &object_store::Error) -> Failure {
    use object_store::Error;
    let why = e.to_string();
    let status_4xx = why.contains("status code: 4")
        && !why.contains("status code: 408")
        && !why.contains("status code: 429");
    match e {
        Error::NotFound { .. } => Failure::Refused(why),
        // A local file of the mirror (the disk full, a copy over the size limit).
        Error::Generic { store: LOCAL, .. } => Failure::Refused(why),
        // A key object_store cannot take (`a//b`, `..`): the whole listing fails on it.
        Error::InvalidPath { .. } => Failure::Refused(format!(
            "{why} (a key object_store cannot read is under the prefix: rename or delete it)"
        )),
        Error::PermissionDenied { .. } | Error::Unauthenticated { .. } => {
            Failure::Refused(format!("access denied (the key needs s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the prefix): {why}"))
        }
        // AWS answers a wrong region with a redirect without a location.
        _ if status_4xx || why.contains("error response") || why.contains("redirect without LOCATION") => {
            Failure::Refused(why)
        }
        _ => Failure::Unreachable(why),
    }
}

/// Waits a moment for a thread asked to stop, then leaves it: one blocked in a request to a store
/// that does not answer must not hold up a shutdown (it holds nothing that needs finishing).
pub(crate) fn join_briefly(thread: std::thread::JoinHandle<()>, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    match thread.is_finished() {
        true => {
            if thread.join().is_err() {
                tracing::error!("the {what} thread panicked");
            }
        }
        false => tracing::debug!("not waiting any longer for the {what} thread"),
    }
}

/// What local errors are wrapped as, to tell them from the store's.
const LOCAL: &str = "keiko's mirror";

fn io_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: LOCAL, source: Box::new(e) }
}

/// A key's last segment as a file name: object_store percent-encodes what S3 keys should not
/// hold, so a name keiko stored comes back as it was given.
fn decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_or_else(|_| segment.to_string(), |name| name.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_a_bucket_and_a_plain_prefix() {
        let at = |url: &str| url.parse::<Location>();
        assert_eq!(at("s3://photos").unwrap(), Location { bucket: "photos".into(), prefix: "".into() });
        assert_eq!(at("s3://photos/").unwrap().prefix, "");
        assert_eq!(at("s3://photos/lib/2026/").unwrap().prefix, "lib/2026");
        assert_eq!(at("s3://photos/lib/2026").unwrap().to_string(), "s3://photos/lib/2026");
        for bad in ["photos", "s3://", "s3://Photos", "s3://ab", "s3://photos/a//b", "s3://photos/a/../b"] {
            assert!(at(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn names_keiko_stores_come_back_from_a_listing_as_they_were() {
        let path = Path::parse("lib").unwrap().child("café #1.jpg");
        assert_eq!(decoded(path.filename().unwrap()), "café #1.jpg");
        assert_eq!(decoded("50%off.jpg"), "50%off.jpg", "not an escape: kept as it is");
    }
}
