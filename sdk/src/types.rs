//! What hooks are handed and what they return: request and response handles,
//! local answers, decisions, and plugin-defined metrics.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use weir_abi::{self as abi, ErrorClass, HeaderMap, Method, RequestField, SetMode};

use crate::hostcalls::{self, HostError, HostResult};

fn to_string(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The request being proxied. Reads go to the host on demand, so a plugin
/// that needs nothing pays nothing; writes are allowed in `on_request` only.
#[derive(Debug)]
pub struct Request {
    /// Known in `on_request` (a hook argument); read from the host elsewhere.
    pub(crate) method: Option<Method>,
    pub(crate) attempt: u32,
}

impl Request {
    /// The method (see [`Request::method_str`] for methods outside the enum).
    pub fn method(&self) -> Method {
        self.method.unwrap_or_else(|| {
            let m = hostcalls::request_field(RequestField::Method)
                .ok()
                .flatten();
            match m.as_deref() {
                Some(b"GET") => Method::Get,
                Some(b"HEAD") => Method::Head,
                Some(b"POST") => Method::Post,
                Some(b"PUT") => Method::Put,
                Some(b"DELETE") => Method::Delete,
                Some(b"CONNECT") => Method::Connect,
                Some(b"OPTIONS") => Method::Options,
                Some(b"TRACE") => Method::Trace,
                Some(b"PATCH") => Method::Patch,
                _ => Method::Other,
            }
        })
    }

    /// The method as text.
    pub fn method_str(&self) -> HostResult<String> {
        hostcalls::request_field(RequestField::Method).map(|v| to_string(v).unwrap_or_default())
    }

    /// The attempt number: 1 for the first, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The path, without the query.
    pub fn path(&self) -> HostResult<String> {
        hostcalls::request_field(RequestField::Path).map(|v| to_string(v).unwrap_or_default())
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> HostResult<Option<String>> {
        hostcalls::request_field(RequestField::Query).map(to_string)
    }

    /// The authority (`host[:port]`), if known.
    pub fn authority(&self) -> HostResult<Option<String>> {
        hostcalls::request_field(RequestField::Authority).map(to_string)
    }

    /// The client's IP address as text, if the host knows it.
    pub fn client_addr(&self) -> HostResult<Option<String>> {
        hostcalls::request_field(RequestField::ClientAddr).map(to_string)
    }

    /// Whether the request came over TLS (`false` on a host too old to say).
    pub fn is_tls(&self) -> HostResult<bool> {
        match hostcalls::request_field(RequestField::Scheme) {
            Ok(scheme) => Ok(scheme.as_deref() == Some(&b"https"[..])),
            Err(HostError(abi::status::BAD_ARGUMENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The TLS server name (SNI) the client asked for, if any.
    pub fn tls_server_name(&self) -> HostResult<Option<String>> {
        optional_field(RequestField::TlsServerName)
    }

    /// The ALPN protocol agreed on the TLS connection (`h2`, `http/1.1`).
    pub fn tls_alpn(&self) -> HostResult<Option<String>> {
        optional_field(RequestField::TlsAlpn)
    }

    /// The subject of the client's TLS certificate (`CN=alice, O=ops`), if
    /// it presented one.
    pub fn client_cert_subject(&self) -> HostResult<Option<String>> {
        optional_field(RequestField::ClientCertSubject)
    }

    /// The DNS, email and URI names of the client's TLS certificate (empty
    /// without one).
    pub fn client_cert_names(&self) -> HostResult<Vec<String>> {
        Ok(optional_field(RequestField::ClientCertNames)?
            .map(|names| names.lines().map(String::from).collect())
            .unwrap_or_default())
    }

    /// Whether the request's body can be sent again: `false` once it outgrew
    /// the route's replay buffer, and then the request must not be retried.
    pub fn body_replayable(&self) -> HostResult<bool> {
        hostcalls::request_flags().map(|f| f & abi::request_flags::BODY_NOT_REPLAYABLE as u32 == 0)
    }

    /// Sets (or shortens) the request's overall deadline, `budget` from now
    /// (in `on_request`). The host caps every later attempt's timeout at what
    /// is left of it, whichever layer runs the attempt.
    pub fn set_deadline(&mut self, budget: Duration) -> HostResult<()> {
        hostcalls::deadline_set(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX))
    }

    /// What is left of the request's deadline, if any layer set one.
    pub fn deadline_remaining(&self) -> HostResult<Option<Duration>> {
        hostcalls::deadline_remaining().map(|r| r.map(Duration::from_millis))
    }

    /// The first value of a request header (lossy UTF-8).
    pub fn header(&self, name: &str) -> HostResult<Option<String>> {
        hostcalls::header_get(HeaderMap::Request, name).map(to_string)
    }

    /// The first value of a request header, as bytes.
    pub fn header_bytes(&self, name: &str) -> HostResult<Option<Vec<u8>>> {
        hostcalls::header_get(HeaderMap::Request, name)
    }

    /// Every line of a request header, joined with `", "` (RFC 9110 §5.3):
    /// the whole value of a list such as `Cache-Control` sent over lines.
    pub fn header_joined(&self, name: &str) -> HostResult<Option<String>> {
        hostcalls::header_get_joined(HeaderMap::Request, name).map(to_string)
    }

    /// Replaces a request header (in `on_request`).
    pub fn set_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        hostcalls::header_set(HeaderMap::Request, name, value.as_bytes(), SetMode::Replace)
    }

    /// Adds another value to a request header (in `on_request`).
    pub fn append_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        hostcalls::header_set(HeaderMap::Request, name, value.as_bytes(), SetMode::Append)
    }

    /// Removes a request header (in `on_request`).
    pub fn remove_header(&mut self, name: &str) -> HostResult<()> {
        hostcalls::header_remove(HeaderMap::Request, name)
    }

    /// Sets this attempt's upstream timeout (in `on_request`); the shortest
    /// timeout any plugin sets wins.
    pub fn set_attempt_timeout(&mut self, timeout: Duration) -> HostResult<()> {
        hostcalls::set_attempt_timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The outcome of an attempt as `on_response` sees it: a response head, a
/// classified upstream error, or a local answer made by an inner plugin.
#[derive(Debug)]
pub struct Response {
    pub(crate) attempt: u32,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<ErrorClass>,
    pub(crate) reached_upstream: bool,
    pub(crate) local: bool,
    pub(crate) endpoint: Option<u32>,
    pub(crate) latency: Duration,
}

impl Response {
    /// The attempt this outcome belongs to (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The HTTP status, if the outcome is a response or a local answer.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The classified upstream error, if the attempt failed.
    pub fn error(&self) -> Option<ErrorClass> {
        self.error
    }

    /// Whether anything reached the upstream (so a retry may repeat an effect).
    pub fn reached_upstream(&self) -> bool {
        self.reached_upstream
    }

    /// Whether the outcome is a local answer from an inner plugin.
    pub fn is_local_answer(&self) -> bool {
        self.local
    }

    /// The endpoint the attempt went to, if any.
    pub fn endpoint(&self) -> Option<u32> {
        self.endpoint
    }

    /// How long the attempt took (inner plugins and upstream).
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Whether the outcome is a failure worth a breaker's attention: an upstream
    /// error or a 5xx.
    pub fn is_failure(&self) -> bool {
        self.error.is_some() || self.status.is_some_and(|s| s >= 500)
    }

    /// The first value of a response header.
    pub fn header(&self, name: &str) -> HostResult<Option<String>> {
        hostcalls::header_get(HeaderMap::Response, name).map(to_string)
    }

    /// Every line of a response header, joined with `", "` (RFC 9110 §5.3).
    pub fn header_joined(&self, name: &str) -> HostResult<Option<String>> {
        hostcalls::header_get_joined(HeaderMap::Response, name).map(to_string)
    }

    /// Replaces a response header.
    pub fn set_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        hostcalls::header_set(
            HeaderMap::Response,
            name,
            value.as_bytes(),
            SetMode::Replace,
        )
    }

    /// Adds another value to a response header.
    pub fn append_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        hostcalls::header_set(HeaderMap::Response, name, value.as_bytes(), SetMode::Append)
    }

    /// Removes a response header.
    pub fn remove_header(&mut self, name: &str) -> HostResult<()> {
        hostcalls::header_remove(HeaderMap::Response, name)
    }
}

/// How a request ended, handed to `on_end`.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// The final status sent (or about to be sent) to the client, if any.
    pub status: Option<u16>,
    /// The final classified error, if the request failed upstream.
    pub error: Option<ErrorClass>,
    /// True when the client went away before the response was sent whole
    /// (or the upstream's body failed part-way).
    pub cancelled: bool,
    /// True when the route's timeout ran out before the request finished.
    pub timed_out: bool,
    /// True when the client's request was malformed or stalled (a bad
    /// chunked body, a body that stopped arriving). It says nothing about
    /// the upstream, and no `on_response` ran for it: a breaker or budget
    /// should release what it holds for the request and count nothing.
    pub client_error: bool,
}

/// A response made by the plugin itself (throttle's 429, breaker's 503, a
/// cache hit). The body is short: the host caps it at
/// [`weir_abi::limits::ANSWER_BODY_MAX`] bytes.
#[derive(Debug, Clone)]
pub struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// An answer with `status` and no headers or body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The answer's status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        abi::header_block::push(&mut self.headers, name.as_bytes(), value.as_bytes());
        self
    }

    /// Adds a `Proxy-Status` header (RFC 9209) naming Weir as the
    /// intermediary, with an error type from the RFC's registry
    /// (e.g. `http_request_denied`, `destination_unavailable`,
    /// `http_response_timeout`) and a short free-text detail.
    pub fn proxy_status(self, error: &str, details: &str) -> Self {
        let v = alloc::format!("weir; error={error}; details=\"{details}\"");
        self.header("proxy-status", &v)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What `on_request` decides.
#[derive(Debug)]
pub enum RequestAction {
    /// Go on to the inner plugins and the upstream.
    Continue,
    /// Answer locally: inner plugins and the upstream are skipped, outer
    /// plugins see the answer in `on_response`.
    Answer(Answer),
    /// Answer with a response from the host's cache store (like `Answer`;
    /// the body comes from the store). If the entry is gone, the SDK logs
    /// it and continues instead.
    Serve(crate::cache::Serve),
}

/// What `on_response` decides.
#[derive(Debug)]
pub enum ResponseAction {
    /// Pass the outcome outwards.
    Pass,
    /// Replace it with a local answer (a fallback).
    Replace(Answer),
    /// Run everything inside this plugin again as a new attempt after a delay.
    Retry(Duration),
    /// Replace the outcome with a response from the host's cache store (a
    /// revalidated entry after a 304, a stale one on an error). If the entry
    /// is gone, the SDK logs it and passes the outcome instead.
    Serve(crate::cache::Serve),
}

/// A plugin-defined metric, registered by name (usually in `configure`); it
/// appears on `/metrics` labelled with the route and plugin.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    id: u32,
    kind: abi::MetricKind,
}

impl Metric {
    /// Defines (or finds) a counter.
    pub fn counter(name: &str) -> HostResult<Self> {
        Self::define(abi::MetricKind::Counter, name)
    }

    /// Defines (or finds) a gauge.
    pub fn gauge(name: &str) -> HostResult<Self> {
        Self::define(abi::MetricKind::Gauge, name)
    }

    /// Defines (or finds) a histogram.
    pub fn histogram(name: &str) -> HostResult<Self> {
        Self::define(abi::MetricKind::Histogram, name)
    }

    fn define(kind: abi::MetricKind, name: &str) -> HostResult<Self> {
        hostcalls::metric_define(kind, name).map(|id| Self { id, kind })
    }

    /// Counter: adds `v`. Gauge: sets it to `v`. Histogram: observes `v`.
    pub fn record(&self, v: f64) -> HostResult<()> {
        hostcalls::metric_record(self.id, v)
    }

    /// The metric's kind.
    pub fn kind(&self) -> abi::MetricKind {
        self.kind
    }
}

/// A request field a host older than the field reports as unknown: `None`.
fn optional_field(field: RequestField) -> HostResult<Option<String>> {
    match hostcalls::request_field(field) {
        Ok(value) => Ok(to_string(value)),
        Err(HostError(abi::status::BAD_ARGUMENT)) => Ok(None),
        Err(e) => Err(e),
    }
}
