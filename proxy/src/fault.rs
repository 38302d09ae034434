//! Failures that are the client's: a refused head, a malformed or stalled
//! body, a client gone mid-request. Each is classified once, here, so it is
//! never mistaken for the upstream's: it never reaches a plugin as an
//! upstream outcome (no breaker trip, no retry, no passive ejection) and is
//! never counted in `weir_upstream_errors_total`.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::io;

use http::StatusCode;

/// The class of a client fault, the `class` label of
/// `weir_client_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ClientFaultClass {
    /// The head broke a rule of the intake (400, 414, 431, 501, 505).
    BadHead = 0,
    /// The head did not arrive in time (408).
    HeadTimeout = 1,
    /// The body's framing was malformed.
    BadBody = 2,
    /// The body paused longer than `timeouts.body_idle`.
    BodyStalled = 3,
    /// The client went away before its request was complete.
    Gone = 4,
}

impl ClientFaultClass {
    /// Every class, in discriminant order.
    pub const ALL: [Self; 5] = [
        Self::BadHead,
        Self::HeadTimeout,
        Self::BadBody,
        Self::BodyStalled,
        Self::Gone,
    ];

    /// A stable lower-case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadHead => "bad_head",
            Self::HeadTimeout => "head_timeout",
            Self::BadBody => "bad_body",
            Self::BodyStalled => "body_stalled",
            Self::Gone => "gone",
        }
    }
}

/// A request the proxy will not forward (or finish forwarding) because of
/// something the client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFault {
    pub class: ClientFaultClass,
    /// The status the client is answered with (if it is still there).
    pub status: StatusCode,
    /// Why, for `Proxy-Status` and the log. Never echoes client bytes.
    pub detail: Cow<'static, str>,
}

impl ClientFault {
    pub fn new(
        class: ClientFaultClass,
        status: StatusCode,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            class,
            status,
            detail: detail.into(),
        }
    }

    /// Classifies an error of the client's request body, as the server's
    /// body stream reports it (the intake's I/O error is in its sources).
    pub fn from_body_error(error: &(dyn StdError + 'static)) -> Self {
        let mut incomplete = false;
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                let class = match io.kind() {
                    io::ErrorKind::TimedOut => ClientFaultClass::BodyStalled,
                    io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                        ClientFaultClass::BadBody
                    }
                    _ => ClientFaultClass::Gone,
                };
                return Self::body(class, io.to_string());
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                incomplete |= h.is_incomplete_message() || h.is_canceled() || h.is_closed();
            }
            current = e.source();
        }
        if incomplete {
            Self::body(
                ClientFaultClass::Gone,
                "the client closed before its body ended",
            )
        } else {
            Self::body(ClientFaultClass::BadBody, "malformed request body")
        }
    }

    fn body(class: ClientFaultClass, detail: impl Into<Cow<'static, str>>) -> Self {
        let status = match class {
            ClientFaultClass::BodyStalled | ClientFaultClass::HeadTimeout => {
                StatusCode::REQUEST_TIMEOUT
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(class, status, detail)
    }

    /// The flags `on_end` gets: cancelled when the client went away, client
    /// error otherwise.
    pub fn end_flags(&self) -> i32 {
        match self.class {
            ClientFaultClass::Gone => weir_abi::CANCELLED,
            _ => weir_abi::CLIENT_ERROR,
        }
    }
}

impl std::fmt::Display for ClientFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.class.as_str(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_pick_the_class() {
        let stalled = io::Error::new(io::ErrorKind::TimedOut, "request body stalled");
        assert_eq!(
            ClientFault::from_body_error(&stalled).class,
            ClientFaultClass::BodyStalled
        );
        assert_eq!(
            ClientFault::from_body_error(&stalled).status,
            StatusCode::REQUEST_TIMEOUT
        );
        let bad = io::Error::new(io::ErrorKind::InvalidData, "malformed chunk size");
        assert_eq!(
            ClientFault::from_body_error(&bad).class,
            ClientFaultClass::BadBody
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let gone = ClientFault::from_body_error(&reset);
        assert_eq!(gone.class, ClientFaultClass::Gone);
        assert_eq!(gone.end_flags(), weir_abi::CANCELLED);
    }

    #[test]
    fn class_discriminants_index_all() {
        for (i, class) in ClientFaultClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
    }
}
