//! `GET /dashboard`: one self-contained page of live charts (requests/s, p50 and p99 latency,
//! errors) and every image with its hit count, for an operator's browser.
//!
//! The page is assembled once, at first request, from files compiled into the binary: the HTML,
//! its script, and the uPlot chart library vendored from npm (`scripts/vendor-uplot.sh`), so it
//! loads nothing from any other host. It polls `/metrics` and `/hits` itself; the server only adds
//! `/dashboard/thumb/<name>`, a small rendition that, unlike the image API's, counts no hit: an
//! operator looking at the counts must not change them.

use std::sync::LazyLock;

use crate::variants::spec::{Codec, Form, Variant};

const HTML: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("dashboard.js");
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");

/// The thumbnails' size: twice the cards' 128 CSS pixels would double every render for little
/// gain on a status page.
pub(crate) const THUMBNAIL: Variant =
    Variant { codec: Some(Codec::Webp), ..Variant::of(Form::Picture(Some((128, 128)))) };

/// The page's response head (without the tail) and body.
pub(crate) struct Page {
    pub(crate) head: Box<[u8]>,
    pub(crate) body: Box<[u8]>,
}

pub(crate) static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let body = HTML.replacen("/*UPLOT_CSS*/", UPLOT_CSS, 1).replacen("/*UPLOT_JS*/", UPLOT_JS, 1).replacen(
        "/*DASHBOARD_JS*/",
        SCRIPT,
        1,
    );
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: keiko\r\nContent-Type: text/html; charset=utf-8\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\n",
        body.len()
    );
    Page { head: head.into_bytes().into(), body: body.into_bytes().into() }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_everything_and_links_nothing_outside() {
        let body = std::str::from_utf8(&PAGE.body).unwrap();
        for placeholder in ["/*UPLOT_CSS*/", "/*UPLOT_JS*/", "/*DASHBOARD_JS*/"] {
            assert!(!body.contains(placeholder), "{placeholder} was not replaced");
        }
        assert!(body.contains("uPlot") && body.contains("/dashboard/thumb/"));
        for outside in ["http://", "https://", "//cdn"] {
            let found = body.match_indices(outside).map(|(at, _)| &body[at..(at + 60).min(body.len())]);
            // uPlot's licence comment names its home; nothing else may name another host.
            let found: Vec<_> =
                found.filter(|s| !s.starts_with("https://github.com/leeoniya/uPlot")).collect();
            assert!(found.is_empty(), "the page refers to another host: {found:?}");
        }
        let head = std::str::from_utf8(&PAGE.head).unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", PAGE.body.len())));
    }
}
