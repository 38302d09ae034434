//! Upstreams: named groups of endpoints, the choice of an endpoint, and the
//! keep-alive connection pools that talk to them.
//!
//! Each worker has its own pool per upstream (like nginx's per-worker
//! keepalive), so a connection is only ever used by the core that opened it.
//! Background work per upstream (active health checks, discovery) runs on
//! the control runtime and stops when the upstream is replaced or dropped.

mod connector;
pub mod discovery;
mod endpoint;
mod h1;
pub mod health;
mod passive;
pub(crate) mod pool;

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_util::sync::CancellationToken;

pub use crate::upstream_error::{ErrorClass, UpstreamError};
use connector::CountingConnector;
pub use connector::{ConnectFailure, ConnectionState};
pub use discovery::DiscoveryStatus;
pub use endpoint::{Endpoint, EndpointStats, HealthNote, InFlight};
pub(crate) use h1::connection_has_token;
pub use passive::EjectError;
pub(crate) use pool::Upgraded;
use pool::{PoolSettings, PooledBody, WorkerPool};

/// An upstream response body (its connection goes back to the pool at its end).
pub type UpstreamBody = PooledBody<WeirBody>;

use crate::body::WeirBody;
use crate::config::{EndpointSpec, UpstreamProtocol, UpstreamSpec};
use crate::telemetry::metrics::{Metrics, UpstreamMetrics};

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Tells the upstreams which worker's pools this thread uses.
pub fn set_thread_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One worker's view of an upstream: its own pool and round-robin cursor.
#[repr(align(128))]
struct WorkerSlot {
    pool: Arc<WorkerPool<WeirBody>>,
    cursor: AtomicUsize,
}

/// The endpoints of an upstream at one moment; replaced whole on change.
#[derive(Debug, Default)]
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    /// Cumulative weights for weighted round robin; empty when all are 1.
    cumulative_weights: Vec<u32>,
    /// `(id, index)` sorted by id: a plugin's pick, its mark or its question
    /// about one endpoint finds it in O(log n), also among thousands.
    by_id: Vec<(u32, u32)>,
}

impl EndpointSet {
    fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let cumulative_weights = if endpoints.iter().all(|e| e.weight == 1) {
            Vec::new()
        } else {
            endpoints
                .iter()
                .scan(0u32, |sum, e| {
                    *sum = sum.saturating_add(e.weight.max(1));
                    Some(*sum)
                })
                .collect()
        };
        let mut by_id: Vec<(u32, u32)> = endpoints
            .iter()
            .enumerate()
            .map(|(index, e)| (e.id, u32::try_from(index).unwrap_or(u32::MAX)))
            .collect();
        by_id.sort_unstable();
        Self {
            endpoints,
            cumulative_weights,
            by_id,
        }
    }

    /// Every endpoint, healthy or not, in discovery order.
    pub fn all(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The endpoint with id `id`, if it is in this set.
    pub fn get(&self, id: u32) -> Option<&Arc<Endpoint>> {
        let at = self.by_id.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        self.endpoints.get(self.by_id[at].1 as usize)
    }

    /// The endpoint whose turn `turn` is, by weight.
    fn by_turn(&self, turn: usize) -> usize {
        match self.cumulative_weights.last() {
            None => turn % self.endpoints.len(),
            Some(&total) => {
                let point = u32::try_from(turn % total.max(1) as usize).unwrap_or(0);
                self.cumulative_weights.partition_point(|&w| w <= point)
            }
        }
    }
}

/// A named group of endpoints with its connection pools.
pub struct Upstream {
    pub name: String,
    pub spec: UpstreamSpec,
    endpoints: ArcSwap<EndpointSet>,
    next_id: AtomicU32,
    slots: Box<[WorkerSlot]>,
    pub metrics: Arc<UpstreamMetrics>,
    /// Open connections and the last connect error, over all worker pools.
    pub connections: Arc<ConnectionState>,
    /// What discovery last did; `static` upstreams never change it.
    discovery: Mutex<DiscoveryStatus>,
    /// Serializes ejections so that the ejected share is checked and
    /// changed atomically.
    eject_lock: Mutex<()>,
    /// Parent of the health-check and discovery tasks.
    tasks: CancellationToken,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints.load().endpoints)
            .finish()
    }
}

impl Upstream {
    /// Builds an upstream with one pool per worker. No connection is opened
    /// until the first request.
    pub fn new(name: &str, spec: &UpstreamSpec, workers: usize, metrics: &Metrics) -> Self {
        let connections = Arc::new(ConnectionState::default());
        let slots = (0..workers.max(1))
            .map(|_| WorkerSlot {
                pool: Arc::new(build_pool(spec, &connections)),
                cursor: AtomicUsize::new(0),
            })
            .collect();
        let upstream = Self {
            name: name.to_owned(),
            spec: spec.clone(),
            endpoints: ArcSwap::default(),
            next_id: AtomicU32::new(0),
            slots,
            metrics: metrics.upstream(name),
            connections,
            discovery: Mutex::new(DiscoveryStatus::new(spec.discovery.kind())),
            eject_lock: Mutex::default(),
            tasks: CancellationToken::new(),
        };
        upstream.set_endpoints(&spec.endpoints, "static");
        upstream
    }

    /// Starts this upstream's health checks and discovery on `control`.
    /// `previous` (the upstream this one replaces, if any) lends its
    /// discovered endpoints so that a reload does not leave the new one
    /// empty until its first discovery round.
    pub fn start(self: &Arc<Self>, control: &tokio::runtime::Handle, previous: Option<&Self>) {
        if let Some(previous) = previous
            && previous.spec.discovery == self.spec.discovery
            && self.spec.discovery != crate::config::Discovery::Static
        {
            let specs: Vec<EndpointSpec> = previous
                .endpoints()
                .all()
                .iter()
                .map(|e| e.spec())
                .collect();
            self.set_endpoints(&specs, self.spec.discovery.kind());
        }
        discovery::start(self, control, self.tasks.child_token());
        if let Some(check) = &self.spec.health_check {
            control.spawn(health::run(
                Arc::downgrade(self),
                check.clone(),
                self.tasks.child_token(),
            ));
        }
    }

    /// Stops health checks and discovery (the upstream was replaced or
    /// removed). Requests in flight are not affected.
    pub fn stop(&self) {
        self.tasks.cancel();
    }

    /// Replaces the endpoint set. Endpoints that stay exactly the same
    /// (address, weight, zone, metadata) keep their id, figures and pooled
    /// connections; removed ones get no new requests (their in-flight
    /// requests finish); new ones are used at once.
    pub fn set_endpoints(&self, specs: &[EndpointSpec], source: &'static str) {
        let current = self.endpoints.load();
        let endpoints: Vec<Arc<Endpoint>> = specs
            .iter()
            .map(
                |spec| match current.endpoints.iter().find(|e| e.matches(spec)) {
                    Some(kept) => Arc::clone(kept),
                    None => Arc::new(Endpoint::new(
                        self.next_id.fetch_add(1, Relaxed),
                        spec,
                        source,
                    )),
                },
            )
            .collect();
        let added = endpoints
            .iter()
            .filter(|e| !current.endpoints.iter().any(|c| Arc::ptr_eq(c, e)))
            .count();
        let removed = (current.endpoints.len() + added).saturating_sub(endpoints.len());
        if added + removed > 0 && !current.endpoints.is_empty() {
            tracing::info!(
                upstream = %self.name,
                source,
                added,
                removed,
                endpoints = endpoints.len(),
                "endpoint set changed"
            );
        }
        self.endpoints.store(Arc::new(EndpointSet::new(endpoints)));
    }

    /// What discovery last did.
    pub fn discovery_status(&self) -> DiscoveryStatus {
        self.discovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    fn slot(&self) -> &WorkerSlot {
        let index = WORKER.with(Cell::get);
        &self.slots[index % self.slots.len()]
    }

    /// Picks the next healthy endpoint by (weighted) round robin; if none is
    /// healthy, any endpoint rather than none.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let count = set.endpoints.len();
        if count == 0 {
            return None;
        }
        let turn = self.slot().cursor.fetch_add(1, Relaxed);
        let first = set.by_turn(turn);
        let chosen = (0..count)
            .map(|step| (first + step) % count)
            .find(|&i| set.endpoints[i].stats.is_healthy())
            .unwrap_or(first);
        set.endpoints.get(chosen).cloned()
    }

    /// Like [`Upstream::pick`], but avoids the endpoints in `tried` while a
    /// healthy one that was not tried exists (a retry goes elsewhere).
    pub fn pick_avoiding(&self, tried: &[u32]) -> Option<Arc<Endpoint>> {
        if tried.is_empty() {
            return self.pick();
        }
        let set = self.endpoints.load();
        let count = set.endpoints.len();
        let turn = self.slot().cursor.fetch_add(1, Relaxed);
        let first = if count == 0 { 0 } else { set.by_turn(turn) };
        let fresh = (0..count)
            .map(|step| &set.endpoints[(first + step) % count])
            .find(|e| e.stats.is_healthy() && !tried.contains(&e.id));
        match fresh {
            Some(endpoint) => Some(Arc::clone(endpoint)),
            None => self.pick(),
        }
    }

    /// Sends `request` to `endpoint` through this worker's pool. The request's
    /// URI is rewritten to point at the endpoint; its headers are sent as they are.
    pub fn send<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        request: Request<WeirBody>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        // The pool's future itself, not one wrapping it: the request path
        // moves this future, and a wrapper would be one more copy.
        self.slot()
            .pool
            .send(endpoint.id, &endpoint.authority, request)
    }
}

/// After a (re)build of the upstreams: starts the background tasks of those
/// in `next` that are new, and stops those of `previous` that were replaced
/// or removed.
pub fn activate(
    previous: &std::collections::BTreeMap<String, Arc<Upstream>>,
    next: &std::collections::BTreeMap<String, Arc<Upstream>>,
    control: &tokio::runtime::Handle,
) {
    for (name, upstream) in next {
        let old = previous.get(name);
        if !old.is_some_and(|old| Arc::ptr_eq(old, upstream)) {
            upstream.start(control, old.map(AsRef::as_ref));
        }
    }
    for (name, upstream) in previous {
        if !next.get(name).is_some_and(|new| Arc::ptr_eq(new, upstream)) {
            upstream.stop();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

fn build_pool(spec: &UpstreamSpec, connections: &Arc<ConnectionState>) -> WorkerPool<WeirBody> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(spec.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    WorkerPool::new(
        CountingConnector::new(connector, Arc::clone(connections), upstream_tls(spec)),
        PoolSettings {
            h2: spec.protocol == UpstreamProtocol::H2c,
            tls: spec.tls.is_some(),
            idle_timeout: spec.pool_idle_timeout,
            max_idle: spec.pool_max_idle_per_endpoint,
        },
    )
}

/// The TLS connector of an upstream that uses TLS. One that cannot be built
/// (a CA file gone since the config check) makes every connect fail with
/// the reason, rather than fall back to plain HTTP.
pub(crate) fn upstream_tls(spec: &UpstreamSpec) -> Option<Arc<crate::tls::UpstreamTls>> {
    let tls = spec.tls.as_ref()?;
    let h2 = spec.protocol == UpstreamProtocol::H2c;
    match crate::tls::UpstreamTls::new(tls, h2) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(error) => {
            tracing::error!(%error, "upstream TLS cannot be set up; its connections will fail");
            Some(Arc::new(crate::tls::UpstreamTls::refusing()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(weights: &[u32]) -> UpstreamSpec {
        UpstreamSpec {
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, w)| EndpointSpec {
                    weight: *w,
                    ..EndpointSpec::new(format!("127.0.0.1:{}", 1000 + i).parse().unwrap())
                })
                .collect(),
            discovery: crate::config::Discovery::Static,
            health_check: None,
            passive: crate::config::PassiveSpec::default(),
            tls: None,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: std::time::Duration::from_secs(1),
            pool_idle_timeout: std::time::Duration::from_secs(1),
            pool_max_idle_per_endpoint: 1,
        }
    }

    fn picks(weights: &[u32], n: usize) -> Vec<u32> {
        let metrics = Metrics::new(1);
        let upstream = Upstream::new("u", &spec(weights), 1, &metrics);
        (0..n).map(|_| upstream.pick().unwrap().id).collect()
    }

    #[test]
    fn unhealthy_endpoints_are_skipped_unless_all_are() {
        let metrics = Metrics::new(1);
        let upstream = Upstream::new("u", &spec(&[1, 1, 1]), 1, &metrics);
        let set = upstream.endpoints();
        set.all()[1].stats.set_actively_healthy(false);
        let ids: Vec<u32> = (0..6).map(|_| upstream.pick().unwrap().id).collect();
        assert!(!ids.contains(&1), "{ids:?}");
        for e in set.all() {
            e.stats.eject_for(std::time::Duration::from_secs(60));
        }
        assert!(upstream.pick().is_some(), "all unhealthy: still pick one");
    }

    #[test]
    fn endpoint_updates_keep_kept_endpoints() {
        let metrics = Metrics::new(1);
        let upstream = Upstream::new("u", &spec(&[1, 1]), 1, &metrics);
        let before = upstream.endpoints();
        let mut next = spec(&[1, 1, 1]).endpoints;
        next.remove(0);
        upstream.set_endpoints(&next, "file");
        let after = upstream.endpoints();
        assert_eq!(after.all().len(), 2);
        assert!(
            Arc::ptr_eq(&before.all()[1], &after.all()[0]),
            "kept endpoint keeps its identity"
        );
        assert_eq!(after.all()[1].id, 2, "new endpoint gets a fresh id");
        assert_eq!(after.all()[1].source, "file");
        // Found by id, whatever their order in the set.
        let mut reordered = next.clone();
        reordered.reverse();
        upstream.set_endpoints(&reordered, "file");
        let set = upstream.endpoints();
        for id in [1, 2] {
            assert_eq!(set.get(id).map(|e| e.id), Some(id));
        }
        assert!(set.get(0).is_none(), "removed");
        assert!(set.get(u32::MAX).is_none());
    }

    #[test]
    fn round_robin_cycles_in_order() {
        assert_eq!(picks(&[1, 1, 1], 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_share_turns_in_proportion() {
        let ids = picks(&[1, 3], 8);
        assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 6);
        assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 2);
    }
}
