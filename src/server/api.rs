//! The image API's answers on an event loop, beside the hot path in `conn`: renditions, conditional
//! GETs, the JSON list and info, and the 400s that name a bad parameter.
//!
//! A rendition comes from this loop's memo (no lock), the shared in-memory cache, or a render the
//! connection waits for (see `variants`); nothing here renders, decodes or touches a file. Once
//! found, a rendition is sent like a catalogue image: pre-built head, tail, body, in one writev.

use std::sync::Arc;

use serde::Serialize;

use super::admin::{Deletion, Lookup, Upload};
use super::conn::Answer;
use super::wire::Wire;
use super::worker::Worker;
use crate::catalog::{Catalog, Image};
use crate::http::request::{Method, Request};
use crate::http::response::{self, etag_matches, header_safe, Canned, Connection, Status};
use crate::http::route::{Form, Pick, Route, Variant};
use crate::variants::{Flight, Key, Rendered};

/// What happens next for a request: an answer loaded into the Wire, or a render to wait for.
pub enum Step<'b> {
    Done(Answer),
    Wait(Pending<'b>),
    Delete(Deletion<'b>),
    Upload(Upload<'b>),
    Lookup(Lookup<'b>),
}

/// A rendition being rendered, and how to answer once it is.
pub struct Pending<'b> {
    flight: Arc<Flight>,
    ask: Ask<'b>,
}

/// The parts of a request that shape a rendition's response.
struct Ask<'b> {
    route: Route,
    /// Asked for by name: ETag and `public` caching, conditional GETs.
    named: bool,
    connection: Connection,
    head_only: bool,
    accepts_gzip: bool,
    if_none_match: Option<&'b [u8]>,
    /// The source image's hit identity, if serving it counts a hit.
    hit: Option<u32>,
}

/// Answers a request for `variant` of the image `pick` names.
#[allow(clippy::too_many_arguments)]
pub fn rendition<'b>(
    w: &Worker,
    req: &Request<'b>,
    catalog: &Catalog,
    pick: Pick<'_>,
    variant: Variant,
    route: Route,
    connection: Connection,
    wire: &mut Wire,
) -> Step<'b> {
    let head_only = req.method == Method::Head;
    let variants = w.shared.variants;
    if let Form::Webp(Some((width, height))) = variant.form {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > variants.max_pixels() {
            let why = format!(
                "size: {width}x{height} is {pixels} pixels, over this server's limit of {} (KEIKO_MAX_PIXELS)",
                variants.max_pixels()
            );
            return Step::Done(bad_request(w, route, &why, connection, wire));
        }
    }
    let (index, named) = match pick {
        Pick::Random => (catalog.random(), false),
        Pick::Seed(seed) => (catalog.seeded(seed), false),
        Pick::Named(name) => (catalog.find(name), true),
    };
    let Some(index) = index else {
        let canned = if named { &response::NOT_FOUND } else { &response::NOT_READY };
        return Step::Done(canned_answer(w, route, canned, connection, head_only, wire));
    };
    let image: &Arc<Image> = catalog.shared_image(index);
    let key = Key { source: image.body.digest(), image: image.tally.id, variant };
    let ask = Ask {
        route,
        named,
        connection,
        head_only,
        accepts_gzip: req.accepts_gzip,
        if_none_match: req.if_none_match,
        // The dashboard's thumbnails are for the operator, not served images: no hit.
        hit: (route != Route::Dashboard).then_some(image.tally.id),
    };
    if let Some(rendered) = w.memo(&key) {
        return Step::Done(send(w, &ask, rendered, wire));
    }
    if let Some(rendered) = variants.cached(&key) {
        w.remember(key, rendered.clone());
        return Step::Done(send(w, &ask, rendered, wire));
    }
    match variants.request(key, image.clone()) {
        Ok(flight) => Step::Wait(Pending { flight, ask }),
        Err(_busy) => Step::Done(canned_answer(w, route, &response::BUSY, connection, head_only, wire)),
    }
}

/// Waits for the render and answers with it.
pub async fn finish(w: &Worker, pending: Pending<'_>, wire: &mut Wire) -> Answer {
    match pending.flight.wait().await {
        Ok(rendered) => send(w, &pending.ask, rendered, wire),
        Err(why) => {
            let body_at = response::render(
                wire.rendered_mut(),
                Status::InternalError,
                "text/plain; charset=utf-8",
                "",
                |out| out.extend_from_slice(format!("cannot render this image: {why}\n").as_bytes()),
            );
            wire.load_rendered(body_at, w.tails(), Connection::Close, pending.ask.head_only);
            Answer {
                route: pending.ask.route,
                status: Status::InternalError,
                connection: Connection::Close,
                hit: None,
            }
        }
    }
}

fn send(w: &Worker, ask: &Ask, rendered: Arc<Rendered>, wire: &mut Wire) -> Answer {
    let gzip = ask.accepts_gzip && rendered.gzip.is_some();
    let representation =
        if gzip { rendered.gzip.as_ref().unwrap_or(&rendered.plain) } else { &rendered.plain };
    if ask.named && ask.if_none_match.is_some_and(|v| etag_matches(v, &representation.etag)) {
        let vary = if rendered.gzip.is_some() { "Vary: Accept-Encoding\r\n" } else { "" };
        return not_modified(w, ask.route, &representation.etag, vary, ask.connection, wire);
    }
    wire.load_rendition(rendered, gzip, ask.named, w.tails(), ask.connection, ask.head_only);
    Answer {
        route: ask.route,
        status: Status::Ok,
        connection: ask.connection,
        hit: ask.hit.filter(|_| !ask.head_only),
    }
}

/// 304 for a conditional GET whose tag matches: no body, no hit.
pub fn not_modified(
    w: &Worker,
    route: Route,
    etag: &str,
    extra: &str,
    connection: Connection,
    wire: &mut Wire,
) -> Answer {
    let head_len =
        response::render_not_modified(wire.rendered_mut(), etag, w.shared.variants.max_age(), extra);
    wire.load_rendered(head_len, w.tails(), connection, true);
    Answer { route, status: Status::NotModified, connection, hit: None }
}

/// 400 with a body that says which parameter was wrong and why; the connection stays as the client
/// asked (the request was well-formed HTTP).
pub fn bad_request(w: &Worker, route: Route, why: &str, connection: Connection, wire: &mut Wire) -> Answer {
    let body_at =
        response::render(wire.rendered_mut(), Status::BadRequest, "text/plain; charset=utf-8", "", |out| {
            out.extend_from_slice(why.as_bytes());
            out.push(b'\n');
        });
    wire.load_rendered(body_at, w.tails(), connection, false);
    Answer { route, status: Status::BadRequest, connection, hit: None }
}

fn canned_answer(
    w: &Worker,
    route: Route,
    canned: &'static Canned,
    connection: Connection,
    head_only: bool,
    wire: &mut Wire,
) -> Answer {
    wire.load(canned.head, w.tails(), connection, if head_only { &[] } else { canned.body });
    Answer { route, status: canned.status, connection, hit: None }
}

/// One image's facts, as `/images/<name>/info` and `/v2/list` give them (Lorem Picsum's fields,
/// with keiko's URLs relative to the server).
#[derive(Serialize)]
struct Info<'a> {
    name: &'a str,
    width: u32,
    height: u32,
    bytes: usize,
    hits: u64,
    url: String,
    download_url: String,
}

impl<'a> Info<'a> {
    fn of(image: &'a Image) -> Info<'a> {
        let (width, height) = image.body.dimensions();
        let path = format!("/images/{}", header_safe(image.name()));
        Info {
            name: image.name(),
            width,
            height,
            bytes: image.body.len(),
            hits: image.tally.total(),
            url: format!("{path}/info"),
            download_url: path,
        }
    }
}

const JSON: &str = "application/json";

pub fn info(
    w: &Worker,
    catalog: &Catalog,
    name: &[u8],
    connection: Connection,
    head_only: bool,
    wire: &mut Wire,
) -> Answer {
    let Some(index) = catalog.find(name) else {
        return canned_answer(w, Route::Info, &response::NOT_FOUND, connection, head_only, wire);
    };
    let body_at = response::render_ok(wire.rendered_mut(), JSON, |out| {
        serde_json::to_writer(out, &Info::of(catalog.image(index))).expect("image info always serializes")
    });
    wire.load_rendered(body_at, w.tails(), connection, head_only);
    Answer { route: Route::Info, status: Status::Ok, connection, hit: None }
}

/// A page of every image, in name order, with a `Link` header to the pages before and after.
pub fn list(
    w: &Worker,
    catalog: &Catalog,
    page: u32,
    limit: u32,
    connection: Connection,
    head_only: bool,
    wire: &mut Wire,
) -> Answer {
    let start = (u64::from(page) - 1).saturating_mul(u64::from(limit));
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(catalog.len());
    let end = start.saturating_add(limit as usize).min(catalog.len());
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("</v2/list?page={}&limit={limit}>; rel=\"prev\"", page - 1));
    }
    if end < catalog.len() {
        links.push(format!("</v2/list?page={}&limit={limit}>; rel=\"next\"", page + 1));
    }
    let link = if links.is_empty() { String::new() } else { format!("Link: {}\r\n", links.join(", ")) };
    let body_at = response::render(wire.rendered_mut(), Status::Ok, JSON, &link, |out| {
        let page: Vec<Info> = (start..end).map(|i| Info::of(catalog.image(i))).collect();
        serde_json::to_writer(out, &page).expect("image info always serializes")
    });
    wire.load_rendered(body_at, w.tails(), connection, head_only);
    Answer { route: Route::List, status: Status::Ok, connection, hit: None }
}
