//! A response on its way to the socket: up to three byte slices handed to the kernel in one
//! sendmsg (or, when the socket's buffer is full, writev through the ring), or, for a large image
//! body, head and tail with sendmsg followed by the body with sendfile(2).
//!
//! monoio's rent-style I/O takes ownership of the buffer for as long as the kernel may read it, so
//! the iovec array lives on the heap (its address must not move with the value) and the value
//! keeps alive everything the iovecs point to: the per-second [`Tails`] and the catalogue snapshot
//! an image came from through `Rc`s (so a body stays mapped even if the library drops its image
//! meanwhile), a rendition through its `Arc`, and the bytes of a rendered response in `rendered`. The canned responses are
//! `'static`. A connection allocates one `Wire` and reuses it for every response.
//!
//! Large bodies in responses that end their connection go out with sendfile: copying them into
//! the socket is most of what serving them costs, and sendfile hands the kernel references to the
//! catalogue's pages instead. Measured on loopback (docs/BENCHMARKS.md), that saves about a fifth of
//! the server's CPU per request with new connections, breaks even for 30-70 KB bodies, and costs
//! about 40% more on busy keep-alive connections, where the receiving side then merges skbs full of
//! shared page references instead of copying private ones (TCPRcvCoalesce rises 30-fold); so
//! keep-alive responses are copied. sendfile has no io_uring form: it runs as a non-blocking
//! syscall on the event loop, which waits (through io_uring) for the socket to become writable
//! whenever the send buffer is full.
//!
//! A response that ends its connection is first offered to the kernel with a non-blocking
//! sendmsg carrying MSG_MORE, which nearly always takes it whole: the kernel holds the bytes until
//! the close that follows and sends them with the FIN in one segment, one packet fewer per
//! connection for the server and the client. A keep-alive response goes through the ring, where
//! the loop batches it with every other connection's operations (measured: 6% less CPU per
//! keep-alive request than a sendmsg syscall each, docs/BENCHMARKS.md section 10).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;

use crate::catalog::Catalog;
use crate::http::response::{Connection, Tail, Tails};
use crate::variants::spec::Codec;
use crate::variants::Rendered;

/// A response on its way. Boxed whole: it moves into every write and back, which is then the
/// move of one pointer, and the iovecs the kernel reads stay where they are.
pub(crate) struct Wire(Box<Parts>);

pub(crate) struct Parts {
    iov: [libc::iovec; 3],
    /// First iovec not yet fully written.
    first: usize,
    tails: Option<Rc<Tails>>,
    /// The snapshot that owns the image head and body the iovecs point to ...
    catalog: Option<Rc<Catalog>>,
    /// ... or the rendition that does.
    rendition: Option<Arc<Rendered>>,
    rendered: Vec<u8>,
    /// A body still to send with sendfile(2) after the iovecs.
    file: Option<FileBody>,
}

/// `len` bytes at `offset` of the file `fd` (an image body, which the Wire's snapshot keeps open).
struct FileBody {
    fd: RawFd,
    offset: libc::off_t,
    len: usize,
}

impl std::ops::Deref for Wire {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl std::ops::DerefMut for Wire {
    fn deref_mut(&mut self) -> &mut Parts {
        &mut self.0
    }
}

impl Wire {
    pub(crate) fn new() -> Wire {
        Wire(Box::new(Parts {
            iov: [iovec(&[]); 3],
            first: 3,
            tails: None,
            catalog: None,
            rendition: None,
            rendered: Vec::new(),
            file: None,
        }))
    }

    /// Lets go of everything the last response held (its snapshot, rendition, tails), so that the
    /// Wire can wait for another connection without keeping any of it alive.
    pub(crate) fn clear(&mut self) {
        self.set([iovec(&[]); 3], None, None, None, None);
        self.first = 3;
        self.rendered.clear();
        self.rendered.shrink_to(KEPT_RENDERED);
    }

    /// Points the iovecs at a new response and keeps alive what they point into.
    fn set(
        &mut self,
        iov: [libc::iovec; 3],
        tails: Option<Rc<Tails>>,
        catalog: Option<Rc<Catalog>>,
        rendition: Option<Arc<Rendered>>,
        file: Option<FileBody>,
    ) {
        self.iov = iov;
        self.first = 0;
        self.tails = tails;
        self.catalog = catalog;
        self.rendition = rendition;
        self.file = file;
    }

    /// Loads `head`, the tail `tail`, then `body`.
    pub(crate) fn load(&mut self, head: &'static [u8], tails: Rc<Tails>, tail: Tail, body: &'static [u8]) {
        let iov = [iovec(head), iovec(tails.get(tail)), iovec(body)];
        self.set(iov, Some(tails), None, None, None);
    }

    /// Loads a rendition: its gzip or plain representation, with the head for a named or a random
    /// route, the tail `tail`, then the body unless `head_only`.
    pub(crate) fn load_rendition(
        &mut self,
        rendition: Arc<Rendered>,
        gzip: bool,
        named: bool,
        tails: Rc<Tails>,
        tail: Tail,
        head_only: bool,
    ) {
        let representation = rendition.representation(gzip);
        let body = if head_only { &[][..] } else { &representation.body[..] };
        let iov = [iovec(representation.heads.get(named)), iovec(tails.get(tail)), iovec(body)];
        self.set(iov, Some(tails), None, Some(rendition), None);
    }

    /// Loads image `index` of `catalog`: its head (for a named or a random route), the tail
    /// `tail`, then its body unless `head_only`. A large body in a response that ends the
    /// connection goes out with sendfile(2) (which leaves the socket non-blocking: fine for its
    /// last response).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load_image(
        &mut self,
        catalog: Rc<Catalog>,
        index: usize,
        codec: Codec,
        named: bool,
        tails: Rc<Tails>,
        tail: Tail,
        head_only: bool,
    ) {
        let image = catalog.image(index);
        let encoded = image.encoded(codec).unwrap_or(&image.webp);
        let body = if head_only { &[][..] } else { encoded.body.bytes() };
        let sendfile = body.len() >= SENDFILE_MIN && tail.connection == Connection::Close;
        let file = sendfile.then(|| FileBody { fd: encoded.body.fd(), offset: 0, len: body.len() });
        let in_iov = if sendfile { &[][..] } else { body };
        let iov = [iovec(encoded.heads.get(named)), iovec(tails.get(tail)), iovec(in_iov)];
        self.set(iov, Some(tails), Some(catalog), None, file);
    }

    /// The buffer a rendered response is built in, for [`Wire::load_rendered`].
    pub(crate) fn rendered_mut(&mut self) -> &mut Vec<u8> {
        &mut self.rendered
    }

    /// Loads the response in [`Wire::rendered_mut`]: head up to `body_at`, the tail, then the body
    /// unless `head_only`.
    pub(crate) fn load_rendered(&mut self, body_at: usize, tails: Rc<Tails>, tail: Tail, head_only: bool) {
        let (head, body) = self.rendered.split_at(body_at);
        let body = if head_only { &body[..0] } else { body };
        let iov = [iovec(head), iovec(tails.get(tail)), iovec(body)];
        self.set(iov, Some(tails), None, None, None);
    }

    fn is_written(&self) -> bool {
        self.iov[self.first..].iter().all(|v| v.iov_len == 0)
    }

    /// Marks `n` more bytes as written.
    fn advance(&mut self, mut n: usize) {
        let parts = &mut *self.0;
        while n > 0 && parts.first < 3 {
            let v = &mut parts.iov[parts.first];
            let step = n.min(v.iov_len);
            // SAFETY: `step` is within the slice this iovec describes.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(step) }.cast();
            v.iov_len -= step;
            n -= step;
            if v.iov_len == 0 {
                parts.first += 1;
            }
        }
    }
}

fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() }
}

// SAFETY: the iovecs live in the heap, where they stay when the Wire moves, and every slice
// they describe is either 'static or owned by the Wire (`tails`, `catalog`, `rendition`,
// `rendered`), which is not touched while the kernel holds it.
unsafe impl IoVecBuf for Wire {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.first.min(2)..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        3 - self.first.min(3)
    }
}

/// Capacity of the rendered-response buffer a cleared Wire keeps (a `/metrics` page fits).
const KEPT_RENDERED: usize = 64 * 1024;

/// Bodies at least this large are sent with sendfile(2) when the response ends the connection.
const SENDFILE_MIN: usize = 64 * 1024;

/// Writes the whole response, however many calls the socket needs; `ends_connection`: the
/// connection closes right after it.
///
/// A response that keeps its connection goes through the ring as one writev, which the loop
/// submits together with every other connection's operations in one io_uring_enter. A response
/// that ends its connection is offered to the kernel at once with a non-blocking sendmsg carrying
/// MSG_MORE, so the close that follows sends its bytes and the FIN in one segment (the ring would
/// push the bytes first, and the FIN in a segment of its own). Whatever is left after that (a large
/// body, a full socket buffer, sendfile) is written by a boxed future, so that every connection's
/// task stays small.
pub(crate) async fn write(
    stream: &mut TcpStream,
    mut wire: Wire,
    ends_connection: bool,
    moved: &dyn Fn(),
) -> (io::Result<()>, Wire) {
    if wire.file.is_none() {
        if ends_connection {
            match send_now(stream.as_raw_fd(), &wire, libc::MSG_MORE) {
                Ok(n) => wire.advance(n),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return (Err(e), wire),
            }
        } else {
            let (result, back) = stream.writev(wire).await;
            wire = back;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), wire),
                Ok(n) => wire.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), wire),
            }
        }
        if wire.is_written() {
            return (Ok(()), wire);
        }
    }
    Box::pin(write_rest(stream, wire, moved)).await
}

/// Writes what is left of the response through the ring, or with sendfile for a file body.
/// `moved` is told each time bytes were taken after a wait (the send timeout restarts).
async fn write_rest(stream: &mut TcpStream, mut wire: Wire, moved: &dyn Fn()) -> (io::Result<()>, Wire) {
    if wire.file.is_some() {
        let result = write_with_sendfile(stream, &mut wire, moved).await;
        return (result, wire);
    }
    while !wire.is_written() {
        let (result, back) = stream.writev(wire).await;
        wire = back;
        match result {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), wire),
            Ok(n) => {
                wire.advance(n);
                moved();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), wire),
        }
    }
    (Ok(()), wire)
}

/// Offers the response to the socket with one non-blocking sendmsg; the bytes it took.
fn send_now(fd: RawFd, wire: &Wire, flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid; the iovecs it points to stay alive in `wire`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = wire.read_iovec_ptr() as *mut _;
    msg.msg_iovlen = wire.read_iovec_len();
    // SAFETY: sendmsg only reads the memory the message describes. The raw syscall skips libc's
    // cancellation-point bookkeeping, which keiko's threads never use.
    let sent = unsafe {
        libc::syscall(libc::SYS_sendmsg, fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | flags)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Head and tail with sendmsg (held back with MSG_MORE so they leave in the body's first
/// segments), then the body with sendfile; both non-blocking, waiting for writability when full.
async fn write_with_sendfile(stream: &mut TcpStream, wire: &mut Wire, moved: &dyn Fn()) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    // sendfile has no flag for "do not wait": the socket itself must not block. This is the
    // connection's last response, so no io_uring operation on it sees the change.
    // SAFETY: plain fcntl on a socket the stream owns; sockets carry no other status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    loop {
        let head_pending = !wire.is_written();
        let sent = if head_pending {
            // SAFETY: a zeroed msghdr is valid; the iovecs it points to stay alive in `wire`.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = wire.read_iovec_ptr() as *mut _;
            msg.msg_iovlen = wire.read_iovec_len();
            // SAFETY: sendmsg reads only the described memory.
            unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_MORE | libc::MSG_NOSIGNAL) }
        } else if let Some(file) = wire.file.as_mut().filter(|f| f.len > 0) {
            // SAFETY: sendfile reads from an image body that the Wire's snapshot keeps open, and
            // advances `offset` itself.
            unsafe { libc::sendfile(fd, file.fd, &mut file.offset, file.len) }
        } else {
            return Ok(());
        };
        match (sent, wire.file.as_mut()) {
            (0, _) => return Err(io::ErrorKind::WriteZero.into()),
            (n, _) if n > 0 && head_pending => {
                wire.advance(n as usize);
                moved();
            }
            (n, Some(file)) if n > 0 => {
                file.len -= n as usize;
                moved();
            }
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => stream.writable(false).await?,
                e if e.kind() == io::ErrorKind::Interrupted => {}
                e => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(w: &Wire) -> Vec<u8> {
        let iov = unsafe { std::slice::from_raw_parts(w.read_iovec_ptr(), w.read_iovec_len()) };
        iov.iter()
            .flat_map(|v| unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) })
            .copied()
            .collect()
    }

    const KEEP_ALIVE: Tail = Tail { connection: Connection::KeepAlive, cors: false, vary_accept: false };

    fn close() -> Tail {
        Tail { connection: Connection::Close, cors: false, vary_accept: false }
    }

    fn tails() -> Rc<Tails> {
        Rc::new(Tails::at(std::time::UNIX_EPOCH, None))
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut w = Wire::new();
        w.load(b"HEAD\r\n", tails(), close(), b"BODY");
        let all = pending(&w);
        assert!(all.starts_with(b"HEAD\r\nDate: Thu, 01 Jan 1970") && all.ends_with(b"close\r\n\r\nBODY"));
        let tail = Tails::at(std::time::UNIX_EPOCH, None).get(close()).len();
        for (step, left) in [(3, 3), (4, 2), (tail - 1 + 2, 1)] {
            let before = pending(&w);
            w.advance(step);
            assert_eq!(pending(&w), &before[step..]);
            assert_eq!(w.read_iovec_len(), left);
        }
        w.advance(pending(&w).len());
        assert!(w.is_written());
    }

    #[test]
    fn rendered_responses_can_drop_their_body() {
        let mut w = Wire::new();
        w.rendered_mut().extend_from_slice(b"H\r\n{}");
        w.load_rendered(3, tails(), KEEP_ALIVE, false);
        assert!(pending(&w).starts_with(b"H\r\nDate:") && pending(&w).ends_with(b"GMT\r\n\r\n{}"));
        w.load_rendered(3, tails(), KEEP_ALIVE, true);
        assert!(pending(&w).ends_with(b"GMT\r\n\r\n"));
    }
}
