//! The TLS handshake on an accepted connection, bounded in time, and why
//! one failed (the reasons `weir_tls_handshake_errors_total` counts). The
//! proxy's listeners and the admin API accept the same way.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why a TLS handshake failed, for `weir_tls_handshake_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsHandshakeFailure {
    /// Not finished within the head-read timeout.
    Timeout,
    /// The client went away or sent no TLS.
    Aborted,
    /// No common version, cipher suite or ALPN protocol.
    Incompatible,
    /// A certificate problem (the client refused ours, or sent a bad one).
    Certificate,
    /// Anything else the TLS stack refused.
    Other,
}

impl TlsHandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [Self; 5] = [
        Self::Timeout,
        Self::Aborted,
        Self::Incompatible,
        Self::Certificate,
        Self::Other,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Aborted => "aborted",
            Self::Incompatible => "incompatible",
            Self::Certificate => "certificate",
            Self::Other => "other",
        }
    }

    /// The reason for a failed handshake's error.
    pub fn of(error: &std::io::Error) -> Self {
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Self::Aborted;
        };
        match tls {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateUnknown
                | rustls::AlertDescription::CertificateExpired,
            ) => Self::Certificate,
            rustls::Error::PeerIncompatible(_)
            | rustls::Error::NoApplicationProtocol
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::ProtocolVersion
                | rustls::AlertDescription::HandshakeFailure
                | rustls::AlertDescription::NoApplicationProtocol,
            ) => Self::Incompatible,
            rustls::Error::InvalidMessage(_) => Self::Aborted,
            _ => Self::Other,
        }
    }
}

/// A handshake that did not finish: why, and the TLS stack's error (none
/// for a timeout).
#[derive(Debug)]
pub struct HandshakeFailed {
    pub reason: TlsHandshakeFailure,
    pub error: Option<std::io::Error>,
}

/// Runs the server side of a TLS handshake on `stream`, for at most
/// `within` (a client that never finishes is not waited on).
pub async fn accept<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    within: Duration,
) -> Result<TlsStream<S>, HandshakeFailed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(HandshakeFailed {
            reason: TlsHandshakeFailure::of(&error),
            error: Some(error),
        }),
        Err(_) => Err(HandshakeFailed {
            reason: TlsHandshakeFailure::Timeout,
            error: None,
        }),
    }
}
