//! Header rewriting at the proxy boundary: hop-by-hop headers removed in both
//! directions (RFC 9110 §7.6.1), `X-Forwarded-*` and `Via` added.
//!
//! Weir treats itself as the edge: `X-Forwarded-Proto` and `X-Forwarded-Host`
//! are set from what this hop saw, and the client address is appended to any
//! `X-Forwarded-For` chain the client sent.

use crate::fault::{ClientFault, ClientFaultClass};
use crate::upstream::connection_has_token;
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// `Via` protocol names by HTTP version.
fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 weir",
        Version::HTTP_10 => "1.0 weir",
        Version::HTTP_2 => "2 weir",
        Version::HTTP_3 => "3 weir",
        _ => "1.1 weir",
    })
}

/// Whether the request asks to switch protocols (e.g. WebSocket).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has_token(headers, "upgrade")
}

/// Whether `name` is one of the hop-by-hop fields removed below (those
/// named in `Connection` are found through `Connection` itself).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers, including those named in `Connection`.
/// With `keep_upgrade`, `Upgrade` and `Connection: upgrade` survive so that a
/// protocol switch can pass through.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one look at each name (standard names
    // compare by tag) is cheaper than hashing all seven for removal.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|name| !(keep_upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    // `TE: trailers` is end-to-end in practice (gRPC needs it); any other TE is hop-by-hop.
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites a request's headers for the upstream.
pub fn prepare_request(
    parts: &mut http::request::Parts,
    client_ip: &HeaderValue,
    keep_upgrade: bool,
    https: bool,
) {
    let headers = &mut parts.headers;
    // Room for the four added below at once (hyper sizes the map to what
    // the client sent), rather than growing it twice.
    headers.reserve(4);
    // One authority: the request target's when it has one (absolute-form,
    // HTTP/2's `:authority`; RFC 9112 §3.2.2), else Host. The intake has
    // already refused an HTTP/1 request whose two disagree.
    let authority = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    remove_hop_by_hop(headers, keep_upgrade);
    let host = match authority {
        Some(authority) => {
            headers.insert(header::HOST, authority.clone());
            Some(authority)
        }
        None => headers.get(header::HOST).cloned(),
    };
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    // One hash of the name, whether the client sent a chain or not.
    match headers.entry(X_FORWARDED_FOR.clone()) {
        header::Entry::Occupied(mut chain) => {
            let first = chain.get();
            let mut joined = Vec::with_capacity(first.len() + 2 + client_ip.len());
            joined.extend_from_slice(first.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            chain.insert(HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone()));
        }
        header::Entry::Vacant(slot) => {
            slot.insert(client_ip.clone());
        }
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    headers.append(header::VIA, via_value(parts.version));
}

/// The HTTP/2 request rules `h2` leaves to the application: at most one
/// `host`, and equal to `:authority` when both are given (RFC 9113
/// §8.3.1). HTTP/1 requests were checked by the intake.
pub(crate) fn check_h2_request<B>(request: &http::Request<B>) -> Option<ClientFault> {
    if request.version() != Version::HTTP_2 {
        return None;
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next()?;
    let refuse = |detail| {
        Some(ClientFault::new(
            ClientFaultClass::BadHead,
            http::StatusCode::BAD_REQUEST,
            detail,
        ))
    };
    if hosts.next().is_some() {
        return refuse("more than one host field");
    }
    match request.uri().authority() {
        Some(authority)
            if !authority
                .as_str()
                .eq_ignore_ascii_case(host.to_str().unwrap_or("")) =>
        {
            refuse(":authority differs from host")
        }
        _ => None,
    }
}

/// Rewrites an upstream response's headers for the client.
pub fn prepare_response(
    headers: &mut HeaderMap,
    upstream_version: Version,
    switching_protocols: bool,
) {
    remove_hop_by_hop(headers, switching_protocols);
    headers.append(header::VIA, via_value(upstream_version));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri("/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn peer() -> HeaderValue {
        HeaderValue::from_static("10.1.2.3")
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut parts = request(&[
            ("host", "example.com"),
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-keep", "yes"),
        ]);
        prepare_request(&mut parts, &peer(), false, false);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "upgrade",
            "proxy-connection",
        ] {
            assert!(
                !parts.headers.contains_key(gone),
                "{gone} should be removed"
            );
        }
        assert_eq!(parts.headers["x-keep"], "yes");
    }

    #[test]
    fn the_trailer_announcement_is_end_to_end() {
        // RFC 9110 §6.6.2: `Trailer` names fields the recipient will find
        // after the body; without it hyper sends no trailers to the client.
        let mut headers = HeaderMap::new();
        headers.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        remove_hop_by_hop(&mut headers, false);
        assert_eq!(headers[header::TRAILER], "x-sum");
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn te_trailers_survives() {
        let mut parts = request(&[("te", "trailers")]);
        prepare_request(&mut parts, &peer(), false, false);
        assert_eq!(parts.headers["te"], "trailers");
    }

    #[test]
    fn forwarded_headers_are_set_and_chained() {
        let mut parts = request(&[
            ("host", "example.com:8080"),
            ("x-forwarded-for", "192.0.2.1"),
            ("via", "1.0 edge"),
        ]);
        prepare_request(&mut parts, &peer(), false, false);
        assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");
        assert_eq!(parts.headers["x-forwarded-host"], "example.com:8080");
        let via: Vec<_> = parts.headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.0 edge", "1.1 weir"]);
    }

    #[test]
    fn upgrade_is_kept_when_switching() {
        let mut parts = request(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&parts.headers));
        prepare_request(&mut parts, &peer(), true, false);
        assert_eq!(parts.headers["upgrade"], "websocket");
        assert_eq!(parts.headers["connection"], "upgrade");
    }

    #[test]
    fn h2_authority_becomes_host() {
        let mut parts = http::Request::builder()
            .uri("http://example.com/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        prepare_request(&mut parts, &peer(), false, false);
        assert_eq!(parts.headers["host"], "example.com");
        assert_eq!(parts.headers["via"], "2 weir");
    }
}
