//! Each event-loop thread's table of its open connections, so that the thread can end the ones
//! that wait too long (the header timeout for a request, the send timeout for a client that
//! takes no bytes) and the idle ones at shutdown.
//!
//! Ending a wait must not drop a pending read or write (monoio can lose data that way), and a
//! timer per request would cost every request. Instead a connection notes in its slot when it
//! starts waiting for a request or for the client to take bytes, and the thread's once-per-tick
//! sweep acts on overdue sockets: a read is ended with `shutdown(SHUT_RD)` (it completes with
//! end-of-file), a write with an abortive `shutdown(SHUT_RDWR)` (it fails with EPIPE, and the
//! close then resets the connection, so the kernel does not keep unsent bytes for a client that
//! will never take them). Either way the connection task ends itself, the normal way.
//!
//! The send timeout runs between two successive writes that move bytes, as nginx's
//! `send_timeout` does: a client that reads slowly but steadily is never cut off.
//! Everything here belongs to one thread, so a `RefCell` is all the synchronisation there is.

use std::cell::RefCell;
use std::os::fd::RawFd;

use slab::Slab;

use super::stats::ThreadStats;

#[derive(Default)]
pub(crate) struct Conns {
    slots: RefCell<Slab<Slot>>,
}

struct Slot {
    fd: RawFd,
    wait: Wait,
    /// The sweep ended the wait because the header timeout passed.
    expired: bool,
}

/// What a connection waits for, since when (coarse ms clock).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wait {
    /// Nothing: it is working (or the wait was ended).
    None,
    /// The bytes of the request it began waiting for at this time.
    Request(u64),
    /// The client to take bytes of a response; the time of the last write that moved some.
    Client(u64),
}

/// How long each kind of wait may last, in ms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) header_ms: u64,
    pub(crate) send_ms: u64,
}

impl Conns {
    /// Registers a new connection; it is removed when the returned guard drops.
    pub(crate) fn open<'a>(&'a self, fd: RawFd, stats: &'a ThreadStats) -> ConnSlot<'a> {
        stats.connection_opened();
        let key = self.slots.borrow_mut().insert(Slot { fd, wait: Wait::None, expired: false });
        ConnSlot { conns: self, stats, key }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Wakes every connection that has waited for its request, or for its client to take bytes,
    /// past its timeout. Returns how many were ended for the send timeout.
    pub(crate) fn expire(&self, now: u64, timeouts: Timeouts) -> u64 {
        let mut sends = 0;
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            match slot.wait {
                Wait::Request(since) if now.saturating_sub(since) >= timeouts.header_ms => {
                    slot.expired = true;
                    slot.wait = Wait::None;
                    end_reads(slot.fd);
                }
                Wait::Client(since) if now.saturating_sub(since) >= timeouts.send_ms => {
                    slot.wait = Wait::None;
                    abort(slot.fd);
                    sends += 1;
                }
                _ => {}
            }
        }
        sends
    }

    /// At shutdown: wakes every connection that is waiting for a request. Those in the middle of
    /// answering one finish it and then close by themselves.
    pub(crate) fn end_waits(&self) {
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if matches!(slot.wait, Wait::Request(_)) {
                slot.wait = Wait::None;
                end_reads(slot.fd);
            }
        }
    }
}

/// Fails any write pending on socket `fd`, and makes its close a reset.
fn abort(fd: RawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: plain syscalls on a socket the connection task keeps open; `linger` outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Completes any read pending on socket `fd` with end-of-file, at once. Dropping a read future
/// does not take its operation out of the ring (keiko's monoio has no async-cancel), and the
/// pending read would keep the socket open after its close for as long as the client stays
/// silent; so a read is ended this way, never abandoned (after a timeout, its caller calls this).
pub(crate) fn end_reads(fd: RawFd) {
    // SAFETY: a plain syscall on a socket its caller keeps open.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// A connection's entry in the table.
pub(crate) struct ConnSlot<'a> {
    conns: &'a Conns,
    stats: &'a ThreadStats,
    key: usize,
}

impl ConnSlot<'_> {
    /// The connection is about to wait for bytes of a request it began waiting for at `since`.
    pub(crate) fn waiting(&self, since: u64) {
        self.set(Wait::Request(since));
    }

    /// The connection is about to write, or a write just moved bytes, at `now`: the client has
    /// the send timeout from now to take more.
    pub(crate) fn sending(&self, now: u64) {
        self.set(Wait::Client(now));
    }

    /// The wait is over (bytes, end of file or error; the response written).
    pub(crate) fn done_waiting(&self) {
        self.set(Wait::None);
    }

    fn set(&self, wait: Wait) {
        self.conns.slots.borrow_mut()[self.key].wait = wait;
    }

    /// Whether the header timeout ended the last wait.
    pub(crate) fn expired(&self) -> bool {
        self.conns.slots.borrow()[self.key].expired
    }
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        self.conns.slots.borrow_mut().remove(self.key);
        self.stats.connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, client)
    }

    fn read_side_shut(s: &mut TcpStream) -> bool {
        s.set_nonblocking(true).unwrap();
        matches!(s.read(&mut [0; 8]), Ok(0))
    }

    #[test]
    fn only_connections_past_the_timeout_are_woken() {
        let stats = ThreadStats::default();
        let conns = Conns::default();
        let (mut old, _c1) = pair();
        let (mut fresh, _c2) = pair();
        let (mut busy, _c3) = pair();
        let s_old = conns.open(old.as_raw_fd(), &stats);
        let s_fresh = conns.open(fresh.as_raw_fd(), &stats);
        let s_busy = conns.open(busy.as_raw_fd(), &stats);
        s_old.waiting(1_000);
        s_fresh.waiting(9_500);
        s_busy.waiting(0);
        s_busy.done_waiting();

        assert_eq!(conns.expire(10_000, Timeouts { header_ms: 5_000, send_ms: 1_000 }), 0);
        assert!(s_old.expired() && !s_fresh.expired() && !s_busy.expired());
        assert!(read_side_shut(&mut old));
        assert!(!read_side_shut(&mut fresh));
        assert!(!read_side_shut(&mut busy));
    }

    #[test]
    fn a_client_that_takes_no_bytes_past_the_send_timeout_is_cut_off() {
        let stats = ThreadStats::default();
        let conns = Conns::default();
        let (stalled, mut c1) = pair();
        let (steady, _c2) = pair();
        let s_stalled = conns.open(stalled.as_raw_fd(), &stats);
        let s_steady = conns.open(steady.as_raw_fd(), &stats);
        s_stalled.sending(1_000);
        s_steady.sending(1_000);
        s_steady.sending(9_500);
        let timeouts = Timeouts { header_ms: 100, send_ms: 5_000 };
        assert_eq!(conns.expire(10_000, timeouts), 1, "the send timeout is not the header timeout");
        assert!(!s_stalled.expired(), "no 408 for a client that did not read");
        assert!((&stalled).write(b"x").is_err(), "its writes fail");
        drop(s_stalled);
        drop(stalled);
        // Nothing was queued here, so a FIN may come before the reset; with unsent bytes (a client
        // that stopped reading) the close is a reset at once.
        let ended = |r: std::io::Result<usize>| matches!(r, Ok(0)) || r.is_err();
        assert!(ended(c1.read(&mut [0; 8])) && ended(c1.read(&mut [0; 8])), "the connection ended");
        assert_eq!(conns.expire(10_000, timeouts), 0, "the steady one moved bytes at 9.5 s");
    }

    #[test]
    fn shutdown_wakes_waiting_connections_only() {
        let stats = ThreadStats::default();
        let conns = Conns::default();
        let (mut idle, _c1) = pair();
        let (mut busy, mut c2) = pair();
        let s_idle = conns.open(idle.as_raw_fd(), &stats);
        let _s_busy = conns.open(busy.as_raw_fd(), &stats);
        s_idle.waiting(0);
        conns.end_waits();
        assert!(!s_idle.expired(), "shutdown is not a timeout");
        assert!(read_side_shut(&mut idle));
        c2.write_all(b"x").unwrap();
        busy.set_nonblocking(false).unwrap();
        assert_eq!(busy.read(&mut [0; 8]).unwrap(), 1, "a busy connection keeps reading");
        assert_eq!(conns.len(), 2);
        drop(s_idle);
        assert_eq!(conns.len(), 1);
    }
}
