//! Shared helpers for the end-to-end tests, and the paths of the test plugins
//! that `tests/build.rs` builds from `tests/plugins/`.

/// Paths of the test plugins' `.wasm` files, one constant per plugin
/// (`HELLO`, `RETRY_ONCE`, …).
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
