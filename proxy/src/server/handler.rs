//! The request path's entry: intake refusals, route match, then
//! [`forward`](super::forward::forward); records the route's metrics and the
//! access log. Every failure here becomes a response; nothing panics and
//! nothing reaches the client as a dropped connection unless the client
//! dropped it.

use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Shared;
use super::peer::Peer;
use super::respond;
use crate::body::ResponseBody;
use crate::fault::{ClientFault, ClientFaultClass};
use crate::route::request_host;

/// Answers one client request.
pub(crate) async fn handle(
    request: Request<Incoming>,
    peer: &Peer,
    shared: &Shared,
) -> Response<ResponseBody> {
    if let Some(refusal) = peer.intake.take_refusal(request.uri().path()) {
        shared
            .metrics
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let class = if refusal.status == StatusCode::REQUEST_TIMEOUT {
            ClientFaultClass::HeadTimeout
        } else {
            ClientFaultClass::BadHead
        };
        let fault = ClientFault::new(class, refusal.status, refusal.reason);
        return respond::client_fault(peer, &fault, request.version()).map(ResponseBody::new);
    }
    if let Some(fault) = super::headers::check_h2_request(&request) {
        return respond::client_fault(peer, &fault, request.version()).map(ResponseBody::new);
    }
    if let Some(port) = peer.redirect_https {
        return respond::redirect_to_https(&request, port).map(ResponseBody::new);
    }
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
        return respond::unrouted().map(ResponseBody::new);
    };
    let method = shared
        .access_log
        .then(|| (request.method().clone(), request.uri().clone()));
    let response =
        super::forward::forward(request, peer, &route, shared.replay_limit, started).await;
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(started);
    route.metrics.observe(response.status(), elapsed, now);
    if let Some((method, uri)) = method {
        // A query may carry a token (`?access_token=…`): not into the log.
        let uri = match uri.query() {
            Some(_) => crate::redact::redact_text(&uri.to_string()),
            None => uri.to_string(),
        };
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
