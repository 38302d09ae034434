//! TLS termination through the real server: HTTP/1.1 and h2 (ALPN), the
//! certificate chosen by SNI (exact, wildcard, default), rotation under load
//! without a failed request, bad new certificates refused while the old one
//! serves, and handshake failures counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use weir_tests::tls::{TestCa, client_config, get_tls, get_tls_with};
use weir_tests::{TestProxy, TestUpstream, assert_eventually, get};

/// A proxy whose one listener terminates TLS with `certificates` (TOML
/// inline tables), in `dir`.
fn tls_proxy(dir: tempfile::TempDir, certificates: &str, upstream: &TestUpstream) -> TestProxy {
    let config = format!(
        "[server]\nworkers = 1\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{certificates}] }}\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        upstream.addr
    );
    TestProxy::start_in(dir, &config)
}

fn files(leaf: &weir_tests::tls::LeafFiles) -> String {
    format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        leaf.cert.display(),
        leaf.key.display()
    )
}

async fn admin_json(proxy: &TestProxy, path: &str) -> serde_json::Value {
    serde_json::from_slice(&get(&proxy.admin_url(path)).await.unwrap().body).unwrap()
}

#[tokio::test]
async fn https_over_http1_and_h2_with_the_certificate_chosen_by_sni() {
    let upstream = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let a = ca.leaf(dir.path(), "a", &["a.test"], -1, 30);
    let wild = ca.leaf(dir.path(), "wild", &["*.wild.test"], -1, 30);
    let b = ca.leaf(dir.path(), "b", &["b.test"], -1, 30);
    let ca_file = ca.write(dir.path());
    let proxy = tls_proxy(
        dir,
        &format!("{}, {}, {}", files(&a), files(&wild), files(&b)),
        &upstream,
    );
    let h1 = client_config(&ca.pem, &["http/1.1"]);
    let h2 = client_config(&ca.pem, &["h2", "http/1.1"]);

    for (sni, expected) in [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("x.wild.test", "*.wild.test"),
    ] {
        let reply = get_tls(Arc::clone(&h1), proxy.addr, sni, "/")
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{sni}");
        assert_eq!(reply.names, vec![expected.to_owned()], "{sni}");
        assert_eq!(reply.alpn.as_deref(), Some("http/1.1"));
    }
    // An unknown name gets the first (default) certificate, which the client
    // then refuses; so does a name a wildcard does not cover (one label only).
    for sni in ["other.test", "a.b.wild.test"] {
        let error = get_tls(Arc::clone(&h1), proxy.addr, sni, "/")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("only valid for DnsName(\"a.test\")"),
            "{sni}: {error}"
        );
    }

    // HTTP/2 by ALPN; the upstream is told the client used https.
    let reply = get_tls(h2, proxy.addr, "a.test", "/headers").await.unwrap();
    assert_eq!(reply.alpn.as_deref(), Some("h2"));
    assert_eq!(reply.status, 200);
    let headers: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(headers["x-forwarded-proto"][0], "https", "{headers}");

    // curl, over h2 and HTTP/1.1.
    let port = proxy.addr.port();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let ca_file = ca_file.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_version}",
                    flag,
                ])
                .arg("--cacert")
                .arg(&ca_file)
                .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
                .arg(format!("https://a.test:{port}/"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("200 {version}"),
            "curl {flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Expiry on /admin/health and /metrics.
    let health = admin_json(&proxy, "/admin/health").await;
    let listener = &health["listeners"][0];
    let certificates = listener["tls"]["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 3, "{listener}");
    let expires = certificates[0]["expires_in_seconds"].as_i64().unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&expires), "{expires}");
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(
            "weir_tls_certificate_expiry_seconds{listener=\"127.0.0.1:0\",name=\"a.test\"}"
        ),
        "{metrics}"
    );

    // Plain HTTP to the TLS port: a failed handshake, counted, not served.
    let plain = get(&proxy.url("/")).await;
    assert!(plain.is_err() || plain.unwrap().status != 200);
    assert_eventually(
        Duration::from_secs(2),
        "handshake error counted",
        || async {
            let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
            metrics
                .lines()
                .filter(|l| l.starts_with("weir_tls_handshake_errors_total{"))
                .any(|l| !l.ends_with(" 0"))
                .then_some(())
                .ok_or(metrics)
        },
    )
    .await;
}

/// New TLS connections in a loop until stopped; counts failures.
fn tls_load(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (o, f) = (Arc::clone(&ok), Arc::clone(&failed));
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            match get_tls(Arc::clone(&config), addr, "a.test", "/").await {
                Ok(reply) if reply.status == 200 => o.fetch_add(1, Ordering::SeqCst),
                _ => f.fetch_add(1, Ordering::SeqCst),
            };
        }
    });
    (ok, failed, task)
}

#[tokio::test]
async fn certificates_rotate_under_load_and_bad_ones_are_refused() {
    let upstream = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let ca = TestCa::new();
    let a = ca.leaf(&path, "a", &["a.test"], -1, 30);
    let proxy = tls_proxy(dir, &files(&a), &upstream);
    let client = client_config(&ca.pem, &["http/1.1"]);
    let first = get_tls(Arc::clone(&client), proxy.addr, "a.test", "/")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, load) = tls_load(Arc::clone(&client), proxy.addr, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Rotation: a new certificate and key for the same name.
    let _ = ca.leaf(&path, "a", &["a.test"], -1, 60);
    assert_eventually(
        Duration::from_secs(5),
        "the new certificate serves",
        || async {
            let reply = get_tls(Arc::clone(&client), proxy.addr, "a.test", "/")
                .await
                .map_err(|e| e.to_string())?;
            (reply.certificate != first.certificate)
                .then_some(())
                .ok_or_else(|| "still the old certificate".to_owned())
        },
    )
    .await;
    let rotated = get_tls(Arc::clone(&client), proxy.addr, "a.test", "/")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(ok.load(Ordering::SeqCst) > 10);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );

    // A key that is not the certificate's: refused, the rotated one serves.
    let other = ca.leaf(&path, "other", &["a.test"], -1, 30);
    std::fs::copy(&other.key, path.join("a.key.tmp")).unwrap();
    std::fs::rename(path.join("a.key.tmp"), path.join("a.key")).unwrap();
    assert_eventually(Duration::from_secs(5), "the mismatch is shown", || async {
        let config = admin_json(&proxy, "/admin/config").await;
        let error = config["tls"]["127.0.0.1:0"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        error
            .contains("is not the key of")
            .then_some(())
            .ok_or(config.to_string())
    })
    .await;
    let still = get_tls(Arc::clone(&client), proxy.addr, "a.test", "/")
        .await
        .unwrap();
    assert_eq!(still.certificate, rotated.certificate);

    // An expired certificate: refused too.
    let _ = ca.leaf(&path, "a", &["a.test"], -30, -1);
    assert_eventually(
        Duration::from_secs(5),
        "the expired one is refused",
        || async {
            let health = admin_json(&proxy, "/admin/health").await;
            let error = health["listeners"][0]["tls"]["last_error"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            error
                .contains("expired")
                .then_some(())
                .ok_or(health.to_string())
        },
    )
    .await;
    let still = get_tls(client, proxy.addr, "a.test", "/").await.unwrap();
    assert_eq!(still.certificate, rotated.certificate);

    // And the config check refuses it at its line, as `weir check` would.
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{}] }}\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"u\"\n",
        files(&a)
    );
    let error = weir_proxy::config::Config::parse(&text, &path.join("weir.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("weir.toml:3:") && error.contains("expired"),
        "{error}"
    );
}

/// An upstream, a CA and its certificate for `a.test`, in a temp dir.
struct Site {
    upstream: TestUpstream,
    dir: tempfile::TempDir,
    ca: TestCa,
    cert: weir_tests::tls::LeafFiles,
}

impl Site {
    async fn new() -> Self {
        let upstream = TestUpstream::start("u").await;
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let cert = ca.leaf(dir.path(), "site", &["a.test"], -1, 30);
        Self {
            upstream,
            dir,
            ca,
            cert,
        }
    }

    /// A clients' CA (written beside the site's files) and the certificate
    /// it issued to `alice.clients.test`.
    fn clients(&self) -> (TestCa, std::path::PathBuf, weir_tests::tls::LeafFiles) {
        let clients = TestCa::new();
        let file = self.dir.path().join("clients.pem");
        std::fs::write(&file, &clients.pem).unwrap();
        let alice = clients.leaf(self.dir.path(), "alice", &["alice.clients.test"], -1, 30);
        (clients, file, alice)
    }

    /// A proxy (its own dir, prepared by `prepare`) with one TLS listener
    /// asking for client certificates from `clients_file`, and `route` lines
    /// added to its one route.
    fn mtls_proxy(
        &self,
        clients_file: &std::path::Path,
        required: bool,
        route: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let config = format!(
            "[server]\nworkers = 1\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\n\
             tls = {{ certificates = [{}], client_auth = {{ ca = \"{}\", required = {required} }} }}\n\
             [upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n{route}",
            files(&self.cert),
            clients_file.display(),
            self.upstream.addr
        );
        TestProxy::start_in(dir, &config)
    }
}

#[tokio::test]
async fn client_certificates_required_or_optional() {
    let site = Site::new().await;
    let (_clients, clients_file, alice) = site.clients();
    let stranger = TestCa::new().leaf(site.dir.path(), "stranger", &["mallory.test"], -1, 30);
    let ca = &site.ca;
    let start = |required: bool| site.mtls_proxy(&clients_file, required, "", |_| {});
    let anonymous = client_config(&ca.pem, &["http/1.1"]);
    let with_alice = weir_tests::tls::client_config_with_identity(&ca.pem, &alice);
    let with_stranger = weir_tests::tls::client_config_with_identity(&ca.pem, &stranger);

    let required = start(true);
    let reply = get_tls(Arc::clone(&with_alice), required.addr, "a.test", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    // Without a certificate, or with one from another CA: no request served.
    // (With TLS 1.3 the client learns of the refusal at its first read.)
    for client in [&anonymous, &with_stranger] {
        let outcome = get_tls(Arc::clone(client), required.addr, "a.test", "/").await;
        assert!(outcome.is_err(), "{outcome:?}");
    }
    assert_eventually(Duration::from_secs(2), "refusals counted", || async {
        let metrics = get(&required.admin_url("/metrics")).await.unwrap().text();
        metrics
            .contains("weir_tls_handshake_errors_total{listener=\"127.0.0.1:0\",reason=\"certificate\"} 2")
            .then_some(())
            .ok_or(metrics)
    })
    .await;

    let optional = start(false);
    for client in [&anonymous, &with_alice] {
        let reply = get_tls(Arc::clone(client), optional.addr, "a.test", "/")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    let outcome = get_tls(with_stranger, optional.addr, "a.test", "/").await;
    assert!(
        outcome.is_err(),
        "a certificate that is presented is verified"
    );
}

#[tokio::test]
async fn a_plain_listener_can_redirect_to_https() {
    let Site {
        upstream,
        dir,
        ca,
        cert: site,
    } = Site::new().await;
    let https_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[server]\nworkers = 1\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nredirect_https = true\n\
         [[listeners]]\naddress = \"127.0.0.1:{https_port}\"\ntls = {{ certificates = [{}] }}\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        files(&site),
        upstream.addr
    );
    let proxy = TestProxy::start_in(dir, &config);
    let plain = proxy.server.listener_addrs()[0];
    let request = http::Request::get(format!("http://{plain}/some/path?x=1"))
        .header("host", "a.test")
        .body(http_body_util::Full::default())
        .unwrap();
    let reply = weir_tests::send(&weir_tests::client(), request)
        .await
        .unwrap();
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some(format!("https://a.test:{https_port}/some/path?x=1").as_str())
    );
    assert_eq!(upstream.requests(), 0, "nothing was forwarded");
    let secure = get_tls(
        client_config(&ca.pem, &["http/1.1"]),
        SocketAddr::from(([127, 0, 0, 1], https_port)),
        "a.test",
        "/",
    )
    .await
    .unwrap();
    assert_eq!(secure.status, 200);
}

#[tokio::test]
async fn a_plugin_authorises_by_client_certificate() {
    let site = Site::new().await;
    let (clients, clients_file, alice) = site.clients();
    let bob = clients.leaf(site.dir.path(), "bob", &["bob.clients.test"], -1, 30);
    let ca = &site.ca;
    let upstream = &site.upstream;
    let proxy = site.mtls_proxy(
        &clients_file,
        false,
        "on_plugin_error = \"fail-closed\"\n\
         plugins = [{ name = \"client-cert\", config = { allow = [\"alice.clients.test\"] } }]\n",
        |dir| {
            weir_tests::install_plugin(
                &dir.join("plugins"),
                "client-cert",
                weir_tests::plugins::EXAMPLE_CLIENT_CERT_PLUGIN,
            );
        },
    );
    let as_alice = weir_tests::tls::client_config_with_identity(&ca.pem, &alice);
    let reply = get_tls(as_alice, proxy.addr, "a.test", "/headers")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let headers: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        headers["x-client-identity"][0], "alice.clients.test",
        "{headers}"
    );
    let as_bob = weir_tests::tls::client_config_with_identity(&ca.pem, &bob);
    let reply = get_tls(as_bob, proxy.addr, "a.test", "/").await.unwrap();
    assert_eq!(reply.status, 403);
    let anonymous = client_config(&ca.pem, &["http/1.1"]);
    let reply = get_tls(anonymous, proxy.addr, "a.test", "/").await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(upstream.requests(), 1, "only alice's request went upstream");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_timed_out_and_counted() {
    let Site {
        upstream,
        dir,
        cert,
        ..
    } = Site::new().await;
    let config = format!(
        "[server]\nworkers = 1\n[admin]\naddress = \"127.0.0.1:0\"\n[timeouts]\nheader_read = \"300ms\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{}] }}\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        files(&cert),
        upstream.addr
    );
    let proxy = TestProxy::start_in(dir, &config);
    // Connects and sends nothing: the proxy closes the connection.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("the proxy closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Counted right after the connection is dropped.
    assert_eventually(Duration::from_secs(2), "the timeout counted", || async {
        let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
        metrics
            .contains(
                "weir_tls_handshake_errors_total{listener=\"127.0.0.1:0\",reason=\"timeout\"} 1",
            )
            .then_some(())
            .ok_or(metrics)
    })
    .await;
}

#[tokio::test]
async fn the_admin_api_serves_https_so_its_token_never_crosses_in_clear() {
    let upstream = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let admin = ca.leaf(dir.path(), "admin", &["admin.test"], -1, 30);
    let token = "0123456789abcdef0123456789abcdef";
    // A port of its own, so that its figures are told apart from the
    // proxy listener's (both would be named 127.0.0.1:0).
    let admin_address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "[server]\nworkers = 1\n[admin]\naddress = \"{admin_address}\"\ntoken = \"{token}\"\ntls = {{ certificates = [{}] }}\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        files(&admin),
        upstream.addr
    );
    let proxy = TestProxy::start_in(dir, &config);
    // HTTP/1.1 over TLS, also for a client that offers h2 first.
    let client = client_config(&ca.pem, &["h2", "http/1.1"]);
    let bearer = format!("Bearer {token}");
    let reply = get_tls_with(
        Arc::clone(&client),
        proxy.admin,
        "admin.test",
        "/admin/health",
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(reply.names, ["admin.test"]);
    assert!(reply.body.contains("\"upstreams\""), "{}", reply.body);
    // Without the token, a host name in `Host` is refused, over TLS as in
    // clear (the DNS-rebinding guard).
    let refused = get_tls(client, proxy.admin, "admin.test", "/admin/health")
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    // Its certificate's expiry is watched like a listener's.
    let metrics = get_tls_with(
        client_config(&ca.pem, &["http/1.1"]),
        proxy.admin,
        "admin.test",
        "/metrics",
        &[("authorization", &bearer)],
    )
    .await
    .unwrap()
    .body;
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "weir_tls_certificate_expiry_seconds{{listener=\"{admin_address}\",name=\"admin.test\"}}"
        ))),
        "{metrics}"
    );
    // Plain HTTP to the admin port gets no answer, and its failed handshake
    // is counted under the admin API's address, as a listener's would be.
    assert!(get(&proxy.admin_url("/healthz")).await.is_err());
    let authorized = [("authorization", bearer.as_str())];
    let admin_get = |path: &'static str| {
        let client = client_config(&ca.pem, &["http/1.1"]);
        let address = proxy.admin;
        async move {
            get_tls_with(client, address, "admin.test", path, &authorized)
                .await
                .unwrap()
                .body
        }
    };
    assert_eventually(
        Duration::from_secs(2),
        "the failed handshake is counted",
        || async {
            let metrics = admin_get("/metrics").await;
            let prefix = format!("weir_tls_handshake_errors_total{{listener=\"{admin_address}\"");
            metrics
                .lines()
                .any(|l| l.starts_with(&prefix) && !l.ends_with(" 0"))
                .then_some(())
                .ok_or(metrics)
        },
    )
    .await;
    // The health report lists the admin API with its certificate.
    let health: serde_json::Value =
        serde_json::from_str(&admin_get("/admin/health").await).unwrap();
    let listed = health["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["listener"] == admin_address.to_string())
        .unwrap_or_else(|| panic!("admin API not among the listeners: {health}"));
    assert_eq!(listed["tls"]["certificates"][0]["names"][0], "admin.test");
    assert!(
        listed["tls_handshake_errors_total"]
            .as_object()
            .unwrap()
            .values()
            .any(|n| n.as_u64() > Some(0)),
        "{listed}"
    );
    // The proxy's own listener is unaffected.
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
}
