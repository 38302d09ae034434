//! The one forwarding path. A route's plugin chain runs around the core step
//! defined here (choose an endpoint, send one attempt); a route without
//! plugins is a chain of zero layers and runs the core step alone. The
//! request body is kept for replay when the chain may retry and the body is
//! small enough; a body too large to keep is streamed once and never
//! retried. A failure of the client's body is the client's fault: it is
//! answered 400 (408 if it stalled) and never reaches a plugin as an
//! upstream outcome.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::peer::Peer;
use super::{headers, respond};
use crate::body::{ClientBodyFault, ClientBodyState, ResponseBody, WeirBody};
use crate::fault::{ClientFault, ClientFaultClass};
use crate::plugin::views::{
    EndpointFacts, EndpointInfo, LocalAnswer, Outcome, RequestView, ResponseHead,
};
use crate::plugin::{Attempt, Chain, Core};
use crate::route::Route;
use crate::upstream::{
    Endpoint, EndpointSet, ErrorClass, InFlight, Upgraded, UpstreamBody, UpstreamError,
};

/// Where each attempt's request body comes from.
enum BodySource {
    /// Kept whole: every attempt gets a copy (cheap: `Bytes`).
    Kept(Bytes),
    /// Streamed on the first attempt; cannot be sent again once taken.
    Once(Option<Incoming>),
}

/// The core step for one request.
struct HttpCore<'a> {
    route: &'a Route,
    /// Some layer exports `on_response` (`Chain::may_retry`): the request's
    /// headers must outlive the attempt.
    keep_request: bool,
    body: BodySource,
    /// Set when the streamed body failed by the client's fault.
    client_fault: Option<ClientBodyFault>,
    /// The upstream side of a protocol switch (101), if one happened.
    upgrade: Option<Upgraded>,
}

/// Plugins ask the endpoint set itself about its endpoints: nothing is
/// copied per request, and the answers are of the set the balancer saw.
impl EndpointFacts for EndpointSet {
    fn address(&self, id: u32) -> Option<&str> {
        find(self, id).map(|e| e.authority.as_str())
    }

    fn zone(&self, id: u32) -> Option<&str> {
        find(self, id).and_then(|e| e.zone.as_deref())
    }

    fn metadata(&self, id: u32, key: &str) -> Option<&str> {
        find(self, id).and_then(|e| e.metadata.get(key).map(String::as_str))
    }
}

fn find(set: &EndpointSet, id: u32) -> Option<&Endpoint> {
    set.get(id).map(|e| &**e)
}

impl Core<WeirBody> for HttpCore<'_> {
    fn endpoints(&mut self, out: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>> {
        let set = self.route.upstream.endpoints();
        let any_healthy = set.all().iter().any(|e| e.stats.is_healthy());
        let now = std::time::Instant::now();
        for endpoint in set.all() {
            let healthy = endpoint.stats.is_healthy();
            if any_healthy && !healthy {
                continue;
            }
            out.push(EndpointInfo {
                id: endpoint.id,
                weight: endpoint.weight,
                in_flight: endpoint.stats.in_flight(),
                healthy,
                // Whole microseconds are plenty for a balancer.
                latency_ewma_us: endpoint.stats.latency_ewma_micros_at(now) as u64,
            });
        }
        Some(set)
    }

    fn can_retry(&self) -> bool {
        match &self.body {
            BodySource::Kept(_) => true,
            BodySource::Once(body) => body.is_some(),
        }
    }

    async fn send(
        &mut self,
        req: &mut RequestView,
        attempt: &Attempt<'_>,
    ) -> (Outcome<WeirBody>, Option<u32>) {
        let body = match &mut self.body {
            BodySource::Kept(bytes) => WeirBody::full(bytes.clone()),
            BodySource::Once(body) => match body.take() {
                Some(incoming) => {
                    let (body, fault) = WeirBody::from_client(incoming);
                    self.client_fault = Some(fault);
                    body
                }
                None => WeirBody::empty(),
            },
        };
        let mut request = Request::new(body);
        // Plugins read the request again only in `on_response` (and a retry
        // sends it again); without such a layer it is moved, not copied.
        if self.keep_request {
            *request.method_mut() = req.method.clone();
            *request.uri_mut() = req.uri.clone();
            *request.headers_mut() = req.headers.clone();
        } else {
            *request.method_mut() = std::mem::take(&mut req.method);
            *request.uri_mut() = std::mem::take(&mut req.uri);
            *request.headers_mut() = std::mem::take(&mut req.headers);
        }
        let (result, used) = exchange(
            self.route,
            request,
            attempt,
            self.client_fault.as_deref(),
            None,
        )
        .await;
        let outcome = match result {
            Ok(response) => {
                let (mut parts, mut body) = response.into_parts();
                self.upgrade =
                    upstream_upgrade(&mut parts.headers, &mut body, parts.status, parts.version);
                Outcome::Response {
                    head: ResponseHead {
                        status: parts.status,
                        headers: parts.headers,
                    },
                    body: WeirBody::from(body),
                }
            }
            Err(Failed::Upstream(error)) => Outcome::Error(error),
            Err(Failed::Client(fault)) => Outcome::Client(fault),
            // Not given a route deadline: the chain enforces it.
            Err(Failed::RouteTimeout) => Outcome::Error(UpstreamError::new(
                ErrorClass::Timeout,
                true,
                "no response within the route's timeout",
            )),
        };
        (outcome, used)
    }
}

/// Why an attempt produced no response: classified once, here.
enum Failed {
    Upstream(UpstreamError),
    Client(ClientFault),
    /// The route's deadline passed (only when `exchange` was given it).
    RouteTimeout,
}

/// The core step, the same for every route: the endpoint the balancer
/// chose (else round robin, avoiding those already tried), `request` sent
/// to it within the attempt's timeout, and a failure classified as the
/// upstream's (counted) or, when the client's body broke, the client's.
/// Returns the endpoint used.
///
/// `route_deadline` caps the attempt when no chain enforces the route's
/// timeout around it (one timer, one future level fewer).
async fn exchange(
    route: &Route,
    request: Request<WeirBody>,
    attempt: &Attempt<'_>,
    client_body: Option<&ClientBodyState>,
    route_deadline: Option<Instant>,
) -> (Result<Response<UpstreamBody>, Failed>, Option<u32>) {
    let upstream = &route.upstream;
    let chosen = match attempt.endpoint {
        Some(id) => upstream.endpoints().get(id).cloned(),
        None => None,
    }
    .or_else(|| upstream.pick_avoiding(attempt.tried));
    let Some(endpoint) = chosen else {
        let error = UpstreamError::new(
            ErrorClass::NoEndpoint,
            false,
            format!("upstream {} has no endpoints", upstream.name),
        );
        respond::note_upstream_failure(route, &error);
        return (Err(Failed::Upstream(error)), None);
    };
    let id = endpoint.id;
    let in_flight = InFlight::start(endpoint);
    let attempt_deadline = attempt.timeout.map(|limit| Instant::now() + limit);
    let deadline = match (attempt_deadline, route_deadline) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r),
    };
    let waiting_on_client = || client_body.is_some_and(crate::body::waiting_on_client);
    let result = match deadline {
        // The send future is made in each arm: made once before, it would
        // take room in this future for itself and again inside the timeout.
        Some(deadline) => {
            match tokio::time::timeout_at(deadline, upstream.send(in_flight.endpoint(), request))
                .await
            {
                Ok(result) => result,
                Err(_) if waiting_on_client() => {
                    // The exchange was waiting for the rest of the client's
                    // body: no sample for the endpoint, no upstream failure.
                    drop(in_flight);
                    if Some(deadline) == route_deadline {
                        return (Err(Failed::RouteTimeout), Some(id));
                    }
                    let fault = ClientFault::new(
                        ClientFaultClass::BodyStalled,
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body stopped arriving",
                    );
                    return (Err(Failed::Client(fault)), Some(id));
                }
                Err(_) if Some(deadline) == route_deadline => {
                    in_flight.finish(true);
                    return (Err(Failed::RouteTimeout), Some(id));
                }
                Err(_) => Err(UpstreamError::new(
                    ErrorClass::Timeout,
                    true,
                    format!(
                        "no response within the attempt's {:?}",
                        attempt.timeout.unwrap_or_default()
                    ),
                )),
            }
        }
        None => upstream.send(in_flight.endpoint(), request).await,
    };
    match result {
        Ok(response) => {
            in_flight.finish(false);
            (Ok(response), Some(id))
        }
        Err(error) => {
            if let Some(fault) = client_body.and_then(ClientBodyState::get) {
                // The exchange broke because the client's body did: neither
                // the endpoint's failure nor the upstream's, and no latency
                // sample for it (a stalled body's wait is not the endpoint's).
                drop(in_flight);
                return (Err(Failed::Client(fault.clone())), Some(id));
            }
            in_flight.finish(true);
            respond::note_upstream_failure(route, &error);
            (Err(Failed::Upstream(error)), Some(id))
        }
    }
}

/// Rewrites an upstream response's headers for the client and takes the
/// upstream side of a protocol switch, if it is one.
fn upstream_upgrade(
    headers: &mut http::HeaderMap,
    body: &mut UpstreamBody,
    status: StatusCode,
    version: Version,
) -> Option<Upgraded> {
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    headers::prepare_response(headers, version, switching);
    if switching {
        body.take_upgraded()
    } else {
        None
    }
}

/// Answers a request on `route`: the core step alone for a chain of zero
/// layers, wrapped in the route's plugin chain otherwise; the same upstream
/// exchange, response tail and error answers either way. The route's
/// timeout counts from `started`, when the handler took the request.
pub(super) async fn forward(
    request: Request<Incoming>,
    peer: &Peer,
    route: &Route,
    replay_limit: usize,
    started: std::time::Instant,
) -> Response<ResponseBody> {
    let (mut parts, body) = request.into_parts();
    let client_version = parts.version;
    let upgrade = headers::is_upgrade_request(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    headers::prepare_request(&mut parts, &peer.ip_header, upgrade, peer.tls.is_some());
    let deadline = Instant::from_std(started) + route.spec.timeout;
    let Some(chain) = route.chain.as_ref() else {
        // A chain of zero layers: one attempt, nothing to replay, so the
        // body streams (its failure is watched only if it has bytes).
        let (body, client_body) = if http_body::Body::is_end_stream(&body) {
            (WeirBody::empty(), None)
        } else {
            let (body, fault) = WeirBody::from_client(body);
            (body, Some(fault))
        };
        let attempt = Attempt {
            number: 1,
            timeout: None,
            endpoint: None,
            tried: &[],
        };
        let exchanged = exchange(
            route,
            Request::from_parts(parts, body),
            &attempt,
            client_body.as_deref(),
            Some(deadline),
        )
        .await;
        let response = match exchanged {
            (Ok(response), _) => response,
            (Err(Failed::RouteTimeout), _) => {
                return timed_out(peer, route, client_body.as_deref(), client_version);
            }
            (Err(Failed::Upstream(error)), _) => {
                return respond::upstream_failure(&error).map(ResponseBody::new);
            }
            (Err(Failed::Client(fault)), _) => {
                return respond::client_fault(peer, &fault, client_version).map(ResponseBody::new);
            }
        };
        let (mut parts, mut body) = response.into_parts();
        let upstream_upgrade =
            upstream_upgrade(&mut parts.headers, &mut body, parts.status, parts.version);
        let response = Response::from_parts(parts, WeirBody::from(body));
        return finish(
            response,
            route,
            client_version,
            client_upgrade,
            upstream_upgrade,
            upgrade,
        )
        .map(ResponseBody::new);
    };
    // Boxed: the chain's future is many times the size of the rest, and
    // requests on routes without plugins should not carry (and copy) it.
    // (Boxed in its own statement: a temporary in the awaiting one would
    // be kept in this future all the same.)
    let chained = Box::pin(through_chain(
        parts,
        body,
        ChainRequest {
            peer,
            route,
            chain,
            replay_limit,
            deadline,
            client_version,
            client_upgrade,
            upgrade,
        },
    ));
    chained.await
}

/// What the chain path needs besides the request itself.
struct ChainRequest<'a> {
    peer: &'a Peer,
    route: &'a Route,
    chain: &'a Arc<Chain>,
    replay_limit: usize,
    deadline: Instant,
    client_version: Version,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: bool,
}

/// Answers a request through the route's plugin chain.
async fn through_chain(
    parts: http::request::Parts,
    body: Incoming,
    request: ChainRequest<'_>,
) -> Response<ResponseBody> {
    let ChainRequest {
        peer,
        route,
        chain,
        replay_limit,
        deadline,
        client_version,
        client_upgrade,
        upgrade,
    } = request;
    let may_retry = chain.may_retry();
    let body = match keep_for_replay(body, may_retry, replay_limit).await {
        Ok(body) => body,
        Err(error) => {
            let fault = ClientFault::from_body_error(&error);
            return respond::client_fault(peer, &fault, client_version).map(ResponseBody::new);
        }
    };
    // Boxed: plugin calls move the request into their store and back, and a
    // pointer moves cheaper than the whole view.
    let mut view = Box::new(RequestView {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        client_addr: Some(peer.addr.ip()),
        tls: peer.tls.clone(),
        // A body that streams once cannot be replayed: plugins must not retry.
        body_not_replayable: matches!(body, BodySource::Once(Some(_))),
        ..RequestView::default()
    });
    let mut core = HttpCore {
        route,
        keep_request: may_retry,
        body,
        client_fault: None,
        upgrade: None,
    };
    let finished = chain.run_until(&mut view, &mut core, deadline).await;
    apply_marks(route, chain);
    let Some((outcome, end)) = finished else {
        return timed_out(peer, route, core.client_fault.as_deref(), client_version);
    };
    let response = match outcome {
        Outcome::Response { head, body } => {
            // The cache plugin asked to keep this response: copy it into the
            // store while it streams to the client.
            let body = match view.cache.take_store() {
                Some(directive) => WeirBody::Tee {
                    body: Box::pin(directive.tee(body)),
                },
                None => body,
            };
            let mut response = Response::new(body);
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            finish(
                response,
                route,
                client_version,
                client_upgrade,
                core.upgrade.take(),
                upgrade,
            )
        }
        Outcome::Local(answer) => local_response(answer, client_version),
        Outcome::Error(error) => respond::upstream_failure(&error),
        Outcome::Client(fault) => respond::client_fault(peer, &fault, client_version),
    };
    response.map(|body| ResponseBody::with_end(body, end))
}

/// The tail every upstream response goes through: the client's version, a
/// protocol switch tunnelled (or refused, if the client never asked), and
/// `Connection: close` when a switch the client asked for did not happen.
fn finish(
    mut response: Response<WeirBody>,
    route: &Route,
    client_version: Version,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upstream_upgrade: Option<Upgraded>,
    upgrade_requested: bool,
) -> Response<WeirBody> {
    // The client hears its own protocol version, whatever the upstream spoke.
    *response.version_mut() = client_version;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) else {
            let error = UpstreamError::new(
                ErrorClass::Protocol,
                true,
                "upstream switched protocols without an upgrade request",
            );
            respond::note_upstream_failure(route, &error);
            return respond::upstream_failure(&error);
        };
        tokio::spawn(tunnel(client, upstream));
    } else if upgrade_requested && client_version < Version::HTTP_2 {
        // The intake passed the bytes after a switch request through
        // unchecked; the switch did not happen, so they must not be read as
        // requests.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The route's timeout ran out before a response head: the client's fault
/// if the exchange was waiting for more of the client's body, the
/// upstream's otherwise.
fn timed_out(
    peer: &Peer,
    route: &Route,
    client_body: Option<&ClientBodyState>,
    version: Version,
) -> Response<ResponseBody> {
    if client_body.is_some_and(crate::body::waiting_on_client) {
        let fault = ClientFault::new(
            ClientFaultClass::BodyStalled,
            StatusCode::REQUEST_TIMEOUT,
            "the request body stopped arriving",
        );
        return respond::client_fault(peer, &fault, version).map(ResponseBody::new);
    }
    let error = UpstreamError::new(
        ErrorClass::Timeout,
        true,
        format!("no response within the route's {:?}", route.spec.timeout),
    );
    respond::note_upstream_failure(route, &error);
    respond::upstream_failure(&error).map(ResponseBody::new)
}

/// Copies bytes both ways once both sides have switched protocols.
async fn tunnel(client: hyper::upgrade::OnUpgrade, mut upstream: Upgraded) {
    let client = match client.await {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%error, "protocol upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}

/// Applies the endpoint marks the chain's plugins left (passive ejection,
/// e.g. a per-endpoint breaker opening) to the route's upstream.
fn apply_marks(route: &Route, chain: &Arc<Chain>) {
    let mut marks = Vec::new();
    chain.drain_endpoint_marks(&mut marks);
    for (id, duration) in marks {
        if let Err(error) = route.upstream.apply_mark(id, duration, "plugin mark") {
            tracing::debug!(route = %route.spec.name, %error, "endpoint mark not applied");
        }
    }
}

fn local_response(answer: LocalAnswer, version: Version) -> Response<WeirBody> {
    let mut response = Response::new(WeirBody::full(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    *response.version_mut() = version;
    response
}

/// Reads a small request body whole when the chain may retry, so every
/// attempt can send it; anything else streams once.
async fn keep_for_replay(
    body: Incoming,
    may_retry: bool,
    limit: usize,
) -> Result<BodySource, hyper::Error> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(BodySource::Kept(Bytes::new()));
    }
    let known_small = body.size_hint().upper().is_some_and(|n| n <= limit as u64);
    if !may_retry || !known_small {
        return Ok(BodySource::Once(Some(body)));
    }
    let mut body = body;
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            kept.extend_from_slice(&data);
        }
    }
    Ok(BodySource::Kept(kept.freeze()))
}
