//! TLS to upstreams through the real proxy: a private CA, the name verified
//! from the endpoint or `server_name`, HTTP/2 by ALPN, and a certificate the
//! proxy does not trust answered 502 with a classified `Proxy-Status`.

use weir_tests::tls::{TestCa, TlsUpstream};
use weir_tests::{TestProxy, config_head, get};

fn proxy(endpoint: &str, tls: &str, protocol: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{endpoint}\"]\n{protocol}{tls}\n[[routes]]\nupstream = \"u\"\n",
        config_head()
    ))
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = ca.write(dir.path());
    let upstream = TlsUpstream::start(&ca, dir.path(), "secure").await;
    let port = upstream.addr.port();

    // `https://` endpoint: TLS, the name verified is the endpoint's host.
    let by_address = proxy(
        &format!("https://127.0.0.1:{port}"),
        &format!("tls = {{ ca = \"{}\" }}", ca_file.display()),
        "",
    );
    let reply = get(&by_address.url("/")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "secure HTTP/1.1");

    // A plain endpoint with a `tls` table and a server name; HTTP/2 by ALPN.
    let by_name = proxy(
        &format!("127.0.0.1:{port}"),
        &format!(
            "tls = {{ ca = \"{}\", server_name = \"upstream.test\" }}",
            ca_file.display()
        ),
        "protocol = \"h2c\"\n",
    );
    let reply = get(&by_name.url("/")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "secure HTTP/2.0");

    // Another CA: the upstream's certificate is not trusted.
    let other = TestCa::new();
    let other_dir = tempfile::tempdir().unwrap();
    let other_file = other.write(other_dir.path());
    let untrusted = proxy(
        &format!("https://127.0.0.1:{port}"),
        &format!("tls = {{ ca = \"{}\" }}", other_file.display()),
        "",
    );
    let reply = get(&untrusted.url("/")).await.unwrap();
    assert_eq!(reply.status, 502);
    let status = reply.header("proxy-status").unwrap_or_default();
    assert!(
        status.starts_with("weir; error=tls_certificate_error"),
        "{status}"
    );
    let metrics = get(&untrusted.admin_url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("weir_upstream_errors_total{upstream=\"u\",class=\"tls_certificate\"} 1"),
        "{metrics}"
    );
    // The wrong name: refused the same way.
    let wrong_name = proxy(
        &format!("127.0.0.1:{port}"),
        &format!(
            "tls = {{ ca = \"{}\", server_name = \"elsewhere.test\" }}",
            ca_file.display()
        ),
        "",
    );
    let reply = get(&wrong_name.url("/")).await.unwrap();
    assert_eq!(reply.status, 502);
    let status = reply.header("proxy-status").unwrap_or_default();
    assert!(
        status.starts_with("weir; error=tls_certificate_error")
            && status.contains("elsewhere.test"),
        "{status}"
    );
}

#[tokio::test]
async fn https_upstream_connections_are_kept_alive_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = ca.write(dir.path());
    let upstream = TlsUpstream::start(&ca, dir.path(), "kept").await;
    let proxy = proxy(
        &format!("https://127.0.0.1:{}", upstream.addr.port()),
        &format!("tls = {{ ca = \"{}\" }}", ca_file.display()),
        "",
    );
    for _ in 0..5 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.text(), "kept HTTP/1.1");
    }
    // The TLS 1.3 session tickets the upstream sends after its handshake
    // do not make an idle connection look used: one handshake for all five.
    let health = get(&proxy.admin_url("/admin/health")).await.unwrap();
    let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    let connections = &health["upstreams"][0]["connections"];
    assert_eq!(connections["opened_total"], 1, "{connections}");
    assert_eq!(connections["open"], 1, "{connections}");
}
