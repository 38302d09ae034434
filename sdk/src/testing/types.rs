//! The values the harness takes and gives: scripted requests and outcomes,
//! local answers, hook results and the record of a whole request.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use weir_abi::{ErrorClass, Method};

use super::fake::ReqData;

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A scripted request: method, path, query, headers, client address, and
/// whether its body can be replayed (it can, unless said otherwise).
#[derive(Debug, Clone)]
pub struct TestRequest {
    data: ReqData,
}

impl TestRequest {
    /// A request with any method.
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Self {
            data: ReqData {
                method: method.to_owned(),
                path,
                query,
                body_replayable: true,
                ..ReqData::default()
            },
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// `POST path`.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a header (names are case-insensitive).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.data
            .headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the authority.
    pub fn authority(mut self, authority: &str) -> Self {
        self.data.authority = Some(authority.to_owned());
        self
    }

    /// Sets the client's address (text, e.g. `"192.0.2.7"`).
    pub fn client(mut self, addr: &str) -> Self {
        self.data.client_addr = Some(addr.to_owned());
        self
    }

    /// Marks the request as come over TLS, with the SNI name the client
    /// sent and the ALPN protocol agreed.
    pub fn tls(mut self, server_name: Option<&str>, alpn: Option<&str>) -> Self {
        self.data.tls = Some((server_name.map(str::to_owned), alpn.map(str::to_owned)));
        self
    }

    /// Gives the request a client certificate with this subject and names
    /// (and marks it TLS).
    pub fn client_cert(mut self, subject: &str, names: &[&str]) -> Self {
        if self.data.tls.is_none() {
            self.data.tls = Some((None, None));
        }
        self.data.client_cert = Some((subject.to_owned(), names.join("\n")));
        self
    }

    /// Marks the body as too large for the replay buffer.
    pub fn unreplayable_body(mut self) -> Self {
        self.data.body_replayable = false;
        self
    }

    pub(crate) fn into_data(self) -> ReqData {
        self.data
    }
}

/// One request in flight, for the single-hook methods of the harness.
#[derive(Debug)]
pub struct Flight {
    pub(crate) id: u64,
    /// The attempt the next hook call is for (1-based); raise it for a retry.
    pub attempt: u32,
    pub(crate) req: ReqData,
    /// Endpoints already tried, offered to `select`.
    pub tried: Vec<u32>,
}

impl Flight {
    /// The request id the plugin sees.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A request header as it is now (after the plugin's edits).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.req.headers, name)
    }

    /// The request's headers as they are now.
    pub fn headers(&self) -> &[(String, String)] {
        &self.req.headers
    }

    /// Time left before the request deadline a plugin set, at virtual `now`.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.req.deadline_ns
    }
}

/// A scripted outcome of one attempt: a response, a classified error or a
/// local answer, with its latency on the virtual clock.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The status (responses and local answers).
    pub status: Option<u16>,
    /// The error class (upstream failures).
    pub error: Option<ErrorClass>,
    /// Whether the request reached the upstream.
    pub reached: bool,
    /// Whether this is a local answer.
    pub local: bool,
    /// The latency of the attempt.
    pub latency: Duration,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The endpoint of the attempt.
    pub endpoint: Option<u32>,
    pub(crate) body: Vec<u8>,
}

impl Outcome {
    /// A response with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            error: None,
            reached: true,
            local: false,
            latency: Duration::from_millis(1),
            headers: Vec::new(),
            endpoint: None,
            body: Vec::new(),
        }
    }

    /// An upstream failure; `reached` is false (add [`Outcome::reached`]).
    pub fn error(class: ErrorClass) -> Self {
        Self {
            status: None,
            error: Some(class),
            reached: false,
            ..Self::status(0)
        }
    }

    /// A local answer with `status` (as an inner plugin would make).
    pub fn local(status: u16) -> Self {
        Self {
            local: true,
            reached: false,
            ..Self::status(status)
        }
    }

    pub(crate) fn from_answer(a: TestAnswer) -> Self {
        Self {
            headers: a.headers,
            body: a.body,
            latency: Duration::ZERO,
            ..Self::local(a.status)
        }
    }

    /// Says that the request reached the upstream.
    pub fn reached(mut self) -> Self {
        self.reached = true;
        self
    }

    /// Sets the latency.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the endpoint (for the single-hook [`super::Harness::on_response`]).
    pub fn on_endpoint(mut self, id: u32) -> Self {
        self.endpoint = Some(id);
        self
    }

    /// A response header's value.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    pub(crate) fn has_head(&self) -> bool {
        self.status.is_some()
    }

    pub(crate) fn scalars(&self) -> (i32, i32) {
        let mut err = self.error.map_or(0, ErrorClass::code);
        if self.reached && self.error.is_some() {
            err |= weir_abi::REACHED_UPSTREAM;
        }
        if self.local {
            err |= weir_abi::LOCAL_ANSWER;
        }
        (self.status.map_or(0, i32::from), err)
    }
}

/// A local answer the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestAnswer {
    /// Its status.
    pub status: u16,
    /// Its headers (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl TestAnswer {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// What `on_request` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestResult {
    /// Continue, with the attempt timeout it set, if any.
    Continue {
        /// The shortest attempt timeout the plugin set.
        timeout: Option<Duration>,
    },
    /// Answered locally.
    Answer(TestAnswer),
}

impl RequestResult {
    /// The answer, if it answered.
    pub fn answer(&self) -> Option<&TestAnswer> {
        match self {
            Self::Answer(a) => Some(a),
            Self::Continue { .. } => None,
        }
    }
}

/// What `on_response` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseResult {
    /// Passed the outcome on.
    Pass,
    /// Replaced it with a local answer.
    Replace(TestAnswer),
    /// Asked for a retry after this delay.
    Retry(Duration),
}

/// One attempt of [`super::Harness::run`].
#[derive(Debug, Clone)]
pub struct RunAttempt {
    /// The attempt number.
    pub number: u32,
    /// The endpoint chosen.
    pub endpoint: Option<u32>,
    /// The attempt's effective timeout (attempt timeout and deadline).
    pub timeout: Option<Duration>,
    /// The request headers as the upstream got them.
    pub request_headers: Vec<(String, String)>,
}

impl RunAttempt {
    /// A request header as the upstream got it.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.request_headers, name)
    }
}

/// How a request driven by [`super::Harness::run`] went.
#[derive(Debug, Clone)]
pub struct Run {
    /// Every attempt that reached the core, in order.
    pub attempts: Vec<RunAttempt>,
    /// The delays of the retries the plugin asked for.
    pub delays: Vec<Duration>,
    /// The final status.
    pub status: Option<u16>,
    /// The final error class.
    pub error: Option<ErrorClass>,
    /// Whether the final outcome is a local answer.
    pub local: bool,
    /// The final response's headers.
    pub headers: Vec<(String, String)>,
    /// The final (local answer's) body.
    pub body: Vec<u8>,
}

impl Run {
    /// The final status.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// A final response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

pub(crate) fn method_code(m: &str) -> i32 {
    let m = match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other,
    };
    m.code()
}
