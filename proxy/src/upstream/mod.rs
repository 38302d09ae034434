//! Upstreams: named groups of endpoints, the choice of an endpoint, and the
//! pooled keep-alive client that talks to them.
//!
//! Each worker has its own pool per upstream (like nginx's per-worker
//! keepalive), so a connection is only ever used by the core that opened it.

mod error;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use error::{ErrorClass, UpstreamError};

use crate::body::WeirBody;
use crate::config::{UpstreamProtocol, UpstreamSpec};
use crate::telemetry::metrics::{Metrics, UpstreamMetrics};

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Tells the upstreams which worker's pools this thread uses.
pub fn set_thread_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One endpoint of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    /// Stable within one upstream's endpoint list.
    pub id: u32,
    pub authority: Authority,
    pub weight: u32,
}

/// One worker's view of an upstream: its own pool and round-robin cursor.
#[repr(align(128))]
struct WorkerSlot {
    client: Client<HttpConnector, WeirBody>,
    cursor: AtomicUsize,
}

/// A named group of endpoints with its connection pools.
pub struct Upstream {
    pub name: String,
    pub spec: UpstreamSpec,
    endpoints: Box<[Endpoint]>,
    /// Cumulative weights for weighted round robin; empty when all are 1.
    cumulative_weights: Box<[u32]>,
    slots: Box<[WorkerSlot]>,
    pub metrics: Arc<UpstreamMetrics>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Upstream {
    /// Builds an upstream with one pool per worker. No connection is opened
    /// until the first request.
    pub fn new(name: &str, spec: &UpstreamSpec, workers: usize, metrics: &Metrics) -> Self {
        let endpoints: Box<[Endpoint]> = spec
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Endpoint {
                id: u32::try_from(i).unwrap_or(u32::MAX),
                authority: e.address.clone(),
                weight: e.weight,
            })
            .collect();
        let cumulative_weights = if endpoints.iter().all(|e| e.weight == 1) {
            Box::default()
        } else {
            endpoints
                .iter()
                .scan(0u32, |sum, e| {
                    *sum = sum.saturating_add(e.weight);
                    Some(*sum)
                })
                .collect()
        };
        let slots = (0..workers.max(1))
            .map(|_| WorkerSlot {
                client: build_client(spec),
                cursor: AtomicUsize::new(0),
            })
            .collect();
        Self {
            name: name.to_owned(),
            spec: spec.clone(),
            endpoints,
            cumulative_weights,
            slots,
            metrics: metrics.upstream(name),
        }
    }

    /// The endpoints, in config order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn slot(&self) -> &WorkerSlot {
        let index = WORKER.with(Cell::get);
        &self.slots[index % self.slots.len()]
    }

    /// Picks the next endpoint by (weighted) round robin.
    pub fn pick(&self) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let turn = self.slot().cursor.fetch_add(1, Relaxed);
        let index = match self.cumulative_weights.last() {
            None => turn % self.endpoints.len(),
            Some(&total) => {
                let point = u32::try_from(turn % total.max(1) as usize).unwrap_or(0);
                self.cumulative_weights.partition_point(|&w| w <= point)
            }
        };
        self.endpoints.get(index)
    }

    /// Sends `request` to `endpoint` through this worker's pool. The request's
    /// URI is rewritten to point at the endpoint; its headers are sent as they are.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        mut request: Request<WeirBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = request.uri().path_and_query().cloned();
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *request.uri_mut() = Uri::from_parts(parts).map_err(|e| {
            UpstreamError::new(
                ErrorClass::Protocol,
                false,
                format!("cannot build upstream URI: {e}"),
            )
        })?;
        *request.version_mut() = match self.spec.protocol {
            UpstreamProtocol::Http1 => http::Version::HTTP_11,
            UpstreamProtocol::H2c => http::Version::HTTP_2,
        };
        self.slot()
            .client
            .request(request)
            .await
            .map_err(|e| UpstreamError::from_client(&e))
    }
}

fn build_client(spec: &UpstreamSpec) -> Client<HttpConnector, WeirBody> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(spec.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(spec.pool_idle_timeout)
        .pool_max_idle_per_host(spec.pool_max_idle_per_endpoint)
        // The proxy passes the client's Host header through; the pool must not add its own.
        .set_host(false);
    if spec.protocol == UpstreamProtocol::H2c {
        builder.http2_only(true);
    }
    builder.build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointSpec;

    fn spec(weights: &[u32]) -> UpstreamSpec {
        UpstreamSpec {
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, w)| EndpointSpec {
                    address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    weight: *w,
                })
                .collect(),
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
