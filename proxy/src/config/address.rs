//! Endpoint addresses as the config writes them: `host:port`, or
//! `https://host[:port]` (TLS to that endpoint, port 443 by default).

use http::uri::Authority;

/// Parses `host:port` (no user info, a port required).
pub(super) fn parse_endpoint(address: &str) -> Result<Authority, String> {
    let authority: Authority = address
        .parse()
        .map_err(|_| format!("invalid endpoint {address:?}: expected host:port"))?;
    if authority.port_u16().is_none() || authority.as_str().contains('@') {
        return Err(format!("invalid endpoint {address:?}: expected host:port"));
    }
    Ok(authority)
}

/// `https://host[:port][/]` as `host:port` (443 by default), noting that
/// the upstream uses TLS; any other address as it is.
pub(super) fn strip_https(address: &str, https: &mut bool) -> String {
    let Some(rest) = address.strip_prefix("https://") else {
        return address.to_owned();
    };
    *https = true;
    let authority = rest.trim_end_matches('/');
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    }
}

#[cfg(test)]
mod tests {
    use super::strip_https;

    #[test]
    fn https_endpoints_become_authorities_with_a_default_port() {
        let mut https = false;
        assert_eq!(strip_https("10.0.0.1:80", &mut https), "10.0.0.1:80");
        assert!(!https);
        for (given, expected) in [
            ("https://api.example.com", "api.example.com:443"),
            ("https://api.example.com/", "api.example.com:443"),
            ("https://api.example.com:8443", "api.example.com:8443"),
            ("https://[::1]", "[::1]:443"),
            ("https://[::1]:9443", "[::1]:9443"),
        ] {
            assert_eq!(strip_https(given, &mut https), expected, "{given}");
        }
        assert!(https);
    }
}
