//! Each event-loop thread's table of its open connections, so that the thread can end the ones
//! that wait too long (the header timeout) and the idle ones at shutdown.
//!
//! Ending a wait must not drop a pending read (monoio can lose data that way), and a timer per
//! read would cost every request. Instead a connection notes in its slot when it starts waiting
//! for a request, and the thread's once-per-tick sweep shuts the read side of overdue sockets
//! with `shutdown(SHUT_RD)`: the pending read then completes with end-of-file and the connection
//! task ends itself, the normal way. Everything here belongs to one thread, so a `RefCell` is
//! all the synchronisation there is.

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
    /// When the connection began waiting for the request it is reading (coarse ms clock), while
    /// it waits for bytes.
    waiting_since: Option<u64>,
    /// The sweep ended the wait because the header timeout passed.
    expired: bool,
}

impl Conns {
    /// Registers a new connection; it is removed when the returned guard drops.
    pub(crate) fn open<'a>(&'a self, fd: RawFd, stats: &'a ThreadStats) -> ConnSlot<'a> {
        stats.connection_opened();
        let key = self.slots.borrow_mut().insert(Slot { fd, waiting_since: None, expired: false });
        ConnSlot { conns: self, stats, key }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Wakes every connection that has waited `timeout_ms` or longer for its request.
    pub(crate) fn expire(&self, now: u64, timeout_ms: u64) {
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if slot.waiting_since.is_some_and(|since| now.saturating_sub(since) >= timeout_ms) {
                slot.expired = true;
                end_wait(slot);
            }
        }
    }

    /// At shutdown: wakes every connection that is waiting for a request. Those in the middle of
    /// answering one finish it and then close by themselves.
    pub(crate) fn end_waits(&self) {
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if slot.waiting_since.is_some() {
                end_wait(slot);
            }
        }
    }
}

fn end_wait(slot: &mut Slot) {
    slot.waiting_since = None;
    end_reads(slot.fd);
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
        self.conns.slots.borrow_mut()[self.key].waiting_since = Some(since);
    }

    /// The wait is over (bytes, end of file or error).
    pub(crate) fn done_waiting(&self) {
        self.conns.slots.borrow_mut()[self.key].waiting_since = None;
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

        conns.expire(10_000, 5_000);
        assert!(s_old.expired() && !s_fresh.expired() && !s_busy.expired());
        assert!(read_side_shut(&mut old));
        assert!(!read_side_shut(&mut fresh));
        assert!(!read_side_shut(&mut busy));
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
