//! Active health checks, passive ejection, the health report, readiness
//! and the profile endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_tests::{TestProxy, TestUpstream, assert_eventually, config_head, get};

const WAIT: Duration = Duration::from_secs(10);

/// An upstream whose `/health` answers a status the test sets; anything
/// else answers its name. Counts health checks by outcome.
struct Switch {
    addr: std::net::SocketAddr,
    health: Arc<AtomicU16>,
    passed: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(AtomicU16::new(200));
        let passed = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (h, p, f) = (health.clone(), passed.clone(), failed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, p, f) = (h.clone(), p.clone(), f.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<_>| {
                        let mut response = Response::new(Full::new(Bytes::from(name)));
                        if request.uri().path() == "/health" {
                            let status = h.load(Ordering::SeqCst);
                            if status == 200 { &p } else { &f }.fetch_add(1, Ordering::SeqCst);
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        }
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            health,
            passed,
            failed,
            task,
        }
    }

    fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn admin_json(proxy: &TestProxy, path: &str) -> Value {
    let reply = get(&proxy.admin_url(path)).await.unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

fn endpoint<'a>(report: &'a Value, upstream: &str, address: &str) -> &'a Value {
    report["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == upstream)
        .and_then(|u| {
            u["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["address"] == address)
        })
        .unwrap_or_else(|| panic!("no endpoint {address} of {upstream} in {report:#}"))
}

/// Which upstreams answered `n` requests to `/`.
async fn answers(proxy: &TestProxy, n: usize) -> Vec<String> {
    let client = weir_tests::client();
    let mut names = Vec::new();
    for _ in 0..n {
        let request = http::Request::get(proxy.url("/"))
            .body(Full::default())
            .unwrap();
        let reply = weir_tests::send(&client, request).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        names.push(reply.text());
    }
    names
}

#[tokio::test]
async fn active_checks_move_traffic_away_and_back_with_thresholds() {
    let a = Switch::start("a").await;
    let b = Switch::start("b").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\nendpoints = [\"{}\", \"{}\"]\n\
         [upstreams.app.health_check]\npath = \"/health\"\ninterval = \"50ms\"\n\
         timeout = \"50ms\"\nunhealthy_threshold = 3\nhealthy_threshold = 2\n\
         [[routes]]\nupstream = \"app\"\n",
        config_head(),
        a.addr,
        b.addr
    ));
    let names = answers(&proxy, 10).await;
    assert!(names.contains(&"b".to_string()), "{names:?}");

    let failed_before = b.failed.load(Ordering::SeqCst);
    b.set_health(503);
    let b_addr = b.addr.to_string();
    assert_eventually(WAIT, "b becomes unhealthy", || async {
        let report = admin_json(&proxy, "/admin/health").await;
        let e = endpoint(&report, "app", &b_addr);
        if e["health"] == "unhealthy" {
            Ok(())
        } else {
            Err(format!("{e}"))
        }
    })
    .await;
    let failed_checks = b.failed.load(Ordering::SeqCst) - failed_before;
    assert!(
        failed_checks >= 3,
        "unhealthy after {failed_checks} failed checks"
    );
    let report = admin_json(&proxy, "/admin/upstreams").await;
    let e = endpoint(&report, "app", &b_addr);
    assert!(
        e["health_reason"].as_str().unwrap().contains("status 503"),
        "{e}"
    );
    let names = answers(&proxy, 20).await;
    assert!(
        names.iter().all(|n| n == "a"),
        "traffic moved away: {names:?}"
    );

    let passed_before = b.passed.load(Ordering::SeqCst);
    b.set_health(200);
    assert_eventually(WAIT, "b healthy again", || async {
        let report = admin_json(&proxy, "/admin/health").await;
        let e = endpoint(&report, "app", &b_addr);
        if e["health"] == "healthy" {
            Ok(())
        } else {
            Err(format!("{e}"))
        }
    })
    .await;
    let passed_checks = b.passed.load(Ordering::SeqCst) - passed_before;
    assert!(
        passed_checks >= 2,
        "healthy after {passed_checks} passed checks"
    );
    let names = answers(&proxy, 20).await;
    assert!(
        names.iter().any(|n| n == "b"),
        "traffic came back: {names:?}"
    );

    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    for line in [
        "weir_health_transitions_total{upstream=\"app\",to=\"unhealthy\"} 1",
        "weir_health_transitions_total{upstream=\"app\",to=\"healthy\"} 1",
        "weir_upstream_healthy_endpoints{upstream=\"app\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("weir_health_checks_total{upstream=\"app\",result=\"failed\"}"));
}

#[tokio::test]
async fn all_unhealthy_means_all_serve() {
    let a = Switch::start("a").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\nendpoints = [\"{}\"]\n\
         [upstreams.app.health_check]\npath = \"/health\"\ninterval = \"50ms\"\n\
         timeout = \"50ms\"\nunhealthy_threshold = 1\n[[routes]]\nupstream = \"app\"\n",
        config_head(),
        a.addr
    ));
    a.set_health(500);
    let addr = a.addr.to_string();
    assert_eventually(WAIT, "a unhealthy", || async {
        let report = admin_json(&proxy, "/admin/health").await;
        (endpoint(&report, "app", &addr)["health"] == "unhealthy")
            .then_some(())
            .ok_or_else(|| report.to_string())
    })
    .await;
    assert_eq!(answers(&proxy, 3).await, vec!["a"; 3]);
}

#[tokio::test]
async fn passive_ejection_grows_and_is_capped() {
    let ups = [
        TestUpstream::start("u0").await,
        TestUpstream::start("u1").await,
        TestUpstream::start("u2").await,
        TestUpstream::start("u3").await,
    ];
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\nendpoints = [{}]\n[upstreams.app.passive]\n\
         base_ejection_time = \"10s\"\nmax_ejection_time = \"25s\"\nmax_ejected_percent = 50\n\
         [[routes]]\nupstream = \"app\"\n",
        config_head(),
        list.join(", ")
    ));
    let upstream = proxy.server.handle().upstreams()["app"].clone();
    let ids: Vec<u32> = upstream.endpoints().all().iter().map(|e| e.id).collect();

    assert_eq!(
        upstream.eject(ids[0], "breaker open"),
        Ok(Duration::from_secs(10))
    );
    assert!(matches!(
        upstream.eject(ids[0], "again"),
        Err(weir_proxy::upstream::EjectError::AlreadyEjected { .. })
    ));
    assert_eq!(
        upstream.eject(ids[1], "breaker open"),
        Ok(Duration::from_secs(10))
    );
    // 50 % of 4: a third ejection is refused.
    assert!(matches!(
        upstream.eject(ids[2], "breaker open"),
        Err(weir_proxy::upstream::EjectError::CapReached {
            ejected: 2,
            allowed: 2,
            ..
        })
    ));
    let names = answers(&proxy, 20).await;
    assert!(
        names.iter().all(|n| n == "u2" || n == "u3"),
        "ejected endpoints get no traffic: {names:?}"
    );
    let report = admin_json(&proxy, "/admin/upstreams").await;
    let e = endpoint(&report, "app", &ups[0].addr.to_string());
    assert_eq!(e["health"], "ejected", "{e}");
    assert_eq!(e["health_reason"], "breaker open", "{e}");

    // Repeated ejection lasts longer, up to the maximum.
    assert!(upstream.uneject(ids[0]));
    assert_eq!(upstream.eject(ids[0], "again"), Ok(Duration::from_secs(20)));
    assert!(upstream.uneject(ids[0]));
    assert_eq!(upstream.eject(ids[0], "again"), Ok(Duration::from_secs(25)));
    assert!(upstream.uneject(ids[0]));
    assert!(upstream.uneject(ids[1]));
    let names = answers(&proxy, 8).await;
    assert!(
        names.iter().any(|n| n == "u0"),
        "unejected serve again: {names:?}"
    );

    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("weir_ejections_total{upstream=\"app\",result=\"applied\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_ejections_total{upstream=\"app\",result=\"refused\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_report_figures_follow_generated_traffic() {
    let up = TestUpstream::start("up").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\nendpoints = [\"{}\"]\n[upstreams.dead]\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"main\"\nupstream = \"app\"\n\
         [[routes]]\nname = \"broken\"\npath_prefix = \"/broken\"\nupstream = \"dead\"\n",
        config_head(),
        up.addr,
        weir_tests::upstream::refused_addr()
    ));
    let client = weir_tests::client();
    for _ in 0..100 {
        let request = http::Request::get(proxy.url("/slow/20"))
            .body(Full::default())
            .unwrap();
        assert_eq!(
            weir_tests::send(&client, request).await.unwrap().status,
            200
        );
    }
    let report = admin_json(&proxy, "/admin/health").await;
    let e = endpoint(&report, "app", &up.addr.to_string());
    assert_eq!(e["latency_window_samples"], 100, "{e}");
    let window = e["latency_window_ms"].as_f64().unwrap();
    let ewma = e["latency_ewma_ms"].as_f64().unwrap();
    // Each request sleeps 20 ms upstream; loopback and scheduling add a
    // little (generous upper bound for a loaded CI machine).
    assert!(
        (20.0..60.0).contains(&window),
        "windowed average {window} ms"
    );
    assert!((20.0..60.0).contains(&ewma), "EWMA {ewma} ms");
    let main = route(&report, "main");
    assert_eq!(main["window_requests"], 100, "{main}");
    assert_eq!(main["window_server_errors"], 0, "{main}");

    // Connection state: a kept-alive pool of (about) one connection, idle.
    let app = &report["upstreams"].as_array().unwrap()[0];
    assert_eq!(app["name"], "app");
    assert!(app["connections"]["open"].as_u64().unwrap() >= 1, "{app}");
    assert_eq!(app["connections"]["active"], 0, "{app}");
    assert!(app["connections"]["last_connect_error"].is_null(), "{app}");

    // 10 upstream 5xx and 5 proxy 502s move the routes' bad-request averages.
    for _ in 0..10 {
        let request = http::Request::get(proxy.url("/status/503"))
            .body(Full::default())
            .unwrap();
        assert_eq!(
            weir_tests::send(&client, request).await.unwrap().status,
            503
        );
    }
    for _ in 0..5 {
        let request = http::Request::get(proxy.url("/broken"))
            .body(Full::default())
            .unwrap();
        assert_eq!(
            weir_tests::send(&client, request).await.unwrap().status,
            502
        );
    }
    let report = admin_json(&proxy, "/admin/health").await;
    let main = route(&report, "main");
    assert_eq!(main["window_requests"], 110, "{main}");
    assert_eq!(main["window_server_errors"], 10, "{main}");
    let ratio = main["server_error_ratio"].as_f64().unwrap();
    assert!((ratio - 10.0 / 110.0).abs() < 1e-9, "{main}");
    let broken = route(&report, "broken");
    assert_eq!(broken["server_error_ratio"], 1.0, "{broken}");
    let dead = report["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "dead")
        .unwrap();
    assert!(
        dead["connections"]["last_connect_error"]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{dead}"
    );

    // Malformed requests (per listener) and client connections now.
    let before = report["malformed_requests_total"].as_u64().unwrap();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply).await;
        assert!(
            reply.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    let held = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert_eventually(WAIT, "figures move", || async {
        let report = admin_json(&proxy, "/admin/health").await;
        let malformed = report["malformed_requests_total"].as_u64().unwrap();
        let connections = report["client_connections"].as_u64().unwrap();
        if malformed == before + 3 && connections >= 1 {
            Ok(())
        } else {
            Err(format!("malformed {malformed}, connections {connections}"))
        }
    })
    .await;
    drop(held);
}

fn route<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn a_hung_check_holds_up_only_its_own_endpoint() {
    let hung = weir_tests::upstream::RawPeer::start(weir_tests::upstream::Misbehaviour::Hang).await;
    let ok = Switch::start("ok").await;
    let proxy = TestProxy::start(&format!(
        "{}[upstreams.app]\nendpoints = [\"{}\", \"{}\"]\n\
         [upstreams.app.health_check]\npath = \"/health\"\ninterval = \"300ms\"\n\
         timeout = \"300ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 1\n\
         [[routes]]\nupstream = \"app\"\n",
        config_head(),
        ok.addr,
        hung.addr
    ));
    // Checks of the hung endpoint wait out their 300 ms timeout; the other
    // endpoint is checked every 300 ms all the same (in lockstep rounds it
    // would get one check per 600 ms: 5 in 3 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let checks = ok.passed.load(Ordering::SeqCst);
    assert!(checks >= 8, "{checks} checks in 3 s at a 300 ms interval");

    // A failing endpoint is marked after two checks, not after two of the
    // hung endpoint's timeouts.
    ok.set_health(500);
    let failed_before = ok.failed.load(Ordering::SeqCst);
    assert_eventually(WAIT, "the failing endpoint is marked", || async {
        let report = admin_json(&proxy, "/admin/upstreams").await;
        let e = endpoint(&report, "app", &ok.addr.to_string());
        if e["health"] == "unhealthy" {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
    .await;
    let checks_to_mark = ok.failed.load(Ordering::SeqCst) - failed_before;
    assert!(
        checks_to_mark <= 3,
        "marked after {checks_to_mark} failed checks"
    );
    // The hung endpoint is marked unhealthy too, by its own timeouts.
    assert_eventually(WAIT, "the hung endpoint is marked", || async {
        let report = admin_json(&proxy, "/admin/upstreams").await;
        let e = endpoint(&report, "app", &hung.addr.to_string());
        if e["health"] == "unhealthy" {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
    .await;
}
