//! Which endpoint a request names, with its parameters checked. Pure, and allocation-free for
//! every request it accepts, so the event loop can call it for every request and the tests and
//! the fuzzer can call it without a server. A parameter it refuses comes back as a [`BadParam`]
//! whose message names the parameter and says what is allowed (the 400 body).
//!
//! The image API follows Lorem Picsum's shapes: `/{w}/{h}` and `/{size}` for a random image at a
//! size, `/seed/<seed>[/{w}/{h}]`, `/images/<name>[/{w}/{h}|/info|/ascii]`, `/ascii`, `/v2/list`,
//! with `?grayscale` and `?blur[=1..10]` on every image route. Query parameters keiko does not
//! know are ignored (clients add `?random=N` to defeat caches), a known one given twice is refused.

use std::fmt;

/// Longest side of a rendered image, in pixels.
pub const MAX_SIDE: u32 = 5000;
/// `?blur` without a value.
pub const DEFAULT_BLUR: u8 = 5;
/// ASCII renditions: characters per line, by default and at most.
pub const DEFAULT_ASCII_WIDTH: u16 = 80;
pub const ASCII_WIDTHS: std::ops::RangeInclusive<u16> = 8..=400;
/// Longest seed, in bytes as sent.
pub const MAX_SEED: usize = 128;
/// Longest image name, in bytes as sent (percent-encoded, a 255-byte name can take 765).
const MAX_ENCODED_NAME: usize = 3 * 255;
/// `/v2/list`: page size by default and at most.
pub const DEFAULT_LIMIT: u32 = 30;
pub const MAX_LIMIT: u32 = 100;

/// The endpoints, also the `route` label of the request counters in `metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/`: a random image.
    Random = 0,
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
    /// Anything else: 404.
    Unknown,
}

impl Route {
    pub const ALL: [Route; 14] = [
        Route::Random,
        Route::Image,
        Route::Hits,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::RandomVariant,
        Route::Seed,
        Route::ImageVariant,
        Route::Ascii,
        Route::Info,
        Route::List,
        Route::Dashboard,
        Route::Unknown,
    ];

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
            Route::Unknown => "other",
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An image: which one, and what of it (None: its full encoding, as the library made it).
    Image {
        pick: Pick<'a>,
        variant: Option<Variant>,
    },
    /// One image's facts, by its still percent-encoded name.
    Info(&'a [u8]),
    /// `/images` itself: the write routes' collection (`POST` adds, `GET ?sha256=` looks up).
    Collection {
        sha256: Option<&'a [u8]>,
        name: Option<&'a [u8]>,
    },
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
    Unknown,
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

/// A rendition of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    pub form: Form,
    pub grayscale: bool,
    /// Gaussian blur sigma, 0 for none.
    pub blur: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// WebP, scaled and centre-cropped to exactly this size, or at the source's size.
    Webp(Option<(u16, u16)>),
    /// Text art this many characters wide.
    Ascii(u16),
}

/// A refused parameter; the message is the 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

impl fmt::Display for BadParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Target<'_> {
    pub fn route(&self) -> Route {
        match self {
            Target::Image { pick: Pick::Random, variant: None } => Route::Random,
            Target::Image { pick: Pick::Named(_), variant: None } => Route::Image,
            Target::Image { variant: Some(Variant { form: Form::Ascii(_), .. }), .. } => Route::Ascii,
            Target::Image { pick: Pick::Seed(_), .. } => Route::Seed,
            Target::Image { pick: Pick::Random, .. } => Route::RandomVariant,
            Target::Image { pick: Pick::Named(_), .. } => Route::ImageVariant,
            Target::Info(_) => Route::Info,
            Target::Collection { .. } => Route::Image,
            Target::List { .. } => Route::List,
            Target::Hits => Route::Hits,
            Target::Health => Route::Health,
            Target::Ready => Route::Ready,
            Target::Metrics => Route::Metrics,
            Target::Dashboard | Target::Thumbnail(_) => Route::Dashboard,
            Target::Unknown => Route::Unknown,
        }
    }
}

/// The target that `path` and `query` name.
pub fn route<'a>(path: &'a [u8], query: &'a [u8]) -> Result<Target<'a>, BadParam> {
    let fixed = match path {
        b"/hits" => Some(Target::Hits),
        b"/healthz" => Some(Target::Health),
        b"/readyz" => Some(Target::Ready),
        b"/metrics" => Some(Target::Metrics),
        b"/dashboard" => Some(Target::Dashboard),
        _ => None,
    };
    if let Some(target) = fixed {
        return Ok(target);
    }
    if let Some(name) = path.strip_prefix(b"/dashboard/thumb/") {
        if name.is_empty() || name.contains(&b'/') || name.len() > MAX_ENCODED_NAME {
            return Ok(Target::Unknown);
        }
        return Ok(Target::Thumbnail(name));
    }
    if path == b"/images" {
        let q = Query::parse(query)?;
        return Ok(Target::Collection { sha256: q.sha256, name: q.name });
    }
    if path == b"/v2/list" {
        let q = Query::parse(query)?;
        let page = q.number("page", q.page, 1, u32::MAX, 1)?;
        let limit = q.number("limit", q.limit, 1, MAX_LIMIT, DEFAULT_LIMIT)?;
        return Ok(Target::List { page, limit });
    }
    let Some(rest) = path.strip_prefix(b"/") else { return Ok(Target::Unknown) };
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
                return Ok(Target::Unknown);
            }
            if name.len() > MAX_ENCODED_NAME {
                return Err(bad(format!("name: at most 255 bytes, got {} bytes as sent", name.len())));
            }
            (Pick::Named(name), Shape::Whole)
        }
        _ if looks_numeric(first) => {
            let size = sizes(first, segments.next(), segments.next())?;
            return with_effects(Pick::Random, Form::Webp(Some(size)), query);
        }
        _ => return Ok(Target::Unknown),
    };
    let (second, third, fourth) = (segments.next(), segments.next(), segments.next());
    let form = match (shape, second) {
        (_, None) => match shape {
            Shape::Whole => None,
            Shape::Ascii => Some(Form::Ascii(0)),
        },
        (Shape::Whole, Some(b"info")) if matches!(pick, Pick::Named(_)) && third.is_none() => {
            return Ok(match pick {
                Pick::Named(name) => Target::Info(name),
                _ => Target::Unknown,
            });
        }
        (Shape::Whole, Some(b"ascii")) if matches!(pick, Pick::Named(_)) && third.is_none() => {
            Some(Form::Ascii(0))
        }
        (Shape::Whole, Some(w)) if looks_numeric(w) => Some(Form::Webp(Some(sizes(w, third, fourth)?))),
        _ => return Ok(Target::Unknown),
    };
    match form {
        Some(form) => with_effects(pick, form, query),
        None => {
            let q = Query::parse(query)?;
            if q.grayscale.is_none() && q.blur.is_none() {
                return Ok(Target::Image { pick, variant: None });
            }
            with_effects(pick, Form::Webp(None), query)
        }
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Whole,
    Ascii,
}

fn with_effects<'a>(pick: Pick<'a>, form: Form, query: &[u8]) -> Result<Target<'a>, BadParam> {
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
        Some(v) => q.number("blur", Some(v), 1, 10, 0)? as u8,
    };
    let form = match form {
        Form::Ascii(_) => {
            let (lo, hi) = (*ASCII_WIDTHS.start(), *ASCII_WIDTHS.end());
            Form::Ascii(q.number("width", q.width, lo.into(), hi.into(), DEFAULT_ASCII_WIDTH.into())? as u16)
        }
        webp => webp,
    };
    Ok(Target::Image { pick, variant: Some(Variant { form, grayscale, blur }) })
}

/// Whether a path segment was meant as a size (so that `/-5` or `/12px` get a 400 saying why,
/// not a 404).
fn looks_numeric(segment: &[u8]) -> bool {
    matches!(segment.first(), Some(b'0'..=b'9' | b'-' | b'+'))
}

/// `/{size}` (square) or `/{width}/{height}`, each a whole number from 1 to [`MAX_SIDE`].
fn sizes(first: &[u8], second: Option<&[u8]>, extra: Option<&[u8]>) -> Result<(u16, u16), BadParam> {
    if extra.is_some() {
        return Err(bad("path: at most /{width}/{height} after the image"));
    }
    match second {
        None => {
            let side = side("size", first)?;
            Ok((side, side))
        }
        Some(second) => Ok((side("width", first)?, side("height", second)?)),
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

    fn ok(path: &str) -> Target<'_> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        route(path.as_bytes(), query.as_bytes()).unwrap_or_else(|e| panic!("{path}?{query}: {e}"))
    }

    fn refused(path: &str) -> String {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        match route(path.as_bytes(), query.as_bytes()) {
            Err(BadParam(message)) => message,
            Ok(target) => panic!("{path}?{query} was accepted as {target:?}"),
        }
    }

    fn webp(size: Option<(u16, u16)>, grayscale: bool, blur: u8) -> Option<Variant> {
        Some(Variant { form: Form::Webp(size), grayscale, blur })
    }

    #[test]
    fn fixed_paths_map_to_their_routes() {
        assert_eq!(ok("/"), Target::Image { pick: Pick::Random, variant: None });
        assert_eq!(ok("/?random=3"), Target::Image { pick: Pick::Random, variant: None });
        assert_eq!(ok("/hits"), Target::Hits);
        assert_eq!(ok("/healthz"), Target::Health);
        assert_eq!(ok("/readyz"), Target::Ready);
        assert_eq!(ok("/metrics"), Target::Metrics);
        assert_eq!(
            ok("/images/cat%20one.png"),
            Target::Image { pick: Pick::Named(b"cat%20one.png"), variant: None }
        );
        assert_eq!(ok("/images/a.png/info"), Target::Info(b"a.png"));
        assert_eq!(ok("/v2/list"), Target::List { page: 1, limit: 30 });
        assert_eq!(ok("/v2/list?page=3&limit=100"), Target::List { page: 3, limit: 100 });
    }

    #[test]
    fn sizes_seeds_and_effects_parse() {
        let random = |variant| Target::Image { pick: Pick::Random, variant };
        assert_eq!(ok("/300/200"), random(webp(Some((300, 200)), false, 0)));
        assert_eq!(ok("/64"), random(webp(Some((64, 64)), false, 0)));
        assert_eq!(ok("/?grayscale"), random(webp(None, true, 0)));
        assert_eq!(ok("/5000/1?blur&grayscale"), random(webp(Some((5000, 1)), true, DEFAULT_BLUR)));
        assert_eq!(ok("/10/10?blur=10"), random(webp(Some((10, 10)), false, 10)));
        assert_eq!(ok("/seed/abc"), Target::Image { pick: Pick::Seed(b"abc"), variant: None });
        assert_eq!(
            ok("/seed/abc/30/20?grayscale"),
            Target::Image { pick: Pick::Seed(b"abc"), variant: webp(Some((30, 20)), true, 0) }
        );
        assert_eq!(
            ok("/images/a.png/30/20?blur=2"),
            Target::Image { pick: Pick::Named(b"a.png"), variant: webp(Some((30, 20)), false, 2) }
        );
        assert_eq!(
            ok("/images/a.png/ascii?width=100&blur=1"),
            Target::Image {
                pick: Pick::Named(b"a.png"),
                variant: Some(Variant { form: Form::Ascii(100), grayscale: false, blur: 1 })
            }
        );
        assert_eq!(
            ok("/ascii"),
            Target::Image {
                pick: Pick::Random,
                variant: Some(Variant { form: Form::Ascii(DEFAULT_ASCII_WIDTH), grayscale: false, blur: 0 })
            }
        );
        assert_eq!(ok("/images/a.png?width=9").route(), Route::Image, "width means nothing here");
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
        ] {
            let message = refused(path);
            assert!(message.starts_with(names), "{path}: {message}");
        }
        let huge_seed = format!("/seed/{}", "s".repeat(MAX_SEED + 1));
        assert!(refused(&huge_seed).starts_with("seed"));
        let huge_name = format!("/images/{}", "n".repeat(800));
        assert!(refused(&huge_name).starts_with("name"));
        assert!(refused("/?blur=\u{1b}[31m").contains('?'), "control characters are not echoed");
    }

    #[test]
    fn the_collection_takes_its_lookup_and_name_parameters() {
        assert_eq!(
            ok("/images?sha256=ab&name=x.png"),
            Target::Collection { sha256: Some(b"ab"), name: Some(b"x.png") }
        );
        assert_eq!(ok("/images"), Target::Collection { sha256: None, name: None });
        assert!(refused("/images?name=a&name=b").starts_with("name"));
    }

    #[test]
    fn near_misses_are_unknown() {
        for path in
            ["", "//", "/hits/", "/HITS", "/images/", "/imagesx/a", "*", "/images/a/info/x", "/v2/list/"]
        {
            assert_eq!(route(path.as_bytes(), b"").unwrap().route(), Route::Unknown, "{path:?}");
        }
    }
}
