//! A thousand hot swaps under load: no request fails, no update to a
//! plugin's state is lost (calls of requests still holding the old version
//! go to the new one), no concurrency slot leaks, and the counters on
//! `/metrics` never go back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::Request;
use http_body_util::Full;
use weir_tests::{
    TestUpstream, client, config_head, get, install_plugin, install_variant, plugins, send,
};

use super::plugins::{proxy_with, statuses};

/// `name{route="r",plugin="p"} value` on `/metrics`.
fn sample(metrics: &str, name: &str, plugin: &str) -> f64 {
    let prefix = format!("{name}{{route=\"r\",plugin=\"{plugin}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_swaps_under_load_lose_no_update_and_leak_no_slot() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[plugins]\ncall_deadline = \"1s\"\n[upstreams.u]\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\
         {{ name = \"throttle\", config = {{ max_concurrent = 64 }} }}, {{ name = \"swap\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(
        &[("throttle", plugins::THROTTLE), ("swap", plugins::SWAP_V1)],
        &config,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, answered, failed) = (
                proxy.url("/"),
                stop.clone(),
                answered.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let client = client();
                while !stop.load(Ordering::SeqCst) {
                    match send(&client, Request::get(&url).body(Full::default()).unwrap()).await {
                        Ok(reply) if reply.status == 200 => answered.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();

    let dir = proxy.plugins_dir();
    let handle = proxy.server.handle();
    let mut last_calls = 0.0;
    for swap in 0..1000 {
        // Alternate: a new throttle build, then a new swap-plugin version.
        let (name, file) = if swap % 2 == 0 {
            install_variant(
                &dir,
                "throttle",
                plugins::THROTTLE,
                &format!("{}", swap % 4),
            );
            ("throttle", dir.join("throttle.wasm"))
        } else {
            let wasm = if swap % 4 == 1 {
                plugins::SWAP_V2
            } else {
                plugins::SWAP_V1
            };
            install_plugin(&dir, "swap", wasm);
            ("swap", dir.join("swap.wasm"))
        };
        // Applied at once rather than after the watcher's debounce (the
        // watcher then finds the same version and does nothing).
        handle
            .reload_plugin_file(&file)
            .unwrap_or_else(|e| panic!("swap {swap} of {name}: {e}"));
        if swap % 100 == 99 {
            let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
            let calls = sample(&metrics, "weir_plugin_calls_total", "swap");
            assert!(
                calls >= last_calls,
                "calls went back: {calls} < {last_calls}"
            );
            last_calls = calls;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in loops {
        task.await.unwrap();
    }
    let answered = answered.load(Ordering::SeqCst) as u64;
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during swaps"
    );
    assert!(answered > 1000, "{answered}");

    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("weir_plugin_swaps_total 1000"),
        "{metrics}"
    );
    let seen = statuses(&proxy, "swap").await[0].1["seen"]
        .as_u64()
        .unwrap();
    eprintln!("1000 swaps: {answered} requests answered, the plugin counted {seen}");
    assert_eq!(seen, answered, "updates lost across swaps");
    let throttle = statuses(&proxy, "throttle").await[0].1.clone();
    assert_eq!(throttle["in_flight"], 0, "slots leaked: {throttle}");
    // on_request and on_end per request, plus a snapshot and a restore per
    // version (and the status calls of the admin API): none of them lost.
    let calls = sample(&metrics, "weir_plugin_calls_total", "throttle") as u64;
    assert!(
        (2 * answered + 1000..=2 * answered + 1010).contains(&calls),
        "throttle calls {calls} for {answered} requests"
    );
}
