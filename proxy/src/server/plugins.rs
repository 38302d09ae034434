//! The server's side of plugin versions: swapping in a new version when its
//! file changes (validated whole through the snapshot builder), following a
//! new version's probation, and rolling it back when it trips.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError};

use sha2::Digest as _;

use crate::config::{Config, Diagnostic};
use crate::plugin::registry::Handover;
use crate::plugin::{Chain, LoadedPlugin, PluginRegistry, Probation};
use crate::route::RouteTable;

use super::ServerHandle;
use super::snapshot::{self, Inputs};

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
        let fail = |message: String, refused: Option<[u8; 32]>| {
            registry.record_error(&name, &message);
            registry.record_refused(&name, refused);
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
        // Read once: the hash decides whether to go on, the same bytes load.
        let bytes = registry
            .read_file(&name)
            .map_err(|message| fail(message, None))?;
        let hash: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        if current.as_ref().is_some_and(|c| *c.hash() == hash) {
            return Ok(());
        }
        if registry.was_refused(&name, &hash) {
            // Reported when it was first refused; nothing changed since.
            return Ok(());
        }
        if registry.is_bad(&name, &hash) {
            tracing::debug!(plugin = %name, "this version was rolled back; not tried again until the file changes");
            return Ok(());
        }
        let candidate = registry
            .load_candidate(&name, &bytes)
            .map_err(|message| fail(message, Some(hash)))?;
        let config = self.0.shared.config.load_full();
        let upstreams = self.upstreams();
        let built = snapshot::build(Inputs {
            config: &config,
            registry,
            candidates: BTreeMap::from([(name.clone(), candidate)]),
            table: &table,
            upstreams: &upstreams,
            slots: self.0.sockets_per_listener,
            metrics: &self.0.shared.metrics,
        })
        .map_err(|e| {
            let message = match &e {
                crate::config::ConfigError::Invalid(d) => d
                    .iter()
                    .map(|d| d.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            fail(message, Some(hash))
        })?;
        self.publish(built);
        Ok(())
    }

    /// A new version of a plugin replaced `previous` (a file swap or a
    /// config reload): counted, logged, and put on probation where every
    /// route using it keeps the previous instance to return to.
    pub(super) fn swapped_in(
        &self,
        candidate: &LoadedPlugin,
        previous: LoadedPlugin,
        routes: usize,
        handovers: &[Handover],
    ) {
        let name = candidate.name();
        self.0
            .shared
            .metrics
            .plugin_swaps_applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pairs: Vec<_> = handovers
            .iter()
            .map(Handover::instances)
            .filter(|(new, _)| new.name() == name)
            .collect();
        tracing::info!(plugin = %name, hash = %candidate.hash_hex(), routes, "plugin swapped in");
        // [plugins] settings apply at start-up only: the serving config's are
        // the ones in force.
        let config = self.0.shared.config.load();
        let settings = &config.plugins;
        if settings.probation.is_zero() {
            return;
        }
        if pairs.len() < routes {
            tracing::info!(plugin = %name, "new version not on probation: its settings changed with it on some route, so there is no previous instance to return to");
            return;
        }
        let probation = Probation::new(
            name,
            *candidate.hash(),
            settings.probation,
            settings.probation_max_traps,
        );
        for (new, old) in pairs {
            probation.watch(new, Arc::clone(old));
        }
        self.0.plugins.start_probation(&probation, previous);
        self.0
            .control
            .spawn(self.clone().follow_probation(probation));
    }
}

impl ServerHandle {
    /// Waits out a new version's probation: promotes it when the window ends
    /// clean, rolls it back when it trips.
    async fn follow_probation(self, probation: Arc<Probation>) {
        tokio::select! {
            () = self.0.stop.cancelled() => {}
            () = probation.wait_tripped() => self.roll_back(&probation),
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
            let restored: Vec<_> = chain.layers().iter().map(|l| l.rolled_back_to()).collect();
            if restored.iter().all(Option::is_none) {
                continue;
            }
            let layers = chain
                .layers()
                .iter()
                .zip(restored)
                .map(|(layer, previous)| match previous {
                    Some(previous) => {
                        previous.reinstate();
                        previous
                    }
                    None => Arc::clone(layer),
                })
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
            hash = %crate::plugin::compile_cache::hex(probation.hash()),
            reason = %probation.reason().unwrap_or_default(),
            "new plugin version rolled back; the previous version serves again (not tried again until the file changes)"
        );
    }
}

/// Loads every plugin `config` names and configures it for each route that
/// names it, as `weir run` would, without serving. Returns how many routes
/// have a chain. For `weir check`.
pub fn check_plugins(config: &Config) -> Result<Vec<Diagnostic>, super::StartError> {
    let needs_plugins = config.routes.iter().any(|r| !r.plugins.is_empty());
    if !needs_plugins {
        return Ok(Vec::new());
    }
    let registry = PluginRegistry::new(&config.plugins)?;
    let candidates = registry
        .candidates_for(config)
        .map_err(crate::config::ConfigError::Invalid)?;
    let (chains, _) =
        snapshot::build_chains(&registry, config, &RouteTable::default(), &candidates)?;
    // Worth saying: the route reads fail-open, yet these plugins fail closed.
    let mut warnings = Vec::new();
    for route in &config.routes {
        let Some(chain) = chains.get(&route.name) else {
            continue;
        };
        if chain.policy() != crate::plugin::TrapPolicy::FailOpen {
            continue;
        }
        for (spec, layer) in route.plugins.iter().zip(chain.layers()) {
            if layer.plugin().declares_fail_closed() {
                warnings.push(spec.diagnostic(
                    &config.source,
                    format!(
                        "plugin {:?} declares that it guards access (fail_closed): on route {:?}, \
                         which is fail-open, its failures still answer 503",
                        spec.name, route.name
                    ),
                ));
            }
        }
    }
    Ok(warnings)
}
