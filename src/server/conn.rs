//! One client connection, from accept to close: read request heads into a fixed 8 KiB buffer,
//! answer every complete one in order (pipelining), go back to reading.
//!
//! This is the hot path. Per request it must never lock, allocate or block: parsing and routing
//! borrow from the buffer, an answer is a choice of pre-built slices from this loop's catalogue
//! snapshot loaded into the connection's reusable [`Wire`] (which holds the snapshot, through a
//! thread-local `Rc`, until the bytes are sent), a hit is a non-blocking `try_send`, and the
//! counters and latency histograms belong to this thread alone (two vDSO clock reads a request).
//! (`/hits`, `/metrics`, the JSON list and info and the 400s are rendered on demand into the
//! Wire's reusable buffer; renditions come from `api`, which may wait for a render thread
//! without blocking the loop.)

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::admin::{self, Deletion, Lookup, Upload};
use super::api::{self, Step};
use super::wire::{write_all, Wire};
use super::worker::Worker;
use crate::admin::body::Framing;
use crate::catalog::Catalog;
use crate::dashboard;
use crate::hits;
use crate::http::request::{self, Method, Parsed, Rejection, Request, MAX_HEAD};
use crate::http::response::{self, etag_matches, Canned, Connection, Status};
use crate::http::route::{route, Pick, Route, Target};

/// After an error response, how long and how much the client may still send before the close.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// What was sent, for the counters and for what happens next.
pub struct Answer {
    pub route: Route,
    pub status: Status,
    pub connection: Connection,
    /// The hit identity of the image sent, if it counts a hit.
    pub hit: Option<u32>,
}

pub async fn serve(mut stream: TcpStream, w: Rc<Worker>) {
    let slot = w.conns.open(stream.as_raw_fd(), w.stats);
    let mut buf = Vec::with_capacity(MAX_HEAD);
    let mut wire = Wire::new();
    // When the connection began waiting for the request now being read (coarse clock).
    let mut request_since = None;
    // When the last read completed, and when the first byte of the next request to answer was
    // read: the start of its latency. Bytes left in the buffer after a response came with the
    // last read (anything complete before it was answered before reading again).
    let mut read_at = Instant::now();
    let mut first_byte_at = read_at;
    loop {
        let mut used = 0;
        loop {
            let answer = match request::parse(&buf[used..]) {
                Parsed::Partial => break,
                Parsed::Complete { request, len } => {
                    used += len;
                    request_since = None;
                    match answer(&w, &request, &mut wire) {
                        Step::Done(answer) => answer,
                        Step::Wait(render) => api::finish(&w, render, &mut wire).await,
                        Step::Upload(upload) => {
                            admin::upload(&w, &mut stream, &buf[used..], upload, &mut wire).await
                        }
                        Step::Lookup(lookup) => {
                            admin::lookup(&w, lookup, request.connection, &mut wire).await
                        }
                        Step::Delete(deletion) => {
                            let connection = if w.closing() { Connection::Close } else { request.connection };
                            admin::delete(&w, deletion, connection, &mut wire).await
                        }
                    }
                }
                Parsed::Rejected(rejection) => reject(&w, rejection, &mut wire),
            };
            let (written, back) = write_all(&mut stream, wire).await;
            wire = back;
            w.stats.responded(answer.route, answer.status, first_byte_at.elapsed());
            first_byte_at = read_at;
            if written.is_err() {
                return;
            }
            if let Some(image) = answer.hit {
                w.hits.record(image);
                w.stats.hit_served();
            }
            if answer.connection == Connection::Close {
                if answer.status != Status::Ok {
                    // Boxed: its timer is 128-byte aligned, which would make every connection's
                    // task an over-aligned (slower) allocation if it sat inline in this future.
                    Box::pin(linger(&mut stream, buf)).await;
                }
                return;
            }
        }
        buf.drain(..used);

        slot.waiting(*request_since.get_or_insert_with(|| w.now()));
        let filled = buf.len();
        let (read, back) = stream.read(buf.slice_mut(filled..MAX_HEAD)).await;
        buf = back.into_inner();
        read_at = Instant::now();
        if filled == 0 {
            first_byte_at = read_at;
        }
        slot.done_waiting();
        if !matches!(read, Ok(n) if n > 0) {
            if slot.expired() && !buf.is_empty() {
                load_canned(&w, &response::REQUEST_TIMEOUT, Connection::Close, false, &mut wire);
                let _ = write_all(&mut stream, wire).await;
                w.stats.request(Route::Unknown, Status::RequestTimeout);
            }
            return;
        }
    }
}

fn answer<'b>(w: &Worker, req: &Request<'b>, wire: &mut Wire) -> Step<'b> {
    let connection = if w.closing() { Connection::Close } else { req.connection };
    let head_only = req.method == Method::Head;
    #[cfg(debug_assertions)]
    if req.path == b"/debug/panic" {
        panic!("/debug/panic asked for a panic (a test hook of debug builds)");
    }
    let target = match route(req.path, req.query) {
        Ok(target) => target,
        Err(bad) => return Step::Done(api::bad_request(w, Route::Unknown, &bad.0, connection, wire)),
    };
    let route = target.route();
    let catalog = w.catalog();
    let canned = match (target, req.method) {
        (Target::Unknown, _) => &response::NOT_FOUND,
        (Target::Image { pick: Pick::Named(name), variant: None }, Method::Delete)
            if w.shared.admin.is_some() =>
        {
            let authorized = w.shared.admin.is_some_and(|admin| admin.authorized(req.authorization));
            return Step::Delete(Deletion { name, authorized });
        }
        (Target::Collection { .. }, _) if w.shared.admin.is_none() => &response::NOT_FOUND,
        (Target::Image { pick: Pick::Named(name), variant: None }, Method::Put)
            if w.shared.admin.is_some() =>
        {
            return Step::Upload(upload(w, req, Some(name)));
        }
        (Target::Collection { name, .. }, Method::Post) => return Step::Upload(upload(w, req, name)),
        (Target::Collection { sha256: Some(sha256), .. }, Method::Get | Method::Head) => {
            let authorized = w.shared.admin.is_some_and(|admin| admin.authorized(req.authorization));
            return Step::Lookup(Lookup { sha256, authorized, head_only });
        }
        (_, Method::Other | Method::Put | Method::Post | Method::Delete) => &response::METHOD_NOT_ALLOWED,
        (Target::Collection { .. }, _) => &response::NOT_FOUND,
        (Target::Image { pick, variant: None }, _) => {
            let (index, named) = match pick {
                Pick::Random => (catalog.random(), false),
                Pick::Seed(seed) => (catalog.seeded(seed), false),
                Pick::Named(name) => (catalog.find(name), true),
            };
            match index {
                Some(index) => {
                    return Step::Done(image(w, req, route, catalog, index, named, connection, wire))
                }
                None if named => &response::NOT_FOUND,
                None => &response::NOT_READY,
            }
        }
        (Target::Image { pick, variant: Some(variant) }, _) => {
            return api::rendition(w, req, &catalog, pick, variant, route, connection, wire)
        }
        (Target::Info(name), _) => {
            return Step::Done(api::info(w, &catalog, name, connection, head_only, wire))
        }
        (Target::List { page, limit }, _) => {
            return Step::Done(api::list(w, &catalog, page, limit, connection, head_only, wire))
        }
        (Target::Dashboard, _) => {
            let page = &*dashboard::PAGE;
            wire.load(&page.head, w.tails(), connection, if head_only { &[] } else { &page.body });
            return Step::Done(Answer { route, status: Status::Ok, connection, hit: None });
        }
        (Target::Thumbnail(name), _) => {
            let pick = Pick::Named(name);
            return api::rendition(w, req, &catalog, pick, dashboard::THUMBNAIL, route, connection, wire);
        }
        (Target::Health, _) => &response::HEALTHY,
        (Target::Ready, _) if w.shared.draining() => &response::DRAINING,
        (Target::Ready, _) if catalog.is_ready() => &response::READY,
        (Target::Ready, _) => &response::NOT_READY,
        (Target::Hits, _) => {
            let body_at = response::render_ok(wire.rendered_mut(), "application/json", |out| {
                hits::write_json(catalog.images().map(|i| &*i.tally), out)
            });
            return Step::Done(rendered(w, route, body_at, connection, head_only, wire));
        }
        (Target::Metrics, _) => {
            let body_at =
                response::render_ok(wire.rendered_mut(), "text/plain; version=0.0.4; charset=utf-8", |out| {
                    let mut text = String::new();
                    w.shared.metrics.render(&mut text);
                    out.extend_from_slice(text.as_bytes());
                });
            return Step::Done(rendered(w, route, body_at, connection, head_only, wire));
        }
    };
    let status = load_canned(w, canned, connection, head_only, wire);
    Step::Done(Answer { route, status, connection, hit: None })
}

/// What an upload needs of its request.
fn upload<'b>(w: &Worker, req: &Request<'b>, name: Option<&'b [u8]>) -> Upload<'b> {
    let is_multipart = |ct: &&[u8]| {
        ct.trim_ascii_start().get(..19).is_some_and(|t| t.eq_ignore_ascii_case(b"multipart/form-data"))
    };
    Upload {
        name,
        authorized: w.shared.admin.is_some_and(|admin| admin.authorized(req.authorization)),
        framing: req.body.unwrap_or(Framing::Length(0)),
        expect_continue: req.expect_continue,
        multipart: req.content_type.filter(is_multipart),
    }
}

/// A whole image from the snapshot. By name, it carries its ETag, and a matching
/// `If-None-Match` gets 304 (no body, no hit).
#[allow(clippy::too_many_arguments)]
fn image(
    w: &Worker,
    req: &Request,
    route: Route,
    catalog: Rc<Catalog>,
    index: usize,
    named: bool,
    connection: Connection,
    wire: &mut Wire,
) -> Answer {
    let image = catalog.image(index);
    if named && req.if_none_match.is_some_and(|v| etag_matches(v, &image.etag)) {
        return api::not_modified(w, route, &image.etag, "", connection, wire);
    }
    let id = image.tally.id;
    let head_only = req.method == Method::Head;
    wire.load_image(catalog, index, named, w.tails(), connection, head_only);
    Answer { route, status: Status::Ok, connection, hit: (!head_only).then_some(id) }
}

fn rendered(
    w: &Worker,
    route: Route,
    body_at: usize,
    connection: Connection,
    head_only: bool,
    wire: &mut Wire,
) -> Answer {
    wire.load_rendered(body_at, w.tails(), connection, head_only);
    Answer { route, status: Status::Ok, connection, hit: None }
}

fn load_canned(
    w: &Worker,
    canned: &'static Canned,
    connection: Connection,
    head_only: bool,
    wire: &mut Wire,
) -> Status {
    wire.load(canned.head, w.tails(), connection, if head_only { &[] } else { canned.body });
    canned.status
}

fn reject(w: &Worker, rejection: Rejection, wire: &mut Wire) -> Answer {
    let canned = match rejection {
        Rejection::BadRequest => &response::BAD_REQUEST,
        Rejection::HeadTooLarge => &response::HEAD_TOO_LARGE,
    };
    let status = load_canned(w, canned, Connection::Close, false, wire);
    Answer { route: Route::Unknown, status, connection: Connection::Close, hit: None }
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
    let _ = monoio::time::timeout(LINGER_TIME, drain).await;
}
