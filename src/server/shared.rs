//! What every event loop reads and nothing writes after startup, but the stop and drain flags:
//! the catalogue's publication slot, the routes, the renditions, the write routes when they are
//! on, the exposition behind `/metrics`, and the limits that connections keep.

use std::sync::atomic::{AtomicBool, Ordering};

use super::conns::Timeouts;
use super::stats::ServerStats;
use crate::admin::Admin;
use crate::catalog::Published;
use crate::clients::TrustedProxies;
use crate::http::route::Router;
use crate::metrics::Exposition;
use crate::signing::Signing;
use crate::store::stats::StoreStats;
use crate::variants::Variants;

pub(crate) struct Shared {
    /// The library's newest catalogue snapshot, which each loop takes on its tick.
    pub(crate) published: &'static Published,
    pub(crate) router: Router,
    /// Renditions: the shared cache and the render pool.
    pub(crate) variants: &'static Variants,
    /// The write routes, when an admin token is configured.
    pub(crate) admin: Option<&'static Admin>,
    /// With an s3:// library, whether its store answers (`/readyz` says when it does not).
    pub(crate) store: Option<&'static StoreStats>,
    pub(crate) exposition: &'static Exposition,
    pub(crate) stats: &'static ServerStats,
    pub(crate) timeouts: Timeouts,
    /// `Access-Control-Allow-Origin` of the public read routes, when CORS is on.
    pub(crate) cors_origin: Option<String>,
    /// Signed URLs, when keys are configured.
    pub(crate) signing: Option<&'static Signing>,
    /// Whose `X-Forwarded-For` names the client (for render budgets).
    pub(crate) trusted_proxies: TrustedProxies,
    /// With `--presets-only`, the 403 message for any other rendition.
    pub(crate) presets_only: Option<String>,
    /// Open connections per event loop; past it, new ones are closed at once.
    pub(crate) max_conns: usize,
    /// The clock requests are timed with, calibrated once at startup.
    pub(crate) timer: quanta::Clock,
    pub(crate) flags: Flags,
}

/// How far shutdown has got; set from outside the loops.
#[derive(Default)]
pub(crate) struct Flags {
    stopping: AtomicBool,
    draining: AtomicBool,
}

impl Flags {
    /// True once shutdown announced itself: `/readyz` answers 503 and responses close.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once the listeners are being shut down: a failed accept means stop.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn start_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}
