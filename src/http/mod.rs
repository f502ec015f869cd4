//! HTTP/1.1 as keiko speaks it: parse a request head ([`request`]), pick the endpoint
//! ([`route`]), and answer with bytes that were built ahead of time ([`response`]). Nothing here
//! does I/O; the event loop in `server` feeds bytes in and writes the chosen slices out.

pub mod request;
pub mod response;
pub mod route;
