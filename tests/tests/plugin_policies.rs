//! The shipped policies (`plugins/`), built to wasm, in the real host
//! runtime, driving the real `Chain` around a scripted fake core: at least
//! one behaviour per plugin, plus the host imports they need (endpoint
//! marks, request flags, the request deadline, the client address).
// Helpers outside #[test] fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use weir_proxy::plugin::{
    Attempt, Chain, Core, EndpointFacts, EndpointInfo, EngineConfig, Outcome, PluginEngine,
    PluginInstance, RequestView, ResponseHead, TrapPolicy,
};
use weir_proxy::upstream::{ErrorClass, UpstreamError};
use weir_tests::plugins;

/// One scripted upstream outcome.
#[derive(Clone, Copy, Debug)]
enum Step {
    Status(u16),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    Error(ErrorClass),
    Hang,
}

/// What the core saw of one attempt.
#[derive(Debug)]
struct Seen {
    endpoint: Option<u32>,
    timeout: Option<Duration>,
    budget_header: Option<String>,
}

/// Endpoints 1..=n, answering from a script (200 once it runs out).
struct ScriptCore {
    endpoints: u32,
    script: Vec<Step>,
    seen: Vec<Seen>,
}

impl ScriptCore {
    fn new(script: &[Step]) -> Self {
        Self {
            endpoints: 3,
            script: script.to_vec(),
            seen: Vec::new(),
        }
    }
}

impl Core<()> for ScriptCore {
    fn endpoints(&mut self, out: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>> {
        out.extend((1..=self.endpoints).map(|id| EndpointInfo {
            id,
            weight: 1,
            healthy: true,
            ..Default::default()
        }));
        None
    }

    async fn send(&mut self, req: &mut RequestView, a: &Attempt<'_>) -> (Outcome<()>, Option<u32>) {
        self.seen.push(Seen {
            endpoint: a.endpoint,
            timeout: a.timeout,
            budget_header: req
                .headers
                .get("x-weir-budget-ms")
                .map(|v| v.to_str().unwrap().to_owned()),
        });
        let step = self
            .script
            .get(self.seen.len() - 1)
            .copied()
            .unwrap_or(Step::Status(200));
        let endpoint = a.endpoint.or(Some(1));
        let response = |s: u16, headers: HeaderMap| Outcome::Response {
            head: ResponseHead {
                status: StatusCode::from_u16(s).unwrap(),
                headers,
            },
            body: (),
        };
        let outcome = match step {
            Step::Status(s) => response(s, HeaderMap::new()),
            Step::RetryAfter(s, after) => {
                let mut headers = HeaderMap::new();
                headers.insert("retry-after", after.parse().unwrap());
                response(s, headers)
            }
            Step::Error(class) => Outcome::Error(UpstreamError::new(
                class,
                class != ErrorClass::ConnectRefused,
                "scripted failure",
            )),
            Step::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        };
        (outcome, endpoint)
    }
}

fn engine() -> PluginEngine {
    PluginEngine::new(EngineConfig {
        memory_limit: 16 << 20,
        ..weir_tests::engine_config()
    })
    .unwrap()
}

fn layer(engine: &PluginEngine, path: &str, config: &str) -> Arc<PluginInstance> {
    let plugin = engine.load_file(path.as_ref()).unwrap();
    Arc::new(PluginInstance::new(&plugin, config.as_bytes().to_vec()).unwrap())
}

fn chain(layers: Vec<Arc<PluginInstance>>) -> Chain {
    Chain::new(layers, TrapPolicy::FailClosed).unwrap()
}

fn request(method: Method) -> Box<RequestView> {
    Box::new(RequestView {
        method,
        uri: "/api/items".parse().unwrap(),
        ..RequestView::default()
    })
}

fn status<B>(o: &Outcome<B>) -> Option<u16> {
    o.status().map(|s| s.as_u16())
}

fn header<'a, B>(o: &'a Outcome<B>, name: &str) -> Option<&'a str> {
    match o {
        Outcome::Local(a) => a.headers.get(name).map(|v| v.to_str().unwrap()),
        Outcome::Response { head, .. } => head.headers.get(name).map(|v| v.to_str().unwrap()),
        Outcome::Error(_) | Outcome::Client(_) => None,
    }
}

fn status_json(p: &PluginInstance) -> serde_json::Value {
    serde_json::from_str(&p.status().unwrap().unwrap()).unwrap()
}

#[tokio::test]
async fn breaker_opens_answers_503_and_keeps_its_state_across_a_reload() {
    let engine = engine();
    let cfg = r#"{"failure_threshold":2,"open_timeout":"30s"}"#;
    let breaker = layer(&engine, plugins::BREAKER, cfg);
    let c = chain(vec![breaker.clone()]);
    let mut core = ScriptCore::new(&[Step::Status(503), Step::Error(ErrorClass::Reset)]);
    for _ in 0..2 {
        drop(c.run(&mut request(Method::GET), &mut core).await);
    }
    let out = c.run(&mut request(Method::GET), &mut core).await.0;
    assert_eq!(status(&out), Some(503));
    assert!(matches!(out, Outcome::Local(_)));
    assert_eq!(core.seen.len(), 2, "the open breaker kept the upstream out");
    assert!(header(&out, "retry-after").unwrap().parse::<u32>().unwrap() >= 29);
    assert!(
        header(&out, "proxy-status")
            .unwrap()
            .contains("destination_unavailable")
    );
    assert_eq!(status_json(&breaker)["state"], "open");
    let metrics = breaker.metrics();
    assert!(
        metrics
            .iter()
            .any(|m| m.name == "breaker_opened_total" && m.value == 1.0)
    );

    // Hot reload: a new instance restores the old one's snapshot.
    let fresh = layer(&engine, plugins::BREAKER, cfg);
    fresh
        .restore(breaker.snapshot().unwrap().unwrap().into())
        .unwrap();
    assert_eq!(status_json(&fresh)["state"], "open");
}

#[tokio::test]
async fn breaker_per_endpoint_marks_the_endpoint_for_the_core() {
    let engine = engine();
    let cfg = r#"{"scope":"endpoint","failure_threshold":1,"open_timeout":"10s","max_ejection_percent":100}"#;
    let c = chain(vec![
        layer(&engine, plugins::BREAKER, cfg),
        layer(&engine, plugins::BALANCER, r#"{"algorithm":"round_robin"}"#),
    ]);
    let mut core = ScriptCore::new(&[Step::Status(502)]);
    drop(c.run(&mut request(Method::GET), &mut core).await);
    let mut marks = Vec::new();
    c.drain_endpoint_marks(&mut marks);
    let failed = core.seen[0].endpoint.unwrap();
    assert_eq!(marks, [(failed, Duration::from_secs(10))]);
    c.drain_endpoint_marks(&mut marks);
    assert_eq!(marks.len(), 1, "drained once");
}

#[tokio::test]
async fn retry_retries_elsewhere_within_its_per_try_timeout() {
    let engine = engine();
    let retry = layer(
        &engine,
        plugins::RETRY,
        r#"{"max_attempts":3,"per_try_timeout":"250ms","backoff_base":"1ms","backoff_max":"2ms"}"#,
    );
    let c = chain(vec![
        retry.clone(),
        layer(&engine, plugins::BALANCER, r#"{"algorithm":"random"}"#),
    ]);
    let mut core = ScriptCore::new(&[Step::Status(503), Step::Error(ErrorClass::ConnectRefused)]);
    let out = c.run(&mut request(Method::GET), &mut core).await.0;
    assert_eq!(status(&out), Some(200));
    assert_eq!(core.seen.len(), 3);
    let mut eps: Vec<u32> = core.seen.iter().map(|s| s.endpoint.unwrap()).collect();
    eps.sort_unstable();
    assert_eq!(eps, [1, 2, 3], "never the same endpoint twice");
    assert!(
        core.seen
            .iter()
            .all(|s| s.timeout == Some(Duration::from_millis(250)))
    );
    assert_eq!(status_json(&retry)["recovered"], 1);
}

#[tokio::test]
async fn retry_reads_a_retry_after_date_against_the_wall_clock() {
    let engine = engine();
    let retry = layer(
        &engine,
        plugins::RETRY,
        r#"{"retry_on":["429"],"retry_after_max":"5s","backoff_base":"1ms","backoff_max":"2ms"}"#,
    );
    let c = chain(vec![retry.clone()]);
    // A date already past: retried at once.
    let past = "Thu, 01 Jan 1970 00:00:00 GMT";
    let mut core = ScriptCore::new(&[Step::RetryAfter(429, past)]);
    let out = c.run(&mut request(Method::GET), &mut core).await.0;
    assert_eq!((status(&out), core.seen.len()), (Some(200), 2));
    // A date decades ahead is longer than retry_after_max: passed on.
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let mut core = ScriptCore::new(&[Step::RetryAfter(429, future)]);
    let out = c.run(&mut request(Method::GET), &mut core).await.0;
    assert_eq!((status(&out), core.seen.len()), (Some(429), 1));
    assert_eq!(status_json(&retry)["skipped"]["retry_after_too_long"], 1);
}

#[tokio::test]
async fn retry_leaves_unsafe_requests_alone() {
    let engine = engine();
    let c = chain(vec![layer(&engine, plugins::RETRY, "")]);
    let mut core = ScriptCore::new(&[Step::Status(503)]);
    let out = c.run(&mut request(Method::POST), &mut core).await.0;
    assert_eq!((status(&out), core.seen.len()), (Some(503), 1));
    // A body that outgrew the replay buffer is never retried, even for GET.
    let mut core = ScriptCore::new(&[Step::Error(ErrorClass::ConnectRefused)]);
    let mut req = request(Method::GET);
    req.body_not_replayable = true;
    drop(c.run(&mut req, &mut core).await);
    assert_eq!(core.seen.len(), 1);
}

#[tokio::test]
async fn throttle_releases_the_slot_of_a_dropped_request() {
    let engine = engine();
    let throttle = layer(
        &engine,
        plugins::THROTTLE,
        r#"{"max_concurrent":1,"key":"client"}"#,
    );
    let c = chain(vec![throttle.clone()]);
    let client = |last: u8| {
        let mut req = request(Method::GET);
        req.client_addr = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)));
        req
    };
    // Client .1 holds its only slot on a hanging upstream…
    let mut hang = ScriptCore::new(&[Step::Hang]);
    let mut held = client(1);
    let run = c.run(&mut held, &mut hang);
    assert!(
        tokio::time::timeout(Duration::from_millis(30), run)
            .await
            .is_err()
    );
    // …dropping the request (client gone) ran on_end and freed it.
    assert_eq!(status_json(&throttle)["in_flight"], 0);
    let mut core = ScriptCore::new(&[]);
    let out = c.run(&mut client(1), &mut core).await.0;
    assert_eq!(status(&out), Some(200));
    assert_eq!(status_json(&throttle)["keys"], 1);
}

#[tokio::test]
async fn throttle_rate_limit_answers_429() {
    let engine = engine();
    let c = chain(vec![layer(
        &engine,
        plugins::THROTTLE,
        r#"{"rate":0.5,"burst":2}"#,
    )]);
    let mut core = ScriptCore::new(&[]);
    for _ in 0..2 {
        assert_eq!(
            status(&c.run(&mut request(Method::GET), &mut core).await.0),
            Some(200)
        );
    }
    let out = c.run(&mut request(Method::GET), &mut core).await.0;
    assert_eq!(status(&out), Some(429));
    assert_eq!(header(&out, "retry-after"), Some("2"));
    assert!(
        header(&out, "proxy-status")
            .unwrap()
            .contains("http_request_denied")
    );
}

#[tokio::test]
async fn balancer_hashes_a_header_to_a_stable_endpoint() {
    let engine = engine();
    let c = chain(vec![layer(
        &engine,
        plugins::BALANCER,
        r#"{"algorithm":"maglev","hash_on":"header:x-user"}"#,
    )]);
    let mut core = ScriptCore::new(&[]);
    for user in ["alice", "bob", "carol", "dave"] {
        for _ in 0..3 {
            let mut req = request(Method::GET);
            req.headers.insert("x-user", HeaderValue::from_static(user));
            drop(c.run(&mut req, &mut core).await);
        }
    }
    for per_user in core.seen.chunks(3) {
        assert!(per_user.iter().all(|s| s.endpoint == per_user[0].endpoint));
    }
}

#[tokio::test]
async fn timeout_passes_the_budget_and_answers_504() {
    let engine = engine();
    let timeout = layer(
        &engine,
        plugins::TIMEOUT,
        r#"{"deadline":"2s","per_try":"300ms"}"#,
    );
    let c = chain(vec![
        timeout.clone(),
        layer(
            &engine,
            plugins::RETRY,
            r#"{"retry_on":["timeout"],"max_attempts":2,"backoff_base":"1ms","backoff_max":"1ms"}"#,
        ),
    ]);
    let mut core = ScriptCore::new(&[
        Step::Error(ErrorClass::Timeout),
        Step::Error(ErrorClass::Timeout),
    ]);
    let out = c.run(&mut request(Method::GET), &mut core).await.0;
    assert_eq!(status(&out), Some(504));
    assert!(
        header(&out, "proxy-status")
            .unwrap()
            .contains("http_response_timeout")
    );
    assert_eq!(core.seen.len(), 2);
    // The timeout layer's per-try timeout and the request deadline cover the retry too.
    for s in &core.seen {
        assert!(s.timeout.unwrap() <= Duration::from_millis(300));
        assert_eq!(s.budget_header.as_deref(), Some("300"));
    }
    assert_eq!(status_json(&timeout)["per_try_exceeded"], 1);
}
