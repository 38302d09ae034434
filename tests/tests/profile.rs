//! The CPU profile endpoint. In its own test binary (its own process)
//! because the profiler's sample tables add tens of MiB of resident memory,
//! which would skew the streaming tests that measure the process's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use weir_tests::{TestProxy, TestUpstream, config_head, get};

#[tokio::test]
async fn profile_endpoint_returns_parseable_profiles() {
    use pprof::protos::Message as _;
    let up = TestUpstream::start("up").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        config_head(),
        up.addr
    ));
    for bad in ["seconds=0", "seconds=61", "seconds=abc", "format=gif"] {
        let reply = get(&proxy.admin_url(&format!("/debug/pprof/profile?{bad}")))
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
    }
    // Traffic while profiling, so that there are samples.
    let stop = Arc::new(AtomicBool::new(false));
    let url = proxy.url("/");
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = weir_tests::client();
            while !stop.load(Ordering::SeqCst) {
                let request = http::Request::get(&url).body(Full::default()).unwrap();
                let _ = weir_tests::send(&client, request).await;
            }
        })
    };
    let svg = get(&proxy.admin_url("/debug/pprof/profile?seconds=1"))
        .await
        .unwrap();
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    let text = svg.text();
    assert!(
        text.trim_start().starts_with("<?xml") || text.trim_start().starts_with("<svg"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.contains("<svg") && text.trim_end().ends_with("</svg>"));

    let pb = get(&proxy.admin_url("/debug/pprof/profile?seconds=1&format=pb"))
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(pb.status, 200, "{}", pb.text());
    let profile = pprof::protos::Profile::decode(pb.body.as_ref()).unwrap();
    assert!(
        !profile.sample_type.is_empty(),
        "a CPU profile has a sample type"
    );
    assert!(!profile.string_table.is_empty());
    // Not on the proxy listener.
    let reply = get(&proxy.url("/debug/pprof/profile?seconds=1"))
        .await
        .unwrap();
    assert_ne!(reply.header("content-type"), Some("image/svg+xml"));
}
