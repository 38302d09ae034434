//! A new plugin version that fails goes back out on its own: under load, a
//! looping, memory-hungry or panicking version swapped in over a good one
//! is rolled back at its `probation_max_traps`-th failed call, the previous
//! version (with its state) serves again at once, and the bad file is not
//! tried again until it changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weir_tests::{
    TestProxy, TestUpstream, assert_eventually, client, config_head, get, install_plugin, plugins,
    send,
};

use super::plugins::{plugin_entry, proxy_with, statuses};

const MAX_TRAPS: usize = 3;

/// Answers seen after the bad version was installed: (status, plugin version header).
type Seen = Arc<Mutex<Vec<(u16, Option<String>, Instant)>>>;

struct Load {
    stop: Arc<AtomicBool>,
    recording: Arc<AtomicBool>,
    seen: Seen,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop, recording, seen) =
                    (url.clone(), stop.clone(), recording.clone(), seen.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::SeqCst) {
                        let request = Request::get(&url)
                            .header("x-panic", "1")
                            .body(Full::default())
                            .unwrap();
                        // When it was sent: a request that entered the bad
                        // version just before the rollback may end after it.
                        let sent = Instant::now();
                        let reply = send(&client, request).await.unwrap();
                        if recording.load(Ordering::SeqCst) {
                            let version = reply.header("x-plugin-version").map(str::to_owned);
                            seen.lock()
                                .unwrap()
                                .push((reply.status.as_u16(), version, sent));
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            recording,
            seen,
            tasks,
        }
    }

    async fn finish(self) -> Vec<(u16, Option<String>, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

async fn metric(proxy: &TestProxy, line_start: &str) -> u64 {
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Swaps `bad` in over swap v1 on a route with `policy`, under load.
async fn bad_version_is_rolled_back(bad: &str, policy: &str) {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[plugins]\nprobation = \"30s\"\nprobation_max_traps = {MAX_TRAPS}\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n\
         [[routes]]\nupstream = \"u\"\non_plugin_error = \"{policy}\"\nplugins = [{{ name = \"swap\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[("swap", plugins::SWAP_V1)], &config);
    let load = Load::start(proxy.url("/"), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen_before = statuses(&proxy, "swap").await[0].1["seen"]
        .as_u64()
        .unwrap();
    assert!(seen_before > 0);

    load.recording.store(true, Ordering::SeqCst);
    let installed = Instant::now();
    install_plugin(&proxy.plugins_dir(), "swap", bad);
    // Most of the wait is compiling the bad version (debug build, busy machine).
    assert_eventually(Duration::from_secs(60), "rolled back", || async {
        let entry = plugin_entry(&proxy, "swap").await;
        entry["rolled_back"]["reason"]
            .as_str()
            .is_some()
            .then_some(())
            .ok_or_else(|| entry.to_string())
    })
    .await;
    let rolled_back_after = installed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The same bad file again (a deploy retried): not tried again.
    install_plugin(&proxy.plugins_dir(), "swap", bad);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = load.finish().await;

    // Requests in flight at the swap finish on the new version (their later
    // hooks go to it), so a missing version header alone is no failure. A
    // failed call answers 503 on a fail-closed route; on a fail-open one it
    // skips the plugin, and each is a trap or a refusal while backing off.
    let failed: Vec<Instant> = seen
        .iter()
        .filter(|(status, _, _)| *status != 200)
        .map(|(_, _, at)| *at)
        .collect();
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    let traps = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_plugin_traps_total{route=\"route-0\",plugin=\"swap\"} "))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no trap count: {metrics}"));
    let failed_for = match (failed.first(), failed.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    eprintln!(
        "{policy}: {} requests after the swap, {} answered 503 (within {failed_for:?}), {traps} traps; \
         rolled back {rolled_back_after:?} after the file was installed (most of it compiling the new version)",
        seen.len(),
        failed.len()
    );
    assert!(seen.len() > 20, "the load kept going: {}", seen.len());
    assert!(
        (1..=MAX_TRAPS).contains(&traps),
        "{traps} traps (at most {MAX_TRAPS})"
    );
    if policy == "fail-closed" {
        assert!(
            (1..=MAX_TRAPS).contains(&failed.len()),
            "{} requests failed (at most {MAX_TRAPS})",
            failed.len()
        );
    } else {
        assert!(
            failed.is_empty(),
            "a fail-open route answered {} failures",
            failed.len()
        );
    }
    // Once rolled back, every request sent is answered by the previous version.
    let rolled_back_at = installed + rolled_back_after;
    let late_strays = seen
        .iter()
        .filter(|(_, version, at)| *at > rolled_back_at && version.as_deref() != Some("1"))
        .count();
    assert_eq!(
        late_strays, 0,
        "answers after the rollback not from version 1"
    );
    // The previous version serves with its state.
    let status = &statuses(&proxy, "swap").await[0].1;
    assert!(status["seen"].as_u64().unwrap() > seen_before, "{status}");
    let entry = plugin_entry(&proxy, "swap").await;
    assert_eq!(entry["rollbacks"], 1, "{entry}");
    assert!(entry["probation"].is_null(), "{entry}");
    assert_eq!(
        metric(&proxy, "weir_plugin_rollbacks_total{plugin=\"swap\"}").await,
        1
    );
    assert_eq!(
        metric(&proxy, "weir_plugin_swaps_total ").await,
        1,
        "tried once"
    );

    // A changed file is tried again: the good v2 passes.
    install_plugin(&proxy.plugins_dir(), "swap", plugins::SWAP_V2);
    assert_eventually(Duration::from_secs(60), "v2 serving", || async {
        let reply = get(&proxy.url("/")).await.map_err(|e| e.to_string())?;
        (reply.header("x-plugin-version") == Some("2"))
            .then_some(())
            .ok_or_else(|| format!("{:?}", reply.header("x-plugin-version")))
    })
    .await;
    let entry = plugin_entry(&proxy, "swap").await;
    assert!(entry["rolled_back"].is_null(), "{entry}");
    assert_eq!(entry["probation"]["failures"], 0, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_version_is_rolled_back_on_a_fail_closed_route() {
    bad_version_is_rolled_back(plugins::LOOPING, "fail-closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_version_is_rolled_back_on_a_fail_open_route() {
    bad_version_is_rolled_back(plugins::LOOPING, "fail-open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_version_is_rolled_back() {
    bad_version_is_rolled_back(plugins::MEMORY_BOMB, "fail-closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_version_is_rolled_back() {
    bad_version_is_rolled_back(plugins::PANICKING, "fail-open").await;
}

#[tokio::test]
async fn a_version_that_passes_probation_is_promoted() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[plugins]\nprobation = \"300ms\"\n[upstreams.u]\nendpoints = [\"{}\"]\n\
         [[routes]]\nupstream = \"u\"\nplugins = [{{ name = \"swap\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[("swap", plugins::SWAP_V1)], &config);
    install_plugin(&proxy.plugins_dir(), "swap", plugins::SWAP_V2);
    assert_eventually(Duration::from_secs(60), "on probation", || async {
        let entry = plugin_entry(&proxy, "swap").await;
        entry["probation"]["remaining_ms"]
            .as_u64()
            .is_some()
            .then_some(())
            .ok_or_else(|| entry.to_string())
    })
    .await;
    assert_eventually(Duration::from_secs(5), "promoted", || async {
        let entry = plugin_entry(&proxy, "swap").await;
        (entry["probation"].is_null() && entry["rollbacks"] == 0)
            .then_some(())
            .ok_or_else(|| entry.to_string())
    })
    .await;
    assert_eq!(
        get(&proxy.url("/"))
            .await
            .unwrap()
            .header("x-plugin-version"),
        Some("2")
    );
}
