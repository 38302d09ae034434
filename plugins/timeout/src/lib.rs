//! The `timeout` policy: an overall deadline for the request (retries
//! included) and a per-try timeout for each attempt. A request that runs out
//! gets `504 Gateway Timeout` with `Proxy-Status`; the budget left is passed
//! upstream in a header so services can propagate the deadline.
//!
//! The deadline is set with the host's request deadline (`deadline_set`), so
//! the proxy caps every attempt at what is left of it, whichever layer runs
//! the attempt. Settings: see `README.md`.

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use weir_sdk::config::Dur;
use weir_sdk::{
    Answer, End, ErrorClass, Metric, Plugin, Request, RequestAction, Response, ResponseAction,
};

extern crate alloc;

/// The route's settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Overall deadline of the request, retries included; `null` for none.
    pub deadline: Option<Dur>,
    /// Timeout of each attempt; `null` for none.
    pub per_try: Option<Dur>,
    /// Request header carrying the budget left, in milliseconds; `null` for none.
    pub header: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            deadline: Some(Dur::secs(15)),
            per_try: None,
            header: Some("x-weir-budget-ms".into()),
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), String> {
        if self.deadline.is_some_and(|d| d.0.is_zero())
            || self.per_try.is_some_and(|d| d.0.is_zero())
        {
            return Err("timeout: deadline and per_try must be positive (or null)".into());
        }
        if let Some(h) = &self.header {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!("timeout: header {h:?} is not a valid header name"));
            }
        }
        Ok(())
    }
}

/// Per-request state: when the request started.
#[derive(Debug, Default)]
pub struct Ctx {
    start_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    deadline: Metric,
    per_try: Metric,
}

/// The plugin.
#[derive(Default)]
pub struct Timeout {
    config: Config,
    metrics: Option<Metrics>,
    in_flight: u64,
    deadline_exceeded: u64,
    per_try_exceeded: u64,
}

/// `n` in decimal, written into `buf` (no allocation on the request path).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[i..]).unwrap_or("0")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Timeout {
    /// What is left of the deadline, by this plugin's clock or the host's
    /// deadline (which other layers may have shortened).
    fn remaining(&self, ctx: &Ctx, req: &Request) -> Option<Duration> {
        let own = self.config.deadline.map(|d| {
            let spent = weir_sdk::host::clock_ns().saturating_sub(ctx.start_ns);
            d.0.saturating_sub(Duration::from_nanos(spent))
        });
        let host = req.deadline_remaining().ok().flatten();
        match (own, host) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn answer(details: &str) -> Answer {
        Answer::new(504)
            .proxy_status("http_response_timeout", details)
            .header("content-type", "text/plain")
            .body(format!("504 gateway timeout: {details}\n"))
    }
}

#[weir_sdk::plugin]
impl Plugin for Timeout {
    type Config = Config;
    type Ctx = Ctx;

    fn configure(&mut self, config: Config) -> Result<(), String> {
        config.validate()?;
        self.config = config;
        self.metrics = Some(Metrics {
            deadline: Metric::counter("timeout_deadline_exceeded_total")
                .map_err(|e| e.to_string())?,
            per_try: Metric::counter("timeout_per_try_exceeded_total")
                .map_err(|e| e.to_string())?,
        });
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> RequestAction {
        if ctx.start_ns == 0 {
            ctx.start_ns = weir_sdk::host::clock_ns();
            self.in_flight += 1;
            if let Some(d) = self.config.deadline {
                let _ = req.set_deadline(d.0);
            }
        }
        let remaining = self.remaining(ctx, req);
        if remaining.is_some_and(|r| r.is_zero()) {
            self.deadline_exceeded += 1;
            if let Some(m) = self.metrics {
                let _ = m.deadline.record(1.0);
            }
            return RequestAction::Answer(Self::answer("request deadline exceeded"));
        }
        if let Some(t) = self.config.per_try {
            let _ = req.set_attempt_timeout(t.0);
        }
        let budget = match (remaining, self.config.per_try) {
            (Some(r), Some(t)) => Some(r.min(t.0)),
            (r, t) => r.or(t.map(Dur::get)),
        };
        if let (Some(h), Some(b)) = (&self.config.header, budget) {
            let mut buf = [0u8; 20];
            let _ = req.set_header(h, decimal(ms(b), &mut buf));
        }
        RequestAction::Continue
    }

    fn on_response(&mut self, ctx: &mut Ctx, req: &Request, resp: &mut Response) -> ResponseAction {
        if resp.error() != Some(ErrorClass::Timeout) {
            return ResponseAction::Pass;
        }
        let out_of_deadline = self.remaining(ctx, req).is_some_and(|r| r.is_zero());
        let (details, metric) = if out_of_deadline {
            self.deadline_exceeded += 1;
            (
                "request deadline exceeded",
                self.metrics.map(|m| m.deadline),
            )
        } else {
            self.per_try_exceeded += 1;
            (
                "upstream attempt timed out",
                self.metrics.map(|m| m.per_try),
            )
        };
        if let Some(m) = metric {
            let _ = m.record(1.0);
        }
        ResponseAction::Replace(Self::answer(details))
    }

    fn on_end(&mut self, ctx: Ctx, _: &End) {
        if ctx.start_ns != 0 {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    fn status(&self) -> String {
        serde_json::json!({
            "deadline_ms": self.config.deadline.map(Dur::as_ms),
            "per_try_ms": self.config.per_try.map(Dur::as_ms),
            "header": self.config.header,
            "in_flight": self.in_flight,
            "deadline_exceeded": self.deadline_exceeded,
            "per_try_exceeded": self.per_try_exceeded,
        })
        .to_string()
    }

    /// The two exceeded counts carry over a hot swap. `in_flight` does not:
    /// requests in flight stay with the old version and end there.
    fn snapshot(&self) -> alloc::vec::Vec<u8> {
        let mut bytes = self.deadline_exceeded.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.per_try_exceeded.to_le_bytes());
        bytes
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (Some(deadline), Some(per_try)) = (bytes.get(0..8), bytes.get(8..16)) else {
            return Err(format!(
                "timeout: a snapshot of {} bytes, expected 16",
                bytes.len()
            ));
        };
        let number = |b: &[u8]| {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            u64::from_le_bytes(le)
        };
        self.deadline_exceeded = number(deadline);
        self.per_try_exceeded = number(per_try);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
