//! The retry policy's settings, parsed and checked at load.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use weir_sdk::config::Dur;

/// Outcome classes a route may retry on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub reset: bool,
    pub timeout: bool,
    pub protocol: bool,
    pub server_error: bool,
    pub gateway_error: bool,
    pub too_many_requests: bool,
}

/// The route's settings, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub max_attempts: u32,
    pub per_try_timeout: Option<Dur>,
    pub retry_on: Vec<String>,
    pub retry_statuses: Vec<u16>,
    pub backoff_base: Dur,
    pub backoff_max: Dur,
    pub retry_after_max: Dur,
    pub budget_ratio: f64,
    pub budget_window: Dur,
    pub budget_min_per_second: f64,
    pub idempotent_only: bool,
    pub idempotency_header: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            per_try_timeout: None,
            retry_on: vec![
                "connect-failure".into(),
                "reset".into(),
                "gateway-error".into(),
            ],
            retry_statuses: Vec::new(),
            backoff_base: Dur::ms(25),
            backoff_max: Dur::ms(250),
            retry_after_max: Dur::secs(5),
            budget_ratio: 0.2,
            budget_window: Dur::secs(10),
            budget_min_per_second: 10.0,
            idempotent_only: true,
            idempotency_header: "idempotency-key".into(),
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub max_attempts: u32,
    pub per_try_timeout: Option<Dur>,
    pub retry_on: RetryOn,
    pub retry_statuses: Vec<u16>,
    pub backoff_base: Dur,
    pub backoff_max: Dur,
    pub retry_after_max: Dur,
    pub budget_ratio: f64,
    pub budget_window: Dur,
    pub budget_min_per_second: f64,
    pub idempotent_only: bool,
    pub idempotency_header: String,
}

impl Default for Config {
    fn default() -> Self {
        // Before `configure` nothing is retried.
        Self {
            max_attempts: 1,
            per_try_timeout: None,
            retry_on: RetryOn::default(),
            retry_statuses: Vec::new(),
            backoff_base: Dur::ms(25),
            backoff_max: Dur::ms(250),
            retry_after_max: Dur::secs(5),
            budget_ratio: 0.2,
            budget_window: Dur::secs(10),
            budget_min_per_second: 10.0,
            idempotent_only: true,
            idempotency_header: "idempotency-key".into(),
        }
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Self, String> {
        if !(1..=16).contains(&r.max_attempts) {
            return Err(format!(
                "retry: max_attempts must be between 1 and 16 (the proxy's cap), not {}",
                r.max_attempts
            ));
        }
        let mut on = RetryOn::default();
        for class in &r.retry_on {
            match class.as_str() {
                "connect-failure" => on.connect_failure = true,
                "refused-stream" => on.refused_stream = true,
                "reset" => on.reset = true,
                "timeout" => on.timeout = true,
                "protocol" => on.protocol = true,
                "5xx" => on.server_error = true,
                "gateway-error" => on.gateway_error = true,
                "429" => on.too_many_requests = true,
                other => {
                    return Err(format!(
                        "retry: unknown retry_on class {other:?}; expected connect-failure, refused-stream, reset, timeout, protocol, 5xx, gateway-error or 429"
                    ));
                }
            }
        }
        if let Some(s) = r.retry_statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(format!(
                "retry: {s} in retry_statuses is not an HTTP status"
            ));
        }
        if r.per_try_timeout.is_some_and(|t| t.0.is_zero()) {
            return Err("retry: per_try_timeout must be positive (or null)".into());
        }
        if r.backoff_base.0.is_zero() || r.backoff_max < r.backoff_base {
            return Err("retry: backoff_base must be positive and at most backoff_max".into());
        }
        if !(r.budget_ratio.is_finite() && r.budget_ratio >= 0.0) {
            return Err("retry: budget_ratio must be a number ≥ 0".into());
        }
        if !(r.budget_min_per_second.is_finite() && r.budget_min_per_second >= 0.0) {
            return Err("retry: budget_min_per_second must be a number ≥ 0".into());
        }
        if r.budget_window.as_ms() < 10 {
            return Err("retry: budget_window must be at least 10ms".into());
        }
        if r.idempotency_header.is_empty() {
            return Err("retry: idempotency_header must not be empty".into());
        }
        Ok(Self {
            max_attempts: r.max_attempts,
            per_try_timeout: r.per_try_timeout,
            retry_on: on,
            retry_statuses: r.retry_statuses,
            backoff_base: r.backoff_base,
            backoff_max: r.backoff_max,
            retry_after_max: r.retry_after_max,
            budget_ratio: r.budget_ratio,
            budget_window: r.budget_window,
            budget_min_per_second: r.budget_min_per_second,
            idempotent_only: r.idempotent_only,
            idempotency_header: r.idempotency_header.to_ascii_lowercase(),
        })
    }
}
