//! What the proxy's HTTP/1.1 client makes of the bytes an upstream sends:
//! every way of delimiting a body reaches the client whole, a connection is
//! reused only when the upstream's framing and `Connection` allow it, and
//! framing that could be read two ways is refused or defused.

use std::time::Duration;

use weir_tests::upstream::{Misbehaviour, RawPeer};
use weir_tests::{TestProxy, config_head, get, raw_exchange};

fn proxy_to(addr: std::net::SocketAddr) -> TestProxy {
    TestProxy::start(&format!(
        "{}[timeouts]\nrequest = \"2s\"\n[upstreams.u]\nendpoints = [\"{addr}\"]\n[[routes]]\nupstream = \"u\"\n",
        config_head()
    ))
}

async fn peer_saying(bytes: &'static [u8], then_close: bool) -> RawPeer {
    RawPeer::start(Misbehaviour::Say { bytes, then_close }).await
}

#[tokio::test]
async fn a_chunked_answer_reaches_the_client_with_its_trailers_and_keeps_the_connection() {
    let peer = peer_saying(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nx-sum: 9\r\n\r\n",
        false,
    )
    .await;
    let proxy = proxy_to(peer.addr);
    for _ in 0..3 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "wikipedia");
    }
    assert_eq!(peer.accepted(), 1, "one connection for all three");
    // A client that accepts trailers gets them, still chunked.
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: a\r\nte: trailers\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert!(raw.text.contains("x-sum: 9"), "{}", raw.text);
}

#[tokio::test]
async fn a_body_delimited_by_close_reaches_the_client_whole() {
    let peer = peer_saying(
        b"HTTP/1.1 200 OK\r\nx-up: 1\r\n\r\nuntil the very end",
        true,
    )
    .await;
    let proxy = proxy_to(peer.addr);
    for round in 1..=2 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "until the very end");
        assert_eq!(peer.accepted(), round, "such a connection cannot be reused");
    }
}

#[tokio::test]
async fn connection_close_and_http_1_0_answers_are_not_reused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ] {
        let peer = peer_saying(answer, false).await;
        let proxy = proxy_to(peer.addr);
        for _ in 0..2 {
            let reply = get(&proxy.url("/")).await.unwrap();
            assert_eq!(reply.text(), "ok");
        }
        assert_eq!(peer.accepted(), 2, "{}", String::from_utf8_lossy(answer));
    }
    // HTTP/1.0 with keep-alive asked for is reused.
    let peer = peer_saying(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
        false,
    )
    .await;
    let proxy = proxy_to(peer.addr);
    for _ in 0..2 {
        assert_eq!(get(&proxy.url("/")).await.unwrap().text(), "ok");
    }
    assert_eq!(peer.accepted(), 1);
}

#[tokio::test]
async fn a_chunked_answer_that_also_claims_a_length_loses_the_length_and_its_connection() {
    let peer = peer_saying(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        false,
    )
    .await;
    let proxy = proxy_to(peer.addr);
    for round in 1..=2 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "abc");
        assert_ne!(
            reply.header("content-length"),
            Some("100"),
            "the smuggled length is not passed on"
        );
        assert_eq!(peer.accepted(), round);
    }
}

#[tokio::test]
async fn ambiguous_or_oversized_heads_are_protocol_errors() {
    let huge: &'static [u8] = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(500 * 1024)
    )
    .leak()
    .as_bytes();
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n folded: header\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: a\x00b\r\ncontent-length: 0\r\n\r\n",
        huge,
    ] {
        let peer = peer_saying(answer, true).await;
        let proxy = proxy_to(peer.addr);
        let reply = get(&proxy.url("/")).await.unwrap();
        let shown = String::from_utf8_lossy(&answer[..answer.len().min(60)]).into_owned();
        assert_eq!(reply.status, 502, "{shown}");
        assert!(
            reply
                .header("proxy-status")
                .unwrap_or_default()
                .starts_with("weir; error=http_protocol_error"),
            "{shown}: {:?}",
            reply.header("proxy-status")
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_or_malformed_mid_way_is_not_passed_off_as_whole() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ] {
        let peer = peer_saying(answer, true).await;
        let proxy = proxy_to(peer.addr);
        // The head went out before the body broke: the client sees the
        // response fail rather than end, and the next request is whole.
        let shown = String::from_utf8_lossy(answer).into_owned();
        assert!(get(&proxy.url("/")).await.is_err(), "{shown}");
    }
}

#[tokio::test]
async fn interim_answers_are_passed_over() {
    let peer = peer_saying(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
        false,
    )
    .await;
    let proxy = proxy_to(peer.addr);
    let reply = get(&proxy.url("/")).await.unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(reply.text(), "done");
}

#[tokio::test]
async fn bytes_after_a_response_are_never_read_as_the_next_one() {
    // An upstream that sends more than its response declares (a desync
    // attempt, or a broken server): the extra bytes must not become the
    // answer to another client's request.
    let peer = peer_saying(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
        false,
    )
    .await;
    let proxy = proxy_to(peer.addr);
    for round in 1..=3 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.text(), "ok", "round {round}");
        assert_eq!(
            peer.accepted(),
            round,
            "a connection with leftovers is dropped"
        );
    }
}
