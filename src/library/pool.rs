//! The encode pool: threads that turn a source file into a servable WebP body, one job at a time,
//! at the lowest priority (nice 19).
//!
//! At nice 19 an encoder gets about 1.5% of a core that the event loops want, so they keep their
//! latency while a big library encodes on the same cores (measured in docs/BENCHMARKS.md), yet a
//! new image still gets encoded while the server is saturated. (The idle scheduling class was
//! tried first: it starves encoders completely under full load, so nothing new appeared.)
//!
//! A job re-checks the file's stamp before and after reading it, so a file that changes meanwhile
//! is reported as unsettled instead of being encoded half-way; a cached encoding of the same
//! content and settings (this node's, or with object storage the fleet's) is used instead of
//! encoding again, and with object storage what is encoded is published for the other nodes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::animation::{self, Animation};
use super::cache::{self, Cache, Outcome};
use super::decode::{decode, probe, Format, NOT_AN_IMAGE};
use super::encode::{encode, Settings};
use super::scan::{Shown, Stamp};
use super::stats::LibraryStats;
use crate::catalog::Body;

/// Limits that keep a hostile or huge source from hurting the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pixels: u64,
    pub max_file_bytes: u64,
}

pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) stamp: Stamp,
}

pub(crate) struct Done {
    pub(crate) name: String,
    pub(crate) stamp: Stamp,
    pub(crate) result: Result,
}

pub(crate) enum Result {
    /// Ready to serve, from `outcome`'s key.
    Ready {
        body: Arc<Body>,
        outcome: Outcome,
    },
    Failed(String),
    /// The file changed or went away while it was being read: look again later.
    Unsettled,
}

/// Starts `threads` encoders; they end when the job sender is dropped.
pub(crate) fn spawn(
    threads: usize,
    settings: Settings,
    limits: Limits,
    cache: Arc<Cache>,
    stats: &'static LibraryStats,
) -> std::io::Result<(Sender<Job>, Receiver<Done>)> {
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    for n in 0..threads.max(1) {
        let (jobs, done, cache) = (job_rx.clone(), done_tx.clone(), cache.clone());
        std::thread::Builder::new().name(format!("keiko-encode-{n}")).spawn(move || {
            lower_priority("encoders", Priority::Nice19);
            for job in &jobs {
                let result = run(&job, settings, limits, &cache, stats);
                if done.send(Done { name: job.name, stamp: job.stamp, result }).is_err() {
                    return;
                }
                if jobs.is_empty() {
                    // Decoding and encoding went through tens of MB that this thread's own
                    // mimalloc heap would otherwise keep; the server keeps none of it.
                    // SAFETY: only releases free memory of the calling thread's heap.
                    unsafe { libmimalloc_sys::mi_collect(true) };
                }
            }
        })?;
    }
    Ok((job_tx, done_rx))
}

/// Below the event loops: nice 19, or the idle scheduling class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// About 1.5% of a core the loops want: the encoders, which must go on under full load (the
    /// idle class starved them completely, see the module comment).
    Nice19,
    /// Only what the loops leave, giving way at once when one wakes: the render threads, whose
    /// work a client chose. At nice 19 a render flood took GET /'s p99 to 1.73x the quiet run,
    /// in the idle class to 1.31x and 1.45x in two runs (docs/BENCHMARKS.md section 11); under
    /// full load a new
    /// rendition then waits, and its render stops if its client leaves.
    Idle,
}

/// Gives the calling thread `priority` (on Linux both are per thread). `who` names the threads
/// in a warning.
pub(crate) fn lower_priority(who: &str, priority: Priority) {
    let lowered = match priority {
        // SAFETY: changes only the calling thread's priority (who = 0 = this thread).
        Priority::Nice19 => (unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) }) == 0,
        Priority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: changes only the calling thread (pid 0); `param` outlives the call.
            (unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }) == 0
        }
    };
    if !lowered {
        tracing::warn!("cannot lower the {who}' priority: {}", std::io::Error::last_os_error());
    }
}

/// Reads a file's first bytes and checks that they begin an image of a known format.
fn sniff_file(path: &std::path::Path) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(16);
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    file.take(16).read_to_end(&mut head).map_err(|e| format!("cannot read it: {e}"))?;
    match Format::sniff(&head) {
        Some(_) => Ok(()),
        None if head.is_empty() => Err("the file is empty".into()),
        None => Err(NOT_AN_IMAGE.into()),
    }
}

fn run(job: &Job, settings: Settings, limits: Limits, cache: &Cache, stats: &LibraryStats) -> Result {
    let stamp_now = || std::fs::metadata(&job.path).map(|m| Stamp::of(&m));
    match stamp_now() {
        Ok(stamp) if stamp == job.stamp => {}
        _ => return Result::Unsettled,
    }
    if job.stamp.size > limits.max_file_bytes {
        return Result::Failed(format!(
            "it is {} bytes, over the limit of {} (KEIKO_MAX_FILE_BYTES)",
            job.stamp.size, limits.max_file_bytes
        ));
    }
    // Its first bytes say whether it is an image at all: a large file of anything else is
    // refused without being read whole.
    if let Err(e) = sniff_file(&job.path) {
        return Result::Failed(e);
    }
    let bytes = match std::fs::read(&job.path) {
        Ok(bytes) => bytes,
        Err(e) => return Result::Failed(format!("cannot read it: {e}")),
    };
    if !matches!(stamp_now(), Ok(stamp) if stamp == job.stamp) {
        return Result::Unsettled;
    }
    let (format, _, _) = match probe(&bytes, limits.max_pixels) {
        Ok(probed) => probed,
        Err(e) => return Result::Failed(format!("{e:#}")),
    };
    let hash = blake3::hash(&bytes);
    let encoding = settings.for_source(format);
    let key = cache::key(&hash, &encoding);
    let outcome =
        |written| Outcome::Encoded { hash: hash.to_hex().to_string(), format, key: key.clone(), written };
    if let Some((body, written)) = cache.get_or_fetch(&key) {
        stats.cache_hit();
        return Result::Ready { body: Arc::new(body), outcome: outcome(written) };
    }
    stats.cache_miss();
    let started = Instant::now();
    let still = |bytes: Vec<u8>| {
        decode(&bytes, format, limits.max_pixels).and_then(|decoded| {
            drop(bytes);
            if let Some(warning) = &decoded.warning {
                tracing::warn!("{}: {warning}", Shown(&job.name));
            }
            encode(&decoded.pixels, encoding)
        })
    };
    let encoded = match animation::encode(&bytes, format, encoding, limits.max_pixels) {
        Ok(Animation::Encoded(webp)) => Ok(webp),
        Ok(Animation::Still) => still(bytes),
        Ok(Animation::PastBudget(why)) => {
            tracing::warn!("{}: {why}", Shown(&job.name));
            still(bytes)
        }
        Err(e) => Err(e.context(format!("a damaged or truncated animated {}", format.name()))),
    };
    let webp = match encoded {
        Ok(webp) => webp,
        Err(e) => return Result::Failed(format!("{e:#}")),
    };
    stats.encoded(started.elapsed());
    let stored = cache.put(&key, &webp);
    cache.share(&key, &webp);
    match stored {
        Ok((body, written)) => Result::Ready { body: Arc::new(body), outcome: outcome(written) },
        Err(e) => Result::Failed(format!("cannot store its encoding: {e:#}")),
    }
}
