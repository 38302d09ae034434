//! Endpoints and their live figures: requests in flight, latency EWMA,
//! failures, and health (active checks and passive ejection). The balancer
//! plugins, the health checker and the admin API all read these; the request
//! path writes them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::Authority;

use crate::telemetry::window::Window;

/// Weight of the newest sample in the latency EWMA.
const EWMA_ALPHA: f64 = 0.2;

/// One endpoint of an upstream. Its identity is its address: a discovery
/// update that keeps the address keeps the endpoint, its id and its figures.
#[derive(Debug)]
pub struct Endpoint {
    /// Unique within its upstream for the upstream's lifetime.
    pub id: u32,
    pub authority: Authority,
    pub weight: u32,
    /// The locality it runs in, if discovery says (for zone-aware balancers).
    pub zone: Option<String>,
    /// Free-form labels from discovery.
    pub metadata: BTreeMap<String, String>,
    /// Where the endpoint came from (`static`, `dns`, `file`, `etcd`).
    pub source: &'static str,
    pub stats: EndpointStats,
}

impl Endpoint {
    /// A fresh endpoint with no figures yet.
    pub fn new(id: u32, spec: &crate::config::EndpointSpec, source: &'static str) -> Self {
        Self {
            id,
            authority: spec.address.clone(),
            weight: spec.weight,
            zone: spec.zone.clone(),
            metadata: spec.metadata.clone(),
            source,
            stats: EndpointStats::default(),
        }
    }

    /// Whether `spec` describes this endpoint exactly (address, weight,
    /// zone, metadata): then a discovery update keeps it.
    pub fn matches(&self, spec: &crate::config::EndpointSpec) -> bool {
        self.authority == spec.address
            && self.weight == spec.weight
            && self.zone == spec.zone
            && self.metadata == spec.metadata
    }

    /// The spec this endpoint was made from.
    pub fn spec(&self) -> crate::config::EndpointSpec {
        crate::config::EndpointSpec {
            address: self.authority.clone(),
            weight: self.weight,
            zone: self.zone.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// Why an endpoint is or was unhealthy; read by the admin API only, so a
/// mutex is fine.
#[derive(Debug, Default, Clone)]
pub struct HealthNote {
    /// The last failed active check's reason while actively unhealthy.
    pub active_reason: Option<String>,
    /// The reason given with the current or last passive ejection.
    pub ejection_reason: Option<String>,
    /// Consecutive ejections (the next ejection lasts one more base time).
    pub ejections: u32,
    /// When the last ejection ends or ended.
    pub ejection_ends: Option<Instant>,
}

/// Live figures of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    /// f64 bits; 0.0 until the first sample.
    ewma_micros: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Set by active health checks; endpoints start healthy.
    healthy: AtomicBool,
    /// Passive ejection: unhealthy until this many ms after `epoch`.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
    /// Latency samples (µs) of the last minute, for a windowed average.
    window: Window,
    note: Mutex<HealthNote>,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            ewma_micros: AtomicU64::new(0f64.to_bits()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            window: Window::default(),
            note: Mutex::default(),
        }
    }
}

impl EndpointStats {
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Latency EWMA to the response head, in microseconds (0 before any).
    pub fn latency_ewma_micros(&self) -> f64 {
        f64::from_bits(self.ewma_micros.load(Relaxed))
    }

    /// Mean latency (µs) over the last minute, and the samples it is over.
    pub fn latency_window_micros(&self) -> (Option<f64>, u64) {
        (self.window.mean(), self.window.totals().0)
    }

    /// Why the endpoint is or was unhealthy.
    pub fn note(&self) -> HealthNote {
        self.note
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the health note under its lock.
    pub fn update_note<R>(&self, change: impl FnOnce(&mut HealthNote) -> R) -> R {
        change(&mut self.note.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current health as one word and a reason, for the admin API.
    pub fn health_reason(&self) -> (&'static str, Option<String>) {
        let note = self.note();
        if self.is_ejected() {
            ("ejected", note.ejection_reason)
        } else if !self.actively_healthy() {
            ("unhealthy", note.active_reason)
        } else {
            ("healthy", None)
        }
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Requests that ended in an upstream failure.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Healthy by active checks and not passively ejected.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed) && !self.is_ejected()
    }

    /// Whether active health checks last found the endpoint healthy.
    pub fn actively_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Records an active health check verdict; returns whether it changed.
    pub fn set_actively_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Relaxed) != healthy
    }

    /// Whether a passive ejection is in force.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && self.millis_now() < until
    }

    /// Ejects the endpoint for `duration` (passive health).
    pub fn eject_for(&self, duration: Duration) {
        if duration.is_zero() {
            self.clear_ejection();
            return;
        }
        let until = self
            .millis_now()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until_ms.store(until, Relaxed);
    }

    /// Ends a passive ejection early.
    pub fn clear_ejection(&self) {
        self.ejected_until_ms.store(0, Relaxed);
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, latency: Duration, failed: bool) {
        self.requests.fetch_add(1, Relaxed);
        if failed {
            self.failures.fetch_add(1, Relaxed);
        }
        self.window
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        let sample = latency.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.ewma_micros.load(Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        // Racy read-modify-write: a lost sample under contention is harmless for an average.
        self.ewma_micros.store(new.to_bits(), Relaxed);
    }
}

/// Counts a request against an endpoint from send to response head (or
/// failure). Dropped without [`InFlight::finish`], it still leaves the
/// in-flight count right.
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
    finished: bool,
}

impl InFlight {
    pub fn start(endpoint: Arc<Endpoint>) -> Self {
        endpoint.stats.in_flight.fetch_add(1, Relaxed);
        Self {
            endpoint,
            started: Instant::now(),
            finished: false,
        }
    }

    /// The endpoint this request went to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Records the outcome: latency since start and whether it failed.
    pub fn finish(mut self, failed: bool) -> Duration {
        let latency = self.started.elapsed();
        self.endpoint.stats.record(latency, failed);
        self.finished = true;
        latency
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Arc<Endpoint> {
        Arc::new(Endpoint {
            id: 0,
            authority: Authority::from_static("127.0.0.1:1"),
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
            source: "static",
            stats: EndpointStats::default(),
        })
    }

    #[test]
    fn in_flight_counts_and_ewma_moves_toward_samples() {
        let e = endpoint();
        let a = InFlight::start(Arc::clone(&e));
        let b = InFlight::start(Arc::clone(&e));
        assert_eq!(e.stats.in_flight(), 2);
        drop(a);
        assert_eq!(e.stats.in_flight(), 1);
        b.finish(true);
        assert_eq!(e.stats.in_flight(), 0);
        assert_eq!(e.stats.requests(), 1);
        assert_eq!(e.stats.failures(), 1);
        e.stats.record(Duration::from_micros(1000), false);
        e.stats.record(Duration::from_micros(1000), false);
        let first = e.stats.latency_ewma_micros();
        e.stats.record(Duration::from_micros(11_000), false);
        let after = e.stats.latency_ewma_micros();
        assert!(after > first && after < 11_000.0, "{first} → {after}");
    }

    #[test]
    fn ejection_expires_and_active_health_combines() {
        let e = endpoint();
        assert!(e.stats.is_healthy());
        e.stats.eject_for(Duration::from_secs(60));
        assert!(!e.stats.is_healthy());
        e.stats.clear_ejection();
        assert!(e.stats.is_healthy());
        e.stats.eject_for(Duration::ZERO);
        assert!(e.stats.is_healthy(), "a zero ejection has already ended");
        assert!(e.stats.set_actively_healthy(false));
        assert!(!e.stats.set_actively_healthy(false));
        assert!(!e.stats.is_healthy());
    }
}
