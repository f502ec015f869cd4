//! Knobs that only the integration tests turn, compiled in with the cargo feature `test-hooks`
//! (`scripts/test.sh` enables it): they make faults that a release meets only under extreme load
//! happen on demand. Without the feature every knob reads as unset and the panic route does not
//! exist, so no environment variable can change how a served build behaves.

/// Milliseconds each render sleeps before it starts, so that the render queue fills up.
pub(crate) const RENDER_DELAY_MS: &str = "KEIKO_DEBUG_RENDER_DELAY_MS";
/// Milliseconds the hit writer stalls before its first drain.
pub(crate) const WRITER_STALL_MS: &str = "KEIKO_DEBUG_WRITER_STALL_MS";
/// Capacity of the hit channel, instead of the usual 65,536.
pub(crate) const CHANNEL_CAPACITY: &str = "KEIKO_DEBUG_CHANNEL_CAPACITY";
/// A request for this path panics in its connection's handler.
pub(crate) const PANIC_PATH: &[u8] = b"/debug/panic";

/// The number in the environment variable `name`, when this build has the hooks.
pub(crate) fn knob(name: &str) -> Option<u64> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    std::env::var(name).ok()?.parse().ok()
}

/// Whether a request for `path` must panic (the containment test).
pub(crate) fn panics(path: &[u8]) -> bool {
    cfg!(feature = "test-hooks") && path == PANIC_PATH
}
