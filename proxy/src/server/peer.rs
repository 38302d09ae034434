//! What the request path knows of the client connection a request came on:
//! its address, the listener it came through (client faults count there)
//! and the intake's report of what it refused. Made once per connection by
//! `conn`, read by every request on it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use super::intake::IntakeReport;
use crate::telemetry::metrics::ListenerMetrics;

/// The client side of one connection, as the request path sees it.
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// The client's IP as a header value, made once per connection for
    /// `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// The listener the connection came in on: client faults count there.
    pub listener: Arc<ListenerMetrics>,
    /// What the intake refused on this connection.
    pub intake: Arc<IntakeReport>,
    /// The TLS connection's facts (`None`: plain HTTP); `X-Forwarded-Proto`
    /// follows it, and plugins read it.
    pub tls: Option<Arc<crate::tls::ConnectionTls>>,
    /// On a `redirect_https` listener: the HTTPS port every request is
    /// redirected to.
    pub redirect_https: Option<u16>,
}
