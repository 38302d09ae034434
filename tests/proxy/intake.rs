//! The strict HTTP/1 intake through the real proxy: every refusal on a route
//! without plugins and on one with the whole shipped chain, each answered
//! with its status, the connection closed and nothing sent upstream; and
//! bad bodies that can never open a breaker, eject an endpoint or spend a
//! retry.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use weir_tests::{TestProxy, TestUpstream, config_head, get, raw_exchange, read_exchange};

use super::plugins::{proxy_with, statuses};
use super::policies::ALL;

/// Hosts of the two routes every case runs on.
const PLAIN: &str = "plain.test";
const CHAINED: &str = "chain.test";

async fn proxy_and_upstream() -> (TestProxy, TestUpstream) {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        r#"{}[timeouts]
header_read = "400ms"
body_idle = "400ms"
[upstreams.u]
endpoints = ["{}"]
[[routes]]
name = "plain"
host = "{PLAIN}"
upstream = "u"
[[routes]]
name = "chained"
host = "{CHAINED}"
upstream = "u"
plugins = [
  {{ name = "timeout",  config = {{ deadline = "5s" }} }},
  {{ name = "throttle", config = {{ rate = 100000, max_concurrent = 1000 }} }},
  {{ name = "breaker",  config = {{ failure_threshold = 3, open_timeout = "30s" }} }},
  {{ name = "retry",    config = {{ max_attempts = 3, retry_on = ["connect-failure", "reset", "protocol", "timeout", "5xx"], backoff_base = "1ms", backoff_max = "2ms" }} }},
  {{ name = "cache" }},
  {{ name = "balancer", config = {{ algorithm = "round_robin" }} }},
]
"#,
        config_head(),
        upstream.addr
    );
    (proxy_with(&ALL, &config), upstream)
}

/// One refusal: the request bytes (`{host}` stands for the route's host)
/// and the status the proxy must answer with.
struct Case {
    name: &'static str,
    request: String,
    status: u16,
}

fn case(name: &'static str, request: impl Into<String>, status: u16) -> Case {
    Case {
        name,
        request: request.into(),
        status,
    }
}

fn cases() -> Vec<Case> {
    let post = |headers: &str, body: &str| {
        format!("POST /p HTTP/1.1\r\nHost: {{host}}\r\n{headers}\r\n{body}")
    };
    vec![
        // Framing.
        case(
            "length and chunked",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        case(
            "chunked and length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        case(
            "chunked on HTTP/1.0",
            "POST /p HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "chunked in capitals",
            post("Transfer-Encoding: Chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "chunked twice in a list",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "two chunked fields",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        case(
            "chunked with a trailing space",
            post("Transfer-Encoding: chunked \r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "chunked after a tab",
            post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "chunked folded",
            post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "an unknown coding",
            post("Transfer-Encoding: gzip\r\n", ""),
            501,
        ),
        case(
            "identity coding",
            post("Transfer-Encoding: identity\r\n", ""),
            501,
        ),
        case(
            "a signed length",
            post("Content-Length: +3\r\n", "abc"),
            400,
        ),
        case(
            "a negative length",
            post("Content-Length: -3\r\n", "abc"),
            400,
        ),
        case("a hex length", post("Content-Length: 0x3\r\n", "abc"), 400),
        case(
            "a list of equal lengths",
            post("Content-Length: 3, 3\r\n", "abc"),
            400,
        ),
        case(
            "two equal length fields",
            post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
            400,
        ),
        case(
            "a length with inner space",
            post("Content-Length: 1 2\r\n", "abc"),
            400,
        ),
        case(
            "a length with a trailing space",
            post("Content-Length: 3 \r\n", "abc"),
            400,
        ),
        case("an empty length", post("Content-Length: \r\n", ""), 400),
        case(
            "a length past u64",
            post("Content-Length: 99999999999999999999\r\n", ""),
            400,
        ),
        // Syntax.
        case(
            "space before a colon",
            "GET / HTTP/1.1\r\nHost : {host}\r\n\r\n",
            400,
        ),
        case(
            "tab before a colon",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A\t: 1\r\n\r\n",
            400,
        ),
        case(
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: 1\r\n 2\r\n\r\n",
            400,
        ),
        case(
            "whitespace before the first field",
            "GET / HTTP/1.1\r\n Host: {host}\r\n\r\n",
            400,
        ),
        case(
            "bare LF after the request line",
            "GET / HTTP/1.1\nHost: {host}\r\n\r\n",
            400,
        ),
        case(
            "bare LF ending the head",
            "GET / HTTP/1.1\r\nHost: {host}\n\n",
            400,
        ),
        case(
            "NUL in a value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\0b\r\n\r\n",
            400,
        ),
        case(
            "a control character in a value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\x01b\r\n\r\n",
            400,
        ),
        case(
            "DEL in a value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\x7fb\r\n\r\n",
            400,
        ),
        case(
            "a lone CR in a value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\rb\r\n\r\n",
            400,
        ),
        case(
            "a field without a colon",
            "GET / HTTP/1.1\r\nHost: {host}\r\nNoColon\r\n\r\n",
            400,
        ),
        case(
            "a bad character in a name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX(A): 1\r\n\r\n",
            400,
        ),
        case(
            "a bad method",
            "G@T / HTTP/1.1\r\nHost: {host}\r\n\r\n",
            400,
        ),
        case(
            "two spaces in the request line",
            "GET  / HTTP/1.1\r\nHost: {host}\r\n\r\n",
            400,
        ),
        case(
            "a space in the target",
            "GET /a b HTTP/1.1\r\nHost: {host}\r\n\r\n",
            400,
        ),
        case(
            "a relative target",
            "GET a HTTP/1.1\r\nHost: {host}\r\n\r\n",
            400,
        ),
        // Host.
        case(
            "no Host on HTTP/1.1",
            "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
            400,
        ),
        case(
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.test\r\n\r\n",
            400,
        ),
        case(
            "two equal Host fields",
            "GET / HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n",
            400,
        ),
        case("an empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        case(
            "an absolute target naming another host",
            "GET http://internal.example/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
            400,
        ),
        // Versions.
        case("HTTP/0.9", "GET /\r\n", 505),
        case(
            "HTTP/2.0 in an HTTP/1 request line",
            "GET / HTTP/2.0\r\nHost: {host}\r\n\r\n",
            505,
        ),
        case("HTTP/1.2", "GET / HTTP/1.2\r\nHost: {host}\r\n\r\n", 505),
        case(
            "a lower-case version",
            "GET / http/1.1\r\nHost: {host}\r\n\r\n",
            400,
        ),
        case(
            "CONNECT",
            "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n",
            501,
        ),
        // Sizes and time.
        case(
            "a request line over 8 KiB",
            format!(
                "GET /{} HTTP/1.1\r\nHost: {{host}}\r\n\r\n",
                "a".repeat(9000)
            ),
            414,
        ),
        case(
            "a head over 64 KiB",
            format!(
                "GET / HTTP/1.1\r\nHost: {{host}}\r\nX-Big: {}\r\n\r\n",
                "b".repeat(70_000)
            ),
            431,
        ),
        case(
            "too many fields",
            format!(
                "GET / HTTP/1.1\r\nHost: {{host}}\r\n{}\r\n",
                "X-A: 1\r\n".repeat(101)
            ),
            431,
        ),
        case(
            "a head that never ends",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-A: 1\r\n",
            408,
        ),
        // Bodies already here when the head is judged.
        case(
            "a malformed first chunk",
            post("Transfer-Encoding: chunked\r\n", "zz\r\n\r\n"),
            400,
        ),
        case(
            "a chunk longer than its size",
            post("Transfer-Encoding: chunked\r\n", "3\r\nabcdef\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "a chunk size past u64",
            post("Transfer-Encoding: chunked\r\n", "11111111111111111\r\n"),
            400,
        ),
        case(
            "a chunk size with a space",
            post("Transfer-Encoding: chunked\r\n", "3 \r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "a bare LF after a chunk size",
            post("Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "a control character in a chunk extension",
            post(
                "Transfer-Encoding: chunked\r\n",
                "3;a\x01\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        case(
            "a request smuggled behind a bad chunk",
            post(
                "Transfer-Encoding: chunked\r\n",
                "3\r\nabc\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n",
            ),
            400,
        ),
    ]
}

#[tokio::test]
async fn every_refusal_closes_and_sends_nothing_upstream() {
    let (proxy, upstream) = proxy_and_upstream().await;
    let all = cases();
    assert!(
        all.len() >= 40,
        "the conformance list covers at least 40 cases"
    );
    for host in [PLAIN, CHAINED] {
        // A good request first: the route works, and the pool has a
        // connection a bad request could have used.
        assert_serves(&proxy, host).await;
        for case in &all {
            let before = upstream.bytes_received();
            let request = case.request.replace("{host}", host);
            let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
            assert_eq!(
                reply.status, case.status,
                "{host}: {}: {}",
                case.name, reply.text
            );
            assert!(reply.closed, "{host}: {}: connection left open", case.name);
            assert!(
                reply
                    .text
                    .to_ascii_lowercase()
                    .contains("connection: close"),
                "{host}: {}: {}",
                case.name,
                reply.text
            );
            assert_eq!(
                upstream.bytes_received(),
                before,
                "{host}: {}: bytes reached the upstream",
                case.name
            );
        }
    }
    let metrics = assert_no_upstream_errors(&proxy, "no refusal counts as an upstream error").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_client_errors_total")
                && l.contains("class=\"bad_head\"")
                && !l.ends_with(" 0")),
        "refusals count as client faults"
    );
}

#[tokio::test]
async fn a_refused_request_does_not_affect_the_ones_before_it_or_other_connections() {
    let (proxy, upstream) = proxy_and_upstream().await;
    let before = upstream.requests();
    let pipelined = format!(
        "GET /one HTTP/1.1\r\nHost: {PLAIN}\r\n\r\nGET /two HTTP/1.1\r\nHost: {PLAIN}\r\nHost: {PLAIN}\r\n\r\nGET /three HTTP/1.1\r\nHost: {PLAIN}\r\n\r\n"
    );
    let reply = raw_exchange(proxy.addr, pipelined.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.closed);
    let statuses: Vec<&str> = reply
        .text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &reply.text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{}", reply.text);
    assert_eq!(
        upstream.requests(),
        before + 1,
        "only the first reached the upstream"
    );
    let other = get(&format!("http://{}/", proxy.addr)).await;
    // No route for the client's default host; the connection still works.
    assert_eq!(other.unwrap().status, 404);
}

#[tokio::test]
async fn an_absolute_form_target_routes_and_forwards_on_one_authority() {
    let (proxy, _upstream) = proxy_and_upstream().await;
    let request = format!(
        "GET http://{PLAIN}/headers HTTP/1.1\r\nHost: {PLAIN}\r\nConnection: close\r\n\r\n"
    );
    let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.text[reply.text.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        body.contains(&format!("\"host\":\"{PLAIN}\"")) || body.contains(PLAIN),
        "{body}"
    );
    // HTTP/1.0 without Host: the target's authority is the one forwarded.
    let request = format!("GET http://{PLAIN}/headers HTTP/1.0\r\n\r\n");
    let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains(PLAIN), "{}", reply.text);
}

/// Sends a chunked request whose first chunk is good and whose second,
/// written a moment later (after the head went upstream), is not.
async fn bad_second_chunk(proxy: &TestProxy, host: &str) -> weir_tests::RawExchange {
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /count HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _ = stream.write_all(b"zz\r\n\r\n").await;
    read_exchange(&mut stream, Duration::from_secs(5)).await
}

/// Asserts that `/metrics` counts no upstream error of any class.
async fn assert_no_upstream_errors(proxy: &TestProxy, why: &str) -> String {
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("weir_upstream_errors_total") && !l.ends_with(" 0")),
        "{why}:\n{metrics}"
    );
    metrics
}

/// Asserts that a plain GET for `host` is served 200.
async fn assert_serves(proxy: &TestProxy, host: &str) {
    let good = raw_exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(good.status, 200, "{host}: {}", good.text);
}

#[tokio::test]
async fn a_body_that_breaks_after_the_head_went_upstream_is_the_clients_fault() {
    let (proxy, _upstream) = proxy_and_upstream().await;
    for host in [PLAIN, CHAINED] {
        let reply = bad_second_chunk(&proxy, host).await;
        assert_eq!(reply.status, 400, "{host}: {}", reply.text);
        assert!(reply.closed, "{host}");
        assert!(reply.text.contains("http_request_error"), "{}", reply.text);
    }
    let metrics =
        assert_no_upstream_errors(&proxy, "a client's bad body is no upstream error").await;
    assert!(metrics.contains("class=\"bad_body\"} 2"), "{metrics}");
}

#[tokio::test]
async fn a_stalled_body_is_refused_and_counted_as_the_clients() {
    let (proxy, _upstream) = proxy_and_upstream().await;
    for host in [PLAIN, CHAINED] {
        let request =
            format!("POST /count HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\nabc");
        let reply = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(reply.status, 408, "{host}: {}", reply.text);
        assert!(reply.closed);
    }
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(metrics.contains("class=\"body_stalled\"} 2"), "{metrics}");
    let health: serde_json::Value =
        serde_json::from_slice(&get(&proxy.admin_url("/admin/health")).await.unwrap().body)
            .unwrap();
    let listener = &health["listeners"][0];
    assert_eq!(
        listener["client_errors_total"]["body_stalled"], 2,
        "{health}"
    );
}

#[tokio::test]
async fn a_thousand_bad_bodies_leave_the_breaker_closed_and_every_endpoint_in() {
    let (proxy, upstream) = proxy_and_upstream().await;
    let proxy = std::sync::Arc::new(proxy);
    for batch in 0..50 {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let proxy = std::sync::Arc::clone(&proxy);
            tasks.push(tokio::spawn(async move {
                match (batch * 20 + i) % 3 {
                    // Malformed from the first byte: refused by the intake.
                    0 => {
                        let request = format!(
                            "POST /p HTTP/1.1\r\nHost: {CHAINED}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"
                        );
                        raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
                    }
                    // Breaks after the head went upstream.
                    1 => {
                        bad_second_chunk(&proxy, CHAINED).await;
                    }
                    // The client goes away mid-body.
                    _ => {
                        let mut stream =
                            tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
                        let request = format!(
                            "POST /count HTTP/1.1\r\nHost: {CHAINED}\r\nContent-Length: 100\r\n\r\nabc"
                        );
                        stream.write_all(request.as_bytes()).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        drop(stream);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    let breaker = &statuses(&proxy, "breaker").await[0].1;
    assert_eq!(breaker["state"], "closed", "{breaker}");
    let retry = &statuses(&proxy, "retry").await[0].1;
    assert_eq!(retry["retries"], 0, "{retry}");
    let upstreams: serde_json::Value = serde_json::from_slice(
        &get(&proxy.admin_url("/admin/upstreams"))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let endpoint = &upstreams["upstreams"][0]["endpoints"][0];
    assert_eq!(endpoint["healthy"], true, "{upstreams}");
    assert_eq!(endpoint["ejections"], 0, "{upstreams}");
    assert_eq!(endpoint["failures"], 0, "{upstreams}");
    assert_no_upstream_errors(&proxy, "a client's bad body is no upstream error").await;
    // And the route serves.
    assert_serves(&proxy, CHAINED).await;
    drop(upstream);
}
