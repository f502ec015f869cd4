//! Renditions (sizes, effects, ASCII art, the dashboard's thumbnails) on an event loop. Nothing
//! here renders, decodes or touches a file: a rendition comes from this loop's memo (no lock),
//! the shared in-memory cache, or a render the request waits for without blocking the loop (see
//! `variants`). Once found it is sent like a catalogue image: pre-built head, tail, body, in one
//! writev. A rendition by name carries its own ETag and answers conditional GETs with 304.

use std::sync::Arc;

use super::images;
use super::reply::{Reply, Sent};
use super::worker::Worker;
use crate::dashboard;
use crate::http::request::Request;
use crate::http::response::{etag_matches, Status, BUSY};
use crate::http::route::Pick;
use crate::variants::spec::{Form, Variant};
use crate::variants::{Flight, Key, Rendered};

/// The parts of a request that shape a rendition's response.
struct Ask<'b> {
    /// Asked for by name: ETag and `public` caching, conditional GETs.
    named: bool,
    accepts_gzip: bool,
    if_none_match: Option<&'b [u8]>,
    /// The source image's hit identity, if serving it counts a hit.
    hit: Option<u32>,
}

/// A render to wait for, and how to answer once it is done.
struct Waiting<'a, 'b> {
    flight: Arc<Flight>,
    ask: Ask<'b>,
    reply: Reply<'a>,
}

/// Answers a request for `variant` of the image `pick` names; it counts a hit on the source.
pub(crate) async fn serve(
    w: &Worker,
    request: &Request<'_>,
    pick: Pick<'_>,
    variant: Variant,
    reply: Reply<'_>,
) -> Sent {
    match find(w, request, pick, variant, true, reply) {
        Ok(sent) => sent,
        Err(waiting) => Box::pin(finish(w, waiting)).await,
    }
}

/// The dashboard's thumbnail of image `name`: a small rendition that counts no hit, since an
/// operator looking at the counts must not change them.
pub(crate) async fn thumbnail(w: &Worker, request: &Request<'_>, name: &[u8], reply: Reply<'_>) -> Sent {
    match find(w, request, Pick::Named(name), dashboard::THUMBNAIL, false, reply) {
        Ok(sent) => sent,
        Err(waiting) => Box::pin(finish(w, waiting)).await,
    }
}

/// The answer, when it needs no wait; otherwise the render to wait for.
fn find<'a, 'b>(
    w: &Worker,
    request: &Request<'b>,
    pick: Pick<'_>,
    variant: Variant,
    counts_hit: bool,
    reply: Reply<'a>,
) -> Result<Sent, Waiting<'a, 'b>> {
    let variants = w.shared.variants;
    if let Form::Webp(Some((width, height))) = variant.form {
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
    let key = Key { source: image.body.digest(), image: image.tally.id, variant };
    let ask = Ask {
        named: matches!(pick, Pick::Named(_)),
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
    match variants.request(key, image.clone()) {
        Ok(flight) => Err(Waiting { flight, ask, reply }),
        Err(_busy) => Ok(reply.canned(&BUSY)),
    }
}

/// Waits for the render and answers with it.
async fn finish(w: &Worker, waiting: Waiting<'_, '_>) -> Sent {
    let Waiting { flight, ask, reply } = waiting;
    match flight.wait().await {
        Ok(rendered) => send(w, &ask, rendered, reply),
        Err(why) => {
            reply.closing().text(Status::InternalError, &format!("cannot render this image: {why:#}"))
        }
    }
}

fn send(w: &Worker, ask: &Ask, rendered: Arc<Rendered>, reply: Reply) -> Sent {
    let gzip = ask.accepts_gzip && rendered.gzip.is_some();
    let etag = rendered.representation(gzip).heads.etag();
    if ask.named && ask.if_none_match.is_some_and(|tags| etag_matches(tags, etag)) {
        let vary = if rendered.gzip.is_some() { "Vary: Accept-Encoding\r\n" } else { "" };
        return reply.not_modified(etag, w.shared.variants.max_age(), vary);
    }
    reply.rendition(rendered, gzip, ask.named, ask.hit)
}
