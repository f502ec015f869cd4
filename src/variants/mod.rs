//! Renditions of images (sizes, effects, ASCII art), made once off the event loops and then
//! served like any pre-built image.
//!
//! A rendition is asked for by [`Key`]: the source body's digest, the image's hit identity (its
//! name is in the response head) and the [`Variant`]. The loops look in three places, cheapest
//! first: their own memo (see `server`), the shared in-memory cache (quick_cache, bounded in
//! bytes), and otherwise a [`Flight`]: a render queued for a bounded pool of threads. Requests for
//! a rendition already in flight wait for that one render (single flight); when the queue is full
//! the answer is "busy" (503), so a flood of new URLs costs neither unbounded memory nor a stalled
//! loop. A render thread first looks on disk (see [`disk`]) and renders only what is not there.
//! Waiting loops are woken across threads through monoio's `sync` support.
//!
//! A render works only for clients that still wait: each waiting request holds a [`Waiter`], and
//! when the last one goes (its client disconnected), the flight is closed and its render stops
//! before it starts or at its next stage. Render threads run at the lowest priority, below the
//! event loops, so renders can never slow the catalogue routes.

mod budget;
mod crop;
mod disk;
mod render;
pub mod spec;
mod stats;
mod warm;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use event_listener::Event;
use flate2::write::GzEncoder;

use crate::catalog::{digest, Image};
use crate::clients::{Client, RenderBudgets};
use crate::http::response::ImageHeads;
use crate::library::scan::Shown;
use crate::library::{Priority, Settings, Shared};
use crate::test_hooks;
use budget::Budget;
use disk::Disk;
use render::Output;
use spec::{Codec, Form, Variant};
pub(crate) use stats::VariantStats;

#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where renditions are kept on disk; None = memory only.
    pub(crate) dir: Option<PathBuf>,
    pub(crate) memory_bytes: u64,
    pub(crate) disk_bytes: u64,
    pub(crate) renderers: usize,
    /// Renders that may wait for a thread.
    pub(crate) queue: usize,
    pub(crate) settings: Settings,
    pub(crate) max_pixels: u64,
    /// Pixels that renders in progress may hold at once (see `budget`).
    pub(crate) budget_pixels: u64,
    /// The largest AVIF a render may make, in pixels (its encoder's memory); 0: none.
    pub(crate) avif_max_pixels: u64,
    /// Each client's renders: at once, and per second after that (0: no budget).
    pub(crate) client_burst: u32,
    pub(crate) client_per_second: f64,
    /// Seconds caches may keep `/images/<name>/…` responses.
    pub(crate) max_age: u32,
}

/// What identifies a rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// The digest of the source image's body.
    pub(crate) source: u128,
    /// The source image's hit identity (two names may share a body, not a head).
    pub(crate) image: u32,
    pub(crate) variant: Variant,
}

/// A finished rendition, with the heads of its responses built.
pub(crate) struct Rendered {
    /// The picture's format; None for ASCII art.
    pub(crate) codec: Option<Codec>,
    pub(crate) plain: Representation,
    /// ASCII art also comes gzip-compressed (compressed once, here).
    pub(crate) gzip: Option<Representation>,
}

/// One representation's body and the heads that go with it (without Date/Connection).
pub(crate) struct Representation {
    pub(crate) heads: ImageHeads,
    pub(crate) body: Box<[u8]>,
}

impl Rendered {
    /// The representation a client that does (or does not) take gzip gets.
    pub(crate) fn representation(&self, accepts_gzip: bool) -> &Representation {
        match &self.gzip {
            Some(gzipped) if accepts_gzip => gzipped,
            _ => &self.plain,
        }
    }

    fn weight(&self) -> u64 {
        let rep = |r: &Representation| (r.body.len() + r.heads.weight() + 64) as u64;
        rep(&self.plain) + self.gzip.as_ref().map_or(0, rep)
    }
}

/// Why a render failed, shared by every request that waited for it.
pub(crate) type RenderError = Arc<anyhow::Error>;

/// A render on its way: every request for the same rendition waits on the same one.
pub(crate) struct Flight {
    done: Event,
    result: OnceLock<Result<Arc<Rendered>, RenderError>>,
    /// Requests waiting for it, or [`CLOSED`] once its render gave up for want of any.
    waiters: AtomicUsize,
}

/// [`Flight::waiters`] of a flight whose render stopped because no one waited: no one may join.
const CLOSED: usize = usize::MAX;

/// The render stopped because every client waiting for it had gone.
#[derive(Debug)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every client waiting for it had gone")
    }
}

impl std::error::Error for Cancelled {}

impl Flight {
    fn new(result: OnceLock<Result<Arc<Rendered>, RenderError>>) -> Arc<Flight> {
        Arc::new(Flight { done: Event::new(), result, waiters: AtomicUsize::new(0) })
    }

    /// Joins the wait, unless the flight was closed.
    fn join(self: &Arc<Flight>) -> Option<Waiter> {
        let joined = self.waiters.fetch_update(AcqRel, Acquire, |n| (n != CLOSED).then_some(n + 1));
        joined.ok().map(|_| Waiter(self.clone()))
    }

    /// Called by the render thread: true (and the flight closed) when no one waits any more.
    fn abandoned(&self) -> bool {
        self.waiters.compare_exchange(0, CLOSED, AcqRel, Acquire).is_ok()
    }
}

/// One request's share in a [`Flight`]; the render goes on while any lives.
pub(crate) struct Waiter(Arc<Flight>);

impl Waiter {
    /// The rendition, or why it could not be made.
    pub(crate) async fn wait(&self) -> Result<Arc<Rendered>, RenderError> {
        let flight = &self.0;
        loop {
            if let Some(result) = flight.result.get() {
                return result.clone();
            }
            let listener = flight.done.listen();
            if let Some(result) = flight.result.get() {
                return result.clone();
            }
            listener.await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, AcqRel);
    }
}

/// Why a new render was not started.
pub(crate) enum Refused {
    /// The render queue is full: 503.
    Busy,
    /// The client has used its budget of renders: 429, with the time until it has one again.
    OverBudget(std::time::Duration),
}

struct Job {
    key: Key,
    image: Arc<Image>,
    flight: Arc<Flight>,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<Key, Arc<Rendered>> for Weigh {
    fn weight(&self, _: &Key, rendered: &Arc<Rendered>) -> u64 {
        rendered.weight()
    }
}

pub(crate) struct Variants {
    memory: quick_cache::sync::Cache<Key, Arc<Rendered>, Weigh>,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    jobs: Sender<Job>,
    disk: Option<Disk>,
    /// With an object-store library and `--store-renditions`: the fleet's renditions.
    shared: Option<Arc<dyn Shared>>,
    budget: Budget,
    /// Each client's budget of renders, when there is one.
    budgets: Option<RenderBudgets>,
    options: Options,
    stats: &'static VariantStats,
}

impl Variants {
    /// Starts the render threads (they live as long as the process).
    pub(crate) fn start(
        options: Options,
        shared: Option<Arc<dyn Shared>>,
        stats: &'static VariantStats,
    ) -> anyhow::Result<&'static Variants> {
        let (jobs, queue) = crossbeam_channel::bounded(options.queue);
        let disk = options.dir.as_deref().and_then(|dir| Disk::open(dir, options.disk_bytes));
        let memory = quick_cache::sync::Cache::with_weighter(1024, options.memory_bytes, Weigh);
        let variants: &'static Variants = Box::leak(Box::new(Variants {
            memory,
            flights: Mutex::new(HashMap::new()),
            jobs,
            disk,
            shared,
            budget: Budget::new(options.budget_pixels),
            budgets: RenderBudgets::new(options.client_burst, options.client_per_second),
            options,
            stats,
        }));
        for n in 0..variants.options.renderers.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("keiko-render-{n}")).spawn(move || {
                crate::library::lower_priority("renderers", Priority::Idle);
                variants.render_jobs(&queue)
            })?;
        }
        Ok(variants)
    }

    pub(crate) fn max_pixels(&self) -> u64 {
        self.options.max_pixels
    }

    pub(crate) fn avif_max_pixels(&self) -> u64 {
        self.options.avif_max_pixels
    }

    pub(crate) fn max_age(&self) -> u32 {
        self.options.max_age
    }

    /// The rendition if it is in memory.
    pub(crate) fn cached(&self, key: &Key) -> Option<Arc<Rendered>> {
        let found = self.memory.get(key);
        self.stats.looked_up(found.is_some());
        found
    }

    /// A wait for the render of `key` from `image`: one already in flight, or a new one if the
    /// queue has room and the client (found by `client` only then) has budget for it.
    pub(crate) fn request(
        &self,
        key: Key,
        image: Arc<Image>,
        client: impl FnOnce() -> Client,
    ) -> Result<Waiter, Refused> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // A closed flight (its render gave up) is replaced by a new one.
        if let Some(waiter) = flights.get(&key).and_then(Flight::join) {
            return Ok(waiter);
        }
        // Rendered between the caller's look and this lock.
        if let Some(rendered) = self.memory.get(&key) {
            return Ok(Flight::new(OnceLock::from(Ok(rendered))).join().expect("a new flight is open"));
        }
        if self.jobs.is_full() {
            self.stats.rejected();
            return Err(Refused::Busy);
        }
        if let Some(budgets) = &self.budgets {
            if let Err(wait) = budgets.take(client(), Instant::now()) {
                self.stats.over_budget();
                return Err(Refused::OverBudget(wait));
            }
        }
        let flight = Flight::new(OnceLock::new());
        let waiter = flight.join().expect("a new flight is open");
        match self.jobs.try_send(Job { key, image, flight: flight.clone() }) {
            Ok(()) => {
                flights.insert(key, flight);
                self.stats.set_queued(self.jobs.len());
                Ok(waiter)
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.rejected();
                Err(Refused::Busy)
            }
        }
    }

    fn render_jobs(&self, queue: &Receiver<Job>) {
        for job in queue {
            self.stats.set_queued(queue.len());
            self.run(&job);
            if queue.is_empty() {
                // SAFETY: only releases free memory of the calling thread's heap.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        }
    }

    /// Makes `job`'s rendition, keeps it in memory, and hands the result to every request that
    /// waits for it.
    fn run(&self, job: &Job) {
        {
            // A bug in a decoder or filter must fail this one request, not leave its waiters
            // hanging and the pool a thread short.
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.make(job)));
            let result = made
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the renderer panicked")))
                .map(Arc::new)
                .map_err(Arc::new);
            match &result {
                Ok(rendered) => {
                    self.memory.insert(job.key, rendered.clone());
                    self.stats.set_memory_bytes(self.memory.weight());
                }
                Err(e) if e.is::<Cancelled>() => self.stats.cancelled(),
                Err(e) => {
                    tracing::warn!(
                        "cannot render {:?} of {}: {e:#}",
                        job.key.variant,
                        Shown(job.image.name())
                    )
                }
            }
            let _ = job.flight.result.set(result);
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            // Only this job's flight: a closed one may have been replaced already.
            if flights.get(&job.key).is_some_and(|f| Arc::ptr_eq(f, &job.flight)) {
                flights.remove(&job.key);
            }
            drop(flights);
            job.flight.done.notify(usize::MAX);
        }
    }

    /// The rendition from disk, or from the fleet's store, or rendered (and then kept on disk and
    /// offered to the fleet).
    fn make(&self, job: &Job) -> anyhow::Result<Rendered> {
        if let Some(ms) = test_hooks::knob(test_hooks::RENDER_DELAY_MS) {
            // Slow renders make the queue fill up.
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let settings = self.options.settings;
        let file = file_name(&job.key, settings);
        let codec = match job.key.variant.form {
            Form::Ascii(_) => None,
            Form::Picture(_) => Some(job.key.variant.codec.unwrap_or(Codec::Webp)),
        };
        let from_disk = self.disk.as_ref().and_then(|d| d.get(&file, |b| is_whole(codec, b)));
        if from_disk.is_some() {
            self.stats.read_from_disk();
        }
        let stored = from_disk.or_else(|| {
            let fetched = self.shared.as_ref()?.fetch(&format!("renditions/{file}"))?;
            is_whole(codec, &fetched).then(|| self.keep_on_disk(&file, fetched))
        });
        let output = match stored {
            Some(bytes) => match codec {
                None => Output::Text(bytes),
                Some(codec) => Output::Picture(codec, bytes),
            },
            None => {
                let started = Instant::now();
                let go_on = || if job.flight.abandoned() { Err(Cancelled) } else { Ok(()) };
                go_on()?;
                let body = job.image.webp.body.bytes();
                let _permit = self.budget.acquire(render::cost(body, &job.key.variant), &go_on)?;
                self.stats.set_pixels_in_flight(self.budget.used());
                let output = render::render(body, &job.key.variant, settings, &go_on)?;
                self.stats.rendered(started.elapsed());
                let (Output::Picture(_, bytes) | Output::Text(bytes)) = output;
                let bytes = self.keep_on_disk(&file, bytes);
                if let Some(shared) = &self.shared {
                    shared.publish(&format!("renditions/{file}"), &bytes);
                }
                match codec {
                    None => Output::Text(bytes),
                    Some(codec) => Output::Picture(codec, bytes),
                }
            }
        };
        Ok(self.represent(&job.image, output))
    }

    /// Keeps a rendition on disk, when renditions are kept there; hands it back.
    fn keep_on_disk(&self, file: &str, bytes: Vec<u8>) -> Vec<u8> {
        if let Some(disk) = &self.disk {
            disk.put(file, &bytes);
            self.stats.set_disk_bytes(disk.used());
        }
        bytes
    }

    fn represent(&self, image: &Image, output: Output) -> Rendered {
        let max_age = self.options.max_age;
        let representation = |content_type: &str, extra: &str, body: Vec<u8>| Representation {
            heads: ImageHeads::new(image.name(), content_type, body.len(), digest(&body), max_age, extra),
            body: body.into(),
        };
        match output {
            Output::Picture(codec, bytes) => Rendered {
                codec: Some(codec),
                plain: representation(codec.content_type(), "", bytes),
                gzip: None,
            },
            Output::Text(text) => {
                let gzipped = gzip(&text);
                let vary = "Vary: Accept-Encoding\r\n";
                Rendered {
                    codec: None,
                    plain: representation("text/plain; charset=utf-8", vary, text),
                    gzip: Some(representation(
                        "text/plain; charset=utf-8",
                        "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n",
                        gzipped,
                    )),
                }
            }
        }
    }
}

/// A rendition's file name on disk: its key's hash (with the encoder settings, which change its
/// bytes), and an extension that says what it is.
fn file_name(key: &Key, settings: Settings) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&key.source.to_le_bytes());
    hasher.update(format!("{:?};{:?}", key.variant, settings).as_bytes());
    let ext = match key.variant.form {
        Form::Picture(_) => key.variant.codec.unwrap_or(Codec::Webp).name(),
        Form::Ascii(_) => "txt",
    };
    format!("{}.{ext}", &hasher.finalize().to_hex()[..32])
}

/// Whether `bytes` from the disk cache look like a whole file of `codec` (text when None): a
/// WebP's RIFF size matching its length, an AVIF's `ftyp` brand, a JPEG's start and end markers.
fn is_whole(codec: Option<Codec>, bytes: &[u8]) -> bool {
    match codec {
        None => !bytes.is_empty(),
        Some(Codec::Webp) => {
            bytes.len() >= 20
                && &bytes[..4] == b"RIFF"
                && &bytes[8..12] == b"WEBP"
                && u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize + 8 == bytes.len()
        }
        Some(Codec::Avif) => bytes.len() > 12 && &bytes[4..12] == b"ftypavif",
        Some(Codec::Jpeg) => bytes.starts_with(&[0xFF, 0xD8]) && bytes.ends_with(&[0xFF, 0xD9]),
    }
}

/// gzip with a zero timestamp, so the same text always compresses to the same bytes (and ETag).
fn gzip(text: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 3), flate2::Compression::default());
    encoder.write_all(text).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_is_deterministic_and_decodes_to_the_text() {
        let text = b"@@##**\n..  ::\n".repeat(50);
        assert_eq!(gzip(&text), gzip(&text));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&text)[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn file_names_differ_by_every_part_of_the_key() {
        let settings = Settings {
            mode: crate::library::WebpMode::Lossless,
            max_side: 0,
            animation: crate::library::encode::TEST_BUDGET,
        };
        let key = Key {
            source: 1,
            image: 1,
            variant: Variant { codec: Some(Codec::Webp), ..Variant::of(Form::Picture(Some((3, 4)))) },
        };
        let base = file_name(&key, settings);
        assert_eq!(base, file_name(&Key { image: 2, ..key }, settings), "names sharing a body share files");
        assert_ne!(base, file_name(&Key { source: 2, ..key }, settings));
        let gray = Variant { grayscale: true, ..key.variant };
        assert_ne!(base, file_name(&Key { variant: gray, ..key }, settings));
        let lossy = Settings {
            mode: crate::library::WebpMode::Lossy(75),
            max_side: 0,
            animation: crate::library::encode::TEST_BUDGET,
        };
        assert_ne!(base, file_name(&key, lossy));
        assert!(base.ends_with(".webp"));
    }
}
