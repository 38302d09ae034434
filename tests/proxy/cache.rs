//! The cache plugin through the real proxy: the host tees a response into its
//! store while streaming it to the client, and serves hits without the
//! upstream.

use weir_tests::upstream::pattern_byte;
use weir_tests::{TestUpstream, config_head, get, plugins};

use super::plugins::{proxy_with, statuses};

fn cached_route(upstream: &TestUpstream) -> String {
    format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\nplugins = [{{ name = \"cache\" }}]\n",
        config_head(),
        upstream.addr
    )
}

#[tokio::test]
async fn a_fresh_response_is_served_from_the_store() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_with(&[("cache", plugins::CACHE)], &cached_route(&upstream));
    let first = get(&proxy.url("/cacheable/60/64")).await.unwrap();
    assert_eq!(first.status, 200);
    let status = first.header("cache-status").unwrap_or("").to_owned();
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "{status}"
    );
    // The store is filled as the body finishes streaming; the next request hits.
    let mut hit = get(&proxy.url("/cacheable/60/64")).await.unwrap();
    for _ in 0..50 {
        if hit
            .header("cache-status")
            .is_some_and(|s| s.contains("hit"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        hit = get(&proxy.url("/cacheable/60/64")).await.unwrap();
    }
    assert!(
        hit.header("cache-status").unwrap().contains("hit"),
        "{:?}",
        hit.headers
    );
    assert!(hit.header("age").is_some());
    assert_eq!(hit.body, first.body);
    assert_eq!(upstream.requests(), 1, "hits never reach the upstream");
    // A different URL is a different key.
    get(&proxy.url("/cacheable/60/65")).await.unwrap();
    assert_eq!(upstream.requests(), 2);
    let status = &statuses(&proxy, "cache").await[0].1;
    assert!(status["hits"].as_u64().unwrap() >= 1, "{status}");
}

#[tokio::test]
async fn a_large_body_is_teed_into_the_store_while_streaming() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy_with(&[("cache", plugins::CACHE)], &cached_route(&upstream));
    let size = 3 * 1024 * 1024;
    let url = proxy.url(&format!("/cacheable/60/{size}"));
    let first = get(&url).await.unwrap();
    assert_eq!(first.body.len(), size);
    assert!(
        first
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(i))
    );
    let mut second = get(&url).await.unwrap();
    for _ in 0..50 {
        if upstream.requests() == 1
            && second
                .header("cache-status")
                .is_some_and(|s| s.contains("hit"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        second = get(&url).await.unwrap();
    }
    assert!(
        second.header("cache-status").unwrap_or("").contains("hit"),
        "{:?}",
        second.headers
    );
    assert!(second.body == first.body, "the stored body differs");
}
