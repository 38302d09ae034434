//! Weir's configuration: the TOML file, parsed with spans, validated whole,
//! and turned into plain settings the rest of the proxy reads. A config that
//! fails any check is refused with the file, line and column of every error.

mod address;
mod admin;
mod duration;
mod endpoint;
mod plugin_ref;
mod plugins;
mod raw;
mod route;
mod settings_at;
mod tls;
mod upstream;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use admin::{AdminSettings, AdminToken};
pub use endpoint::{EndpointSpec, parse_endpoint_json, parse_endpoint_list};
pub use plugin_ref::{PluginRef, is_plugin_name};
pub use plugins::PluginSettings;
use raw::RawConfig;
pub use raw::{OnPluginError, RuntimeMode, UpstreamProtocol};
pub use route::RouteSpec;
pub use settings_at::{PathStep, SettingLocations};
pub use upstream::{Discovery, HealthCheckSpec, PassiveSpec};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub server: ServerSettings,
    /// The admin listener; `None` when disabled.
    pub admin: Option<AdminSettings>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub plugins: PluginSettings,
    pub listeners: Vec<SocketAddr>,
    /// TLS settings of the listeners that terminate TLS, by address.
    pub listener_tls: BTreeMap<SocketAddr, crate::tls::ListenerTlsSettings>,
    /// Plain listeners that answer every request with a redirect to HTTPS,
    /// and the port they redirect to.
    pub redirect_https: BTreeMap<SocketAddr, u16>,
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
}

/// Process-wide settings; these apply at start-up only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSettings {
    pub workers: usize,
    pub runtime: RuntimeMode,
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
    pub access_log: bool,
}

/// Timeouts that apply to every route unless the route overrides them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timeouts {
    /// Establishing a TCP connection to an endpoint.
    #[serde(with = "duration_text")]
    pub connect: Duration,
    /// From the request's arrival to the upstream's response head.
    #[serde(with = "duration_text")]
    pub request: Duration,
    /// A client connection with no request in flight is closed after this.
    #[serde(with = "duration_text")]
    pub idle: Duration,
    /// A request head must arrive whole within this of its first byte (the
    /// connection's start, for its first request); else 408 and close.
    #[serde(with = "duration_text")]
    pub header_read: Duration,
    /// A request body may pause this long between bytes; else the request
    /// is refused (408) as the client's fault and the connection closed.
    #[serde(with = "duration_text")]
    pub body_idle: Duration,
}

/// Request header limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// The largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// The most header fields accepted in one request.
    pub max_headers: usize,
    /// The longest request line accepted (414 past it).
    pub max_request_line_bytes: usize,
}

/// One named group of endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSpec {
    pub endpoints: Vec<EndpointSpec>,
    pub protocol: UpstreamProtocol,
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    #[serde(with = "duration_text")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
    pub discovery: Discovery,
    pub health_check: Option<HealthCheckSpec>,
    pub passive: PassiveSpec,
    /// TLS to the endpoints (`tls` table, or `https://` endpoints).
    pub tls: Option<crate::tls::UpstreamTlsSpec>,
}

/// Defaults for everything the file leaves out.
pub mod defaults {
    use std::time::Duration;

    pub const ADMIN_ADDRESS: &str = "127.0.0.1:9901";
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    pub const MAX_HEADERS: usize = 100;
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    pub const POOL_MAX_IDLE_PER_ENDPOINT: usize = 256;
    pub const PLUGINS_DIR: &str = "plugins";
    pub const COMPILE_CACHE_DIR: &str = ".weir/compile-cache";
    pub const COMPILE_CACHE_KEY: &str = ".weir/compile-cache.key";
    pub const COMPILE_CACHE_MAX_BYTES: usize = 256 << 20;
    pub const CALL_DEADLINE: Duration = Duration::from_millis(10);
    pub const PROBATION: Duration = Duration::from_secs(30);
    pub const PROBATION_MAX_TRAPS: u32 = 3;
    pub const MEMORY_LIMIT_BYTES: usize = 32 << 20;
    pub const REPLAY_BUFFER_BYTES: usize = 64 << 10;
    pub const CACHE_CAPACITY_BYTES: usize = 64 << 20;
    pub const CACHE_MAX_OBJECT_BYTES: usize = 8 << 20;
    pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
}

/// One problem found in a config file, located by line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The located problems, if the file was read.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(list) => list,
            Self::Read { .. } => &[],
        }
    }
}

fn render(list: &[Diagnostic]) -> String {
    let lines: Vec<String> = list.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in diagnostics.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let locate = Locator::new(text, path);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ConfigError::Invalid(vec![locate.at(span, e.message().trim().to_string())])
        })?;
        validate(raw, &locate)
    }
}

/// Maps byte offsets to line and column.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str, path: &'a Path) -> Self {
        Self { text, path }
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(start, |nl| start - nl - 1) + 1;
        Diagnostic {
            file: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

fn validate(raw: RawConfig, locate: &Locator<'_>) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();

    let workers = match raw.server.workers {
        Some(w) if *w.get_ref() == 0 => {
            errors.push(locate.at(w.span(), "server.workers must be at least 1"));
            1
        }
        Some(w) => *w.get_ref(),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let server = ServerSettings {
        workers,
        runtime: raw.server.runtime.unwrap_or(RuntimeMode::PerCore),
        drain_timeout: raw.server.drain_timeout.unwrap_or(defaults::DRAIN_TIMEOUT),
        access_log: raw.server.access_log.unwrap_or(false),
    };

    let timeouts = Timeouts {
        connect: raw.timeouts.connect.unwrap_or(defaults::CONNECT_TIMEOUT),
        request: raw.timeouts.request.unwrap_or(defaults::REQUEST_TIMEOUT),
        idle: raw.timeouts.idle.unwrap_or(defaults::IDLE_TIMEOUT),
        header_read: raw
            .timeouts
            .header_read
            .unwrap_or(defaults::HEADER_READ_TIMEOUT),
        body_idle: raw
            .timeouts
            .body_idle
            .unwrap_or(defaults::BODY_IDLE_TIMEOUT),
    };

    let limits = Limits {
        max_header_bytes: bounded(
            &mut errors,
            locate,
            raw.limits.max_header_bytes,
            8192..=1 << 24,
            "limits.max_header_bytes",
        )
        .unwrap_or(defaults::MAX_HEADER_BYTES),
        max_headers: bounded(
            &mut errors,
            locate,
            raw.limits.max_headers,
            1..=10_000,
            "limits.max_headers",
        )
        .unwrap_or(defaults::MAX_HEADERS),
        max_request_line_bytes: bounded(
            &mut errors,
            locate,
            raw.limits.max_request_line_bytes,
            256..=1 << 20,
            "limits.max_request_line_bytes",
        )
        .unwrap_or(defaults::MAX_REQUEST_LINE_BYTES),
    };

    let base = locate
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let plugins = plugins::validate(&raw.plugins, &base, locate, &mut errors);

    let mut listeners = Vec::new();
    let mut listener_tls = BTreeMap::new();
    let mut redirecting = Vec::new();
    let mut seen_listeners = HashSet::new();
    if raw.listeners.is_empty() {
        errors.push(locate.at(
            0..0,
            "no listeners: add at least one [[listeners]] with an address",
        ));
    }
    for listener in &raw.listeners {
        let address = &listener.get_ref().address;
        match address.get_ref().parse::<SocketAddr>() {
            Ok(addr) if !seen_listeners.insert(addr) => {
                errors
                    .push(locate.at(address.span(), format!("duplicate listener address {addr}")));
            }
            Ok(addr) => {
                listeners.push(addr);
                if listener.get_ref().redirect_https {
                    if listener.get_ref().tls.is_some() {
                        errors.push(locate.at(
                            address.span(),
                            "a listener with tls cannot also redirect_https",
                        ));
                    }
                    redirecting.push((addr, address.span()));
                }
                if let Some(tls) = &listener.get_ref().tls
                    && let Some(settings) = tls::validate(tls, &base, locate, &mut errors)
                {
                    listener_tls.insert(addr, settings);
                }
            }
            Err(_) => errors.push(locate.at(
                address.span(),
                format!(
                    "invalid listener address {:?}: expected ip:port, e.g. \"0.0.0.0:8080\"",
                    address.get_ref()
                ),
            )),
        }
    }

    // Redirects go to the first TLS listener's port.
    let https_port = listener_tls.keys().next().map(SocketAddr::port);
    let mut redirect_https = BTreeMap::new();
    for (addr, span) in redirecting {
        match https_port {
            Some(port) => {
                redirect_https.insert(addr, port);
            }
            None => errors.push(locate.at(
                span,
                "redirect_https needs a listener with tls to redirect to",
            )),
        }
    }

    let admin = admin::validate(&raw.admin, &base, &seen_listeners, locate, &mut errors);

    let mut upstreams = BTreeMap::new();
    for (name, upstream) in &raw.upstreams {
        let spec = upstream.get_ref();
        let parts = self::upstream::validate_upstream(
            &self::upstream::RawUpstreamParts {
                name: name.get_ref(),
                endpoints: spec.endpoints.as_ref(),
                discovery: spec.discovery.as_ref(),
                health_check: spec.health_check.as_ref(),
                passive: spec.passive.as_ref(),
                span: upstream.span(),
            },
            locate,
            &mut errors,
        );
        let tls =
            tls::validate_upstream(spec.tls.as_ref(), parts.https, &base, locate, &mut errors);
        upstreams.insert(
            name.get_ref().clone(),
            UpstreamSpec {
                tls,
                endpoints: parts.endpoints,
                discovery: parts.discovery,
                health_check: parts.health_check,
                passive: parts.passive,
                protocol: spec.protocol.unwrap_or(UpstreamProtocol::Http1),
                connect_timeout: spec.connect_timeout.unwrap_or(timeouts.connect),
                pool_idle_timeout: spec
                    .pool_idle_timeout
                    .unwrap_or(defaults::POOL_IDLE_TIMEOUT),
                pool_max_idle_per_endpoint: spec
                    .pool_max_idle_per_endpoint
                    .unwrap_or(defaults::POOL_MAX_IDLE_PER_ENDPOINT),
            },
        );
    }

    let routes = route::validate_routes(
        &raw.routes,
        &raw.upstreams,
        timeouts.request,
        locate,
        &mut errors,
    );

    if !errors.is_empty() {
        errors.sort_by_key(|d| (d.line, d.column));
        return Err(ConfigError::Invalid(errors));
    }
    Ok(Config {
        source: locate.path.to_path_buf(),
        server,
        admin,
        timeouts,
        limits,
        plugins,
        listeners,
        listener_tls,
        redirect_https,
        upstreams,
        routes,
    })
}

fn bounded(
    errors: &mut Vec<Diagnostic>,
    locate: &Locator<'_>,
    value: Option<toml::Spanned<usize>>,
    range: std::ops::RangeInclusive<usize>,
    what: &str,
) -> Option<usize> {
    let value = value?;
    if range.contains(value.get_ref()) {
        Some(*value.get_ref())
    } else {
        errors.push(locate.at(
            value.span(),
            format!(
                "{what} = {} is out of range {}..={}",
                value.get_ref(),
                range.start(),
                range.end()
            ),
        ));
        None
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        String::from("none")
    } else {
        items.join(", ")
    }
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

fn display_text<T: fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

#[cfg(test)]
mod tests;
