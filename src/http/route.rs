//! Which endpoint a request names, for its method, with its parameters checked. Pure, and
//! allocation-free for every request it accepts, so the event loop can call it for every request
//! and the tests and the fuzzer can call it without a server. A parameter it refuses comes back
//! as a [`BadParam`] whose message names the parameter and says what is allowed (the 400 body).
//!
//! The image API follows Lorem Picsum's shapes: `/{w}/{h}` and `/{size}` for a random image at a
//! size, `/seed/<seed>[/{w}/{h}]`, `/images/<name>[/{w}/{h}|/info|/ascii]`, `/ascii`, `/v2/list`,
//! with `?grayscale`, `?blur[=1..10]` and `?frame=N` (a still of an animation) on every image
//! route. A format is fixed by an extension on the last size segment (`/300/200.avif`, as Lorem
//! Picsum's `.webp` and `.jpg`) or by `?format=` on any image route; without one it is left to the
//! client's `Accept`. Sizes take `?fit=`, `?crop=` (for `cover`) and `?dpr=` (which multiplies
//! them); `?q=` sets the encoder's quality. Query parameters keiko does not
//! know are ignored (clients add `?random=N` to defeat caches), a known one given twice is refused.
//!
//! The method is part of the answer: an [`Endpoint`] is already an upload, a deletion, a lookup
//! or a 405 with the `Allow` list of that path. The write routes exist only when the [`Router`]
//! was made with them (an admin token is configured); without them `/images` is not found and
//! `/images/<name>` allows only GET and HEAD, as it always did. `OPTIONS` on a public read route
//! is a CORS preflight. `?preset=<name>` on an image route names one of the operator's
//! [`Presets`], which are written as the very paths and queries this module reads.

use std::fmt;

use enum_map::Enum;

use super::request::Method;
pub use super::response::Allow;
use crate::variants::spec::{
    Codec, Crop, Fit, Form, Variant, ASCII_WIDTHS, DEFAULT_ASCII_WIDTH, DEFAULT_BLUR, MAX_BLUR, MAX_DPR,
    MAX_FRAME, MAX_SIDE,
};

/// Longest seed, in bytes as sent.
pub const MAX_SEED: usize = 128;
/// Longest image name, in bytes once percent-decoded (as the write routes and the README say).
const MAX_NAME: usize = 255;
/// `/v2/list`: page size by default and at most.
pub const DEFAULT_LIMIT: u32 = 30;
pub const MAX_LIMIT: u32 = 100;

/// What a request is counted and timed as: the `route` label of the request metrics. Writes have
/// labels of their own, so that a few slow uploads or deletions never move the read routes' figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Route {
    /// `/`: a random image.
    Random,
    /// `/images/<name>`: one named image.
    Image,
    Hits,
    Health,
    /// `/readyz`: 200 once the library's first scan is done and an image is ready.
    Ready,
    Metrics,
    /// `/{w}/{h}`, `/{size}`, or `/` with an effect: a random image, rendered.
    RandomVariant,
    /// `/seed/<seed>…`: the image a seed picks, whole or rendered.
    Seed,
    /// `/images/<name>/{w}/{h}` or `/images/<name>` with an effect.
    ImageVariant,
    /// `/ascii` and `/images/<name>/ascii`.
    Ascii,
    /// `/images/<name>/info`.
    Info,
    /// `/v2/list`.
    List,
    /// `/dashboard` and its thumbnails.
    Dashboard,
    /// `PUT /images/<name>` and `POST /images`.
    Upload,
    /// `DELETE /images/<name>`.
    Delete,
    /// `GET /images?sha256=`.
    Lookup,
    /// Anything else: 404.
    Unknown,
}

impl Route {
    /// Whether browsers on other origins may read it (CORS): the image and catalogue routes,
    /// never the operator's or the write routes.
    pub fn is_public(self) -> bool {
        matches!(
            self,
            Route::Random
                | Route::Image
                | Route::RandomVariant
                | Route::Seed
                | Route::ImageVariant
                | Route::Ascii
                | Route::Info
                | Route::List
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Random => "/",
            Route::Image => "/images",
            Route::Hits => "/hits",
            Route::Health => "/healthz",
            Route::Ready => "/readyz",
            Route::Metrics => "/metrics",
            Route::RandomVariant => "/{width}/{height}",
            Route::Seed => "/seed",
            Route::ImageVariant => "/images/{width}/{height}",
            Route::Ascii => "/ascii",
            Route::Info => "/images/info",
            Route::List => "/v2/list",
            Route::Dashboard => "/dashboard",
            Route::Upload => "upload",
            Route::Delete => "delete",
            Route::Lookup => "lookup",
            Route::Unknown => "other",
        }
    }
}

/// What a request asks for, its method taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// An image: which one, and what of it (None: its full encoding, as the library made it).
    Image {
        pick: Pick<'a>,
        variant: Option<Variant>,
    },
    /// One image's facts, by its still percent-encoded name.
    Info(&'a [u8]),
    List {
        page: u32,
        limit: u32,
    },
    Hits,
    Health,
    Ready,
    Metrics,
    Dashboard,
    /// An image's thumbnail on the dashboard, by its still percent-encoded name.
    Thumbnail(&'a [u8]),
    /// `PUT /images/<name>` (the name as sent), or `POST /images[?name=]` (a name, or none:
    /// the part's file name or the content's hash names it).
    Upload {
        name: Option<&'a [u8]>,
    },
    /// `DELETE /images/<name>`, the name as sent.
    Delete {
        name: &'a [u8],
    },
    /// `GET /images?sha256=<hex>`: which image holds this content.
    Lookup {
        sha256: &'a [u8],
    },
    /// The path exists, but not for this method.
    MethodNotAllowed {
        route: Route,
        allow: Allow,
    },
    /// An image route with `?preset=<name>`: a rendition the operator configured.
    Preset {
        pick: Pick<'a>,
        variant: Variant,
    },
    /// `OPTIONS` on a public read route: a browser asks whether another origin may use it.
    Preflight {
        route: Route,
    },
    NotFound,
}

impl Endpoint<'_> {
    /// The label it is counted under.
    pub fn route(&self) -> Route {
        match self {
            Endpoint::Image { pick: Pick::Random, variant: None } => Route::Random,
            Endpoint::Image { variant: Some(Variant { form: Form::Ascii(_), .. }), .. } => Route::Ascii,
            Endpoint::Image { pick: Pick::Seed(_), .. } => Route::Seed,
            Endpoint::Image { pick: Pick::Named(_), variant: None } => Route::Image,
            Endpoint::Image { pick: Pick::Random, .. } => Route::RandomVariant,
            Endpoint::Image { pick: Pick::Named(_), .. } => Route::ImageVariant,
            Endpoint::Preset { pick: Pick::Random, .. } => Route::RandomVariant,
            Endpoint::Preset { pick: Pick::Seed(_), .. } => Route::Seed,
            Endpoint::Preset { pick: Pick::Named(_), .. } => Route::ImageVariant,
            Endpoint::Info(_) => Route::Info,
            Endpoint::List { .. } => Route::List,
            Endpoint::Hits => Route::Hits,
            Endpoint::Health => Route::Health,
            Endpoint::Ready => Route::Ready,
            Endpoint::Metrics => Route::Metrics,
            Endpoint::Dashboard | Endpoint::Thumbnail(_) => Route::Dashboard,
            Endpoint::Upload { .. } => Route::Upload,
            Endpoint::Delete { .. } => Route::Delete,
            Endpoint::Lookup { .. } => Route::Lookup,
            Endpoint::MethodNotAllowed { route, .. } | Endpoint::Preflight { route } => *route,
            Endpoint::NotFound => Route::Unknown,
        }
    }
}

/// Which image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    Random,
    /// The image a hash of these bytes picks.
    Seed(&'a [u8]),
    /// By its still percent-encoded name.
    Named(&'a [u8]),
}

/// A refused parameter: the message says which one and what it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

impl fmt::Display for BadParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The routes one server has: the read routes always, the write routes when configured, and the
/// operator's presets.
#[derive(Debug, Clone, Copy)]
pub struct Router {
    writes: bool,
    presets: &'static Presets,
}

impl Router {
    /// `writes`: whether uploads, deletions and lookups exist (an admin token is configured).
    pub fn new(writes: bool, presets: &'static Presets) -> Router {
        Router { writes, presets }
    }

    /// The endpoint that `method`, `path` and `query` name.
    pub fn route<'a>(
        &self,
        method: Method,
        path: &'a [u8],
        query: &'a [u8],
    ) -> Result<Endpoint<'a>, BadParam> {
        let read = match path {
            b"/images" => return self.collection(method, query),
            _ => read_target(path, query)?,
        };
        let Some(read) = read else { return Ok(Endpoint::NotFound) };
        let read = match (preset_name(query), read) {
            (None, read) => read,
            (Some(name), Endpoint::Image { pick, variant: None }) => match self.presets.get(name) {
                Some(variant) => Endpoint::Preset { pick, variant },
                None => {
                    return Err(bad(format!("preset: no preset named '{}' ({})", shown(name), self.presets)))
                }
            },
            (Some(_), Endpoint::Image { .. }) => {
                return Err(bad("preset: cannot be combined with a size, effects or ASCII art"))
            }
            (Some(_), _) => return Err(bad("preset: only on the image routes")),
        };
        let named_whole = match read {
            Endpoint::Image { pick: Pick::Named(name), variant: None } => Some(name),
            _ => None,
        };
        Ok(match (method, named_whole) {
            (Method::Get | Method::Head, _) => read,
            (Method::Options, _) if read.route().is_public() => Endpoint::Preflight { route: read.route() },
            (Method::Put, Some(name)) if self.writes => Endpoint::Upload { name: Some(name) },
            (Method::Delete, Some(name)) if self.writes => Endpoint::Delete { name },
            (_, Some(_)) if self.writes => {
                Endpoint::MethodNotAllowed { route: read.route(), allow: Allow::GetHeadPutDelete }
            }
            _ => Endpoint::MethodNotAllowed { route: read.route(), allow: Allow::GetHead },
        })
    }

    /// `/images` itself: the write routes' collection (`POST` adds, `GET ?sha256=` looks up).
    fn collection<'a>(&self, method: Method, query: &'a [u8]) -> Result<Endpoint<'a>, BadParam> {
        if !self.writes {
            return Ok(Endpoint::NotFound);
        }
        let q = Query::parse(query)?;
        Ok(match (method, q.sha256) {
            (Method::Post, _) => Endpoint::Upload { name: q.name },
            (Method::Get | Method::Head, Some(sha256)) => Endpoint::Lookup { sha256 },
            (Method::Get | Method::Head, None) => Endpoint::NotFound,
            _ => Endpoint::MethodNotAllowed { route: Route::Upload, allow: Allow::GetHeadPost },
        })
    }
}

/// The value of a `preset` parameter, if there is one.
fn preset_name(query: &[u8]) -> Option<&[u8]> {
    query.split(|&b| b == b'&').find_map(|pair| pair.strip_prefix(b"preset="))
}

/// The rendition a URL path and query under an image name ask for, as a preset's spec is written:
/// `/300/200?blur=2`, `/ascii?width=60`.
pub fn rendition_of(spec: &str) -> Result<Variant, BadParam> {
    let (path, query) = spec.split_once('?').unwrap_or((spec, ""));
    if !path.starts_with('/') || path.len() < 2 {
        return Err(bad("a rendition as a path and query, like /300/200?blur=2 or /ascii?width=60"));
    }
    let target = format!("/images/x{path}");
    match read_target(target.as_bytes(), query.as_bytes())? {
        Some(Endpoint::Image { variant: Some(variant), .. }) => Ok(variant),
        _ => Err(bad("a rendition as a path and query, like /300/200?blur=2 or /ascii?width=60")),
    }
}

/// The operator's named renditions, usable as `?preset=<name>` on the image routes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presets(Vec<(String, Variant)>);

/// No presets, for a router without any.
pub static NO_PRESETS: Presets = Presets(Vec::new());

impl Presets {
    /// `name=spec` entries separated by spaces or commas, each spec a rendition as
    /// [`rendition_of`] reads it: `thumb=/300/200 soft=/300/200?blur=2&grayscale`.
    pub fn parse(text: &str) -> anyhow::Result<Presets> {
        let mut presets = Vec::new();
        for entry in text.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|e| !e.is_empty()) {
            let (name, spec) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("preset {entry:?}: name=/width/height (then ?effects)"))?;
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 32
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "preset {name:?}: a name of 1 to 32 letters, digits, '-' or '_'"
            );
            let variant = rendition_of(spec).map_err(|e| anyhow::anyhow!("preset {name}: {e}"))?;
            anyhow::ensure!(presets.iter().all(|(n, _)| n != name), "preset {name}: given twice");
            presets.push((name.to_string(), variant));
        }
        Ok(Presets(presets))
    }

    pub fn get(&self, name: &[u8]) -> Option<Variant> {
        self.0.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, v)| *v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn variants(&self) -> impl Iterator<Item = Variant> + '_ {
        self.0.iter().map(|(_, v)| *v)
    }
}

impl fmt::Display for Presets {
    /// The names, for messages: "presets: thumb, card" or "no presets are configured".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no presets are configured");
        }
        f.write_str("presets: ")?;
        for (n, (name, _)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// The read endpoint `path` and `query` name, whatever the method; None for a path keiko does not
/// serve.
fn read_target<'a>(path: &'a [u8], query: &'a [u8]) -> Result<Option<Endpoint<'a>>, BadParam> {
    let fixed = match path {
        b"/hits" => Some(Endpoint::Hits),
        b"/healthz" => Some(Endpoint::Health),
        b"/readyz" => Some(Endpoint::Ready),
        b"/metrics" => Some(Endpoint::Metrics),
        b"/dashboard" => Some(Endpoint::Dashboard),
        _ => None,
    };
    if fixed.is_some() {
        return Ok(fixed);
    }
    if let Some(name) = path.strip_prefix(b"/dashboard/thumb/") {
        if name.is_empty() || name.contains(&b'/') || name.len() > 3 * MAX_NAME {
            return Ok(None);
        }
        return Ok(Some(Endpoint::Thumbnail(name)));
    }
    if path == b"/v2/list" {
        let q = Query::parse(query)?;
        let page = q.number("page", q.page, 1, MAX_NUMBER, 1)?;
        let limit = q.number("limit", q.limit, 1, MAX_LIMIT, DEFAULT_LIMIT)?;
        return Ok(Some(Endpoint::List { page, limit }));
    }
    let Some(rest) = path.strip_prefix(b"/") else { return Ok(None) };
    let mut segments = rest.split(|&b| b == b'/');
    let first = segments.next().unwrap_or_default();
    let (pick, shape) = match first {
        b"" if rest.is_empty() => (Pick::Random, Shape::Whole),
        b"ascii" => (Pick::Random, Shape::Ascii),
        b"seed" => {
            let seed = segments.next().unwrap_or_default();
            if seed.is_empty() {
                return Err(bad("seed: /seed/<seed> needs a seed"));
            }
            if seed.len() > MAX_SEED {
                return Err(bad(format!("seed: at most {MAX_SEED} bytes, got {}", seed.len())));
            }
            (Pick::Seed(seed), Shape::Whole)
        }
        b"images" => {
            let name = segments.next().unwrap_or_default();
            if name.is_empty() {
                return Ok(None);
            }
            // Decoding cannot lengthen a name, so only a long one is decoded to be measured.
            if name.len() > MAX_NAME {
                let decoded = percent_encoding::percent_decode(name).count();
                if decoded > MAX_NAME {
                    return Err(bad(format!("name: at most {MAX_NAME} bytes, got {decoded}")));
                }
            }
            (Pick::Named(name), Shape::Whole)
        }
        _ if looks_numeric(first) => {
            let (size, codec) = sizes(first, segments.next(), segments.next())?;
            return with_effects(Pick::Random, Form::Picture(Some(size)), codec, query).map(Some);
        }
        _ => return Ok(None),
    };
    let (second, third, fourth) = (segments.next(), segments.next(), segments.next());
    let mut codec = None;
    let form = match (shape, second) {
        (Shape::Whole, None) => None,
        (Shape::Ascii, None) => Some(Form::Ascii(0)),
        (Shape::Whole, Some(b"info")) if third.is_none() => {
            return Ok(match pick {
                Pick::Named(name) => Some(Endpoint::Info(name)),
                _ => None,
            });
        }
        (Shape::Whole, Some(b"ascii")) if matches!(pick, Pick::Named(_)) && third.is_none() => {
            Some(Form::Ascii(0))
        }
        (Shape::Whole, Some(w)) if looks_numeric(w) => {
            let (size, fixed) = sizes(w, third, fourth)?;
            codec = fixed;
            Some(Form::Picture(Some(size)))
        }
        _ => return Ok(None),
    };
    match form {
        Some(form) => with_effects(pick, form, codec, query).map(Some),
        None => {
            let q = Query::parse(query)?;
            if q.shapes_nothing() {
                return Ok(Some(Endpoint::Image { pick, variant: None }));
            }
            with_effects(pick, Form::Picture(None), None, query).map(Some)
        }
    }
}
#[derive(Clone, Copy)]
enum Shape {
    Whole,
    Ascii,
}

/// The rendition `form` with what `query` asks of it; `codec` is the format the path's extension
/// fixed, if any.
fn with_effects<'a>(
    pick: Pick<'a>,
    form: Form,
    codec: Option<Codec>,
    query: &[u8],
) -> Result<Endpoint<'a>, BadParam> {
    let q = Query::parse(query)?;
    let grayscale = match q.grayscale {
        None => false,
        Some(b"" | b"1" | b"true") => true,
        Some(other) => {
            return Err(bad(format!("grayscale: takes no value (or 1, true), got '{}'", shown(other))))
        }
    };
    let blur = match q.blur {
        None => 0,
        Some(b"") => DEFAULT_BLUR,
        Some(v) => q.number("blur", Some(v), 1, MAX_BLUR.into(), 0)? as u8,
    };
    let frame = match q.frame {
        None => None,
        Some(v) => Some(q.number("frame", Some(v), 0, MAX_FRAME.into(), 0)? as u16),
    };
    let form = match form {
        Form::Ascii(_) => {
            if q.format.is_some() || q.q.is_some() || q.fit.is_some() || q.crop.is_some() || q.dpr.is_some() {
                return Err(bad("format, q, fit, crop, dpr: not for ASCII art"));
            }
            let (lo, hi) = (*ASCII_WIDTHS.start(), *ASCII_WIDTHS.end());
            Form::Ascii(q.number("width", q.width, lo.into(), hi.into(), DEFAULT_ASCII_WIDTH.into())? as u16)
        }
        Form::Picture(size) => Form::Picture(match (size, q.dpr) {
            (_, None) => size,
            (None, Some(_)) => return Err(bad("dpr: only with a size, like /300/200?dpr=2")),
            (Some(size), Some(dpr)) => Some(scaled(size, dpr)?),
        }),
    };
    let codec = match (codec, q.format) {
        (fixed, None) => fixed,
        (None, Some(name)) => Some(
            Codec::named(name)
                .ok_or_else(|| bad(format!("format: avif, webp, jpeg or jpg, got '{}'", shown(name))))?,
        ),
        (Some(_), Some(_)) => return Err(bad("format: given both as an extension and as ?format=")),
    };
    let quality = match q.q {
        None => None,
        Some(v) => Some(q.number("q", Some(v), 1, 100, 0)? as u8),
    };
    let sized = matches!(form, Form::Picture(Some(_)));
    let fit = match q.fit {
        None => Fit::Cover,
        Some(_) if !sized => return Err(bad("fit: only with a size, like /300/200?fit=inside")),
        Some(b"cover") => Fit::Cover,
        Some(b"contain") => Fit::Contain,
        Some(b"inside") => Fit::Inside,
        Some(b"fill") => Fit::Fill,
        Some(other) => {
            return Err(bad(format!("fit: cover, contain, inside or fill, got '{}'", shown(other))))
        }
    };
    let crop = match q.crop {
        None => Crop::Centre,
        Some(_) if !sized || fit != Fit::Cover => {
            return Err(bad("crop: only with a size and fit=cover, like /300/200?crop=attention"))
        }
        Some(b"centre" | b"center") => Crop::Centre,
        Some(b"entropy") => Crop::Entropy,
        Some(b"attention") => Crop::Attention,
        Some(other) => {
            return Err(bad(format!("crop: centre, entropy or attention, got '{}'", shown(other))))
        }
    };
    let variant = Variant { form, grayscale, blur, frame, codec, quality, fit, crop };
    Ok(Endpoint::Image { pick, variant: Some(variant) })
}

/// `size` times a device pixel ratio `dpr` (1 to [`MAX_DPR`], up to two decimals: `2`, `1.5`),
/// each side rounded and still within [`MAX_SIDE`].
fn scaled(size: (u16, u16), dpr: &[u8]) -> Result<(u16, u16), BadParam> {
    let refuse =
        || bad(format!("dpr: a number from 1 to {MAX_DPR} with at most two decimals, got '{}'", shown(dpr)));
    let (whole, fraction) = match dpr.iter().position(|&b| b == b'.') {
        Some(at) => (&dpr[..at], &dpr[at + 1..]),
        None => (dpr, &b""[..]),
    };
    if fraction.len() > 2 || (!fraction.is_empty() && !fraction.iter().all(u8::is_ascii_digit)) {
        return Err(refuse());
    }
    let whole = whole_number(whole).ok_or_else(refuse)?;
    let hundredths = fraction.iter().chain(b"00").take(2).fold(0, |n, &d| n * 10 + u64::from(d - b'0'));
    let ratio = whole * 100 + hundredths;
    if !(100..=u64::from(MAX_DPR) * 100).contains(&ratio) {
        return Err(refuse());
    }
    let side = |s: u16| (u64::from(s) * ratio + 50) / 100;
    let (width, height) = (side(size.0), side(size.1));
    if width.max(height) > u64::from(MAX_SIDE) {
        return Err(bad(format!(
            "dpr: {}x{} times {} is {width}x{height}, over {MAX_SIDE} pixels a side",
            size.0,
            size.1,
            shown(dpr)
        )));
    }
    Ok((width as u16, height as u16))
}

/// Whether a path segment was meant as a size (so that `/-5` or `/12px` get a 400 saying why,
/// not a 404).
fn looks_numeric(segment: &[u8]) -> bool {
    matches!(segment.first(), Some(b'0'..=b'9' | b'-' | b'+'))
}

/// `/{size}` (square) or `/{width}/{height}`, each a whole number from 1 to [`MAX_SIDE`], the last
/// with an optional format extension (`/300/200.avif`).
fn sizes(
    first: &[u8],
    second: Option<&[u8]>,
    extra: Option<&[u8]>,
) -> Result<((u16, u16), Option<Codec>), BadParam> {
    if extra.is_some() {
        return Err(bad("path: at most /{width}/{height} after the image"));
    }
    let (last, codec) = extension(second.unwrap_or(first))?;
    match second {
        None => {
            let side = side("size", last)?;
            Ok(((side, side), codec))
        }
        Some(_) => Ok(((side("width", first)?, side("height", last)?), codec)),
    }
}

/// A size segment without its format extension, and the format it names.
fn extension(segment: &[u8]) -> Result<(&[u8], Option<Codec>), BadParam> {
    let Some(dot) = segment.iter().position(|&b| b == b'.') else { return Ok((segment, None)) };
    match Codec::named(&segment[dot + 1..]) {
        Some(codec) => Ok((&segment[..dot], Some(codec))),
        None => Err(bad(format!(
            "format: the extension of a size is .avif, .webp, .jpeg or .jpg, got '{}'",
            shown(&segment[dot..])
        ))),
    }
}

fn side(what: &str, digits: &[u8]) -> Result<u16, BadParam> {
    match whole_number(digits) {
        Some(n) if (1..=u64::from(MAX_SIDE)).contains(&n) => Ok(n as u16),
        _ => Err(bad(format!(
            "{what}: a whole number of pixels from 1 to {MAX_SIDE}, got '{}'",
            shown(digits)
        ))),
    }
}

/// The largest number any parameter may have: nine digits.
const MAX_NUMBER: u32 = 999_999_999;

/// Decimal digits only (no sign, no spaces), at most 9 of them.
fn whole_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The query parameters keiko knows, each at most once.
#[derive(Default)]
struct Query<'a> {
    grayscale: Option<&'a [u8]>,
    blur: Option<&'a [u8]>,
    frame: Option<&'a [u8]>,
    format: Option<&'a [u8]>,
    q: Option<&'a [u8]>,
    fit: Option<&'a [u8]>,
    crop: Option<&'a [u8]>,
    dpr: Option<&'a [u8]>,
    width: Option<&'a [u8]>,
    page: Option<&'a [u8]>,
    limit: Option<&'a [u8]>,
    sha256: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a [u8]) -> Result<Query<'a>, BadParam> {
        let mut q = Query::default();
        for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let slot = match name {
                b"grayscale" => &mut q.grayscale,
                b"blur" => &mut q.blur,
                b"frame" => &mut q.frame,
                b"format" => &mut q.format,
                b"q" => &mut q.q,
                b"fit" => &mut q.fit,
                b"crop" => &mut q.crop,
                b"dpr" => &mut q.dpr,
                b"width" => &mut q.width,
                b"page" => &mut q.page,
                b"limit" => &mut q.limit,
                b"sha256" => &mut q.sha256,
                b"name" => &mut q.name,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("{}: given more than once", shown(name))));
            }
        }
        Ok(q)
    }

    /// Whether nothing here changes an image: then it is served whole, as the library made it.
    fn shapes_nothing(&self) -> bool {
        [self.grayscale, self.blur, self.frame, self.format, self.q, self.fit, self.crop, self.dpr]
            .iter()
            .all(Option::is_none)
    }

    /// `value` as a number from `lo` to `hi`, or `default` when absent.
    fn number(
        &self,
        name: &str,
        value: Option<&[u8]>,
        lo: u32,
        hi: u32,
        default: u32,
    ) -> Result<u32, BadParam> {
        let Some(value) = value else { return Ok(default) };
        match whole_number(value) {
            Some(n) if (u64::from(lo)..=u64::from(hi)).contains(&n) => Ok(n as u32),
            _ => Err(bad(format!("{name}: a whole number from {lo} to {hi}, got '{}'", shown(value)))),
        }
    }
}

fn bad(message: impl Into<String>) -> BadParam {
    BadParam(message.into())
}

/// At most 40 bytes of client input, printable, for an error message.
fn shown(bytes: &[u8]) -> String {
    let mut text: String = String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if bytes.len() > 40 {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ_ONLY: Router = Router { writes: false, presets: &NO_PRESETS };
    const WITH_WRITES: Router = Router { writes: true, presets: &NO_PRESETS };

    fn routed(router: Router, method: Method, target: &str) -> Result<Endpoint<'_>, BadParam> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        router.route(method, path.as_bytes(), query.as_bytes())
    }

    fn ok(path: &str) -> Endpoint<'_> {
        routed(READ_ONLY, Method::Get, path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn refused(path: &str) -> String {
        match routed(READ_ONLY, Method::Get, path) {
            Err(BadParam(message)) => message,
            Ok(endpoint) => panic!("{path} was accepted as {endpoint:?}"),
        }
    }

    fn webp(size: Option<(u16, u16)>, grayscale: bool, blur: u8) -> Option<Variant> {
        Some(Variant { grayscale, blur, ..Variant::of(Form::Picture(size)) })
    }

    #[test]
    fn fixed_paths_map_to_their_routes() {
        assert_eq!(ok("/"), Endpoint::Image { pick: Pick::Random, variant: None });
        assert_eq!(ok("/?random=3"), Endpoint::Image { pick: Pick::Random, variant: None });
        assert_eq!(ok("/hits"), Endpoint::Hits);
        assert_eq!(ok("/healthz"), Endpoint::Health);
        assert_eq!(ok("/readyz"), Endpoint::Ready);
        assert_eq!(ok("/metrics"), Endpoint::Metrics);
        assert_eq!(
            ok("/images/cat%20one.png"),
            Endpoint::Image { pick: Pick::Named(b"cat%20one.png"), variant: None }
        );
        assert_eq!(ok("/images/a.png/info"), Endpoint::Info(b"a.png"));
        assert_eq!(ok("/v2/list"), Endpoint::List { page: 1, limit: 30 });
        assert_eq!(ok("/v2/list?page=3&limit=100"), Endpoint::List { page: 3, limit: 100 });
    }

    #[test]
    fn sizes_seeds_and_effects_parse() {
        let random = |variant| Endpoint::Image { pick: Pick::Random, variant };
        assert_eq!(ok("/300/200"), random(webp(Some((300, 200)), false, 0)));
        assert_eq!(ok("/64"), random(webp(Some((64, 64)), false, 0)));
        assert_eq!(ok("/?grayscale"), random(webp(None, true, 0)));
        assert_eq!(ok("/5000/1?blur&grayscale"), random(webp(Some((5000, 1)), true, DEFAULT_BLUR)));
        assert_eq!(ok("/10/10?blur=10"), random(webp(Some((10, 10)), false, 10)));
        let still = |frame| Some(Variant { frame: Some(frame), ..webp(None, false, 0).unwrap() });
        assert_eq!(
            ok("/images/a.gif?frame=0"),
            Endpoint::Image { pick: Pick::Named(b"a.gif"), variant: still(0) }
        );
        assert_eq!(ok("/?frame=9999"), random(still(9999)));
        assert_eq!(ok("/seed/abc"), Endpoint::Image { pick: Pick::Seed(b"abc"), variant: None });
        assert_eq!(
            ok("/seed/abc/30/20?grayscale"),
            Endpoint::Image { pick: Pick::Seed(b"abc"), variant: webp(Some((30, 20)), true, 0) }
        );
        assert_eq!(
            ok("/images/a.png/30/20?blur=2"),
            Endpoint::Image { pick: Pick::Named(b"a.png"), variant: webp(Some((30, 20)), false, 2) }
        );
        assert_eq!(
            ok("/images/a.png/ascii?width=100&blur=1"),
            Endpoint::Image {
                pick: Pick::Named(b"a.png"),
                variant: Some(Variant { blur: 1, ..Variant::of(Form::Ascii(100)) })
            }
        );
        assert_eq!(
            ok("/ascii"),
            Endpoint::Image {
                pick: Pick::Random,
                variant: Some(Variant::of(Form::Ascii(DEFAULT_ASCII_WIDTH)))
            }
        );
        assert_eq!(ok("/images/a.png?width=9").route(), Route::Image, "width means nothing here");
    }

    #[test]
    fn formats_fits_crops_qualities_and_pixel_ratios_parse() {
        let picture = |size, f: fn(Variant) -> Variant| Some(f(Variant::of(Form::Picture(size))));
        let random = |variant| Endpoint::Image { pick: Pick::Random, variant };
        let named = |variant| Endpoint::Image { pick: Pick::Named(b"a.png"), variant };
        assert_eq!(
            ok("/300/200.avif"),
            random(picture(Some((300, 200)), |v| Variant { codec: Some(Codec::Avif), ..v }))
        );
        assert_eq!(
            ok("/64.jpg"),
            random(picture(Some((64, 64)), |v| Variant { codec: Some(Codec::Jpeg), ..v }))
        );
        assert_eq!(
            ok("/images/a.png/30/20.webp"),
            named(picture(Some((30, 20)), |v| Variant { codec: Some(Codec::Webp), ..v }))
        );
        assert_eq!(
            ok("/seed/s/30/20.jpeg"),
            Endpoint::Image {
                pick: Pick::Seed(b"s"),
                variant: picture(Some((30, 20)), |v| Variant { codec: Some(Codec::Jpeg), ..v })
            }
        );
        let whole_avif = ok("/images/a.png?format=avif");
        assert_eq!(whole_avif, named(picture(None, |v| Variant { codec: Some(Codec::Avif), ..v })));
        let Endpoint::Image { variant: Some(v), .. } = whole_avif else { panic!() };
        assert!(v.is_whole(Codec::Avif) && !v.is_whole(Codec::Webp));
        assert_eq!(
            ok("/300/200?q=40&fit=inside&dpr=2"),
            random(picture(Some((600, 400)), |v| Variant { quality: Some(40), fit: Fit::Inside, ..v }))
        );
        assert_eq!(ok("/100/33?dpr=1.5"), random(picture(Some((150, 50)), |v| v)), "sides rounded");
        assert_eq!(ok("/5000/5000?dpr=1"), random(picture(Some((5000, 5000)), |v| v)));
        for (query, fit, crop) in [
            ("fit=cover&crop=attention", Fit::Cover, Crop::Attention),
            ("crop=entropy", Fit::Cover, Crop::Entropy),
            ("crop=center", Fit::Cover, Crop::Centre),
            ("fit=contain", Fit::Contain, Crop::Centre),
            ("fit=fill", Fit::Fill, Crop::Centre),
        ] {
            let want = Variant { fit, crop, ..Variant::of(Form::Picture(Some((3, 4)))) };
            assert_eq!(ok(&format!("/3/4?{query}")), random(Some(want)), "{query}");
        }
        assert_eq!(ok("/images/a.png?q=50").route(), Route::ImageVariant, "a quality is a rendition");
        assert_eq!(
            rendition_of("/300/200.avif?q=50").unwrap().codec,
            Some(Codec::Avif),
            "presets take formats"
        );
    }

    #[test]
    fn routes_label_what_was_asked() {
        for (path, want) in [
            ("/", Route::Random),
            ("/?blur", Route::RandomVariant),
            ("/3/4", Route::RandomVariant),
            ("/seed/x", Route::Seed),
            ("/seed/x/3/4", Route::Seed),
            ("/images/a", Route::Image),
            ("/images/a/3/4", Route::ImageVariant),
            ("/images/a?grayscale", Route::ImageVariant),
            ("/images/a/ascii", Route::Ascii),
            ("/ascii", Route::Ascii),
            ("/images/a/info", Route::Info),
            ("/v2/list", Route::List),
            ("/dashboard", Route::Dashboard),
            ("/dashboard/thumb/a.png", Route::Dashboard),
            ("/dashboard/thumb/a/b", Route::Unknown),
            ("/nope", Route::Unknown),
        ] {
            assert_eq!(ok(path).route(), want, "{path}");
        }
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        for (path, names) in [
            ("/0/10", "width"),
            ("/10/0", "height"),
            ("/5001/10", "width"),
            ("/-5", "size"),
            ("/+5", "size"),
            ("/12px", "size"),
            ("/99999999999999999999/1", "width"),
            ("/1/2/3", "path"),
            ("/images/a/1/2/3", "path"),
            ("/images/a/1/x", "height"),
            ("/seed/", "seed"),
            ("/?blur=0", "blur"),
            ("/?frame=10000", "frame"),
            ("/?frame=-1", "frame"),
            ("/?frame=", "frame"),
            ("/?frame=1&frame=2", "frame"),
            ("/?blur=11", "blur"),
            ("/?blur=-1", "blur"),
            ("/?blur=1&blur=2", "blur"),
            ("/?grayscale=no", "grayscale"),
            ("/?grayscale&grayscale", "grayscale"),
            ("/ascii?width=7", "width"),
            ("/ascii?width=401", "width"),
            ("/v2/list?page=0", "page"),
            ("/v2/list?limit=101", "limit"),
            ("/v2/list?limit=0", "limit"),
            ("/v2/list?page=1&page=2", "page"),
            ("/300/200.png", "format"),
            ("/300/200.", "format"),
            ("/300/200.avif?format=jpeg", "format"),
            ("/images/a?format=gif", "format"),
            ("/ascii?format=avif", "format"),
            ("/300/200?q=0", "q"),
            ("/300/200?q=101", "q"),
            ("/300/200?fit=squash", "fit"),
            ("/images/a?fit=inside", "fit"),
            ("/300/200?crop=faces", "crop"),
            ("/300/200?fit=inside&crop=entropy", "crop"),
            ("/images/a?crop=entropy", "crop"),
            ("/300/200?dpr=0.5", "dpr"),
            ("/300/200?dpr=5", "dpr"),
            ("/300/200?dpr=1.234", "dpr"),
            ("/300/200?dpr=x", "dpr"),
            ("/3000/200?dpr=2", "dpr"),
            ("/images/a?dpr=2", "dpr"),
        ] {
            let message = refused(path);
            assert!(message.starts_with(names), "{path}: {message}");
        }
        let huge_seed = format!("/seed/{}", "s".repeat(MAX_SEED + 1));
        assert!(refused(&huge_seed).starts_with("seed"));
        for long in [256, 300, 765, 800] {
            let huge_name = format!("/images/{}", "n".repeat(long));
            assert!(refused(&huge_name).starts_with("name: at most 255 bytes"), "{long} bytes");
        }
        let encoded = format!("/images/{}", "%41".repeat(255));
        assert!(matches!(ok(&encoded), Endpoint::Image { .. }), "255 bytes once decoded");
        let message = refused("/v2/list?page=1000000000");
        assert!(message.contains("999999999"), "the stated maximum: {message}");
        assert_eq!(ok("/v2/list?page=999999999"), Endpoint::List { page: 999_999_999, limit: 30 });
        assert!(refused("/?blur=\u{1b}[31m").contains('?'), "control characters are not echoed");
    }

    #[test]
    fn options_on_a_public_read_route_is_a_preflight_and_elsewhere_not_allowed() {
        for (target, route) in [
            ("/", Route::Random),
            ("/images/a.png", Route::Image),
            ("/images/a.png/300/200", Route::ImageVariant),
            ("/v2/list", Route::List),
            ("/ascii", Route::Ascii),
        ] {
            assert_eq!(
                routed(WITH_WRITES, Method::Options, target),
                Ok(Endpoint::Preflight { route }),
                "{target}"
            );
        }
        for target in ["/metrics", "/hits", "/dashboard", "/healthz"] {
            let endpoint = routed(WITH_WRITES, Method::Options, target).unwrap();
            assert!(matches!(endpoint, Endpoint::MethodNotAllowed { .. }), "{target}: {endpoint:?}");
        }
        assert!(matches!(
            routed(WITH_WRITES, Method::Options, "/images").unwrap(),
            Endpoint::MethodNotAllowed { .. }
        ));
    }

    #[test]
    fn presets_name_renditions_and_cannot_be_mixed_with_others() {
        let presets: &'static Presets = Box::leak(Box::new(
            Presets::parse("thumb=/30/20 soft=/30/20?blur=2&grayscale,art=/ascii?width=40").unwrap(),
        ));
        let router = Router { writes: false, presets };
        let thumb = rendition_of("/30/20").unwrap();
        assert_eq!(
            routed(router, Method::Get, "/images/a.png?preset=thumb"),
            Ok(Endpoint::Preset { pick: Pick::Named(b"a.png"), variant: thumb })
        );
        assert_eq!(
            routed(router, Method::Get, "/?preset=thumb"),
            Ok(Endpoint::Preset { pick: Pick::Random, variant: thumb })
        );
        let soft = presets.get(b"soft").unwrap();
        assert_eq!((soft.blur, soft.grayscale), (2, true));
        assert!(matches!(presets.get(b"art").unwrap().form, Form::Ascii(40)));
        for (target, why) in [
            ("/images/a.png/30/20?preset=thumb", "cannot be combined"),
            ("/?preset=thumb&blur=2", "cannot be combined"),
            ("/?preset=nope", "no preset named 'nope' (presets: thumb, soft, art)"),
            ("/v2/list?preset=thumb", "only on the image routes"),
        ] {
            let err = routed(router, Method::Get, target).unwrap_err().0;
            assert!(err.starts_with("preset: ") && err.contains(why), "{target}: {err}");
        }
        for bad in
            ["thumb", "=/30/20", "t=/0/0", "t=/30/20 t=/40/40", "t=30/20", "t=/images", "a b=/1/1?blur=99"]
        {
            assert!(Presets::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(NO_PRESETS.to_string(), "no presets are configured");
    }

    #[test]
    fn the_collection_takes_its_lookup_and_name_parameters() {
        let with = |method, path| routed(WITH_WRITES, method, path).unwrap();
        assert_eq!(with(Method::Get, "/images?sha256=ab&name=x.png"), Endpoint::Lookup { sha256: b"ab" });
        assert_eq!(with(Method::Head, "/images?sha256=ab"), Endpoint::Lookup { sha256: b"ab" });
        assert_eq!(with(Method::Post, "/images?name=x.png"), Endpoint::Upload { name: Some(b"x.png") });
        assert_eq!(with(Method::Post, "/images"), Endpoint::Upload { name: None });
        assert_eq!(with(Method::Get, "/images"), Endpoint::NotFound, "a lookup needs its digest");
        assert!(routed(WITH_WRITES, Method::Post, "/images?name=a&name=b")
            .unwrap_err()
            .0
            .starts_with("name"));
        for method in [Method::Get, Method::Post, Method::Delete] {
            assert_eq!(routed(READ_ONLY, method, "/images?sha256=ab").unwrap(), Endpoint::NotFound);
        }
    }

    /// Every kind of path against every method, with and without the write routes: what the
    /// endpoint is, and the `Allow` list of every 405.
    #[test]
    fn every_endpoint_answers_every_method() {
        use Method::*;
        let methods = [Get, Head, Put, Post, Delete, Other];
        let read_paths = [
            "/",
            "/3/4",
            "/seed/x",
            "/seed/x/3/4",
            "/ascii",
            "/images/a.png/3/4",
            "/images/a.png?blur",
            "/images/a.png/ascii",
            "/images/a.png/info",
            "/v2/list",
            "/hits",
            "/healthz",
            "/readyz",
            "/metrics",
            "/dashboard",
            "/dashboard/thumb/a.png",
        ];
        for writes in [false, true] {
            let router = Router { writes, presets: &NO_PRESETS };
            for path in read_paths {
                let read = routed(router, Get, path).unwrap();
                assert!(!matches!(read, Endpoint::NotFound | Endpoint::MethodNotAllowed { .. }), "{path}");
                for method in methods {
                    let want = match method {
                        Get | Head => read,
                        _ => Endpoint::MethodNotAllowed { route: read.route(), allow: Allow::GetHead },
                    };
                    assert_eq!(
                        routed(router, method, path).unwrap(),
                        want,
                        "{method:?} {path} writes={writes}"
                    );
                }
            }
            for method in methods {
                assert_eq!(routed(router, method, "/nope").unwrap(), Endpoint::NotFound, "{method:?}");
                let named = routed(router, method, "/images/a.png").unwrap();
                let want = match (method, writes) {
                    (Get | Head, _) => Endpoint::Image { pick: Pick::Named(b"a.png"), variant: None },
                    (Put, true) => Endpoint::Upload { name: Some(b"a.png") },
                    (Delete, true) => Endpoint::Delete { name: b"a.png" },
                    (_, true) => {
                        Endpoint::MethodNotAllowed { route: Route::Image, allow: Allow::GetHeadPutDelete }
                    }
                    (_, false) => Endpoint::MethodNotAllowed { route: Route::Image, allow: Allow::GetHead },
                };
                assert_eq!(named, want, "{method:?} /images/a.png writes={writes}");
                let collection = routed(router, method, "/images?sha256=ab").unwrap();
                let want = match (method, writes) {
                    (_, false) => Endpoint::NotFound,
                    (Get | Head, true) => Endpoint::Lookup { sha256: b"ab" },
                    (Post, true) => Endpoint::Upload { name: None },
                    (_, true) => {
                        Endpoint::MethodNotAllowed { route: Route::Upload, allow: Allow::GetHeadPost }
                    }
                };
                assert_eq!(collection, want, "{method:?} /images writes={writes}");
            }
        }
        assert_eq!(routed(WITH_WRITES, Put, "/images/a.png").unwrap().route(), Route::Upload);
        assert_eq!(routed(WITH_WRITES, Delete, "/images/a.png").unwrap().route(), Route::Delete);
        assert_eq!(routed(WITH_WRITES, Get, "/images?sha256=ab").unwrap().route(), Route::Lookup);
    }

    #[test]
    fn near_misses_are_unknown() {
        for path in
            ["", "//", "/hits/", "/HITS", "/images/", "/imagesx/a", "*", "/images/a/info/x", "/v2/list/"]
        {
            assert_eq!(routed(READ_ONLY, Method::Get, path).unwrap().route(), Route::Unknown, "{path:?}");
        }
    }
}
