//! The served snapshot — the upstreams, every route's plugin chain and the
//! route table — built by one function for start, config reload and plugin
//! swap alike, and published in one step. Building has no side effects:
//! when any part fails (a plugin refuses its settings, a new version does
//! not load), nothing that serves has changed.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use crate::config::{Config, ConfigError, Diagnostic};
use crate::plugin::registry::Handover;
use crate::plugin::{Chain, LoadedPlugin, PluginRegistry};
use crate::route::RouteTable;
use crate::telemetry::metrics::Metrics;
use crate::upstream::{self, Upstream};

use super::ServerHandle;

/// Everything one config (and plugin versions) serves, not yet published.
pub(super) struct Snapshot {
    upstreams: BTreeMap<String, Arc<Upstream>>,
    table: RouteTable,
    /// Plugin versions this snapshot brings in, by name, with how many
    /// routes use each.
    candidates: BTreeMap<String, (LoadedPlugin, usize)>,
    /// State handovers to run right before publishing.
    handovers: Vec<Handover>,
}

/// What a snapshot is built from.
pub(super) struct Inputs<'a> {
    pub config: &'a Config,
    pub registry: &'a PluginRegistry,
    /// New plugin versions to use instead of the registered ones.
    pub candidates: BTreeMap<String, LoadedPlugin>,
    /// What serves now (empty at start): kept where nothing changed.
    pub table: &'a RouteTable,
    pub upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    /// Pool slots per endpoint (workers in per-core mode).
    pub slots: usize,
    pub metrics: &'a Metrics,
}

/// Builds the snapshot of `inputs`, or every error that prevents it.
pub(super) fn build(inputs: Inputs<'_>) -> Result<Snapshot, ConfigError> {
    let (chains, handovers) = build_chains(
        inputs.registry,
        inputs.config,
        inputs.table,
        &inputs.candidates,
    )?;
    let upstreams = build_upstreams(
        inputs.config,
        inputs.upstreams,
        inputs.slots,
        inputs.metrics,
    );
    let table = RouteTable::build(inputs.config, &upstreams, inputs.metrics, &chains);
    let candidates = inputs
        .candidates
        .into_iter()
        .map(|(name, candidate)| {
            let routes = inputs
                .config
                .routes
                .iter()
                .filter(|r| r.plugins.iter().any(|p| p.name == name))
                .count();
            (name, (candidate, routes))
        })
        .collect();
    Ok(Snapshot {
        upstreams,
        table,
        candidates,
        handovers,
    })
}

/// Route chains by route name, and the state handovers to run before they
/// are published.
pub(super) type BuiltChains = (BTreeMap<String, Arc<Chain>>, Vec<Handover>);

/// The chains of every route of `config` that has plugins, keeping the
/// instances (and state) of `previous` where nothing changed; `candidates`
/// stand in for the registered versions of their plugins.
pub(super) fn build_chains(
    registry: &PluginRegistry,
    config: &Config,
    previous: &RouteTable,
    candidates: &BTreeMap<String, LoadedPlugin>,
) -> Result<BuiltChains, ConfigError> {
    let mut handovers = Vec::new();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut chains = BTreeMap::new();
    for route in &config.routes {
        let before = previous
            .get(&route.name)
            .and_then(|r| r.chain.as_ref().map(|c| (&r.spec, c.as_ref())));
        match registry.build_chain(&config.source, route, before, candidates, &mut handovers) {
            Ok(Some(chain)) => {
                chains.insert(route.name.clone(), chain);
            }
            Ok(None) => {}
            Err(diagnostic) => errors.push(diagnostic),
        }
    }
    if errors.is_empty() {
        Ok((chains, handovers))
    } else {
        errors.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError::Invalid(errors))
    }
}

/// The upstreams of `config`, keeping (with their pools and figures) those
/// whose settings did not change.
fn build_upstreams(
    config: &Config,
    previous: &BTreeMap<String, Arc<Upstream>>,
    slots: usize,
    metrics: &Metrics,
) -> BTreeMap<String, Arc<Upstream>> {
    config
        .upstreams
        .iter()
        .map(|(name, spec)| {
            let upstream = match previous.get(name) {
                Some(existing) if existing.spec == *spec => Arc::clone(existing),
                _ => Arc::new(Upstream::new(name, spec, slots, metrics)),
            };
            (name.clone(), upstream)
        })
        .collect()
}

impl ServerHandle {
    /// Publishes `snapshot`: upstreams started and retired, new plugin
    /// versions registered (each on probation when it replaced one), state
    /// handed over, and the route table swapped in.
    pub(super) fn publish(&self, snapshot: Snapshot) {
        let inner = &self.0;
        {
            let mut upstreams = inner
                .upstreams
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            upstream::activate(&upstreams, &snapshot.upstreams, &inner.control);
            *upstreams = snapshot.upstreams;
        }
        for (candidate, routes) in snapshot.candidates.values() {
            let previous = inner.plugins.get(candidate.name());
            inner.plugins.commit(candidate);
            if let Some(previous) = previous {
                self.swapped_in(candidate, previous, *routes, &snapshot.handovers);
            }
        }
        snapshot.handovers.iter().for_each(Handover::run);
        inner.shared.table.store(Arc::new(snapshot.table));
    }
}
