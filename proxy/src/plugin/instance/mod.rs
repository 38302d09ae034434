//! One long-lived instance per (route, plugin): its memory is the plugin's
//! state. Calls are serialized by a mutex held only for the call, bounded by
//! an epoch deadline, and request data is moved into the store for the call
//! and back out after it. A trap discards the instance (its memory may be
//! half-updated); the next call builds and configures a fresh one, and
//! repeated traps back off. How a new version takes over from this one (and
//! gives back on a rollback) is in [`succession`].

mod succession;

use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use std::time::{Duration, Instant};
use weir_abi::rejection::Rejection;

use bytes::Bytes;
use wasmtime::{Store, StoreLimitsBuilder, Trap};
use weir_abi::{self as abi, Phase, RequestDecision, ResponseDecision, status};

use super::funcs::Funcs;
use super::funcs::HookSet;
use super::host_state::HostState;
use super::loader::LoadedPlugin;
use super::metrics::{MetricSample, MetricsRegistry};
use super::probation::Probation;
use super::ticker::Watch;
use super::verdict::{PluginError, RequestVerdict, ResponseVerdict};
use super::views::{EndpointInfo, Outcome, RequestView, method_code};

struct Live {
    store: Store<HostState>,
    funcs: Funcs,
    init_ticks: u64,
    /// Armed before every call: sets the deadline, keeps the ticker going.
    watch: Watch,
}

struct Slot {
    live: Option<Live>,
    consecutive_traps: u32,
    retry_at: Option<Instant>,
    /// Metrics of a discarded instance, handed to its replacement.
    metrics: MetricsRegistry,
    /// Calls and traps, shared by every version of this route's plugin (a
    /// new version adopts its predecessor's): counters that never go back
    /// across swaps.
    counts: Arc<CallCounts>,
    /// Set when a newer version took over: every call goes there, so the
    /// requests still holding this version update the state that serves.
    successor: Option<Arc<PluginInstance>>,
    /// While this is a new version on probation: the instance it replaced,
    /// which takes every call once the probation trips.
    previous: Option<Arc<PluginInstance>>,
}

#[derive(Debug, Default)]
struct CallCounts {
    calls: AtomicU64,
    traps: AtomicU64,
}

/// Where a call ran: here, or on another version's instance that takes
/// this one's calls.
enum Call<R> {
    Done(R),
    Elsewhere(Arc<PluginInstance>),
}

/// A configured, long-lived instance of a plugin for one route.
pub struct PluginInstance {
    plugin: LoadedPlugin,
    config: Bytes,
    call_ticks: u64,
    init_ticks: u64,
    slot: Mutex<Slot>,
    /// The live instance holds endpoint marks: the server drains them after
    /// each request, and checks this first instead of taking every layer's
    /// lock when (as almost always) there are none.
    marks_pending: AtomicBool,
    /// `warn_guard_fails_open` has spoken.
    warned_fails_open: AtomicBool,
    /// While this is a new version on probation: the watch its failed
    /// calls are counted by.
    probation: OnceLock<Arc<Probation>>,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded (epoch interruption)".into(),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    }
}

impl PluginInstance {
    /// Instantiates `plugin` and runs `configure` with the route's settings
    /// (`config_json`, empty for none). Fails if the plugin rejects the config.
    pub fn new(plugin: &LoadedPlugin, config_json: impl Into<Bytes>) -> Result<Self, PluginError> {
        let engine = &plugin.engine;
        let this = Self {
            plugin: plugin.clone(),
            config: config_json.into(),
            call_ticks: engine.ticks(engine.config().call_deadline),
            init_ticks: engine.ticks(engine.config().init_deadline),
            slot: Mutex::new(Slot {
                live: None,
                consecutive_traps: 0,
                retry_at: None,
                metrics: MetricsRegistry::default(),
                counts: Arc::default(),
                successor: None,
                previous: None,
            }),
            marks_pending: AtomicBool::new(false),
            warned_fails_open: AtomicBool::new(false),
            probation: OnceLock::new(),
        };
        let live = this.spawn(MetricsRegistry::default())?;
        this.lock().live = Some(live);
        Ok(this)
    }

    /// A call failed: counted against the version's probation, if any.
    fn note_failed_call(&self, why: &str) {
        if let Some(probation) = self.probation.get() {
            probation.failed_call(why);
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// The loaded plugin this instance runs.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// The plugin answered 401/403 on a fail-open route: it guards access,
    /// and a trap would let requests through unchecked. Said once per
    /// instance (route and version), not per request.
    pub fn warn_guard_fails_open(&self, status: u16) {
        if !self.warned_fails_open.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                plugin = self.name(),
                status,
                "plugin answered {status} on a fail-open route: if it guards access, a failure \
                 of it lets requests through unchecked; declare it #[weir_sdk::plugin(fail_closed)] \
                 or set the route's on_plugin_error = \"fail-closed\""
            );
        }
    }

    /// The hooks it exports.
    pub fn hooks(&self) -> HookSet {
        self.plugin.hooks
    }

    /// How many times this route's plugin trapped (every version).
    pub fn traps(&self) -> u64 {
        self.lock().counts.traps.load(Ordering::Relaxed)
    }

    /// How many hook calls this route's plugin received (every version).
    pub fn calls(&self) -> u64 {
        self.lock().counts.calls.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock cannot leave the slot inconsistent
        // in a way that matters: at worst the instance is rebuilt.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trap(&self, hook: &'static str, message: String) -> PluginError {
        PluginError::Trap {
            plugin: self.plugin.name.to_string(),
            hook,
            message,
        }
    }

    /// A fresh, configured instance.
    fn spawn(&self, metrics: MetricsRegistry) -> Result<Live, PluginError> {
        let engine = &self.plugin.engine.inner;
        let limits = StoreLimitsBuilder::new()
            .memory_size(engine.config.memory_limit)
            .build();
        let mut state = HostState::new(self.plugin.name.clone(), engine.services.clone(), limits);
        state.metrics = metrics;
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|s| &mut s.limits);
        let watch = self.plugin.engine.watch();
        // Deadlines count the CPU a call used, not the wall time it took.
        store.epoch_deadline_callback(super::cpu_budget::callback(
            watch.handle(),
            engine.config.epoch_tick,
        ));
        watch.arm(&mut store, self.init_ticks);
        let instance = self
            .plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.trap("instantiate", trap_message(&e)))?;
        let funcs = Funcs::new(&mut store, &instance).map_err(|m| self.trap("instantiate", m))?;
        let mut live = Live {
            store,
            funcs,
            init_ticks: self.init_ticks,
            watch,
        };
        let config = self.config.clone();
        let len = i32::try_from(config.len()).unwrap_or(i32::MAX);
        let code = live.init_call(Phase::Configure, config, |l| {
            l.funcs.configure.call(&mut l.store, len)
        });
        match code {
            Ok(status::OK) => Ok(live),
            Ok(_) => Err(PluginError::Rejected {
                plugin: self.plugin.name.to_string(),
                what: "config",
                rejection: Rejection::parse(&live.store.data().output),
            }),
            Err(e) => Err(self.trap("configure", trap_message(&e))),
        }
    }

    /// Runs `f` on the live instance, unless another version takes this
    /// one's calls ([`Call::Elsewhere`]).
    fn with_live<R>(
        &self,
        hook: &'static str,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<Call<R>, PluginError> {
        let mut slot = self.lock();
        if let Some(instead) = self.elsewhere(&mut slot) {
            return Ok(Call::Elsewhere(instead));
        }
        self.run_locked(&mut slot, hook, f).map(Call::Done)
    }

    /// Runs `f` on the live instance (rebuilding it first if a trap discarded
    /// it). A trap discards the instance; repeated traps back off.
    fn run_locked<R>(
        &self,
        slot: &mut Slot,
        hook: &'static str,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        slot.counts.calls.fetch_add(1, Ordering::Relaxed);
        if slot.live.is_none() {
            if slot.retry_at.is_some_and(|t| Instant::now() < t) {
                self.note_failed_call("refused while backing off after traps");
                return Err(PluginError::BackingOff {
                    plugin: self.plugin.name.to_string(),
                    traps: slot.consecutive_traps,
                });
            }
            match self.spawn(mem::take(&mut slot.metrics)) {
                Ok(live) => slot.live = Some(live),
                Err(e) => {
                    self.note_trap(slot);
                    self.note_failed_call(&e.to_string());
                    return Err(e);
                }
            }
        }
        let Some(live) = slot.live.as_mut() else {
            return Err(self.trap(hook, "no instance".into()));
        };
        match f(live) {
            Ok(r) => {
                slot.consecutive_traps = 0;
                if !live.store.data().marks.is_empty() {
                    self.marks_pending.store(true, Ordering::Release);
                }
                Ok(r)
            }
            Err(e) => {
                let mut message = trap_message(&e);
                if let Some(dead) = slot.live.take() {
                    let state = dead.store.into_data();
                    if let Some(panic) = state.panic {
                        message = format!("{message} ({panic})");
                    }
                    slot.metrics = state.metrics;
                }
                self.note_trap(slot);
                let error = self.trap(hook, message.clone());
                tracing::warn!(plugin = %self.plugin.name, hook, error = %message, "plugin trapped; instance discarded");
                self.note_failed_call(&error.to_string());
                Err(error)
            }
        }
    }

    fn note_trap(&self, slot: &mut Slot) {
        slot.counts.traps.fetch_add(1, Ordering::Relaxed);
        slot.consecutive_traps = slot.consecutive_traps.saturating_add(1);
        // The first trap is rebuilt at once; from the second on, wait.
        slot.retry_at = (slot.consecutive_traps > 1).then(|| {
            let cfg = self.plugin.engine.config();
            let factor = 1u32 << (slot.consecutive_traps - 2).min(16);
            Instant::now()
                + cfg
                    .trap_backoff
                    .saturating_mul(factor)
                    .min(cfg.trap_backoff_max)
        });
    }

    /// `on_request`: `req` is moved into the store for the call and back.
    pub fn on_request(
        &self,
        id: u64,
        req: &mut Box<RequestView>,
        attempt: u32,
    ) -> Result<RequestVerdict, PluginError> {
        if !self.plugin.hooks.on_request {
            return Ok(RequestVerdict::Continue { timeout: None });
        }
        let method = method_code(&req.method);
        let result = self.with_live("on_request", |l| {
            let Some(func) = &l.funcs.on_request else {
                return Ok((0, None, None));
            };
            let st = l.store.data_mut();
            st.phase = Phase::OnRequest;
            mem::swap(&mut st.req, req);
            l.watch.arm(&mut l.store, self.call_ticks);
            let r = func.call(&mut l.store, (id as i64, method, attempt as i32));
            let st = l.store.data_mut();
            mem::swap(&mut st.req, req);
            st.phase = Phase::Idle;
            Ok((r?, st.answer.take(), st.attempt_timeout.take()))
        });
        let (code, answer, timeout) = match result? {
            Call::Done(done) => done,
            Call::Elsewhere(instead) => return instead.on_request(id, req, attempt),
        };
        match (RequestDecision::from_code(code), answer) {
            (Some(RequestDecision::Continue), _) => Ok(RequestVerdict::Continue { timeout }),
            (Some(RequestDecision::Answer), Some(a)) => Ok(RequestVerdict::Answer(*a)),
            _ => Err(self.bad_return("on_request", i64::from(code))),
        }
    }

    fn bad_return(&self, hook: &'static str, value: i64) -> PluginError {
        PluginError::BadReturn {
            plugin: self.plugin.name.to_string(),
            hook,
            value,
        }
    }

    /// `select`: the endpoint id the plugin chose, or `None` for the default.
    pub fn select(
        &self,
        id: u64,
        req: &mut Box<RequestView>,
        attempt: u32,
        endpoints: &[EndpointInfo],
        tried: &[u32],
    ) -> Result<Option<u32>, PluginError> {
        if !self.plugin.hooks.select {
            return Ok(None);
        }
        let result = self.with_live("select", |l| {
            let Some(func) = &l.funcs.select else {
                return Ok(abi::SELECT_DEFAULT);
            };
            let st = l.store.data_mut();
            st.phase = Phase::Select;
            mem::swap(&mut st.req, req);
            // Reuses the vectors' capacity: no allocation once warmed up.
            st.endpoints.clear();
            st.endpoints.extend_from_slice(endpoints);
            st.tried.clear();
            st.tried.extend_from_slice(tried);
            let n = |len: usize| i32::try_from(len).unwrap_or(i32::MAX);
            l.watch.arm(&mut l.store, self.call_ticks);
            let r = func.call(
                &mut l.store,
                (
                    id as i64,
                    attempt as i32,
                    n(endpoints.len()),
                    n(tried.len()),
                ),
            );
            let st = l.store.data_mut();
            mem::swap(&mut st.req, req);
            st.phase = Phase::Idle;
            r
        });
        let raw = match result? {
            Call::Done(raw) => raw,
            Call::Elsewhere(instead) => {
                return instead.select(id, req, attempt, endpoints, tried);
            }
        };
        if raw == abi::SELECT_DEFAULT {
            return Ok(None);
        }
        match u32::try_from(raw) {
            Ok(chosen) if endpoints.iter().any(|e| e.id == chosen) => Ok(Some(chosen)),
            _ => Err(self.bad_return("select", raw)),
        }
    }

    /// `on_response`: the outcome's headers are moved into the store for the call.
    pub fn on_response<B>(
        &self,
        id: u64,
        req: &mut Box<RequestView>,
        attempt: u32,
        outcome: &mut Outcome<B>,
        endpoint: Option<u32>,
        latency: Duration,
    ) -> Result<ResponseVerdict, PluginError> {
        if !self.plugin.hooks.on_response {
            return Ok(ResponseVerdict::Pass);
        }
        let (status_code, error) = outcome.scalars();
        let endpoint_id = endpoint;
        let endpoint = endpoint.and_then(|e| i32::try_from(e).ok()).unwrap_or(-1);
        let latency_us = i64::try_from(latency.as_micros()).unwrap_or(i64::MAX);
        let upstream_status = outcome.upstream_status();
        let mut headers = outcome.headers_mut();
        let result = self.with_live("on_response", |l| {
            let Some(func) = &l.funcs.on_response else {
                return Ok((0, None));
            };
            let st = l.store.data_mut();
            st.phase = Phase::OnResponse;
            st.answer = None;
            mem::swap(&mut st.req, req);
            if let Some(h) = &mut headers {
                mem::swap(&mut st.resp, &mut **h);
            }
            st.has_resp = headers.is_some();
            st.upstream_status = upstream_status;
            l.watch.arm(&mut l.store, self.call_ticks);
            let args = (
                id as i64,
                attempt as i32,
                status_code,
                error,
                endpoint,
                latency_us,
            );
            let r = func.call(&mut l.store, args);
            let st = l.store.data_mut();
            mem::swap(&mut st.req, req);
            if let Some(h) = &mut headers {
                mem::swap(&mut st.resp, &mut **h);
            }
            st.has_resp = false;
            st.phase = Phase::Idle;
            Ok((r?, st.answer.take()))
        });
        let (raw, answer) = match result? {
            Call::Done(done) => done,
            Call::Elsewhere(instead) => {
                return instead.on_response(id, req, attempt, outcome, endpoint_id, latency);
            }
        };
        match (ResponseDecision::decode(raw), answer) {
            (Some(ResponseDecision::Pass), _) => Ok(ResponseVerdict::Pass),
            (Some(ResponseDecision::Replace), Some(a)) => Ok(ResponseVerdict::Replace(*a)),
            (Some(ResponseDecision::Retry { delay_ms }), _) => Ok(ResponseVerdict::Retry(
                Duration::from_millis(u64::from(delay_ms)),
            )),
            _ => Err(self.bad_return("on_response", raw)),
        }
    }

    /// `on_end`: `error` carries [`weir_abi::CANCELLED`] if the request was dropped.
    pub fn on_end(&self, id: u64, status_code: i32, error: i32) -> Result<(), PluginError> {
        if !self.plugin.hooks.on_end {
            return Ok(());
        }
        let result = self.with_live("on_end", |l| {
            let Some(func) = &l.funcs.on_end else {
                return Ok(());
            };
            l.store.data_mut().phase = Phase::OnEnd;
            l.watch.arm(&mut l.store, self.call_ticks);
            let r = func.call(&mut l.store, (id as i64, status_code, error));
            l.store.data_mut().phase = Phase::Idle;
            r
        });
        match result? {
            Call::Done(()) => Ok(()),
            Call::Elsewhere(instead) => instead.on_end(id, status_code, error),
        }
    }

    /// The plugin's JSON status for `/admin/plugins` (`None` if it exports none).
    pub fn status(&self) -> Result<Option<String>, PluginError> {
        if !self.plugin.hooks.status {
            return Ok(None);
        }
        let out = match self.with_live("status", |l| {
            // Cloned (an Arc bump) because `init_call` borrows all of `l`; not a hot path.
            let Some(func) = l.funcs.status.clone() else {
                return Ok(Vec::new());
            };
            l.init_call(Phase::Status, Bytes::new(), |l| func.call(&mut l.store, ()))?;
            Ok(mem::take(&mut l.store.data_mut().output))
        })? {
            Call::Done(out) => out,
            Call::Elsewhere(instead) => return instead.status(),
        };
        Ok(Some(String::from_utf8_lossy(&out).into_owned()))
    }

    /// The plugin's state for a hot reload (`None` if it exports no `snapshot`).
    pub fn snapshot(&self) -> Result<Option<Vec<u8>>, PluginError> {
        let mut slot = self.lock();
        self.snapshot_locked(&mut slot)
    }

    fn snapshot_locked(&self, slot: &mut Slot) -> Result<Option<Vec<u8>>, PluginError> {
        if !self.plugin.hooks.snapshot {
            return Ok(None);
        }
        let out = self.run_locked(slot, "snapshot", |l| {
            // Cloned (an Arc bump) because `init_call` borrows all of `l`; not a hot path.
            let Some(func) = l.funcs.snapshot.clone() else {
                return Ok(Vec::new());
            };
            l.init_call(Phase::Snapshot, Bytes::new(), |l| {
                func.call(&mut l.store, ())
            })?;
            Ok(mem::take(&mut l.store.data_mut().output))
        })?;
        Ok(Some(out))
    }

    /// Hands the previous version's snapshot to `restore` (no-op if not exported).
    pub fn restore(&self, snapshot: Bytes) -> Result<(), PluginError> {
        let mut slot = self.lock();
        self.restore_locked(&mut slot, snapshot)
    }

    fn restore_locked(&self, slot: &mut Slot, snapshot: Bytes) -> Result<(), PluginError> {
        if !self.plugin.hooks.restore {
            return Ok(());
        }
        let len = i32::try_from(snapshot.len()).unwrap_or(i32::MAX);
        let (code, msg) = self.run_locked(slot, "restore", |l| {
            // Cloned (an Arc bump) because `init_call` borrows all of `l`; not a hot path.
            let Some(func) = l.funcs.restore.clone() else {
                return Ok((status::OK, Vec::new()));
            };
            let code = l.init_call(Phase::Restore, snapshot, |l| func.call(&mut l.store, len))?;
            Ok((code, mem::take(&mut l.store.data_mut().output)))
        })?;
        if code == status::OK {
            return Ok(());
        }
        Err(PluginError::Rejected {
            plugin: self.plugin.name.to_string(),
            what: "snapshot",
            rejection: Rejection {
                path: Vec::new(),
                message: String::from_utf8_lossy(&msg).into_owned(),
            },
        })
    }

    /// Moves the plugin's endpoint marks (id, unhealthy for) into `out`.
    pub fn drain_endpoint_marks(&self, out: &mut Vec<(u32, Duration)>) {
        if !self.marks_pending.load(Ordering::Acquire) {
            return;
        }
        // Cleared before draining: marks a concurrent call adds after this
        // set the flag again and are drained next time.
        self.marks_pending.store(false, Ordering::Release);
        let mut slot = self.lock();
        if let Some(l) = slot.live.as_mut() {
            out.append(&mut l.store.data_mut().marks);
        }
    }

    /// The metrics the plugin defined, with their current values.
    pub fn metrics(&self) -> Vec<MetricSample> {
        let slot = self.lock();
        match &slot.live {
            Some(l) => l.store.data().metrics.samples(),
            None => slot.metrics.samples(),
        }
    }
}

impl Live {
    /// A call outside the request path: longer deadline, input bytes in the store.
    fn init_call<R>(
        &mut self,
        phase: Phase,
        input: Bytes,
        f: impl FnOnce(&mut Self) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let st = self.store.data_mut();
        st.phase = phase;
        st.input = input;
        st.output.clear();
        self.watch.arm(&mut self.store, self.init_ticks);
        let r = f(self);
        let st = self.store.data_mut();
        st.phase = Phase::Idle;
        st.input = Bytes::new();
        r
    }
}
