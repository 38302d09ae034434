//! The `[admin]` table: where the admin API listens, the bearer token that
//! guards it, and its TLS. A token is required when the address is not
//! loopback.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use super::raw::RawAdmin;
use super::{Diagnostic, Locator, defaults};

/// The shortest token accepted: guessing must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

/// The admin listener's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminSettings {
    pub address: SocketAddr,
    /// The bearer token; `None` only on a loopback address.
    pub token: Option<AdminToken>,
    /// HTTPS for the admin API (HTTP/1.1 only), so that the token does not
    /// cross the network in clear.
    pub tls: Option<crate::tls::ListenerTlsSettings>,
}

/// A bearer token. Never shown: `Debug` and `Serialize` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from text, for tests of the admin API's rules.
    #[cfg(test)]
    pub(crate) fn for_tests(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// Whether `presented` is this token, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl Serialize for AdminToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Validates `[admin]`; `None` when disabled or invalid (errors pushed).
pub(super) fn validate(
    raw: &RawAdmin,
    base: &Path,
    listeners: &HashSet<SocketAddr>,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Option<AdminSettings> {
    if raw.enabled == Some(false) {
        return None;
    }
    let address = match &raw.address {
        None => defaults::ADMIN_ADDRESS.parse().ok()?,
        Some(text) => match text.get_ref().parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 && listeners.contains(&addr) => {
                errors.push(locate.at(
                    text.span(),
                    format!("admin address {addr} is also a proxy listener"),
                ));
                return None;
            }
            Ok(addr) => addr,
            Err(_) => {
                errors.push(locate.at(
                    text.span(),
                    format!(
                        "invalid admin address {:?}: expected ip:port",
                        text.get_ref()
                    ),
                ));
                return None;
            }
        },
    };
    let token = match (&raw.token, &raw.token_file) {
        (Some(_), Some(file)) => {
            errors.push(locate.at(file.span(), "set admin.token or admin.token_file, not both"));
            return None;
        }
        (Some(token), None) => Some((
            token.get_ref().trim().to_owned(),
            token.span(),
            "admin.token",
        )),
        (None, Some(file)) => {
            let path = base.join(file.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => Some((text.trim().to_owned(), file.span(), "admin.token_file")),
                Err(error) => {
                    errors.push(locate.at(
                        file.span(),
                        format!("cannot read admin.token_file {}: {error}", path.display()),
                    ));
                    return None;
                }
            }
        }
        (None, None) => None,
    };
    let token = match token {
        Some((text, span, what)) => {
            if text.len() < MIN_TOKEN_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
                errors.push(locate.at(
                    span,
                    format!(
                        "{what}: the token must be at least {MIN_TOKEN_LEN} visible ASCII characters (e.g. `openssl rand -hex 32`)"
                    ),
                ));
                return None;
            }
            Some(AdminToken(text))
        }
        None => None,
    };
    if token.is_none() && !address.ip().is_loopback() {
        let span = raw.address.as_ref().map_or(0..0, toml::Spanned::span);
        errors.push(locate.at(
            span,
            format!(
                "admin address {address} is not loopback: anyone who can reach it could reload the config or read it; \
                 set admin.token_file (a bearer token every request must present), or listen on 127.0.0.1"
            ),
        ));
        return None;
    }
    let tls = match &raw.tls {
        None => None,
        Some(raw_tls) => {
            let mut tls = super::tls::validate(raw_tls, base, locate, errors)?;
            // The admin API speaks HTTP/1.1 only.
            tls.alpn = vec!["http/1.1".to_owned()];
            Some(tls)
        }
    };
    Some(AdminSettings {
        address,
        token,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let token = AdminToken("0123456789abcdef".into());
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken([redacted])");
        assert_eq!(serde_json::to_string(&token).unwrap(), "\"[redacted]\"");
    }
}
