//! The one renderer of the `Proxy-Status` header (RFC 9209) for every
//! answer the proxy makes itself: upstream failures, client faults, plugin
//! failures, unrouted requests. Details are an RFC 8941 sf-string, escaped
//! here, so no caller can put a raw message into the header.

use http::HeaderValue;
use http::header::HeaderName;

/// The header's name.
pub static NAME: HeaderName = HeaderName::from_static("proxy-status");

/// Longest `details` kept, in characters.
const DETAILS_MAX: usize = 200;

/// `weir; error=<error>; details="<details>"`. `error` is one of RFC 9209's
/// error types (a token, fixed by the caller); `details` is escaped.
pub fn render(error: &'static str, details: &str) -> HeaderValue {
    let mut out = String::with_capacity(24 + error.len() + details.len().min(DETAILS_MAX));
    out.push_str("weir; error=");
    out.push_str(error);
    if !details.is_empty() {
        out.push_str("; details=\"");
        for c in details
            .chars()
            .filter(|c| (' '..='~').contains(c))
            .take(DETAILS_MAX)
        {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static("weir"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_an_escaped_sf_string() {
        let v = render(
            "http_protocol_error",
            "bad \"quote\" \\ and\nnewline\u{7f}é",
        );
        assert_eq!(
            v.to_str().unwrap(),
            r#"weir; error=http_protocol_error; details="bad \"quote\" \\ andnewline""#
        );
    }

    #[test]
    fn empty_details_are_left_out() {
        assert_eq!(
            render("proxy_internal_error", "").to_str().unwrap(),
            "weir; error=proxy_internal_error"
        );
    }

    #[test]
    fn long_details_are_cut() {
        let v = render("http_request_error", &"x".repeat(1000));
        assert!(v.len() < 260);
    }
}
