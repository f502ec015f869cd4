//! Renditions (sizes, effects, ASCII art, the dashboard's thumbnails) on an event loop. Nothing
//! here renders, decodes or touches a file: a rendition comes from this loop's memo (no lock),
//! the shared in-memory cache, or a render the request waits for without blocking the loop (see
//! `variants`). Once found it is sent like a catalogue image: pre-built head, tail, body, in one
//! writev. A rendition by name carries its own ETag and answers conditional GETs with 304.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;

use super::images;
use super::reply::{Reply, Sent};
use super::worker::Worker;
use crate::catalog::Catalog;
use crate::clients::{self, Client};
use crate::dashboard;
use crate::http::request::{IfNoneMatch, Request};
use crate::http::response::{Status, BUSY};
use crate::http::route::Pick;
use crate::variants::spec::{Codec, Form, Variant};
use crate::variants::{Key, Refused, Rendered, Waiter};

/// The parts of a request that shape a rendition's response.
struct Ask<'b> {
    /// Asked for by name: ETag and `public` caching, conditional GETs.
    named: bool,
    accepts_gzip: bool,
    if_none_match: IfNoneMatch<'b>,
    /// The source image's hit identity, if serving it counts a hit.
    hit: Option<u32>,
}

/// A render to wait for, and how to answer once it is done.
struct Waiting<'a, 'b> {
    waiter: Waiter,
    ask: Ask<'b>,
    reply: Reply<'a>,
}

/// Answers a request for `variant` of the image `pick` names; it counts a hit on the source.
/// `client` is the connection's socket, watched while a render is awaited.
pub(crate) async fn serve(
    w: &Worker,
    client: RawFd,
    request: &Request<'_>,
    pick: Pick<'_>,
    variant: Variant,
    reply: Reply<'_>,
) -> Sent {
    match find(w, client, request, pick, variant, true, reply) {
        Ok(sent) => sent,
        Err(waiting) => Box::pin(finish(w, client, waiting)).await,
    }
}

/// The dashboard's thumbnail of image `name`: a small rendition that counts no hit, since an
/// operator looking at the counts must not change them.
pub(crate) async fn thumbnail(
    w: &Worker,
    client: RawFd,
    request: &Request<'_>,
    name: &[u8],
    reply: Reply<'_>,
) -> Sent {
    match find(w, client, request, Pick::Named(name), dashboard::THUMBNAIL, false, reply) {
        Ok(sent) => sent,
        Err(waiting) => Box::pin(finish(w, client, waiting)).await,
    }
}

/// The answer, when it needs no wait; otherwise the render to wait for.
fn find<'a, 'b>(
    w: &Worker,
    client: RawFd,
    request: &Request<'b>,
    pick: Pick<'_>,
    variant: Variant,
    counts_hit: bool,
    reply: Reply<'a>,
) -> Result<Sent, Waiting<'a, 'b>> {
    let variants = w.shared.variants;
    if let Form::Picture(Some((width, height))) = variant.form {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > variants.max_pixels() {
            let why = format!(
                "size: {width}x{height} is {pixels} pixels, over this server's limit of {} (KEIKO_MAX_PIXELS)",
                variants.max_pixels()
            );
            return Ok(reply.bad_request(&why));
        }
    }
    let catalog = w.catalog();
    let Some(index) = images::find(&catalog, pick) else { return Ok(reply.canned(images::missing(pick))) };
    let image = catalog.shared_image(index);
    // A picture's format is the URL's, or else the one `Accept` prefers (then `Vary: Accept`).
    // An AVIF is bounded like the library's (its encoder holds tens of bytes a pixel): past
    // --avif-max-megapixels a negotiated one is WebP and an asked-for one is refused.
    let avif_fits = match variant.form {
        Form::Picture(Some((w, h))) => u64::from(w) * u64::from(h),
        _ => {
            let (w, h) = image.webp.body.dimensions();
            u64::from(w) * u64::from(h)
        }
    } <= variants.avif_max_pixels();
    let (variant, reply) = match (variant.form, variant.codec) {
        (Form::Picture(_), None) => {
            let codec = request.accepts.choose(image.avif.is_some() && avif_fits);
            (Variant { codec: Some(codec), ..variant }, reply.negotiated())
        }
        (Form::Picture(_), Some(Codec::Avif)) if !avif_fits => {
            let why = format!(
                "format: AVIF at this size is over this server's limit of {} megapixels (KEIKO_AVIF_MAX_MEGAPIXELS); ask for webp or jpeg",
                variants.avif_max_pixels() / 1_000_000
            );
            return Ok(reply.bad_request(&why));
        }
        _ => (variant, reply),
    };
    let named = matches!(pick, Pick::Named(_));
    if let Some(codec) = variant.codec.filter(|&c| variant.is_whole(c) && image.encoded(c).is_some()) {
        return Ok(library_encoding(w, request, &catalog, index, codec, named, reply));
    }
    let key = Key { source: image.webp.body.digest(), image: image.tally.id, variant };
    let ask = Ask {
        named,
        accepts_gzip: request.accepts_gzip,
        if_none_match: request.if_none_match,
        hit: counts_hit.then_some(image.tally.id),
    };
    if let Some(rendered) = w.memo(&key) {
        return Ok(send(w, &ask, rendered, reply));
    }
    if let Some(rendered) = variants.cached(&key) {
        w.remember(key, rendered.clone());
        return Ok(send(w, &ask, rendered, reply));
    }
    let who = || match clients::peer(client) {
        Some(peer) => w.shared.trusted_proxies.client(peer, request.forwarded_for),
        None => Client::Overflow,
    };
    match variants.request(key, image.clone(), who) {
        Ok(waiter) => Err(Waiting { waiter, ask, reply }),
        Err(Refused::Busy) => Ok(reply.canned(&BUSY)),
        Err(Refused::OverBudget(wait)) => {
            let retry = format!("Retry-After: {}\r\n", wait.as_secs() + 1);
            Ok(reply.rendered(Status::TooManyRequests, "text/plain; charset=utf-8", &retry, |out| {
                out.extend_from_slice(b"too many new renditions from this client: try again later\n")
            }))
        }
    }
}

/// The whole image `index` in the `codec` encoding the library made, as `images` sends it: a URL
/// that fixes a format the library has made is served like the catalogue route.
fn library_encoding(
    w: &Worker,
    request: &Request,
    catalog: &Rc<Catalog>,
    index: usize,
    codec: Codec,
    named: bool,
    reply: Reply,
) -> Sent {
    let etag = catalog.image(index).encoded(codec).map_or("", |e| e.heads.etag());
    if named && request.if_none_match.matches(etag) {
        return reply.not_modified(etag, w.shared.variants.max_age(), "");
    }
    reply.image(catalog.clone(), index, codec, named)
}

/// Waits for the render and answers with it; if the client goes away first, stops waiting, so
/// that a render no client waits for stops too.
async fn finish(w: &Worker, client: RawFd, waiting: Waiting<'_, '_>) -> Sent {
    let Waiting { waiter, ask, reply } = waiting;
    let render = std::pin::pin!(waiter.wait());
    let departure = std::pin::pin!(departure(client));
    match futures_util::future::select(render, departure).await {
        Either::Left((Ok(rendered), _)) => send(w, &ask, rendered, reply),
        Either::Left((Err(why), _)) => {
            reply.closing().text(Status::InternalError, &format!("cannot render this image: {why:#}"))
        }
        Either::Right(((), _)) => reply.closing().text(Status::ClientClosed, "the client went away"),
    }
}

/// How soon, and at most how seldom, a request waiting for a render looks whether its client is
/// still there: the interval doubles from the first to the last, so that thousands of clients
/// waiting for one long render cost the loop little (a thousand recv calls a second each 1 s).
const DEPARTURE_FIRST: Duration = Duration::from_millis(50);
const DEPARTURE_LAST: Duration = Duration::from_secs(1);

/// Completes when the client of socket `fd` has closed or reset its connection.
async fn departure(fd: RawFd) {
    let mut every = DEPARTURE_FIRST;
    loop {
        monoio::time::sleep(every).await;
        every = (every * 2).min(DEPARTURE_LAST);
        let mut byte = 0u8;
        // SAFETY: peeks at most one byte into `byte`; the socket stays open while this request
        // is answered.
        let n =
            unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        let gone = n == 0
            || (n < 0
                && !matches!(
                    std::io::Error::last_os_error().kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ));
        if gone {
            return;
        }
    }
}

fn send(w: &Worker, ask: &Ask, rendered: Arc<Rendered>, reply: Reply) -> Sent {
    let gzip = ask.accepts_gzip && rendered.gzip.is_some();
    let etag = rendered.representation(gzip).heads.etag();
    if ask.named && ask.if_none_match.matches(etag) {
        let vary = if rendered.gzip.is_some() { "Vary: Accept-Encoding\r\n" } else { "" };
        return reply.not_modified(etag, w.shared.variants.max_age(), vary);
    }
    reply.rendition(rendered, gzip, ask.named, ask.hit)
}
