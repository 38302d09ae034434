//! Turns a `.wasm` file into a [`LoadedPlugin`]: read, hash, compile (through
//! the engine's cache), and check the contract — the ABI version first, so a
//! plugin for another ABI is refused with both versions named, then the
//! imports, the required exports and every hook's signature.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{InstancePre, Store, StoreLimitsBuilder};
use weir_abi::{ABI_VERSION, exports};

use super::compile_cache::hex;
use super::engine::PluginEngine;
use super::funcs::{Funcs, HookSet};
use super::host_state::HostState;
use super::ticker::Watch;

/// Why a plugin could not be loaded. The old version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly module (garbage, empty, a component).
    #[error("plugin {plugin} is not a WebAssembly module{hint}")]
    NotWasm {
        /// The plugin's name.
        plugin: String,
        /// What the bytes look like instead, and what to do (may be empty).
        hint: &'static str,
    },
    /// The module does not compile (truncated, invalid).
    #[error("plugin {plugin} does not compile: {message}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// wasmtime's message.
        message: String,
    },
    /// Built for another ABI version.
    #[error(
        "plugin {plugin} was built for Weir plugin ABI version {plugin_version}, \
         but this proxy speaks ABI version {host_version}; rebuild it against a matching weir-sdk"
    )]
    AbiMismatch {
        /// The plugin's name.
        plugin: String,
        /// The version the plugin exports.
        plugin_version: u32,
        /// The version this host implements.
        host_version: u32,
    },
    /// The module breaks the contract: a missing or mistyped export, an
    /// import the host does not provide.
    #[error("plugin {plugin} does not follow the Weir plugin contract: {message}")]
    Contract {
        /// The plugin's name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

/// A compiled plugin whose contract has been checked; instantiate it with
/// [`super::PluginInstance::new`]. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub(crate) engine: PluginEngine,
    pub(crate) name: Arc<str>,
    pub(crate) hash: [u8; 32],
    pub(crate) hooks: HookSet,
    /// The plugin exports `weir_fail_closed`: it guards access, so its
    /// failures answer 503 whatever the route's policy.
    pub(crate) fail_closed: bool,
    pub(crate) pre: InstancePre<HostState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("hash", &self.hash_hex())
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The plugin's name (its file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the plugin declares that it guards access
    /// (`#[weir_sdk::plugin(fail_closed)]`): it fails closed on every route.
    pub fn declares_fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// SHA-256 of the `.wasm` file.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// SHA-256 of the `.wasm` file, in hex (for `/admin/plugins`).
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    /// The hooks it exports.
    pub fn hooks(&self) -> HookSet {
        self.hooks
    }
}

/// What a file that is not a core WebAssembly module most likely is: the
/// mistakes people make (a native build renamed `.wasm`, a component).
fn not_wasm_hint(bytes: &[u8]) -> &'static str {
    match bytes {
        [] => ": the file is empty",
        [0x7f, b'E', b'L', b'F', ..] => {
            ": it is a native ELF library or program (a host build renamed .wasm?); \
             build the plugin for wasm32-unknown-unknown with `weir plugin build`"
        }
        [0xcf, 0xfa, 0xed, 0xfe, ..] | [0xfe, 0xed, 0xfa, 0xcf, ..] => {
            ": it is a native Mach-O file; build the plugin for wasm32-unknown-unknown \
             with `weir plugin build`"
        }
        [b'M', b'Z', ..] => {
            ": it is a native Windows (PE) file; build the plugin for wasm32-unknown-unknown \
             with `weir plugin build`"
        }
        [0, b'a', b's', b'm', ..] => {
            ": it is a WebAssembly component (wasm32-wasip2?), and Weir loads core modules; \
             build the plugin for wasm32-unknown-unknown with `weir plugin build`"
        }
        _ => "",
    }
}

impl PluginEngine {
    /// Loads the plugin at `path`; its name is the file's stem.
    pub fn load_file(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.into(),
            source,
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
        self.load_bytes(&name, &wasm)
    }

    /// Loads a plugin from its bytes.
    pub fn load_bytes(&self, name: &str, wasm: &[u8]) -> Result<LoadedPlugin, LoadError> {
        let plugin = name.to_owned();
        // Core modules are version 1; components and garbage are refused here
        // with a clearer message than the compiler's.
        if !wasm.starts_with(b"\0asm\x01\0\0\0") {
            return Err(LoadError::NotWasm {
                plugin,
                hint: not_wasm_hint(wasm),
            });
        }
        let hash: [u8; 32] = Sha256::digest(wasm).into();
        let module = self.compile(wasm, &hash).map_err(|e| LoadError::Compile {
            plugin: plugin.clone(),
            message: format!("{e:#}"),
        })?;
        let contract = |message: String| LoadError::Contract {
            plugin: plugin.clone(),
            message,
        };
        // A build for another target says so by its imports: name it, with
        // the command that builds a Weir plugin.
        if let Some(import) = module
            .imports()
            .find(|i| i.module() != weir_abi::IMPORT_MODULE)
        {
            let why = if import.module().starts_with("wasi") {
                "it was built for WASI (wasm32-wasip1); Weir plugins are built for \
                 wasm32-unknown-unknown: build it with `weir plugin build` \
                 (or `cargo build --target wasm32-unknown-unknown`)"
            } else {
                "Weir provides only the `weir` import module (a plugin cannot use WASI, \
                 wasm-bindgen or other hosts' imports)"
            };
            return Err(contract(format!(
                "unknown import `{}::{}`: {why}",
                import.module(),
                import.name()
            )));
        }

        // The version comes first: a plugin for another ABI may well import
        // functions this host lacks, and the version is the useful message.
        // Unknown imports trap in this scratch instance instead of failing it.
        let mut scratch = self.inner.linker.clone();
        scratch
            .define_unknown_imports_as_traps(&module)
            .map_err(|e| contract(format!("{e:#}")))?;
        let (mut store, _watch) = self.scratch_store(name);
        let instance = scratch
            .instantiate(&mut store, &module)
            .map_err(|e| contract(format!("cannot instantiate: {e:#}")))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, exports::ABI_VERSION)
            .map_err(|_| {
                contract(format!(
                    "missing export `{}: () -> i32`: the crate has no \
                     `#[weir_sdk::plugin]` on its `impl Plugin for YourPlugin`, or is not \
                     built as a `cdylib` (`[lib] crate-type = [\"cdylib\"]`)",
                    exports::ABI_VERSION
                ))
            })?
            .call(&mut store, ())
            .map_err(|e| contract(format!("`{}` trapped: {e:#}", exports::ABI_VERSION)))?;
        if version as u32 != ABI_VERSION {
            return Err(LoadError::AbiMismatch {
                plugin,
                plugin_version: version as u32,
                host_version: ABI_VERSION,
            });
        }

        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| contract(format!("{e:#}")))?;
        // Signatures of every hook, checked once here rather than on a request.
        let (mut store, _watch) = self.scratch_store(name);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| contract(format!("{e:#}")))?;
        let funcs = Funcs::new(&mut store, &instance).map_err(contract)?;
        Ok(LoadedPlugin {
            engine: self.clone(),
            name: name.into(),
            hash,
            hooks: funcs.hooks(),
            fail_closed: module.exports().any(|e| e.name() == exports::FAIL_CLOSED),
            pre,
        })
    }

    /// A store for the loader's own checks, armed with the init deadline
    /// for as long as the returned watch lives.
    fn scratch_store(&self, name: &str) -> (Store<HostState>, Watch) {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.inner.config.memory_limit)
            .build();
        let state = HostState::new(name.into(), self.inner.services.clone(), limits);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limits);
        let watch = self.watch();
        watch.arm(&mut store, self.ticks(self.inner.config.init_deadline));
        (store, watch)
    }
}
