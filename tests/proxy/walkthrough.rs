//! Replays the resilience example's walkthrough (`examples/resilience`):
//! its `weir.toml` (addresses moved to ephemeral ports), the six shipped
//! policies, three demo instances served in process, and every step of its
//! README — so the outputs the README shows stay the outputs a user gets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weir_tests::{TestProxy, assert_eventually, client, get, install_plugin, send};

use super::plugins::statuses;
use super::policies::ALL;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/resilience");

async fn demo(name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move { weir_examples::demo::serve(listener, &name).await });
    addr
}

/// `POST /control?query` on a demo instance.
async fn control(instance: SocketAddr, query: &str) {
    let request = Request::post(format!("http://{instance}/control?{query}"))
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
}

async fn metric(proxy: &TestProxy, name: &str) -> u64 {
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

async fn breaker(proxy: &TestProxy) -> serde_json::Value {
    statuses(proxy, "breaker").await.remove(0).1
}

/// A user types the steps by hand: the throttle's per-client bucket (burst
/// 10, 20/s) is full again by the next step.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resilience_walkthrough_shows_what_a_run_shows() {
    let instances = [
        demo("demo-1").await,
        demo("demo-2").await,
        demo("demo-3").await,
    ];
    let text = std::fs::read_to_string(format!("{EXAMPLE}/weir.toml"))
        .unwrap()
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:3001", &instances[0].to_string())
        .replace("127.0.0.1:3002", &instances[1].to_string())
        .replace("127.0.0.1:3003", &instances[2].to_string());
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    for (name, wasm) in ALL {
        install_plugin(&plugins, name, wasm);
    }
    let proxy = TestProxy::start_in(dir, &text);
    let url = |path: &str| proxy.url(path);

    // 1. Normal traffic, balanced; the cache says why it forwarded.
    let hello = get(&url("/hello")).await.unwrap();
    assert_eq!(hello.status, 200);
    assert!(
        hello
            .header("x-demo-instance")
            .unwrap()
            .starts_with("demo-")
    );
    assert_eq!(
        hello.header("cache-status"),
        Some("weir; fwd=uri-miss; fwd-status=200; detail=\"no freshness\"")
    );

    // 2. The cache: stored, then a hit the demo does not see.
    let first = get(&url("/cached/page")).await.unwrap();
    let status = first.header("cache-status").unwrap();
    assert!(
        status.starts_with("weir; fwd=uri-miss; fwd-status=200; stored; ttl="),
        "{status}"
    );
    let second = get(&url("/cached/page")).await.unwrap();
    let status = second.header("cache-status").unwrap();
    assert!(status.starts_with("weir; hit; ttl="), "{status}");
    assert!(second.header("age").is_some());
    pause().await;

    // 3. One instance fails: retries hide it. Peak EWMA with two random
    // choices can pass demo-2 over for a while (the README says the count
    // varies), so this sends the README's ten requests and, paced under the
    // throttle's rate, more until one has met demo-2.
    control(instances[1], "fail_percent=100").await;
    let mut retries = 0;
    for i in 1..=100 {
        let reply = get(&url(&format!("/r{i}"))).await.unwrap();
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        retries = metric(&proxy, "weir_plugin_retry_retries_total").await;
        if i >= 10 && retries >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let recovered = metric(&proxy, "weir_plugin_retry_recovered_total").await;
    assert!(
        retries >= 1,
        "demo-2 got no request in 100: the step shows nothing"
    );
    assert_eq!(retries, recovered, "every retry recovered its request");
    pause().await;

    // 4. Everything fails: the breaker opens; answers become local.
    control(instances[0], "fail_percent=100").await;
    control(instances[2], "fail_percent=100").await;
    for i in 1..=15 {
        let reply = get(&url(&format!("/x{i}"))).await.unwrap();
        assert_eq!(reply.status, 503, "request {i}: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = get(&url("/after")).await.unwrap();
    assert_eq!(after.status, 503);
    assert_eq!(after.header("retry-after"), Some("5"));
    assert_eq!(
        after.header("proxy-status"),
        Some("weir; error=destination_unavailable; details=\"circuit breaker open\"")
    );
    let open = breaker(&proxy).await;
    assert_eq!(open["state"], "open", "{open}");
    assert_eq!(open["transitions"]["opened"], 1, "{open}");
    assert!(open["rejected"].as_u64().unwrap() >= 1, "{open}");
    for instance in instances {
        control(instance, "").await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(get(&url("/back")).await.unwrap().status, 200);
    let closed = breaker(&proxy).await;
    assert_eq!(
        closed["transitions"],
        serde_json::json!({"closed": 1, "half_opened": 1, "opened": 1}),
        "{closed}"
    );
    pause().await;

    // 5. The throttle: 100 requests from 20 clients in parallel (one client
    // address): the burst of 10, plus 20/s while they last.
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|worker| {
            let base = url("/burst");
            tokio::spawn(async move {
                let client = client();
                let mut replies = Vec::new();
                for i in 0..5 {
                    let request = Request::get(format!("{base}{}", worker * 5 + i))
                        .body(Full::default())
                        .unwrap();
                    replies.push(send(&client, request).await.unwrap());
                }
                replies
            })
        })
        .collect();
    let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
    let mut refused = None;
    for task in tasks {
        for reply in task.await.unwrap() {
            *counts.entry(reply.status.as_u16()).or_default() += 1;
            if reply.status == 429 {
                refused = Some(reply);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = counts.get(&200).copied().unwrap_or(0);
    assert_eq!(
        admitted + counts.get(&429).copied().unwrap_or(0),
        100,
        "{counts:?}"
    );
    assert!(admitted >= 10, "{counts:?}");
    assert!(
        admitted as f64 <= 10.0 + 20.0 * elapsed + 1.0,
        "{counts:?} in {elapsed} s"
    );
    let refused = refused.unwrap();
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.header("proxy-status"),
        Some("weir; error=http_request_denied; details=\"rate limit exceeded\"")
    );
    pause().await;

    // 6. Live changes. A setting: the throttle's rate.
    proxy.write_config(&text.replace("rate = 20", "rate = 50"));
    assert_eventually(Duration::from_secs(5), "the new rate serves", || async {
        let status = statuses(&proxy, "throttle").await.remove(0).1;
        (status["rate"] == 50.0)
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    // An invalid edit: refused with its line and column; the old config serves.
    proxy.write_config(&text.replace("[upstreams.demo]", "[upstreams.demo"));
    let line = text
        .lines()
        .position(|l| l.starts_with("[upstreams.demo]"))
        .unwrap()
        + 1;
    assert_eventually(Duration::from_secs(5), "the edit is refused", || async {
        let config: serde_json::Value =
            serde_json::from_slice(&get(&proxy.admin_url("/admin/config")).await.unwrap().body)
                .unwrap();
        let error = config["last_reload_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        error
            .contains(&format!("weir.toml:{line}:"))
            .then_some(())
            .ok_or(error)
    })
    .await;
    assert_eq!(get(&url("/still")).await.unwrap().status, 200);
    // A new plugin version: swapped in with its state.
    let before = breaker(&proxy).await;
    weir_tests::install_variant(
        &proxy.plugins_dir(),
        "breaker",
        weir_tests::plugins::BREAKER,
        "next",
    );
    // Compiling the new version in a debug build on a busy machine is slow.
    assert_eventually(Duration::from_secs(60), "the new version", || async {
        (metric(&proxy, "weir_plugin_swaps_total").await == 1)
            .then_some(())
            .ok_or_else(String::new)
    })
    .await;
    let after = breaker(&proxy).await;
    assert_eq!(after["transitions"], before["transitions"], "{after}");
    assert_eq!(after["rejected"], before["rejected"], "{after}");

    // Slow instances: every attempt runs out its 500 ms per-try timeout;
    // the third one's answer is the 504, before the 2 s deadline.
    for instance in instances {
        control(instance, "delay_ms=800").await;
    }
    let slow = get(&url("/slow-all")).await.unwrap();
    assert_eq!(slow.status, 504);
    assert_eq!(
        slow.header("proxy-status"),
        Some("weir; error=http_response_timeout; details=\"upstream attempt timed out\"")
    );
}
