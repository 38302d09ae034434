//! Weir's host: listener, routing, upstream client, admin API and CLI.
//!
//! Data flows one way: [`config`] → [`route`] table → (plugin chain) →
//! [`upstream`]. The request path reads immutable snapshots; the config
//! watcher and the admin API only publish new ones.

pub mod admin;
pub mod body;
pub mod cache_store;
pub mod cli;
pub mod config;
pub mod fault;
pub mod framing;
pub mod plugin;
pub mod plugin_build;
pub mod proxy_status;
pub mod redact;
pub mod route;
pub mod scaffold;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod upstream_error;
pub mod watch;

pub use config::Config;
pub use server::{Options, Server, ServerHandle};
