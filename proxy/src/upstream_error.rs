//! Classified upstream failures: what failed, and whether the request
//! reached the upstream. Retry and breaker policies act on exactly this, so
//! the classes are few and stable (they are part of the plugin ABI too).

use std::error::Error as StdError;
use std::io;

use http::StatusCode;

/// The class of an upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorClass {
    /// The endpoint refused the connection, or it could not be reached at all
    /// (also unresolvable names).
    ConnectRefused = 0,
    /// The connection was not established within the connect timeout.
    ConnectTimeout = 1,
    /// The connection was reset or closed before a complete response head.
    Reset = 2,
    /// No response head within the route's timeout.
    Timeout = 3,
    /// The upstream answered something that is not valid HTTP.
    Protocol = 4,
    /// The upstream has no endpoint to send to.
    NoEndpoint = 5,
    /// The TLS handshake with the endpoint failed (no common version or
    /// protocol, an alert).
    Tls = 6,
    /// The endpoint's certificate was not accepted (unknown CA, wrong name,
    /// expired).
    TlsCertificate = 7,
}

impl ErrorClass {
    /// Every class, in discriminant order.
    pub const ALL: [Self; 8] = [
        Self::ConnectRefused,
        Self::ConnectTimeout,
        Self::Reset,
        Self::Timeout,
        Self::Protocol,
        Self::NoEndpoint,
        Self::Tls,
        Self::TlsCertificate,
    ];

    /// A stable lower-case name, used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::NoEndpoint => "no_endpoint",
            Self::Tls => "tls",
            Self::TlsCertificate => "tls_certificate",
        }
    }

    /// The class as plugins see it (`weir_abi::ErrorClass`). "No endpoint"
    /// and a failed TLS handshake are connect failures that sent nothing.
    pub fn to_abi(self) -> weir_abi::ErrorClass {
        use weir_abi::ErrorClass as Abi;
        match self {
            Self::ConnectRefused | Self::NoEndpoint | Self::Tls | Self::TlsCertificate => {
                Abi::ConnectRefused
            }
            Self::ConnectTimeout => Abi::ConnectTimeout,
            Self::Reset => Abi::Reset,
            Self::Timeout => Abi::Timeout,
            Self::Protocol => Abi::Protocol,
        }
    }

    /// The status the proxy answers with when this failure ends a request.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ConnectRefused
            | Self::Reset
            | Self::Protocol
            | Self::Tls
            | Self::TlsCertificate => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout | Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 9209 `Proxy-Status` error type.
    pub fn proxy_status_error(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connection_refused",
            Self::ConnectTimeout => "connection_timeout",
            Self::Reset => "connection_terminated",
            Self::Timeout => "http_response_timeout",
            Self::Protocol => "http_protocol_error",
            Self::NoEndpoint => "destination_unavailable",
            Self::Tls => "tls_protocol_error",
            Self::TlsCertificate => "tls_certificate_error",
        }
    }
}

/// A failed exchange with an upstream.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} ({detail})", class.as_str())]
pub struct UpstreamError {
    pub class: ErrorClass,
    /// Whether any of the request may have reached the upstream. A request
    /// that did not is always safe to retry.
    pub reached_upstream: bool,
    pub detail: String,
}

impl UpstreamError {
    pub fn new(class: ErrorClass, reached_upstream: bool, detail: impl Into<String>) -> Self {
        Self {
            class,
            reached_upstream,
            detail: detail.into(),
        }
    }

    /// Classifies a failure to open a connection to an endpoint (TCP
    /// connect, name lookup, TLS handshake): nothing reached the upstream.
    pub fn from_connect(error: &(dyn StdError + 'static)) -> Self {
        let detail = error_chain(error);
        if let Some(class) = tls_class(error) {
            return Self::new(class, false, detail);
        }
        let class = match find_io(error).map(io::Error::kind) {
            Some(io::ErrorKind::TimedOut) => ErrorClass::ConnectTimeout,
            _ => ErrorClass::ConnectRefused,
        };
        Self::new(class, false, detail)
    }

    /// Classifies a failed exchange on an open connection.
    pub fn from_exchange(error: &hyper::Error) -> Self {
        let detail = error_chain(error);
        if let Some(class) = tls_class(error) {
            return Self::new(class, false, detail);
        }
        if error.is_canceled() {
            // The connection closed before the request was written.
            return Self::new(ErrorClass::Reset, false, detail);
        }
        if error.is_timeout() {
            return Self::new(ErrorClass::Timeout, true, detail);
        }
        if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
            return Self::new(ErrorClass::Protocol, true, detail);
        }
        if error.is_incomplete_message() || error.is_closed() {
            return Self::new(ErrorClass::Reset, true, detail);
        }
        match find_io(error).map(io::Error::kind) {
            Some(
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof,
            ) => Self::new(ErrorClass::Reset, true, detail),
            Some(io::ErrorKind::TimedOut) => Self::new(ErrorClass::Timeout, true, detail),
            _ => Self::new(ErrorClass::Protocol, true, detail),
        }
    }
}

/// The class of a TLS failure in the chain, if there is one.
pub(crate) fn tls_class(error: &(dyn StdError + 'static)) -> Option<ErrorClass> {
    Some(match find_tls(error)? {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            ErrorClass::TlsCertificate
        }
        _ => ErrorClass::Tls,
    })
}

fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A TLS error in the chain: rustls reports it inside an `io::Error`, whose
/// `source` skips the inner error, so each `io::Error` is opened too.
fn find_tls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn find_io<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    find::<io::Error>(error)
}

/// An error and its sources on one line, without repeats.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_class() {
        assert_eq!(ErrorClass::ConnectRefused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            ErrorClass::ConnectTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ErrorClass::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            ErrorClass::NoEndpoint.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn class_discriminants_index_all() {
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
    }
}
