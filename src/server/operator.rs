//! What an operator or a load balancer reads: `/healthz` (the process answers), `/readyz` (an
//! image is ready and keiko is not draining; with object storage it says when the store does not
//! answer), `/hits` (every image's count as JSON), `/metrics`
//! (the Prometheus exposition) and `/dashboard` (the page that charts them). None of these count
//! a hit.

use super::reply::{Reply, Sent};
use super::worker::Worker;
use crate::dashboard;
use crate::hits;
use crate::http::response::{Status, DRAINING, HEALTHY, NOT_READY, READY};
use crate::metrics;

pub(crate) fn health(reply: Reply) -> Sent {
    reply.canned(&HEALTHY)
}

pub(crate) fn ready(w: &Worker, reply: Reply) -> Sent {
    if w.shared.flags.draining() {
        reply.canned(&DRAINING)
    } else if w.catalog().is_ready() {
        match w.shared.store.and_then(|store| store.down_for()) {
            None => reply.canned(&READY),
            // Still ready: the node serves what it has; an operator reads why it changes nothing.
            Some(seconds) => reply.text(
                Status::Ok,
                &format!(
                    "ready; the object store has not answered for {seconds} s: serving what this node has"
                ),
            ),
        }
    } else {
        reply.canned(&NOT_READY)
    }
}

pub(crate) fn hits(w: &Worker, reply: Reply) -> Sent {
    let catalog = w.catalog();
    reply.rendered(Status::Ok, "application/json", "", |out| {
        hits::write_json(catalog.images().map(|i| &*i.tally), out)
    })
}

pub(crate) fn metrics(w: &Worker, reply: Reply) -> Sent {
    reply.rendered(Status::Ok, metrics::CONTENT_TYPE, "", |out| {
        let mut text = String::new();
        w.shared.exposition.render(&mut text);
        out.extend_from_slice(text.as_bytes());
    })
}

pub(crate) fn dashboard(reply: Reply) -> Sent {
    let page = &*dashboard::PAGE;
    reply.fixed(Status::Ok, &page.head, &page.body)
}
