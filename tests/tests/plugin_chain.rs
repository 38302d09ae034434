//! The onion executor with real plugins and a fake core: hook order, local
//! answers, retries, balancer input, on_end guarantees and trap policies.
// Helpers outside #[test] fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use weir_proxy::plugin::{
    Attempt, Chain, Core, EndpointFacts, EndpointInfo, EngineConfig, Outcome, PluginEngine,
    PluginInstance, RequestView, ResponseHead, TrapPolicy,
};
use weir_proxy::upstream::{ErrorClass, UpstreamError};
use weir_tests::plugins;

/// What the fake upstream saw of one attempt.
#[derive(Debug)]
struct Seen {
    number: u32,
    endpoint: Option<u32>,
    tried: Vec<u32>,
    trace: Vec<String>,
    remove_me: bool,
}

/// Answers each attempt from a script (`None`: connect refused) and records it.
#[derive(Default)]
struct FakeCore {
    script: Vec<Option<u16>>,
    seen: Vec<Seen>,
    hang: bool,
}

impl Core<&'static str> for FakeCore {
    fn endpoints(&mut self, out: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>> {
        out.extend((1..=3).map(|id| EndpointInfo {
            id,
            weight: 1,
            healthy: true,
            ..Default::default()
        }));
        None
    }

    async fn send(
        &mut self,
        req: &mut RequestView,
        a: &Attempt<'_>,
    ) -> (Outcome<&'static str>, Option<u32>) {
        let trace = req
            .headers
            .get_all("x-trace")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        self.seen.push(Seen {
            number: a.number,
            endpoint: a.endpoint,
            tried: a.tried.to_vec(),
            trace,
            remove_me: req.headers.contains_key("x-remove-me"),
        });
        if self.hang {
            std::future::pending::<()>().await;
        }
        let endpoint = a.endpoint.unwrap_or(1);
        let step = self
            .script
            .get(self.seen.len() - 1)
            .copied()
            .unwrap_or(Some(200));
        let outcome = match step {
            Some(code) => {
                let mut headers = HeaderMap::new();
                headers.insert("x-internal", HeaderValue::from_static("secret"));
                let head = ResponseHead {
                    status: StatusCode::from_u16(code).unwrap(),
                    headers,
                };
                Outcome::Response {
                    head,
                    body: "upstream body",
                }
            }
            None => Outcome::Error(UpstreamError::new(
                ErrorClass::ConnectRefused,
                false,
                "no scripted endpoint",
            )),
        };
        (outcome, Some(endpoint))
    }
}

fn engine() -> PluginEngine {
    PluginEngine::new(EngineConfig {
        memory_limit: 8 << 20,
        ..weir_tests::engine_config()
    })
    .unwrap()
}

fn layer(engine: &PluginEngine, path: &str, config: &str) -> Arc<PluginInstance> {
    let plugin = engine.load_file(path.as_ref()).unwrap();
    Arc::new(PluginInstance::new(&plugin, config.as_bytes().to_vec()).unwrap())
}

fn tag(engine: &PluginEngine, t: &str) -> Arc<PluginInstance> {
    layer(engine, plugins::HEADERS, &format!(r#"{{"tag":"{t}"}}"#))
}

fn request(headers: &[&'static str]) -> Box<RequestView> {
    let mut req = Box::new(RequestView {
        uri: "/api/items".parse().unwrap(),
        ..RequestView::default()
    });
    for h in headers {
        req.headers.insert(*h, HeaderValue::from_static("1"));
    }
    req
}

fn response_headers<B>(o: &Outcome<B>) -> &HeaderMap {
    match o {
        Outcome::Response { head, .. } => &head.headers,
        Outcome::Local(a) => &a.headers,
        Outcome::Error(e) => panic!("unexpected error outcome {e:?}"),
        Outcome::Client(f) => panic!("unexpected client fault {f}"),
    }
}

fn all(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn status_json(p: &PluginInstance) -> serde_json::Value {
    serde_json::from_str(&p.status().unwrap().unwrap()).unwrap()
}

#[tokio::test]
async fn hooks_run_as_an_onion() {
    let engine = engine();
    let chain = Chain::new(
        vec![tag(&engine, "a"), tag(&engine, "b")],
        TrapPolicy::FailOpen,
    )
    .unwrap();
    let mut core = FakeCore::default();
    let out = chain.run(&mut request(&["x-remove-me"]), &mut core).await.0;
    assert_eq!(core.seen.len(), 1);
    assert_eq!(core.seen[0].trace, ["a>", "b>"]);
    assert!(!core.seen[0].remove_me);
    let h = response_headers(&out);
    assert_eq!(all(h, "x-trace"), ["<b", "<a"]);
    assert!(!h.contains_key("x-internal"));
    assert_eq!(h.get("x-path-a").unwrap(), "/api/items");
    assert!(matches!(
        out,
        Outcome::Response {
            body: "upstream body",
            ..
        }
    ));
}

#[tokio::test]
async fn hello_adds_its_header() {
    let engine = engine();
    let chain = Chain::new(
        vec![layer(&engine, plugins::HELLO, "")],
        TrapPolicy::FailOpen,
    )
    .unwrap();
    let out = chain
        .run(&mut request(&[]), &mut FakeCore::default())
        .await
        .0;
    assert_eq!(response_headers(&out).get("x-hello").unwrap(), "world");
}

#[tokio::test]
async fn local_answer_skips_inner_layers_and_core() {
    let engine = engine();
    let counter = layer(&engine, plugins::COUNTER, "");
    let layers = vec![
        tag(&engine, "a"),
        layer(&engine, plugins::ANSWER, ""),
        counter.clone(),
    ];
    let chain = Chain::new(layers, TrapPolicy::FailOpen).unwrap();
    let mut core = FakeCore::default();
    let mut req = request(&["x-deny"]);
    let out = chain.run(&mut req, &mut core).await.0;
    assert!(core.seen.is_empty());
    let Outcome::Local(answer) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.body, "denied");
    assert_eq!(answer.headers.get("x-denied-by").unwrap(), "answer");
    // The outer layer saw the answer; the inner one never ran.
    assert_eq!(all(&answer.headers, "x-trace"), ["<a"]);
    assert_eq!(all(&req.headers, "x-trace"), ["a>"]);
    assert_eq!(status_json(&counter)["requests"], 0);
}

#[tokio::test]
async fn retry_reruns_only_inner_layers_and_select_sees_tried() {
    let engine = engine();
    let counter = layer(&engine, plugins::COUNTER, "");
    let layers = vec![
        counter.clone(),
        tag(&engine, "a"),
        layer(&engine, plugins::RETRY_ONCE, ""),
        tag(&engine, "b"),
        layer(&engine, plugins::PICK_UNTRIED, ""),
    ];
    let chain = Chain::new(layers, TrapPolicy::FailOpen).unwrap();
    let mut core = FakeCore {
        script: vec![None, Some(200)],
        ..FakeCore::default()
    };
    let out = chain.run(&mut request(&[]), &mut core).await.0;
    assert_eq!(core.seen.len(), 2);
    assert_eq!((core.seen[0].number, core.seen[0].endpoint), (1, Some(1)));
    assert!(core.seen[0].tried.is_empty());
    assert_eq!((core.seen[1].number, core.seen[1].endpoint), (2, Some(2)));
    assert_eq!(core.seen[1].tried, [1]);
    // "a" (outside the retry) ran once, "b" (inside) once per attempt.
    assert_eq!(core.seen[1].trace, ["a>", "b>", "b>"]);
    let h = response_headers(&out);
    assert_eq!(h.get("x-retried").unwrap(), "yes");
    assert_eq!(all(h, "x-trace"), ["<b", "<a"]);
    let s = status_json(&counter);
    assert_eq!(
        (s["requests"].as_u64(), s["ends"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn on_end_runs_once_when_the_request_is_dropped() {
    let engine = engine();
    let counter = layer(&engine, plugins::COUNTER, "");
    let chain = Chain::new(vec![counter.clone()], TrapPolicy::FailOpen).unwrap();
    let mut core = FakeCore {
        hang: true,
        ..FakeCore::default()
    };
    let mut req = request(&[]);
    let run = chain.run(&mut req, &mut core);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), run)
            .await
            .is_err()
    );
    let s = status_json(&counter);
    assert_eq!(
        (s["requests"].as_u64(), s["ends"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["cancelled"], 1);
}

#[tokio::test]
async fn on_end_runs_once_when_a_plugin_traps() {
    let engine = engine();
    for policy in [TrapPolicy::FailOpen, TrapPolicy::FailClosed] {
        let counter = layer(&engine, plugins::COUNTER, "");
        let layers = vec![counter.clone(), layer(&engine, plugins::PANICKING, "")];
        let chain = Chain::new(layers, policy).unwrap();
        let out = chain
            .run(&mut request(&["x-panic"]), &mut FakeCore::default())
            .await
            .0;
        let s = status_json(&counter);
        assert_eq!(
            (s["requests"].as_u64(), s["ends"].as_u64()),
            (Some(1), Some(1)),
            "{policy:?}"
        );
        assert_eq!(s["cancelled"], 0);
        let expected = match policy {
            TrapPolicy::FailOpen => StatusCode::OK,
            TrapPolicy::FailClosed => StatusCode::SERVICE_UNAVAILABLE,
        };
        assert_eq!(out.status(), Some(expected), "{policy:?}");
    }
}

#[tokio::test]
async fn fail_open_skips_and_fail_closed_answers_503() {
    let engine = engine();
    let open = Chain::new(
        vec![layer(&engine, plugins::LOOPING, "")],
        TrapPolicy::FailOpen,
    )
    .unwrap();
    let mut core = FakeCore::default();
    let out = open.run(&mut request(&[]), &mut core).await.0;
    assert_eq!(core.seen.len(), 1);
    assert_eq!(out.status(), Some(StatusCode::OK));

    let closed = Chain::new(
        vec![tag(&engine, "a"), layer(&engine, plugins::LOOPING, "")],
        TrapPolicy::FailClosed,
    )
    .unwrap();
    let mut core = FakeCore::default();
    let out = closed.run(&mut request(&[]), &mut core).await.0;
    assert!(core.seen.is_empty());
    let Outcome::Local(answer) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer
            .headers
            .get("proxy-status")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("looping")
    );
    // The outer layer still saw the 503.
    assert_eq!(all(&answer.headers, "x-trace"), ["<a"]);
}
