//! The one wasmtime [`Engine`] of the proxy: Cranelift, epoch interruption
//! driven by a ticker thread ([`super::ticker`]), the host functions'
//! [`Linker`], and an authenticated on-disk cache of compiled plugins
//! ([`super::compile_cache`]) so restarts skip compilation.

use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Linker, Module, OptLevel};

use super::compile_cache::{CompileCache, CompileCacheConfig};
use super::host;
use super::host_state::HostState;
use super::services::HostServices;
use super::ticker::{Ticker, Watch};
use crate::cache_store::CacheStoreConfig;

/// How the engine and its instances are set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where and how compiled plugins are cached (`None`: no cache).
    pub compile_cache: Option<CompileCacheConfig>,
    /// How often the epoch advances while some call's deadline is pending
    /// (the ticker parks otherwise); the granularity of every deadline.
    pub epoch_tick: Duration,
    /// Longest a request-path hook may run before it traps.
    pub call_deadline: Duration,
    /// Longest `configure`, `restore`, `status` and `snapshot` may run.
    pub init_deadline: Duration,
    /// Most linear memory one instance may have, in bytes.
    pub memory_limit: usize,
    /// First wait before a trapped instance is rebuilt after repeated traps;
    /// it doubles per consecutive trap up to `trap_backoff_max`.
    pub trap_backoff: Duration,
    /// Longest wait between rebuilds of a repeatedly trapping instance.
    pub trap_backoff_max: Duration,
    /// Size limits of the HTTP cache store the plugins share.
    pub cache: CacheStoreConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            compile_cache: None,
            epoch_tick: EngineConfig::tick_for(Duration::from_millis(10)),
            call_deadline: Duration::from_millis(10),
            init_deadline: Duration::from_secs(1),
            memory_limit: 32 << 20,
            trap_backoff: Duration::from_millis(10),
            trap_backoff_max: Duration::from_secs(30),
            cache: CacheStoreConfig::default(),
        }
    }
}

impl EngineConfig {
    /// The epoch tick for a call deadline: a fifth of it, between 1 ms and
    /// 100 ms: the granularity of the deadline's alarm (after which CPU
    /// time decides, see `cpu_budget`), and a busy proxy wakes its ticker at
    /// most 1000 times a second
    /// (500 at the default 10 ms deadline): each wake-up costs CPU, in a VM
    /// some tens of microseconds.
    pub fn tick_for(call_deadline: Duration) -> Duration {
        (call_deadline / 5).clamp(Duration::from_millis(1), Duration::from_millis(100))
    }
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the wasm engine: {0}")]
pub struct EngineError(String);

impl EngineError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The shared engine; cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct EngineInner {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub config: EngineConfig,
    pub services: Arc<HostServices>,
    /// Stops its thread when dropped.
    ticker: Ticker,
    cache: Option<CompileCache>,
}

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        let services = Arc::new(HostServices::new(config.cache));
        Self::with_services(config, services)
    }

    /// Like [`PluginEngine::new`], with given host services (e.g. shared
    /// counters in Redis: [`HostServices::with_redis`]).
    pub fn with_services(
        config: EngineConfig,
        services: Arc<HostServices>,
    ) -> Result<Self, EngineError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&wasm).map_err(|e| EngineError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| EngineError(format!("{e:#}")))?;

        let ticker = Ticker::start(engine.clone(), config.epoch_tick)
            .map_err(|e| EngineError(format!("cannot start the epoch ticker: {e}")))?;

        // Artifacts are only valid for this wasmtime version and engine config.
        let compat = {
            let mut h = Sha256Hasher(Sha256::new());
            std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
            let mut compat = [0u8; 16];
            compat.copy_from_slice(&h.0.finalize()[..16]);
            compat
        };
        let cache = config.compile_cache.as_ref().and_then(|settings| {
            CompileCache::open(settings, compat)
                .map_err(|error| {
                    // Plugins still load, compiled on every start.
                    tracing::error!(%error, "the compile cache is off");
                })
                .ok()
        });
        let inner = EngineInner {
            engine,
            linker,
            config,
            services,
            ticker,
            cache,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The shared host services (cache store, shared counters).
    pub fn services(&self) -> &Arc<HostServices> {
        &self.inner.services
    }

    /// A new deadline watch, for one store that calls into wasm: arm it
    /// instead of setting the store's epoch deadline directly.
    pub(crate) fn watch(&self) -> Watch {
        self.inner.ticker.watch()
    }

    /// Epoch ticks covering `d`, plus one because the next tick may come at once.
    pub(crate) fn ticks(&self, d: Duration) -> u64 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        u64::try_from(d.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Compiles `wasm` (whose SHA-256 is `hash`), through the on-disk cache.
    pub(crate) fn compile(&self, wasm: &[u8], hash: &[u8; 32]) -> wasmtime::Result<Module> {
        let Some(cache) = &self.inner.cache else {
            return Module::new(&self.inner.engine, wasm);
        };
        if let Some(payload) = cache.load(hash) {
            // SAFETY: the payload is what `Module::serialize` wrote for an
            // engine with the same compatibility hash, from this very `.wasm`
            // (its SHA-256 is bound into the entry), and it carries this
            // installation's HMAC, which only the proxy's private key makes.
            if let Ok(module) = unsafe { Module::deserialize(&self.inner.engine, &payload) } {
                return Ok(module);
            }
        }
        let module = Module::new(&self.inner.engine, wasm)?;
        let stored = module
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|payload| cache.store(hash, &payload));
        if let Err(e) = stored {
            // A cache that cannot be written costs speed, not correctness.
            tracing::warn!(error = %e, "cannot write plugin compile cache");
        }
        Ok(module)
    }
}

/// Feeds `Hash` impls into SHA-256 (for a stable, process-independent key).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_fifth_of_the_deadline_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(EngineConfig::tick_for(ms(10)), ms(2));
        assert_eq!(EngineConfig::tick_for(ms(3)), ms(1));
        assert_eq!(EngineConfig::tick_for(Duration::ZERO), ms(1));
        assert_eq!(EngineConfig::tick_for(ms(250)), ms(50));
        assert_eq!(EngineConfig::tick_for(Duration::from_secs(5)), ms(100));
        assert_eq!(EngineConfig::default().epoch_tick, ms(2));
    }
}
