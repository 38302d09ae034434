//! The admin listener: liveness, readiness, Prometheus metrics, the running
//! config and routes as JSON, and `POST /admin/reload`. Loopback by default,
//! separate from the proxy listeners, and served on the control thread so a
//! busy data plane cannot starve it. Who may do what is [`access`]; the
//! health report and readiness checks are in [`health`]; CPU profiles in
//! [`pprof`].

mod access;
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

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
use crate::plugin::PluginRegistry;
use crate::route::RouteTable;
use crate::telemetry::metrics::Metrics;
use crate::upstream::Upstream;

/// What the admin API reads of the running server, and the one change it
/// may ask for. The server implements it; the admin API knows nothing else
/// of the server.
pub trait AdminView: Send + Sync + 'static {
    /// The config being served.
    fn config(&self) -> Arc<Config>;
    /// The route table being served.
    fn routes(&self) -> Arc<RouteTable>;
    /// The upstreams being served, by name.
    fn upstreams(&self) -> BTreeMap<String, Arc<Upstream>>;
    /// The proxy's metrics.
    fn metrics(&self) -> &Metrics;
    /// The plugin registry.
    fn plugins(&self) -> &PluginRegistry;
    /// Whether it serves (not starting, not draining).
    fn is_ready(&self) -> bool;
    /// Client connections open now.
    fn open_connections(&self) -> usize;
    /// The error of the last refused reload, until one is applied.
    fn last_reload_error(&self) -> Option<String>;
    /// Re-reads and applies the config file; `Err` holds every error.
    fn reload(&self) -> Result<(), Vec<String>>;
    /// The TLS of each TLS listener, by configured address.
    fn tls_listeners(&self) -> Vec<(std::net::SocketAddr, Arc<crate::tls::ListenerTls>)>;
}

/// Each TLS listener's certificates (names, expiry) and the error of its
/// last refused certificate reload.
fn tls_json(server: &dyn AdminView) -> serde_json::Value {
    let listeners: serde_json::Map<String, serde_json::Value> = server
        .tls_listeners()
        .into_iter()
        .map(|(address, tls)| {
            let certificates: Vec<_> = tls
                .certificates()
                .into_iter()
                .map(|c| {
                    let expires_in = c.expires_in_secs();
                    json!({
                        "file": c.file,
                        "subject": c.subject,
                        "names": c.names,
                        "not_after_unix": c.not_after_unix,
                        "expires_in_seconds": expires_in,
                    })
                })
                .collect();
            (
                address.to_string(),
                json!({ "certificates": certificates, "last_error": tls.last_error() }),
            )
        })
        .collect();
    serde_json::Value::Object(listeners)
}

/// Serves the admin API on `socket` until `stop` is cancelled; over HTTPS
/// when `tls` is given.
pub async fn serve(
    socket: std::net::TcpListener,
    server: Arc<dyn AdminView>,
    stop: CancellationToken,
    tls: Option<Arc<crate::tls::ListenerTls>>,
) {
    let (listener, address) = match TcpListener::from_std(socket)
        .and_then(|listener| Ok((listener.local_addr()?, listener)))
    {
        Ok((address, listener)) => (listener, address),
        Err(error) => {
            tracing::error!(%error, "cannot start the admin listener");
            return;
        }
    };
    // Over TLS, the admin API counts its failed handshakes as a listener
    // does, under its address (and so shows in the health report's list).
    let metrics = tls.is_some().then(|| {
        // Named by the configured address, as the proxy's listeners are.
        let configured = server.config().admin.as_ref().map(|a| a.address);
        server
            .metrics()
            .listener(&configured.unwrap_or(address).to_string())
    });
    loop {
        let (stream, peer) = tokio::select! {
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
        let tls = tls.as_ref().map(|t| t.server_config());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let (Some(config), Some(metrics)) = (tls, metrics) else {
                serve_connection(stream, server, address).await;
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match crate::tls::handshake::accept(&acceptor, stream, ADMIN_HANDSHAKE_TIMEOUT).await {
                Ok(stream) => serve_connection(stream, server, address).await,
                Err(failed) => metrics.tls_handshake_failed(&failed, peer),
            }
        });
    }
}

/// A client that never finishes its handshake is not kept waiting on.
const ADMIN_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One admin connection (plain or TLS), HTTP/1.1.
async fn serve_connection<S>(stream: S, server: Arc<dyn AdminView>, address: std::net::SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let server = server.clone();
        async move {
            let kind = access::Kind::of(request.method(), request.uri().path());
            let config = server.config();
            let token = config.admin.as_ref().and_then(|a| a.token.as_ref());
            if let Err(refusal) = access::check(kind, request.headers(), address, token) {
                return Ok::<_, Infallible>(refusal.into_response());
            }
            // The only slow endpoint: it answers after profiling.
            if request.uri().path() == "/debug/pprof/profile" && request.method() == Method::GET {
                return Ok::<_, Infallible>(pprof::profile(request.uri().query()).await);
            }
            Ok::<_, Infallible>(respond(&request, server.as_ref()))
        }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "admin connection ended with an error");
    }
}

fn respond(request: &Request<Incoming>, server: &dyn AdminView) -> Response<Full<Bytes>> {
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
            render_plugin_metrics(server, &mut body);
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/admin/config") => {
            let mut shown = json!({
                "config": &*server.config(),
                "last_reload_error": server.last_reload_error(),
                "tls": tls_json(server),
            });
            crate::redact::redact_json(&mut shown);
            json_response(StatusCode::OK, &shown)
        }
        (&Method::GET, "/admin/routes") => json_response(StatusCode::OK, &routes_json(server)),
        (&Method::GET, "/admin/upstreams") => {
            json_response(StatusCode::OK, &health::upstreams_json(server))
        }
        (&Method::GET, "/admin/plugins") => json_response(StatusCode::OK, &plugins_json(server)),
        (&Method::POST, "/admin/reload") => match server.reload() {
            Ok(()) => json_response(StatusCode::OK, &json!({ "status": "applied" })),
            Err(errors) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "status": "refused", "errors": errors }),
            ),
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
            | "/admin/plugins"
            | "/debug/pprof/profile",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn routes_json(server: &dyn AdminView) -> serde_json::Value {
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

fn plugins_json(server: &dyn AdminView) -> serde_json::Value {
    let table = server.routes();
    let plugins: Vec<_> = server
        .plugins()
        .records()
        .into_iter()
        .map(|(name, record)| {
            let mut routes = Vec::new();
            let mut instances = Vec::new();
            for route in table.routes() {
                let Some(chain) = &route.chain else { continue };
                for (position, instance) in chain.layers().iter().enumerate() {
                    if instance.name() != name {
                        continue;
                    }
                    routes.push(route.spec.name.clone());
                    let status = match instance.status() {
                        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
                        Ok(None) => serde_json::Value::Null,
                        Err(error) => json!({ "error": error.to_string() }),
                    };
                    instances.push(json!({
                        "route": route.spec.name,
                        "position": position,
                        "hash": instance.plugin().hash_hex(),
                        "calls": instance.calls(),
                        "traps": instance.traps(),
                        "status": status,
                    }));
                }
            }
            let loaded = record.loaded.as_ref();
            json!({
                "name": name,
                "file": server.plugins().path_of(&name).display().to_string(),
                "file_present": record.file_present,
                "hash": loaded.map(|p| p.hash_hex()),
                "abi_version": loaded.map(|_| weir_abi::ABI_VERSION),
                "versions_loaded": record.versions,
                "loaded_at": record.loaded_at.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                "last_error": record.last_error,
                "probation": record.probation.as_ref().filter(|p| p.watching()).map(|p| json!({
                    "remaining_ms": u64::try_from(p.remaining().as_millis()).unwrap_or(u64::MAX),
                    "failures": p.failures(),
                    "max_failures": p.max_failures(),
                })),
                "rollbacks": record.rollbacks,
                "rolled_back": record.rolled_back.as_ref().map(|r| json!({
                    "hash": r.hash,
                    "reason": r.reason,
                    "at": humantime::format_rfc3339_millis(r.at).to_string(),
                })),
                "routes": routes,
                "instances": instances,
            })
        })
        .collect();
    json!({ "plugins": plugins })
}

/// Appends per-plugin call and trap counts and the plugins' own metrics,
/// labelled with route and plugin.
fn render_plugin_metrics(server: &dyn AdminView, out: &mut String) {
    use std::fmt::Write as _;
    let table = server.routes();
    let layers: Vec<_> = table
        .routes()
        .iter()
        .filter_map(|r| {
            r.chain
                .as_ref()
                .map(|c| (r.spec.name.as_str(), c.layers().to_vec()))
        })
        .collect();
    out.push_str("# HELP weir_tls_certificate_expiry_seconds Seconds until a serving certificate expires.\n# TYPE weir_tls_certificate_expiry_seconds gauge\n");
    for (address, tls) in server.tls_listeners() {
        for certificate in tls.certificates() {
            let name = certificate
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| certificate.subject.clone());
            let _ = writeln!(
                out,
                "weir_tls_certificate_expiry_seconds{{listener=\"{address}\",name=\"{}\"}} {}",
                crate::telemetry::metrics::escape(&name),
                certificate.expires_in_secs()
            );
        }
    }
    out.push_str("# HELP weir_plugin_rollbacks_total New plugin versions rolled back after failing their probation.\n# TYPE weir_plugin_rollbacks_total counter\n");
    for (name, record) in server.plugins().records() {
        let _ = writeln!(
            out,
            "weir_plugin_rollbacks_total{{plugin=\"{name}\"}} {}",
            record.rollbacks
        );
    }
    out.push_str("# HELP weir_plugin_calls_total Hook calls into a plugin instance.\n# TYPE weir_plugin_calls_total counter\n");
    for (route, instances) in &layers {
        for instance in instances {
            let _ = writeln!(
                out,
                "weir_plugin_calls_total{{route=\"{route}\",plugin=\"{}\"}} {}",
                instance.name(),
                instance.calls()
            );
        }
    }
    out.push_str("# HELP weir_plugin_traps_total Traps of a plugin instance.\n# TYPE weir_plugin_traps_total counter\n");
    for (route, instances) in &layers {
        for instance in instances {
            let _ = writeln!(
                out,
                "weir_plugin_traps_total{{route=\"{route}\",plugin=\"{}\"}} {}",
                instance.name(),
                instance.traps()
            );
        }
    }
    for (route, instances) in &layers {
        for instance in instances {
            let plugin = instance.name();
            for sample in instance.metrics() {
                let name = format!("weir_plugin_{}", sample.name);
                let labels = format!("route=\"{route}\",plugin=\"{plugin}\"");
                match sample.kind {
                    weir_abi::MetricKind::Counter => {
                        let _ = writeln!(
                            out,
                            "# TYPE {name} counter\n{name}{{{labels}}} {}",
                            sample.value
                        );
                    }
                    weir_abi::MetricKind::Gauge => {
                        let _ = writeln!(
                            out,
                            "# TYPE {name} gauge\n{name}{{{labels}}} {}",
                            sample.value
                        );
                    }
                    weir_abi::MetricKind::Histogram => {
                        let _ = writeln!(out, "# TYPE {name} histogram");
                        let mut cumulative = 0;
                        for (bound, count) in crate::plugin::metrics::HISTOGRAM_BOUNDS
                            .iter()
                            .zip(&sample.buckets)
                        {
                            cumulative += count;
                            let _ = writeln!(
                                out,
                                "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                            );
                        }
                        let total: u64 = sample.buckets.iter().sum();
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
                        let _ = writeln!(
                            out,
                            "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {total}",
                            sample.value
                        );
                    }
                }
            }
        }
    }
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
