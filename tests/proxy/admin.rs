//! The admin API's access rules through the real server: changes need the
//! token or JSON, cross-site and rebound requests are refused, a token
//! guards changes and profiles (and everything off loopback), and secrets
//! never show on `/admin/config`.

use http::Request;
use http_body_util::Full;
use weir_tests::{Reply, TestProxy, TestUpstream, client, send};

const TOKEN: &str = "s3cr3t-admin-token-0123456789";

async fn call(proxy: &TestProxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let url = format!("http://127.0.0.1:{}{path}", proxy.admin.port());
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(Full::default()).unwrap())
        .await
        .unwrap()
}

fn config(admin: &str, extra_admin: &str, upstream: &TestUpstream) -> String {
    format!(
        "[server]\nworkers = 1\n[admin]\naddress = \"{admin}\"\n{extra_admin}\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [plugins]\nredis_url = \"redis://:hunter2@127.0.0.1:1/0\"\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n\
         [upstreams.u.health_check]\npath = \"/healthz?token=probe-secret\"\ninterval = \"1h\"\n\
         [[routes]]\nupstream = \"u\"\n",
        upstream.addr
    )
}

#[tokio::test]
async fn without_a_token_changes_need_json_and_browsers_are_refused() {
    let upstream = TestUpstream::start("u").await;
    let proxy = TestProxy::start(&config("127.0.0.1:0", "", &upstream));
    let json = ("content-type", "application/json");
    // A form or text/plain POST, as a cross-site page could send.
    assert_eq!(call(&proxy, "POST", "/admin/reload", &[]).await.status, 403);
    let plain = [("content-type", "text/plain")];
    assert_eq!(
        call(&proxy, "POST", "/admin/reload", &plain).await.status,
        403
    );
    let cross_site = [json, ("origin", "http://evil.example")];
    assert_eq!(
        call(&proxy, "POST", "/admin/reload", &cross_site)
            .await
            .status,
        403
    );
    // DNS rebinding: a foreign name pointing at 127.0.0.1.
    let rebound = [("host", "evil.example:9901")];
    assert_eq!(
        call(&proxy, "GET", "/admin/config", &rebound).await.status,
        403
    );
    // The operator's curl.
    let applied = call(&proxy, "POST", "/admin/reload", &[json]).await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    assert_eq!(call(&proxy, "GET", "/metrics", &[]).await.status, 200);

    // Secrets are redacted.
    let shown = call(&proxy, "GET", "/admin/config", &[]).await.text();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("probe-secret"), "{shown}");
    assert!(
        shown.contains("redis://:[redacted]@127.0.0.1:1/0"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_token_guards_changes_and_profiles_and_is_never_shown() {
    let upstream = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let proxy = TestProxy::start_in(
        dir,
        &config("127.0.0.1:0", "token_file = \"admin.token\"\n", &upstream),
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let refused = call(
        &proxy,
        "POST",
        "/admin/reload",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"weir-admin\"")
    );
    assert_eq!(
        call(&proxy, "POST", "/admin/reload", &auth).await.status,
        200
    );
    let profile = "/debug/pprof/profile?seconds=1";
    assert_eq!(call(&proxy, "GET", profile, &[]).await.status, 401);
    // Reads on loopback need no token, but a wrong one is refused.
    assert_eq!(call(&proxy, "GET", "/admin/health", &[]).await.status, 200);
    let wrong = [("authorization", "Bearer not-the-token-0000000")];
    assert_eq!(
        call(&proxy, "GET", "/admin/health", &wrong).await.status,
        401
    );
    let shown = call(&proxy, "GET", "/admin/config", &auth).await.text();
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn off_loopback_a_token_is_required_for_everything() {
    let upstream = TestUpstream::start("u").await;
    // Refused without a token, with the reason (as `weir check` shows it).
    let text = config("0.0.0.0:0", "", &upstream);
    let error = weir_proxy::config::Config::parse(&text, std::path::Path::new("weir.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("weir.toml:4:11")
            && error.contains("is not loopback")
            && error.contains("token_file"),
        "{error}"
    );
    // A short token is refused too.
    let short = config("0.0.0.0:0", "token = \"abc\"\n", &upstream);
    let error = weir_proxy::config::Config::parse(&short, std::path::Path::new("weir.toml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("at least 16"), "{error}");

    let proxy = TestProxy::start(&config(
        "0.0.0.0:0",
        &format!("token = \"{TOKEN}\"\n"),
        &upstream,
    ));
    for path in ["/metrics", "/admin/config", "/healthz"] {
        assert_eq!(call(&proxy, "GET", path, &[]).await.status, 401, "{path}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let metrics = call(
        &proxy,
        "GET",
        "/metrics",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(metrics.status, 200);
}
