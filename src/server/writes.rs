//! The write routes on an event loop: `PUT /images/<name>` and `POST /images` (uploads),
//! `DELETE /images/<name>`, and `GET /images?sha256=` (which image holds given content). They
//! exist only with an admin token. The token is checked before anything else, the name next,
//! the announced size before a byte of the body is read. The body is read with the connection's
//! own reads, fed to a bounded [`Body`] and limited by a deadline; checking, decoding, writing and
//! syncing run on the loop's blocking pool (monoio's `spawn_blocking`), never on the loop. Uploads
//! always close their connection (the policy in `dispatch`), so no unread body can be mistaken
//! for the next request.
//!
//! A deletion's answer waits until the library has withdrawn the image and every loop has taken
//! that snapshot (one tick), so that no request sent after the 204 can still get the image. An
//! upload's answer goes out once the file is durable; the library serves it once it is encoded.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use percent_encoding::percent_decode;
use serde::Serialize;

use super::conns;
use super::reply::{Reply, Sent};
use super::worker::{Worker, MAX_TICK};
use crate::admin::index::{parse_hex, to_hex};
use crate::admin::{check_name, image_part, Admin, Refused};
use crate::http::body::{Body, BodyError, Framing};
use crate::http::request::Request;
use crate::http::response::{
    header_safe, Status, BAD_REQUEST, DELETE_FAILED, NOT_FOUND, NO_CONTENT, REQUEST_TIMEOUT, STORE_FAILED,
    STORE_UNAVAILABLE, TOO_LARGE, UNAUTHORIZED,
};
use crate::library::scan::Shown;

/// How long a deletion waits for the library to withdraw the image before answering anyway.
const WITHDRAW_WAIT: Duration = Duration::from_secs(5);

/// Bytes asked of the socket per read while a body arrives.
const READ_SIZE: usize = 64 * 1024;

/// The admin side, when the request carries its token: the router only makes write endpoints
/// when there is an admin, so `None` here means the credentials were wrong or missing.
fn authorized(w: &Worker, request: &Request) -> Option<&'static Admin> {
    w.shared.admin.filter(|admin| admin.authorized(request.authorization))
}

/// `GET /images?sha256=<hex>`: the name of an image whose file holds that content.
pub(crate) async fn lookup(w: &Worker, request: &Request<'_>, sha256: &[u8], reply: Reply<'_>) -> Sent {
    let Some(admin) = authorized(w, request) else { return reply.canned(&UNAUTHORIZED) };
    let Some(digest) = parse_hex(sha256) else { return reply.bad_request("sha256: 64 hexadecimal digits") };
    let found = match monoio::spawn_blocking(move || admin.lookup(&digest)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::error!("cannot look through the image directory: {e}");
            return reply.canned(&STORE_FAILED);
        }
        Err(_) => return reply.canned(&STORE_FAILED),
    };
    let Some(name) = found else { return reply.canned(&NOT_FOUND) };
    let url = format!("/images/{}", header_safe(&name));
    reply.rendered(Status::Ok, "application/json", "", |out| {
        let found = Found { name: &name, sha256: &to_hex(&digest), url: &url };
        serde_json::to_writer(out, &found).expect("lookup answers always serialize")
    })
}

#[derive(Serialize)]
struct Found<'a> {
    name: &'a str,
    sha256: &'a str,
    url: &'a str,
}

/// `PUT /images/<name>` or `POST /images[?name=]`; `name` as sent (percent-encoded), `already`
/// what the connection read past the request head.
pub(crate) async fn upload(
    w: &Worker,
    stream: &mut TcpStream,
    request: &Request<'_>,
    name: Option<&[u8]>,
    already: &[u8],
    reply: Reply<'_>,
) -> Sent {
    let Some(admin) = authorized(w, request) else { return reply.canned(&UNAUTHORIZED) };
    let name = match name.map(|n| percent_decode(n).collect::<Vec<u8>>()) {
        None => None,
        Some(decoded) => match check_name(&decoded) {
            Ok(name) => Some(name.to_string()),
            Err(why) => return reply.bad_request(why),
        },
    };
    let multipart = match request.content_type.filter(|ct| is_multipart(ct)).map(std::str::from_utf8) {
        None => None,
        Some(Ok(content_type)) => Some(content_type.to_string()),
        Some(Err(_)) => return reply.bad_request("Content-Type: not UTF-8"),
    };
    let framing = request.body.unwrap_or(Framing::Length(0));
    let mut body = match Body::new(framing, admin.limits.max_bytes) {
        Ok(body) => body,
        Err(_) => return reply.canned(&TOO_LARGE),
    };
    if request.expect_continue && stream.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]).await.0.is_err() {
        return reply.canned(&BAD_REQUEST);
    }
    match monoio::time::timeout(admin.limits.body_timeout, read_body(stream, already, &mut body)).await {
        Err(_elapsed) => {
            conns::end_reads(stream.as_raw_fd());
            return reply.canned(&REQUEST_TIMEOUT);
        }
        Ok(Err(BodyError::TooLarge)) => return reply.canned(&TOO_LARGE),
        Ok(Err(BodyError::Malformed)) => {
            return reply.bad_request("body: malformed, or shorter than announced")
        }
        Ok(Ok(())) => {}
    }
    let bytes = body.into_bytes();
    let store = move || {
        let (bytes, filename) = match multipart {
            Some(content_type) => image_part(bytes, &content_type).map_err(Refused::BadBody)?,
            None => (bytes, None),
        };
        let name = match (name, filename) {
            (Some(name), _) => Some(name),
            (None, Some(filename)) => {
                Some(check_name(filename.as_bytes()).map_err(Refused::BadName)?.to_string())
            }
            (None, None) => None,
        };
        admin.store(name.as_deref(), &bytes)
    };
    let started = Instant::now();
    let stored = monoio::spawn_blocking(store)
        .await
        .unwrap_or_else(|_| Err(Refused::Io(std::io::Error::other("the blocking pool dropped the job"))));
    w.shared.stats.uploaded(started.elapsed());
    let stored = match stored {
        Ok(stored) => stored,
        Err(Refused::Unsupported(why)) => {
            return reply.text(Status::UnsupportedMediaType, &format!("not stored: {why}"))
        }
        Err(Refused::BadName(why) | Refused::BadBody(why)) => return reply.bad_request(why),
        Err(Refused::Io(e)) => {
            tracing::error!("cannot store an upload: {e}");
            return reply.canned(&STORE_FAILED);
        }
        Err(Refused::Unavailable(why)) => {
            tracing::warn!("cannot store an upload: the object store does not answer: {why}");
            return reply.canned(&STORE_UNAVAILABLE);
        }
    };
    let location = format!("/images/{}", header_safe(&stored.name));
    let status = if stored.created { Status::Created } else { Status::Ok };
    let info = Uploaded {
        name: &stored.name,
        width: stored.width,
        height: stored.height,
        bytes: stored.bytes,
        sha256: &stored.sha256,
        linked_to: stored.linked_to.as_deref(),
        url: format!("{location}/info"),
        download_url: &location,
    };
    reply.rendered(status, "application/json", &format!("Location: {location}\r\n"), |out| {
        serde_json::to_writer(out, &info).expect("upload info always serializes")
    })
}

fn is_multipart(content_type: &[u8]) -> bool {
    content_type.trim_ascii_start().get(..19).is_some_and(|t| t.eq_ignore_ascii_case(b"multipart/form-data"))
}

/// What an upload answers with: the fields of `/images/<name>/info` that are known before the
/// library has encoded it (bytes are the upload's), plus its SHA-256 and, when deduplicated, the
/// file it is linked to.
#[derive(Serialize)]
struct Uploaded<'a> {
    name: &'a str,
    width: u32,
    height: u32,
    bytes: usize,
    sha256: &'a str,
    /// Set when the content was already there under another name: stored once, as a hard link.
    #[serde(skip_serializing_if = "Option::is_none")]
    linked_to: Option<&'a str>,
    url: String,
    download_url: &'a str,
}

/// Feeds `already`, then what the socket delivers, to `body` until it is whole.
async fn read_body(stream: &mut TcpStream, already: &[u8], body: &mut Body) -> Result<(), BodyError> {
    body.feed(already)?;
    let mut buf = Vec::with_capacity(READ_SIZE);
    while !body.is_done() {
        buf.clear();
        let (read, back) = stream.read(buf).await;
        buf = back;
        match read {
            Ok(n) if n > 0 => {
                body.feed(&buf[..n])?;
            }
            _ => return Err(BodyError::Malformed),
        }
    }
    Ok(())
}

/// `DELETE /images/<name>`; `name` as sent (percent-encoded).
pub(crate) async fn delete(w: &Worker, request: &Request<'_>, name: &[u8], reply: Reply<'_>) -> Sent {
    let Some(admin) = authorized(w, request) else { return reply.canned(&UNAUTHORIZED) };
    let decoded: Vec<u8> = percent_decode(name).collect();
    let checked = match check_name(&decoded) {
        Ok(checked) => checked.to_string(),
        Err(why) => return reply.bad_request(why),
    };
    let removing = checked.clone();
    let removed = monoio::spawn_blocking(move || admin.remove(&removing))
        .await
        .unwrap_or_else(|_| Err(Refused::Io(std::io::Error::other("the blocking pool dropped the job"))));
    match removed {
        Ok(true) => {}
        Ok(false) => return reply.canned(&NOT_FOUND),
        Err(Refused::Unavailable(why)) => {
            tracing::warn!("cannot delete {}: the object store does not answer: {why}", Shown(&checked));
            return reply.canned(&STORE_UNAVAILABLE);
        }
        Err(Refused::Io(e)) => {
            tracing::error!("cannot delete {}: {e}", Shown(&checked));
            return reply.canned(&DELETE_FAILED);
        }
        // A removal checks no content or name beyond check_name above.
        Err(Refused::Unsupported(_) | Refused::BadName(_) | Refused::BadBody(_)) => {
            return reply.canned(&DELETE_FAILED)
        }
    }
    let started = Instant::now();
    while w.shared.published.load().find(name).is_some() {
        if started.elapsed() > WITHDRAW_WAIT {
            tracing::warn!("{} was deleted but the library has not withdrawn it yet", Shown(&checked));
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    monoio::time::sleep(MAX_TICK).await;
    reply.canned(&NO_CONTENT)
}
