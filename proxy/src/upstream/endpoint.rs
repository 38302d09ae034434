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

/// Peak EWMA's decay time constant: with no new sample, a cost falls to
/// 1/e of itself in this time (Finagle's and Linkerd's default), so an
/// endpoint that was slow or failing once is tried again later.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// The latency a failed exchange counts as (refused, reset, timeout): far
/// above any real latency, so a dead endpoint, whose refusals are fast, is
/// not taken for a fast one.
const FAILURE_PENALTY_MICROS: f64 = 1_000_000.0;

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
    /// Peak EWMA cost, f64 bits; 0.0 until the first sample.
    ewma_micros: AtomicU64,
    /// When the cost was last updated, in µs after `epoch`.
    ewma_stamp_micros: AtomicU64,
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
            ewma_stamp_micros: AtomicU64::new(0),
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

    /// Peak-EWMA latency to the response head, in microseconds, as of
    /// now (0 before any sample): failures count as a large penalty, and the
    /// cost decays with time when no sample comes.
    pub fn latency_ewma_micros(&self) -> f64 {
        self.latency_ewma_micros_at(Instant::now())
    }

    /// As [`EndpointStats::latency_ewma_micros`] at `now` (read once for a
    /// whole endpoint list).
    pub fn latency_ewma_micros_at(&self, now: Instant) -> f64 {
        let cost = f64::from_bits(self.ewma_micros.load(Relaxed));
        let stamp = self.ewma_stamp_micros.load(Relaxed);
        cost * decay(self.micros_since_epoch(now).saturating_sub(stamp))
    }

    fn micros_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
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

    fn record(&self, latency: Duration, failed: bool, now: Instant) {
        self.requests.fetch_add(1, Relaxed);
        if failed {
            self.failures.fetch_add(1, Relaxed);
        }
        self.window
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), now);
        self.observe(latency, failed, now);
    }

    /// Peak EWMA (Finagle's `PeakEwma`): a sample above the cost replaces
    /// it at once (a slowdown shows immediately); one below pulls the cost
    /// down by how long it has been since the last sample.
    fn observe(&self, latency: Duration, failed: bool, now: Instant) {
        let sample = if failed {
            FAILURE_PENALTY_MICROS
        } else {
            latency.as_secs_f64() * 1e6
        };
        let now_micros = self.micros_since_epoch(now);
        let old = f64::from_bits(self.ewma_micros.load(Relaxed));
        let stamp = self.ewma_stamp_micros.load(Relaxed);
        let w = decay(now_micros.saturating_sub(stamp));
        let new = if sample > old {
            sample
        } else {
            old * w + sample * (1.0 - w)
        };
        // Racy read-modify-write: a lost sample under contention is harmless for an average.
        self.ewma_micros.store(new.to_bits(), Relaxed);
        self.ewma_stamp_micros.store(now_micros, Relaxed);
    }
}

/// The weight left of a cost after `micros` without a sample.
fn decay(micros: u64) -> f64 {
    (-(micros as f64) / (EWMA_DECAY.as_secs_f64() * 1e6)).exp()
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
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.started);
        self.endpoint.stats.record(latency, failed, now);
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
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays_toward_zero() {
        let e = endpoint();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        e.stats.observe(Duration::from_millis(1), false, at(0));
        let base = e.stats.latency_ewma_micros_at(at(0));
        assert!((base - 1000.0).abs() < 1.0, "{base}");
        // A slow answer shows at once.
        e.stats.observe(Duration::from_millis(150), false, at(10));
        assert!(e.stats.latency_ewma_micros_at(at(10)) >= 150_000.0 - 1.0);
        // Fast answers right after pull it down only a little…
        e.stats.observe(Duration::from_millis(1), false, at(20));
        assert!(e.stats.latency_ewma_micros_at(at(20)) > 100_000.0);
        // …but with no samples at all it decays: a once-slow endpoint is
        // cheaper than a steady 1 ms one within a minute, and gets tried.
        let later = e.stats.latency_ewma_micros_at(at(60_000));
        assert!(later < 1000.0, "{later}");
    }

    #[test]
    fn a_failure_costs_a_penalty_not_its_fast_latency() {
        let dead = endpoint();
        let live = endpoint();
        let now = Instant::now();
        live.stats.observe(Duration::from_millis(5), false, now);
        // A refused connect takes 100 µs.
        dead.stats.observe(Duration::from_micros(100), true, now);
        assert!(
            dead.stats.latency_ewma_micros_at(now) > 100.0 * live.stats.latency_ewma_micros_at(now)
        );
        // It stays dearer than the live one for seconds, then is probed again.
        let soon = now + Duration::from_secs(5);
        assert!(dead.stats.latency_ewma_micros_at(soon) > live.stats.latency_ewma_micros_at(soon));
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
