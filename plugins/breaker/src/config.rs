//! The breaker's settings, parsed and checked at load.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use weir_sdk::config::Dur;

/// How the breaker trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `failure_threshold` failures in a row (go-resiliency's breaker).
    #[default]
    Consecutive,
    /// Failure rate over the window.
    Rate,
    /// Slow-call rate over the window.
    Slow,
}

/// What the breaker keeps a state machine for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One breaker for the route: open answers 503 locally.
    #[default]
    Route,
    /// One per endpoint: open marks the endpoint unhealthy (passive ejection).
    Endpoint,
}

/// Sliding window kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `window_size` calls.
    #[default]
    Count,
    /// The calls of the last `window_duration`.
    Time,
}

/// Which outcomes count as failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureOn {
    pub connect_failure: bool,
    pub timeout: bool,
    pub reset: bool,
    pub protocol: bool,
    pub server_error: bool,
}

/// The route's settings (as written; [`Config::check`] validates them).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    pub scope: Scope,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub open_timeout: Dur,
    pub half_open_max_probes: u32,
    pub window: WindowKind,
    pub window_size: u32,
    pub window_duration: Dur,
    pub minimum_calls: u32,
    pub failure_rate: f64,
    pub slow_call_duration: Dur,
    pub slow_call_rate: f64,
    pub failure_on: Vec<String>,
    pub failure_statuses: Vec<u16>,
    pub max_ejection_percent: u32,
    #[serde(skip)]
    pub failures: FailureOn,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Consecutive,
            scope: Scope::Route,
            failure_threshold: 5,
            success_threshold: 1,
            open_timeout: Dur::secs(30),
            half_open_max_probes: 1,
            window: WindowKind::Count,
            window_size: 100,
            window_duration: Dur::secs(60),
            minimum_calls: 20,
            failure_rate: 0.5,
            slow_call_duration: Dur::secs(1),
            slow_call_rate: 0.5,
            failure_on: ["connect-failure", "timeout", "reset", "protocol", "5xx"]
                .map(String::from)
                .to_vec(),
            failure_statuses: Vec::new(),
            max_ejection_percent: 50,
            failures: FailureOn::default(),
        }
    }
}

fn rate(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(format!("breaker: {name} must be in (0, 1], not {v}"))
    }
}

impl Config {
    /// Validates the settings and resolves `failure_on`.
    pub fn check(mut self) -> Result<Self, String> {
        let positive = [
            ("failure_threshold", self.failure_threshold),
            ("success_threshold", self.success_threshold),
            ("half_open_max_probes", self.half_open_max_probes),
            ("window_size", self.window_size),
            ("minimum_calls", self.minimum_calls),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("breaker: {name} must be at least 1"));
        }
        if self.window_size > 100_000 {
            return Err("breaker: window_size must be at most 100000".into());
        }
        if self.open_timeout.0.is_zero() || self.window_duration.as_ms() < 100 {
            return Err(
                "breaker: open_timeout must be positive and window_duration ≥ 100ms".into(),
            );
        }
        rate("failure_rate", self.failure_rate)?;
        rate("slow_call_rate", self.slow_call_rate)?;
        if self.max_ejection_percent > 100 {
            return Err("breaker: max_ejection_percent must be at most 100".into());
        }
        let mut f = FailureOn::default();
        for class in &self.failure_on {
            match class.as_str() {
                "connect-failure" => f.connect_failure = true,
                "timeout" => f.timeout = true,
                "reset" => f.reset = true,
                "protocol" => f.protocol = true,
                "5xx" => f.server_error = true,
                other => {
                    return Err(format!(
                        "breaker: unknown failure_on class {other:?}; expected connect-failure, timeout, reset, protocol or 5xx"
                    ));
                }
            }
        }
        if let Some(s) = self
            .failure_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(format!(
                "breaker: {s} in failure_statuses is not an HTTP status"
            ));
        }
        self.failures = f;
        Ok(self)
    }
}
