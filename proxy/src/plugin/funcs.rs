//! A plugin instance's typed exports, looked up once per instantiation: the
//! hooks the plugin exports and nothing else (a missing hook is `None`, so
//! the host never calls it).

use wasmtime::{AsContextMut, Instance, TypedFunc};
use weir_abi::exports;

use super::host_state::HostState;

/// Which optional hooks a plugin exports; the host calls only these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSet {
    /// `on_request`
    pub on_request: bool,
    /// `select`
    pub select: bool,
    /// `on_response`
    pub on_response: bool,
    /// `on_end`
    pub on_end: bool,
    /// `status`
    pub status: bool,
    /// `snapshot`
    pub snapshot: bool,
    /// `restore`
    pub restore: bool,
}

pub(crate) type F<P, R> = Option<TypedFunc<P, R>>;

/// The typed exports, looked up once per instantiation.
pub(crate) struct Funcs {
    pub(crate) configure: TypedFunc<i32, i32>,
    pub(crate) on_request: F<(i64, i32, i32), i32>,
    pub(crate) select: F<(i64, i32, i32, i32), i64>,
    pub(crate) on_response: F<(i64, i32, i32, i32, i32, i64), i64>,
    pub(crate) on_end: F<(i64, i32, i32), ()>,
    pub(crate) status: F<(), i32>,
    pub(crate) snapshot: F<(), i32>,
    pub(crate) restore: F<i32, i32>,
}

impl Funcs {
    /// Looks up every export; a hook that exists with the wrong type is an error.
    pub(crate) fn new(
        mut store: impl AsContextMut<Data = HostState>,
        instance: &Instance,
    ) -> Result<Self, String> {
        let mut store = store.as_context_mut();
        let memory = instance
            .get_memory(&mut store, exports::MEMORY)
            .ok_or_else(|| format!("missing export `{}`", exports::MEMORY))?;
        store.data_mut().memory = Some(memory);
        fn opt<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
            store: &mut wasmtime::StoreContextMut<'_, HostState>,
            instance: &Instance,
            name: &str,
        ) -> Result<F<P, R>, String> {
            if instance.get_func(&mut *store, name).is_none() {
                return Ok(None);
            }
            instance
                .get_typed_func::<P, R>(&mut *store, name)
                .map(Some)
                .map_err(|e| format!("export `{name}` has the wrong type: {e:#}"))
        }
        Ok(Self {
            configure: opt(&mut store, instance, exports::CONFIGURE)?
                .ok_or_else(|| format!("missing export `{}`", exports::CONFIGURE))?,
            on_request: opt(&mut store, instance, exports::ON_REQUEST)?,
            select: opt(&mut store, instance, exports::SELECT)?,
            on_response: opt(&mut store, instance, exports::ON_RESPONSE)?,
            on_end: opt(&mut store, instance, exports::ON_END)?,
            status: opt(&mut store, instance, exports::STATUS)?,
            snapshot: opt(&mut store, instance, exports::SNAPSHOT)?,
            restore: opt(&mut store, instance, exports::RESTORE)?,
        })
    }

    pub(crate) fn hooks(&self) -> HookSet {
        HookSet {
            on_request: self.on_request.is_some(),
            select: self.select.is_some(),
            on_response: self.on_response.is_some(),
            on_end: self.on_end.is_some(),
            status: self.status.is_some(),
            snapshot: self.snapshot.is_some(),
            restore: self.restore.is_some(),
        }
    }
}
