//! Shared helpers for the end-to-end tests, and the paths of the test plugins
//! that `tests/build.rs` builds from `tests/plugins/`.

/// Paths of the test plugins' `.wasm` files, one constant per plugin
/// (`HELLO`, `RETRY_ONCE`, …).
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// The engine config tests start from: compiled plugins are cached in the
/// build's target dir, so each test plugin is compiled once per build rather
/// than once per test (Cranelift is slow in debug builds).
pub fn engine_config() -> weir_proxy::plugin::EngineConfig {
    weir_proxy::plugin::EngineConfig {
        cache_dir: Some(concat!(env!("OUT_DIR"), "/compile-cache").into()),
        ..Default::default()
    }
}
