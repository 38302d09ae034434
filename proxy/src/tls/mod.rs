//! TLS: certificates from PEM files ([`certs`]), termination on a
//! listener ([`listener`], [`handshake`]) and connections to upstreams
//! ([`upstream`]), with rustls and its `ring` provider.

pub mod certs;
pub mod connection;
pub mod handshake;
pub mod listener;
pub mod upstream;

pub use certs::{CertError, CertInfo};
pub use connection::{ClientIdentity, ConnectionTls};
pub use handshake::{HandshakeFailed, TlsHandshakeFailure};
pub use listener::{CertPaths, ClientAuth, ListenerTls, ListenerTlsError, ListenerTlsSettings};
pub use upstream::{UpstreamTls, UpstreamTlsError, UpstreamTlsSpec};
