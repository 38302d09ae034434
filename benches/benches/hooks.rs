//! The cost of plugins on the request path, with the real host and real
//! `.wasm` plugins built by the test build: one hook call (a no-op plugin, one
//! making two trivial host calls — the host-call floor — and a realistic one
//! that reads a header and sets one), and a whole chain of 1
//! and 6 plugins against the same request through no plugins; and each
//! shipped policy alone in a chain (its hooks' cost for one request).
//!
//! Run with: `cargo bench -p weir-benches --bench hooks`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use weir_proxy::plugin::views::{EndpointFacts, EndpointInfo, Outcome, RequestView, ResponseHead};
use weir_proxy::plugin::{Attempt, Chain, Core, PluginEngine, PluginInstance, TrapPolicy};
use weir_tests::plugins;

/// A request like a browser's: ten headers, one of them the one the
/// realistic plugin reads.
fn request() -> RequestView {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) weir-bench"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("x-user", "customer-4711"),
        ("x-request-id", "5f0c6a7e-2b1d-4c1e-9d0e-6f1a2b3c4d5e"),
        ("cookie", "session=abcdef0123456789"),
        ("x-forwarded-for", "192.0.2.10"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    RequestView {
        method: Method::GET,
        uri: "/v1/orders?limit=10".parse().unwrap_or_default(),
        headers,
        ..RequestView::default()
    }
}

/// A fresh copy of `template`, as the server gets one per request: hyper
/// reserves room for the headers it parsed (`HeaderMap::reserve`), so a
/// plugin's added header fits without growing the map.
fn copy_of(template: &RequestView) -> RequestView {
    let mut headers = HeaderMap::new();
    headers.reserve(template.headers.len());
    headers.extend(template.headers.iter().map(|(n, v)| (n.clone(), v.clone())));
    RequestView {
        method: template.method.clone(),
        uri: template.uri.clone(),
        headers,
        ..RequestView::default()
    }
}

/// The upstream step answered at once, so only the chain is measured.
struct ReadyCore;

impl Core<()> for ReadyCore {
    fn endpoints(&mut self, out: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>> {
        out.push(EndpointInfo {
            id: 0,
            weight: 1,
            in_flight: 0,
            healthy: true,
            latency_ewma_us: 500,
        });
        None
    }

    async fn send(&mut self, _: &mut RequestView, _: &Attempt<'_>) -> (Outcome<()>, Option<u32>) {
        let head = ResponseHead {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        };
        (Outcome::Response { head, body: () }, Some(0))
    }
}

fn instance(engine: &PluginEngine, wasm: &str) -> Arc<PluginInstance> {
    instance_with(engine, wasm, "")
}

fn instance_with(engine: &PluginEngine, wasm: &str, config: &'static str) -> Arc<PluginInstance> {
    let loaded = match engine.load_file(std::path::Path::new(wasm)) {
        Ok(loaded) => loaded,
        Err(error) => panic!("cannot load {wasm}: {error}"),
    };
    match PluginInstance::new(&loaded, bytes::Bytes::from_static(config.as_bytes())) {
        Ok(instance) => Arc::new(instance),
        Err(error) => panic!("cannot instantiate {wasm}: {error}"),
    }
}

fn hook_call(c: &mut Criterion) {
    let engine = match PluginEngine::new(weir_tests::engine_config()) {
        Ok(engine) => engine,
        Err(error) => panic!("{error}"),
    };
    let mut group = c.benchmark_group("hook_call");
    let template = request();
    for (name, wasm) in [
        ("noop", plugins::NOOP),
        ("twocalls", plugins::TWOCALLS),
        ("realistic", plugins::REALISTIC),
    ] {
        let plugin = instance(&engine, wasm);
        group.bench_function(BenchmarkId::new("on_request", name), |b| {
            // A fresh request per call, made and dropped outside the timing:
            // only the hook call is measured, with the request a server
            // hands the chain. Batches are small enough to stay in cache, as
            // a request hyper has just parsed on this core is.
            b.iter_batched_ref(
                || Box::new(copy_of(&template)),
                |req| black_box(plugin.on_request(1, req, 1).is_ok()),
                BatchSize::NumIterations(64),
            );
        });
    }
    group.finish();
}

fn chain(c: &mut Criterion) {
    let engine = match PluginEngine::new(weir_tests::engine_config()) {
        Ok(engine) => engine,
        Err(error) => panic!("{error}"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(error) => panic!("{error}"),
    };
    let mut group = c.benchmark_group("chain");
    let template = request();
    // No plugins: the core alone, with the same request handling around it.
    group.bench_function(BenchmarkId::new("plugins", 0), |b| {
        b.iter(|| {
            let mut req = copy_of(&template);
            let attempt = Attempt {
                number: 1,
                timeout: None,
                endpoint: None,
                tried: &[],
            };
            black_box(runtime.block_on(ReadyCore.send(&mut req, &attempt)).1)
        });
    });
    for count in [1usize, 6] {
        let layers = (0..count)
            .map(|i| {
                instance(
                    &engine,
                    if i % 2 == 0 {
                        plugins::REALISTIC
                    } else {
                        plugins::COUNTER
                    },
                )
            })
            .collect();
        let chain = match Chain::new(layers, TrapPolicy::FailOpen) {
            Ok(chain) => chain,
            Err(error) => panic!("{error}"),
        };
        group.bench_function(BenchmarkId::new("plugins", count), |b| {
            b.iter(|| {
                let mut req = Box::new(copy_of(&template));
                let (outcome, end) = runtime.block_on(chain.run(&mut req, &mut ReadyCore));
                drop(end);
                black_box(outcome.status())
            });
        });
    }
    group.finish();
}

/// Each shipped policy alone around the ready core: all of its hooks for one
/// request (on_request, select, on_response, on_end as it exports them).
fn policies(c: &mut Criterion) {
    let engine = match PluginEngine::new(weir_tests::engine_config()) {
        Ok(engine) => engine,
        Err(error) => panic!("{error}"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("{error}"),
    };
    let template = request();
    let mut group = c.benchmark_group("policy");
    for (name, wasm, config) in [
        ("timeout", plugins::TIMEOUT, ""),
        (
            "throttle",
            plugins::THROTTLE,
            r#"{"rate": 1000000000, "burst": 1000000000}"#,
        ),
        ("breaker", plugins::BREAKER, ""),
        ("retry", plugins::RETRY, ""),
        ("cache", plugins::CACHE, ""),
        (
            "balancer",
            plugins::BALANCER,
            r#"{"algorithm": "peak_ewma"}"#,
        ),
    ] {
        let chain = match Chain::new(
            vec![instance_with(&engine, wasm, config)],
            TrapPolicy::FailOpen,
        ) {
            Ok(chain) => chain,
            Err(error) => panic!("{error}"),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut req = Box::new(copy_of(&template));
                let (outcome, end) = runtime.block_on(chain.run(&mut req, &mut ReadyCore));
                drop(end);
                black_box(outcome.status())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, hook_call, chain, policies);
criterion_main!(benches);
