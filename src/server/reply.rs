//! The response to one request, as its handler builds it: a [`Reply`] holds the connection's
//! reusable [`Wire`], this second's Date tails, the route it is counted under, whether the method
//! was HEAD, and the connection policy, decided once before any handler runs (what the client
//! allows, unless keiko is draining or stopping, and never for an upload). A handler can only
//! consume it into a [`Sent`] by choosing what to send, so it cannot forget the policy, send two
//! answers, or send a body to a HEAD. It may still end the connection early ([`Reply::closing`])
//! after a failure that leaves the connection's state unknown.

use std::rc::Rc;
use std::sync::Arc;

use super::wire::Wire;
use crate::catalog::Catalog;
use crate::http::response::{self, Canned, Connection, Status, Tail, Tails};
use crate::http::route::Route;
use crate::variants::spec::Codec;
use crate::variants::Rendered;

/// A response on its way; see the module comment.
pub(crate) struct Reply<'a> {
    wire: &'a mut Wire,
    tails: Rc<Tails>,
    route: Route,
    tail: Tail,
    head_only: bool,
}

/// What was sent, for the counters, the hit channel and what happens to the connection next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) route: Route,
    pub(crate) status: Status,
    pub(crate) connection: Connection,
    /// The hit identity of the image sent, if this response counts a hit.
    pub(crate) hit: Option<u32>,
    /// The picture sent, if it was one: its format and the bytes of its body (0 for HEAD).
    pub(crate) picture: Option<(Codec, usize)>,
}

impl<'a> Reply<'a> {
    pub(crate) fn new(
        wire: &'a mut Wire,
        tails: Rc<Tails>,
        route: Route,
        connection: Connection,
        head_only: bool,
    ) -> Reply<'a> {
        let tail = Tail { connection, cors: route.is_public(), vary_accept: false };
        Reply { wire, tails, route, tail, head_only }
    }

    /// Ends the connection after this response, whatever the client asked.
    pub(crate) fn closing(mut self) -> Reply<'a> {
        self.tail.connection = Connection::Close;
        self
    }

    /// Says that the format was chosen by the request's `Accept` (`Vary: Accept`).
    pub(crate) fn negotiated(mut self) -> Reply<'a> {
        self.tail.vary_accept = true;
        self
    }

    fn sent(&self, status: Status, hit: Option<u32>) -> Sent {
        let hit = hit.filter(|_| !self.head_only);
        Sent { route: self.route, status, connection: self.tail.connection, hit, picture: None }
    }

    /// A fixed response.
    pub(crate) fn canned(self, canned: &'static Canned) -> Sent {
        self.fixed(canned.status, canned.head, canned.body)
    }

    /// A response built once for the life of the process (a status, its head and its body).
    pub(crate) fn fixed(self, status: Status, head: &'static [u8], body: &'static [u8]) -> Sent {
        let sent = self.sent(status, None);
        let body = if self.head_only { &[][..] } else { body };
        self.wire.load(head, self.tails, self.tail, body);
        sent
    }

    /// Image `index` of `catalog` in its `codec` encoding (which it must have), by name (`named`:
    /// ETag and `public` caching) or picked at random; it counts a hit unless the method was HEAD.
    pub(crate) fn image(self, catalog: Rc<Catalog>, index: usize, codec: Codec, named: bool) -> Sent {
        let image = catalog.image(index);
        let bytes = if self.head_only { 0 } else { image.encoded(codec).map_or(0, |e| e.body.len()) };
        let sent = Sent { picture: Some((codec, bytes)), ..self.sent(Status::Ok, Some(image.tally.id)) };
        self.wire.load_image(catalog, index, codec, named, self.tails, self.tail, self.head_only);
        sent
    }

    /// A rendition (its gzip representation when `gzip`), by name or at random; `hit` is the
    /// source image's identity when serving it counts one.
    pub(crate) fn rendition(
        self,
        rendered: Arc<Rendered>,
        gzip: bool,
        named: bool,
        hit: Option<u32>,
    ) -> Sent {
        let bytes = if self.head_only { 0 } else { rendered.representation(gzip).body.len() };
        let sent = Sent { picture: rendered.codec.map(|codec| (codec, bytes)), ..self.sent(Status::Ok, hit) };
        self.wire.load_rendition(rendered, gzip, named, self.tails, self.tail, self.head_only);
        sent
    }

    /// 304 for a conditional GET whose tag matches: no body, no hit. `extra` is more header lines.
    pub(crate) fn not_modified(self, etag: &str, max_age: u32, extra: &str) -> Sent {
        let sent = self.sent(Status::NotModified, None);
        let head_len = response::render_not_modified(self.wire.rendered_mut(), etag, max_age, extra);
        self.wire.load_rendered(head_len, self.tails, self.tail, true);
        sent
    }

    /// 400 with a body that says which parameter was wrong and why.
    pub(crate) fn bad_request(self, why: &str) -> Sent {
        self.text(Status::BadRequest, why)
    }

    /// A plain-text answer of any status, its body `text` and a line end.
    pub(crate) fn text(self, status: Status, text: &str) -> Sent {
        self.rendered(status, "text/plain; charset=utf-8", "", |out| {
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
        })
    }

    /// A response rendered now: `body` writes the body, `extra` is more header lines.
    pub(crate) fn rendered(
        self,
        status: Status,
        content_type: &str,
        extra: &str,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Sent {
        let sent = self.sent(status, None);
        let body_at = response::render(self.wire.rendered_mut(), status, content_type, extra, body);
        self.wire.load_rendered(body_at, self.tails, self.tail, self.head_only);
        sent
    }
}
