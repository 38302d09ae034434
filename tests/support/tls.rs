//! Certificates made at test time (`rcgen`): a private CA and leaves it
//! signs, written as PEM files; and a rustls client that trusts the CA,
//! sends a chosen SNI name and ALPN list, and reports what it got.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// A private certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A leaf certificate's PEM files.
#[derive(Clone, Debug)]
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Weir test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/ca.pem`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// Issues a leaf for `names`, valid from `days_from` to `days_to` days
    /// from now (negative: in the past), and writes `dir/STEM.pem` and
    /// `dir/STEM.key` (write, then rename).
    pub fn leaf(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        days_from: i64,
        days_to: i64,
    ) -> LeafFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days_from);
        params.not_after = now + time::Duration::days(days_to);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = LeafFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        write_atomically(&files.cert, &cert.pem());
        write_atomically(&files.key, &key.serialize_pem());
        files
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a TLS request got.
#[derive(Debug)]
pub struct TlsReply {
    pub status: u16,
    pub body: String,
    /// The ALPN protocol negotiated, if any.
    pub alpn: Option<String>,
    /// The DNS names of the certificate the server presented.
    pub names: Vec<String>,
    /// The server certificate, DER.
    pub certificate: Vec<u8>,
}

/// A client config trusting `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Every connection a full handshake: the test sees the certificate
    // serving now, not the one of a resumed session.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A client config trusting `ca_pem` that presents the certificate `leaf`.
pub fn client_config_with_identity(ca_pem: &str, leaf: &LeafFiles) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// `GET path` over a new TLS connection to `addr` with SNI `server_name`
/// (HTTP/2 when ALPN chose it).
pub async fn get_tls(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    path: &str,
) -> anyhow::Result<TlsReply> {
    get_tls_with(config, addr, server_name, path, &[]).await
}

/// Like [`get_tls`], with extra request headers.
pub async fn get_tls_with(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<TlsReply> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(server_name.to_owned())?;
    let tls = connector.connect(name, tcp).await?;
    let (_, session) = tls.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let certificate = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let names = leaf_names(&certificate);
    let uri = format!("https://{server_name}{path}");
    let mut request = http::Request::get(&uri).header(http::header::HOST, server_name);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new()))?;
    let response = if alpn.as_deref() == Some("h2") {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(TlsReply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        alpn,
        names,
        certificate,
    })
}

/// The DNS names of a DER certificate.
pub fn leaf_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// An HTTPS upstream: answers every request with its name and the HTTP
/// version it was spoken to in (`NAME HTTP/2.0`), using a certificate the
/// CA issued for `upstream.test` and 127.0.0.1.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(ca: &TestCa, dir: &Path, name: &str) -> Self {
        let leaf = ca.leaf(dir, "upstream", &["upstream.test", "127.0.0.1"], -1, 30);
        let chain: Vec<CertificateDer<'static>> = {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::pem_file_iter(&leaf.cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let key = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap()
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name: Arc<str> = name.into();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, name) = (acceptor.clone(), Arc::clone(&name));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let body = format!("{name} {:?}", request.version());
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(body),
                                )))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
