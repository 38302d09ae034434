//! TLS: certificates from PEM files ([`certs`]), and termination on a
//! listener ([`listener`]), with rustls and its `ring` provider.

pub mod certs;
pub mod listener;

pub use certs::{CertError, CertInfo};
pub use listener::{CertPaths, ListenerTls, ListenerTlsError, ListenerTlsSettings};
