//! The hot path's promise, proved: serving a whole image (`GET /`, `GET /images/<name>`, in the
//! format `Accept` chooses) or a rendition already in memory over a keep-alive connection
//! allocates nothing per request. keiko
//! runs in this process, under a global allocator that counts the allocations made on keiko's
//! event-loop threads (named `keiko-loop-N`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::inprocess::InProcess;
use common::{Images, Response};

struct Counting;

/// Allocations made on event-loop threads so far.
static ON_LOOPS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread is an event loop, once it is known to be one.
    static IS_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is one of keiko's event loops. Asks the kernel for the thread's
/// name (prctl allocates nothing) until the answer is yes: a thread gets its name after it starts.
fn on_loop() -> bool {
    IS_LOOP.with(|known| {
        if known.get() {
            return true;
        }
        let mut name = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer given.
        unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
        let is_loop = name.starts_with(b"keiko-loop");
        known.set(is_loop);
        is_loop
    })
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_loop() {
            ON_LOOPS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if on_loop() {
            ON_LOOPS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_loop() {
            ON_LOOPS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Requests per measured run: an allocation per request would show as thousands.
const REQUESTS: u64 = 2000;
/// What else a loop may allocate meanwhile, whatever the request count: a new Date line each
/// second (a few allocations) and the like.
const HOUSEKEEPING: u64 = 60;

#[test]
fn keep_alive_requests_for_images_in_memory_allocate_nothing_per_request() {
    let images = Images::standard();
    // Lossy, so that the JPEG also gets an AVIF encoding that `Accept` can choose.
    let keiko = InProcess::start(images.path(), &["--webp", "auto"]);
    let has_avif = || String::from_utf8_lossy(&keiko.get("/images/photo.jpg/info").body).contains("\"avif\"");
    assert!(common::eventually(Duration::from_secs(60), has_avif), "photo.jpg got no AVIF encoding");
    let stream = TcpStream::connect(keiko.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut get = |path: &str, accept: &str| {
        (&stream).write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{accept}\r\n").as_bytes()).unwrap();
        let r = Response::read(&mut reader, false).expect("a response");
        assert_eq!(r.status, 200, "{path}");
    };
    let chrome = "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n";
    for (path, accept) in [
        ("/", ""),
        ("/images/alpha.png", ""),
        ("/images/photo.jpg/8/6", ""),
        ("/images/photo.jpg", chrome),
        ("/images/photo.jpg/8/6", chrome),
    ] {
        // The first requests make what the connection keeps (its buffers, the rendition).
        for _ in 0..50 {
            get(path, accept);
        }
        let before = ON_LOOPS.load(Ordering::Relaxed);
        assert!(
            before > 0,
            "the counter sees none of the loop's allocations (its connection task, its buffers)"
        );
        for _ in 0..REQUESTS {
            get(path, accept);
        }
        let made = ON_LOOPS.load(Ordering::Relaxed) - before;
        eprintln!("{path}: {made} allocations on the event loop for {REQUESTS} requests");
        assert!(made < HOUSEKEEPING, "{path}: {made} allocations on the event loop for {REQUESTS} requests");
    }
    keiko.stop();
}
