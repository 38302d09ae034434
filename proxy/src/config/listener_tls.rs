//! A listener's `tls` table: its certificates (loaded and checked here, so
//! `weir check` reports a bad or expired one at its line), the lowest TLS
//! version and the ALPN protocols.

use std::path::Path;

use toml::Spanned;

use super::raw::RawListenerTls;
use super::{Diagnostic, Locator};
use crate::tls::{CertPaths, ListenerTlsSettings, certs};

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
    (errors.len() == before).then_some(ListenerTlsSettings {
        certificates,
        tls13_only,
        alpn,
    })
}
