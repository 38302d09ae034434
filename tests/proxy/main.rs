//! End-to-end tests of the host proxy: real sockets, in-process upstream
//! servers on ephemeral ports, the real `Server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod authoring;
mod balancing;
mod cache;
mod compile_cache;
mod discovery;
mod end_flags;
mod failures;
mod health;
mod intake;
mod intake_h2;
mod plugin_faults;
pub mod plugins;
#[allow(clippy::float_cmp)]
mod policies;
mod pool;
mod probation;
mod protocols;
mod reload;
mod routing;
mod streaming;
mod swaps;
mod tls;
mod upstream_h1;
mod upstream_tls;
mod walkthrough;
