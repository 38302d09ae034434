//! The demo service behind Weir's examples: answers every request with its
//! name, and can be told to fail or slow down so that policies have
//! something to act on. Served by the `demo-upstream` binary and, in
//! process, by the test that replays the resilience walkthrough.
//!
//! - `GET /status/N` answers status N; `GET /slow/MS` answers after MS ms;
//!   `GET /cached/...` answers with `Cache-Control: public, max-age=30` and an `ETag`.
//! - `POST /control?fail_percent=50&delay_ms=200` makes this instance fail
//!   (503) that share of requests and delay every answer; `GET /control`
//!   shows the settings; `POST /control` with no query resets them.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Default)]
struct Behaviour {
    fail_percent: AtomicU64,
    delay_ms: AtomicU64,
    served: AtomicU64,
}

/// Serves the demo on `listener` as `name`, forever.
pub async fn serve(listener: TcpListener, name: &str) {
    let name: Arc<str> = name.into();
    let behaviour = Arc::new(Behaviour::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        let name = Arc::clone(&name);
        let behaviour = Arc::clone(&behaviour);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let name = Arc::clone(&name);
                let behaviour = Arc::clone(&behaviour);
                async move { Ok::<_, Infallible>(answer(&request, &name, &behaviour).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: &Request<Incoming>,
    name: &str,
    behaviour: &Behaviour,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/control" {
        return control(request, name, behaviour);
    }
    let served = behaviour.served.fetch_add(1, Relaxed);
    let delay = behaviour.delay_ms.load(Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // Deterministic spread: fail `fail_percent` of every hundred requests.
    if served % 100 < behaviour.fail_percent.load(Relaxed) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name} is failing on purpose\n"),
            name,
        );
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return reply(status, format!("{name} answered {status}\n"), name);
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
    }
    let mut response = reply(
        StatusCode::OK,
        format!(
            "hello from {name}: {} {}\n",
            request.method(),
            request.uri()
        ),
        name,
    );
    if path.starts_with("/cached/") {
        let headers = response.headers_mut();
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=30"),
        );
        headers.insert(http::header::ETAG, http::HeaderValue::from_static("\"v1\""));
    }
    response
}

fn control(
    request: &Request<Incoming>,
    name: &str,
    behaviour: &Behaviour,
) -> Response<Full<Bytes>> {
    if request.method() == Method::POST {
        let query = request.uri().query().unwrap_or("");
        behaviour.fail_percent.store(0, Relaxed);
        behaviour.delay_ms.store(0, Relaxed);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Ok(value) = value.parse::<u64>() else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!("{key}: not a number\n"),
                    name,
                );
            };
            match key {
                "fail_percent" => behaviour.fail_percent.store(value.min(100), Relaxed),
                "delay_ms" => behaviour.delay_ms.store(value, Relaxed),
                _ => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!("unknown setting {key}\n"),
                        name,
                    );
                }
            }
        }
    }
    reply(
        StatusCode::OK,
        format!(
            "{name}: fail_percent={} delay_ms={} served={}\n",
            behaviour.fail_percent.load(Relaxed),
            behaviour.delay_ms.load(Relaxed),
            behaviour.served.load(Relaxed)
        ),
        name,
    )
}

fn reply(status: StatusCode, body: String, name: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = name.parse() {
        response.headers_mut().insert("x-demo-instance", value);
    }
    response
}
