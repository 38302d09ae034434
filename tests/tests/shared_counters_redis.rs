//! Throttle's `global` mode across two "proxies" (two engines, each with its
//! own host services) sharing one limit through a real `redis-server`
//! started on a free loopback port. Skipped, with a message, when
//! `redis-server` is not installed (`.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use weir_proxy::plugin::{
    Attempt, Chain, Core, EndpointFacts, EndpointInfo, HostServices, Outcome, PluginEngine,
    PluginInstance, RequestView, ResponseHead, TrapPolicy,
};
use weir_tests::plugins;

/// A `redis-server` child, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ok200;

impl Core<()> for Ok200 {
    fn endpoints(&mut self, _: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>> {
        None
    }

    async fn send(&mut self, _: &mut RequestView, _: &Attempt<'_>) -> (Outcome<()>, Option<u32>) {
        let head = ResponseHead {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        };
        (Outcome::Response { head, body: () }, Some(1))
    }
}

/// One proxy's throttle chain, its counters in the Redis at `url`.
fn proxy(url: &str) -> Chain {
    proxy_with(
        url,
        r#"{"rate":0.5,"global":true,"global_window":"10s","name":"shared-limit","fail_open":false}"#,
    )
}

#[tokio::test]
async fn two_proxies_share_one_limit_through_redis() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let redis = Redis::start().expect("start redis-server");
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let (a, b) = (proxy(&url), proxy(&url));
    let mut allowed = 0;
    let mut rejected = 0;
    for i in 0..10 {
        let chain = if i % 2 == 0 { &a } else { &b };
        let out = chain.run(&mut Box::default(), &mut Ok200).await.0;
        match out.status().map(|s| s.as_u16()) {
            Some(200) => allowed += 1,
            Some(429) => rejected += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // 0.5/s over a 10 s window: 5 requests in all, however they are spread.
    assert_eq!((allowed, rejected), (5, 5));

    // Redis gone: `fail_open: false` rejects rather than over-admitting.
    drop(redis);
    let out = a.run(&mut Box::default(), &mut Ok200).await.0;
    assert_eq!(out.status().map(|s| s.as_u16()), Some(429));
}

/// One proxy's throttle chain over Redis at `url`, with `config` (JSON).
fn proxy_with(url: &str, config: &str) -> Chain {
    let services = HostServices::with_redis(url, Duration::from_millis(200)).unwrap();
    let engine =
        PluginEngine::with_services(weir_tests::engine_config(), Arc::new(services)).unwrap();
    let plugin = engine.load_file(plugins::THROTTLE.as_ref()).unwrap();
    let layer = PluginInstance::new(&plugin, config.as_bytes().to_vec()).unwrap();
    Chain::new(vec![Arc::new(layer)], TrapPolicy::FailClosed).unwrap()
}

async fn allowed_of(chain: &Chain, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        let out = chain.run(&mut Box::default(), &mut Ok200).await.0;
        if out.status().map(|s| s.as_u16()) == Some(200) {
            allowed += 1;
        }
    }
    allowed
}

#[tokio::test]
async fn redis_down_falls_back_to_a_local_share_not_to_no_limit() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let redis = Redis::start().expect("start redis-server");
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    // 10/s shared by an expected 2 proxies: 5/s (burst 5) each while Redis is down.
    let local = proxy_with(
        &url,
        r#"{"rate":10,"global":true,"name":"fallback-local","expected_proxies":2}"#,
    );
    let unlimited = proxy_with(
        &url,
        r#"{"rate":10,"global":true,"name":"fallback-unlimited","fail_open":"unlimited"}"#,
    );
    assert!(
        allowed_of(&local, 3).await == 3,
        "Redis up: the global limit admits"
    );
    drop(redis);
    let admitted = allowed_of(&local, 50).await;
    assert!(
        (1..=8).contains(&admitted),
        "{admitted} of 50 admitted by the local fallback (5/s, burst 5)"
    );
    assert_eq!(
        allowed_of(&unlimited, 50).await,
        50,
        "\"unlimited\" is chosen explicitly"
    );
}
