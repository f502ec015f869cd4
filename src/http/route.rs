//! Which endpoint a request path names. Pure and allocation-free, so the event loop can call it for
//! every request and the tests can call it without a server.

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
    /// Anything else: 404.
    Unknown,
}

impl Route {
    pub const ALL: [Route; 7] = [
        Route::Random,
        Route::Image,
        Route::Hits,
        Route::Health,
        Route::Ready,
        Route::Metrics,
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
            Route::Unknown => "other",
        }
    }
}

/// The route for `path` (query string already removed) and, for `/images/<name>`, the still
/// percent-encoded name.
pub fn route(path: &[u8]) -> (Route, &[u8]) {
    let route = match path {
        b"/" => Route::Random,
        b"/hits" => Route::Hits,
        b"/healthz" => Route::Health,
        b"/readyz" => Route::Ready,
        b"/metrics" => Route::Metrics,
        _ => match path.strip_prefix(b"/images/") {
            Some(name) => return (Route::Image, name),
            None => Route::Unknown,
        },
    };
    (route, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_map_to_their_routes() {
        assert_eq!(route(b"/"), (Route::Random, &b""[..]));
        assert_eq!(route(b"/hits"), (Route::Hits, &b""[..]));
        assert_eq!(route(b"/healthz"), (Route::Health, &b""[..]));
        assert_eq!(route(b"/readyz"), (Route::Ready, &b""[..]));
        assert_eq!(route(b"/metrics"), (Route::Metrics, &b""[..]));
        assert_eq!(route(b"/images/cat%20one.png"), (Route::Image, &b"cat%20one.png"[..]));
    }

    #[test]
    fn near_misses_are_unknown() {
        for path in [&b""[..], b"//", b"/hits/", b"/HITS", b"/images", b"/imagesx/a", b"*", b"http://h/"] {
            assert_eq!(route(path).0, Route::Unknown, "{:?}", String::from_utf8_lossy(path));
        }
    }
}
