//! The `[upstreams.NAME]` tables: their endpoint lists, discovery, active
//! health checks and passive ejection (one endpoint's entry is read in
//! [`super::endpoint`]). Raw serde types and their validation live together
//! here so that the main config module only calls [`validate_upstream`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::endpoint::{EndpointSpec, RawEndpoint, RawEndpointDetail, endpoint_spec};
use super::{Diagnostic, Locator, duration_text};

/// Defaults of the health, passive and discovery settings.
pub mod defaults {
    use std::time::Duration;

    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTHY_THRESHOLD: u32 = 2;
    pub const UNHEALTHY_THRESHOLD: u32 = 3;
    pub const BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
    pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
    pub const MAX_EJECTED_PERCENT: u8 = 10;
    pub const DNS_INTERVAL: Duration = Duration::from_secs(30);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub method: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub expected_statuses: Option<Vec<Spanned<RawStatus>>>,
    pub host: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub jitter: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

/// `200` or `"200-399"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawStatus {
    One(u16),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPassive {
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::optional")]
    pub max_ejection_time: Option<Duration>,
    pub max_ejected_percent: Option<Spanned<u8>>,
}

/// Discovery settings as written. serde's internally tagged enums buffer
/// their content, which loses spans, so errors point at the whole table.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum RawDiscovery {
    Static,
    Dns {
        name: String,
        port: u16,
        #[serde(default, deserialize_with = "super::duration::optional")]
        interval: Option<Duration>,
        #[serde(default)]
        nameservers: Vec<String>,
        #[serde(default)]
        allow_empty: bool,
    },
    File {
        path: String,
        #[serde(default)]
        allow_empty: bool,
    },
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        #[serde(default)]
        allow_empty: bool,
    },
}

/// Where an upstream's endpoints come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Discovery {
    /// The `endpoints` list of the config.
    Static,
    /// A and AAAA records of `name`, re-resolved when their TTL runs out or
    /// every `interval`, whichever comes first.
    Dns {
        name: String,
        port: u16,
        #[serde(with = "duration_text")]
        interval: Duration,
        /// Empty: the system's resolver configuration.
        nameservers: Vec<SocketAddr>,
        /// Apply an empty answer (see [`Discovery::allow_empty`]).
        allow_empty: bool,
    },
    /// A JSON or TOML file with a list of endpoints, watched for changes.
    File { path: PathBuf, allow_empty: bool },
    /// Every key under `prefix` in etcd v3 is an endpoint (JSON value).
    Etcd {
        /// `host:port` of etcd's client (HTTP/JSON gateway) listeners.
        #[serde(serialize_with = "authorities_text")]
        endpoints: Vec<Authority>,
        prefix: String,
        allow_empty: bool,
    },
}

impl Discovery {
    /// Whether an empty endpoint set from the source is applied. By default
    /// it is not: a file briefly empty or every etcd key deleted before the
    /// new ones are written would otherwise answer every request 503; the
    /// last non-empty set keeps serving and discovery reports `warning`.
    pub fn allow_empty(&self) -> bool {
        match self {
            Self::Static => true,
            Self::Dns { allow_empty, .. }
            | Self::File { allow_empty, .. }
            | Self::Etcd { allow_empty, .. } => *allow_empty,
        }
    }

    /// The name the admin API and the endpoints' `source` use.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dns { .. } => "dns",
            Self::File { .. } => "file",
            Self::Etcd { .. } => "etcd",
        }
    }
}

fn authorities_text<S: serde::Serializer>(list: &[Authority], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(Authority::as_str))
}

/// Active HTTP health checks of every endpoint of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckSpec {
    #[serde(serialize_with = "super::display_text")]
    pub method: http::Method,
    pub path: String,
    /// Inclusive ranges of statuses that count as healthy.
    pub expected_statuses: Vec<(u16, u16)>,
    /// The Host header to send; default: the endpoint's address.
    pub host: Option<String>,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Up to this much is added to each interval at random, so that many
    /// proxies do not probe in lockstep.
    #[serde(with = "duration_text")]
    pub jitter: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

impl HealthCheckSpec {
    /// Whether `status` counts as healthy.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

/// Passive ejection (marks from plugins such as the breaker).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassiveSpec {
    /// The first ejection's length; the n-th consecutive one lasts n times this.
    #[serde(with = "duration_text")]
    pub base_ejection_time: Duration,
    #[serde(with = "duration_text")]
    pub max_ejection_time: Duration,
    /// The most endpoints ejected at once, as a share of all (at least one
    /// may always be ejected unless this is 0).
    pub max_ejected_percent: u8,
}

impl Default for PassiveSpec {
    fn default() -> Self {
        Self {
            base_ejection_time: defaults::BASE_EJECTION_TIME,
            max_ejection_time: defaults::MAX_EJECTION_TIME,
            max_ejected_percent: defaults::MAX_EJECTED_PERCENT,
        }
    }
}

/// The raw `[upstreams.NAME]` table's discovery and health parts.
pub(crate) struct RawUpstreamParts<'a> {
    pub name: &'a str,
    pub endpoints: Option<&'a Spanned<Vec<Spanned<RawEndpoint>>>>,
    pub discovery: Option<&'a Spanned<RawDiscovery>>,
    pub health_check: Option<&'a Spanned<RawHealthCheck>>,
    pub passive: Option<&'a Spanned<RawPassive>>,
    /// The span of the whole table, for errors about what is missing.
    pub span: std::ops::Range<usize>,
}

/// What [`validate_upstream`] produces.
pub(crate) struct UpstreamParts {
    /// Some endpoint was written `https://…`: the upstream uses TLS.
    pub https: bool,
    pub endpoints: Vec<EndpointSpec>,
    pub discovery: Discovery,
    pub health_check: Option<HealthCheckSpec>,
    pub passive: PassiveSpec,
}

/// Validates endpoints, discovery, health checks and passive settings.
pub(crate) fn validate_upstream(
    raw: &RawUpstreamParts<'_>,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> UpstreamParts {
    let discovery = raw
        .discovery
        .map_or(Discovery::Static, |d| discovery(d, locate, errors));
    let mut endpoints = Vec::new();
    let mut https = false;
    for endpoint in raw.endpoints.map(|e| e.get_ref().as_slice()).unwrap_or(&[]) {
        let entry = match endpoint.get_ref() {
            RawEndpoint::Address(a) => {
                RawEndpoint::Address(super::address::strip_https(a, &mut https))
            }
            RawEndpoint::Detailed(d) => RawEndpoint::Detailed(RawEndpointDetail {
                address: super::address::strip_https(&d.address, &mut https),
                weight: d.weight,
                zone: d.zone.clone(),
                metadata: d.metadata.clone(),
            }),
        };
        match endpoint_spec(entry) {
            Ok(spec) => endpoints.push(spec),
            Err(message) => errors.push(locate.at(endpoint.span(), message)),
        }
    }
    let empty = raw.endpoints.is_none_or(|e| e.get_ref().is_empty());
    match (&discovery, raw.endpoints) {
        (Discovery::Static, _) if empty => errors.push(locate.at(
            raw.endpoints.map_or(raw.span.clone(), Spanned::span),
            format!("upstream {:?} has no endpoints", raw.name),
        )),
        (Discovery::Static, _) | (_, None) => {}
        (other, Some(list)) if !empty => errors.push(locate.at(
            list.span(),
            format!(
                "upstream {:?} discovers its endpoints by {}: leave `endpoints` out",
                raw.name,
                other.kind()
            ),
        )),
        _ => {}
    }
    UpstreamParts {
        https,
        endpoints,
        discovery,
        health_check: raw.health_check.map(|h| health_check(h, locate, errors)),
        passive: raw
            .passive
            .map_or_else(PassiveSpec::default, |p| passive(p, locate, errors)),
    }
}

fn discovery(
    raw: &Spanned<RawDiscovery>,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Discovery {
    match raw.get_ref() {
        RawDiscovery::Static => Discovery::Static,
        RawDiscovery::Dns {
            name,
            port,
            interval,
            nameservers,
            allow_empty,
        } => {
            if name.is_empty() || name.parse::<Authority>().is_err() || name.contains(':') {
                errors.push(locate.at(raw.span(), format!("invalid DNS name {name:?}")));
            }
            if *port == 0 {
                errors.push(locate.at(raw.span(), "discovery port must not be 0"));
            }
            let mut servers = Vec::new();
            for server in nameservers {
                match server.parse::<SocketAddr>() {
                    Ok(addr) => servers.push(addr),
                    Err(_) => errors.push(locate.at(
                        raw.span(),
                        format!(
                            "invalid nameserver {server:?}: expected ip:port, e.g. \"127.0.0.1:53\""
                        ),
                    )),
                }
            }
            Discovery::Dns {
                name: name.clone(),
                port: *port,
                interval: interval.unwrap_or(defaults::DNS_INTERVAL),
                nameservers: servers,
                allow_empty: *allow_empty,
            }
        }
        RawDiscovery::File { path, allow_empty } => {
            if path.is_empty() {
                errors.push(locate.at(raw.span(), "discovery file path is empty"));
            }
            Discovery::File {
                path: relative_to_config(locate.path, Path::new(path)),
                allow_empty: *allow_empty,
            }
        }
        RawDiscovery::Etcd {
            endpoints,
            prefix,
            allow_empty,
        } => {
            if endpoints.is_empty() {
                errors.push(locate.at(raw.span(), "etcd discovery needs at least one endpoint"));
            }
            let mut list = Vec::new();
            for endpoint in endpoints {
                match super::address::parse_endpoint(endpoint) {
                    Ok(a) => list.push(a),
                    Err(message) => errors.push(locate.at(raw.span(), message)),
                }
            }
            if prefix.is_empty() {
                errors.push(locate.at(raw.span(), "etcd prefix must not be empty"));
            }
            Discovery::Etcd {
                endpoints: list,
                prefix: prefix.clone(),
                allow_empty: *allow_empty,
            }
        }
    }
}

/// A discovery file named relative to the config file's directory.
fn relative_to_config(config: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    config
        .parent()
        .map_or_else(|| path.to_path_buf(), |dir| dir.join(path))
}

fn health_check(
    raw: &Spanned<RawHealthCheck>,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> HealthCheckSpec {
    let h = raw.get_ref();
    let method = match &h.method {
        None => http::Method::GET,
        Some(m) => http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
            .unwrap_or_else(|_| {
                errors.push(locate.at(m.span(), format!("invalid method {:?}", m.get_ref())));
                http::Method::GET
            }),
    };
    let path = match &h.path {
        Some(p)
            if !p.get_ref().starts_with('/')
                || p.get_ref().parse::<http::uri::PathAndQuery>().is_err() =>
        {
            errors.push(locate.at(
                p.span(),
                format!("health check path {:?} must start with '/'", p.get_ref()),
            ));
            String::from("/")
        }
        Some(p) => p.get_ref().clone(),
        None => String::from("/"),
    };
    let mut expected = Vec::new();
    for status in h.expected_statuses.iter().flatten() {
        match status_range(status.get_ref()) {
            Some(range) => expected.push(range),
            None => errors.push(locate.at(
                status.span(),
                "expected status must be 100..=599 or a range such as \"200-399\"",
            )),
        }
    }
    if h.expected_statuses.as_ref().is_some_and(Vec::is_empty) {
        errors.push(locate.at(raw.span(), "expected_statuses must not be empty"));
    }
    if expected.is_empty() {
        expected.push((200, 399));
    }
    if let Some(host) = &h.host
        && (host.get_ref().is_empty() || http::HeaderValue::from_str(host.get_ref()).is_err())
    {
        errors.push(locate.at(host.span(), format!("invalid host {:?}", host.get_ref())));
    }
    let interval = h.interval.unwrap_or(defaults::HEALTH_INTERVAL);
    let timeout = h.timeout.unwrap_or(defaults::HEALTH_TIMEOUT);
    if timeout > interval {
        errors.push(locate.at(
            raw.span(),
            "health_check.timeout must not be longer than its interval",
        ));
    }
    let mut threshold = |value: &Option<Spanned<u32>>, default: u32, what: &str| match value {
        Some(v) if !(1..=100).contains(v.get_ref()) => {
            errors.push(locate.at(
                v.span(),
                format!(
                    "health_check.{what} = {} is out of range 1..=100",
                    v.get_ref()
                ),
            ));
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let healthy_threshold = threshold(
        &h.healthy_threshold,
        defaults::HEALTHY_THRESHOLD,
        "healthy_threshold",
    );
    let unhealthy_threshold = threshold(
        &h.unhealthy_threshold,
        defaults::UNHEALTHY_THRESHOLD,
        "unhealthy_threshold",
    );
    HealthCheckSpec {
        method,
        path,
        expected_statuses: expected,
        host: h.host.as_ref().map(|h| h.get_ref().clone()),
        interval,
        jitter: h.jitter.unwrap_or(Duration::ZERO),
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    }
}

fn status_range(raw: &RawStatus) -> Option<(u16, u16)> {
    let valid = |s: u16| (100..=599).contains(&s);
    let (low, high) = match raw {
        RawStatus::One(s) => (*s, *s),
        RawStatus::Range(text) => {
            let (low, high) = text.split_once('-')?;
            (low.trim().parse().ok()?, high.trim().parse().ok()?)
        }
    };
    (valid(low) && valid(high) && low <= high).then_some((low, high))
}

fn passive(
    raw: &Spanned<RawPassive>,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> PassiveSpec {
    let p = raw.get_ref();
    let base = p.base_ejection_time.unwrap_or(defaults::BASE_EJECTION_TIME);
    let max = p
        .max_ejection_time
        .unwrap_or(defaults::MAX_EJECTION_TIME.max(base));
    if max < base {
        errors.push(locate.at(
            raw.span(),
            "passive.max_ejection_time must not be shorter than base_ejection_time",
        ));
    }
    let percent = match &p.max_ejected_percent {
        Some(v) if *v.get_ref() > 100 => {
            errors.push(locate.at(
                v.span(),
                format!(
                    "passive.max_ejected_percent = {} is out of range 0..=100",
                    v.get_ref()
                ),
            ));
            defaults::MAX_EJECTED_PERCENT
        }
        Some(v) => *v.get_ref(),
        None => defaults::MAX_EJECTED_PERCENT,
    };
    PassiveSpec {
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejected_percent: percent,
    }
}
