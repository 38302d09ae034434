//! TLS to upstreams: the roots to trust (a private CA, or the public
//! WebPKI roots), the name to verify (a configured `server_name`, else the
//! endpoint's host), ALPN (`h2` for HTTP/2 upstreams), and an optional
//! client certificate for mutual TLS.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::certs::{self, CertError};

/// An upstream's `tls` settings (paths resolved against the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamTlsSpec {
    /// The name to send as SNI and verify; default: the endpoint's host.
    pub server_name: Option<String>,
    /// PEM roots to trust instead of the public WebPKI roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for upstreams that require one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Why an upstream's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// Opens TLS connections to one upstream's endpoints.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client side for `spec`; `h2` offers only `h2` by ALPN.
    pub fn new(spec: &UpstreamTlsSpec, h2: bool) -> Result<Self, UpstreamTlsError> {
        let roots = match &spec.ca {
            Some(ca) => certs::read_roots(ca)?,
            None => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match (&spec.client_cert, &spec.client_key) {
            (Some(cert), Some(key)) => {
                builder.with_client_auth_cert(certs::read_chain(cert)?, certs::read_key(key)?)?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let server_name = spec
            .server_name
            .as_ref()
            .and_then(|n| ServerName::try_from(n.clone()).ok());
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// A connector whose every handshake fails: it trusts no root.
    pub fn refusing() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth()
            });
        let config = match config {
            Ok(config) => config,
            // The ring provider supports the default versions.
            Err(_) => unreachable!("the ring provider supports TLS 1.2 and 1.3"),
        };
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: None,
        }
    }

    /// The TLS handshake over `tcp` to `host` (an endpoint's host name or
    /// address), unless a server name is configured.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        self.connector.connect(name, tcp).await
    }
}
