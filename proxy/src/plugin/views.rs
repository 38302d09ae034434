//! Plain host-side views of a request and its outcome, as the plugin runtime
//! sees them. The HTTP server adapts its types to these; the chain moves them
//! into a plugin's store for a call and back out afterwards, never copying.
//! The request travels boxed (`Box<RequestView>`), so that move is a pointer
//! swap per hook call rather than a copy of the whole head.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::cache_store::RequestCache;

pub use weir_abi::{EndpointRecord as EndpointInfo, ErrorClass};

/// The request head a chain works on.
#[derive(Debug, Default)]
pub struct RequestView {
    /// The method.
    pub method: Method,
    /// The request target (path and query; authority if absolute-form).
    pub uri: Uri,
    /// The headers; plugins may edit them in `on_request`.
    pub headers: HeaderMap,
    /// Cache state: what the cache plugin looked up, locked, or decided to
    /// store. After the chain ran, the server takes the store directive with
    /// [`RequestCache::take_store`].
    pub cache: RequestCache,
    /// The client's address (plugins read it as `RequestField::ClientAddr`,
    /// e.g. throttle's per-client keys); the server sets it.
    pub client_addr: Option<IpAddr>,
    /// Set by the server when the body outgrew the route's replay buffer:
    /// it cannot be sent again, so plugins must not retry the request
    /// (`request_flags` bit `BODY_NOT_REPLAYABLE`).
    pub body_not_replayable: bool,
    /// The request's overall deadline, set by plugins (`deadline_set`); the
    /// chain caps every attempt's timeout at what is left of it.
    pub deadline: Option<Instant>,
    /// The TLS connection the request came on (`None`: plain HTTP); the
    /// server sets it.
    pub tls: Option<Arc<crate::tls::ConnectionTls>>,
    /// The address, zone and metadata of the route's endpoints, set by the
    /// chain when it asks the core for endpoints (so only for routes with a
    /// balancer); plugins read them with `endpoint_field`.
    pub endpoint_facts: Option<Arc<dyn EndpointFacts>>,
}

/// What the config or discovery says about an upstream's endpoints, by id.
pub trait EndpointFacts: Send + Sync + std::fmt::Debug {
    /// `host:port`.
    fn address(&self, id: u32) -> Option<&str>;
    /// The endpoint's zone, if it has one.
    fn zone(&self, id: u32) -> Option<&str>;
    /// One metadata entry.
    fn metadata(&self, id: u32, key: &str) -> Option<&str>;
}

/// A response head from the upstream; its body stays with the server.
#[derive(Debug, Default)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// The headers; plugins may edit them in `on_response`.
    pub headers: HeaderMap,
}

/// A response made inside the proxy: by a plugin (throttle's 429, a cache
/// hit, a fallback) or by the chain itself (fail-closed 503).
#[derive(Debug, Clone, Default)]
pub struct LocalAnswer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The (short) body.
    pub body: Bytes,
}

impl LocalAnswer {
    /// The chain's own 503 for a fail-closed route whose plugin failed, with
    /// `Proxy-Status` (RFC 9209) naming the plugin.
    pub fn plugin_failure(plugin: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            crate::proxy_status::NAME.clone(),
            crate::proxy_status::render("proxy_internal_error", &format!("plugin {plugin} failed")),
        );
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers,
            body: Bytes::new(),
        }
    }
}

/// The outcome of one attempt, or of the whole chain. `B` is the response
/// body, which the chain never touches.
#[derive(Debug)]
pub enum Outcome<B> {
    /// The upstream answered.
    Response {
        /// Status and headers.
        head: ResponseHead,
        /// The body, opaque to the chain.
        body: B,
    },
    /// The attempt failed before a response head arrived: the one upstream
    /// error type, whose class plugins see as [`ErrorClass`].
    Error(crate::upstream::UpstreamError),
    /// A local answer.
    Local(LocalAnswer),
    /// The client's request failed (its body was malformed, stalled or cut
    /// off): not an upstream outcome, so no `on_response` sees it.
    Client(crate::fault::ClientFault),
}

impl<B> Outcome<B> {
    /// The status, if there is one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Response { head, .. } => Some(head.status),
            Self::Local(a) => Some(a.status),
            Self::Client(f) => Some(f.status),
            Self::Error(_) => None,
        }
    }

    /// The status of an upstream response (not of a local answer).
    pub(crate) fn upstream_status(&self) -> Option<StatusCode> {
        match self {
            Self::Response { head, .. } => Some(head.status),
            Self::Local(_) | Self::Error(_) | Self::Client(_) => None,
        }
    }

    /// The `(status, error)` scalars hooks receive (see `sdk/ABI.md`).
    pub(crate) fn scalars(&self) -> (i32, i32) {
        match self {
            Self::Response { head, .. } => (i32::from(head.status.as_u16()), 0),
            Self::Local(a) => (i32::from(a.status.as_u16()), weir_abi::LOCAL_ANSWER),
            Self::Client(f) => (i32::from(f.status.as_u16()), f.end_flags()),
            Self::Error(e) => {
                let reached = if e.reached_upstream {
                    weir_abi::REACHED_UPSTREAM
                } else {
                    0
                };
                (0, e.class.to_abi().code() | reached)
            }
        }
    }

    /// The headers plugins see as "the response" in `on_response`.
    pub(crate) fn headers_mut(&mut self) -> Option<&mut HeaderMap> {
        match self {
            Self::Response { head, .. } => Some(&mut head.headers),
            Self::Local(a) => Some(&mut a.headers),
            Self::Error(_) | Self::Client(_) => None,
        }
    }
}

/// The `Method` scalar passed to `on_request`.
pub(crate) fn method_code(m: &Method) -> i32 {
    use weir_abi::Method as M;
    let code = match *m {
        Method::GET => M::Get,
        Method::HEAD => M::Head,
        Method::POST => M::Post,
        Method::PUT => M::Put,
        Method::DELETE => M::Delete,
        Method::CONNECT => M::Connect,
        Method::OPTIONS => M::Options,
        Method::TRACE => M::Trace,
        Method::PATCH => M::Patch,
        _ => M::Other,
    };
    code.code()
}
