//! The six shipped policies end to end: the real proxy, the real `.wasm`
//! files from `plugins/`, controllable upstreams, and what a user can observe
//! (statuses, headers, upstream request counts, `/admin/plugins`, `/metrics`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weir_tests::upstream::{Misbehaviour, RawPeer, refused_addr};
use weir_tests::{TestProxy, TestUpstream, assert_eventually, client, config_head, get, send};

use super::plugins::{proxy_with, statuses};

/// Every shipped policy, by name (also the intake tests' full chain).
pub(super) const ALL: [(&str, &str); 6] = [
    ("breaker", weir_tests::plugins::BREAKER),
    ("retry", weir_tests::plugins::RETRY),
    ("throttle", weir_tests::plugins::THROTTLE),
    ("cache", weir_tests::plugins::CACHE),
    ("balancer", weir_tests::plugins::BALANCER),
    ("timeout", weir_tests::plugins::TIMEOUT),
];

/// A proxy with every shipped policy installed and one upstream `u` over
/// `endpoints`, plus `routes` (TOML text).
fn proxy(head_extra: &str, endpoints: &[SocketAddr], routes: &str) -> TestProxy {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let config = format!(
        "{}{head_extra}[upstreams.u]\nendpoints = [{}]\n{routes}",
        config_head(),
        list.join(", ")
    );
    proxy_with(&ALL, &config)
}

/// One route named `r` over upstream `u` with `plugins` (TOML inline tables).
fn route(plugins: &str) -> String {
    format!("[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [{plugins}]\n")
}

/// The value of `weir_plugin_<metric>{route="r",plugin=<plugin>}`, 0 when absent.
async fn metric(proxy: &TestProxy, metric: &str, plugin: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    let prefix = format!("weir_plugin_{metric}{{route=\"r\",plugin=\"{plugin}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The `status()` of `plugin` on route `r`.
async fn status(proxy: &TestProxy, plugin: &str) -> serde_json::Value {
    statuses(proxy, plugin)
        .await
        .into_iter()
        .find(|(route, _)| route == "r")
        .map(|(_, s)| s)
        .unwrap_or_default()
}

async fn request(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> weir_tests::Reply {
    let mut builder = Request::builder().method(method).uri(proxy.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(&client(), builder.body(Full::default()).unwrap())
        .await
        .unwrap()
}

fn total(upstreams: &[&TestUpstream]) -> usize {
    upstreams.iter().map(|u| u.requests()).sum()
}

// ---------------------------------------------------------------- breaker

#[tokio::test]
async fn breaker_trips_answers_locally_and_half_open_probes_decide() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(
        "",
        &[upstream.addr],
        &route(
            r#"{ name = "breaker", config = { failure_threshold = 3, open_timeout = "300ms", half_open_max_probes = 1 } }"#,
        ),
    );
    for _ in 0..3 {
        let reply = get(&proxy.url("/status/503")).await.unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.header("x-upstream"),
            Some("u"),
            "the upstream answered"
        );
    }
    assert_eq!(upstream.requests(), 3);
    let s = status(&proxy, "breaker").await;
    assert_eq!(s["state"], "open", "{s}");
    assert_eq!(s["transitions"]["opened"], 1, "{s}");

    // Open: answered locally, the upstream is not contacted.
    let reply = get(&proxy.url("/status/200")).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-upstream"), None);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry_after <= 1,
        "open time left, in seconds: {retry_after}"
    );
    let proxy_status = reply.header("proxy-status").unwrap();
    assert!(
        proxy_status.contains("destination_unavailable") && proxy_status.contains("breaker"),
        "{proxy_status}"
    );
    assert_eq!(upstream.requests(), 3);

    // After the open time, one failing probe re-opens it.
    let open_time_over = || async {
        let s = status(&proxy, "breaker").await;
        if s["open_remaining_ms"] == 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    };
    assert_eventually(Duration::from_secs(5), "open time over", open_time_over).await;
    let reply = get(&proxy.url("/status/503")).await.unwrap();
    assert_eq!(
        reply.header("x-upstream"),
        Some("u"),
        "the probe went upstream"
    );
    assert_eq!(upstream.requests(), 4);
    let s = status(&proxy, "breaker").await;
    assert_eq!(s["state"], "open", "a failed probe re-opens: {s}");
    assert_eq!(s["transitions"]["opened"], 2, "{s}");
    assert_eq!(s["transitions"]["half_opened"], 1, "{s}");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 503);
    assert_eq!(upstream.requests(), 4);

    // Half-open again: one probe at a time; while it is in flight the next
    // request is refused; its success closes the breaker.
    assert_eventually(Duration::from_secs(5), "open time over", open_time_over).await;
    let url = proxy.url("/slow/1000");
    let probe = tokio::spawn(async move { get(&url).await.unwrap() });
    assert_eventually(Duration::from_secs(5), "probe reached upstream", || async {
        if upstream.requests() == 5 {
            Ok(())
        } else {
            Err(upstream.requests().to_string())
        }
    })
    .await;
    let s = status(&proxy, "breaker").await;
    assert_eq!(s["state"], "half_open", "{s}");
    assert_eq!(s["half_open"]["probes_in_flight"], 1, "{s}");
    let refused = get(&proxy.url("/")).await.unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(upstream.requests(), 5, "no second probe");
    assert_eq!(probe.await.unwrap().status, 200);
    let s = status(&proxy, "breaker").await;
    assert_eq!(s["state"], "closed", "{s}");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(metric(&proxy, "breaker_opened_total", "breaker").await, 2.0);
    assert_eq!(metric(&proxy, "breaker_closed_total", "breaker").await, 1.0);
    assert!(metric(&proxy, "breaker_rejected_total", "breaker").await >= 3.0);
}

#[tokio::test]
async fn breaker_endpoint_scope_ejects_the_failing_endpoint() {
    let good = TestUpstream::start("good").await;
    let bad = refused_addr();
    let proxy = proxy(
        "",
        &[bad, good.addr],
        &route(
            r#"{ name = "breaker", config = { scope = "endpoint", failure_threshold = 2, open_timeout = "30s" } }, { name = "balancer" }"#,
        ),
    );
    assert_eventually(
        Duration::from_secs(10),
        "refused endpoint ejected",
        || async {
            // Traffic feeds the breaker its outcomes.
            let _ = get(&proxy.url("/")).await;
            let json: serde_json::Value = get(&proxy.admin_url("/admin/upstreams"))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::from_slice(&r.body).map_err(|e| e.to_string()))?;
            let endpoints = json["upstreams"][0]["endpoints"].as_array().cloned();
            let e = endpoints
                .unwrap_or_default()
                .into_iter()
                .find(|e| e["address"] == bad.to_string())
                .ok_or("endpoint missing")?;
            if e["ejected"] == true {
                Ok(())
            } else {
                Err(e.to_string())
            }
        },
    )
    .await;
    let before = good.requests();
    for _ in 0..10 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-upstream"), Some("good"));
    }
    assert_eq!(good.requests(), before + 10);
    let s = status(&proxy, "breaker").await;
    assert_eq!(s["ejected"], 1, "{s}");
}

// ---------------------------------------------------------------- retry

#[tokio::test]
async fn retry_recovers_a_get_from_a_refused_endpoint() {
    let good = TestUpstream::start("good").await;
    let proxy = proxy(
        "",
        &[refused_addr(), good.addr],
        &route(r#"{ name = "retry" }, { name = "balancer" }"#),
    );
    for _ in 0..4 {
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("good"));
    }
    assert_eq!(good.requests(), 4);
    let retries = metric(&proxy, "retry_retries_total", "retry").await;
    assert!(retries >= 1.0, "round robin sent some to the refused one");
    assert_eq!(
        metric(&proxy, "retry_recovered_total", "retry").await,
        retries
    );
    // A refused connection sent nothing: even a POST may be retried.
    let reply = request(&proxy, "POST", "/", &[]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn retry_repeats_a_post_only_with_an_idempotency_key() {
    let (a, b) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    );
    let proxy = proxy(
        "",
        &[a.addr, b.addr],
        &route(
            r#"{ name = "retry", config = { max_attempts = 3, retry_on = ["gateway-error"], backoff_base = "1ms", backoff_max = "2ms" } }, { name = "balancer" }"#,
        ),
    );
    // The POST reached the upstream and failed: not safe to repeat.
    let reply = request(&proxy, "POST", "/status/503", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(total(&[&a, &b]), 1, "not retried");
    assert_eq!(
        metric(&proxy, "retry_skipped_unsafe_total", "retry").await,
        1.0
    );
    // With an Idempotency-Key it is.
    let reply = request(&proxy, "POST", "/status/503", &[("idempotency-key", "k1")]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(total(&[&a, &b]), 1 + 3, "three attempts");
    // A GET is idempotent.
    let reply = request(&proxy, "GET", "/status/503", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(total(&[&a, &b]), 1 + 3 + 3);
    assert_eq!(metric(&proxy, "retry_retries_total", "retry").await, 4.0);
    assert_eq!(
        metric(&proxy, "retry_attempts_exhausted_total", "retry").await,
        2.0
    );
}

#[tokio::test]
async fn retry_budget_exhaustion_stops_retries() {
    let (a, b) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    );
    let proxy = proxy(
        "",
        &[a.addr, b.addr],
        &route(
            r#"{ name = "retry", config = { max_attempts = 3, retry_on = ["gateway-error"], backoff_base = "1ms", backoff_max = "2ms", budget_ratio = 0.1, budget_min_per_second = 0, budget_window = "60s" } }, { name = "balancer" }"#,
        ),
    );
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/status/503")).await.unwrap().status, 503);
    }
    let retries = metric(&proxy, "retry_retries_total", "retry").await;
    let exhausted = metric(&proxy, "retry_budget_exhausted_total", "retry").await;
    assert!(retries <= 3.0, "the budget allows ~10% retries: {retries}");
    assert!(exhausted >= 15.0, "budget exhausted: {exhausted}");
    assert_eq!(total(&[&a, &b]) as f64, 20.0 + retries);
    let s = status(&proxy, "retry").await;
    assert_eq!(s["skipped"]["budget"].as_f64().unwrap(), exhausted, "{s}");
}

// ---------------------------------------------------------------- throttle

#[tokio::test]
async fn throttle_rate_limit_answers_429() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(
        "",
        &[upstream.addr],
        &route(r#"{ name = "throttle", config = { rate = 0.1, burst = 2 } }"#),
    );
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    let reply = get(&proxy.url("/")).await.unwrap();
    assert_eq!(reply.status, 429);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let ps = reply.header("proxy-status").unwrap();
    assert!(
        ps.contains("http_request_denied") && ps.contains("rate limit"),
        "{ps}"
    );
    assert_eq!(upstream.requests(), 2);
    assert_eq!(
        metric(&proxy, "throttle_rejected_rate_total", "throttle").await,
        1.0
    );
}

#[tokio::test]
async fn throttle_concurrency_limit_and_release_on_disconnect() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(
        "",
        &[upstream.addr],
        &route(r#"{ name = "throttle", config = { max_concurrent = 1 } }"#),
    );
    let reached = |n: usize| {
        let upstream = &upstream;
        move || async move {
            if upstream.requests() == n {
                Ok(())
            } else {
                Err(upstream.requests().to_string())
            }
        }
    };
    // A slow request holds the only slot: the next one gets 503.
    let url = proxy.url("/slow/1500");
    let slow = tokio::spawn(async move { get(&url).await.unwrap() });
    assert_eventually(Duration::from_secs(5), "slow in flight", reached(1)).await;
    let reply = get(&proxy.url("/")).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let ps = reply.header("proxy-status").unwrap();
    assert!(ps.contains("concurrency limit"), "{ps}");
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);

    // A client that goes away mid-request gives its slot back.
    let url = proxy.url("/slow/5000");
    let gone = tokio::spawn(async move { get(&url).await });
    assert_eventually(Duration::from_secs(5), "in flight", reached(3)).await;
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 503);
    gone.abort();
    assert_eventually(Duration::from_secs(5), "slot released", || async {
        let reply = get(&proxy.url("/")).await.map_err(|e| e.to_string())?;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply.status.to_string())
        }
    })
    .await;
    let s = status(&proxy, "throttle").await;
    assert_eq!(s["in_flight"], 0, "{s}");
    assert!(s["rejected"]["concurrency"].as_u64().unwrap() >= 2, "{s}");
}

#[tokio::test]
async fn throttle_keys_are_limited_independently() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(
        "",
        &[upstream.addr],
        &route(
            r#"{ name = "throttle", config = { rate = 0.1, burst = 1, key = "header:x-user" } }"#,
        ),
    );
    let as_user = |user: &'static str| {
        let proxy = &proxy;
        async move { request(proxy, "GET", "/", &[("x-user", user)]).await }
    };
    assert_eq!(as_user("alice").await.status, 200);
    assert_eq!(as_user("alice").await.status, 429);
    assert_eq!(as_user("bob").await.status, 200, "bob has his own bucket");
    assert_eq!(as_user("bob").await.status, 429);
    assert_eq!(as_user("carol").await.status, 200);
    assert_eq!(upstream.requests(), 3);
    let s = status(&proxy, "throttle").await;
    assert_eq!(s["keys"], 3, "{s}");
}

/// A `redis-server` child on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let redis = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn throttle_global_mode_shares_one_limit_across_two_proxies_through_redis() {
    let redis = Redis::start();
    let upstream = TestUpstream::start("u").await;
    let head = format!(
        "[plugins]\nredis_url = \"redis://127.0.0.1:{}/0\"\n",
        redis.port
    );
    // 0.5/s over a 10 s window: 5 requests per window, for both proxies.
    let routes = route(
        r#"{ name = "throttle", config = { rate = 0.5, global = true, global_window = "10s", name = "shared-e2e", fail_open = false } }"#,
    );
    let one = proxy(&head, &[upstream.addr], &routes);
    let two = proxy(&head, &[upstream.addr], &routes);
    let mut admitted = [0, 0];
    let mut rejected = 0;
    for i in 0..12 {
        let proxy = if i % 2 == 0 { &one } else { &two };
        let reply = get(&proxy.url("/")).await.unwrap();
        match reply.status.as_u16() {
            200 => admitted[i % 2] += 1,
            429 => {
                assert!(reply.header("retry-after").is_some());
                rejected += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(admitted[0] + admitted[1], 5, "one limit: {admitted:?}");
    assert!(admitted[0] > 0 && admitted[1] > 0, "{admitted:?}");
    assert_eq!(rejected, 7);
    assert_eq!(upstream.requests(), 5);
    for p in [&one, &two] {
        assert_eq!(status(p, "throttle").await["store_errors"], 0);
    }
}

// ---------------------------------------------------------------- balancer

async fn three() -> [TestUpstream; 3] {
    [
        TestUpstream::start("u0").await,
        TestUpstream::start("u1").await,
        TestUpstream::start("u2").await,
    ]
}

#[tokio::test]
async fn balancer_round_robin_spreads_evenly() {
    let ups = three().await;
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let proxy = proxy(
        "",
        &addrs,
        &route(r#"{ name = "balancer", config = { algorithm = "round_robin" } }"#),
    );
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let reply = get(&proxy.url("/")).await.unwrap();
        *seen
            .entry(reply.header("x-upstream").unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{seen:?}"
    );
    for u in &ups {
        assert_eq!(u.requests(), 10);
    }
}

#[tokio::test]
async fn balancer_consistent_hashing_keeps_a_key_on_one_upstream() {
    let ups = three().await;
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let routes = "[[routes]]\nname = \"ring\"\npath_prefix = \"/ring\"\nupstream = \"u\"\n\
         plugins = [{ name = \"balancer\", config = { algorithm = \"ring_hash\", hash_on = \"header:x-user\" } }]\n\
         [[routes]]\nname = \"maglev\"\npath_prefix = \"/maglev\"\nupstream = \"u\"\n\
         plugins = [{ name = \"balancer\", config = { algorithm = \"maglev\", hash_on = \"header:x-user\" } }]\n";
    let proxy = proxy("", &addrs, routes);
    for path in ["/ring", "/maglev"] {
        let mut owners = BTreeMap::<String, String>::new();
        for round in 0..3 {
            for user in 0..20 {
                let user = format!("user-{user}");
                let reply = request(&proxy, "GET", path, &[("x-user", &user)]).await;
                let upstream = reply.header("x-upstream").unwrap().to_owned();
                if round == 0 {
                    owners.insert(user, upstream);
                } else {
                    assert_eq!(owners[&user], upstream, "{path}: {user} moved");
                }
            }
        }
        let used: std::collections::BTreeSet<_> = owners.values().collect();
        assert!(used.len() >= 2, "{path}: keys spread: {owners:?}");
    }
}

// ---------------------------------------------------------------- timeout

#[tokio::test]
async fn timeout_answers_504_and_passes_the_budget_upstream() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(
        "",
        &[upstream.addr],
        &route(r#"{ name = "timeout", config = { deadline = "300ms" } }"#),
    );
    let started = Instant::now();
    let reply = get(&proxy.url("/slow/3000")).await.unwrap();
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    let ps = reply.header("proxy-status").unwrap();
    assert!(ps.contains("http_response_timeout"), "{ps}");

    let reply = get(&proxy.url("/headers")).await.unwrap();
    assert_eq!(reply.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let budget: u64 = seen["x-weir-budget-ms"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(budget > 0 && budget <= 300, "{budget}");
    assert_eq!(
        metric(&proxy, "timeout_deadline_exceeded_total", "timeout").await,
        1.0
    );
}

// ---------------------------------------------------------------- the chain

#[tokio::test]
async fn the_full_chain_caches_and_survives_a_refused_endpoint() {
    let ups = three().await;
    let mut addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    addrs.push(refused_addr());
    // A peer that resets after reading the request, for a failure that
    // reached the upstream.
    let reset = RawPeer::start(Misbehaviour::Reset).await;
    addrs.push(reset.addr);
    let proxy = proxy(
        "",
        &addrs,
        &route(
            r#"
  { name = "timeout",  config = { deadline = "5s" } },
  { name = "throttle", config = { rate = 1000, max_concurrent = 100 } },
  { name = "breaker",  config = { failure_threshold = 5, open_timeout = "1s" } },
  { name = "retry",    config = { max_attempts = 4, retry_on = ["connect-failure", "reset", "gateway-error"], backoff_base = "1ms", backoff_max = "5ms", budget_min_per_second = 100 } },
  { name = "cache" },
  { name = "balancer", config = { algorithm = "round_robin" } },
"#,
        ),
    );
    let refs: Vec<&TestUpstream> = ups.iter().collect();
    // A cacheable GET: the first goes upstream and is stored, the second is a hit.
    let first = get(&proxy.url("/cacheable/60/100")).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body.len(), 100);
    let cs = first.header("cache-status").unwrap();
    assert!(cs.contains("fwd=uri-miss") && cs.contains("stored"), "{cs}");
    let upstream_after_miss = total(&refs);
    let second = get(&proxy.url("/cacheable/60/100")).await.unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    let cs = second.header("cache-status").unwrap();
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(
        total(&refs),
        upstream_after_miss,
        "a hit does not go upstream"
    );

    // Two bad endpoints of five: every request still succeeds.
    for i in 0..15 {
        let reply = get(&proxy.url(&format!("/item/{i}"))).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.header("x-upstream").unwrap().starts_with('u'));
    }
    assert!(metric(&proxy, "retry_retries_total", "retry").await >= 2.0);
    assert_eq!(status(&proxy, "breaker").await["state"], "closed");
    assert!(metric(&proxy, "cache_hits_total", "cache").await >= 1.0);
    assert!(metric(&proxy, "throttle_allowed_total", "throttle").await >= 17.0);
}
