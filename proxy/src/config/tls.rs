//! The `tls` tables: a listener's (its certificates — loaded and checked
//! here, so `weir check` reports a bad or expired one at its line — the
//! lowest TLS version and the ALPN protocols) and an upstream's (the CA to
//! trust, the name to verify, a client certificate).

use std::path::Path;

use toml::Spanned;

use super::raw::{RawListenerTls, RawUpstreamTls};
use super::{Diagnostic, Locator};
use crate::tls::{CertPaths, ClientAuth, ListenerTlsSettings, UpstreamTlsSpec, certs};

/// The ALPN protocols Weir serves.
const ALPN_KNOWN: [&str; 2] = ["h2", "http/1.1"];

/// Validates one listener's `tls`; `None` (errors pushed) when invalid.
pub(super) fn validate(
    raw: &Spanned<RawListenerTls>,
    base: &Path,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Option<ListenerTlsSettings> {
    let before = errors.len();
    let tls = raw.get_ref();
    if tls.certificates.is_empty() {
        errors.push(locate.at(
            raw.span(),
            "tls.certificates is empty: give at least one { cert = \"…\", key = \"…\" }",
        ));
    }
    let mut certificates = Vec::new();
    for entry in &tls.certificates {
        let paths = CertPaths {
            cert: base.join(&entry.get_ref().cert),
            key: base.join(&entry.get_ref().key),
        };
        if let Err(error) = certs::load(&paths.cert, &paths.key) {
            errors.push(locate.at(entry.span(), format!("tls certificate refused: {error}")));
        }
        certificates.push(paths);
    }
    let tls13_only = match tls
        .min_version
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("1.2", _)) => false,
        Some(("1.3", _)) => true,
        Some((other, span)) => {
            errors.push(locate.at(
                span,
                format!("tls.min_version {other:?}: expected \"1.2\" or \"1.3\""),
            ));
            false
        }
    };
    let alpn = match &tls.alpn {
        None => ALPN_KNOWN.iter().map(|p| (*p).to_owned()).collect(),
        Some(list) => {
            for protocol in list.get_ref() {
                if !ALPN_KNOWN.contains(&protocol.as_str()) {
                    errors.push(locate.at(
                        list.span(),
                        format!("tls.alpn {protocol:?}: expected \"h2\" or \"http/1.1\""),
                    ));
                }
            }
            list.get_ref().clone()
        }
    };
    let client_auth = tls.client_auth.as_ref().map(|auth| {
        let ca = base.join(&auth.get_ref().ca);
        if let Err(error) = certs::read_chain(&ca) {
            errors.push(locate.at(auth.span(), format!("tls.client_auth.ca: {error}")));
        }
        ClientAuth {
            ca,
            required: auth.get_ref().required,
        }
    });
    (errors.len() == before).then_some(ListenerTlsSettings {
        certificates,
        tls13_only,
        alpn,
        client_auth,
    })
}

/// Validates an upstream's `tls` (or its absence, when an endpoint was
/// written `https://`): `None` for plain HTTP.
pub(super) fn validate_upstream(
    raw: Option<&Spanned<RawUpstreamTls>>,
    https: bool,
    base: &Path,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Option<UpstreamTlsSpec> {
    let Some(raw) = raw else {
        return https.then(UpstreamTlsSpec::default);
    };
    let tls = raw.get_ref();
    let path = |p: &Option<String>| p.as_ref().map(|p| base.join(p));
    let spec = UpstreamTlsSpec {
        server_name: tls.server_name.clone(),
        ca: path(&tls.ca),
        client_cert: path(&tls.client_cert),
        client_key: path(&tls.client_key),
    };
    if spec.client_cert.is_some() != spec.client_key.is_some() {
        errors.push(locate.at(raw.span(), "tls: give client_cert and client_key together"));
    }
    if let Some(name) = &spec.server_name
        && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        errors.push(locate.at(
            raw.span(),
            format!("tls.server_name {name:?} is not a host name"),
        ));
    }
    if let Some(ca) = &spec.ca
        && let Err(error) = certs::read_chain(ca)
    {
        errors.push(locate.at(raw.span(), format!("tls.ca: {error}")));
    }
    if let (Some(cert), Some(key)) = (&spec.client_cert, &spec.client_key)
        && let Err(error) = certs::load(cert, key)
    {
        errors.push(locate.at(raw.span(), format!("tls client certificate: {error}")));
    }
    Some(spec)
}
