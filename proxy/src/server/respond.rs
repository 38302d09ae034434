//! Answers the proxy makes itself: upstream failures, client faults and
//! unrouted requests, each with `Proxy-Status` from the one renderer, and
//! the counting and logging that goes with them.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};

use super::peer::Peer;
use crate::body::WeirBody;
use crate::fault::ClientFault;
use crate::proxy_status;
use crate::route::Route;
use crate::upstream::UpstreamError;

/// A response the proxy makes itself, with `Proxy-Status`.
pub(crate) fn local_answer(
    status: StatusCode,
    proxy_status: HeaderValue,
    body: impl Into<bytes::Bytes>,
) -> Response<WeirBody> {
    let mut response = Response::new(WeirBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(proxy_status::NAME.clone(), proxy_status);
    response
}

/// `308` to the same URL over HTTPS (a `redirect_https` listener); `400`
/// for a request that names no host.
pub(crate) fn redirect_to_https<B>(request: &http::Request<B>, port: u16) -> Response<WeirBody> {
    let Some(host) = crate::route::request_host(request) else {
        return local_answer(
            StatusCode::BAD_REQUEST,
            proxy_status::render("http_request_error", "no host to redirect to"),
            "a request to this listener must name a host\n",
        );
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = Response::new(WeirBody::full("redirecting to HTTPS\n"));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `404` for a request no route matches.
pub(crate) fn unrouted() -> Response<WeirBody> {
    local_answer(
        StatusCode::NOT_FOUND,
        proxy_status::render("destination_not_found", "no route matches"),
        "no route matches this request\n",
    )
}

/// Counts and logs a failed exchange with the route's upstream.
pub(crate) fn note_upstream_failure(route: &Route, error: &UpstreamError) {
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
pub(crate) fn upstream_failure(error: &UpstreamError) -> Response<WeirBody> {
    let status = error.class.status();
    local_answer(
        status,
        proxy_status::render(error.class.proxy_status_error(), &error.detail),
        status_line(status),
    )
}

/// Counts a client fault against the client's listener and answers it
/// (if the client is still there to hear it); HTTP/1 connections close,
/// since the stream's framing can no longer be trusted.
pub(crate) fn client_fault(
    peer: &Peer,
    fault: &ClientFault,
    version: Version,
) -> Response<WeirBody> {
    peer.listener.client_error(fault.class);
    tracing::debug!(peer = %peer.addr, class = fault.class.as_str(), detail = %fault.detail, "client fault");
    let mut response = local_answer(
        fault.status,
        proxy_status::render("http_request_error", &fault.detail),
        status_line(fault.status),
    );
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    )
}
