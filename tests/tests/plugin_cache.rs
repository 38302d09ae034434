//! The real cache plugin (`plugins/cache`, built to wasm) in the real host
//! runtime, driving the real chain around a fake upstream that counts its
//! requests. The test plays the server's part: it tees a response body into
//! the store when the chain hands back a store directive, and sends local
//! answers (hits) as they are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use weir_proxy::plugin::{
    Attempt, Chain, Core, EndpointFacts, EndpointInfo, Outcome, PluginEngine, PluginInstance,
    RequestView, ResponseHead, TrapPolicy,
};
use weir_tests::plugins;

/// What the upstream answers: status, headers, body.
type Script =
    dyn Fn(&RequestView) -> (u16, Vec<(&'static str, String)>, &'static str) + Send + Sync;

/// A fake upstream: counts requests, answers from a script, maybe slowly.
struct Upstream {
    calls: Arc<AtomicUsize>,
    script: Arc<Script>,
    delay: Duration,
}

impl Core<Full<Bytes>> for Upstream {
    fn endpoints(&mut self, _: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>> {
        None
    }

    async fn send(
        &mut self,
        req: &mut RequestView,
        _: &Attempt<'_>,
    ) -> (Outcome<Full<Bytes>>, Option<u32>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let (status, headers, body) = (self.script)(req);
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(n, HeaderValue::from_str(&v).unwrap());
        }
        let head = ResponseHead {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
        };
        (
            Outcome::Response {
                head,
                body: Full::new(Bytes::from_static(body.as_bytes())),
            },
            Some(1),
        )
    }
}

/// What the client got.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    local: bool,
}

impl Got {
    fn cache_status(&self) -> String {
        self.headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Fixture {
    chain: Chain,
    calls: Arc<AtomicUsize>,
    script: Arc<Script>,
    _engine: PluginEngine,
}

impl Fixture {
    fn new(
        config: &str,
        script: impl Fn(&RequestView) -> (u16, Vec<(&'static str, String)>, &'static str)
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let engine = PluginEngine::new(weir_tests::engine_config()).unwrap();
        let plugin = engine.load_file(plugins::CACHE.as_ref()).unwrap();
        let layer = Arc::new(PluginInstance::new(&plugin, config.as_bytes().to_vec()).unwrap());
        Self {
            chain: Chain::new(vec![layer], TrapPolicy::FailClosed).unwrap(),
            calls: Arc::default(),
            script: Arc::new(script),
            _engine: engine,
        }
    }

    fn upstream_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// One request through the chain, the way the server handles it.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&'static str, &'static str)],
        delay: Duration,
    ) -> Got {
        let mut req = Box::new(RequestView {
            method: method.parse().unwrap(),
            uri: path.parse().unwrap(),
            ..RequestView::default()
        });
        req.headers
            .insert("host", HeaderValue::from_static("example.com"));
        for (n, v) in headers {
            req.headers.insert(*n, HeaderValue::from_static(v));
        }
        let mut core = Upstream {
            calls: Arc::clone(&self.calls),
            script: Arc::clone(&self.script),
            delay,
        };
        let (outcome, _end) = self.chain.run(&mut req, &mut core).await;
        match outcome {
            Outcome::Response { head, body } => {
                // The server's part: tee the body into the store if told to.
                let body = match req.cache.take_store() {
                    Some(directive) => directive.tee(body).collect().await.unwrap().to_bytes(),
                    None => body.collect().await.unwrap().to_bytes(),
                };
                Got {
                    status: head.status.as_u16(),
                    headers: head.headers,
                    body,
                    local: false,
                }
            }
            Outcome::Local(a) => Got {
                status: a.status.as_u16(),
                headers: a.headers,
                body: a.body,
                local: true,
            },
            Outcome::Error(e) => panic!("upstream error {e:?}"),
            Outcome::Client(f) => panic!("client fault {f}"),
        }
    }

    async fn get(&self, path: &str, headers: &[(&'static str, &'static str)]) -> Got {
        self.send("GET", path, headers, Duration::ZERO).await
    }
}

fn fresh_for_a_minute(_: &RequestView) -> (u16, Vec<(&'static str, String)>, &'static str) {
    (
        200,
        vec![
            ("cache-control", "max-age=60".into()),
            ("etag", "\"v1\"".into()),
        ],
        "hello",
    )
}

#[tokio::test]
async fn miss_then_store_then_hit() {
    let f = Fixture::new("{}", fresh_for_a_minute);
    let first = f.get("/a", &[]).await;
    assert_eq!(
        (first.status, &first.body[..], first.local),
        (200, &b"hello"[..], false)
    );
    assert!(
        first
            .cache_status()
            .contains("weir; fwd=uri-miss; fwd-status=200; stored; ttl=60"),
        "{}",
        first.cache_status()
    );

    let hit = f.get("/a", &[]).await;
    assert_eq!(
        (hit.status, &hit.body[..], hit.local),
        (200, &b"hello"[..], true)
    );
    assert!(
        hit.cache_status().starts_with("weir; hit; ttl="),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.headers["age"], "0");
    assert_eq!(hit.headers["etag"], "\"v1\"");
    assert_eq!(f.upstream_calls(), 1);

    // The client's own conditional request is answered 304 from the store.
    let nm = f.get("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((nm.status, nm.body.len()), (304, 0));
    // HEAD is answered from the GET entry; another path is a miss.
    assert!(f.send("HEAD", "/a", &[], Duration::ZERO).await.local);
    assert!(!f.get("/b", &[]).await.local);
    assert_eq!(f.upstream_calls(), 2);
}

#[tokio::test]
async fn uncacheable_responses_are_labelled_and_not_stored() {
    let f = Fixture::new("{}", |r| match r.uri.path() {
        "/private" => (
            200,
            vec![("cache-control", "private, max-age=60".into())],
            "p",
        ),
        _ => (200, vec![("cache-control", "no-store".into())], "n"),
    });
    for path in ["/private", "/private", "/no-store", "/no-store"] {
        let got = f.get(path, &[]).await;
        assert!(
            !got.local && !got.cache_status().contains("stored"),
            "{}",
            got.cache_status()
        );
    }
    assert!(
        f.get("/private", &[])
            .await
            .cache_status()
            .contains("detail=\"private\"")
    );
    assert_eq!(f.upstream_calls(), 5);
}

#[tokio::test]
async fn cache_control_split_over_lines_is_read_whole() {
    // `no-store` on the second line must win over `max-age` on the first.
    let f = Fixture::new("{}", |_| {
        (
            200,
            vec![
                ("cache-control", "max-age=60".into()),
                ("cache-control", "no-store".into()),
            ],
            "n",
        )
    });
    for _ in 0..2 {
        let got = f.get("/split", &[]).await;
        assert!(
            !got.local && !got.cache_status().contains("stored"),
            "{}",
            got.cache_status()
        );
    }
    assert_eq!(f.upstream_calls(), 2);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_serves_the_stored_body() {
    let f = Fixture::new("{}", |r| {
        if r.headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            (
                304,
                vec![
                    ("cache-control", "max-age=60".into()),
                    ("etag", "\"v1\"".into()),
                    ("x-new", "1".into()),
                ],
                "",
            )
        } else {
            (
                200,
                vec![
                    ("cache-control", "max-age=0".into()),
                    ("etag", "\"v1\"".into()),
                ],
                "stored body",
            )
        }
    });
    let first = f.get("/r", &[]).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let revalidated = f.get("/r", &[]).await;
    assert_eq!(
        (revalidated.status, &revalidated.body[..]),
        (200, &b"stored body"[..])
    );
    assert!(
        revalidated
            .cache_status()
            .contains("fwd=stale; fwd-status=304"),
        "{}",
        revalidated.cache_status()
    );
    assert_eq!(
        revalidated.headers["x-new"], "1",
        "the 304's fields update the entry"
    );
    assert_eq!(f.upstream_calls(), 2);
    // Now fresh for a minute: a hit.
    let hit = f.get("/r", &[]).await;
    assert!(
        hit.local && hit.cache_status().contains("hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(f.upstream_calls(), 2);
}

#[tokio::test]
async fn vary_selects_a_variant_per_request_header() {
    let f = Fixture::new("{}", |r| {
        let lang = r
            .headers
            .get("accept-language")
            .map_or("none", |v| if v == "fr" { "bonjour" } else { "hello" });
        (
            200,
            vec![
                ("cache-control", "max-age=60".into()),
                ("vary", "Accept-Language".into()),
            ],
            lang,
        )
    });
    assert_eq!(
        &f.get("/v", &[("accept-language", "en")]).await.body[..],
        b"hello"
    );
    let en = f.get("/v", &[("accept-language", "en")]).await;
    assert!(en.local && &en.body[..] == b"hello");
    let fr = f.get("/v", &[("accept-language", "fr")]).await;
    assert!(!fr.local && &fr.body[..] == b"bonjour");
    assert!(
        fr.cache_status().contains("fwd=vary-miss"),
        "{}",
        fr.cache_status()
    );
    let fr = f.get("/v", &[("accept-language", "fr")]).await;
    assert!(fr.local && &fr.body[..] == b"bonjour");
    assert!(f.get("/v", &[("accept-language", "en")]).await.local);
    assert_eq!(f.upstream_calls(), 2);
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let f = Arc::new(Fixture::new("{}", fresh_for_a_minute));
    let slow = Duration::from_millis(200);
    let leader = f.send("GET", "/c", &[], slow);
    let followers = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        futures_util::future::join_all((0..4).map(|_| f.send("GET", "/c", &[], slow))).await
    };
    let (first, rest) = tokio::join!(leader, followers);
    assert!(!first.local);
    for got in rest {
        assert_eq!((&got.body[..], got.local), (&b"hello"[..], true));
        assert!(
            got.cache_status().contains("collapsed"),
            "{}",
            got.cache_status()
        );
    }
    assert_eq!(f.upstream_calls(), 1);
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_copy() {
    let failing = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&failing);
    let f = Fixture::new("{}", move |_| {
        if flag.load(Ordering::SeqCst) == 1 {
            (503, vec![], "down")
        } else {
            (
                200,
                vec![
                    ("cache-control", "max-age=0, stale-if-error=600".into()),
                    ("etag", "\"e\"".into()),
                ],
                "old",
            )
        }
    });
    assert!(f.get("/s", &[]).await.cache_status().contains("stored"));
    failing.store(1, Ordering::SeqCst);
    let got = f.get("/s", &[]).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"old"[..]));
    assert!(
        got.cache_status().contains("stale-if-error"),
        "{}",
        got.cache_status()
    );
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_uri_and_location() {
    let f = Fixture::new("{}", |r| match r.method.as_str() {
        "POST" => (201, vec![("location", "/other".into())], ""),
        _ => fresh_for_a_minute(r),
    });
    f.get("/a", &[]).await;
    f.get("/other", &[]).await;
    assert!(f.get("/a", &[]).await.local && f.get("/other", &[]).await.local);
    f.send("POST", "/a", &[], Duration::ZERO).await;
    let a = f.get("/a", &[]).await;
    assert!(
        !a.local && a.cache_status().contains("fwd=uri-miss"),
        "{}",
        a.cache_status()
    );
    assert!(!f.get("/other", &[]).await.local);
}

#[tokio::test]
async fn bad_config_is_rejected_with_a_message() {
    let engine = PluginEngine::new(weir_tests::engine_config()).unwrap();
    let plugin = engine.load_file(plugins::CACHE.as_ref()).unwrap();
    let err = PluginInstance::new(&plugin, br#"{"max_ttl_secs": 0}"#.to_vec()).unwrap_err();
    assert!(err.to_string().contains("max_ttl_secs"), "{err}");
}
