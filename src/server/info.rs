//! What the catalogue says about its images, as JSON: `/images/<name>/info` for one and
//! `/v2/list?page&limit` for a page of all of them in name order, with Lorem Picsum's fields and
//! `Link` headers (keiko's URLs relative to the server). Rendered on request into the
//! connection's reusable buffer.

use serde::Serialize;

use super::reply::{Reply, Sent};
use super::worker::Worker;
use crate::catalog::Image;
use crate::http::response::{header_safe, Status, NOT_FOUND};

const JSON: &str = "application/json";

/// One image's facts.
#[derive(Serialize)]
struct Info<'a> {
    name: &'a str,
    width: u32,
    height: u32,
    /// The format of the source file ("JPEG", "HEIC", ...).
    format: &'static str,
    /// Frames of the served WebP: more than 1 for an animation.
    frames: u32,
    /// Bytes of the WebP encoding.
    bytes: usize,
    /// The encodings the library made, each with its size in bytes: `webp` always, `avif` once
    /// the backfill made it. JPEG, and any other format asked for, is rendered on request.
    representations: Representations,
    hits: u64,
    url: String,
    download_url: String,
}

#[derive(Serialize)]
struct Representations {
    webp: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    avif: Option<usize>,
}

impl<'a> Info<'a> {
    fn of(image: &'a Image) -> Info<'a> {
        let (width, height) = image.webp.body.dimensions();
        let path = format!("/images/{}", header_safe(image.name()));
        Info {
            name: image.name(),
            width,
            height,
            format: image.source.name(),
            frames: image.webp.body.frames(),
            bytes: image.webp.body.len(),
            representations: Representations {
                webp: image.webp.body.len(),
                avif: image.avif.as_ref().map(|a| a.body.len()),
            },
            hits: image.tally.total(),
            url: format!("{path}/info"),
            download_url: path,
        }
    }
}

/// `/images/<name>/info`; `name` as sent (percent-encoded).
pub(crate) fn image(w: &Worker, name: &[u8], reply: Reply) -> Sent {
    let catalog = w.catalog();
    let Some(index) = catalog.find(name) else { return reply.canned(&NOT_FOUND) };
    reply.rendered(Status::Ok, JSON, "", |out| {
        serde_json::to_writer(out, &Info::of(catalog.image(index))).expect("image info always serializes")
    })
}

/// A page of every image, in name order, with a `Link` header to the pages before and after.
pub(crate) fn list(w: &Worker, page: u32, limit: u32, reply: Reply) -> Sent {
    let catalog = w.catalog();
    let start = (u64::from(page) - 1).saturating_mul(u64::from(limit));
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(catalog.len());
    let end = start.saturating_add(limit as usize).min(catalog.len());
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("</v2/list?page={}&limit={limit}>; rel=\"prev\"", page - 1));
    }
    if end < catalog.len() {
        links.push(format!("</v2/list?page={}&limit={limit}>; rel=\"next\"", page + 1));
    }
    let link = if links.is_empty() { String::new() } else { format!("Link: {}\r\n", links.join(", ")) };
    reply.rendered(Status::Ok, JSON, &link, |out| {
        let page: Vec<Info> = (start..end).map(|i| Info::of(catalog.image(i))).collect();
        serde_json::to_writer(out, &page).expect("image info always serializes")
    })
}
