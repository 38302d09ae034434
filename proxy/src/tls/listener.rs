//! TLS on a listener: the certificates chosen by SNI (exact names, then
//! wildcards, then the first certificate as the default), ALPN, session
//! resumption, and certificate files reloaded when they change — a new
//! file that does not check out is refused and the old certificate keeps
//! serving, with the error shown until a good one comes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};

use super::certs::{self, CertError, CertInfo, LoadedCert};

/// One certificate's files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenerTlsSettings {
    /// The first is the default, for clients that send no SNI or an
    /// unknown name.
    pub certificates: Vec<CertPaths>,
    /// `true`: TLS 1.3 only; `false`: 1.2 and 1.3.
    pub tls13_only: bool,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<String>,
    /// Client certificates: the CA that signs them, and whether a client
    /// must present one (`false`: optional, verified when presented).
    pub client_auth: Option<ClientAuth>,
}

/// A listener's client-certificate settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub required: bool,
}

/// The certificates a listener serves, by name.
#[derive(Debug)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    infos: Vec<CertInfo>,
}

impl CertSet {
    fn new(loaded: Vec<LoadedCert>) -> Option<Self> {
        let default = Arc::clone(&loaded.first()?.key);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut infos = Vec::new();
        for cert in loaded {
            for name in &cert.info.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard
                        .entry(suffix.to_owned())
                        .or_insert_with(|| Arc::clone(&cert.key)),
                    None => exact
                        .entry(name.clone())
                        .or_insert_with(|| Arc::clone(&cert.key)),
                };
            }
            infos.push(cert.info);
        }
        Some(Self {
            exact,
            wildcard,
            default,
            infos,
        })
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return Arc::clone(&self.default);
        };
        if let Some(key) = self.exact.get(&name) {
            return Arc::clone(key);
        }
        // A wildcard covers exactly one label.
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return Arc::clone(key);
        }
        Arc::clone(&self.default)
    }
}

/// Chooses the certificate by SNI from the current set.
#[derive(Debug)]
struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.set.load().pick(hello.server_name()))
    }
}

/// Why a listener's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error("a TLS listener needs at least one certificate")]
    NoCertificate,
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client_auth: {0}")]
    ClientVerifier(String),
}

/// A listener's TLS: the acceptor's config and its reloadable certificates.
pub struct ListenerTls {
    settings: ListenerTlsSettings,
    resolver: Arc<SniResolver>,
    config: Arc<ServerConfig>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn load_all(settings: &ListenerTlsSettings) -> Result<CertSet, ListenerTlsError> {
    let loaded = settings
        .certificates
        .iter()
        .map(|paths| certs::load(&paths.cert, &paths.key))
        .collect::<Result<Vec<_>, _>>()?;
    CertSet::new(loaded).ok_or(ListenerTlsError::NoCertificate)
}

impl ListenerTls {
    /// Loads every certificate and builds the server config; any error
    /// refuses the whole.
    pub fn new(settings: &ListenerTlsSettings) -> Result<Self, ListenerTlsError> {
        let resolver = Arc::new(SniResolver {
            set: ArcSwap::from_pointee(load_all(settings)?),
        });
        let versions: &[&'static SupportedProtocolVersion] = if settings.tls13_only {
            &[&TLS13]
        } else {
            &[&TLS13, &TLS12]
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)?;
        let builder = match &settings.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(certs::read_roots(&auth.ca)?),
                    provider,
                );
                let verifier = if auth.required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| ListenerTlsError::ClientVerifier(e.to_string()))?,
                )
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = settings
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        // Resumption: a session cache (rustls' default) and stateless tickets.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Self {
            settings: settings.clone(),
            resolver,
            config: Arc::new(config),
            last_error: Mutex::default(),
        })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &ListenerTlsSettings {
        &self.settings
    }

    /// The rustls config for new connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Reads the certificate files again: if all check out they serve from
    /// the next handshake on; otherwise the old ones stay and the error is
    /// kept (and logged once per distinct error).
    pub fn reload_certificates(&self) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match load_all(&self.settings) {
            Ok(set) => {
                self.resolver.set.store(Arc::new(set));
                if last.take().is_some() {
                    tracing::info!("TLS certificates reloaded; the earlier error is cleared");
                } else {
                    tracing::info!("TLS certificates reloaded");
                }
            }
            Err(error) => {
                let message = error.to_string();
                if last.as_deref() != Some(message.as_str()) {
                    tracing::error!(error = %message, "new TLS certificate refused; the old one keeps serving");
                }
                *last = Some(message);
            }
        }
    }

    /// The certificates serving now.
    pub fn certificates(&self) -> Vec<CertInfo> {
        self.resolver.set.load().infos.clone()
    }

    /// The error of the last refused reload, until a good one.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
