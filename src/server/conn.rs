//! One client connection, from accept to close: read request heads into a fixed 8 KiB buffer,
//! answer every complete one in order (pipelining) through `dispatch`, write each answer, go back
//! to reading. After an error answer that ends the connection it lingers, so the client reads the
//! answer before the close.
//!
//! This is the hot path. Per request it must never lock, allocate or block: parsing borrows from
//! the buffer, the answer is loaded into the connection's reusable [`Wire`], a hit is a
//! plain increment in this loop's table, and the counters and the connection's slot (what it
//! waits for, for the header and send timeouts) belong to this thread alone (two reads of the
//! time-stamp counter a request). The first read and each write are tried as plain non-blocking syscalls before any
//! trip through the ring, because they nearly always complete at once: TCP_DEFER_ACCEPT hands
//! over a new connection with its request already there, and a response fits the socket's
//! buffer. `tests/hot_path.rs` counts the allocations of a keep-alive client.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::reply::{Reply, Sent};
use super::wire::{self, Wire};
use super::worker::Worker;
use super::{conns, dispatch};
use crate::http::request::{self, Parsed, Rejection, MAX_HEAD};
use crate::http::response::{Connection, BAD_REQUEST, HEAD_TOO_LARGE, REQUEST_TIMEOUT};
use crate::http::route::Route;

/// After an error response, how long and how much the client may still send before the close.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

pub(crate) async fn serve(mut stream: TcpStream, w: Rc<Worker>) {
    let slot = w.conns.open(stream.as_raw_fd(), w.stats);
    let (mut buf, mut wire) = w.buffers();
    // When the connection began waiting for the request being read (coarse clock).
    let mut waiting_since = None;
    // When the read that brought the first byte of the next request to answer completed: the
    // start of its latency (set by the first read, whose buffer is empty).
    let mut first_byte_at = None;
    let mut fresh = true;
    'connection: loop {
        slot.waiting(*waiting_since.get_or_insert_with(|| w.now()));
        let filled = buf.len();
        let read = match std::mem::take(&mut fresh).then(|| read_now(stream.as_raw_fd(), &mut buf)).flatten()
        {
            Some(read) => read,
            None => {
                let (read, back) = stream.read(buf.slice_mut(filled..MAX_HEAD)).await;
                buf = back.into_inner();
                read
            }
        };
        let read_at = w.timer.raw();
        if filled == 0 {
            first_byte_at = Some(read_at);
        }
        slot.done_waiting();
        if !matches!(read, Ok(n) if n > 0) {
            if slot.expired() && !buf.is_empty() {
                let reply = Reply::new(&mut wire, w.tails(), Route::Unknown, Connection::Close, false);
                let sent = reply.canned(&REQUEST_TIMEOUT);
                slot.sending(w.now());
                (_, wire) = wire::write(&mut stream, wire, true, &|| slot.sending(w.now())).await;
                w.stats.counted(sent.route, sent.status);
            }
            break;
        }

        let mut used = 0;
        loop {
            let sent = match request::parse(&buf[used..]) {
                Parsed::Partial => break,
                Parsed::Complete { request, len } => {
                    used += len;
                    waiting_since = None;
                    dispatch::answer(&w, &mut stream, &request, &buf[used..], &mut wire).await
                }
                Parsed::Rejected(rejection) => reject(&w, rejection, &mut wire),
            };
            let ends = sent.connection == Connection::Close;
            slot.sending(w.now());
            let (written, back) = wire::write(&mut stream, wire, ends, &|| slot.sending(w.now())).await;
            slot.done_waiting();
            wire = back;
            let took = w.timer.delta_as_nanos(first_byte_at.unwrap_or(read_at), w.timer.raw());
            w.stats.responded(sent.route, sent.status, Duration::from_nanos(took));
            if let Some((codec, bytes)) = sent.picture {
                w.stats.sent_picture(codec, bytes);
            }
            // Anything left in the buffer came with the last read.
            first_byte_at = Some(read_at);
            if written.is_err() {
                break 'connection;
            }
            if let Some(image) = sent.hit {
                w.hits.record(image);
            }
            if ends {
                if sent.status.is_error() {
                    // Boxed: its timer is 128-byte aligned, which would make every connection's
                    // task an over-aligned (slower) allocation if it sat inline in this future.
                    Box::pin(linger(&mut stream, buf)).await;
                    return;
                }
                break 'connection;
            }
        }
        buf.drain(..used);
    }
    w.give_back(buf, wire);
}

/// A rejected head: 400 or 431, then close.
fn reject(w: &Worker, rejection: Rejection, wire: &mut Wire) -> Sent {
    let reply = Reply::new(wire, w.tails(), Route::Unknown, Connection::Close, false);
    match rejection {
        Rejection::BadRequest => reply.canned(&BAD_REQUEST),
        Rejection::HeadTooLarge => reply.canned(&HEAD_TOO_LARGE),
    }
}

/// Reads what the socket already holds into the free room of `buf`, without waiting: None when
/// nothing is there yet (the caller then waits through the ring).
fn read_now(fd: RawFd, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
    let filled = buf.len();
    let room = MAX_HEAD - filled;
    // SAFETY: recvfrom writes at most `room` bytes into the spare capacity of `buf`, which holds
    // MAX_HEAD bytes; its result is checked before any of them is taken into the Vec.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr().add(filled),
            room,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    match n {
        n if n >= 0 => {
            // SAFETY: the kernel initialised these `n` bytes.
            unsafe { buf.set_len(filled + n as usize) };
            Some(Ok(n as usize))
        }
        _ => match io::Error::last_os_error() {
            e if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => None,
            e => Some(Err(e)),
        },
    }
}

/// Closes after an error response without resetting the connection: stop sending, then read and
/// discard what the client still sends for a moment, so that unread request bytes do not make
/// the kernel answer with a reset that could destroy the response before the client reads it.
async fn linger(stream: &mut TcpStream, mut buf: Vec<u8>) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            buf.clear();
            let (read, back) = stream.read(buf).await;
            buf = back;
            match read {
                Ok(n) if n > 0 => total += n,
                _ => return,
            }
        }
    };
    if monoio::time::timeout(LINGER_TIME, drain).await.is_err() {
        conns::end_reads(stream.as_raw_fd());
    }
}
