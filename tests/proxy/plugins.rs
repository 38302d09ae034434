//! Plugin chains through the real proxy with real `.wasm` plugins: header
//! edits, local answers, retries, `on_end` accounting, per-route state, typed
//! config rejection and hot swaps under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use weir_tests::upstream::refused_addr;
use weir_tests::{
    TestProxy, TestUpstream, assert_eventually, client, config_head, get, install_plugin, plugins,
    send,
};

/// A proxy whose plugins directory holds `installed` (name, wasm path).
pub fn proxy_with(installed: &[(&str, &str)], config: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    for (name, wasm) in installed {
        install_plugin(&dir.path().join("plugins"), name, wasm);
    }
    TestProxy::start_in(dir, config)
}

/// The `status()` JSON of every instance of `plugin`, by route.
pub async fn statuses(proxy: &TestProxy, plugin: &str) -> Vec<(String, serde_json::Value)> {
    let json: serde_json::Value =
        serde_json::from_slice(&get(&proxy.admin_url("/admin/plugins")).await.unwrap().body)
            .unwrap();
    json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == plugin)
        .flat_map(|p| p["instances"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            (
                i["route"].as_str().unwrap_or("").to_owned(),
                i["status"].clone(),
            )
        })
        .collect()
}

/// The `/admin/plugins` entry of `plugin`.
pub async fn plugin_entry(proxy: &TestProxy, plugin: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_slice(&get(&proxy.admin_url("/admin/plugins")).await.unwrap().body)
            .unwrap();
    json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == plugin)
        .cloned()
        .unwrap_or_default()
}

fn route(upstream: &str, plugins: &str) -> String {
    format!("[[routes]]\nupstream = \"{upstream}\"\nplugins = [{plugins}]\n")
}

#[tokio::test]
async fn chains_edit_headers_both_ways_in_onion_order() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n{}",
        config_head(),
        upstream.addr,
        route(
            "u",
            r#"{ name = "headers", config = { tag = "a" } }, { name = "headers", config = { tag = "b" } }, { name = "hello" }"#
        )
    );
    let proxy = proxy_with(
        &[("headers", plugins::HEADERS), ("hello", plugins::HELLO)],
        &config,
    );
    let request = Request::get(proxy.url("/headers"))
        .header("x-remove-me", "1")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(seen["x-trace"], serde_json::json!(["a>", "b>"]), "{seen}");
    assert!(seen.get("x-remove-me").is_none(), "{seen}");
    let trace: Vec<_> = reply
        .headers
        .get_all("x-trace")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(trace, ["<b", "<a"], "inner layers see the response first");
    assert_eq!(reply.header("x-hello"), Some("world"));
    assert_eq!(reply.header("x-path-a"), Some("/headers"));
    // Every plugin the routes name is loaded: ready.
    assert_eq!(get(&proxy.admin_url("/readyz")).await.unwrap().status, 200);
}

/// A chain with no `on_response` layer hands the request's headers to the
/// upstream by move, not by copy: the client's headers and the plugin's
/// edits must all arrive, on every request of the connection.
#[tokio::test]
async fn a_chain_without_on_response_forwards_edited_headers() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n{}",
        config_head(),
        upstream.addr,
        route("u", r#"{ name = "realistic" }, { name = "counter" }"#)
    );
    let proxy = proxy_with(
        &[
            ("realistic", plugins::REALISTIC),
            ("counter", plugins::COUNTER),
        ],
        &config,
    );
    let client = client();
    for (user, tenant) in [("admin-1", "ops"), ("customer-2", "customers")] {
        let request = Request::get(proxy.url("/headers"))
            .header("x-user", user)
            .header("x-extra", "kept")
            .body(Full::default())
            .unwrap();
        let reply = send(&client, request).await.unwrap();
        assert_eq!(reply.status, 200);
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(seen["x-user"], serde_json::json!([user]), "{seen}");
        assert_eq!(seen["x-extra"], serde_json::json!(["kept"]), "{seen}");
        assert_eq!(seen["x-tenant"], serde_json::json!([tenant]), "{seen}");
    }
    assert_eq!(statuses(&proxy, "counter").await[0].1["requests"], 2);
}

#[tokio::test]
async fn a_local_answer_skips_inner_layers_and_the_upstream() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n{}",
        config_head(),
        upstream.addr,
        route(
            "u",
            r#"{ name = "headers", config = { tag = "outer" } }, { name = "answer" }, { name = "counter" }"#
        )
    );
    let proxy = proxy_with(
        &[
            ("headers", plugins::HEADERS),
            ("answer", plugins::ANSWER),
            ("counter", plugins::COUNTER),
        ],
        &config,
    );
    let request = Request::get(proxy.url("/"))
        .header("x-deny", "1")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.text(), "denied");
    assert_eq!(reply.header("x-denied-by"), Some("answer"));
    assert_eq!(
        reply.header("x-trace"),
        Some("<outer"),
        "the outer layer saw the answer"
    );
    assert_eq!(upstream.requests(), 0);
    let inner = statuses(&proxy, "counter").await;
    assert_eq!(inner[0].1["requests"], 0, "the inner layer never ran");
    // Without the header the request goes through every layer.
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(statuses(&proxy, "counter").await[0].1["requests"], 1);
}

#[tokio::test]
async fn a_retry_reruns_only_the_inner_layers_on_an_untried_endpoint() {
    let good = TestUpstream::start("good").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\", \"{}\"]\n{}",
        config_head(),
        refused_addr(),
        good.addr,
        route(
            "u",
            r#"{ name = "headers", config = { tag = "out" } }, { name = "retry-once" }, { name = "headers", config = { tag = "in" } }, { name = "pick-untried" }"#
        )
    );
    let proxy = proxy_with(
        &[
            ("headers", plugins::HEADERS),
            ("retry-once", plugins::RETRY_ONCE),
            ("pick-untried", plugins::PICK_UNTRIED),
        ],
        &config,
    );
    let reply = get(&proxy.url("/headers")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-retried"), Some("yes"));
    assert_eq!(
        reply.header("x-upstream"),
        Some("good"),
        "select skipped the tried endpoint"
    );
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    // The outer layer ran once, the inner one once per attempt.
    assert_eq!(
        seen["x-trace"],
        serde_json::json!(["out>", "in>", "in>"]),
        "{seen}"
    );
    assert_eq!(good.requests(), 1);
}

#[tokio::test]
async fn a_small_post_body_is_replayed_on_retry() {
    let good = TestUpstream::start("good").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\", \"{}\"]\n{}",
        config_head(),
        refused_addr(),
        good.addr,
        route("u", r#"{ name = "retry-once" }, { name = "pick-untried" }"#)
    );
    let proxy = proxy_with(
        &[
            ("retry-once", plugins::RETRY_ONCE),
            ("pick-untried", plugins::PICK_UNTRIED),
        ],
        &config,
    );
    let body = bytes::Bytes::from_static(b"replay me");
    let request = Request::post(proxy.url("/count"))
        .body(Full::new(body))
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-retried"), Some("yes"));
    let sum: u64 = b"replay me".iter().map(|b| u64::from(*b)).sum();
    assert_eq!(reply.text(), format!("9:{sum}"));
}

#[tokio::test]
async fn a_body_larger_than_the_replay_buffer_is_never_retried() {
    let good = TestUpstream::start("good").await;
    let config = format!(
        "{}[plugins]\nreplay_buffer_bytes = 16\n[upstreams.u]\nendpoints = [\"{}\", \"{}\"]\n{}",
        config_head(),
        refused_addr(),
        good.addr,
        route("u", r#"{ name = "retry-once" }, { name = "pick-untried" }"#)
    );
    let proxy = proxy_with(
        &[
            ("retry-once", plugins::RETRY_ONCE),
            ("pick-untried", plugins::PICK_UNTRIED),
        ],
        &config,
    );
    let request = Request::post(proxy.url("/count"))
        .body(Full::new(bytes::Bytes::from(vec![b'x'; 1024])))
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 502, "the failed first attempt stands");
    assert_eq!(good.requests(), 0);
}

#[tokio::test]
async fn on_end_runs_once_when_the_client_goes_away() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n{}",
        config_head(),
        upstream.addr,
        route("u", r#"{ name = "counter" }"#)
    );
    let proxy = proxy_with(&[("counter", plugins::COUNTER)], &config);
    let url = proxy.url("/slow/3000");
    let request = tokio::spawn(async move { get(&url).await });
    assert_eventually(
        Duration::from_secs(5),
        "request reached the upstream",
        || async {
            if upstream.requests() == 1 {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
    request.abort();
    assert_eventually(Duration::from_secs(5), "on_end ran, cancelled", || async {
        let s = statuses(&proxy, "counter").await;
        let s = &s[0].1;
        if s["ends"] == 1 && s["cancelled"] == 1 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(statuses(&proxy, "counter").await[0].1["requests"], 1);
}

#[tokio::test]
async fn on_end_runs_once_on_timeout_and_on_trap() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\npath_prefix = \"/slow\"\ntimeout = \"100ms\"\nplugins = [{{ name = \"counter\" }}]\n{}",
        config_head(),
        upstream.addr,
        route("u", r#"{ name = "counter" }, { name = "panicking" }"#)
    );
    let proxy = proxy_with(
        &[
            ("counter", plugins::COUNTER),
            ("panicking", plugins::PANICKING),
        ],
        &config,
    );
    let reply = get(&proxy.url("/slow/1000")).await.unwrap();
    assert_eq!(reply.status, 504);
    let request = Request::get(proxy.url("/"))
        .header("x-panic", "1")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), request).await.unwrap();
    assert_eq!(reply.status, 200, "fail-open skips the trapped plugin");
    assert_eventually(
        Duration::from_secs(5),
        "on_end ran once per request",
        || async {
            let all = statuses(&proxy, "counter").await;
            let by_route: std::collections::BTreeMap<_, _> = all.into_iter().collect();
            let timed_out = &by_route["route-0"];
            let trapped = &by_route["route-1"];
            if timed_out["requests"] == 1
                && timed_out["ends"] == 1
                && timed_out["timed_out"] == 1
                && timed_out["cancelled"] == 0
                && trapped["requests"] == 1
                && trapped["ends"] == 1
            {
                Ok(())
            } else {
                Err(format!("{by_route:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn each_route_has_its_own_instance() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"u\"\nplugins = [{{ name = \"counter\" }}]\n[[routes]]\nname = \"b\"\npath_prefix = \"/b\"\nupstream = \"u\"\nplugins = [{{ name = \"counter\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[("counter", plugins::COUNTER)], &config);
    for path in ["/a", "/a", "/a", "/b"] {
        assert_eq!(get(&proxy.url(path)).await.unwrap().status, 200);
    }
    let by_route: std::collections::BTreeMap<_, _> =
        statuses(&proxy, "counter").await.into_iter().collect();
    assert_eq!(by_route["a"]["requests"], 3);
    assert_eq!(by_route["b"]["requests"], 1);
    // Plugin-defined metrics carry route and plugin labels.
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("weir_plugin_requests_total{route=\"a\",plugin=\"counter\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_plugin_requests_total{route=\"b\",plugin=\"counter\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_plugin_calls_total{route=\"a\",plugin=\"counter\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rejected_config_keeps_the_running_instance() {
    let upstream = TestUpstream::start("u").await;
    let with_limit = |limit: u32| {
        format!(
            "{}[upstreams.u]\nendpoints = [\"{}\"]\n{}",
            config_head(),
            upstream.addr,
            route(
                "u",
                &format!("{{ name = \"config-reject\", config = {{ limit = {limit} }} }}")
            )
        )
    };
    let proxy = proxy_with(&[("config-reject", plugins::CONFIG_REJECT)], &with_limit(5));
    assert_eq!(statuses(&proxy, "config-reject").await[0].1["limit"], 5);
    proxy.write_config(&with_limit(0));
    assert_eventually(
        Duration::from_secs(5),
        "refused with the entry's position",
        || async {
            let json: serde_json::Value = serde_json::from_slice(
                &get(&proxy.admin_url("/admin/config"))
                    .await
                    .map_err(|e| e.to_string())?
                    .body,
            )
            .map_err(|e| e.to_string())?;
            let error = json["last_reload_error"].as_str().unwrap_or("").to_owned();
            if error.contains("weir.toml:12:12:") && error.contains("limit must be positive") {
                Ok(())
            } else {
                Err(error)
            }
        },
    )
    .await;
    assert_eq!(
        statuses(&proxy, "config-reject").await[0].1["limit"],
        5,
        "old instance still serving"
    );
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    // A type error in the settings is refused the same way.
    proxy.write_config(&with_limit(5).replace("limit = 5", "limit = \"five\""));
    assert_eventually(Duration::from_secs(5), "type error refused", || async {
        let json: serde_json::Value = serde_json::from_slice(
            &get(&proxy.admin_url("/admin/config"))
                .await
                .map_err(|e| e.to_string())?
                .body,
        )
        .map_err(|e| e.to_string())?;
        let error = json["last_reload_error"].as_str().unwrap_or("").to_owned();
        if error.contains("invalid type") {
            Ok(())
        } else {
            Err(error)
        }
    })
    .await;
    assert_eq!(statuses(&proxy, "config-reject").await[0].1["limit"], 5);
}

#[tokio::test]
async fn a_route_naming_a_missing_plugin_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "{}[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n{}",
            config_head(),
            route("u", r#"{ name = "nowhere" }"#)
        ),
    )
    .unwrap();
    let config = weir_proxy::Config::load(&path).unwrap();
    let error = weir_proxy::Server::start(config, weir_proxy::Options::default())
        .err()
        .expect("start must fail");
    let text = error.to_string();
    assert!(
        text.contains("weir.toml:12:12:") && text.contains("plugin \"nowhere\" not found"),
        "{text}"
    );
}

#[tokio::test]
async fn fifty_swaps_under_load_fail_no_request_and_carry_state() {
    let upstream = TestUpstream::start("u").await;
    // The shared compile cache, warmed with both versions: the one-second
    // bound below is about the swap, not about Cranelift in a debug build.
    let cache = weir_tests::engine_config().compile_cache.unwrap();
    let engine = weir_proxy::plugin::PluginEngine::new(weir_tests::engine_config()).unwrap();
    for wasm in [plugins::SWAP_V1, plugins::SWAP_V2] {
        engine.load_file(std::path::Path::new(wasm)).unwrap();
    }
    let config = format!(
        // A generous call deadline: a debug build on a busy machine must not
        // trap (and so lose state) for slowness; traps are tested elsewhere.
        "{}[plugins]\ncall_deadline = \"1s\"\ncompile_cache = \"{}\"\ncompile_cache_key = \"{}\"\n[upstreams.u]\nendpoints = [\"{}\"]\n{}",
        config_head(),
        cache.dir.display(),
        cache.key_file.display(),
        upstream.addr,
        route("u", r#"{ name = "swap" }"#)
    );
    let proxy = proxy_with(&[("swap", plugins::SWAP_V1)], &config);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicU64::new(0));
    let went_backwards = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, failed, ok, max_seen, went_backwards) = (
                proxy.url("/"),
                stop.clone(),
                failed.clone(),
                ok.clone(),
                max_seen.clone(),
                went_backwards.clone(),
            );
            tokio::spawn(async move {
                let client = client();
                while !stop.load(Ordering::SeqCst) {
                    match send(&client, Request::get(&url).body(Full::default()).unwrap()).await {
                        Ok(reply) if reply.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            let seen: u64 = reply
                                .header("x-plugin-seen")
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            // Concurrent requests finish out of order, so a
                            // value may trail the highest by some; a state
                            // reset drops to a small fraction of it.
                            let max = max_seen.fetch_max(seen, Ordering::SeqCst);
                            if max > 64 && seen < max / 2 {
                                went_backwards.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    let plugins_dir = proxy.plugins_dir();
    for swap in 0..50 {
        let (wasm, version) = if swap % 2 == 0 {
            (plugins::SWAP_V2, "2")
        } else {
            (plugins::SWAP_V1, "1")
        };
        install_plugin(&plugins_dir, "swap", wasm);
        assert_eventually(
            Duration::from_secs(1),
            &format!("swap {swap}: version {version} answering"),
            || async {
                let reply = get(&proxy.url("/")).await.map_err(|e| e.to_string())?;
                match reply.header("x-plugin-version") {
                    Some(v) if v == version => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in loops {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during swaps"
    );
    assert!(ok.load(Ordering::SeqCst) > 100);
    assert_eq!(
        went_backwards.load(Ordering::SeqCst),
        0,
        "state was lost in a swap"
    );
    // Requests in flight on the old version finish on the new one: no count
    // is lost (the plugin also saw the checks' own requests).
    let status = &statuses(&proxy, "swap").await[0].1;
    let seen = status["seen"].as_u64().unwrap();
    let answered = ok.load(Ordering::SeqCst) as u64;
    assert!(
        seen >= answered,
        "state lost: seen {seen} of {answered} answered"
    );
    let entry = plugin_entry(&proxy, "swap").await;
    assert_eq!(entry["versions_loaded"], 51);
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(metrics.contains("weir_plugin_swaps_total 50"), "{metrics}");
}
