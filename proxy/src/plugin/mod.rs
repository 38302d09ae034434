//! The plugin runtime: one wasmtime engine ([`engine`]), the loader that
//! checks a plugin's contract ([`loader`]), long-lived per-route instances
//! ([`instance`]), the host functions they import ([`host`]), and the onion
//! executor that runs a route's chain around the upstream call ([`chain`]).
//!
//! The request path uses only [`Chain`] and the views in [`views`]; loading
//! and instantiating happen beside it and publish new chains.

pub mod chain;
pub mod compile_cache;
mod cpu_budget;
pub mod engine;
mod funcs;
pub mod host;
mod host_cache;
mod host_extra;
mod host_headers;
pub mod host_state;
pub mod instance;
mod intern;
pub mod loader;
pub mod metrics;
pub mod probation;
pub mod registry;
pub mod services;
mod ticker;
pub mod verdict;
pub mod views;

pub use chain::{Attempt, Chain, Core, EndToken, TrapPolicy};
pub use compile_cache::{CacheKeyError, CompileCacheConfig};
pub use engine::{EngineConfig, EngineError, PluginEngine};
pub use funcs::HookSet;
pub use instance::PluginInstance;
pub use loader::{LoadError, LoadedPlugin};
pub use metrics::MetricSample;
pub use probation::Probation;
pub use registry::{PluginRecord, PluginRegistry};
pub use services::HostServices;
pub use verdict::{PluginError, RequestVerdict, ResponseVerdict};
pub use views::{
    EndpointFacts, EndpointInfo, ErrorClass, LocalAnswer, Outcome, RequestView, ResponseHead,
};
