//! The Weir guest SDK: write a policy plugin as one struct and one trait
//! impl marked `#[weir_sdk::plugin]`, and build it for
//! `wasm32-unknown-unknown`.
//!
//! # Hello world
//!
//! A plugin that adds a response header:
//!
//! ```
//! use weir_sdk::{Plugin, Request, Response, ResponseAction};
//! #[derive(Default)]
//! struct Hello;
//! #[weir_sdk::plugin]
//! impl Plugin for Hello {
//!     fn on_response(&mut self, _: &mut (), _: &Request, r: &mut Response) -> ResponseAction {
//!         let _ = r.set_header("x-hello", "world");
//!         ResponseAction::Pass
//!     }
//! }
//! ```
//!
//! `#[weir_sdk::plugin]` exports exactly the hooks the impl defines (the host
//! calls nothing else), adds `on_end` when `Ctx` holds per-request state so
//! that it is freed, and fills in `type Config = ()` and `type Ctx = ()`
//! when they are left out.
//!
//! Build it with `weir plugin build --install PLUGINS_DIR` (crate type
//! `cdylib`): it builds for `wasm32-unknown-unknown` with the plugin profile
//! and installs the `.wasm` into the plugins directory by write-then-rename.
//!
//! # Phases
//!
//! A route's chain is an onion: the first plugin is the outermost. For one
//! request, with plugins A (outer) and B (inner), where B asks for a retry:
//!
//! ```text
//!  configure (once per instance, before any request; may reject the config)
//!
//!  A.on_request ─▶ B.on_request ─▶ select ─▶ upstream ─▶ B.on_response ─┐
//!                                                                      │ Retry(delay)
//!                  ┌───────────────────────────────────────────────────┘
//!                  ▼  attempt 2: everything inside B runs again
//!                B.on_request ─▶ select(tried=[e1]) ─▶ upstream ─▶ B.on_response ─▶ A.on_response
//!
//!  B.on_end ─▶ A.on_end   (exactly once per plugin whose on_request ran —
//!                          also if the client went away or a plugin trapped)
//! ```
//!
//! * `on_request` runs outer → inner. [`RequestAction::Answer`] skips the inner
//!   plugins and the upstream; the outer plugins still see the answer.
//! * `select` runs on the route's balancer (the innermost plugin that exports
//!   it), once per attempt, with the healthy endpoints and the ones tried.
//! * `on_response` runs inner → outer: pass, replace with a local answer, or
//!   retry after a delay.
//! * `on_end` gets the request's state by value: it is the last hook.
//! * `status`, `snapshot` and `restore` run outside requests (admin API, hot reload).
//!
//! # State
//!
//! Plugin-wide state lives in `&mut self`: one instance serves all of its
//! route's traffic, calls never overlap. Per-request state is [`Plugin::Ctx`],
//! created with `Default` on the request's first hook and handed back by value
//! to `on_end`; the SDK keys it by request id.
//!
//! # Host calls
//!
//! Everything a plugin asks of the host returns [`HostResult`]: header
//! reads and writes on [`Request`] and [`Response`], [`Metric`]s, and the
//! functions in [`host`] (monotonic and wall clocks, random, log, cache,
//! shared counters, endpoint stats, endpoint marks) and [`cache`] (the HTTP
//! cache store). None of them panics. [`http_date`] parses the dates of
//! `Date`, `Expires` or `Retry-After` for comparing with the wall clock.
//!
//! # Testing
//!
//! Off wasm32 the host calls go to a fake host: [`testing::Harness`] runs a
//! plugin natively with a virtual clock, scripted requests and upstream
//! outcomes, and records what it did. See [`testing`] for an example.

extern crate alloc;
// `#[weir_sdk::plugin]` names the SDK by its crate name; the SDK's own
// tests use it too.
#[cfg(test)]
extern crate self as weir_sdk;

pub mod cache;
pub mod config;
mod endpoint;
mod export;
mod hostcalls;
pub mod http_date;
mod rejection;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

use alloc::string::String;
use alloc::vec::Vec;

pub use weir_abi as abi;
pub use weir_abi::{ErrorClass, LogLevel, Method};

pub use hostcalls::{HostError, HostResult};
pub use types::{Answer, End, Metric, Request, RequestAction, Response, ResponseAction};
pub use weir_sdk_macros::plugin;

pub use endpoint::Endpoint;

/// Host functions that are not tied to the request or response.
pub mod host {
    pub use crate::hostcalls::{
        cache_get, cache_put, clock_ns, counter_add, counter_add_ttl, endpoint_mark,
        endpoint_stats, log, random, time_unix_ms,
    };
}

#[doc(hidden)]
pub mod __rt {
    pub use crate::export::{Exported, Runtime, has_hook};
}

/// A Weir policy plugin. Every hook has a default that does nothing, so a
/// plugin implements only what it needs; mark the impl with
/// [`#[weir_sdk::plugin]`](macro@plugin) and exactly those hooks are exported.
pub trait Plugin: Default + 'static {
    /// The route's settings for this plugin, parsed from JSON. Use `()` for
    /// none; a struct with `#[serde(default)]` accepts missing settings.
    type Config: serde::de::DeserializeOwned;

    /// Per-request state, kept from the first hook of a request to `on_end`.
    /// Use `()` for none (then nothing is stored at all).
    type Ctx: Default;

    /// Runs once on a fresh instance, before any request. `Err` rejects the
    /// config: the load fails and the previous version keeps serving.
    fn configure(&mut self, config: Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Runs outer → inner for every attempt that reaches this plugin. May
    /// edit request headers, set the attempt's timeout, or answer locally.
    fn on_request(&mut self, ctx: &mut Self::Ctx, req: &mut Request) -> RequestAction {
        let _ = (ctx, req);
        RequestAction::Continue
    }

    /// Chooses the endpoint for an attempt (balancers). `endpoints` are the
    /// healthy ones (all, if none is healthy); `tried` are the ids this request
    /// already used. `None` lets the host choose (round robin).
    fn select(
        &mut self,
        ctx: &mut Self::Ctx,
        req: &Request,
        endpoints: &[Endpoint],
        tried: &[u32],
    ) -> Option<u32> {
        let _ = (ctx, req, endpoints, tried);
        None
    }

    /// Runs inner → outer with the attempt's outcome. May edit response
    /// headers, replace the outcome, or ask for a retry.
    fn on_response(
        &mut self,
        ctx: &mut Self::Ctx,
        req: &Request,
        resp: &mut Response,
    ) -> ResponseAction {
        let _ = (ctx, req, resp);
        ResponseAction::Pass
    }

    /// Runs exactly once per request whose `on_request` ran, with how it ended.
    fn on_end(&mut self, ctx: Self::Ctx, end: &End) {
        let _ = (ctx, end);
    }

    /// JSON describing the plugin's state for `/admin/plugins`.
    fn status(&self) -> String {
        String::from("{}")
    }

    /// State to carry across a hot reload into the new version's `restore`.
    /// Called once, after every call to this version that started before
    /// it; from then on this version's calls (from requests still holding
    /// it) go to the new version, so no update after the snapshot is lost.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes the previous version's `snapshot`, after `configure` and before
    /// any request reaches this version. `Err` is logged; the new version
    /// starts from its defaults. Requests that began on the previous version
    /// reach this one's later hooks with a default `Ctx`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let _ = snapshot;
        Ok(())
    }
}
