//! Whole images from this loop's catalogue snapshot: a random pick (`GET /`), a seeded one
//! (`/seed/<seed>`) or one by name (`/images/<name>`, with its ETag, so a matching
//! `If-None-Match` gets 304 with no body and no hit).
//!
//! This is the hot path's handler. It must never lock, allocate or block: the snapshot is this
//! loop's own `Rc`, a pick is a thread-local random number or a hash, a lookup by name decodes
//! into a stack buffer, and the answer is the image's pre-built head and mapped body loaded into
//! the connection's reusable Wire (`tests/hot_path.rs` counts allocations to prove it).

use super::reply::{Reply, Sent};
use super::worker::Worker;
use crate::catalog::Catalog;
use crate::http::request::Request;
use crate::http::response::{NOT_FOUND, NOT_READY};
use crate::http::route::Pick;

pub(crate) fn whole(w: &Worker, request: &Request, pick: Pick, reply: Reply) -> Sent {
    let catalog = w.catalog();
    let Some(index) = find(&catalog, pick) else { return reply.canned(missing(pick)) };
    let named = matches!(pick, Pick::Named(_));
    let etag = catalog.image(index).heads.etag();
    if named && request.if_none_match.matches(etag) {
        return reply.not_modified(etag, w.shared.variants.max_age(), "");
    }
    reply.image(catalog, index, named)
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
