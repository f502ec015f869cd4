//! Whole images from this loop's catalogue snapshot: a random pick (`GET /`), a seeded one
//! (`/seed/<seed>`) or one by name (`/images/<name>`, with its ETag, so a matching
//! `If-None-Match` gets 304 with no body and no hit), in the encoding the client's `Accept`
//! prefers among those the library made (see `http::accept`; `Vary: Accept`).
//!
//! This is the hot path's handler. It must never lock, allocate or block: the snapshot is this
//! loop's own `Rc`, a pick is a thread-local random number or a hash, a lookup by name decodes
//! into a stack buffer, the format is chosen from flags the request parser set, and the answer is
//! the encoding's pre-built head and mapped body loaded into the connection's reusable Wire
//! (`tests/hot_path.rs` counts allocations to prove it).

use super::reply::{Reply, Sent};
use super::worker::Worker;
use crate::catalog::Catalog;
use crate::http::request::Request;
use crate::http::response::{NOT_FOUND, NOT_READY};
use crate::http::route::Pick;

/// The answer; or, for a client that takes neither WebP nor AVIF, the reply back, for a JPEG
/// rendition of the whole image (see `renditions`).
pub(crate) fn whole<'a>(
    w: &Worker,
    request: &Request,
    pick: Pick,
    reply: Reply<'a>,
) -> Result<Sent, Reply<'a>> {
    let catalog = w.catalog();
    let Some(index) = find(&catalog, pick) else { return Ok(reply.canned(missing(pick))) };
    let image = catalog.image(index);
    let codec = request.accepts.choose(image.avif.is_some());
    let Some(encoded) = image.encoded(codec) else { return Err(reply) };
    let reply = reply.negotiated();
    let named = matches!(pick, Pick::Named(_));
    let etag = encoded.heads.etag();
    if named && request.if_none_match.matches(etag) {
        return Ok(reply.not_modified(etag, w.shared.variants.max_age(), ""));
    }
    Ok(reply.image(catalog, index, codec, named))
}

/// The image of `catalog` that `pick` names, if there is one.
pub(crate) fn find(catalog: &Catalog, pick: Pick) -> Option<usize> {
    match pick {
        Pick::Random => catalog.random(),
        Pick::Seed(seed) => catalog.seeded(seed),
        Pick::Named(name) => catalog.find(name),
    }
}

/// The answer when `pick` names no image: a name that is not there is not found; a random or
/// seeded pick finds none only while no image is ready yet.
pub(crate) fn missing(pick: Pick) -> &'static crate::http::response::Canned {
    match pick {
        Pick::Named(_) => &NOT_FOUND,
        Pick::Random | Pick::Seed(_) => &NOT_READY,
    }
}
