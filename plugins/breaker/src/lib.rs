//! The `breaker` policy: a circuit breaker that trips on consecutive
//! failures, a failure rate or a slow-call rate over a sliding window, and
//! after `open_timeout` lets a limited number of probes through (half-open);
//! any probe failure opens it again.
//!
//! Scope `route`: an open breaker answers locally — `503`, `Retry-After`
//! with the open time left, `Proxy-Status`. Scope `endpoint`: one breaker per
//! endpoint; an open one is marked unhealthy through the host
//! (`endpoint_mark`, passive ejection) so the balancer avoids it, capped at
//! `max_ejection_percent` of the endpoints seen. State is visible in
//! `status()`, transitions are metrics, and state survives a hot reload
//! (`snapshot`/`restore`). Settings: see `README.md`.

extern crate alloc;

mod config;
mod state;
mod window;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use weir_sdk::{
    Answer, End, ErrorClass, Metric, Plugin, Request, RequestAction, Response, ResponseAction,
};

pub use config::{Config, FailureOn, Mode, Scope, WindowKind};
use state::{Admit, Breaker, Saved, State, Transition};

/// Most endpoints tracked in endpoint scope (ids of removed endpoints are
/// forgotten, closed ones first, past it).
const ENDPOINTS_MAX: usize = 1024;

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    probe: bool,
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    opened: Metric,
    half_opened: Metric,
    closed: Metric,
    rejected: Metric,
    state: Metric,
    ejected: Metric,
    ejection_skipped: Metric,
}

/// The plugin.
#[derive(Default)]
pub struct CircuitBreaker {
    config: Config,
    route: Breaker,
    endpoints: BTreeMap<u32, Breaker>,
    metrics: Option<Metrics>,
    rejected: u64,
    ejection_skipped: u64,
}

/// The snapshot: each breaker's saved part (`None` = the route's).
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    route: Saved,
    endpoints: Vec<(u32, Saved)>,
    #[serde(default)]
    rejected: u64,
    #[serde(default)]
    ejection_skipped: u64,
}

fn now() -> u64 {
    weir_sdk::host::clock_ns()
}

impl CircuitBreaker {
    fn failed(&self, resp: &Response) -> bool {
        let f = self.config.failures;
        if let Some(e) = resp.error() {
            return match e {
                ErrorClass::ConnectRefused | ErrorClass::ConnectTimeout => f.connect_failure,
                ErrorClass::Timeout => f.timeout,
                ErrorClass::Reset => f.reset,
                ErrorClass::Protocol => f.protocol,
                ErrorClass::None => false,
            };
        }
        resp.status().is_some_and(|s| {
            (f.server_error && (500..600).contains(&s)) || self.config.failure_statuses.contains(&s)
        })
    }

    fn note(&self, t: Option<Transition>) {
        let (Some(t), Some(m)) = (t, &self.metrics) else {
            return;
        };
        let metric = match t {
            Transition::Opened => m.opened,
            Transition::HalfOpened => m.half_opened,
            Transition::Closed => m.closed,
        };
        let _ = metric.record(1.0);
        let _ = weir_sdk::host::log(weir_sdk::LogLevel::Info, &format!("circuit breaker {t:?}"));
    }

    fn gauges(&self) {
        let Some(m) = &self.metrics else { return };
        let code = match self.route.state() {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
        };
        let _ = m.state.record(code);
        let _ = m.ejected.record(self.ejected_now() as f64);
    }

    fn ejected_now(&self) -> usize {
        self.endpoints
            .values()
            .filter(|b| b.state() == State::Open)
            .count()
    }

    fn open_answer(retry_after_ms: u64) -> Answer {
        Answer::new(503)
            .header(
                "retry-after",
                &format!("{}", retry_after_ms.div_ceil(1000).max(1)),
            )
            .proxy_status("destination_unavailable", "circuit breaker open")
            .header("content-type", "text/plain")
            .body("503 service unavailable: circuit breaker open\n")
    }

    /// Endpoint scope: records the outcome on the endpoint's breaker and
    /// marks or unmarks the endpoint on transitions.
    fn record_endpoint(&mut self, id: u32, failed: bool, slow: bool) {
        let now = now();
        if !self.endpoints.contains_key(&id) && self.endpoints.len() >= ENDPOINTS_MAX {
            let victim = self
                .endpoints
                .iter()
                .filter(|(_, b)| b.state() == State::Closed)
                .min_by_key(|(_, b)| b.saved.since_ns)
                .map(|(id, _)| *id);
            if let Some(v) = victim {
                self.endpoints.remove(&v);
            }
        }
        let known = self.endpoints.len() + usize::from(!self.endpoints.contains_key(&id));
        let ejected = self.ejected_now();
        let c = &self.config;
        let b = self
            .endpoints
            .entry(id)
            .or_insert_with(|| Breaker::new(c, now));
        // After the open time the mark has expired: the next outcome is a probe.
        let half = b.tick(now);
        let probe = b.state() == State::HalfOpen;
        let was_open_or_half = b.state() != State::Closed;
        let mut t = b.record(c, now, failed, slow, probe);
        if t == Some(Transition::Opened) && !was_open_or_half {
            // A fresh ejection: respect the cap on ejected endpoints.
            let cap = known * c.max_ejection_percent as usize / 100;
            if ejected + 1 > cap {
                b.saved.state = State::Closed;
                b.saved.opened -= 1;
                b.reset_counts();
                t = None;
                self.ejection_skipped += 1;
                if let Some(m) = &self.metrics {
                    let _ = m.ejection_skipped.record(1.0);
                }
            }
        }
        let open_ms = c.open_timeout.as_ms();
        match t {
            Some(Transition::Opened) => {
                let _ = weir_sdk::host::endpoint_mark(id, open_ms);
            }
            Some(Transition::Closed) => {
                let _ = weir_sdk::host::endpoint_mark(id, 0);
            }
            _ => {}
        }
        self.note(half);
        self.note(t);
    }
}

#[weir_sdk::plugin]
impl Plugin for CircuitBreaker {
    type Config = Config;
    type Ctx = Ctx;

    fn configure(&mut self, config: Config) -> Result<(), String> {
        let config = config.check()?;
        self.route = Breaker::new(&config, now());
        self.endpoints.clear();
        self.config = config;
        let c = |name: &str| Metric::counter(name).map_err(|e| e.to_string());
        let g = |name: &str| Metric::gauge(name).map_err(|e| e.to_string());
        self.metrics = Some(Metrics {
            opened: c("breaker_opened_total")?,
            half_opened: c("breaker_half_opened_total")?,
            closed: c("breaker_closed_total")?,
            rejected: c("breaker_rejected_total")?,
            state: g("breaker_state")?,
            ejected: g("breaker_ejected_endpoints")?,
            ejection_skipped: c("breaker_ejection_skipped_total")?,
        });
        self.gauges();
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut Ctx, _: &mut Request) -> RequestAction {
        if self.config.scope == Scope::Endpoint {
            return RequestAction::Continue;
        }
        let (admit, t) = self.route.admit(&self.config, now());
        self.note(t);
        let action = match admit {
            Admit::Allowed => RequestAction::Continue,
            Admit::Probe => {
                ctx.probe = true;
                RequestAction::Continue
            }
            Admit::Rejected { retry_after_ms } => {
                self.rejected += 1;
                if let Some(m) = &self.metrics {
                    let _ = m.rejected.record(1.0);
                }
                RequestAction::Answer(Self::open_answer(retry_after_ms))
            }
        };
        self.gauges();
        action
    }

    fn on_response(&mut self, ctx: &mut Ctx, _: &Request, resp: &mut Response) -> ResponseAction {
        // Inner plugins' answers (a throttle's 429, a cache hit) say nothing
        // about the upstream.
        if resp.is_local_answer() {
            return ResponseAction::Pass;
        }
        let failed = self.failed(resp);
        let slow = resp.latency() >= self.config.slow_call_duration.0;
        match self.config.scope {
            Scope::Route => {
                let probe = core::mem::take(&mut ctx.probe);
                let t = self.route.record(&self.config, now(), failed, slow, probe);
                self.note(t);
            }
            Scope::Endpoint => {
                if let Some(id) = resp.endpoint() {
                    self.record_endpoint(id, failed, slow);
                }
            }
        }
        self.gauges();
        ResponseAction::Pass
    }

    fn on_end(&mut self, ctx: Ctx, _: &End) {
        // A probe that never got an outcome (client gone, inner answer).
        if ctx.probe {
            self.route.release_probe();
        }
    }

    fn status(&self) -> String {
        let now = now();
        let mut s = serde_json::json!({
            "scope": self.config.scope,
            "mode": self.config.mode,
            "rejected": self.rejected,
        });
        match self.config.scope {
            Scope::Route => {
                if let (Some(obj), serde_json::Value::Object(b)) =
                    (s.as_object_mut(), self.route.status(now))
                {
                    obj.extend(b);
                }
            }
            Scope::Endpoint => {
                let eps: serde_json::Map<String, serde_json::Value> = self
                    .endpoints
                    .iter()
                    .map(|(id, b)| (format!("{id}"), b.status(now)))
                    .collect();
                s["endpoints"] = eps.into();
                s["ejected"] = self.ejected_now().into();
                s["ejection_skipped"] = self.ejection_skipped.into();
            }
        }
        s.to_string()
    }

    fn snapshot(&self) -> Vec<u8> {
        let snap = Snapshot {
            route: self.route.saved,
            endpoints: self
                .endpoints
                .iter()
                .map(|(id, b)| (*id, b.saved))
                .collect(),
            rejected: self.rejected,
            ejection_skipped: self.ejection_skipped,
        };
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| format!("breaker: bad snapshot: {e}"))?;
        let now = now();
        // Windows start empty; states, counts and open times carry over.
        self.route.saved = snap.route;
        self.rejected = snap.rejected;
        self.ejection_skipped = snap.ejection_skipped;
        if self.config.scope == Scope::Endpoint {
            for (id, saved) in snap.endpoints.into_iter().take(ENDPOINTS_MAX) {
                let mut b = Breaker::new(&self.config, now);
                b.saved = saved;
                self.endpoints.insert(id, b);
            }
        }
        self.gauges();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
