//! The operator's view of the proxy's health: `/admin/health` (what a good
//! health check reports: upstream connection state, rolling response times,
//! current connections, running average of bad requests), the readiness
//! checks behind `/readyz`, the per-endpoint JSON of `/admin/upstreams`, and
//! the live upstream gauges appended to `/metrics`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::AdminView;
use crate::telemetry::metrics::escape;
use crate::telemetry::window::Window;
use crate::upstream::{Endpoint, Upstream};

/// One readiness check: `None` when fine, else why the proxy is not ready.
pub type ReadyCheck = fn(&dyn AdminView) -> Option<String>;

/// Everything `/readyz` checks, in order. Add a check here (e.g. "every
/// plugin a route names has loaded once") to make readiness wait for it.
pub const READY_CHECKS: &[ReadyCheck] = &[serving, routes_have_endpoints, plugins_loaded];

/// Why the proxy is not ready; empty when it is.
pub fn not_ready_reasons(server: &dyn AdminView) -> Vec<String> {
    READY_CHECKS
        .iter()
        .filter_map(|check| check(server))
        .collect()
}

fn serving(server: &dyn AdminView) -> Option<String> {
    (!server.is_ready()).then(|| String::from("starting or draining"))
}

/// Every plugin a route names has a loaded version serving in its chain.
/// (A config naming a plugin that cannot load is refused, and a deleted or
/// broken file keeps the last good version, so this guards the invariant.)
fn plugins_loaded(server: &dyn AdminView) -> Option<String> {
    let table = server.routes();
    let records = server.plugins().records();
    let missing: Vec<String> = table
        .routes()
        .iter()
        .flat_map(|route| {
            let chained = route.chain.as_ref().map_or(0, |c| c.layers().len());
            let records = &records;
            route.spec.plugins.iter().filter_map(move |p| {
                let loaded = records.get(&p.name).is_some_and(|r| r.loaded.is_some());
                (!loaded || chained != route.spec.plugins.len())
                    .then(|| format!("plugin {} of route {}", p.name, route.spec.name))
            })
        })
        .collect();
    (!missing.is_empty()).then(|| format!("never loaded: {}", missing.join(", ")))
}

fn routes_have_endpoints(server: &dyn AdminView) -> Option<String> {
    let table = server.routes();
    let empty: Vec<String> = table
        .routes()
        .iter()
        .filter(|route| route.upstream.endpoints().all().is_empty())
        .map(|route| {
            format!(
                "route {} (upstream {})",
                route.spec.name, route.upstream.name
            )
        })
        .collect();
    (!empty.is_empty()).then(|| format!("no endpoints for {}", empty.join(", ")))
}

/// One endpoint's figures and health, as `/admin/upstreams` and
/// `/admin/health` show them.
pub fn endpoint_json(endpoint: &Endpoint) -> Value {
    let stats = &endpoint.stats;
    let (health, reason) = stats.health_reason();
    let (window_mean, window_samples) = stats.latency_window_micros();
    json!({
        "id": endpoint.id,
        "address": endpoint.authority.as_str(),
        "weight": endpoint.weight,
        "zone": endpoint.zone,
        "metadata": endpoint.metadata,
        "source": endpoint.source,
        "health": health,
        "health_reason": reason,
        "healthy": stats.is_healthy(),
        "actively_healthy": stats.actively_healthy(),
        "ejected": stats.is_ejected(),
        "ejections": stats.note().ejections,
        "in_flight": stats.in_flight(),
        "latency_ewma_ms": stats.latency_ewma_micros() / 1000.0,
        "latency_window_ms": window_mean.map(|m| m / 1000.0),
        "latency_window_samples": window_samples,
        "requests": stats.requests(),
        "failures": stats.failures(),
    })
}

fn upstream_json(upstream: &Upstream) -> Value {
    let set = upstream.endpoints();
    let in_flight: u64 = set
        .all()
        .iter()
        .map(|e| u64::from(e.stats.in_flight()))
        .sum();
    let open = upstream.connections.open();
    let healthy = set.all().iter().filter(|e| e.stats.is_healthy()).count();
    json!({
        "name": upstream.name,
        "protocol": upstream.spec.protocol,
        "discovery": upstream.discovery_status(),
        "health_checks": upstream.spec.health_check.is_some(),
        "connections": {
            "open": open,
            // A connection carries one request at a time on HTTP/1.1, so the
            // ones not carrying a request are idle (an estimate for h2c).
            "active": usize::try_from(in_flight).unwrap_or(usize::MAX).min(open),
            "idle": open.saturating_sub(usize::try_from(in_flight).unwrap_or(usize::MAX)),
            "opened_total": upstream.connections.opened(),
            "connect_failures_total": upstream.connections.failed(),
            "last_connect_error": upstream.connections.last_error(),
        },
        "endpoints_total": set.all().len(),
        "endpoints_healthy": healthy,
        "endpoints": set.all().iter().map(|e| endpoint_json(e)).collect::<Vec<_>>(),
    })
}

/// `/admin/upstreams`.
pub fn upstreams_json(server: &dyn AdminView) -> Value {
    let upstreams: Vec<Value> = server
        .upstreams()
        .values()
        .map(|upstream| {
            json!({
                "name": upstream.name,
                "protocol": upstream.spec.protocol,
                "source": upstream.spec.discovery.kind(),
                "discovery": upstream.discovery_status(),
                "endpoints": upstream.endpoints().all().iter().map(|e| endpoint_json(e)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "upstreams": upstreams })
}

/// `/admin/health`.
pub fn health_json(server: &dyn AdminView) -> Value {
    let window_seconds = Window::span().as_secs();
    let tls = super::tls_json(server);
    let table = server.routes();
    let routes: Vec<Value> = table
        .routes()
        .iter()
        .map(|route| {
            let (recent, recent_errors) = route.metrics.recent_server_errors();
            let (total, total_errors) = route.metrics.totals();
            json!({
                "name": route.spec.name,
                "upstream": route.upstream.name,
                "requests_total": total,
                "server_errors_total": total_errors,
                "window_requests": recent,
                "window_server_errors": recent_errors,
                // The running average of bad answers: the share of the
                // window's requests that got a 5xx, and 5xx per second.
                "server_error_ratio": (recent > 0).then(|| recent_errors as f64 / recent as f64),
                "server_errors_per_second": recent_errors as f64 / window_seconds as f64,
            })
        })
        .collect();
    let metrics = server.metrics();
    let reasons = not_ready_reasons(server);
    json!({
        "ready": reasons.is_empty(),
        "not_ready_reasons": reasons,
        "window_seconds": window_seconds,
        "client_connections": server.open_connections(),
        "malformed_requests_total": metrics.bad_requests.load(std::sync::atomic::Ordering::Relaxed),
        "listeners": metrics.listeners().iter().map(|(name, listener)| {
            let tls = &tls;
            let client_errors: serde_json::Map<String, serde_json::Value> = crate::fault::ClientFaultClass::ALL
                .iter()
                .map(|class| (class.as_str().to_owned(), json!(listener.client_errors(*class))))
                .collect();
            let handshake_errors: serde_json::Map<String, serde_json::Value> = crate::tls::TlsHandshakeFailure::ALL
                .iter()
                .map(|reason| (reason.as_str().to_owned(), json!(listener.tls_handshake_errors(*reason))))
                .collect();
            json!({
                "listener": name,
                "client_errors_total": client_errors,
                "tls_handshake_errors_total": handshake_errors,
                "tls": tls.get(name),
            })
        }).collect::<Vec<_>>(),
        "upstreams": server.upstreams().values().map(|u| upstream_json(u)).collect::<Vec<_>>(),
        "routes": routes,
    })
}

/// Live upstream gauges in the Prometheus text format, appended to the
/// counters that [`crate::telemetry::metrics::Metrics::render`] writes.
pub fn render_upstream_gauges(server: &dyn AdminView) -> String {
    let upstreams = server.upstreams();
    let mut out = String::new();
    let mut family = |name: &str, help: &str, value: &dyn Fn(&Upstream) -> usize| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (upstream_name, upstream) in &upstreams {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\"}} {}",
                escape(upstream_name),
                value(upstream)
            );
        }
    };
    family("weir_upstream_endpoints", "Endpoints known now.", &|u| {
        u.endpoints().all().len()
    });
    family(
        "weir_upstream_healthy_endpoints",
        "Endpoints healthy now (active checks and not ejected).",
        &|u| {
            u.endpoints()
                .all()
                .iter()
                .filter(|e| e.stats.is_healthy())
                .count()
        },
    );
    family(
        "weir_upstream_ejected_endpoints",
        "Endpoints passively ejected now.",
        &|u| {
            u.endpoints()
                .all()
                .iter()
                .filter(|e| e.stats.is_ejected())
                .count()
        },
    );
    family(
        "weir_upstream_open_connections",
        "Upstream connections open now, idle ones included.",
        &|u| u.connections.open(),
    );
    family(
        "weir_discovery_healthy",
        "1 while the upstream's discovery source answers, 0 while it fails.",
        &|u| usize::from(u.discovery_status().state != "error"),
    );
    out
}
