//! Certificates and keys from PEM files: loaded, checked (the key is the
//! certificate's, the certificate is within its validity period) and
//! described (names, expiry) for the admin API and metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be used. The one serving (if any) stays.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or holds no PEM of the right kind.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not belong to the certificate.
    #[error("{key} is not the key of {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Not valid now: expired, or not valid yet.
    #[error("{cert}: {message}")]
    Validity {
        /// The certificate file.
        cert: PathBuf,
        /// Since or until when.
        message: String,
    },
}

/// A certificate chain with its key, ready to serve, and what it says.
#[derive(Clone, Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// What the admin API shows of a certificate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CertInfo {
    /// The certificate file.
    pub file: String,
    /// Its subject.
    pub subject: String,
    /// The DNS names it is for (subject alternative names).
    pub names: Vec<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl CertInfo {
    /// Seconds until it expires (negative once it has).
    pub fn expires_in_secs(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.not_after_unix.saturating_sub(now)
    }
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> CertError {
    CertError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Reads the PEM certificate chain in `path` (leaf first).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if chain.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(chain)
}

/// Reads the PEM CA certificates in `path` as trust roots; a file none of
/// whose certificates is usable is refused.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(read_chain(path)?);
    if added == 0 {
        return Err(file_error(path, "no usable CA certificate in it"));
    }
    Ok(roots)
}

/// Reads the PEM private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// Loads and checks a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    let chain = read_chain(cert)?;
    let private = read_key(key)?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| file_error(key, e))?;
    let info = describe(cert, &chain[0])?;
    let certified = CertifiedKey::new(chain, signer);
    if certified.keys_match().is_err() {
        return Err(CertError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        info,
    })
}

/// Names and validity of a leaf certificate; refuses one that is not valid
/// now.
fn describe(path: &Path, leaf: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| file_error(path, e))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(CertError::Validity {
            cert: path.to_path_buf(),
            message: format!("expired on {}", validity.not_after),
        });
    }
    if validity.not_before > now {
        return Err(CertError::Validity {
            cert: path.to_path_buf(),
            message: format!("not valid before {}", validity.not_before),
        });
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(CertInfo {
        file: path.display().to_string(),
        subject: parsed.subject().to_string(),
        names,
        not_after_unix: validity.not_after.timestamp(),
    })
}
