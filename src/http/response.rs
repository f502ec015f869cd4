//! Response bytes, built before they are needed.
//!
//! Every response is written as up to three slices in one writev:
//!
//! ```text
//! [ head: status line + fixed headers ][ tail: Date, Connection, blank line ][ body ]
//! ```
//!
//! Heads and bodies never change, so they are built once (image responses when the catalogue is
//! built, the canned ones below at compile time) and shared by every thread. The tail holds the
//! only parts that vary: the Date header, which each thread renders once a second into a fresh
//! [`Tails`], the Connection header, of which there are three variants, and for the public read
//! routes the CORS origin (a [`Tail`] picks one of the six). Serving a request is then choosing
//! three slices, with no formatting and no copying.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::SystemTime;

use enum_map::Enum;
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

/// What happens to the connection after a response, and the header that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1 default: stays open, no header needed.
    KeepAlive,
    /// An HTTP/1.0 client asked to keep the connection: confirm it with `Connection: keep-alive`.
    KeepAliveHttp10,
    /// Closed after the response: `Connection: close`.
    Close,
}

/// The statuses keiko answers with (the `status` label of the request counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Status {
    Ok,
    NoContent,
    NotModified,
    Created,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    TooManyRequests,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    HeadTooLarge,
    /// The client went away while its answer was being made (nginx's 499); never seen by it.
    ClientClosed,
    InternalError,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::NoContent => 204,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::TooManyRequests => 429,
            Status::RequestTimeout => 408,
            Status::PayloadTooLarge => 413,
            Status::UnsupportedMediaType => 415,
            Status::HeadTooLarge => 431,
            Status::ClientClosed => 499,
            Status::InternalError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    /// 4xx and 5xx.
    pub fn is_error(self) -> bool {
        self.code() >= 400
    }

    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::Created => "201 Created",
            Status::NoContent => "204 No Content",
            Status::NotModified => "304 Not Modified",
            Status::BadRequest => "400 Bad Request",
            Status::Unauthorized => "401 Unauthorized",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::TooManyRequests => "429 Too Many Requests",
            Status::RequestTimeout => "408 Request Timeout",
            Status::PayloadTooLarge => "413 Content Too Large",
            Status::UnsupportedMediaType => "415 Unsupported Media Type",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::ClientClosed => "499 Client Closed Request",
            Status::InternalError => "500 Internal Server Error",
            Status::ServiceUnavailable => "503 Service Unavailable",
        }
    }
}

/// One second's worth of response tails for one thread: the Date header followed by each
/// Connection variant and the blank line that ends the head.
pub struct Tails {
    /// By connection policy, then without and with the CORS line, then without and with
    /// `Vary: Accept`.
    tails: [[[Box<[u8]>; 2]; 2]; 3],
}

/// Which tail ends a response's head: its connection policy, whether it answers a public read
/// route, which browsers on other origins may use (CORS), and whether its format was chosen by
/// the request's `Accept` (so caches must keep one answer per `Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub connection: Connection,
    pub cors: bool,
    pub vary_accept: bool,
}

impl Tails {
    /// The tails for this second. `cors_origin`: the `Access-Control-Allow-Origin` value of the
    /// public read routes, if CORS is on.
    pub fn at(time: SystemTime, cors_origin: Option<&str>) -> Tails {
        let date = httpdate::fmt_http_date(time);
        let cors_line = cors_origin.map(|origin| format!("Access-Control-Allow-Origin: {origin}\r\n"));
        let tail = |connection: &str| {
            let line = |cors: bool, vary: bool| {
                let cors = if cors { cors_line.as_deref().unwrap_or("") } else { "" };
                let vary = if vary { "Vary: Accept\r\n" } else { "" };
                format!("Date: {date}\r\n{connection}{cors}{vary}\r\n").into_bytes().into_boxed_slice()
            };
            [[line(false, false), line(false, true)], [line(true, false), line(true, true)]]
        };
        Tails { tails: [tail(""), tail("Connection: keep-alive\r\n"), tail("Connection: close\r\n")] }
    }

    pub fn get(&self, tail: Tail) -> &[u8] {
        let by_connection = match tail.connection {
            Connection::KeepAlive => &self.tails[0],
            Connection::KeepAliveHttp10 => &self.tails[1],
            Connection::Close => &self.tails[2],
        };
        &by_connection[usize::from(tail.cors)][usize::from(tail.vary_accept)]
    }
}

/// A fixed response: head (without the tail) and body.
pub struct Canned {
    pub status: Status,
    pub head: &'static [u8],
    pub body: &'static [u8],
}

/// The answer to a CORS preflight (`OPTIONS`) on a public read route; the tail adds the allowed
/// origin. 204 has no body and so no Content-Length.
pub static PREFLIGHT: Canned = Canned {
    status: Status::NoContent,
    head: b"HTTP/1.1 204 No Content\r\nServer: keiko\r\nAccess-Control-Allow-Methods: GET, HEAD\r\n\
            Access-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\n",
    body: b"",
};

/// Heads of the canned responses, with their Content-Length written out (a unit test checks them).
macro_rules! canned {
    ($status:expr, $line:literal, $extra:literal, $body:literal, $len:literal) => {
        Canned {
            status: $status,
            head: concat!(
                "HTTP/1.1 ",
                $line,
                "\r\nServer: keiko\r\nContent-Type: text/plain; charset=utf-8\r\n",
                "X-Content-Type-Options: nosniff\r\n",
                $extra,
                "Content-Length: ",
                $len,
                "\r\n"
            )
            .as_bytes(),
            body: $body.as_bytes(),
        }
    };
}

pub static HEALTHY: Canned = canned!(Status::Ok, "200 OK", "Cache-Control: no-store\r\n", "ok\n", "3");
pub static READY: Canned = canned!(Status::Ok, "200 OK", "Cache-Control: no-store\r\n", "ready\n", "6");
/// `/readyz` and the image routes before the library has an image to serve.
pub static NOT_READY: Canned = canned!(
    Status::ServiceUnavailable,
    "503 Service Unavailable",
    "Cache-Control: no-store\r\nRetry-After: 1\r\n",
    "no image is ready yet\n",
    "22"
);
/// `/readyz` once a stopping signal began the drain: load balancers take the node out while it
/// still answers what reaches it.
pub static DRAINING: Canned = canned!(
    Status::ServiceUnavailable,
    "503 Service Unavailable",
    "Cache-Control: no-store\r\n",
    "draining: shutting down\n",
    "24"
);
/// A new rendition was asked for while the render queue is full.
pub static BUSY: Canned = canned!(
    Status::ServiceUnavailable,
    "503 Service Unavailable",
    "Cache-Control: no-store\r\nRetry-After: 1\r\n",
    "too many images are being rendered; try again in a moment\n",
    "58"
);
/// A write route without the admin token.
pub static UNAUTHORIZED: Canned = canned!(
    Status::Unauthorized,
    "401 Unauthorized",
    "WWW-Authenticate: Bearer\r\n",
    "this needs Authorization: Bearer <admin token>\n",
    "47"
);
/// A write route done: no body, so (RFC 9110) no Content-Length either.
pub static NO_CONTENT: Canned = Canned {
    status: Status::NoContent,
    head: b"HTTP/1.1 204 No Content\r\nServer: keiko\r\nCache-Control: no-store\r\n",
    body: b"",
};
/// The filesystem refused a write route (the log says why).
pub static DELETE_FAILED: Canned = canned!(
    Status::InternalError,
    "500 Internal Server Error",
    "",
    "the image could not be deleted; the server's log says why\n",
    "58"
);
/// An upload over KEIKO_MAX_UPLOAD_BYTES.
pub static TOO_LARGE: Canned = canned!(
    Status::PayloadTooLarge,
    "413 Content Too Large",
    "",
    "the image is over this server's upload limit (KEIKO_MAX_UPLOAD_BYTES)\n",
    "70"
);
/// The filesystem refused an upload (the log says why).
pub static STORE_FAILED: Canned = canned!(
    Status::InternalError,
    "500 Internal Server Error",
    "",
    "the image could not be stored; the server's log says why\n",
    "57"
);
/// A write route while the object store of an s3:// library does not answer.
pub static STORE_UNAVAILABLE: Canned = canned!(
    Status::ServiceUnavailable,
    "503 Service Unavailable",
    "Cache-Control: no-store\r\nRetry-After: 5\r\n",
    "the object store does not answer; the image was not changed, try again later\n",
    "77"
);
pub static BAD_REQUEST: Canned = canned!(Status::BadRequest, "400 Bad Request", "", "bad request\n", "12");
pub static NOT_FOUND: Canned = canned!(Status::NotFound, "404 Not Found", "", "not found\n", "10");
/// The methods a path allows, for a 405's `Allow` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// Every read route.
    GetHead,
    /// `/images/<name>` with the write routes on.
    GetHeadPutDelete,
    /// `/images` with the write routes on.
    GetHeadPost,
}

/// 405 on the read routes.
pub static METHOD_NOT_ALLOWED: Canned = canned!(
    Status::MethodNotAllowed,
    "405 Method Not Allowed",
    "Allow: GET, HEAD\r\n",
    "method not allowed\n",
    "19"
);
/// 405 on `/images/<name>` with the write routes on.
pub static METHOD_NOT_ALLOWED_NAMED: Canned = canned!(
    Status::MethodNotAllowed,
    "405 Method Not Allowed",
    "Allow: GET, HEAD, PUT, DELETE\r\n",
    "method not allowed\n",
    "19"
);
/// 405 on `/images` with the write routes on.
pub static METHOD_NOT_ALLOWED_COLLECTION: Canned = canned!(
    Status::MethodNotAllowed,
    "405 Method Not Allowed",
    "Allow: GET, HEAD, POST\r\n",
    "method not allowed\n",
    "19"
);

/// The 405 that names what a path allows.
pub fn method_not_allowed(allow: Allow) -> &'static Canned {
    match allow {
        Allow::GetHead => &METHOD_NOT_ALLOWED,
        Allow::GetHeadPutDelete => &METHOD_NOT_ALLOWED_NAMED,
        Allow::GetHeadPost => &METHOD_NOT_ALLOWED_COLLECTION,
    }
}
pub static REQUEST_TIMEOUT: Canned =
    canned!(Status::RequestTimeout, "408 Request Timeout", "", "request timeout\n", "16");
pub static HEAD_TOO_LARGE: Canned = canned!(
    Status::HeadTooLarge,
    "431 Request Header Fields Too Large",
    "",
    "request header fields too large\n",
    "32"
);

/// How a response may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching<'a> {
    /// The random routes: a browser or CDN must never answer the next request with this one.
    NoStore,
    /// A named image: `Cache-Control: public, max-age` and a strong ETag (quotes included).
    Public { etag: &'a str, max_age: u32 },
}

impl Caching<'_> {
    fn write(&self, out: &mut String) {
        let _ = match self {
            Caching::NoStore => write!(out, "Cache-Control: no-store\r\n"),
            Caching::Public { etag, max_age } => {
                write!(out, "Cache-Control: public, max-age={max_age}\r\nETag: {etag}\r\n")
            }
        };
    }
}

/// `"<32 hex digits>"`: the strong entity tag of a body with this digest.
pub fn etag(digest: u128) -> String {
    format!("\"{digest:032x}\"")
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as RFC 9110 says for
/// If-None-Match: a `W/` prefix is ignored).
pub fn etag_matches(if_none_match: &[u8], etag: &str) -> bool {
    if_none_match
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag.as_bytes())
}

/// The head of an image (or image rendition) response. `name` is the source file name, escaped
/// for the header; `extra` is more header lines, each ending in CRLF.
pub fn image_head(name: &str, content_type: &str, body_len: usize, caching: Caching, extra: &str) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nServer: keiko\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n"
    );
    caching.write(&mut head);
    let _ = write!(head, "X-Image-Name: {}\r\n{}{extra}", header_safe(name), nosniff(content_type));
    head.into_bytes()
}

/// The header line that stops a browser from taking a text body (an error message, JSON, ASCII
/// art that a client chose) for HTML or script; images need none.
fn nosniff(content_type: &str) -> &'static str {
    if content_type.starts_with("image/") {
        ""
    } else {
        "X-Content-Type-Options: nosniff\r\n"
    }
}

/// The heads of one body's 200 responses (a catalogue image or a rendition), built once when the
/// body is made and shared by every request for it: one for the random and seed routes
/// (`no-store`: no cache may answer the next random request with it) and one for
/// `/images/<name>…` (a strong ETag and `public, max-age`), with that ETag kept for conditional
/// GETs.
#[derive(Clone)]
pub(crate) struct ImageHeads {
    random: Box<[u8]>,
    named: Box<[u8]>,
    etag: Box<str>,
}

impl ImageHeads {
    /// Heads for a body of `body_len` bytes whose [`etag`] comes from `digest`; `name` is the source
    /// file name, `extra` more header lines (each ending in CRLF) for both.
    pub(crate) fn new(
        name: &str,
        content_type: &str,
        body_len: usize,
        digest: u128,
        max_age: u32,
        extra: &str,
    ) -> ImageHeads {
        let etag = etag(digest);
        let random = image_head(name, content_type, body_len, Caching::NoStore, extra);
        let named = image_head(name, content_type, body_len, Caching::Public { etag: &etag, max_age }, extra);
        ImageHeads { random: random.into(), named: named.into(), etag: etag.into() }
    }

    /// The head for a request by name (`named`) or for a random pick.
    pub(crate) fn get(&self, named: bool) -> &[u8] {
        if named {
            &self.named
        } else {
            &self.random
        }
    }

    pub(crate) fn etag(&self) -> &str {
        &self.etag
    }

    /// Bytes held, for caches that weigh what they keep.
    pub(crate) fn weight(&self) -> usize {
        self.random.len() + self.named.len() + self.etag.len()
    }
}

/// A 304 answer to a conditional GET for a body tagged `etag` (RFC 9110 wants the headers a 200
/// would have sent that describe caching).
pub fn render_not_modified(out: &mut Vec<u8>, etag: &str, max_age: u32, extra: &str) -> usize {
    out.clear();
    let mut head = String::with_capacity(160);
    let _ = write!(head, "HTTP/1.1 304 Not Modified\r\nServer: keiko\r\n");
    Caching::Public { etag, max_age }.write(&mut head);
    head.push_str(extra);
    out.extend_from_slice(head.as_bytes());
    out.len()
}

/// A 200 response rendered on request (`/hits`, `/metrics`): head and body in one buffer, the body
/// starting at the returned offset. `out` is cleared first so a connection can reuse it.
pub fn render_ok(out: &mut Vec<u8>, content_type: &str, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    render(out, Status::Ok, content_type, "", body)
}

/// A response of any status rendered on request, as [`render_ok`]; `extra` is more header lines.
pub fn render(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    extra: &str,
    body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    out.clear();
    body(out);
    let body_len = out.len();
    let mut head = String::with_capacity(128);
    let _ = write!(
        head,
        "HTTP/1.1 {}\r\nServer: keiko\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n\
         Cache-Control: no-store\r\n{}{extra}",
        status.line(),
        nosniff(content_type)
    );
    out.splice(0..0, head.bytes());
    head.len()
}

/// Bytes that may not appear raw in a header value, plus `%` so that escaping can be undone, and
/// `?` and `#`, which would end a URL path: controls (CR and LF among them), space, quotes,
/// backslash; everything non-ASCII is escaped too.
const UNSAFE_IN_HEADER: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'%').add(b'\\').add(b'\'').add(b'?').add(b'#');

/// `name` as a header value: unchanged when every byte is safe, percent-encoded otherwise. The
/// result is also a valid `/images/<name>` path segment (names never hold `/`).
pub fn header_safe(name: &str) -> Cow<'_, str> {
    percent_encode(name.as_bytes(), UNSAFE_IN_HEADER).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn canned_lengths_match_their_bodies() {
        for c in [
            &HEALTHY,
            &READY,
            &NOT_READY,
            &DRAINING,
            &BUSY,
            &UNAUTHORIZED,
            &DELETE_FAILED,
            &TOO_LARGE,
            &STORE_FAILED,
            &STORE_UNAVAILABLE,
            &BAD_REQUEST,
            &NOT_FOUND,
            &METHOD_NOT_ALLOWED,
            &METHOD_NOT_ALLOWED_NAMED,
            &METHOD_NOT_ALLOWED_COLLECTION,
            &REQUEST_TIMEOUT,
            &HEAD_TOO_LARGE,
        ] {
            let head = std::str::from_utf8(c.head).unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {} ", c.status.code())), "{head}");
            assert_eq!(header(head, "Content-Length"), Some(c.body.len().to_string().as_str()), "{head}");
            assert!(head.ends_with("\r\n") && !head.ends_with("\r\n\r\n"), "{head}");
        }
        assert!(std::str::from_utf8(METHOD_NOT_ALLOWED.head).unwrap().contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn tails_carry_date_connection_cors_and_the_blank_line() {
        let t = Tails::at(UNIX_EPOCH + Duration::from_secs(784_111_777), Some("*"));
        let tail = |connection, cors| t.get(Tail { connection, cors, vary_accept: false });
        assert_eq!(tail(Connection::KeepAlive, false), b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
        assert_eq!(
            tail(Connection::Close, false),
            b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            tail(Connection::KeepAliveHttp10, true),
            &b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: keep-alive\r\nAccess-Control-Allow-Origin: *\r\n\r\n"[..]
        );
        assert_eq!(
            t.get(Tail { connection: Connection::KeepAlive, cors: true, vary_accept: true }),
            &b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nAccess-Control-Allow-Origin: *\r\nVary: Accept\r\n\r\n"
                [..]
        );
        let off = Tails::at(UNIX_EPOCH, None);
        let cors_off = Tail { connection: Connection::KeepAlive, cors: true, vary_accept: false };
        assert_eq!(off.get(cors_off), off.get(Tail { cors: false, ..cors_off }), "CORS off: no line");
    }

    #[test]
    fn image_head_names_the_image() {
        let head =
            String::from_utf8(image_head("cat.png", "image/webp", 1234, Caching::NoStore, "")).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(header(&head, "Content-Type"), Some("image/webp"));
        assert_eq!(header(&head, "Content-Length"), Some("1234"));
        assert_eq!(header(&head, "Cache-Control"), Some("no-store"));
        assert_eq!(header(&head, "X-Image-Name"), Some("cat.png"));
    }

    #[test]
    fn named_heads_carry_an_etag_and_may_be_cached() {
        let tag = etag(0xab);
        assert_eq!(tag, "\"000000000000000000000000000000ab\"");
        let caching = Caching::Public { etag: &tag, max_age: 60 };
        let head = String::from_utf8(image_head("a.png", "image/webp", 1, caching, "Vary: X\r\n")).unwrap();
        assert_eq!(header(&head, "Cache-Control"), Some("public, max-age=60"));
        assert_eq!(header(&head, "ETag"), Some(tag.as_str()));
        assert!(head.ends_with("\r\nVary: X\r\n"));
        for (inm, hit) in [
            (tag.clone(), true),
            (format!("W/{tag}"), true),
            (format!("\"x\", {tag}"), true),
            ("*".to_string(), true),
            ("\"000000000000000000000000000000ac\"".to_string(), false),
            (tag.trim_matches('"').to_string(), false),
        ] {
            assert_eq!(etag_matches(inm.as_bytes(), &tag), hit, "{inm}");
        }
        let mut out = Vec::new();
        let len = render_not_modified(&mut out, &tag, 60, "");
        let text = std::str::from_utf8(&out[..len]).unwrap();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n") && text.contains("ETag: "), "{text}");
    }

    #[test]
    fn unsafe_names_are_escaped_not_copied() {
        assert_eq!(header_safe("plain-name_1.jpg"), "plain-name_1.jpg");
        assert_eq!(header_safe("evil\r\nSet-Cookie: x.png"), "evil%0D%0ASet-Cookie:%20x.png");
        assert_eq!(header_safe("say \"hi\".gif"), "say%20%22hi%22.gif");
        assert_eq!(header_safe("café.png"), "caf%C3%A9.png");
        assert_eq!(header_safe("100%.png"), "100%25.png");
        assert_eq!(header_safe("back\\slash.png"), "back%5Cslash.png");
        assert_eq!(header_safe("what?#.png"), "what%3F%23.png");
        let head = image_head("a\rb\nc.png", "image/webp", 1, Caching::NoStore, "");
        assert_eq!(head.iter().filter(|&&b| b == b'\r').count(), 6, "only the line ends may hold CR");
    }

    #[test]
    fn rendered_responses_count_their_body() {
        let mut out = b"stale".to_vec();
        let at = render_ok(&mut out, "application/json", |b| b.extend_from_slice(b"{\"a\":1}"));
        let head = std::str::from_utf8(&out[..at]).unwrap();
        assert_eq!(&out[at..], b"{\"a\":1}");
        assert_eq!(header(head, "Content-Length"), Some("7"));
        assert_eq!(header(head, "Content-Type"), Some("application/json"));
    }
}
