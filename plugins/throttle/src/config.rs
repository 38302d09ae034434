//! The throttle's settings, parsed and checked at load.

use alloc::format;
use alloc::string::{String, ToString};

use weir_sdk::config::Dur;

/// What requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// One limit for the whole route.
    Route,
    /// One limit per value of this request header (lower-case name).
    Header(String),
    /// One limit per client IP address.
    Client,
}

/// The route's settings, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Sustained requests per second (token refill rate); `null`: no rate limit.
    pub rate: Option<f64>,
    /// Bucket size (requests allowed at once after idling); default `max(rate, 1)`.
    pub burst: Option<f64>,
    /// Most requests in flight; `null`: no concurrency limit.
    pub max_concurrent: Option<u32>,
    /// `"route"`, `"client"` or `"header:NAME"`.
    pub key: String,
    /// Most keys tracked at once.
    pub max_keys: usize,
    /// Count through the host's shared counters (several proxies, one limit).
    pub global: bool,
    /// Window of the global rate count.
    pub global_window: Dur,
    /// Name of the shared counters (routes with the same name share limits).
    pub name: String,
    /// When the shared store cannot be reached: `"local"` (or `true`): a
    /// local limit, the global one divided by `expected_proxies`;
    /// `"unlimited"`: allow everything; `"closed"` (or `false`): reject.
    pub fail_open: RawFallback,
    /// How many proxies share the global limit: the local fallback takes
    /// this share of it.
    pub expected_proxies: u32,
}

/// `fail_open` as written: a boolean (the old form) or a word.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum RawFallback {
    Bool(bool),
    Word(String),
}

/// What global mode does while the shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// A local limit: the global rate and concurrency ÷ the expected
    /// number of proxies.
    Local,
    /// No limit at all (chosen explicitly).
    Unlimited,
    /// Reject.
    Closed,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            rate: None,
            burst: None,
            max_concurrent: None,
            key: "route".into(),
            max_keys: 10_000,
            global: false,
            global_window: Dur::secs(1),
            name: "throttle".into(),
            fail_open: RawFallback::Bool(true),
            expected_proxies: 1,
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub rate: Option<f64>,
    pub burst: f64,
    pub max_concurrent: Option<u32>,
    pub key: KeyBy,
    pub max_keys: usize,
    pub global: bool,
    pub window_ms: u64,
    pub name: String,
    pub fallback: Fallback,
    pub expected_proxies: u32,
}

impl Default for Config {
    fn default() -> Self {
        // Only used before `configure`; every limit off.
        Self {
            rate: None,
            burst: 1.0,
            max_concurrent: None,
            key: KeyBy::Route,
            max_keys: 1,
            global: false,
            window_ms: 1000,
            name: "throttle".into(),
            fallback: Fallback::Local,
            expected_proxies: 1,
        }
    }
}

impl Config {
    /// The local limit global mode falls back to: this proxy's share.
    pub fn local_share(&self) -> Self {
        let share = f64::from(self.expected_proxies.max(1));
        Self {
            rate: self.rate.map(|r| r / share),
            burst: (self.burst / share).max(1.0),
            max_concurrent: self
                .max_concurrent
                .map(|m| (m / self.expected_proxies.max(1)).max(1)),
            global: false,
            ..self.clone()
        }
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Self, String> {
        if let Some(rate) = r.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(format!(
                "throttle: rate must be a positive number, not {rate}"
            ));
        }
        let burst = r.burst.unwrap_or_else(|| r.rate.unwrap_or(1.0).max(1.0));
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(format!("throttle: burst must be at least 1, not {burst}"));
        }
        if r.max_concurrent == Some(0) {
            return Err("throttle: max_concurrent must be at least 1".into());
        }
        if r.rate.is_none() && r.max_concurrent.is_none() {
            return Err("throttle: set rate, max_concurrent or both".into());
        }
        let key = match r.key.as_str() {
            "route" => KeyBy::Route,
            "client" => KeyBy::Client,
            k => match k.strip_prefix("header:") {
                Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => {
                    KeyBy::Header(h.to_ascii_lowercase())
                }
                _ => {
                    return Err(format!(
                        "throttle: key {k:?} must be \"route\", \"client\" or \"header:NAME\""
                    ));
                }
            },
        };
        if r.max_keys == 0 {
            return Err("throttle: max_keys must be at least 1".into());
        }
        let window_ms = r.global_window.as_ms();
        if r.global && window_ms == 0 {
            return Err("throttle: global_window must be positive".into());
        }
        if r.name.is_empty() {
            return Err("throttle: name must not be empty".into());
        }
        let fallback = match &r.fail_open {
            RawFallback::Bool(true) => Fallback::Local,
            RawFallback::Bool(false) => Fallback::Closed,
            RawFallback::Word(w) => match w.as_str() {
                "local" => Fallback::Local,
                "unlimited" => Fallback::Unlimited,
                "closed" => Fallback::Closed,
                other => {
                    return Err(format!(
                        "throttle: fail_open {other:?} must be \"local\", \"unlimited\" or \"closed\" (or true/false)"
                    ));
                }
            },
        };
        if r.expected_proxies == 0 {
            return Err("throttle: expected_proxies must be at least 1".into());
        }
        Ok(Self {
            rate: r.rate,
            burst,
            max_concurrent: r.max_concurrent,
            key,
            max_keys: r.max_keys,
            global: r.global,
            window_ms,
            name: r.name.to_string(),
            fallback,
            expected_proxies: r.expected_proxies,
        })
    }
}
