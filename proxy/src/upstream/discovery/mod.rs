//! Client-side service discovery: a task per upstream on the control runtime
//! that publishes whole endpoint sets ([`Upstream::set_endpoints`]). When a
//! source fails, the last known set keeps serving and the error is kept for
//! the admin API.

mod dns;
mod etcd;
mod file;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError, Weak};
use std::time::SystemTime;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Upstream;
use crate::config::{Discovery, EndpointSpec};

/// What an upstream's discovery last did, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryStatus {
    /// `static`, `dns`, `file` or `etcd`.
    pub kind: &'static str,
    /// `ok` once a set was published, `pending` before, `error` while the
    /// source fails, `warning` while it answers an empty set that is not
    /// applied (the last known set keeps serving in both).
    pub state: &'static str,
    /// Endpoint sets published so far.
    pub updates: u64,
    /// When the last set was published (seconds since the Unix epoch).
    pub last_update_unix: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_unix: Option<u64>,
}

impl DiscoveryStatus {
    pub(crate) fn new(kind: &'static str) -> Self {
        Self {
            kind,
            state: if kind == "static" { "ok" } else { "pending" },
            updates: 0,
            last_update_unix: None,
            last_error: None,
            last_error_unix: None,
        }
    }
}

/// Why a discovery round failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid endpoint list in {path}: {message}")]
    Parse { path: String, message: String },
    #[error("DNS lookup of {name} failed: {message}")]
    Dns { name: String, message: String },
    #[error("etcd at {endpoint}: {message}")]
    Etcd { endpoint: String, message: String },
    #[error("cannot watch {path}: {source}")]
    Watch { path: String, source: notify::Error },
}

/// How a discovery task reaches its upstream without keeping it alive.
#[derive(Clone)]
pub(crate) struct Publisher {
    upstream: Weak<Upstream>,
    source: &'static str,
    allow_empty: bool,
}

impl Publisher {
    /// Publishes a new endpoint set: duplicates of an address are merged
    /// (the first entry wins, with a warning), and an empty set is not
    /// applied over a non-empty one unless `allow_empty`. Returns false once
    /// the upstream is gone.
    pub fn publish(&self, specs: &[EndpointSpec]) -> bool {
        let Some(upstream) = self.upstream.upgrade() else {
            return false;
        };
        let unique = merge_duplicates(specs);
        if unique.len() < specs.len() {
            tracing::warn!(
                upstream = %upstream.name,
                source = self.source,
                duplicates = specs.len() - unique.len(),
                "discovery listed an address more than once; the first entry of each is kept"
            );
        }
        if unique.is_empty() && !self.allow_empty && !upstream.endpoints().all().is_empty() {
            let mut status = upstream
                .discovery
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if status.state != "warning" {
                tracing::warn!(
                    upstream = %upstream.name,
                    source = self.source,
                    "discovery returned no endpoints; the last non-empty set keeps serving (allow_empty = false)"
                );
            }
            status.state = "warning";
            status.last_error = Some(
                "discovery returned no endpoints; the last non-empty set keeps serving".into(),
            );
            status.last_error_unix = Some(unix_now());
            return true;
        }
        upstream.set_endpoints(&unique, self.source);
        upstream.metrics.discovery_updates.fetch_add(1, Relaxed);
        let mut status = upstream
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.state = "ok";
        status.updates += 1;
        status.last_update_unix = Some(unix_now());
        true
    }

    /// The source answered the set already serving: discovery is healthy
    /// again if it was failing (a restored good file clears the error).
    pub fn unchanged(&self) -> bool {
        let Some(upstream) = self.upstream.upgrade() else {
            return false;
        };
        let mut status = upstream
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if status.state == "error" {
            tracing::info!(upstream = %upstream.name, source = self.source, "discovery recovered");
            status.state = "ok";
        }
        true
    }

    /// Records a failed round; the last set keeps serving. Returns false
    /// once the upstream is gone.
    pub fn failed(&self, error: &DiscoveryError) -> bool {
        let Some(upstream) = self.upstream.upgrade() else {
            return false;
        };
        upstream.metrics.discovery_errors.fetch_add(1, Relaxed);
        let message = error.to_string();
        let mut status = upstream
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Logged once per distinct error, not once per failed round.
        if status.state != "error" || status.last_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(
                upstream = %upstream.name,
                source = self.source,
                error = %message,
                "discovery failed; the last known endpoints keep serving"
            );
        }
        status.state = "error";
        status.last_error = Some(message);
        status.last_error_unix = Some(unix_now());
        true
    }

    /// Whether the upstream still exists.
    pub fn alive(&self) -> bool {
        self.upstream.strong_count() > 0
    }
}

/// `specs` with each address once (its first entry).
fn merge_duplicates(specs: &[EndpointSpec]) -> Vec<EndpointSpec> {
    let mut unique: Vec<EndpointSpec> = Vec::with_capacity(specs.len());
    for spec in specs {
        if !unique.iter().any(|u| u.address == spec.address) {
            unique.push(spec.clone());
        }
    }
    unique
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts the discovery task of `upstream`, if its endpoints are discovered.
pub(crate) fn start(
    upstream: &Arc<Upstream>,
    control: &tokio::runtime::Handle,
    stop: CancellationToken,
) {
    let discovery = upstream.spec.discovery.clone();
    let publisher = Publisher {
        upstream: Arc::downgrade(upstream),
        source: discovery.kind(),
        allow_empty: discovery.allow_empty(),
    };
    match discovery {
        Discovery::Static => {}
        Discovery::Dns {
            name,
            port,
            interval,
            nameservers,
            ..
        } => {
            control.spawn(dns::run(
                publisher,
                dns::Target {
                    name,
                    port,
                    interval,
                    nameservers,
                },
                stop,
            ));
        }
        Discovery::File { path, .. } => {
            // The first read is synchronous, so that a file-discovered
            // upstream has its endpoints before the first request.
            file::load(&publisher, &path);
            control.spawn(file::run(publisher, path, stop));
        }
        Discovery::Etcd {
            endpoints, prefix, ..
        } => {
            control.spawn(etcd::run(publisher, endpoints, prefix, stop));
        }
    }
}
