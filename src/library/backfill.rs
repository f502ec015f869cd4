//! The AVIF backfill: after an image's WebP encoding is served, one thread adds its AVIF encoding
//! (from the source file, not from the WebP, so that the AVIF loses nothing twice), keeps it in
//! the same on-disk cache, and hands it to the reconciler, which publishes the image again with
//! both encodings. Clients that take AVIF get it from then on (see `http::accept`).
//!
//! Only images whose WebP is lossy get an AVIF (a lossless setting asks for exact pixels), and
//! only stills (an animation stays an animated WebP). WebP comes first: the reconciler hands this
//! thread one image at a time, and only while no WebP encode is waiting. One thread at nice 19
//! bounds the CPU to one core at the encoders' priority and the memory to one encode: an image
//! past `--avif-max-megapixels` gets no AVIF (its WebP stays; measured in docs/BENCHMARKS.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::avif;
use super::cache::Cache;
use super::decode::{decode, Format};
use super::encode::{downscaled, Encoding};
use super::pool::{lower_priority, Limits, Priority};
use super::scan::{Shown, Stamp};
use super::stats::LibraryStats;
use crate::catalog::Body;

pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) stamp: Stamp,
    /// The source's content hash, as its WebP encoding was keyed.
    pub(crate) hash: blake3::Hash,
    pub(crate) format: Format,
    pub(crate) encoding: Encoding,
}

pub(crate) struct Done {
    pub(crate) name: String,
    pub(crate) stamp: Stamp,
    pub(crate) result: Result,
}

pub(crate) enum Result {
    Ready(Arc<Body>),
    /// No AVIF for this content (too large, or it cannot be encoded): not tried again until the
    /// file changes.
    Skipped(String),
    /// The file changed or went away since its WebP was made: its next WebP brings a new job.
    Unsettled,
}

/// The cache key of the AVIF encoding of `content`, whose WebP is made with `encoding`.
pub(crate) fn key(content: &blake3::Hash, encoding: &Encoding) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(content.as_bytes());
    hasher.update(
        format!(
            "{};max-side={};upright-srgb",
            avif::describe(avif::quality_for(encoding)),
            encoding.max_side
        )
        .as_bytes(),
    );
    format!("{}.avif", &hasher.finalize().to_hex()[..32])
}

/// Starts the backfill thread; it ends when the job sender is dropped.
pub(crate) fn spawn(
    limits: Limits,
    max_pixels: u64,
    cache: Arc<Cache>,
    stats: &'static LibraryStats,
) -> std::io::Result<(Sender<Job>, Receiver<Done>)> {
    let (job_tx, jobs) = crossbeam_channel::unbounded::<Job>();
    let (done, done_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new().name("keiko-avif".into()).spawn(move || {
        lower_priority("AVIF encoder", Priority::Nice19);
        for job in &jobs {
            let result = run(&job, limits, max_pixels, &cache, stats);
            if done.send(Done { name: job.name, stamp: job.stamp, result }).is_err() {
                return;
            }
            // SAFETY: only releases free memory of the calling thread's heap.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    })?;
    Ok((job_tx, done_rx))
}

fn run(job: &Job, limits: Limits, max_pixels: u64, cache: &Cache, stats: &LibraryStats) -> Result {
    let key = key(&job.hash, &job.encoding);
    if let Some((body, _)) = cache.get_or_fetch(&key) {
        return Result::Ready(Arc::new(body));
    }
    let stamp_now = || std::fs::metadata(&job.path).map(|m| Stamp::of(&m)).ok();
    if stamp_now() != Some(job.stamp) {
        return Result::Unsettled;
    }
    let Ok(bytes) = std::fs::read(&job.path) else { return Result::Unsettled };
    if stamp_now() != Some(job.stamp) || blake3::hash(&bytes) != job.hash {
        return Result::Unsettled;
    }
    let started = Instant::now();
    let decoded = match decode(&bytes, job.format, limits.max_pixels) {
        Ok(decoded) => decoded,
        Err(e) => return Result::Skipped(format!("cannot decode it again: {e:#}")),
    };
    drop(bytes);
    let pixels = match downscaled(&decoded.pixels, job.encoding.max_side) {
        Ok(Some(smaller)) => smaller,
        Ok(None) => decoded.pixels,
        Err(e) => return Result::Skipped(format!("{e:#}")),
    };
    let size = u64::from(pixels.width) * u64::from(pixels.height);
    if size > max_pixels {
        return Result::Skipped(format!(
            "{}x{} is over the AVIF limit of {} megapixels (KEIKO_AVIF_MAX_MEGAPIXELS); it is served as WebP only",
            pixels.width,
            pixels.height,
            max_pixels / 1_000_000
        ));
    }
    let bytes = match avif::encode(&pixels, avif::quality_for(&job.encoding)) {
        Ok(bytes) => bytes,
        Err(e) => return Result::Skipped(format!("{e:#}")),
    };
    stats.avif_encoded(started.elapsed());
    let stored = cache.put(&key, &bytes);
    cache.share(&key, &bytes);
    match stored {
        Ok((body, _)) => Result::Ready(Arc::new(body)),
        Err(e) => {
            tracing::warn!("{}: cannot keep its AVIF encoding: {e:#}", Shown(&job.name));
            Result::Skipped(format!("{e:#}"))
        }
    }
}
