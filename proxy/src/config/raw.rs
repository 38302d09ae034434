//! The config file as written: serde types that mirror the TOML, with spans
//! kept on the values that later checks point at. Nothing here is validated
//! beyond what serde's types enforce; `config::validate` turns it into a
//! [`super::Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::endpoint::RawEndpoint;
use super::upstream::{RawDiscovery, RawHealthCheck, RawPassive};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub plugins: RawPlugins,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub workers: Option<Spanned<usize>>,
    pub runtime: Option<RuntimeMode>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub drain_timeout: Option<Duration>,
    pub access_log: Option<bool>,
}

/// How the proxy spreads work over the machine's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeMode {
    /// One current-thread runtime per worker, each with its own
    /// `SO_REUSEPORT` listener and its own upstream connection pools.
    PerCore,
    /// One multi-thread tokio runtime shared by all workers.
    MultiThread,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub address: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawListenerTls>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub connect: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub request: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub idle: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub header_read: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub body_idle: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_header_bytes: Option<Spanned<usize>>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_request_line_bytes: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugins {
    pub dir: Option<String>,
    pub compile_cache: Option<String>,
    pub compile_cache_key: Option<Spanned<String>>,
    pub compile_cache_max_bytes: Option<Spanned<usize>>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub call_deadline: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub probation: Option<Duration>,
    pub probation_max_traps: Option<Spanned<usize>>,
    pub memory_limit_bytes: Option<Spanned<usize>>,
    pub replay_buffer_bytes: Option<Spanned<usize>>,
    pub cache_capacity_bytes: Option<Spanned<usize>>,
    pub cache_max_object_bytes: Option<Spanned<usize>>,
    pub redis_url: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub redis_timeout: Option<Duration>,
}

/// What a route does when one of its plugins traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnPluginError {
    /// Skip the failed plugin for this request.
    #[default]
    FailOpen,
    /// Answer 503 where the plugin failed.
    FailClosed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPluginRef {
    pub name: Spanned<String>,
    #[serde(default)]
    pub config: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub address: Spanned<String>,
    pub tls: Option<Spanned<RawListenerTls>>,
    #[serde(default)]
    pub redirect_https: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    pub certificates: Vec<Spanned<RawCertPaths>>,
    pub min_version: Option<Spanned<String>>,
    pub alpn: Option<Spanned<Vec<String>>>,
    pub client_auth: Option<Spanned<RawClientAuth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientAuth {
    pub ca: String,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertPaths {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    /// `"host:port"` or `{ address = "host:port", weight = 2, zone = "a", metadata = {...} }`;
    /// may be left out when `discovery` finds the endpoints.
    pub endpoints: Option<Spanned<Vec<Spanned<RawEndpoint>>>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub passive: Option<Spanned<RawPassive>>,
    pub protocol: Option<UpstreamProtocol>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub pool_idle_timeout: Option<Duration>,
    pub pool_max_idle_per_endpoint: Option<usize>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `[upstreams.NAME] tls = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub server_name: Option<String>,
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// The wire protocol Weir speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<String>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub upstream: Spanned<String>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub plugins: Vec<Spanned<RawPluginRef>>,
    pub on_plugin_error: Option<OnPluginError>,
}
