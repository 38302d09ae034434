//! An endpoint of the route's upstream as a plugin sees it: the figures the
//! host measures (weight, load, health, latency), carried in the record
//! `select` gets, and the facts the config or discovery gives it (address,
//! zone, metadata), asked of the host when a plugin wants them.

use alloc::string::String;

use weir_abi::{EndpointField, EndpointRecord};

use crate::hostcalls;

/// An endpoint offered to [`Plugin::select`](crate::Plugin::select), with
/// its current figures.
///
/// **Ids.** An endpoint's id is unique within its upstream and stays the
/// same as long as the endpoint does: static endpoints are numbered from 0
/// in config order; an endpoint that discovery adds, or whose address,
/// weight, zone or metadata changes, gets the next unused number. Ids are
/// never reused for another endpoint while the upstream lives (a config
/// reload that changes the upstream renumbers it). `/admin/upstreams` shows
/// them. Prefer choosing by [`Endpoint::metadata`] or [`Endpoint::zone`] to
/// writing ids into a plugin's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's id (see above).
    pub id: u32,
    /// Configured weight.
    pub weight: u32,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Whether health checks (and passive ejection) consider it healthy.
    pub healthy: bool,
    /// Its latency's moving average (peak EWMA), in microseconds.
    pub latency_ewma_us: u64,
}

impl From<EndpointRecord> for Endpoint {
    fn from(r: EndpointRecord) -> Self {
        Self {
            id: r.id,
            weight: r.weight,
            in_flight: r.in_flight,
            healthy: r.healthy,
            latency_ewma_us: r.latency_ewma_us,
        }
    }
}

impl From<Endpoint> for EndpointRecord {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            weight: e.weight,
            in_flight: e.in_flight,
            healthy: e.healthy,
            latency_ewma_us: e.latency_ewma_us,
        }
    }
}

impl Endpoint {
    /// Its address, `host:port`, as configured or discovered.
    pub fn address(&self) -> Option<String> {
        self.fact(EndpointField::Address, "")
    }

    /// The zone it runs in, if the config or discovery gave one.
    pub fn zone(&self) -> Option<String> {
        self.fact(EndpointField::Zone, "")
    }

    /// One entry of its metadata (`metadata = { version = "v2" }` in the
    /// config, or labels from discovery).
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.fact(EndpointField::Metadata, key)
    }

    /// `None` when the fact is absent, and also when the host cannot say
    /// (an endpoint removed since, or a host older than this call).
    fn fact(&self, field: EndpointField, key: &str) -> Option<String> {
        let bytes = hostcalls::endpoint_field(self.id, field, key).ok()??;
        String::from_utf8(bytes).ok()
    }
}
