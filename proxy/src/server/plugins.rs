//! The server's side of plugins: building every route's chain from the
//! registry when a config is applied, and swapping in a new version of a
//! plugin when its file changes. Both validate everything first and publish
//! a new route table only if all of it succeeded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError};

use crate::config::{Config, ConfigError, Diagnostic};
use crate::plugin::registry::Handover;
use crate::plugin::{Chain, PluginRegistry, Probation};
use crate::route::RouteTable;

use super::ServerHandle;

/// Route chains by route name, and the state handovers to run before they
/// are published.
pub(super) type BuiltChains = (BTreeMap<String, Arc<Chain>>, Vec<Handover>);

/// The chains of every route of `config` that has plugins, keeping the
/// instances (and state) of `previous` where nothing changed. Run the
/// returned handovers right before publishing the chains.
pub(super) fn build_chains(
    registry: &PluginRegistry,
    config: &Config,
    previous: &RouteTable,
) -> Result<BuiltChains, ConfigError> {
    let mut handovers = Vec::new();
    let mut errors: Vec<Diagnostic> = registry.ensure_loaded(config);
    let mut chains = BTreeMap::new();
    if errors.is_empty() {
        for route in &config.routes {
            let before = previous
                .get(&route.name)
                .and_then(|r| r.chain.as_ref().map(|c| (&r.spec, c.as_ref())));
            match registry.build_chain(&config.source, route, before, None, &mut handovers) {
                Ok(Some(chain)) => {
                    chains.insert(route.name.clone(), chain);
                }
                Ok(None) => {}
                Err(diagnostic) => errors.push(diagnostic),
            }
        }
    }
    if errors.is_empty() {
        Ok((chains, handovers))
    } else {
        errors.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError::Invalid(errors))
    }
}

/// Why a plugin file was not swapped in. The old version keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("plugin {name}: {message}")]
pub struct SwapError {
    pub name: String,
    pub message: String,
}

impl ServerHandle {
    /// The plugin registry.
    pub fn plugins(&self) -> &PluginRegistry {
        &self.0.plugins
    }

    /// Handles a change of a file in the plugins directory: validates the
    /// new version (compile, ABI, `configure` for every route that names it,
    /// state handed over) and swaps it in for those routes at once. A deleted
    /// file keeps the last good version.
    pub fn reload_plugin_file(&self, file: &Path) -> Result<(), SwapError> {
        let registry = &self.0.plugins;
        let Some(name) = registry.name_of(file) else {
            return Ok(());
        };
        let _serial = self
            .0
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = self.0.shared.table.load_full();
        let users: Vec<_> = table
            .routes()
            .iter()
            .filter(|r| r.spec.plugins.iter().any(|p| p.name == name))
            .collect();
        let current = registry.get(&name);
        if !file.exists() {
            if current.is_some() {
                registry.record_deleted(&name);
                tracing::warn!(plugin = %name, "plugin file deleted; the last good version stays loaded");
            }
            return Ok(());
        }
        if users.is_empty() && current.is_none() {
            // Not named by any route: nothing to validate it against yet.
            return Ok(());
        }
        let fail = |message: String| {
            registry.record_error(&name, &message);
            self.0
                .shared
                .metrics
                .plugin_swaps_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(plugin = %name, "plugin swap refused, the old version keeps serving: {message}");
            SwapError {
                name: name.clone(),
                message,
            }
        };
        let candidate = registry.load_candidate(&name).map_err(fail)?;
        if current
            .as_ref()
            .is_some_and(|c| c.hash() == candidate.hash())
        {
            return Ok(());
        }
        if registry.is_bad(&name, candidate.hash()) {
            tracing::debug!(plugin = %name, hash = %candidate.hash_hex(), "this version was rolled back; not tried again until the file changes");
            return Ok(());
        }
        let config = self.0.shared.config.load_full();
        let mut chains = BTreeMap::new();
        let mut handovers = Vec::new();
        for route in &users {
            let before = route.chain.as_ref().map(|c| (&route.spec, c.as_ref()));
            match registry.build_chain(
                &config.source,
                &route.spec,
                before,
                Some(&candidate),
                &mut handovers,
            ) {
                Ok(Some(chain)) => {
                    chains.insert(route.spec.name.clone(), chain);
                }
                Ok(None) => {}
                Err(diagnostic) => return Err(fail(diagnostic.message)),
            }
        }
        registry.commit(&candidate);
        let next = Arc::new(table.with_chains(&chains));
        handovers.iter().for_each(Handover::run);
        if let Some(previous) = current
            && !config.plugins.probation.is_zero()
        {
            let probation = Probation::new(
                &name,
                *candidate.hash(),
                config.plugins.probation,
                config.plugins.probation_max_traps,
            );
            for handover in &handovers {
                let (new, old) = handover.instances();
                if new.name() == name {
                    probation.watch(new, Arc::clone(old));
                }
            }
            registry.start_probation(&probation, previous);
            self.0
                .control
                .spawn(self.clone().follow_probation(probation));
        }
        self.0.shared.table.store(next);
        self.0
            .shared
            .metrics
            .plugin_swaps_applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(plugin = %name, hash = %candidate.hash_hex(), routes = users.len(), "plugin swapped in");
        Ok(())
    }
}

impl ServerHandle {
    /// Waits out a new version's probation: promotes it when the window ends
    /// clean, rolls it back when it trips.
    async fn follow_probation(self, probation: Arc<Probation>) {
        tokio::select! {
            () = self.0.stop.cancelled() => {}
            () = probation.tripped() => self.roll_back(&probation),
            () = tokio::time::sleep(probation.remaining()) => {
                if probation.end() {
                    self.0.plugins.end_probation(&probation);
                    tracing::info!(plugin = probation.plugin(), "new plugin version passed probation");
                }
            }
        }
    }

    /// Puts the previous version back: in the registry (the tripped
    /// version's hash marked bad) and in every route's chain (the new
    /// instances already hand their calls to the previous ones; this
    /// publishes chains without them).
    fn roll_back(&self, probation: &Arc<Probation>) {
        let _serial = self
            .0
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.0.plugins.roll_back(probation) {
            return;
        }
        let table = self.0.shared.table.load_full();
        let mut chains = BTreeMap::new();
        for route in table.routes() {
            let Some(chain) = &route.chain else { continue };
            if chain.layers().iter().all(|l| l.fallback().is_none()) {
                continue;
            }
            let layers = chain
                .layers()
                .iter()
                .map(|l| Arc::clone(l.fallback().unwrap_or(l)))
                .collect();
            if let Ok(chain) = Chain::new(layers, chain.policy()) {
                chains.insert(route.spec.name.clone(), Arc::new(chain));
            }
        }
        self.0
            .shared
            .table
            .store(Arc::new(table.with_chains(&chains)));
        tracing::error!(
            plugin = probation.plugin(),
            hash = %crate::plugin::engine::hex(probation.hash()),
            reason = %probation.reason().unwrap_or_default(),
            "new plugin version rolled back; the previous version serves again (not tried again until the file changes)"
        );
    }
}

/// Loads every plugin `config` names and configures it for each route that
/// names it, as `weir run` would, without serving. Returns how many routes
/// have a chain. For `weir check`.
pub fn check_plugins(config: &Config) -> Result<usize, super::StartError> {
    let needs_plugins = config.routes.iter().any(|r| !r.plugins.is_empty());
    if !needs_plugins {
        return Ok(0);
    }
    let registry = PluginRegistry::new(&config.plugins)?;
    Ok(build_chains(&registry, config, &RouteTable::default())?
        .0
        .len())
}
