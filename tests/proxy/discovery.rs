//! Service discovery: a watched file, DNS re-resolution and etcd, with
//! traffic running while the endpoint set changes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::Full;
use serde_json::Value;
use weir_tests::dns::DnsServer;
use weir_tests::etcd::Etcd;
use weir_tests::{TestProxy, TestUpstream, assert_eventually, config_head, get};

const WAIT: Duration = Duration::from_secs(15);

async fn upstreams(proxy: &TestProxy) -> Value {
    let reply = get(&proxy.admin_url("/admin/upstreams")).await.unwrap();
    serde_json::from_slice(&reply.body).unwrap()
}

/// Names of the upstreams that answered `n` requests to `path`.
async fn names(proxy: &TestProxy, path: &str, n: usize) -> BTreeSet<String> {
    try_names(proxy, path, n).await.unwrap()
}

/// As [`names`], or the first failure.
async fn try_names(proxy: &TestProxy, path: &str, n: usize) -> Result<BTreeSet<String>, String> {
    let client = weir_tests::client();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let request = http::Request::get(proxy.url(path))
            .body(Full::default())
            .unwrap();
        let reply = weir_tests::send(&client, request)
            .await
            .map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(format!("{}: {}", reply.status, reply.text()));
        }
        seen.insert(reply.header("x-upstream").unwrap_or_default().to_owned());
    }
    Ok(seen)
}

async fn eventually_served_by(proxy: &TestProxy, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    assert_eventually(WAIT, &format!("served by {expected:?}"), || async {
        let seen = try_names(proxy, "/", 12).await?;
        (seen == expected)
            .then_some(())
            .ok_or_else(|| format!("served by {seen:?}"))
    })
    .await;
}

/// Clients requesting in a loop until stopped; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let client = weir_tests::client();
                    while !stop.load(Ordering::SeqCst) {
                        let request = http::Request::get(&url).body(Full::default()).unwrap();
                        match weir_tests::send(&client, request).await {
                            Ok(reply) if reply.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                            _ => failed.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients; returns (ok, failed).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn file_discovery_reloads_and_drains_removed_endpoints() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("endpoints.json");
    let config = format!(
        "{}[upstreams.app]\ndiscovery = {{ kind = \"file\", path = \"{}\" }}\n[[routes]]\nupstream = \"app\"\n",
        config_head(),
        file.display()
    );
    // No file yet: not ready, and the error is shown.
    let proxy = TestProxy::start(&config);
    let ready = get(&proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("no endpoints"), "{}", ready.text());
    let report = upstreams(&proxy).await;
    assert_eq!(
        report["upstreams"][0]["discovery"]["state"], "error",
        "{report}"
    );

    write_atomically(
        &file,
        &format!(
            r#"[{{"address": "{}", "zone": "z1", "metadata": {{"version": "v1"}}}}]"#,
            a.addr
        ),
    );
    eventually_served_by(&proxy, &["a"]).await;
    assert_eq!(get(&proxy.admin_url("/readyz")).await.unwrap().status, 200);
    let report = upstreams(&proxy).await;
    let endpoint = &report["upstreams"][0]["endpoints"][0];
    assert_eq!(endpoint["zone"], "z1", "{report}");
    assert_eq!(endpoint["metadata"]["version"], "v1", "{report}");
    assert_eq!(endpoint["source"], "file", "{report}");

    // A request in flight on `a` when `a` is removed still finishes.
    let slow_url = proxy.url("/slow/1500");
    let in_flight = tokio::spawn(async move { get(&slow_url).await.unwrap() });
    let a_addr = a.addr.to_string();
    assert_eventually(WAIT, "slow request in flight", || async {
        let report = upstreams(&proxy).await;
        let endpoint = &report["upstreams"][0]["endpoints"][0];
        (endpoint["address"] == a_addr.as_str() && endpoint["in_flight"] == 1)
            .then_some(())
            .ok_or_else(|| report.to_string())
    })
    .await;
    write_atomically(&file, &format!(r#"["{}"]"#, b.addr));
    eventually_served_by(&proxy, &["b"]).await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow a");

    // A broken file keeps the last set serving and shows the error.
    write_atomically(&file, "[{ not json");
    assert_eventually(WAIT, "error shown", || async {
        let report = upstreams(&proxy).await;
        let discovery = &report["upstreams"][0]["discovery"];
        (discovery["state"] == "error"
            && discovery["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid")))
        .then_some(())
        .ok_or_else(|| report.to_string())
    })
    .await;
    assert_eq!(
        names(&proxy, "/", 4).await,
        BTreeSet::from(["b".to_owned()])
    );

    // TOML works too.
    let toml_file = dir.path().join("endpoints.toml");
    write_atomically(
        &toml_file,
        &format!(
            "endpoints = [\"{}\", {{ address = \"{}\", weight = 2 }}]\n",
            a.addr, b.addr
        ),
    );
    proxy.write_config(&config.replace("endpoints.json", "endpoints.toml"));
    eventually_served_by(&proxy, &["a", "b"]).await;
}

#[tokio::test]
async fn dns_discovery_follows_record_changes() {
    // Endpoints found by DNS differ by address and share the port.
    let two = TestUpstream::start_on("two", "127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    let port = two.addr.port();
    let Ok(three) =
        TestUpstream::start_on("three", format!("127.0.0.3:{port}").parse().unwrap()).await
    else {
        panic!("port {port} is taken on 127.0.0.3");
    };
    let dns = DnsServer::start(&[Ipv4Addr::new(127, 0, 0, 2)]).await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\ndiscovery = {{ kind = \"dns\", name = \"svc.weir.test\", port = {port}, \
         interval = \"300ms\", nameservers = [\"{}\"] }}\n[[routes]]\nupstream = \"app\"\n",
        config_head(),
        dns.addr
    ));
    eventually_served_by(&proxy, &["two"]).await;
    dns.set(&[Ipv4Addr::new(127, 0, 0, 3)]);
    eventually_served_by(&proxy, &["three"]).await;
    dns.set(&[Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)]);
    eventually_served_by(&proxy, &["two", "three"]).await;

    // The resolver fails: the last set keeps serving, the error is shown.
    dns.fail();
    assert_eventually(WAIT, "DNS error shown", || async {
        let report = upstreams(&proxy).await;
        let discovery = &report["upstreams"][0]["discovery"];
        (discovery["state"] == "error")
            .then_some(())
            .ok_or_else(|| report.to_string())
    })
    .await;
    let names = names(&proxy, "/", 8).await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(dns.queries() > 3);
    drop(three);
}

fn endpoint_json(upstream: &TestUpstream, weight: u32) -> String {
    format!(
        r#"{{"address": "{}", "weight": {weight}, "zone": "z"}}"#,
        upstream.addr
    )
}

#[tokio::test]
async fn etcd_discovery_follows_changes_without_failed_requests() {
    let mut etcd = Etcd::start().await;
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let prefix = "/weir/upstreams/app/";
    etcd.put(&format!("{prefix}a"), &endpoint_json(&a, 1)).await;
    // A key beside the prefix is not an endpoint.
    etcd.put("/weir/upstreams/apple", &endpoint_json(&b, 1))
        .await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\ndiscovery = {{ kind = \"etcd\", endpoints = [\"{}\"], prefix = \"{prefix}\" }}\n\
         [[routes]]\nupstream = \"app\"\n",
        config_head(),
        etcd.client
    ));
    eventually_served_by(&proxy, &["a"]).await;

    let load = Load::start(proxy.url("/slow/2"), 4);
    etcd.put(&format!("{prefix}b"), &endpoint_json(&b, 1)).await;
    eventually_served_by(&proxy, &["a", "b"]).await;
    // Modify: a's weight changes.
    etcd.put(&format!("{prefix}a"), &endpoint_json(&a, 3)).await;
    let a_addr = a.addr.to_string();
    assert_eventually(WAIT, "a's weight is 3", || async {
        let report = upstreams(&proxy).await;
        let endpoints = report["upstreams"][0]["endpoints"]
            .as_array()
            .unwrap()
            .clone();
        endpoints
            .iter()
            .any(|e| e["address"] == a_addr.as_str() && e["weight"] == 3 && e["source"] == "etcd")
            .then_some(())
            .ok_or_else(|| report.to_string())
    })
    .await;
    etcd.delete(&format!("{prefix}a")).await;
    eventually_served_by(&proxy, &["b"]).await;
    let (ok, failed) = load.finish().await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);

    // etcd goes away: the last set keeps serving and the error shows.
    etcd.kill();
    assert_eventually(WAIT, "etcd error shown", || async {
        let report = upstreams(&proxy).await;
        let discovery = &report["upstreams"][0]["discovery"];
        (discovery["state"] == "error" && discovery["last_error"].as_str().is_some())
            .then_some(())
            .ok_or_else(|| report.to_string())
    })
    .await;
    assert_eq!(
        names(&proxy, "/", 6).await,
        BTreeSet::from(["b".to_owned()])
    );
    let health = get(&proxy.admin_url("/admin/health")).await.unwrap().text();
    assert!(health.contains("etcd at"), "{health}");
}

#[tokio::test]
async fn etcd_discovery_reports_a_frozen_etcd_recovers_quickly_and_keeps_the_last_set_when_emptied()
{
    let etcd = Etcd::start().await;
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let prefix = "/weir/upstreams/app/";
    etcd.put(&format!("{prefix}a"), &endpoint_json(&a, 1)).await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\ndiscovery = {{ kind = \"etcd\", endpoints = [\"{}\"], prefix = \"{prefix}\" }}\n\
         [[routes]]\nupstream = \"app\"\n",
        config_head(),
        etcd.client
    ));
    eventually_served_by(&proxy, &["a"]).await;

    // Frozen: the watch stream stays open and silent; the keep-alive notices.
    etcd.freeze();
    let frozen_at = std::time::Instant::now();
    let d = eventually_state(&proxy, "error", "a frozen etcd is reported").await;
    assert!(d["last_error"].as_str().is_some(), "{d}");
    eprintln!("frozen etcd reported after {:?}", frozen_at.elapsed());
    assert_eq!(
        names(&proxy, "/", 4).await,
        BTreeSet::from(["a".to_owned()]),
        "the last set keeps serving"
    );

    // Back: a change made now is applied without waiting out a long backoff.
    etcd.thaw();
    etcd.put(&format!("{prefix}b"), &endpoint_json(&b, 1)).await;
    let thawed_at = std::time::Instant::now();
    eventually_served_by(&proxy, &["a", "b"]).await;
    eprintln!("change after thaw applied after {:?}", thawed_at.elapsed());
    eventually_state(&proxy, "ok", "discovery is ok again").await;

    // Every key deleted at once (a writer that clears, then re-adds): the
    // last set keeps serving, as a warning, until keys come back.
    etcd.delete_prefix(prefix).await;
    eventually_state(&proxy, "warning", "an empty prefix is a warning").await;
    assert_eq!(
        names(&proxy, "/", 12).await,
        BTreeSet::from(["a".to_owned(), "b".to_owned()]),
        "the last non-empty set keeps serving"
    );
    etcd.put(&format!("{prefix}a"), &endpoint_json(&a, 1)).await;
    eventually_served_by(&proxy, &["a"]).await;
    assert_eq!(discovery_state(&proxy).await["state"], "ok");
}

/// The discovery status of upstream `app`.
async fn discovery_state(proxy: &TestProxy) -> Value {
    upstreams(proxy).await["upstreams"][0]["discovery"].clone()
}

/// Waits until upstream `app`'s discovery state is `state`; returns the
/// status then.
async fn eventually_state(proxy: &TestProxy, state: &str, what: &str) -> Value {
    assert_eventually(WAIT, what, || async {
        let d = discovery_state(proxy).await;
        (d["state"] == state)
            .then_some(())
            .ok_or_else(|| d.to_string())
    })
    .await;
    discovery_state(proxy).await
}

#[tokio::test]
async fn file_discovery_recovers_keeps_the_last_set_when_emptied_and_merges_duplicates() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("endpoints.json");
    let write = |text: &str| {
        let tmp = dir.path().join("endpoints.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &list).unwrap();
    };
    let good = format!("[\"{}\", \"{}\"]", a.addr, b.addr);
    write(&good);
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\ndiscovery = {{ kind = \"file\", path = \"{}\" }}\n[[routes]]\nupstream = \"app\"\n",
        config_head(),
        list.display()
    ));
    eventually_served_by(&proxy, &["a", "b"]).await;

    // A bad file, then the same good file again: the error clears.
    write("[not json");
    eventually_state(&proxy, "error", "discovery reports the error").await;
    write(&good);
    eventually_state(&proxy, "ok", "a restored good file clears the error").await;

    // An empty list is not applied: the last set keeps serving, as a warning.
    write("[]");
    eventually_state(&proxy, "warning", "an empty list is a warning").await;
    assert_eq!(
        names(&proxy, "/", 12).await.len(),
        2,
        "the last set still serves"
    );

    // A duplicate is merged: `a` listed three times does not get three shares.
    write(&format!(
        "[\"{}\", \"{}\", \"{}\", \"{}\"]",
        a.addr, a.addr, a.addr, b.addr
    ));
    assert_eventually(WAIT, "the duplicates are merged", || async {
        let u = upstreams(&proxy).await;
        let endpoints = u["upstreams"][0]["endpoints"]
            .as_array()
            .map_or(0, Vec::len);
        let d = &u["upstreams"][0]["discovery"];
        if endpoints == 2 && d["state"] == "ok" {
            Ok(())
        } else {
            Err(u.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn file_discovery_applies_an_empty_list_when_allowed() {
    let a = TestUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("endpoints.json");
    std::fs::write(&list, format!("[\"{}\"]", a.addr)).unwrap();
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\ndiscovery = {{ kind = \"file\", path = \"{}\", allow_empty = true }}\n[[routes]]\nupstream = \"app\"\n",
        config_head(),
        list.display()
    ));
    eventually_served_by(&proxy, &["a"]).await;
    let tmp = dir.path().join("endpoints.json.tmp");
    std::fs::write(&tmp, "[]").unwrap();
    std::fs::rename(&tmp, &list).unwrap();
    assert_eventually(WAIT, "the empty list is applied", || async {
        let reply = get(&proxy.url("/")).await.map_err(|e| e.to_string())?;
        if reply.status == 503 {
            Ok(())
        } else {
            Err(reply.status.to_string())
        }
    })
    .await;
}
