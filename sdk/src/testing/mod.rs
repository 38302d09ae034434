//! A fake host for unit-testing plugins natively, without wasm: a virtual
//! clock, deterministic random numbers, endpoints with stats, scripted
//! upstream outcomes, and a record of everything the plugin did (answers,
//! headers, timeouts, deadlines, metrics, endpoint marks, shared counters,
//! logs). Off wasm32 every host call of the SDK goes to this fake host, so
//! the code under test is exactly the plugin's code.
//!
//! ```
//! use std::time::Duration;
//! use weir_sdk::testing::{Harness, Outcome, TestRequest};
//! use weir_sdk::{Answer, Plugin, Request, RequestAction};
//!
//! /// Answers 429 to every second request within a second.
//! #[derive(Default)]
//! struct EveryOther { last_ns: u64 }
//!
//! #[weir_sdk::plugin]
//! impl Plugin for EveryOther {
//!     fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
//!         let now = weir_sdk::host::clock_ns();
//!         if self.last_ns != 0 && now - self.last_ns < 1_000_000_000 {
//!             return RequestAction::Answer(Answer::new(429));
//!         }
//!         self.last_ns = now;
//!         RequestAction::Continue
//!     }
//! }
//!
//! let mut h = Harness::<EveryOther>::new("").unwrap();
//! h.advance(Duration::from_secs(5));
//! let first = h.run(TestRequest::get("/"), &[Outcome::status(200)]);
//! assert_eq!(first.status(), Some(200));
//! let second = h.run(TestRequest::get("/"), &[]);
//! assert_eq!(second.status(), Some(429));
//! assert!(second.local);
//! h.advance(Duration::from_secs(1));
//! assert_eq!(h.run(TestRequest::get("/"), &[]).status(), Some(200));
//! ```
//!
//! [`Harness::run`] drives one request the way the proxy's chain drives a
//! plugin (with the plugin as the only layer): `on_request` (once: a retry
//! re-runs only what is inside the plugin), `select` if endpoints are set
//! (or the host's default, round robin over untried endpoints first), the
//! next scripted outcome (a slower outcome than the attempt's timeout or
//! deadline becomes a timeout), `on_response`, retries with their delays on
//! the virtual clock, and `on_end`.
//!
//! Like the host, the harness calls only the hooks the build exports — the
//! ones the `#[weir_sdk::plugin]` impl defines. A hook written outside that
//! impl (or a plugin type without the attribute) is never called, here or
//! in the proxy. The single-hook
//! methods ([`Harness::on_request`], [`Harness::select`],
//! [`Harness::on_response`], [`Harness::on_end`]) drive any order by hand,
//! e.g. many requests in flight at once.

pub(crate) mod fake;
#[cfg(test)]
mod tests;
mod types;

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use weir_abi::{ErrorClass, LogLevel, Phase, status};

use crate::Plugin;
use crate::export::{Exported, Runtime, has_hook};
use fake::{FakeHost, Staged};

pub use fake::EndpointFacts;
pub use types::{
    Flight, Outcome, RequestResult, ResponseResult, Run, RunAttempt, TestAnswer, TestRequest,
};

/// `n` healthy endpoints with ids `0..n` (the ids the proxy gives an
/// upstream's `n` static endpoints, in config order), weight 1, no load.
/// [`Harness::set_endpoints`] gives each the address
/// `endpoint-{id}.test:80` unless [`Harness::describe_endpoint`] says otherwise.
pub fn endpoints(n: u32) -> Vec<crate::Endpoint> {
    (0..n)
        .map(|id| crate::Endpoint {
            id,
            weight: 1,
            healthy: true,
            ..Default::default()
        })
        .collect()
}

/// A plugin instance on a fake host. Create one per test; several may live
/// on one thread (each keeps its own host state).
pub struct Harness<P: Plugin + Exported> {
    rt: Runtime<P>,
    host: FakeHost,
    next_id: u64,
    endpoints: Vec<crate::Endpoint>,
    rr: usize,
}

impl<P: Plugin + Exported> core::fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Harness")
            .field("now_ns", &self.host.now_ns)
            .finish_non_exhaustive()
    }
}

impl<P: Plugin + Exported> Harness<P> {
    /// A fresh instance configured with `config_json` (`""` for none), at
    /// virtual time 1 s (so that "time 0" never looks like "never"), with
    /// random seed 1. `Err` is the plugin's rejection message.
    pub fn new(config_json: &str) -> Result<Self, String> {
        Self::with_seed(config_json, 1)
    }

    /// Like [`Harness::new`] with another random seed.
    pub fn with_seed(config_json: &str, seed: u64) -> Result<Self, String> {
        let mut h = Self {
            rt: Runtime::default(),
            host: FakeHost {
                now_ns: 1_000_000_000,
                rng: seed,
                ..FakeHost::default()
            },
            next_id: 1,
            endpoints: Vec::new(),
            rr: 0,
        };
        h.host.input = config_json.as_bytes().to_vec();
        let code = h.call(Phase::Configure, |rt| rt.configure());
        h.host.input.clear();
        if code == status::OK {
            Ok(h)
        } else {
            Err(crate::config::Rejection::parse(&h.host.output).to_string())
        }
    }

    /// Whether the build exports `hook` (the host calls only those).
    fn exports(hook: &str) -> bool {
        has_hook(P::HOOKS, hook)
    }

    /// Runs `f` with this harness's host installed as the thread's fake host.
    fn call<R>(&mut self, phase: Phase, f: impl FnOnce(&mut Runtime<P>) -> R) -> R {
        self.host.phase = Some(phase);
        self.host.output.clear();
        fake::swap(&mut self.host);
        let r = f(&mut self.rt);
        fake::swap(&mut self.host);
        self.host.phase = None;
        r
    }

    // ---- the world ----

    /// Moves the virtual clock forward.
    pub fn advance(&mut self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.host.now_ns = self.host.now_ns.saturating_add(ns);
    }

    /// The virtual clock (what `host::clock_ns` returns).
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.host.now_ns)
    }

    /// The upstream's endpoints. `select` is offered the healthy ones (all,
    /// if none is healthy), like the proxy does. Each gets the address
    /// `endpoint-{id}.test:80`, no zone and no metadata, unless
    /// [`Harness::describe_endpoint`] described it.
    pub fn set_endpoints(&mut self, endpoints: Vec<crate::Endpoint>) {
        for e in &endpoints {
            self.host
                .endpoint_facts
                .entry(e.id)
                .or_insert_with(|| EndpointFacts::new(alloc::format!("endpoint-{}.test:80", e.id)));
        }
        self.endpoints = endpoints;
    }

    /// Sets what the config would say about endpoint `id`: its address,
    /// zone and metadata (what [`crate::Endpoint::address`],
    /// [`crate::Endpoint::zone`] and [`crate::Endpoint::metadata`] return).
    pub fn describe_endpoint(&mut self, id: u32, facts: EndpointFacts) {
        self.host.endpoint_facts.insert(id, facts);
    }

    /// `n` healthy endpoints with ids `0..n`, weight 1 (see [`endpoints`]).
    pub fn endpoints(n: u32) -> Vec<crate::Endpoint> {
        endpoints(n)
    }

    /// The plugin itself, to inspect its state.
    pub fn plugin(&self) -> &P {
        self.rt.plugin()
    }

    // ---- what the plugin did ----

    /// A metric's value: a counter's total, a gauge's last value, a
    /// histogram's sum. `None` if the plugin never defined it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.host
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Every value a histogram observed.
    pub fn observations(&self, name: &str) -> &[f64] {
        self.host
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map_or(&[], |m| &m.observations)
    }

    /// What the plugin logged, oldest first.
    pub fn logs(&self) -> &[(LogLevel, String)] {
        &self.host.logs
    }

    /// Endpoint marks (`id`, unhealthy for) left since the last call, oldest
    /// first, the way the proxy's core drains them.
    pub fn take_marks(&mut self) -> Vec<(u32, Duration)> {
        self.host
            .marks
            .drain(..)
            .map(|(id, ms)| (id, Duration::from_millis(ms)))
            .collect()
    }

    /// A shared counter's value (`None` if absent or expired).
    pub fn counter(&self, name: &str) -> Option<i64> {
        self.host
            .counters
            .get(name)
            .filter(|(_, exp)| exp.is_none_or(|e| e > self.host.now_ns))
            .map(|(v, _)| *v)
    }

    /// Sets a shared counter, as another proxy sharing the store would
    /// (an existing counter keeps its expiry).
    pub fn set_counter(&mut self, name: &str, value: i64) {
        let e = self.host.counters.entry(name.into()).or_insert((0, None));
        e.0 = value;
    }

    // ---- admin hooks ----

    /// `status()` (empty if the build does not export it).
    pub fn status(&mut self) -> String {
        if !Self::exports("status") {
            return String::new();
        }
        self.call(Phase::Status, |rt| rt.status());
        String::from_utf8_lossy(&self.host.output).into_owned()
    }

    /// `status()` parsed as JSON (`Null` if it is not JSON).
    pub fn status_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.status()).unwrap_or_default()
    }

    /// `snapshot()` (empty if the build does not export it: the host then
    /// hands no state over).
    pub fn snapshot(&mut self) -> Vec<u8> {
        if !Self::exports("snapshot") {
            return Vec::new();
        }
        self.call(Phase::Snapshot, |rt| rt.snapshot());
        core::mem::take(&mut self.host.output)
    }

    /// `restore(snapshot)`; `Err` is the plugin's message. Without an
    /// exported `restore` the snapshot is dropped, as the host does.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        if !Self::exports("restore") {
            return Ok(());
        }
        self.host.input = snapshot.to_vec();
        let code = self.call(Phase::Restore, |rt| rt.restore());
        self.host.input.clear();
        if code == status::OK {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&self.host.output).into_owned())
        }
    }

    // ---- request hooks, one at a time ----

    /// Starts a request (a new request id, attempt 1); nothing runs yet.
    pub fn start(&mut self, req: TestRequest) -> Flight {
        let id = self.next_id;
        self.next_id += 1;
        Flight {
            id,
            attempt: 1,
            req: req.into_data(),
            tried: Vec::new(),
        }
    }

    /// Moves the flight's request into the host for a call, and back after.
    fn request_call<R>(
        &mut self,
        f: &mut Flight,
        phase: Phase,
        resp: Option<Vec<(String, String)>>,
        call: impl FnOnce(&mut Runtime<P>) -> R,
    ) -> (R, Option<Vec<(String, String)>>) {
        self.host.req = Some(core::mem::take(&mut f.req));
        self.host.resp = resp;
        self.host.answer = None;
        self.host.attempt_timeout_ms = None;
        let r = self.call(phase, call);
        f.req = self.host.req.take().unwrap_or_default();
        (r, self.host.resp.take())
    }

    /// `on_request` for the flight's current attempt (`Continue` if the
    /// build does not export it).
    pub fn on_request(&mut self, f: &mut Flight) -> RequestResult {
        if !Self::exports("on_request") {
            return RequestResult::Continue { timeout: None };
        }
        let (id, attempt) = (f.id as i64, f.attempt as i32);
        let method = types::method_code(&f.req.method);
        let (code, _) = self.request_call(f, Phase::OnRequest, None, |rt| {
            rt.on_request(id, method, attempt)
        });
        match (code, self.host.answer.take()) {
            (1, Some(a)) => RequestResult::Answer(a.into()),
            (1, None) => RequestResult::Answer(TestAnswer {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
            }),
            _ => RequestResult::Continue {
                timeout: self.host.attempt_timeout_ms.map(Duration::from_millis),
            },
        }
    }

    /// `select` for the flight's current attempt, offered the healthy
    /// endpoints (all if none is healthy) and the flight's tried list;
    /// `None` (the host's choice) if the build does not export it.
    pub fn select(&mut self, f: &mut Flight) -> Option<u32> {
        let any_healthy = self.endpoints.iter().any(|e| e.healthy);
        self.host.offered = self
            .endpoints
            .iter()
            .filter(|e| e.healthy || !any_healthy)
            .map(|e| weir_abi::EndpointRecord::from(*e))
            .collect();
        self.host.tried = f.tried.clone();
        if !Self::exports("select") {
            return None;
        }
        let (id, attempt) = (f.id as i64, f.attempt as i32);
        let (n, t) = (self.host.offered.len() as i32, f.tried.len() as i32);
        let (raw, _) = self.request_call(f, Phase::Select, None, |rt| rt.select(id, attempt, n, t));
        u32::try_from(raw)
            .ok()
            .filter(|id| self.host.offered.iter().any(|e| e.id == *id))
    }

    /// `on_response` with `outcome` for the flight's current attempt; the
    /// plugin's header edits land in `outcome.headers`. `Pass` if the build
    /// does not export it.
    pub fn on_response(&mut self, f: &mut Flight, outcome: &mut Outcome) -> ResponseResult {
        if !Self::exports("on_response") {
            return ResponseResult::Pass;
        }
        let (id, attempt) = (f.id as i64, f.attempt as i32);
        let (st, err) = outcome.scalars();
        let endpoint = outcome.endpoint.map_or(-1, |e| e as i32);
        let lat = i64::try_from(outcome.latency.as_micros()).unwrap_or(i64::MAX);
        let resp = outcome
            .has_head()
            .then(|| core::mem::take(&mut outcome.headers));
        let (raw, resp) = self.request_call(f, Phase::OnResponse, resp, |rt| {
            rt.on_response(id, attempt, st, err, endpoint, lat)
        });
        if let Some(h) = resp {
            outcome.headers = h;
        }
        match weir_abi::ResponseDecision::decode(raw) {
            Some(weir_abi::ResponseDecision::Replace) => match self.host.answer.take() {
                Some(a) => ResponseResult::Replace(a.into()),
                None => ResponseResult::Pass,
            },
            Some(weir_abi::ResponseDecision::Retry { delay_ms }) => {
                ResponseResult::Retry(Duration::from_millis(u64::from(delay_ms)))
            }
            _ => ResponseResult::Pass,
        }
    }

    /// `on_end`: the request is over with `status` / `error`; `cancelled`
    /// when the client went away.
    pub fn on_end(
        &mut self,
        f: Flight,
        status: Option<u16>,
        error: Option<ErrorClass>,
        cancelled: bool,
    ) {
        let mut flags = error.map_or(0, ErrorClass::code);
        if cancelled {
            flags |= weir_abi::CANCELLED;
        }
        let st = status.map_or(0, i32::from);
        if !Self::exports("on_end") {
            return;
        }
        self.host.req = None;
        self.call(Phase::OnEnd, |rt| rt.on_end(f.id as i64, st, flags));
    }

    // ---- a whole request ----

    /// Drives one request through the plugin like the chain does, with the
    /// upstream answering from `script` (one outcome per attempt; `200`
    /// once the script runs out). See the module docs.
    pub fn run(&mut self, req: TestRequest, script: &[Outcome]) -> Run {
        let mut f = self.start(req);
        let mut attempts = Vec::new();
        let mut delays = Vec::new();
        // After a retry, the plugin's own `on_request` does not run again:
        // the chain re-runs only what is inside the retrying layer, and the
        // layer's attempt timeout keeps covering the new attempts.
        let mut timeout = None;
        let mut retried = false;
        let fin = loop {
            let began = self.host.now_ns;
            if !retried {
                timeout = match self.on_request(&mut f) {
                    RequestResult::Answer(a) => break Outcome::from_answer(a),
                    RequestResult::Continue { timeout } => timeout,
                };
            }
            let deadline = f
                .req
                .deadline_ns
                .map(|d| Duration::from_nanos(d.saturating_sub(began)));
            let limit = match (timeout, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let endpoint = self.choose(&mut f);
            let mut outcome = script
                .get(attempts.len())
                .cloned()
                .unwrap_or_else(|| Outcome::status(200));
            if let Some(l) = limit.filter(|l| outcome.latency > *l) {
                outcome = Outcome::error(ErrorClass::Timeout).reached().latency(l);
            }
            outcome.endpoint = endpoint;
            self.advance(outcome.latency);
            attempts.push(RunAttempt {
                number: f.attempt,
                endpoint,
                timeout: limit,
                request_headers: f.req.headers.clone(),
            });
            f.tried.extend(endpoint);
            match self.on_response(&mut f, &mut outcome) {
                ResponseResult::Pass => break outcome,
                ResponseResult::Replace(a) => break Outcome::from_answer(a),
                ResponseResult::Retry(d) if f.attempt < 16 => {
                    retried = true;
                    delays.push(d);
                    self.advance(d);
                    f.attempt += 1;
                }
                ResponseResult::Retry(_) => break outcome,
            }
        };
        let error = fin.error;
        let st = fin.status;
        self.on_end(f, st, error, false);
        Run {
            attempts,
            delays,
            status: fin.status,
            error: fin.error,
            local: fin.local,
            headers: fin.headers,
            body: fin.body,
        }
    }

    /// The attempt's endpoint: the plugin's `select`, or round robin over
    /// the offered endpoints; `None` without endpoints.
    fn choose(&mut self, f: &mut Flight) -> Option<u32> {
        if self.endpoints.is_empty() {
            return None;
        }
        self.select(f).or_else(|| {
            // The host's default: round robin, untried endpoints first.
            let offered = &self.host.offered;
            self.rr = self.rr.wrapping_add(1);
            let n = offered.len().max(1);
            (0..n)
                .map(|i| offered[(self.rr + i) % n].id)
                .find(|id| !f.tried.contains(id))
                .or_else(|| offered.get(self.rr % n).map(|e| e.id))
        })
    }
}

impl From<Staged> for TestAnswer {
    fn from(s: Staged) -> Self {
        Self {
            status: s.status,
            headers: s.headers,
            body: s.body,
        }
    }
}
