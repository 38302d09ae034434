//! Bad plugins are contained: a garbage, truncated or ABI-mismatched file is
//! refused with the old version serving; a deleted file keeps the last good
//! version; a looping, memory-hungry or panicking plugin traps, and the route
//! fails open or closed as configured.

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use weir_tests::{
    TestUpstream, assert_eventually, client, config_head, get, install_plugin, plugins, send,
};

use super::plugins::{plugin_entry, proxy_with, statuses};

async fn refused_with(proxy: &weir_tests::TestProxy, plugin: &str, needle: &str) {
    assert_eventually(
        Duration::from_secs(5),
        &format!("{plugin}: error mentioning {needle:?}"),
        || async {
            let entry = plugin_entry(proxy, plugin).await;
            let error = entry["last_error"].as_str().unwrap_or("").to_owned();
            if error.contains(needle) {
                Ok(())
            } else {
                Err(entry.to_string())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn bad_files_are_refused_and_the_old_version_keeps_serving() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\nplugins = [{{ name = \"swap\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[("swap", plugins::SWAP_V1)], &config);
    let dir = proxy.plugins_dir();
    let still_v1 = || async {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-plugin-version"), Some("1"));
    };

    // Garbage.
    std::fs::write(dir.join(".garbage.tmp"), b"this is not wasm").unwrap();
    std::fs::rename(dir.join(".garbage.tmp"), dir.join("swap.wasm")).unwrap();
    refused_with(&proxy, "swap", "swap.wasm").await;
    still_v1().await;

    // Truncated: the first half of a real plugin.
    let real = std::fs::read(plugins::SWAP_V2).unwrap();
    std::fs::write(dir.join(".half.tmp"), &real[..real.len() / 2]).unwrap();
    std::fs::rename(dir.join(".half.tmp"), dir.join("swap.wasm")).unwrap();
    refused_with(&proxy, "swap", "does not compile").await;
    assert_eq!(plugin_entry(&proxy, "swap").await["versions_loaded"], 1);
    still_v1().await;

    // Built for another ABI version: both versions named.
    install_plugin(&dir, "swap", plugins::ABI_MISMATCH);
    refused_with(&proxy, "swap", "999").await;
    let error = plugin_entry(&proxy, "swap").await["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(&format!("{}", weir_abi::ABI_VERSION)),
        "{error}"
    );
    still_v1().await;

    // Deleted: the last good version stays.
    std::fs::remove_file(dir.join("swap.wasm")).unwrap();
    assert_eventually(Duration::from_secs(5), "deletion noticed", || async {
        let entry = plugin_entry(&proxy, "swap").await;
        if entry["file_present"] == false {
            Ok(())
        } else {
            Err(entry.to_string())
        }
    })
    .await;
    still_v1().await;

    // A good file afterwards is taken.
    install_plugin(&dir, "swap", plugins::SWAP_V2);
    assert_eventually(Duration::from_secs(5), "v2 answering", || async {
        let reply = get(&proxy.url("/")).await.map_err(|e| e.to_string())?;
        if reply.header("x-plugin-version") == Some("2") {
            Ok(())
        } else {
            Err(format!("{:?}", reply.header("x-plugin-version")))
        }
    })
    .await;
    // Three bad files, each refused once.
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_plugin_swaps_refused_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(refused, 3, "{metrics}");
}

async fn faulty_route(
    plugin: &str,
    wasm: &str,
    policy: &str,
) -> (weir_tests::TestProxy, TestUpstream) {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\non_plugin_error = \"{policy}\"\nplugins = [{{ name = \"counter\" }}, {{ name = \"{plugin}\" }}]\n",
        config_head(),
        upstream.addr
    );
    (
        proxy_with(&[("counter", plugins::COUNTER), (plugin, wasm)], &config),
        upstream,
    )
}

async fn check_contained(
    plugin: &str,
    wasm: &str,
    request: fn(&str) -> Request<Full<bytes::Bytes>>,
) {
    for (policy, status) in [("fail-open", 200), ("fail-closed", 503)] {
        let (proxy, upstream) = faulty_route(plugin, wasm, policy).await;
        for round in 0..3 {
            let reply = send(&client(), request(&proxy.url("/"))).await.unwrap();
            assert_eq!(
                reply.status,
                status,
                "{plugin} {policy} round {round}: {}",
                reply.text()
            );
            if status == 503 {
                let proxy_status = reply.header("proxy-status").unwrap_or("");
                assert!(
                    proxy_status.contains(&format!("plugin {plugin} failed")),
                    "{proxy_status}"
                );
            }
        }
        assert_eq!(upstream.requests(), if status == 200 { 3 } else { 0 });
        // The outer plugin saw every request end exactly once.
        let counter = &statuses(&proxy, "counter").await[0].1;
        assert_eq!(
            (counter["requests"].as_u64(), counter["ends"].as_u64()),
            (Some(3), Some(3)),
            "{counter}"
        );
        let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
        let traps = format!("weir_plugin_traps_total{{route=\"route-0\",plugin=\"{plugin}\"}} 0");
        assert!(!metrics.contains(&traps), "traps were counted: {metrics}");
    }
}

fn plain(url: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn panicking(url: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(url)
        .header("x-panic", "1")
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn an_infinite_loop_is_trapped() {
    check_contained("looping", plugins::LOOPING, plain).await;
}

#[tokio::test]
async fn a_memory_bomb_is_contained() {
    check_contained("memory-bomb", plugins::MEMORY_BOMB, plain).await;
}

#[tokio::test]
async fn a_panic_is_contained_and_the_instance_replaced() {
    check_contained("panicking", plugins::PANICKING, panicking).await;
    // After a panic the instance is fresh and serves normal requests again.
    let (proxy, _upstream) = faulty_route("panicking", plugins::PANICKING, "fail-closed").await;
    assert_eq!(
        send(&client(), panicking(&proxy.url("/")))
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    let status = &statuses(&proxy, "panicking").await[0].1;
    assert_eq!(
        status["served"], 1,
        "a fresh instance after the trap: {status}"
    );
}

#[tokio::test]
async fn a_new_version_that_rejects_the_route_settings_is_refused() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\nplugins = [{{ name = \"limited\", config = {{ limit = 5 }} }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[("limited", plugins::CONFIG_REJECT)], &config);
    // A build whose typed settings need `tag`: it cannot take `{ limit = 5 }`.
    install_plugin(&proxy.plugins_dir(), "limited", plugins::HEADERS);
    refused_with(&proxy, "limited", "missing field `tag`").await;
    let status = &statuses(&proxy, "limited").await[0].1;
    assert_eq!(
        status["limit"], 5,
        "the old version keeps serving: {status}"
    );
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
}
