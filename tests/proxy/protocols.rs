//! Connection handling: keep-alive pooling to the upstream, h2c from clients
//! and to upstreams, WebSocket upgrades, malformed requests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weir_tests::upstream::WebSocketEcho;
use weir_tests::{TestProxy, TestUpstream, client, config_head, get, h2_client, send};

fn proxy_to(upstream: std::net::SocketAddr, upstream_extra: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{upstream}\"]\n{upstream_extra}\n[[routes]]\nupstream = \"u\"\n",
        config_head()
    ))
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    // Fresh client connections each time: only the proxy's pool can reuse.
    for _ in 0..50 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    assert_eq!(upstream.requests(), 50);
    assert_eq!(
        upstream.connections(),
        1,
        "sequential requests should share one pooled connection"
    );
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    let client = h2_client();
    for _ in 0..5 {
        let reply = send(
            &client,
            Request::get(proxy.url("/headers"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, http::Version::HTTP_2);
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        // Spoken to the upstream as HTTP/1.1, with the :authority as Host.
        assert_eq!(seen["_version"], "HTTP/1.1");
        assert_eq!(seen["host"][0], proxy.addr.to_string());
        assert_eq!(seen["via"][0], "2 weir");
    }
}

#[tokio::test]
async fn h2c_upstreams_are_spoken_to_with_prior_knowledge() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "protocol = \"h2c\"");
    for _ in 0..5 {
        let reply = get(&proxy.url("/headers")).await.unwrap();
        assert_eq!(reply.status, 200);
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(seen["_version"], "HTTP/2.0");
    }
    assert_eq!(upstream.connections(), 1, "one multiplexed h2 connection");
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let echo = WebSocketEcho::start().await;
    let proxy = proxy_to(echo.addr, "");
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async(format!("ws://{}/chat", proxy.addr), stream)
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "weir"] {
        socket.send(Message::text(text)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(text));
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::binary(vec![0u8, 1, 2, 255]));
    socket.close(None).await.unwrap();
}

async fn raw_exchange(proxy: &TestProxy, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_400_and_leave_other_requests_alone() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    // A keep-alive connection in use before, during and after the bad requests.
    let client = client();
    let ok = send(
        &client,
        Request::get(proxy.url("/")).body(Full::default()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);

    let bad_inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"NOT-A-REQUEST\r\n\r\n",
    ];
    for bad in bad_inputs {
        let answer = raw_exchange(&proxy, bad).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?} → {answer:?}");
    }
    // A valid request pipelined before a bad one is still answered.
    let answer = raw_exchange(
        &proxy,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nBad\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer:?}");

    let ok = send(
        &client,
        Request::get(proxy.url("/")).body(Full::default()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(metrics.contains("weir_bad_requests_total 5"), "{metrics}");
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let upstream = TestUpstream::start("u").await;
    let proxy = TestProxy::start(&format!(
        "{}[limits]\nmax_header_bytes = 8192\nmax_headers = 10\n[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let answer = raw_exchange(&proxy, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw_exchange(&proxy, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let upstream = TestUpstream::start("u").await;
    let proxy = TestProxy::start(&format!(
        "{}[timeouts]\nidle = \"300ms\"\n[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ));
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more is sent: the proxy closes the connection after the idle timeout.
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "expected the connection to be closed");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    // A busy connection (a slow request in flight) is not idle.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow/600 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
