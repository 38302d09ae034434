//! The plugins the config names, by name: the last good version of each,
//! when it was loaded and the last error; and the route chains built from
//! them. Loading a new version validates it whole (read, hash, compile, ABI
//! check, `configure` for every route that names it) before anything is
//! swapped; any failure keeps the old version serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::compile_cache::hex;
use super::{
    Chain, EngineConfig, HostServices, LoadedPlugin, PluginEngine, PluginError, PluginInstance,
    Probation, TrapPolicy,
};
use crate::config::{Config, Diagnostic, OnPluginError, PluginRef, PluginSettings, RouteSpec};

/// What is known about one plugin.
#[derive(Debug, Clone, Default)]
pub struct PluginRecord {
    /// The version serving now (the last good one).
    pub loaded: Option<LoadedPlugin>,
    pub loaded_at: Option<SystemTime>,
    /// How many versions have been loaded since start.
    pub versions: u64,
    /// The error of the last failed load or swap, until one succeeds.
    pub last_error: Option<String>,
    /// False once the file was deleted (the last good version stays loaded).
    pub file_present: bool,
    /// The serving version's probation, while it lasts.
    pub probation: Option<Arc<Probation>>,
    /// The version the serving one replaced, kept while it is on probation.
    pub previous: Option<LoadedPlugin>,
    /// How many versions were rolled back since start.
    pub rollbacks: u64,
    /// The last rollback, until another version is swapped in.
    pub rolled_back: Option<RolledBack>,
    /// Versions rolled back: not tried again until the file changes.
    pub bad: BTreeSet<[u8; 32]>,
    /// The file content last refused, so it is reported once, not on every
    /// event that leaves it as it was.
    pub refused: Option<[u8; 32]>,
}

/// A version that was rolled back.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// SHA-256 of the rolled-back file, in hex.
    pub hash: String,
    /// What tripped its probation.
    pub reason: String,
    pub at: SystemTime,
}

/// The plugins by name, and the engine that runs them.
pub struct PluginRegistry {
    engine: PluginEngine,
    dir: PathBuf,
    records: Mutex<BTreeMap<String, PluginRecord>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The wasm engine could not be set up.
pub use super::EngineError;

impl PluginRegistry {
    /// An empty registry for the plugins directory in `settings`.
    pub fn new(settings: &PluginSettings) -> Result<Self, EngineError> {
        let config = EngineConfig {
            compile_cache: Some(super::CompileCacheConfig {
                dir: settings.compile_cache.clone(),
                key_file: settings.compile_cache_key.clone(),
                max_bytes: settings.compile_cache_max_bytes as u64,
            }),
            call_deadline: settings.call_deadline,
            epoch_tick: EngineConfig::tick_for(settings.call_deadline),
            memory_limit: settings.memory_limit_bytes,
            cache: crate::cache_store::CacheStoreConfig {
                capacity_bytes: settings.cache_capacity_bytes as u64,
                max_object_bytes: settings.cache_max_object_bytes as u64,
            },
            ..EngineConfig::default()
        };
        let mut services = HostServices::new(config.cache);
        if let Some(url) = &settings.redis_url {
            services = services
                .using_redis(url, settings.redis_timeout)
                .map_err(|e| EngineError::new(e.to_string()))?;
        }
        let engine = PluginEngine::with_services(config, Arc::new(services))?;
        Ok(Self {
            engine,
            dir: settings.dir.clone(),
            records: Mutex::default(),
        })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine (for the host services it owns).
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// The file a plugin is loaded from.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// The plugin's name if `path` is a plugin file in the directory.
    pub fn name_of(&self, path: &Path) -> Option<String> {
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            return None;
        }
        path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PluginRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything known, by name.
    pub fn records(&self) -> BTreeMap<String, PluginRecord> {
        self.lock().clone()
    }

    /// The serving version of `name`.
    pub fn get(&self, name: &str) -> Option<LoadedPlugin> {
        self.lock().get(name).and_then(|r| r.loaded.clone())
    }

    /// Checks `wasm`, the bytes of `name`'s file, without publishing it.
    pub fn load_candidate(&self, name: &str, wasm: &[u8]) -> Result<LoadedPlugin, String> {
        self.engine
            .load_bytes(name, wasm)
            .map_err(|e| format!("{}: {e}", self.path_of(name).display()))
    }

    /// The bytes of `name`'s file as it is now.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, String> {
        let path = self.path_of(name);
        std::fs::read(&path).map_err(|source| {
            super::LoadError::Io {
                path: path.clone(),
                source,
            }
            .to_string()
        })
    }

    /// Publishes a version whose swap succeeded.
    pub fn commit(&self, plugin: &LoadedPlugin) {
        let mut records = self.lock();
        let record = records.entry(plugin.name().to_owned()).or_default();
        record.loaded = Some(plugin.clone());
        record.loaded_at = Some(SystemTime::now());
        record.versions += 1;
        record.last_error = None;
        record.file_present = true;
        record.rolled_back = None;
        record.refused = None;
    }

    /// Puts the serving version of `probation`'s plugin on probation, with
    /// `previous` to return to; a probation still running for the version
    /// it replaces ends (that version is promoted).
    pub fn start_probation(&self, probation: &Arc<Probation>, previous: LoadedPlugin) {
        let mut records = self.lock();
        let record = records.entry(probation.plugin().to_owned()).or_default();
        if let Some(earlier) = record.probation.replace(Arc::clone(probation)) {
            earlier.end();
        }
        record.previous = Some(previous);
    }

    /// The probation ended clean: the version stays, the previous goes.
    pub fn end_probation(&self, probation: &Arc<Probation>) {
        if let Some(record) = self.lock().get_mut(probation.plugin())
            && record
                .probation
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, probation))
        {
            record.probation = None;
            record.previous = None;
        }
    }

    /// The probation tripped: the previous version serves again and this
    /// one's hash is marked bad. Returns false if it is no longer the
    /// serving version's probation (a newer version replaced it).
    pub fn roll_back(&self, probation: &Arc<Probation>) -> bool {
        let mut records = self.lock();
        let Some(record) = records.get_mut(probation.plugin()) else {
            return false;
        };
        if !record
            .probation
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, probation))
        {
            return false;
        }
        record.probation = None;
        if let Some(previous) = record.previous.take() {
            record.loaded = Some(previous);
            record.loaded_at = Some(SystemTime::now());
        }
        record.bad.insert(*probation.hash());
        record.rollbacks += 1;
        record.rolled_back = Some(RolledBack {
            hash: hex(probation.hash()),
            reason: probation.reason().unwrap_or_default(),
            at: SystemTime::now(),
        });
        true
    }

    /// Whether this version of `name` was rolled back (so is not tried
    /// again until the file changes).
    pub fn is_bad(&self, name: &str, hash: &[u8; 32]) -> bool {
        self.lock().get(name).is_some_and(|r| r.bad.contains(hash))
    }

    /// Records a failed load or swap; the serving version stays.
    pub fn record_error(&self, name: &str, error: &str) {
        self.lock().entry(name.to_owned()).or_default().last_error = Some(error.to_owned());
    }

    /// Remembers that the file with this content was refused.
    pub fn record_refused(&self, name: &str, hash: Option<[u8; 32]>) {
        self.lock().entry(name.to_owned()).or_default().refused = hash;
    }

    /// Whether the file with this content was already refused.
    pub fn was_refused(&self, name: &str, hash: &[u8; 32]) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|r| r.refused.as_ref() == Some(hash))
    }

    /// Records that the file is gone; the serving version stays.
    pub fn record_deleted(&self, name: &str) {
        if let Some(record) = self.lock().get_mut(name) {
            record.file_present = false;
        }
    }

    /// The versions on disk of the plugins `config` names that differ from
    /// the loaded ones (every one, at start), loaded and checked but not
    /// registered: a config and the plugin versions it needs apply together
    /// or not at all. A deleted file keeps the loaded version, and a version
    /// that was rolled back is not tried again. Errors point at the first
    /// route entry naming the plugin.
    pub fn candidates_for(
        &self,
        config: &Config,
    ) -> Result<BTreeMap<String, LoadedPlugin>, Vec<Diagnostic>> {
        let mut candidates = BTreeMap::new();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for route in &config.routes {
            for plugin in &route.plugins {
                if !seen.insert(plugin.name.as_str()) {
                    continue;
                }
                let path = self.path_of(&plugin.name);
                let loaded = self.get(&plugin.name);
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && loaded.is_some() => {
                        continue;
                    }
                    Err(e) => {
                        let message = if e.kind() == std::io::ErrorKind::NotFound {
                            format!("plugin {:?} not found: no {}", plugin.name, path.display())
                        } else {
                            format!(
                                "plugin {:?} cannot be read: {}: {e}",
                                plugin.name,
                                path.display()
                            )
                        };
                        self.record_error(&plugin.name, &message);
                        errors.push(plugin.diagnostic(&config.source, message));
                        continue;
                    }
                };
                let hash: [u8; 32] = Sha256::digest(&bytes).into();
                let unchanged = loaded.as_ref().is_some_and(|l| *l.hash() == hash);
                if unchanged || (loaded.is_some() && self.is_bad(&plugin.name, &hash)) {
                    continue;
                }
                match self.engine.load_bytes(&plugin.name, &bytes) {
                    Ok(candidate) => {
                        candidates.insert(plugin.name.clone(), candidate);
                    }
                    Err(error) => {
                        let message = format!(
                            "plugin {:?} cannot be loaded: {}: {error}",
                            plugin.name,
                            path.display()
                        );
                        self.record_error(&plugin.name, &message);
                        errors.push(plugin.diagnostic(&config.source, message));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(candidates)
        } else {
            Err(errors)
        }
    }

    /// Builds `route`'s chain (`None` without plugins). Instances of
    /// `previous` are kept where the plugin, its version and its settings are
    /// the same; an instance whose plugin got a new version hands its state
    /// over through `snapshot`/`restore`. `candidates` stand in for the
    /// registered versions of their plugins (new versions being validated).
    pub fn build_chain(
        &self,
        config_file: &Path,
        route: &RouteSpec,
        previous: Option<(&RouteSpec, &Chain)>,
        candidates: &BTreeMap<String, LoadedPlugin>,
        handovers: &mut Vec<Handover>,
    ) -> Result<Option<Arc<Chain>>, Diagnostic> {
        if route.plugins.is_empty() {
            return Ok(None);
        }
        let mut layers = Vec::with_capacity(route.plugins.len());
        let mut all_kept =
            previous.is_some_and(|(spec, _)| spec.on_plugin_error == route.on_plugin_error);
        for (index, plugin) in route.plugins.iter().enumerate() {
            let loaded = match candidates.get(&plugin.name) {
                Some(candidate) => Some(candidate.clone()),
                None => self.get(&plugin.name),
            };
            let Some(loaded) = loaded else {
                return Err(plugin.diagnostic(
                    config_file,
                    format!("plugin {:?} is not loaded", plugin.name),
                ));
            };
            let before = previous.and_then(|(spec, chain)| {
                Some((spec.plugins.get(index)?, chain.layers().get(index)?))
            });
            let same_code = |instance: &PluginInstance| instance.plugin().hash() == loaded.hash();
            match before {
                Some((old_ref, old)) if old_ref == plugin && same_code(old) => {
                    layers.push(Arc::clone(old))
                }
                _ => {
                    all_kept = false;
                    // No settings given: empty input, which a plugin without
                    // settings accepts and one with settings can default.
                    let settings = match &plugin.config {
                        serde_json::Value::Null => Bytes::new(),
                        given => Bytes::from(serde_json::to_vec(given).unwrap_or_default()),
                    };
                    let instance = PluginInstance::new(&loaded, settings)
                        .map_err(|e| refusal(config_file, route, plugin, &e))?;
                    let instance = Arc::new(instance);
                    if let Some((old_ref, old)) = before
                        && old_ref == plugin
                    {
                        handovers.push(Handover {
                            route: route.name.clone(),
                            old: Arc::clone(old),
                            new: Arc::clone(&instance),
                        });
                    }
                    layers.push(instance);
                }
            }
        }
        if all_kept && let Some((_, chain)) = previous {
            return Ok(Some(Arc::new(chain.clone())));
        }
        let policy = match route.on_plugin_error {
            OnPluginError::FailOpen => TrapPolicy::FailOpen,
            OnPluginError::FailClosed => TrapPolicy::FailClosed,
        };
        Chain::new(layers, policy)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| Diagnostic {
                file: config_file.to_path_buf(),
                line: route.plugins[0].location.0,
                column: route.plugins[0].location.1,
                message: e.to_string(),
            })
    }
}

/// An old instance whose state goes to its replacement (same plugin and
/// settings, new code) just before the new chain is published, so that as
/// little traffic as possible lands on the old one after its snapshot.
#[derive(Debug)]
pub struct Handover {
    route: String,
    old: Arc<PluginInstance>,
    new: Arc<PluginInstance>,
}

impl Handover {
    /// The new instance and the old one it replaces.
    pub fn instances(&self) -> (&Arc<PluginInstance>, &Arc<PluginInstance>) {
        (&self.new, &self.old)
    }

    /// Carries the state, call counts and metric values over, and sends the
    /// old instance's later calls to the new one. A plugin that cannot
    /// restore starts fresh.
    pub fn run(&self) {
        self.old.hand_over_to(&self.new, &self.route);
    }
}

/// A plugin's refusal of a route as a diagnostic: a rejected setting at that
/// setting's line and column, anything else at the plugin's entry.
fn refusal(file: &Path, route: &RouteSpec, plugin: &PluginRef, error: &PluginError) -> Diagnostic {
    match error {
        PluginError::Rejected {
            what: "config",
            rejection,
            ..
        } => plugin.setting_diagnostic(file, rejection),
        other => plugin.diagnostic(
            file,
            format!(
                "plugin {:?} refused the route {:?}: {other}",
                plugin.name, route.name
            ),
        ),
    }
}
