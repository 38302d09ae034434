//! The request path: route match → (plugin chain) → endpoint → upstream →
//! response. Every failure here becomes a response; nothing panics and
//! nothing reaches the client as a dropped connection unless the client
//! dropped it.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::Shared;
use super::conn::Peer;
use super::headers;
use crate::body::{ResponseBody, WeirBody};
use crate::route::{Route, request_host};
use crate::upstream::{ErrorClass, InFlight, UpstreamError};

static PROXY_STATUS: header::HeaderName = header::HeaderName::from_static("proxy-status");

/// Answers one client request.
pub(crate) async fn handle(
    request: Request<Incoming>,
    peer: &Peer,
    shared: &Shared,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let route = {
        let table = shared.table.load();
        table
            .find(
                request_host(&request),
                request.uri().path(),
                request.method(),
            )
            .cloned()
    };
    let Some(route) = route else {
        shared
            .metrics
            .unrouted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return local_answer(
            StatusCode::NOT_FOUND,
            "weir; error=destination_not_found; details=\"no route matches\"",
            "no route matches this request\n",
        )
        .map(ResponseBody::new);
    };
    let method = shared
        .access_log
        .then(|| (request.method().clone(), request.uri().clone()));
    let response = match &route.chain {
        None => forward(request, peer, &route).await.map(ResponseBody::new),
        Some(chain) => {
            super::chained::forward(
                request,
                peer.addr.ip(),
                &peer.ip_header,
                &route,
                chain,
                shared.replay_limit,
            )
            .await
        }
    };
    let elapsed = started.elapsed();
    route.metrics.observe(response.status(), elapsed);
    if let Some((method, uri)) = method {
        tracing::info!(
            target: "weir::access",
            route = %route.spec.name,
            peer = %peer.addr,
            %method,
            %uri,
            status = response.status().as_u16(),
            micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
    response
}

async fn forward(request: Request<Incoming>, peer: &Peer, route: &Route) -> Response<WeirBody> {
    let (mut parts, body) = request.into_parts();
    let client_version = parts.version;
    let upgrade = headers::is_upgrade_request(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    headers::prepare_request(&mut parts, &peer.ip_header, upgrade);
    let upstream = &route.upstream;
    let Some(endpoint) = upstream.pick() else {
        let error = UpstreamError::new(
            ErrorClass::NoEndpoint,
            false,
            format!("upstream {} has no endpoints", upstream.name),
        );
        return upstream_failure(route, &error);
    };
    let request = Request::from_parts(parts, WeirBody::from(body));
    let in_flight = InFlight::start(endpoint);
    let endpoint = in_flight.endpoint();
    let outcome =
        match tokio::time::timeout(route.spec.timeout, upstream.send(endpoint, request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(UpstreamError::new(
                ErrorClass::Timeout,
                true,
                format!(
                    "no response from {} within {:?}",
                    endpoint.authority, route.spec.timeout
                ),
            )),
        };
    in_flight.finish(outcome.is_err());
    let mut response = match outcome {
        Ok(response) => response,
        Err(error) => return upstream_failure(route, &error),
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let version = response.version();
    headers::prepare_response(response.headers_mut(), version, switching);
    // The client hears its own protocol version, whatever the upstream spoke.
    *response.version_mut() = client_version;
    if switching {
        let Some(client_upgrade) = client_upgrade else {
            let error = UpstreamError::new(
                ErrorClass::Protocol,
                true,
                "upstream switched protocols without an upgrade request",
            );
            return upstream_failure(route, &error);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
    }
    response.map(WeirBody::from)
}

/// Copies bytes both ways once both sides have switched protocols.
pub(super) async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "protocol upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}

/// Counts and logs a failed exchange with the route's upstream, and answers
/// it.
pub(super) fn upstream_failure(route: &Route, error: &UpstreamError) -> Response<WeirBody> {
    note_failure(route, error);
    failure_response(error)
}

/// Counts and logs a failed exchange with the route's upstream.
pub(super) fn note_failure(route: &Route, error: &UpstreamError) {
    route.upstream.metrics.error(error.class);
    tracing::warn!(
        route = %route.spec.name,
        upstream = %route.upstream.name,
        class = error.class.as_str(),
        reached_upstream = error.reached_upstream,
        detail = %error.detail,
        "upstream failure"
    );
}

/// The answer to a request that failed upstream: the class's status and
/// `Proxy-Status`.
pub(super) fn failure_response(error: &UpstreamError) -> Response<WeirBody> {
    let status = error.class.status();
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    local_answer(status, &error.proxy_status(), body)
}

/// A response the proxy makes itself, with `Proxy-Status`.
pub(crate) fn local_answer(
    status: StatusCode,
    proxy_status: &str,
    body: impl Into<bytes::Bytes>,
) -> Response<WeirBody> {
    let mut response = Response::new(WeirBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(proxy_status) {
        headers.insert(PROXY_STATUS.clone(), value);
    }
    response
}
