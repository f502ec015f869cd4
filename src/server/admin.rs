//! The write routes on an event loop: `PUT` and `DELETE /images/<name>`. The token is checked
//! before anything else, the name next, the announced size before a byte of the body is read.
//! The body is read with the connection's own reads, fed to a bounded [`Body`] and limited by a
//! deadline; checking, decoding, writing and syncing run on the loop's blocking pool (monoio's
//! `spawn_blocking`), never on the loop. Every answer closes the connection, so no unread body
//! can be mistaken for the next request.
//!
//! A deletion's answer waits until the library has withdrawn the image and every loop has taken
//! that snapshot (one tick), so that no request sent after the 204 can still get the image. An
//! upload's answer goes out once the file is durable; the library serves it once it is encoded.

use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use percent_encoding::percent_decode;
use serde::Serialize;

use super::api;
use super::conn::Answer;
use super::wire::Wire;
use super::worker::{Worker, MAX_TICK};
use crate::admin::body::{Body, BodyError, Framing};
use crate::admin::index::{parse_hex, to_hex};
use crate::admin::{check_name, image_part, Refused};
use crate::http::response::{self, header_safe, Canned, Connection, Status};
use crate::http::route::Route;

/// How long a deletion waits for the library to withdraw the image before answering anyway.
const WITHDRAW_WAIT: Duration = Duration::from_secs(5);

/// Bytes asked of the socket per read while a body arrives.
const READ_SIZE: usize = 64 * 1024;

/// A `PUT /images/<name>` or `POST /images[?name=]` to carry out.
pub struct Upload<'b> {
    /// The name as sent (percent-encoded); a POST may leave it to the part's file name or to the
    /// content's hash.
    pub name: Option<&'b [u8]>,
    pub authorized: bool,
    pub framing: Framing,
    pub expect_continue: bool,
    /// The Content-Type, when it is `multipart/form-data` (the image is then the part `image`).
    pub multipart: Option<&'b [u8]>,
}

/// A `GET /images?sha256=<hex>` to answer.
pub struct Lookup<'b> {
    pub sha256: &'b [u8],
    pub authorized: bool,
    pub head_only: bool,
}

pub async fn lookup(w: &Worker, lookup: Lookup<'_>, connection: Connection, wire: &mut Wire) -> Answer {
    let Some(admin) = w.shared.admin else { return canned(w, &response::NOT_FOUND, connection, wire) };
    if !lookup.authorized {
        return canned(w, &response::UNAUTHORIZED, connection, wire);
    }
    let Some(digest) = parse_hex(lookup.sha256) else {
        return api::bad_request(w, Route::Image, "sha256: 64 hexadecimal digits", connection, wire);
    };
    let found = match monoio::spawn_blocking(move || admin.lookup(&digest)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::error!("cannot look through the image directory: {e}");
            return canned(w, &response::STORE_FAILED, connection, wire);
        }
        Err(_) => return canned(w, &response::STORE_FAILED, connection, wire),
    };
    let Some(name) = found else { return canned(w, &response::NOT_FOUND, connection, wire) };
    let url = format!("/images/{}", header_safe(&name));
    let body_at = response::render_ok(wire.rendered_mut(), "application/json", |out| {
        let found = Found { name: &name, sha256: &to_hex(&digest), url: &url };
        serde_json::to_writer(out, &found).expect("lookup answers always serialize")
    });
    wire.load_rendered(body_at, w.tails(), connection, lookup.head_only);
    Answer { route: Route::Image, status: Status::Ok, connection, hit: None }
}

#[derive(Serialize)]
struct Found<'a> {
    name: &'a str,
    sha256: &'a str,
    url: &'a str,
}

/// Answers a PUT; `already` is what the connection read past the request head.
pub async fn upload(
    w: &Worker,
    stream: &mut TcpStream,
    already: &[u8],
    up: Upload<'_>,
    wire: &mut Wire,
) -> Answer {
    let close = Connection::Close;
    let Some(admin) = w.shared.admin else { return canned(w, &response::METHOD_NOT_ALLOWED, close, wire) };
    if !up.authorized {
        return canned(w, &response::UNAUTHORIZED, close, wire);
    }
    let name = match up.name.map(|n| percent_decode(n).collect::<Vec<u8>>()) {
        None => None,
        Some(decoded) => match check_name(&decoded) {
            Ok(name) => Some(name.to_string()),
            Err(why) => return api::bad_request(w, Route::Image, why, close, wire),
        },
    };
    let multipart = match up.multipart.map(std::str::from_utf8) {
        None => None,
        Some(Ok(content_type)) => Some(content_type.to_string()),
        Some(Err(_)) => return api::bad_request(w, Route::Image, "Content-Type: not UTF-8", close, wire),
    };
    let mut body = match Body::new(up.framing, admin.limits.max_bytes) {
        Ok(body) => body,
        Err(_) => return canned(w, &response::TOO_LARGE, close, wire),
    };
    if up.expect_continue && stream.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]).await.0.is_err() {
        return canned(w, &response::BAD_REQUEST, close, wire);
    }
    let read = monoio::time::timeout(admin.limits.body_timeout, read_body(stream, already, &mut body)).await;
    match read {
        Err(_elapsed) => return canned(w, &response::REQUEST_TIMEOUT, close, wire),
        Ok(Err(BodyError::TooLarge)) => return canned(w, &response::TOO_LARGE, close, wire),
        Ok(Err(BodyError::Malformed)) => {
            return api::bad_request(
                w,
                Route::Image,
                "body: malformed, or shorter than announced",
                close,
                wire,
            )
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
    let started = std::time::Instant::now();
    let stored = match monoio::spawn_blocking(store).await {
        Ok(result) => result,
        Err(_) => Err(Refused::Io(std::io::Error::other("the blocking pool dropped the job"))),
    };
    w.shared.metrics.uploaded(started.elapsed());
    let stored = match stored {
        Ok(stored) => stored,
        Err(Refused::Unsupported(why)) => {
            let body_at = response::render(
                wire.rendered_mut(),
                Status::UnsupportedMediaType,
                "text/plain; charset=utf-8",
                "",
                |out| out.extend_from_slice(format!("not stored: {why}\n").as_bytes()),
            );
            wire.load_rendered(body_at, w.tails(), close, false);
            return Answer {
                route: Route::Image,
                status: Status::UnsupportedMediaType,
                connection: close,
                hit: None,
            };
        }
        Err(Refused::BadName(why) | Refused::BadBody(why)) => {
            return api::bad_request(w, Route::Image, why, close, wire)
        }
        Err(Refused::Io(e)) => {
            tracing::error!("cannot store an upload: {e}");
            return canned(w, &response::STORE_FAILED, close, wire);
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
    let body_at = response::render(
        wire.rendered_mut(),
        status,
        "application/json",
        &format!("Location: {location}\r\n"),
        |out| serde_json::to_writer(out, &info).expect("upload info always serializes"),
    );
    wire.load_rendered(body_at, w.tails(), close, false);
    Answer { route: Route::Image, status, connection: close, hit: None }
}

/// What a PUT answers with: the image as stored (the library serves it once it is encoded).
#[derive(Serialize)]
/// The fields of `/images/<name>/info` that are known before the library has encoded it (bytes
/// are the upload's), plus its SHA-256 and, when deduplicated, the file it is linked to.
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

/// A `DELETE /images/<name>` to carry out.
pub struct Deletion<'b> {
    /// The name as sent (percent-encoded).
    pub name: &'b [u8],
    pub authorized: bool,
}

pub async fn delete(w: &Worker, deletion: Deletion<'_>, connection: Connection, wire: &mut Wire) -> Answer {
    let Some(admin) = w.shared.admin else {
        return canned(w, &response::METHOD_NOT_ALLOWED, connection, wire);
    };
    if !deletion.authorized {
        return canned(w, &response::UNAUTHORIZED, connection, wire);
    }
    let decoded: Vec<u8> = percent_decode(deletion.name).collect();
    let name = match check_name(&decoded) {
        Ok(name) => name.to_string(),
        Err(why) => return api::bad_request(w, Route::Image, why, connection, wire),
    };
    let removing = name.clone();
    let removed = match monoio::spawn_blocking(move || admin.remove(&removing)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("the blocking pool dropped the job")),
    };
    match removed {
        Ok(true) => {}
        Ok(false) => return canned(w, &response::NOT_FOUND, connection, wire),
        Err(e) => {
            tracing::error!("cannot delete {name}: {e}");
            return canned(w, &response::DELETE_FAILED, connection, wire);
        }
    }
    let started = Instant::now();
    while w.shared.published.load().find(deletion.name).is_some() {
        if started.elapsed() > WITHDRAW_WAIT {
            tracing::warn!("{name} was deleted but the library has not withdrawn it yet");
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    monoio::time::sleep(MAX_TICK).await;
    canned(w, &response::NO_CONTENT, connection, wire)
}

fn canned(w: &Worker, canned: &'static Canned, connection: Connection, wire: &mut Wire) -> Answer {
    wire.load(canned.head, w.tails(), connection, canned.body);
    Answer { route: Route::Image, status: canned.status, connection, hit: None }
}
