//! The admin listener: liveness, readiness, Prometheus metrics, the running
//! config and routes as JSON, and `POST /admin/reload`. Loopback by default,
//! separate from the proxy listeners, and served on the control thread so a
//! busy data plane cannot starve it. The health report and readiness checks
//! are in [`health`]; CPU profiles in [`pprof`].

pub mod health;
pub mod pprof;

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{ReloadError, ServerHandle};

/// Serves the admin API on `socket` until `stop` is cancelled.
pub(crate) async fn serve(
    socket: std::net::TcpListener,
    server: ServerHandle,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot start the admin listener");
            return;
        }
    };
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let server = server.clone();
                async move {
                    // The only slow endpoint: it answers after profiling.
                    if request.uri().path() == "/debug/pprof/profile"
                        && request.method() == Method::GET
                    {
                        return Ok::<_, Infallible>(pprof::profile(request.uri().query()).await);
                    }
                    Ok::<_, Infallible>(respond(&request, &server))
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, server: &ServerHandle) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = request.method();
    match (method, path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            let reasons = health::not_ready_reasons(server);
            if reasons.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", reasons.join("; ")),
                )
            }
        }
        (&Method::GET, "/admin/health") => {
            json_response(StatusCode::OK, &health::health_json(server))
        }
        (&Method::GET, "/metrics") => {
            let mut body = server.metrics().render();
            body.push_str(&health::render_upstream_gauges(server));
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/admin/config") => json_response(
            StatusCode::OK,
            &json!({
                "config": &*server.config(),
                "last_reload_error": server.last_reload_error(),
            }),
        ),
        (&Method::GET, "/admin/routes") => json_response(StatusCode::OK, &routes_json(server)),
        (&Method::GET, "/admin/upstreams") => {
            json_response(StatusCode::OK, &health::upstreams_json(server))
        }
        (&Method::POST, "/admin/reload") => match server.reload() {
            Ok(()) => json_response(StatusCode::OK, &json!({ "status": "applied" })),
            Err(error) => {
                let errors: Vec<String> = match &error {
                    ReloadError::Config(config) if !config.diagnostics().is_empty() => config
                        .diagnostics()
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    other => vec![other.to_string()],
                };
                json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "status": "refused", "errors": errors }),
                )
            }
        },
        (
            _,
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/admin/config"
            | "/admin/routes"
            | "/admin/reload"
            | "/admin/health"
            | "/admin/upstreams"
            | "/debug/pprof/profile",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn routes_json(server: &ServerHandle) -> serde_json::Value {
    let table = server.routes();
    let routes: Vec<_> = table
        .routes()
        .iter()
        .map(|route| {
            let endpoints: Vec<_> = route
                .upstream
                .endpoints()
                .all()
                .iter()
                .map(|e| json!({ "address": e.authority.as_str(), "weight": e.weight }))
                .collect();
            json!({
                "name": route.spec.name,
                "host": route.spec.host,
                "path_prefix": route.spec.path_prefix,
                "methods": route.spec.methods.iter().map(Method::as_str).collect::<Vec<_>>(),
                "upstream": route.upstream.name,
                "endpoints": endpoints,
                "timeout": humantime::format_duration(route.spec.timeout).to_string(),
            })
        })
        .collect();
    json!({ "routes": routes })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
