//! The serving side: one OS thread per core, each running its own monoio event loop with its own
//! SO_REUSEPORT listener, so the kernel spreads connections across the loops and no loop ever
//! waits for another.
//!
//! This module binds the listeners (before any thread starts, so that a busy port is reported
//! like any other startup error), starts the loops, waits until each one runs, and stops them.
//! Stopping is driven from outside the loops: `shutdown(2)` on each listening socket wakes its
//! pending accept with an error, and the loop, seeing the stop flag, drains its connections and
//! returns. No accept or read future is ever dropped mid-flight to achieve this.

mod conn;
mod conns;
mod dispatch;
mod event_loop;
mod images;
mod info;
mod operator;
mod renditions;
mod reply;
mod shared;
mod stats;
mod wire;
mod worker;
mod writes;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context;
use crossbeam_channel::Sender;
use socket2::{Domain, Protocol, Socket, Type};

pub(crate) use conns::Timeouts;
pub(crate) use event_loop::Driver;
pub(crate) use shared::{Flags, Shared};
pub(crate) use stats::ServerStats;

use crate::hits::{Hit, HitStats, Recorder};

/// Pending-connection queue per listener: a spike of thousands of new connections must not
/// overflow it (monoio's default of 1024 does). The kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;
/// How long a silent new connection is held back before it is accepted anyway (see `defer_accept`).
const DEFER_ACCEPT_SECS: libc::c_int = 1;

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
pub(crate) fn raise_fd_limit() -> u64 {
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
pub(crate) struct Server {
    threads: Vec<JoinHandle<()>>,
    /// Duplicates of the loops' listening sockets, to shut them down from outside.
    listeners: Vec<std::net::TcpListener>,
    shared: &'static Shared,
}

/// Starts one event loop per listener and returns once all of them serve; `hit_stats` holds a
/// served-hits counter for each.
pub(crate) fn start(
    listeners: Vec<std::net::TcpListener>,
    shared: &'static Shared,
    hits: Sender<Hit>,
    hit_stats: &'static HitStats,
    driver: Driver,
) -> anyhow::Result<(Server, Driver)> {
    let (ready_tx, ready) = mpsc::channel();
    let mut server = Server { threads: Vec::new(), listeners: Vec::new(), shared };
    for (index, listener) in listeners.into_iter().enumerate() {
        server.listeners.push(listener.try_clone().context("cannot duplicate a listening socket")?);
        let recorder = Recorder::new(hits.clone(), hit_stats.served_by(index));
        let ready_tx = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("keiko-loop-{index}"))
            .spawn(move || event_loop::run(index, listener, shared, recorder, driver, ready_tx))
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
                anyhow::bail!(e.0);
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
    pub(crate) fn drain(&self) {
        self.shared.flags.start_draining();
    }

    /// Stops accepting, lets every loop finish the responses in flight, and waits for them.
    pub(crate) fn stop(self) {
        self.shared.flags.start_stopping();
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
