//! Routing precedence, header rewriting and the no-route answer.

use http::Request;
use http_body_util::Full;
use weir_tests::{TestProxy, TestUpstream, client, config_head, get, send};

#[tokio::test]
async fn routes_by_host_longest_prefix_and_method() {
    let names = ["root", "api", "api-v2", "api-post", "example"];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(TestUpstream::start(name).await);
    }
    let mut text = config_head();
    for (name, upstream) in names.iter().zip(&upstreams) {
        text.push_str(&format!(
            "[upstreams.{name}]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ));
    }
    text.push_str(
        r#"
[[routes]]
upstream = "root"
[[routes]]
path_prefix = "/api"
upstream = "api"
[[routes]]
path_prefix = "/api/v2"
upstream = "api-v2"
[[routes]]
path_prefix = "/api"
methods = ["POST"]
upstream = "api-post"
[[routes]]
host = "example.com"
upstream = "example"
"#,
    );
    let proxy = TestProxy::start(&text);
    let client = client();
    let cases = [
        ("GET", None, "/", "root"),
        ("GET", None, "/api/users", "api"),
        ("GET", None, "/api/v2/users", "api-v2"),
        ("POST", None, "/api/users", "api-post"),
        ("POST", None, "/api/v2/users", "api-v2"),
        ("GET", Some("example.com"), "/api/users", "example"),
        ("GET", Some("EXAMPLE.com:8080"), "/", "example"),
        ("GET", Some("other.org"), "/apix", "api"),
    ];
    for (method, host, path, expected) in cases {
        let mut request = Request::builder().method(method).uri(proxy.url(path));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let reply = send(&client, request.body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{method} {host:?} {path}");
        assert_eq!(
            reply.header("x-upstream"),
            Some(expected),
            "{method} {host:?} {path}"
        );
    }
}

#[tokio::test]
async fn no_route_is_a_404_with_proxy_status() {
    let upstream = TestUpstream::start("only").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\npath_prefix = \"/only\"\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ));
    let reply = get(&proxy.url("/elsewhere")).await.unwrap();
    assert_eq!(reply.status, 404);
    assert!(
        reply
            .header("proxy-status")
            .unwrap()
            .contains("error=destination_not_found")
    );
    assert_eq!(reply.text(), "no route matches this request\n");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn request_and_response_headers_are_rewritten() {
    let upstream = TestUpstream::start("h").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ));
    let request = Request::get(proxy.url("/headers"))
        .header("host", "app.example:8443")
        .header("connection", "x-hop, keep-alive")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-forwarded-for", "192.0.2.7")
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    for gone in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["x-end-to-end"][0], "kept");
    assert_eq!(seen["host"][0], "app.example:8443");
    assert_eq!(seen["x-forwarded-for"][0], "192.0.2.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"][0], "http");
    assert_eq!(seen["x-forwarded-host"][0], "app.example:8443");
    assert_eq!(seen["via"][0], "1.1 weir");
    // The response gained a Via too.
    assert_eq!(reply.header("via"), Some("1.1 weir"));
}

#[tokio::test]
async fn admin_upstreams_shows_endpoint_figures() {
    let upstream = TestUpstream::start("u").await;
    let dead = weir_tests::upstream::refused_addr();
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{}\", {{ address = \"{dead}\", weight = 2 }}]\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ));
    for _ in 0..6 {
        get(&proxy.url("/slow/5")).await.unwrap();
    }
    let json: serde_json::Value = serde_json::from_slice(
        &get(&proxy.admin_url("/admin/upstreams"))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let endpoints = json["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    let live = &endpoints[0];
    assert_eq!(live["address"], upstream.addr.to_string());
    assert_eq!(live["requests"], 2, "weights 1:2 over 6 requests: {json}");
    assert_eq!(live["failures"], 0);
    assert_eq!(live["in_flight"], 0);
    assert!(live["latency_ewma_ms"].as_f64().unwrap() >= 5.0, "{json}");
    assert_eq!(endpoints[1]["failures"], 4, "{json}");
    assert_eq!(endpoints[1]["weight"], 2);
    assert_eq!(endpoints[1]["source"], "static");
}
