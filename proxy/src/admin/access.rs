//! Who may use the admin API. Requests are of three kinds: reads (status,
//! metrics, config), sensitive reads (`/debug/pprof`, which costs CPU) and
//! changes (`POST`). With `admin.token` set, changes and sensitive reads
//! need `Authorization: Bearer <token>`, and so does every request when the
//! admin address is not loopback (the config check makes a token mandatory
//! there). A wrong token is refused on any endpoint.
//!
//! A browser must not be usable against the API: a page on another site
//! can make the user's browser send requests to `127.0.0.1`. So a change
//! without a valid token must be `Content-Type: application/json` (which a
//! cross-site page cannot send without a CORS preflight, which is never
//! answered), any request carrying a foreign `Origin` or a cross-site
//! `Sec-Fetch-Site` is refused, and a request without a valid token must
//! name the proxy by address or `localhost` in `Host` (which defeats DNS
//! rebinding, where a foreign name points at 127.0.0.1).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::config::AdminToken;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Read,
    SensitiveRead,
    Change,
}

impl Kind {
    pub(super) fn of(method: &Method, path: &str) -> Self {
        if !matches!(*method, Method::GET | Method::HEAD) {
            Self::Change
        } else if path.starts_with("/debug/") {
            Self::SensitiveRead
        } else {
            Self::Read
        }
    }
}

/// Checks a request against the rules above; `Err` is the answer to send.
pub(super) fn check(
    kind: Kind,
    headers: &HeaderMap,
    admin: SocketAddr,
    token: Option<&AdminToken>,
) -> Result<(), Refusal> {
    let presented = bearer(headers);
    let authenticated = match (token, presented) {
        (Some(token), Some(presented)) if token.matches(presented) => true,
        (_, Some(_)) => return Err(unauthorized("the bearer token is not the admin token")),
        (_, None) => false,
    };
    if let Some(token_required) = token.map(|_| kind != Kind::Read || !admin.ip().is_loopback())
        && token_required
        && !authenticated
    {
        return Err(unauthorized(
            "this admin endpoint needs Authorization: Bearer <admin token>",
        ));
    }
    if cross_site(headers) {
        return Err(refused("cross-site requests to the admin API are refused"));
    }
    if !authenticated {
        if !names_this_host(headers) {
            return Err(refused(
                "Host must be this proxy's address or localhost (or send the admin token)",
            ));
        }
        if kind == Kind::Change && !is_json(headers) {
            return Err(refused(
                "a change needs Content-Type: application/json or Authorization: Bearer <admin token>",
            ));
        }
    }
    Ok(())
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// An `Origin` other than the `Host` the request was sent to, or a
/// browser's own word that the request is cross-site.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority.as_bytes());
    origin_host.is_none() || origin_host != host
}

/// Whether `Host` names the proxy by an IP address or `localhost` (a
/// request without `Host`, HTTP/1.0 style, cannot have been rebound).
fn names_this_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// A request the rules refuse, and why.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    message: &'static str,
}

impl Refusal {
    /// The answer: 401 (with the scheme to use) or 403, and the reason.
    pub(super) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = super::text(self.status, format!("{}\n", self.message));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir-admin\""),
            );
        }
        response
    }
}

fn unauthorized(message: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        message,
    }
}

fn refused(message: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::FORBIDDEN,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn status(
        kind: Kind,
        pairs: &[(&'static str, &'static str)],
        admin: &str,
        token: Option<&AdminToken>,
    ) -> u16 {
        match check(kind, &headers(pairs), admin.parse().unwrap(), token) {
            Ok(()) => 200,
            Err(refusal) => refusal.status.as_u16(),
        }
    }

    #[test]
    fn without_a_token_loopback_reads_pass_and_changes_need_json() {
        let local = "127.0.0.1:9901";
        let host = ("host", "127.0.0.1:9901");
        assert_eq!(status(Kind::Read, &[host], local, None), 200);
        assert_eq!(status(Kind::SensitiveRead, &[host], local, None), 200);
        assert_eq!(status(Kind::Change, &[host], local, None), 403);
        assert_eq!(
            status(
                Kind::Change,
                &[host, ("content-type", "text/plain")],
                local,
                None
            ),
            403
        );
        assert_eq!(
            status(
                Kind::Change,
                &[host, ("content-type", "application/json; charset=utf-8")],
                local,
                None
            ),
            200
        );
        // A browser's cross-site request, even as JSON.
        let json = ("content-type", "application/json");
        assert_eq!(
            status(
                Kind::Change,
                &[host, json, ("origin", "http://evil.example")],
                local,
                None
            ),
            403
        );
        assert_eq!(
            status(
                Kind::Read,
                &[host, ("sec-fetch-site", "cross-site")],
                local,
                None
            ),
            403
        );
        // DNS rebinding: a foreign name that resolves to loopback.
        assert_eq!(
            status(Kind::Read, &[("host", "evil.example:9901")], local, None),
            403
        );
        assert_eq!(
            status(Kind::Read, &[("host", "localhost:9901")], local, None),
            200
        );
        assert_eq!(
            status(Kind::Read, &[("host", "[::1]:9901")], local, None),
            200
        );
    }

    #[test]
    fn with_a_token_changes_and_profiles_need_it_and_remote_reads_too() {
        let token = crate::config::AdminToken::for_tests("0123456789abcdef");
        let token = Some(&token);
        let host = ("host", "10.0.0.1:9901");
        let good = ("authorization", "Bearer 0123456789abcdef");
        let bad = ("authorization", "Bearer 0123456789abcdeX");
        let local = "127.0.0.1:9901";
        let remote = "0.0.0.0:9901";
        assert_eq!(status(Kind::Read, &[host], local, token), 200);
        assert_eq!(status(Kind::Read, &[host, bad], local, token), 401);
        assert_eq!(status(Kind::SensitiveRead, &[host], local, token), 401);
        assert_eq!(status(Kind::Change, &[host], local, token), 401);
        assert_eq!(
            status(
                Kind::Change,
                &[host, ("content-type", "application/json")],
                local,
                token
            ),
            401
        );
        assert_eq!(status(Kind::Change, &[host, good], local, token), 200);
        assert_eq!(status(Kind::Read, &[host], remote, token), 401);
        assert_eq!(status(Kind::Read, &[host, good], remote, token), 200);
        // A valid token may use any name for the host, but not cross-site.
        assert_eq!(
            status(
                Kind::Read,
                &[("host", "admin.internal"), good],
                remote,
                token
            ),
            200
        );
        assert_eq!(
            status(
                Kind::Change,
                &[good, ("host", "a:1"), ("origin", "http://evil.example")],
                remote,
                token
            ),
            403
        );
        assert_eq!(
            status(
                Kind::Change,
                &[("authorization", "bearer 0123456789abcdef"), host],
                remote,
                token
            ),
            200
        );
    }
}
