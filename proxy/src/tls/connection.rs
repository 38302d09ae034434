//! What a TLS connection tells about the client, read once after the
//! handshake: the server name it asked for, the ALPN protocol, and its
//! certificate's identity when it presented one. Plugins read it per request.

use rustls::pki_types::CertificateDer;

/// The TLS facts of one client connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionTls {
    /// The SNI name the client sent.
    pub server_name: Option<String>,
    /// The ALPN protocol agreed.
    pub alpn: Option<String>,
    /// The client certificate's identity, if it presented one.
    pub client: Option<ClientIdentity>,
}

/// Who a client certificate says the client is.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    /// The subject, e.g. `CN=alice, O=ops`.
    pub subject: String,
    /// The DNS, email and URI subject alternative names, one per line.
    pub names: String,
}

impl ConnectionTls {
    /// The facts of a finished server-side handshake.
    pub fn of(session: &rustls::ServerConnection) -> Self {
        Self {
            server_name: session.server_name().map(str::to_owned),
            alpn: session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            client: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(identity),
        }
    }
}

fn identity(leaf: &CertificateDer<'_>) -> Option<ClientIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(n) | GeneralName::RFC822Name(n) | GeneralName::URI(n) => {
                    names.push((*n).to_owned());
                }
                _ => {}
            }
        }
    }
    Some(ClientIdentity {
        subject: cert.subject().to_string(),
        names: names.join("\n"),
    })
}
