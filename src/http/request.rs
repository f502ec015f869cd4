//! Reads one request head out of a connection's buffer and reduces it to the few facts keiko acts
//! on: method, path and query, whether the connection may stay open, the headers that change an
//! image response (`If-None-Match`, `Accept-Encoding`), and for the write routes the credentials
//! and how a body is framed.
//!
//! httparse does the parsing (strictly: no obs-fold, no stray whitespace). This module adds the
//! rules that keep framing unambiguous: only the write routes read a body (see [`super::body`]),
//! so a GET or HEAD that announces one is refused, any request that carries one ends its
//! connection after the response (whatever its handler read of it), and the shapes used for
//! request smuggling (Content-Length with Transfer-Encoding, duplicate or malformed
//! Content-Length, a transfer coding other than chunked, a missing or doubled Host on HTTP/1.1)
//! are rejected outright. Parsing borrows from the buffer and never allocates.

use std::mem::MaybeUninit;

use super::accept::Accepts;
use super::body::Framing;
use super::response::{etag_matches, Connection};

/// Largest request head (request line, headers and the blank line) keiko accepts.
pub const MAX_HEAD: usize = 8 * 1024;

/// More header lines than this is answered like an oversized head.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Options,
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request<'b> {
    pub method: Method,
    /// The request target's path (an absolute-form target reduced to it), without the query.
    pub path: &'b [u8],
    /// What follows the `?`, if anything.
    pub query: &'b [u8],
    /// What the client allows for the connection after the response.
    pub connection: Connection,
    /// The `If-None-Match` lines.
    pub if_none_match: IfNoneMatch<'b>,
    /// Whether `Accept-Encoding` admits gzip.
    pub accepts_gzip: bool,
    /// Which image formats `Accept` admits.
    pub accepts: Accepts,
    /// The `Authorization` value, if there is one.
    pub authorization: Option<&'b [u8]>,
    /// How the body is framed, when there is one (keiko reads only the write routes' bodies).
    pub body: Option<Framing>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The `Content-Type` value, if there is one.
    pub content_type: Option<&'b [u8]>,
    /// The last `X-Forwarded-For` line, believed only from a trusted proxy (see `clients`).
    pub forwarded_for: Option<&'b [u8]>,
}

/// Most `If-None-Match` lines a request may have; more is answered with 400.
const MAX_TAG_LINES: usize = 4;

/// A request's `If-None-Match` lines, taken together: RFC 9110 lets a list field be split over
/// several lines, so a tag on any of them counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfNoneMatch<'b> {
    lines: [&'b [u8]; MAX_TAG_LINES],
    count: usize,
}

impl<'b> IfNoneMatch<'b> {
    fn push(&mut self, line: &'b [u8]) -> Result<(), Rejection> {
        *self.lines.get_mut(self.count).ok_or(Rejection::BadRequest)? = line;
        self.count += 1;
        Ok(())
    }

    /// Whether a tag of any line matches `etag` (see [`etag_matches`]); false without a line.
    pub fn matches(&self, etag: &str) -> bool {
        self.lines[..self.count].iter().any(|line| etag_matches(line, etag))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed or ambiguous request: 400, then close.
    BadRequest,
    /// Head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines: 431, then close.
    HeadTooLarge,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'b> {
    /// A whole request head; `len` bytes of the buffer belong to it.
    Complete {
        request: Request<'b>,
        len: usize,
    },
    /// The head is not complete yet: read more.
    Partial,
    Rejected(Rejection),
}

/// Parses the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    // Left uninitialised: zeroing 64 headers would cost more than parsing a typical request.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Parsed::Rejected(Rejection::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Parsed::Rejected(Rejection::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Rejected(Rejection::HeadTooLarge),
        Err(_) => return Parsed::Rejected(Rejection::BadRequest),
    };
    match interpret(&req) {
        Ok(request) => Parsed::Complete { request, len },
        Err(rejection) => Parsed::Rejected(rejection),
    }
}

fn interpret<'b>(req: &httparse::Request<'_, 'b>) -> Result<Request<'b>, Rejection> {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Rejection::BadRequest);
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let http10 = version == 0;

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive) = (false, false);
    let mut if_none_match = IfNoneMatch::default();
    let mut accepts_gzip = false;
    let mut accepts = Accepts::default();
    let mut authorization = None;
    let mut expect_continue = false;
    let mut content_type = None;
    let mut forwarded_for = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(Rejection::BadRequest);
            }
            content_length = Some(parse_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only plain chunked coding is understood; a body in any other coding has no end
            // keiko could find.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Rejection::BadRequest);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            if_none_match.push(h.value)?;
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            accepts_gzip |= admits_gzip(h.value);
        } else if name.eq_ignore_ascii_case(b"accept") {
            accepts.add(h.value);
        } else if name.eq_ignore_ascii_case(b"authorization") {
            // Two credentials: which one a proxy checked and which one keiko would is anyone's guess.
            if authorization.replace(h.value).is_some() {
                return Err(Rejection::BadRequest);
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"expect") {
            // HTTP/1.0 has no interim responses (RFC 9110, 10.1.1): such a client just sends.
            expect_continue = !http10 && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    if hosts > 1 || (!http10 && hosts == 0) || (chunked && content_length.is_some()) {
        return Err(Rejection::BadRequest);
    }
    let has_body = chunked || content_length.is_some_and(|n| n > 0);
    if has_body && matches!(method, Method::Get | Method::Head) {
        return Err(Rejection::BadRequest);
    }

    let connection = if close || has_body {
        // Whatever the handler reads of a body, a request that had one ends its connection: no
        // body that is refused half-read can be mistaken for the next request.
        Connection::Close
    } else if !http10 {
        Connection::KeepAlive
    } else if keep_alive {
        Connection::KeepAliveHttp10
    } else {
        Connection::Close
    };
    let (path, query) = path_and_query(target.as_bytes());
    let body = match (chunked, content_length) {
        (true, _) => Some(Framing::Chunked),
        (false, Some(n)) if n > 0 => Some(Framing::Length(n)),
        _ => None,
    };
    Ok(Request {
        method,
        path,
        query,
        connection,
        if_none_match,
        accepts_gzip,
        accepts,
        authorization,
        body,
        expect_continue,
        content_type,
        forwarded_for,
    })
}

/// The path and query of a request target. An absolute-form target (`http://host:port/path?q`,
/// which RFC 9112 requires servers to accept) is reduced to them; an empty path means `/`.
fn path_and_query(target: &[u8]) -> (&[u8], &[u8]) {
    let starts = |prefix: &[u8]| target.get(..prefix.len()).is_some_and(|t| t.eq_ignore_ascii_case(prefix));
    let scheme = if starts(b"http://") {
        7
    } else if starts(b"https://") {
        8
    } else {
        0
    };
    let origin = if scheme > 0 {
        let after_scheme = &target[scheme..];
        let at = after_scheme.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after_scheme.len());
        &after_scheme[at..]
    } else {
        target
    };
    let (path, query) = match origin.iter().position(|&b| b == b'?') {
        Some(at) => (&origin[..at], &origin[at + 1..]),
        None => (origin, &b""[..]),
    };
    (if path.is_empty() { b"/" } else { path }, query)
}

/// Whether an `Accept-Encoding` value admits gzip: `gzip`, `x-gzip` or `*`, unless with `q=0`.
fn admits_gzip(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let mut parts = item.split(|&b| b == b';').map(<[u8]>::trim_ascii);
        let coding = parts.next().unwrap_or_default();
        let named = [&b"gzip"[..], b"x-gzip", b"*"].iter().any(|c| coding.eq_ignore_ascii_case(c));
        let refused = parts.any(|p| {
            let q = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q="));
            q.is_some_and(|q| q.iter().all(|&b| b == b'0' || b == b'.'))
        });
        named && !refused
    })
}

/// A Content-Length value: decimal digits only (no sign, no list, no spaces).
fn parse_length(value: &[u8]) -> Result<u64, Rejection> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Rejection::BadRequest);
    }
    Ok(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (Request<'_>, usize) {
        match parse(raw) {
            Parsed::Complete { request, len } => (request, len),
            other => {
                panic!("expected a complete request for {:?}, got {other:?}", String::from_utf8_lossy(raw))
            }
        }
    }

    fn rejected(raw: &[u8]) -> Rejection {
        match parse(raw) {
            Parsed::Rejected(r) => r,
            other => panic!("expected a rejection for {:?}, got {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn simple_get_keeps_the_connection_open() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (req, len) = complete(raw);
        assert_eq!(len, raw.len());
        assert_eq!(
            req,
            Request {
                method: Method::Get,
                path: b"/",
                query: b"",
                connection: Connection::KeepAlive,
                if_none_match: IfNoneMatch::default(),
                accepts_gzip: false,
                accepts: Accepts::default(),
                authorization: None,
                body: None,
                expect_continue: false,
                content_type: None,
                forwarded_for: None
            }
        );
    }

    #[test]
    fn query_string_is_not_part_of_the_path() {
        let (req, _) = complete(b"HEAD /?x=1&y=2 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((req.method, req.path, req.query), (Method::Head, &b"/"[..], &b"x=1&y=2"[..]));
        let (req, _) = complete(b"GET /images/a.png?download HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(req.path, b"/images/a.png");
    }

    #[test]
    fn absolute_form_targets_are_reduced_to_path_and_query() {
        let cases: [(&[u8], &[u8], &[u8]); 6] = [
            (b"http://127.0.0.1:8080/", b"/", b""),
            (b"HTTP://h/images/a.png?grayscale", b"/images/a.png", b"grayscale"),
            (b"https://h:1/300/200", b"/300/200", b""),
            (b"http://h", b"/", b""),
            (b"http://h?blur", b"/", b"blur"),
            (b"/plain?x=1", b"/plain", b"x=1"),
        ];
        for (target, path, query) in cases {
            let raw = [&b"GET "[..], target, b" HTTP/1.1\r\nHost: h\r\n\r\n"].concat();
            let (req, _) = complete(&raw);
            assert_eq!((req.path, req.query), (path, query), "{:?}", String::from_utf8_lossy(target));
        }
    }

    #[test]
    fn conditional_and_encoding_headers_are_kept() {
        let (req, _) = complete(
            b"GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"abc\"\r\nAccept-Encoding: br, gzip\r\n\r\n",
        );
        assert!(req.if_none_match.matches("\"abc\"") && req.accepts_gzip);
        assert!(!req.if_none_match.matches("\"abd\""));
        for (value, gzip) in [
            (&b"gzip;q=0"[..], false),
            (b"gzip; q=0.000", false),
            (b"deflate, br", false),
            (b"*", true),
            (b"x-gzip;q=0.5", true),
            (b"GZIP", true),
            (b"identity, *;q=0", false),
        ] {
            assert_eq!(admits_gzip(value), gzip, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn if_none_match_lines_are_taken_together() {
        let (req, _) = complete(
            b"GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\nIf-None-Match: W/\"b\", \"c\"\r\n\r\n",
        );
        assert!(["\"a\"", "\"b\"", "\"c\""].iter().all(|tag| req.if_none_match.matches(tag)));
        assert!(!req.if_none_match.matches("\"d\""));
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").0.if_none_match.matches("\"a\""));
        let five = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "If-None-Match: \"a\"\r\n".repeat(5));
        assert_eq!(rejected(five.as_bytes()), Rejection::BadRequest);
    }

    #[test]
    fn two_authorization_lines_are_refused_and_http10_gets_no_100_continue() {
        assert_eq!(
            rejected(b"PUT /images/a.png HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nContent-Length: 1\r\n\r\n"),
            Rejection::BadRequest
        );
        let (req, _) =
            complete(b"PUT /images/a.png HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!req.expect_continue);
        let (req, _) = complete(
            b"PUT /images/a.png HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(req.expect_continue);
    }

    #[test]
    fn connection_rules_follow_the_http_version() {
        let cases: [(&[u8], Connection); 6] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Connection::Close),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", Connection::Close),
            (b"GET / HTTP/1.0\r\n\r\n", Connection::Close),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Connection::KeepAliveHttp10),
            (b"GET / HTTP/1.0\r\nConnection: te, Keep-Alive\r\n\r\n", Connection::KeepAliveHttp10),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", Connection::KeepAlive),
        ];
        for (raw, want) in cases {
            assert_eq!(complete(raw).0.connection, want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn pipelined_requests_are_taken_one_at_a_time() {
        let raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c";
        let (first, len) = complete(raw);
        assert_eq!(first.path, b"/a");
        let (second, len2) = complete(&raw[len..]);
        assert_eq!(second.path, b"/b");
        assert_eq!(parse(&raw[len + len2..]), Parsed::Partial);
    }

    #[test]
    fn every_prefix_of_a_request_is_partial() {
        let raw = b"GET /hits HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\n\r\n";
        for end in 0..raw.len() {
            assert_eq!(parse(&raw[..end]), Parsed::Partial, "prefix of {end} bytes");
        }
        assert_eq!(complete(raw).1, raw.len());
    }

    #[test]
    fn other_methods_parse_for_the_router_to_answer() {
        let (req, _) = complete(b"PATCH /hits HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((req.method, req.connection), (Method::Other, Connection::KeepAlive));
        let (req, _) = complete(b"DELETE /images/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!((req.method, req.authorization), (Method::Delete, Some(&b"Bearer t"[..])));
        let (req, _) = complete(b"PATCH / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!((req.method, req.connection), (Method::Other, Connection::Close));
    }

    #[test]
    fn bodies_on_get_and_head_are_refused() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            assert_eq!(rejected(raw), Rejection::BadRequest, "{:?}", String::from_utf8_lossy(raw));
        }
        let (req, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(req.connection, Connection::KeepAlive);
    }

    #[test]
    fn smuggling_shapes_are_bad_requests() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(rejected(raw), Rejection::BadRequest, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for raw in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad\0Header: 1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(rejected(raw), Rejection::BadRequest, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn oversized_heads_are_refused() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        raw.resize(MAX_HEAD, b'a');
        assert_eq!(rejected(&raw), Rejection::HeadTooLarge);

        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(rejected(&many), Rejection::HeadTooLarge);
    }

    #[test]
    fn a_head_of_exactly_the_limit_is_accepted() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        raw.resize(MAX_HEAD - 4, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&raw).1, MAX_HEAD);
    }
}
