//! `on_end`'s flags through the real proxy, read back from the counter test
//! plugin's `status()`: completed, cancelled (the client went away), timed
//! out (the route's timeout), client error (a malformed body).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::{TestProxy, TestUpstream, assert_eventually, config_head, raw_exchange};

use super::plugins::{proxy_with, statuses};

async fn counts(proxy: &TestProxy) -> serde_json::Value {
    statuses(proxy, "counter").await[0].1.clone()
}

async fn expect(proxy: &TestProxy, field: &'static str, value: u64) {
    assert_eventually(Duration::from_secs(5), field, || async {
        let c = counts(proxy).await;
        if c[field] == value {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn on_end_flags_tell_the_truth() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\ntimeout = \"300ms\"\nplugins = [{{ name = \"counter\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[("counter", weir_tests::plugins::COUNTER)], &config);

    // Completed: a plain request, its body read to the end.
    let reply = raw_exchange(
        proxy.addr,
        b"GET /big/100000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(reply.status, 200);
    // A body-less answer (HEAD) completes too.
    let reply = raw_exchange(
        proxy.addr,
        b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(reply.status, 200);
    expect(&proxy, "completed", 2).await;
    assert_eq!(counts(&proxy).await["cancelled"], 0);

    // Timed out: the upstream is slower than the route's 300 ms.
    let reply = raw_exchange(
        proxy.addr,
        b"GET /slow/2000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text);
    expect(&proxy, "timed_out", 1).await;

    // Cancelled: the client goes away while the upstream thinks.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow/250 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    expect(&proxy, "cancelled", 1).await;

    // Client error: the body breaks after the head went upstream.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    stream.write_all(b"zz\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    expect(&proxy, "client_errors", 1).await;

    let c = counts(&proxy).await;
    assert_eq!(
        c["requests"], c["ends"],
        "every on_request has its on_end: {c}"
    );
    assert_eq!(c["completed"], 2, "{c}");
    assert_eq!(c["cancelled"], 1, "{c}");
    assert_eq!(c["timed_out"], 1, "{c}");
}
