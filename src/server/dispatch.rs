//! From a parsed request to a [`Sent`] response: route it for its method, fix the connection
//! policy once, refuse what the operator's policy forbids (a rendition that is not a preset in
//! presets-only mode, a missing or wrong signature) before any work, and hand the [`Reply`] to the
//! one handler that serves the endpoint. This is the
//! only place that knows which handler serves what; the handlers live in files named for what
//! they serve (`images`, `renditions`, `info`, `operator`, `writes`) and know nothing of the
//! connection they answer on.
//!
//! The handlers of the hot path (whole images, cached renditions) answer without waiting. Those
//! that wait (a render, an upload's body, the blocking pool) are boxed, so that every connection
//! task stays small, and allocates for them only when it needs them.

use std::os::fd::AsRawFd;
use std::time::SystemTime;

use monoio::net::TcpStream;

use super::reply::{Reply, Sent};
use super::wire::Wire;
use super::worker::Worker;
use super::{images, info, operator, renditions, writes};
use crate::http::request::{Method, Request};
use crate::http::response::{self, Connection, Status, NOT_FOUND, PREFLIGHT};
use crate::http::route::{BadParam, Endpoint, Route};
use crate::test_hooks;
use crate::variants::spec::{Form, Variant};

/// Answers `request` into `wire`. `stream` and `unread` (what the connection read past the
/// request's head) are for the one handler that reads a body.
pub(crate) async fn answer(
    w: &Worker,
    stream: &mut TcpStream,
    request: &Request<'_>,
    unread: &[u8],
    wire: &mut Wire,
) -> Sent {
    assert!(
        !test_hooks::panics(request.path),
        "{:?} asked for a panic (a test hook)",
        test_hooks::PANIC_PATH
    );
    let routed = w.shared.router.route(request.method, request.path, request.query);
    let route = routed.as_ref().map_or(Route::Unknown, Endpoint::route);
    let reply =
        Reply::new(wire, w.tails(), route, connection(w, request, &routed), request.method == Method::Head);
    let endpoint = match routed {
        Ok(endpoint) => endpoint,
        Err(BadParam(why)) => return reply.bad_request(&why),
    };
    if let (Some(why), Endpoint::Image { variant: Some(_), .. }) = (&w.shared.presets_only, &endpoint) {
        return reply.text(Status::Forbidden, why);
    }
    if let Some(signing) = w.shared.signing.filter(|s| s.needs(&endpoint)) {
        if let Err(refusal) = signing.check(request.path, request.query, SystemTime::now()) {
            return reply.text(Status::Forbidden, refusal.message());
        }
    }
    match endpoint {
        Endpoint::Image { pick, variant: None } => match images::whole(w, request, pick, reply) {
            Ok(sent) => sent,
            Err(reply) => {
                let whole = Variant::of(Form::Picture(None));
                renditions::serve(w, stream.as_raw_fd(), request, pick, whole, reply).await
            }
        },
        Endpoint::Image { pick, variant: Some(variant) } => {
            renditions::serve(w, stream.as_raw_fd(), request, pick, variant, reply).await
        }
        Endpoint::Preset { pick, variant } => {
            renditions::serve(w, stream.as_raw_fd(), request, pick, variant, reply).await
        }
        Endpoint::Thumbnail(name) => renditions::thumbnail(w, stream.as_raw_fd(), request, name, reply).await,
        Endpoint::Info(name) => info::image(w, name, reply),
        Endpoint::List { page, limit } => info::list(w, page, limit, reply),
        Endpoint::Hits => operator::hits(w, reply),
        Endpoint::Health => operator::health(reply),
        Endpoint::Ready => operator::ready(w, reply),
        Endpoint::Metrics => operator::metrics(w, reply),
        Endpoint::Dashboard => operator::dashboard(reply),
        Endpoint::Upload { name } => Box::pin(writes::upload(w, stream, request, name, unread, reply)).await,
        Endpoint::Delete { name } => Box::pin(writes::delete(w, request, name, reply)).await,
        Endpoint::Lookup { sha256 } => Box::pin(writes::lookup(w, request, sha256, reply)).await,
        Endpoint::MethodNotAllowed { allow, .. } => reply.canned(response::method_not_allowed(allow)),
        Endpoint::Preflight { .. } => reply.canned(&PREFLIGHT),
        Endpoint::NotFound => reply.canned(&NOT_FOUND),
    }
}

/// What happens to the connection after the answer: what the client allows, unless this loop is
/// draining or stopping (then every answer closes, so that clients move to the nodes that stay),
/// and never for an upload (a body refused half-read must not be taken for the next request).
fn connection(w: &Worker, request: &Request, routed: &Result<Endpoint, BadParam>) -> Connection {
    if w.closing() || matches!(routed, Ok(Endpoint::Upload { .. })) {
        Connection::Close
    } else {
        request.connection
    }
}
