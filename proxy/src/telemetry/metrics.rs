//! The proxy's own metrics, kept in atomics and rendered as Prometheus text.
//!
//! Counters on the request path are sharded per worker (one cache line each),
//! so that workers on different cores never write the same line; `/metrics`
//! sums the shards when it renders.

use crate::tls::{HandshakeFailed, TlsHandshakeFailure};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::window::Window;
use crate::fault::ClientFaultClass;
use crate::upstream_error::ErrorClass;

/// Latency bucket upper bounds, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const STATUS_SLOTS: usize = 500; // statuses 100..=599

thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Tells the metrics which shard this thread writes (its worker index).
pub fn set_thread_shard(index: usize) {
    SHARD.with(|s| s.set(index));
}

fn shard_index(len: usize) -> usize {
    SHARD.with(std::cell::Cell::get) % len.max(1)
}

/// One worker's counters for one route.
#[repr(align(128))]
struct RouteShard {
    statuses: Box<[AtomicU64]>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_micros_sum: AtomicU64,
    count: AtomicU64,
    /// Requests of the last minute, each sampled as 1 if it was a 5xx.
    server_errors: Window,
}

impl RouteShard {
    fn new() -> Self {
        Self {
            statuses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_micros_sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            server_errors: Window::default(),
        }
    }
}

/// Requests by status and their latency, for one route.
pub struct RouteMetrics {
    shards: Box<[RouteShard]>,
}

impl RouteMetrics {
    fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| RouteShard::new()).collect(),
        }
    }

    /// Records one request answered at `now` (the caller's clock read,
    /// also used for its latency).
    pub fn observe(&self, status: http::StatusCode, latency: Duration, now: std::time::Instant) {
        let shard = &self.shards[shard_index(self.shards.len())];
        let slot = usize::from(status.as_u16())
            .saturating_sub(100)
            .min(STATUS_SLOTS - 1);
        shard.statuses[slot].fetch_add(1, Relaxed);
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            shard.buckets[bucket].fetch_add(1, Relaxed);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        shard.latency_micros_sum.fetch_add(micros, Relaxed);
        shard.count.fetch_add(1, Relaxed);
        shard
            .server_errors
            .record(u64::from(status.is_server_error()), now);
    }

    /// Requests answered and how many of them were 5xx, over the last minute
    /// (see [`Window::span`]).
    pub fn recent_server_errors(&self) -> (u64, u64) {
        self.shards
            .iter()
            .map(|s| s.server_errors.totals())
            .fold((0, 0), |(n, e), (sn, se)| (n + sn, e + se))
    }

    /// Requests answered so far, and the 5xx among them.
    pub fn totals(&self) -> (u64, u64) {
        let count = self.shards.iter().map(|s| s.count.load(Relaxed)).sum();
        let errors = (500..=599).map(|s| self.requests_with_status(s)).sum();
        (count, errors)
    }

    /// Total requests recorded with `status`.
    pub fn requests_with_status(&self, status: u16) -> u64 {
        let slot = usize::from(status)
            .saturating_sub(100)
            .min(STATUS_SLOTS - 1);
        self.shards
            .iter()
            .map(|s| s.statuses[slot].load(Relaxed))
            .sum()
    }
}

/// Upstream failures by class, health and discovery events, for one upstream.
pub struct UpstreamMetrics {
    errors: [AtomicU64; ErrorClass::ALL.len()],
    /// Active health checks that passed and failed.
    pub health_checks_passed: AtomicU64,
    pub health_checks_failed: AtomicU64,
    /// Active health transitions.
    pub became_healthy: AtomicU64,
    pub became_unhealthy: AtomicU64,
    /// Passive ejections applied, and refused by the ejection cap.
    pub ejections: AtomicU64,
    pub ejections_refused: AtomicU64,
    /// Endpoint sets published by discovery, and failed discovery rounds.
    pub discovery_updates: AtomicU64,
    pub discovery_errors: AtomicU64,
}

impl UpstreamMetrics {
    /// Counts one failure.
    pub fn error(&self, class: ErrorClass) {
        self.errors[class as usize].fetch_add(1, Relaxed);
    }

    /// Failures of `class` so far.
    pub fn errors(&self, class: ErrorClass) -> u64 {
        self.errors[class as usize].load(Relaxed)
    }
}

/// Client faults by class, for one listener. Rare by nature (each closes
/// its connection), so not sharded.
#[derive(Default)]
pub struct ListenerMetrics {
    client_errors: [AtomicU64; ClientFaultClass::ALL.len()],
    tls_handshake_errors: [AtomicU64; TlsHandshakeFailure::ALL.len()],
}

impl ListenerMetrics {
    /// Counts one failed TLS handshake by its reason; the TLS stack's error
    /// goes to the debug log only (a client can fail handshakes at will, so
    /// never per connection above debug).
    pub fn tls_handshake_failed(&self, failed: &HandshakeFailed, peer: std::net::SocketAddr) {
        if let Some(error) = &failed.error {
            tracing::debug!(%peer, %error, reason = failed.reason.as_str(), "TLS handshake failed");
        }
        self.tls_handshake_errors[failed.reason as usize].fetch_add(1, Relaxed);
    }

    /// Failed TLS handshakes for `reason` so far.
    pub fn tls_handshake_errors(&self, reason: TlsHandshakeFailure) -> u64 {
        self.tls_handshake_errors[reason as usize].load(Relaxed)
    }

    /// Counts one client fault.
    pub fn client_error(&self, class: ClientFaultClass) {
        self.client_errors[class as usize].fetch_add(1, Relaxed);
    }

    /// Client faults of `class` so far.
    pub fn client_errors(&self, class: ClientFaultClass) -> u64 {
        self.client_errors[class as usize].load(Relaxed)
    }
}

/// Every metric the proxy keeps.
pub struct Metrics {
    shards: usize,
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    upstreams: Mutex<BTreeMap<String, Arc<UpstreamMetrics>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerMetrics>>>,
    /// Client connections open now.
    pub open_connections: AtomicI64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Requests refused as malformed (400, 414, 431).
    pub bad_requests: AtomicU64,
    /// Requests that matched no route.
    pub unrouted: AtomicU64,
    /// Config reloads, applied and refused.
    pub reloads_applied: AtomicU64,
    pub reloads_refused: AtomicU64,
    /// Plugin hot swaps, applied and refused.
    pub plugin_swaps_applied: AtomicU64,
    pub plugin_swaps_refused: AtomicU64,
}

impl Metrics {
    /// `shards` is the number of workers writing concurrently.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: shards.max(1),
            routes: Mutex::default(),
            upstreams: Mutex::default(),
            listeners: Mutex::default(),
            open_connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            reloads_applied: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            plugin_swaps_applied: AtomicU64::new(0),
            plugin_swaps_refused: AtomicU64::new(0),
        }
    }

    /// The metrics of route `name`, created on first use and kept across
    /// reloads so that counters never go backwards.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            routes
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(RouteMetrics::new(self.shards))),
        )
    }

    /// The metrics of listener `name` (its configured address), created on
    /// first use and kept across reloads.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(listeners.entry(name.to_owned()).or_default())
    }

    /// Every listener's metrics, by name.
    pub fn listeners(&self) -> BTreeMap<String, Arc<ListenerMetrics>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The metrics of upstream `name`, created on first use.
    pub fn upstream(&self, name: &str) -> Arc<UpstreamMetrics> {
        let mut upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(upstreams.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(UpstreamMetrics {
                errors: std::array::from_fn(|_| AtomicU64::new(0)),
                health_checks_passed: AtomicU64::new(0),
                health_checks_failed: AtomicU64::new(0),
                became_healthy: AtomicU64::new(0),
                became_unhealthy: AtomicU64::new(0),
                ejections: AtomicU64::new(0),
                ejections_refused: AtomicU64::new(0),
                discovery_updates: AtomicU64::new(0),
                discovery_errors: AtomicU64::new(0),
            })
        }))
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();

        out.push_str("# HELP weir_requests_total Requests answered, by route and status.\n# TYPE weir_requests_total counter\n");
        for (name, route) in &routes {
            for slot in 0..STATUS_SLOTS {
                let n: u64 = route
                    .shards
                    .iter()
                    .map(|s| s.statuses[slot].load(Relaxed))
                    .sum();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "weir_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                        escape(name),
                        slot + 100
                    );
                }
            }
        }
        out.push_str("# HELP weir_request_duration_seconds Time from request to response head, by route.\n# TYPE weir_request_duration_seconds histogram\n");
        for (name, route) in &routes {
            let name = escape(name);
            let mut cumulative = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += route
                    .shards
                    .iter()
                    .map(|s| s.buckets[i].load(Relaxed))
                    .sum::<u64>();
                let _ = writeln!(
                    out,
                    "weir_request_duration_seconds_bucket{{route=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count: u64 = route.shards.iter().map(|s| s.count.load(Relaxed)).sum();
            let micros: u64 = route
                .shards
                .iter()
                .map(|s| s.latency_micros_sum.load(Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "weir_request_duration_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "weir_request_duration_seconds_sum{{route=\"{name}\"}} {}",
                micros as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "weir_request_duration_seconds_count{{route=\"{name}\"}} {count}"
            );
        }
        out.push_str("# HELP weir_upstream_errors_total Upstream failures, by upstream and class.\n# TYPE weir_upstream_errors_total counter\n");
        for (name, upstream) in &upstreams {
            for class in ErrorClass::ALL {
                let _ = writeln!(
                    out,
                    "weir_upstream_errors_total{{upstream=\"{}\",class=\"{}\"}} {}",
                    escape(name),
                    class.as_str(),
                    upstream.errors(class)
                );
            }
        }
        render_upstream_events(&mut out, &upstreams);
        out.push_str("# HELP weir_client_errors_total Requests refused or cut short by the client's fault, by listener and class.\n# TYPE weir_client_errors_total counter\n");
        for (name, listener) in &self.listeners() {
            for class in ClientFaultClass::ALL {
                let _ = writeln!(
                    out,
                    "weir_client_errors_total{{listener=\"{}\",class=\"{}\"}} {}",
                    escape(name),
                    class.as_str(),
                    listener.client_errors(class)
                );
            }
        }
        out.push_str("# HELP weir_tls_handshake_errors_total Failed TLS handshakes, by listener and reason.\n# TYPE weir_tls_handshake_errors_total counter\n");
        for (name, listener) in &self.listeners() {
            for reason in TlsHandshakeFailure::ALL {
                let _ = writeln!(
                    out,
                    "weir_tls_handshake_errors_total{{listener=\"{}\",reason=\"{}\"}} {}",
                    escape(name),
                    reason.as_str(),
                    listener.tls_handshake_errors(reason)
                );
            }
        }
        let gauges = [
            (
                "weir_open_connections",
                "gauge",
                "Client connections open now.",
                self.open_connections.load(Relaxed),
            ),
            (
                "weir_connections_total",
                "counter",
                "Client connections accepted.",
                to_i64(self.connections_total.load(Relaxed)),
            ),
            (
                "weir_bad_requests_total",
                "counter",
                "Malformed requests refused.",
                to_i64(self.bad_requests.load(Relaxed)),
            ),
            (
                "weir_unrouted_requests_total",
                "counter",
                "Requests that matched no route.",
                to_i64(self.unrouted.load(Relaxed)),
            ),
            (
                "weir_config_reloads_total",
                "counter",
                "Config reloads applied.",
                to_i64(self.reloads_applied.load(Relaxed)),
            ),
            (
                "weir_config_reloads_refused_total",
                "counter",
                "Config reloads refused as invalid.",
                to_i64(self.reloads_refused.load(Relaxed)),
            ),
            (
                "weir_plugin_swaps_total",
                "counter",
                "Plugin versions swapped in.",
                to_i64(self.plugin_swaps_applied.load(Relaxed)),
            ),
            (
                "weir_plugin_swaps_refused_total",
                "counter",
                "Plugin versions refused (the old version kept serving).",
                to_i64(self.plugin_swaps_refused.load(Relaxed)),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

fn render_upstream_events(out: &mut String, upstreams: &BTreeMap<String, Arc<UpstreamMetrics>>) {
    type Pick = fn(&UpstreamMetrics) -> [(&'static str, &AtomicU64); 2];
    let families: [(&str, &str, &str, Pick); 4] = [
        (
            "weir_health_checks_total",
            "Active health checks, by upstream and result.",
            "result",
            |m| {
                [
                    ("passed", &m.health_checks_passed),
                    ("failed", &m.health_checks_failed),
                ]
            },
        ),
        (
            "weir_health_transitions_total",
            "Endpoints that became healthy or unhealthy by active checks.",
            "to",
            |m| {
                [
                    ("healthy", &m.became_healthy),
                    ("unhealthy", &m.became_unhealthy),
                ]
            },
        ),
        (
            "weir_ejections_total",
            "Passive ejections, applied or refused by max_ejected_percent.",
            "result",
            |m| [("applied", &m.ejections), ("refused", &m.ejections_refused)],
        ),
        (
            "weir_discovery_updates_total",
            "Discovery rounds, by upstream and result.",
            "result",
            |m| [("ok", &m.discovery_updates), ("error", &m.discovery_errors)],
        ),
    ];
    for (family, help, label, pick) in families {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
        for (name, upstream) in upstreams {
            for (value, counter) in pick(upstream) {
                let _ = writeln!(
                    out,
                    "{family}{{upstream=\"{}\",{label}=\"{value}\"}} {}",
                    escape(name),
                    counter.load(Relaxed)
                );
            }
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Escapes a label value for the Prometheus text format.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let metrics = Metrics::new(2);
        let route = metrics.route("api");
        route.observe(
            http::StatusCode::OK,
            Duration::from_micros(700),
            std::time::Instant::now(),
        );
        set_thread_shard(1);
        route.observe(
            http::StatusCode::OK,
            Duration::from_millis(30),
            std::time::Instant::now(),
        );
        route.observe(
            http::StatusCode::BAD_GATEWAY,
            Duration::from_millis(3),
            std::time::Instant::now(),
        );
        metrics
            .upstream("backend")
            .error(ErrorClass::ConnectRefused);
        let text = metrics.render();
        assert!(
            text.contains("weir_requests_total{route=\"api\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weir_requests_total{route=\"api\",status=\"502\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_request_duration_seconds_bucket{route=\"api\",le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_request_duration_seconds_bucket{route=\"api\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weir_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "weir_upstream_errors_total{upstream=\"backend\",class=\"connect_refused\"} 1"
            ),
            "{text}"
        );
        assert_eq!(route.requests_with_status(200), 2);
    }

    #[test]
    fn route_metrics_survive_lookup_again() {
        let metrics = Metrics::new(1);
        metrics.route("a").observe(
            http::StatusCode::OK,
            Duration::ZERO,
            std::time::Instant::now(),
        );
        assert_eq!(metrics.route("a").requests_with_status(200), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
