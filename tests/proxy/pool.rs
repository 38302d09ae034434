//! The upstream connection pool: a connection goes back to its endpoint's
//! idle list when the response body has been read to its end, and only
//! then; idle connections are closed after `pool_idle_timeout` and beyond
//! `pool_max_idle_per_endpoint`; a connection the upstream closed while it
//! idled is never handed a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::upstream::{Misbehaviour, RawPeer};
use weir_tests::{TestProxy, TestUpstream, assert_eventually, client, config_head, get, send};

fn proxy_to(upstream: std::net::SocketAddr, upstream_extra: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{upstream}\"]\n{upstream_extra}\n[[routes]]\nupstream = \"u\"\n",
        config_head()
    ))
}

async fn open_connections(proxy: &TestProxy) -> u64 {
    let reply = get(&proxy.admin_url("/admin/health")).await.unwrap();
    let health: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    health["upstreams"][0]["connections"]["open"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let peer = RawPeer::start(Misbehaviour::AnswerThenClose).await;
    let proxy = proxy_to(peer.addr, "");
    for round in 1..=3 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        assert_eq!(reply.text(), "ok");
        // The upstream hangs up 50 ms after answering.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(peer.accepted(), 3, "a fresh connection after each hang-up");
}

#[tokio::test]
async fn idle_connections_close_after_the_pool_idle_timeout() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "pool_idle_timeout = \"300ms\"");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(open_connections(&proxy).await, 1);
    assert_eventually(
        Duration::from_secs(5),
        "the idle connection closes",
        || async {
            match upstream.closed() {
                1 => Ok(()),
                n => Err(format!("{n} closed")),
            }
        },
    )
    .await;
    assert_eq!(open_connections(&proxy).await, 0);
    // And the next request opens a new one.
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn no_more_than_pool_max_idle_per_endpoint_stay_open() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "pool_max_idle_per_endpoint = 2");
    let client = client();
    let requests = (0..6).map(|_| {
        send(
            &client,
            http::Request::get(proxy.url("/slow/300"))
                .body(http_body_util::Full::default())
                .unwrap(),
        )
    });
    for reply in futures_util::future::join_all(requests).await {
        assert_eq!(reply.unwrap().status, 200);
    }
    assert_eq!(
        upstream.connections(),
        6,
        "six at once need six connections"
    );
    assert_eventually(Duration::from_secs(5), "the surplus closes", || async {
        match upstream.closed() {
            4 => Ok(()),
            n => Err(format!("{n} closed")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.closed(), 4, "two stay idle");
    assert_eq!(open_connections(&proxy).await, 2);
    // The two are used again.
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    }
    assert_eq!(upstream.connections(), 6);
}

#[tokio::test]
async fn empty_bodies_give_the_connection_back() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    let client = client();
    for path in ["/status/204", "/status/304", "/"] {
        for _ in 0..5 {
            let request = http::Request::head(proxy.url(path))
                .body(http_body_util::Full::default())
                .unwrap();
            let reply = send(&client, request).await.unwrap();
            assert!(reply.body.is_empty());
        }
    }
    assert_eq!(upstream.requests(), 15);
    assert_eq!(
        upstream.connections(),
        1,
        "one connection for every exchange"
    );
}

#[tokio::test]
async fn a_body_the_client_abandons_closes_its_connection() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    // A client reads a little of a large body, then hangs up.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /big/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(n > 0);
    drop(stream);
    // Its upstream connection carries unread bytes: closed, never reused.
    assert_eventually(Duration::from_secs(5), "the connection closes", || async {
        match upstream.closed() {
            1 => Ok(()),
            n => Err(format!("{n} closed")),
        }
    })
    .await;
    for _ in 0..3 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "u");
    }
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn an_early_answer_to_a_large_upload_is_passed_on_and_leaves_the_pool_sound() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    let client = client();
    // The upstream answers `/status/201` without reading the 4 MB body and
    // closes the connection while the proxy is still writing it: the answer
    // is passed on (as nginx would), not the broken pipe.
    let big = http::Request::post(proxy.url("/status/201"))
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            4 << 20
        ])))
        .unwrap();
    let reply = send(&client, big).await.unwrap();
    assert_eq!(
        reply.status,
        201,
        "{:?}",
        reply.header("proxy-status").unwrap_or_default()
    );
    // That connection is never handed another request: the next exchanges
    // are whole and get their own answers.
    for _ in 0..5 {
        let reply = get(&proxy.url("/headers")).await.unwrap();
        assert_eq!(reply.status, 200);
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(seen["_version"], "HTTP/1.1");
    }
}
