//! HTTP/1.1 as keiko speaks it: parse a request head ([`request`]), frame a body ([`body`]), pick
//! the endpoint for its method ([`route`]), and answer with bytes that were built ahead of time
//! ([`response`]). Nothing here does I/O: the connections in `server` feed bytes in and write the
//! chosen slices out.

pub mod accept;
pub mod body;
pub mod request;
pub mod response;
pub mod route;
