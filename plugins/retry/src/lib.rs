//! The `retry` policy: runs the layers inside it again when an attempt fails
//! in a retryable way, with exponential back-off and full jitter, honouring
//! `Retry-After`, within a retry budget, only for requests that are safe to
//! repeat (idempotent methods or an `Idempotency-Key`, a replayable body).
//!
//! Which endpoint a retry goes to is the balancer's choice: the proxy hands
//! it the endpoints already tried, and both the shipped balancer and the
//! proxy's default never reuse one while another healthy one exists.
//! Settings: see `README.md`.

extern crate alloc;

mod budget;
mod config;

use alloc::string::String;
use core::time::Duration;

use weir_sdk::{
    ErrorClass, Method, Metric, Plugin, Request, RequestAction, Response, ResponseAction,
};

use budget::Budget;
pub use config::{Config, RawConfig, RetryOn};

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    seen: bool,
    safe: bool,
    retries: u32,
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    retries: Metric,
    budget: Metric,
    unsafe_: Metric,
    exhausted: Metric,
    recovered: Metric,
}

/// Why a failed attempt was not retried (for metrics and status).
#[derive(Debug, Default)]
struct Skipped {
    budget: u64,
    unsafe_: u64,
    exhausted: u64,
    retry_after: u64,
    deadline: u64,
}

/// The plugin.
#[derive(Default)]
pub struct Retry {
    config: Config,
    budget: Budget,
    metrics: Option<Metrics>,
    retries: u64,
    recovered: u64,
    skipped: Skipped,
}

fn idempotent(m: Method) -> bool {
    matches!(
        m,
        Method::Get | Method::Head | Method::Options | Method::Trace | Method::Put | Method::Delete
    )
}

/// `Retry-After` (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date that
/// counts from the host's wall clock (a date already past: retry now).
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.header("retry-after").ok().flatten()?;
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at_ms = weir_sdk::http_date::parse(v)?.saturating_mul(1000);
    Some(Duration::from_millis(
        at_ms.saturating_sub(weir_sdk::host::time_unix_ms()),
    ))
}

impl Retry {
    fn count(&self, pick: impl Fn(&Metrics) -> Metric) {
        if let Some(m) = &self.metrics {
            let _ = pick(m).record(1.0);
        }
    }

    fn retryable(&self, resp: &Response) -> bool {
        let on = self.config.retry_on;
        if let Some(e) = resp.error() {
            return match e {
                ErrorClass::ConnectRefused | ErrorClass::ConnectTimeout => on.connect_failure,
                ErrorClass::Reset | ErrorClass::Protocol
                    if on.refused_stream && !resp.reached_upstream() =>
                {
                    true
                }
                ErrorClass::Reset => on.reset,
                ErrorClass::Timeout => on.timeout,
                ErrorClass::Protocol => on.protocol,
                ErrorClass::None => false,
            };
        }
        let Some(s) = resp.status() else { return false };
        (on.server_error && (500..600).contains(&s))
            || (on.gateway_error && matches!(s, 502..=504))
            || (on.too_many_requests && s == 429)
            || self.config.retry_statuses.contains(&s)
    }

    /// Full jitter: uniform in `[0, min(max, base × 2^(retry-1))]`.
    fn backoff(&self, retry: u32) -> Duration {
        let base = self.config.backoff_base.as_ns();
        let cap = base
            .saturating_mul(1u64 << (retry.saturating_sub(1)).min(32))
            .min(self.config.backoff_max.as_ns());
        Duration::from_nanos(weir_sdk::host::random() % cap.saturating_add(1))
    }
}

#[weir_sdk::plugin]
impl Plugin for Retry {
    type Config = RawConfig;
    type Ctx = Ctx;

    fn configure(&mut self, raw: RawConfig) -> Result<(), String> {
        let c = Config::try_from(raw)?;
        self.budget = Budget::new(
            c.budget_window.as_ns(),
            c.budget_ratio,
            c.budget_min_per_second,
        );
        self.config = c;
        let m = |name: &str| Metric::counter(name).map_err(|e| e.to_string());
        self.metrics = Some(Metrics {
            retries: m("retry_retries_total")?,
            budget: m("retry_budget_exhausted_total")?,
            unsafe_: m("retry_skipped_unsafe_total")?,
            exhausted: m("retry_attempts_exhausted_total")?,
            recovered: m("retry_recovered_total")?,
        });
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> RequestAction {
        if !ctx.seen {
            ctx.seen = true;
            let h = &self.config.idempotency_header;
            ctx.safe = !self.config.idempotent_only
                || idempotent(req.method())
                || req.header(h).ok().flatten().is_some();
            self.budget.request(weir_sdk::host::clock_ns());
        }
        if let Some(t) = self.config.per_try_timeout {
            let _ = req.set_attempt_timeout(t.0);
        }
        RequestAction::Continue
    }

    fn on_response(&mut self, ctx: &mut Ctx, req: &Request, resp: &mut Response) -> ResponseAction {
        if resp.is_local_answer() || !self.retryable(resp) {
            if ctx.retries > 0 && !resp.is_failure() {
                self.recovered += 1;
                self.count(|m| m.recovered);
            }
            return ResponseAction::Pass;
        }
        if ctx.retries + 1 >= self.config.max_attempts {
            self.skipped.exhausted += 1;
            self.count(|m| m.exhausted);
            return ResponseAction::Pass;
        }
        // A non-idempotent request may be repeated only if nothing of it
        // reached the upstream; a body past the replay buffer never.
        let reached = resp.status().is_some() || resp.reached_upstream();
        let replayable = req.body_replayable().unwrap_or(false);
        if (!ctx.safe && reached) || !replayable {
            self.skipped.unsafe_ += 1;
            self.count(|m| m.unsafe_);
            return ResponseAction::Pass;
        }
        let delay = match retry_after(resp) {
            Some(d) if d > self.config.retry_after_max.0 => {
                self.skipped.retry_after += 1;
                return ResponseAction::Pass;
            }
            Some(d) => d,
            None => self.backoff(ctx.retries + 1),
        };
        if req
            .deadline_remaining()
            .ok()
            .flatten()
            .is_some_and(|left| left <= delay)
        {
            self.skipped.deadline += 1;
            return ResponseAction::Pass;
        }
        if !self.budget.try_retry(weir_sdk::host::clock_ns()) {
            self.skipped.budget += 1;
            self.count(|m| m.budget);
            return ResponseAction::Pass;
        }
        ctx.retries += 1;
        self.retries += 1;
        self.count(|m| m.retries);
        ResponseAction::Retry(delay)
    }

    fn on_end(&mut self, _: Ctx, _: &weir_sdk::End) {}

    /// The retry budget's window carries over a hot swap, so a new version
    /// neither starts with a full budget in an outage nor forgets the
    /// traffic that earns it.
    fn snapshot(&self) -> alloc::vec::Vec<u8> {
        let (requests, retries) = self.budget.totals(weir_sdk::host::clock_ns());
        serde_json::to_vec(&serde_json::json!({ "requests": requests, "retries": retries }))
            .unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Snapshot {
            requests: u64,
            retries: u64,
        }
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| format!("retry: bad snapshot: {e}"))?;
        self.budget
            .carry(snap.requests, snap.retries, weir_sdk::host::clock_ns());
        Ok(())
    }

    fn status(&self) -> String {
        let now = weir_sdk::host::clock_ns();
        let (requests, retries) = self.budget.totals(now);
        serde_json::json!({
            "max_attempts": self.config.max_attempts,
            "budget": {
                "requests": requests,
                "retries": retries,
                "available": self.budget.available(now).max(0.0).floor(),
            },
            "retries": self.retries,
            "recovered": self.recovered,
            "skipped": {
                "budget": self.skipped.budget,
                "unsafe": self.skipped.unsafe_,
                "attempts_exhausted": self.skipped.exhausted,
                "retry_after_too_long": self.skipped.retry_after,
                "deadline": self.skipped.deadline,
            },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests;
