//! Content negotiation: which of keiko's image formats a client takes, from its `Accept` lines.
//!
//! The rule, as the README states it: AVIF when the client names `image/avif` and the image has
//! an AVIF encoding ready; else WebP when it names `image/webp`; else JPEG when it names
//! `image/jpeg` or `image/*` (old Safari, mail clients); else WebP, which is what a request
//! without `Accept`, or with only `*/*` (curl, the benchmark scripts), has always had. A range
//! with `q=0` is a refusal. Parsing runs only for requests that send the header, into three flags
//! on the stack: the hot path without it pays one header-name comparison.

use crate::variants::spec::Codec;

/// What a request's `Accept` lines admit, among the formats keiko sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepts {
    avif: bool,
    webp: bool,
    jpeg: bool,
    /// `image/webp;q=0` said outright: a wildcard does not bring WebP back.
    no_webp: bool,
    /// `*/*`: anything.
    anything: bool,
}

impl Accepts {
    /// Takes one `Accept` line into account (a list may be split over several lines).
    pub fn add(&mut self, value: &[u8]) {
        for item in value.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';').map(<[u8]>::trim_ascii);
            let range = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                let q = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q="));
                q.is_some_and(|q| !q.is_empty() && q.iter().all(|&b| b == b'0' || b == b'.'))
            });
            let is = |name: &[u8]| range.eq_ignore_ascii_case(name);
            if is(b"image/webp") {
                self.webp |= !refused;
                self.no_webp |= refused;
            } else if refused {
                continue;
            } else if is(b"image/avif") {
                self.avif = true;
            } else if is(b"image/jpeg") || is(b"image/*") || is(b"image/jpg") || is(b"image/pjpeg") {
                self.jpeg = true;
            } else if is(b"*/*") {
                self.anything = true;
            }
        }
    }

    /// The format to send of an image that has an AVIF encoding (`avif_ready`) or not.
    pub fn choose(self, avif_ready: bool) -> Codec {
        if self.avif && avif_ready {
            Codec::Avif
        } else if self.webp || !(self.jpeg || (self.no_webp && self.anything)) {
            Codec::Webp
        } else {
            Codec::Jpeg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(lines: &[&str]) -> Accepts {
        let mut accepts = Accepts::default();
        for line in lines {
            accepts.add(line.as_bytes());
        }
        accepts
    }

    const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
    const SAFARI: &str = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,\
                          image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
    const FIREFOX: &str = "image/avif,image/webp,*/*";
    const OLD_SAFARI: &str = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5";

    #[test]
    fn browsers_get_avif_when_it_is_ready_and_webp_until_then() {
        for (browser, header) in [("chrome", CHROME), ("safari", SAFARI), ("firefox", FIREFOX)] {
            assert_eq!(accepts(&[header]).choose(true), Codec::Avif, "{browser}");
            assert_eq!(accepts(&[header]).choose(false), Codec::Webp, "{browser}");
        }
    }

    #[test]
    fn no_header_and_anything_get_webp_as_always() {
        for lines in [&[][..], &["*/*"], &["text/html"], &["*/*;q=0.1"]] {
            assert_eq!(accepts(lines).choose(true), Codec::Webp, "{lines:?}");
        }
    }

    #[test]
    fn clients_that_take_neither_get_jpeg() {
        for lines in [
            &[OLD_SAFARI][..],
            &["image/jpeg"],
            &["image/*"],
            &["IMAGE/JPEG;q=0.9"],
            &["image/webp;q=0, */*"],
        ] {
            assert_eq!(accepts(lines).choose(true), Codec::Jpeg, "{lines:?}");
        }
    }

    #[test]
    fn refusals_and_split_lines_count() {
        assert_eq!(accepts(&["image/avif;q=0,image/webp"]).choose(true), Codec::Webp);
        assert_eq!(accepts(&["image/avif", "image/webp"]).choose(true), Codec::Avif);
        assert_eq!(accepts(&["image/webp;q=0.0", "image/jpeg"]).choose(false), Codec::Jpeg);
        assert_eq!(accepts(&["image/webp;q=0.5"]).choose(true), Codec::Webp, "a low q is still a yes");
    }
}
