//! Authorises requests by the client's TLS certificate: a request passes
//! when its certificate names one of the allowed identities (a DNS, email
//! or URI name, or the subject's `CN=`), and goes upstream with
//! `x-client-identity` set to it (any such header from the client is
//! replaced). A request without a certificate is answered 401, one with a
//! certificate that names no allowed identity 403.
//!
//! Use it on a listener with `client_auth` (the proxy verifies the
//! certificate against the clients' CA; this plugin decides who may pass)
//! and on a `fail-closed` route, so that a failing plugin never lets a
//! request through:
//!
//! ```toml
//! [[routes]]
//! upstream = "internal"
//! on_plugin_error = "fail-closed"
//! plugins = [{ name = "client-cert", config = { allow = ["alice.clients.example", "CN=deploy-bot"] } }]
//! ```

use weir_sdk::{Answer, Plugin, Request, RequestAction};

/// The route's settings.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Identities allowed through: certificate names, or `CN=…`.
    pub allow: Vec<String>,
}

/// The plugin.
#[derive(Default)]
pub struct ClientCert {
    allow: Vec<String>,
}

impl ClientCert {
    /// The first allowed identity the request's certificate has, if any;
    /// `Err(status)` when there is no certificate (401) or no match (403).
    fn identity(&self, req: &Request) -> Result<String, u16> {
        let names = req.client_cert_names().unwrap_or_default();
        let subject = req.client_cert_subject().ok().flatten();
        let Some(subject) = subject else {
            return Err(401);
        };
        let common_name = subject
            .split(',')
            .map(str::trim)
            .find(|part| part.starts_with("CN="))
            .map(str::to_owned);
        names
            .into_iter()
            .chain(common_name)
            .find(|identity| self.allow.iter().any(|allowed| allowed == identity))
            .ok_or(403)
    }
}

#[weir_sdk::plugin]
impl Plugin for ClientCert {
    type Config = Settings;
    type Ctx = ();

    fn configure(&mut self, settings: Settings) -> Result<(), String> {
        if settings.allow.is_empty() {
            return Err("allow is empty: no request could pass".into());
        }
        self.allow = settings.allow;
        Ok(())
    }

    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        match self.identity(req) {
            Ok(identity) => {
                let _ = req.set_header("x-client-identity", &identity);
                RequestAction::Continue
            }
            Err(status) => {
                let text = if status == 401 {
                    "a client certificate is required\n"
                } else {
                    "this client certificate is not allowed here\n"
                };
                RequestAction::Answer(
                    Answer::new(status)
                        .header("content-type", "text/plain")
                        .proxy_status("http_request_denied", text.trim_end())
                        .body(text),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Harness, Outcome, TestRequest};

    use super::ClientCert;

    #[test]
    fn passes_allowed_identities_only() {
        let cfg = r#"{"allow":["alice.clients.test","CN=deploy-bot"]}"#;
        let mut h = Harness::<ClientCert>::new(cfg).unwrap();
        let alice = TestRequest::get("/").client_cert("CN=alice", &["alice.clients.test"]);
        let run = h.run(alice, &[Outcome::status(200)]);
        assert_eq!(run.status(), Some(200));
        assert_eq!(
            run.attempts[0].header("x-client-identity"),
            Some("alice.clients.test")
        );
        let bot = TestRequest::get("/").client_cert("CN=deploy-bot, O=ops", &[]);
        assert_eq!(h.run(bot, &[]).status(), Some(200));
        let mallory = TestRequest::get("/").client_cert("CN=mallory", &["mallory.test"]);
        assert_eq!(h.run(mallory, &[]).status(), Some(403));
        let anonymous = TestRequest::get("/").tls(Some("a.test"), Some("h2"));
        assert_eq!(h.run(anonymous, &[]).status(), Some(401));
        assert!(Harness::<ClientCert>::new(r#"{"allow":[]}"#).is_err());
    }
}
