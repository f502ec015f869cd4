//! The serving side: one OS thread per core, each running its own monoio event loop with its own
//! SO_REUSEPORT listener, so the kernel spreads connections across the loops and no loop ever
//! waits for another.
//!
//! This module binds the listeners (before any thread starts, so that a busy port is reported
//! like any other startup error), starts the loops, waits until each one runs, and stops them.
//! Stopping is driven from outside the loops: `shutdown(2)` on each listening socket wakes its
//! pending accept with an error, and the loop, seeing the stop flag, drains its connections and
//! returns. No accept or read future is ever dropped mid-flight to achieve this.

mod admin;
mod api;
mod conn;
mod conns;
mod wire;
mod worker;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Sender;
use socket2::{Domain, Protocol, Socket, Type};

use crate::admin::Admin;
use crate::catalog::Published;
use crate::hits::{Hit, Recorder};
use crate::metrics::Metrics;
use crate::variants::Variants;

/// Pending-connection queue per listener: a spike of thousands of new connections must not
/// overflow it (monoio's default of 1024 does). The kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;
/// How long a silent new connection is held back before it is accepted anyway (see `defer_accept`).
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// What every event loop reads and nothing writes after startup (but the stop flag).
pub struct Shared {
    /// The library's newest catalogue snapshot, which each loop takes on its tick.
    pub published: &'static Published,
    pub metrics: &'static Metrics,
    /// Renditions: the shared cache and the render pool.
    pub variants: &'static Variants,
    /// The write routes, when an admin token is configured.
    pub admin: Option<&'static Admin>,
    pub header_timeout: Duration,
    /// Open connections per event loop; past it, new ones are closed at once.
    pub max_conns: usize,
    stopping: AtomicBool,
    draining: AtomicBool,
}

impl Shared {
    pub fn new(
        published: &'static Published,
        metrics: &'static Metrics,
        variants: &'static Variants,
        admin: Option<&'static Admin>,
        header_timeout: Duration,
        max_conns: usize,
    ) -> Shared {
        Shared {
            published,
            metrics,
            variants,
            admin,
            header_timeout,
            max_conns,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// True once shutdown announced itself: `/readyz` answers 503 and responses close.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The event loop an I/O driver runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    /// monoio's legacy driver, for kernels or sandboxes without io_uring.
    Epoll,
}

impl Driver {
    /// io_uring when this kernel offers what monoio needs, epoll otherwise (with one warning).
    pub fn detect() -> Driver {
        if monoio::utils::detect_uring() {
            return Driver::IoUring;
        }
        let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        let why = if forced { "MONOIO_FORCE_LEGACY_DRIVER is set" } else { "the kernel does not offer it" };
        warn_io_uring_unavailable(why);
        Driver::Epoll
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// The one warning about falling back to epoll, however many threads fall back.
fn warn_io_uring_unavailable(why: &str) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!("io_uring is not available ({why}): serving with the slower epoll driver")
    });
}

/// `count` listening sockets on `addr`, all in one SO_REUSEPORT group.
pub fn bind(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    // First a plain bind: with SO_REUSEPORT alone, a port that another program holds with
    // SO_REUSEPORT too would be silently shared instead of reported as in use. It also turns
    // port 0 into the actual port every listener must share.
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .with_context(|| format!("cannot listen on {addr}"))?;
    (0..count)
        .map(|_| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            // Inherited by every accepted connection: one setsockopt per listener, not per client.
            socket.set_nodelay(true)?;
            defer_accept(&socket)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Raises this process's open-file limit to the most it may have (as Go and nginx do): every
/// connection is a descriptor, and the usual soft limit of 1024 is far below what one loop can
/// serve. Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Makes the kernel hold a new connection back until its first bytes arrive (TCP_DEFER_ACCEPT,
/// which socket2 does not offer). HTTP clients speak first, so the accept then finds the request
/// already there: one read instead of a read that waits, a wake-up and another read. On loopback
/// that cut keiko's CPU per new-connection request by about a third (docs/BENCHMARKS.md). A
/// client that stays silent is accepted after about `DEFER_ACCEPT_SECS` anyway, and the header
/// timeout then applies to it.
fn defer_accept(socket: &Socket) -> std::io::Result<()> {
    let secs: libc::c_int = DEFER_ACCEPT_SECS;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The running event loops.
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    /// Duplicates of the loops' listening sockets, to shut them down from outside.
    listeners: Vec<std::net::TcpListener>,
    shared: &'static Shared,
}

/// Starts one event loop per listener and returns once all of them serve.
pub fn start(
    listeners: Vec<std::net::TcpListener>,
    shared: &'static Shared,
    hits: Sender<Hit>,
    driver: Driver,
) -> anyhow::Result<(Server, Driver)> {
    let (ready_tx, ready) = mpsc::channel();
    let mut server = Server { threads: Vec::new(), listeners: Vec::new(), shared };
    for (index, listener) in listeners.into_iter().enumerate() {
        server.listeners.push(listener.try_clone().context("cannot duplicate a listening socket")?);
        let recorder = Recorder::new(hits.clone());
        let ready_tx = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("keiko-loop-{index}"))
            .spawn(move || worker::run(index, listener, shared, recorder, driver, ready_tx))
            .context("cannot start an event-loop thread")?;
        server.threads.push(thread);
    }
    drop(ready_tx);
    let mut got = driver;
    for _ in 0..server.threads.len() {
        match ready.recv() {
            Ok(Ok(Driver::Epoll)) => got = Driver::Epoll,
            Ok(Ok(Driver::IoUring)) => {}
            Ok(Err(e)) => {
                server.stop();
                anyhow::bail!(e);
            }
            Err(_) => {
                server.stop();
                anyhow::bail!("an event-loop thread ended during startup");
            }
        }
    }
    Ok((server, got))
}

impl Server {
    /// Begins a graceful stop: `/readyz` answers 503 and every response closes its connection,
    /// while the loops go on serving, so that a load balancer's health check moves the traffic
    /// away before the listeners close.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Stops accepting, lets every loop finish the responses in flight, and waits for them.
    pub fn stop(self) {
        self.shared.stopping.store(true, Ordering::Release);
        for listener in &self.listeners {
            // Wakes the loop's pending accept with an error; the loop sees `stopping` and ends.
            // SAFETY: plain syscall on a socket this struct keeps open.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("an event-loop thread panicked");
            }
        }
    }
}
