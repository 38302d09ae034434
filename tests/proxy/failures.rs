//! Each upstream failure class becomes its status and `Proxy-Status`, is
//! counted by class, and leaves the proxy serving.

use weir_tests::upstream::{Misbehaviour, RawPeer, Unaccepting, refused_addr};
use weir_tests::{TestProxy, TestUpstream, config_head, get};

fn proxy_to(addr: std::net::SocketAddr, extra: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[timeouts]\nconnect = \"300ms\"\nrequest = \"500ms\"\n[upstreams.u]\nendpoints = [\"{addr}\"]\n[[routes]]\nupstream = \"u\"\n{extra}",
        config_head()
    ))
}

async fn expect_failure(proxy: &TestProxy, status: u16, error: &str, class: &str) {
    let reply = get(&proxy.url("/")).await.unwrap();
    assert_eq!(reply.status, status, "{}", reply.text());
    let proxy_status = reply.header("proxy-status").unwrap();
    assert!(
        proxy_status.starts_with(&format!("weir; error={error}")),
        "{proxy_status}"
    );
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(&format!(
            "weir_upstream_errors_total{{upstream=\"u\",class=\"{class}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weir_requests_total{{route=\"route-0\",status=\"{status}\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn connect_refused_is_502() {
    let proxy = proxy_to(refused_addr(), "");
    expect_failure(&proxy, 502, "connection_refused", "connect_refused").await;
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let peer = Unaccepting::start();
    let proxy = proxy_to(peer.addr, "");
    expect_failure(&proxy, 504, "connection_timeout", "connect_timeout").await;
}

#[tokio::test]
async fn reset_is_502() {
    let peer = RawPeer::start(Misbehaviour::Reset).await;
    let proxy = proxy_to(peer.addr, "");
    expect_failure(&proxy, 502, "connection_terminated", "reset").await;
}

#[tokio::test]
async fn hang_is_a_504_response_timeout() {
    let peer = RawPeer::start(Misbehaviour::Hang).await;
    let proxy = proxy_to(peer.addr, "");
    expect_failure(&proxy, 504, "http_response_timeout", "timeout").await;
}

#[tokio::test]
async fn garbage_is_a_502_protocol_error() {
    let peer = RawPeer::start(Misbehaviour::Garbage).await;
    let proxy = proxy_to(peer.addr, "");
    expect_failure(&proxy, 502, "http_protocol_error", "protocol").await;
}

#[tokio::test]
async fn route_timeout_overrides_the_default() {
    let upstream = TestUpstream::start("slow").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\nhost = \"strict.example\"\ntimeout = \"100ms\"\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ));
    let client = weir_tests::client();
    let strict = http::Request::get(proxy.url("/slow/400"))
        .header("host", "strict.example")
        .body(http_body_util::Full::default())
        .unwrap();
    let reply = weir_tests::send(&client, strict).await.unwrap();
    assert_eq!(reply.status, 504);
    assert!(
        reply
            .header("proxy-status")
            .unwrap()
            .contains("http_response_timeout")
    );
    // The default route's 30 s timeout lets the same slow answer through.
    let reply = get(&proxy.url("/slow/400")).await.unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn upstream_5xx_passes_through_untouched() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_to(upstream.addr, "");
    let reply = get(&proxy.url("/status/503")).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("proxy-status"), None);
    assert_eq!(reply.header("x-upstream"), Some("u"));
}
