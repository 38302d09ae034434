//! The request path of a route with plugins: the route's chain runs around
//! the core step defined here (choose an endpoint, send one attempt). The
//! request body is kept for replay when the chain may retry and the body is
//! small enough; a body too large to keep is streamed once and never retried.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::headers;
use crate::body::{ResponseBody, WeirBody};
use crate::plugin::views::{EndpointInfo, LocalAnswer, Outcome, RequestView, ResponseHead};
use crate::plugin::{Attempt, Chain, Core};
use crate::route::Route;
use crate::upstream::{ErrorClass, InFlight, UpstreamError};

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
    /// The failure behind the last `Outcome::Error`, for the client's answer.
    last_error: Option<UpstreamError>,
    /// The upstream side of a protocol switch (101), if one happened.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Core<WeirBody> for HttpCore<'_> {
    fn endpoints(&mut self, out: &mut Vec<EndpointInfo>) {
        let set = self.route.upstream.endpoints();
        let any_healthy = set.all().iter().any(|e| e.stats.is_healthy());
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
                latency_ewma_us: endpoint.stats.latency_ewma_micros() as u64,
            });
        }
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
        let upstream = &self.route.upstream;
        let chosen = attempt
            .endpoint
            .and_then(|id| {
                upstream
                    .endpoints()
                    .all()
                    .iter()
                    .find(|e| e.id == id)
                    .cloned()
            })
            .or_else(|| upstream.pick_avoiding(attempt.tried));
        let Some(endpoint) = chosen else {
            let error = UpstreamError::new(
                ErrorClass::NoEndpoint,
                false,
                format!("upstream {} has no endpoints", upstream.name),
            );
            return (self.fail(error), None);
        };
        let id = endpoint.id;
        let body = match &mut self.body {
            BodySource::Kept(bytes) => WeirBody::full(bytes.clone()),
            BodySource::Once(body) => match body.take() {
                Some(incoming) => WeirBody::from(incoming),
                None => WeirBody::empty(),
            },
        };
        let mut request = Request::new(body);
        *request.method_mut() = req.method.clone();
        *request.uri_mut() = req.uri.clone();
        // Plugins read the request again only in `on_response` (and a retry
        // sends it again); without such a layer it is moved, not copied.
        *request.headers_mut() = if self.keep_request {
            req.headers.clone()
        } else {
            std::mem::take(&mut req.headers)
        };
        let in_flight = InFlight::start(endpoint);
        let send = upstream.send(in_flight.endpoint(), request);
        let result = match attempt.timeout {
            Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                Err(UpstreamError::new(
                    ErrorClass::Timeout,
                    true,
                    format!("no response within the attempt's {limit:?}"),
                ))
            }),
            None => send.await,
        };
        in_flight.finish(result.is_err());
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
                headers::prepare_response(&mut parts.headers, parts.version, switching);
                if switching {
                    self.upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                }
                let head = ResponseHead {
                    status: parts.status,
                    headers: parts.headers,
                };
                (
                    Outcome::Response {
                        head,
                        body: WeirBody::from(body),
                    },
                    Some(id),
                )
            }
            Err(error) => (self.fail(error), Some(id)),
        }
    }
}

impl HttpCore<'_> {
    fn fail(&mut self, error: UpstreamError) -> Outcome<WeirBody> {
        super::handler::note_failure(self.route, &error);
        let outcome = Outcome::Error(crate::plugin::views::UpstreamError {
            class: error.class.to_abi(),
            reached_upstream: error.reached_upstream,
        });
        self.last_error = Some(error);
        outcome
    }
}

/// Answers a request on a route with a plugin chain.
pub(super) async fn forward(
    request: Request<Incoming>,
    client_addr: std::net::IpAddr,
    client_ip: &http::HeaderValue,
    route: &Route,
    chain: &Arc<Chain>,
    replay_limit: usize,
) -> Response<ResponseBody> {
    let (mut parts, body) = request.into_parts();
    let client_version = parts.version;
    let upgrade = headers::is_upgrade_request(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    headers::prepare_request(&mut parts, client_ip, upgrade);
    let body = match keep_for_replay(body, chain.may_retry(), replay_limit).await {
        Ok(body) => body,
        Err(error) => {
            return super::handler::local_answer(
                StatusCode::BAD_REQUEST,
                &format!("weir; error=http_request_error; details=\"{error}\""),
                "the request body could not be read\n",
            )
            .map(ResponseBody::new);
        }
    };
    // Boxed: plugin calls move the request into their store and back, and a
    // pointer moves cheaper than the whole view.
    let mut view = Box::new(RequestView {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        client_addr: Some(client_addr),
        // A body that streams once cannot be replayed: plugins must not retry.
        body_not_replayable: matches!(body, BodySource::Once(_)),
        ..RequestView::default()
    });
    let mut core = HttpCore {
        route,
        keep_request: chain.may_retry(),
        body,
        last_error: None,
        upgrade: None,
    };
    let run = tokio::time::timeout(route.spec.timeout, chain.run(&mut view, &mut core));
    let finished = run.await;
    apply_marks(route, chain);
    let Ok((outcome, end)) = finished else {
        // The chain's future was dropped: its on_end calls ran, cancelled.
        let error = UpstreamError::new(
            ErrorClass::Timeout,
            true,
            format!("no response within the route's {:?}", route.spec.timeout),
        );
        return super::handler::upstream_failure(route, &error).map(ResponseBody::new);
    };
    match outcome {
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
            *response.version_mut() = client_version;
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                match (client_upgrade, core.upgrade.take()) {
                    (Some(client), Some(upstream)) => {
                        tokio::spawn(super::handler::tunnel(client, upstream));
                    }
                    _ => {
                        let error = UpstreamError::new(
                            ErrorClass::Protocol,
                            true,
                            "upstream switched protocols without an upgrade request",
                        );
                        return super::handler::failure_response(&error)
                            .map(|b| ResponseBody::with_end(b, end));
                    }
                }
            }
            response.map(|b| ResponseBody::with_end(b, end))
        }
        Outcome::Local(answer) => {
            local_response(answer, client_version).map(|b| ResponseBody::with_end(b, end))
        }
        Outcome::Error(abi_error) => {
            let error = core.last_error.take().unwrap_or_else(|| {
                UpstreamError::new(
                    ErrorClass::from_abi(abi_error.class),
                    abi_error.reached_upstream,
                    "upstream failure",
                )
            });
            super::handler::failure_response(&error).map(|b| ResponseBody::with_end(b, end))
        }
    }
}

/// Applies the endpoint marks the chain's plugins left (passive ejection,
/// e.g. a per-endpoint breaker opening) to the route's upstream.
fn apply_marks(route: &Route, chain: &Chain) {
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
