//! keiko-baseline: what the original Keiko Corp server (Go) did on every request, built from
//! keiko's own parts, so that `scripts/bench.sh` can put the two side by side on one machine.
//!
//! For every `GET /` it lists the image directory, picks a random image, reads, decodes and
//! encodes it to lossless WebP (keiko's catalogue code, one file at a time), answers, upserts the
//! hit synchronously (keiko's SQLite code: same schema, one transaction per hit) and logs a line.
//! Same flags and environment variables as keiko (`--flush-ms` is accepted and unused: every hit
//! is written before the next request is read).
//!
//! It is deliberately plain: a fixed pool of `--threads` blocking worker threads, each taking one
//! connection at a time from the shared listener and closing it after the response, which keeps
//! the CPU-bound work at one image per core and memory bounded however many clients queue up.
//! SIGINT/SIGTERM stop the accepting and let each worker finish (and record) the request it is on.
//! Nothing here touches keiko's own serving path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use std::path::{Path, PathBuf};

use anyhow::Context;
use keiko::baseline::{bind, decode, encode, list, probe, LibraryOptions, Limits, Settings};
use keiko::config::Config;
use keiko::http::request::{self, Method, Parsed, MAX_HEAD};
use keiko::http::response::{self, Connection, Tail, Tails};
use keiko::http::route::{Endpoint, Pick, Router, NO_PRESETS};
use keiko::Store;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A client that sends nothing for this long is dropped, so it cannot hold a worker forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    let config = Config::from_args();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    match run(&config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    let threads = config.thread_count()?;
    let library = config.library()?;
    let store = Mutex::new((Store::open(&config.db)?, 0));
    if list_images(&config.images)?.is_empty() {
        anyhow::bail!("no image files in {}", config.images.display());
    }
    // keiko's own bind: the same 4096-deep backlog, so a burst of clients is queued, not reset.
    let listener = bind(config.addr, 1)?.remove(0);
    listener.set_nonblocking(false)?;
    tracing::info!(
        "baseline ready: listening on http://{}, {threads} worker thread(s), decoding and encoding on every request",
        listener.local_addr()?
    );
    let stopping = AtomicBool::new(false);
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve(stream, &library, &store) {
                            tracing::warn!("{e:#}");
                        }
                    }
                    Err(_) if stopping.load(Ordering::Acquire) => return,
                    Err(e) => tracing::warn!("accept failed: {e}"),
                }
            });
        }
        signals.forever().next();
        tracing::info!("shutting down");
        stopping.store(true, Ordering::Release);
        // Wakes the workers blocked in accept; the others finish their request first.
        // SAFETY: plain syscall on the listening socket, which outlives this scope.
        unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    });
    Ok(())
}

/// Answers the one request of a connection, then closes it.
fn serve(mut stream: TcpStream, library: &LibraryOptions, store: &Mutex<(Store, u64)>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut buf = vec![0; MAX_HEAD];
    let mut len = 0;
    let (method, path) = loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        match request::parse(&buf[..len]) {
            Parsed::Complete { request, .. } => break (request.method, request.path.to_vec()),
            Parsed::Partial => continue,
            Parsed::Rejected(_) => {
                return send(&mut stream, response::BAD_REQUEST.head, response::BAD_REQUEST.body)
            }
        }
    };
    let random = Endpoint::Image { pick: Pick::Random, variant: None };
    if Router::new(false, &NO_PRESETS).route(method, &path, b"").ok() != Some(random) || method != Method::Get
    {
        return send(&mut stream, response::NOT_FOUND.head, response::NOT_FOUND.body);
    }

    let images = list_images(&library.images)?;
    let (file, name) = &images[fastrand::usize(..images.len())];
    let body = encode_file(file, library.settings, library.limits).with_context(|| name.clone())?;
    send(
        &mut stream,
        &response::image_head(name, "image/webp", body.len(), response::Caching::NoStore, ""),
        &body,
    )?;
    let mut store = store.lock().unwrap();
    let (db, flushes) = &mut *store;
    *flushes += 1;
    db.add(&[name.as_str()], &[1], *flushes).context("cannot record the hit")?;
    tracing::info!("serve {name}");
    Ok(())
}

/// The image files of `dir` by the library's rules, with their names, sorted by name.
fn list_images(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let listing = list(dir).with_context(|| format!("cannot read image directory {}", dir.display()))?;
    Ok(listing.files.into_iter().map(|f| (f.path, f.name)).collect())
}

/// Reads, checks, decodes and encodes one file, with no cache: what the original server did on
/// every request.
fn encode_file(path: &Path, settings: Settings, limits: Limits) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).context("cannot read it")?;
    let (format, _, _) = probe(&bytes, limits.max_pixels)?;
    let decoded = decode(&bytes, format, limits.max_pixels)?;
    encode(&decoded.pixels, settings.for_source(format))
}

fn send(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> anyhow::Result<()> {
    let tails = Tails::at(SystemTime::now(), None);
    stream.write_all(
        &[head, tails.get(Tail { connection: Connection::Close, cors: false, vary_accept: false }), body]
            .concat(),
    )?;
    Ok(())
}
