//! The onion executor (`docs/architecture.md`, "The plugin chain: an onion"),
//! generic over the core step (endpoint choice and upstream call) so it does
//! not depend on the HTTP server.
//!
//! `on_request` runs outer → inner; an answer skips the inner layers and the
//! core. The route's balancer (the innermost layer exporting `select`) picks
//! the endpoint. `on_response` runs inner → outer; a retry re-runs everything
//! inside the retrying layer as a new attempt. `on_end` runs exactly once for
//! every layer whose `on_request` ran, from a drop guard, so it also runs when
//! the future is dropped (client gone) or a plugin trapped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::instance::PluginInstance;
use super::verdict::{PluginError, RequestVerdict, ResponseVerdict};
use super::views::{EndpointFacts, EndpointInfo, LocalAnswer, Outcome, RequestView};

/// Most layers in one chain (the on_end bookkeeping is a 64-bit mask).
pub const MAX_LAYERS: usize = 64;

/// Most attempts per request, whatever the plugins ask: a plugin that always
/// retries must not keep a request alive forever.
pub const MAX_ATTEMPTS: u32 = 16;

/// What a route does when one of its plugins traps (or is backing off after traps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrapPolicy {
    /// Skip the plugin for the rest of this request.
    #[default]
    FailOpen,
    /// Answer 503 at that point (outer layers still see it).
    FailClosed,
}

/// One attempt, as handed to the core.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// 1 for the first attempt, 2 for the first retry, …
    pub number: u32,
    /// The shortest timeout the plugins set for this attempt.
    pub timeout: Option<Duration>,
    /// The endpoint the balancer plugin chose; `None`: the core chooses (round robin).
    pub endpoint: Option<u32>,
    /// Endpoints this request already tried, oldest first.
    pub tried: &'a [u32],
}

/// The core step the chain wraps: endpoint list and upstream call.
pub trait Core<B> {
    /// Pushes the endpoints the balancer may choose from (the healthy ones,
    /// or all if none is healthy), and returns what is known about them
    /// (address, zone, metadata). Called only when the chain has a balancer.
    fn endpoints(&mut self, out: &mut Vec<EndpointInfo>) -> Option<Arc<dyn EndpointFacts>>;

    /// Whether another attempt can be sent: false once the request body was
    /// streamed without being kept for replay. A retry asked for then is
    /// refused and the outcome goes out as it is.
    fn can_retry(&self) -> bool {
        true
    }

    /// Sends one attempt upstream; returns the outcome and the endpoint used.
    fn send(
        &mut self,
        req: &mut RequestView,
        attempt: &Attempt<'_>,
    ) -> impl Future<Output = (Outcome<B>, Option<u32>)>;
}

/// Request ids are unique per process; the SDK keys per-request state by them.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// A route's ordered plugin instances (first = outermost) and its trap policy.
#[derive(Debug, Clone)]
pub struct Chain {
    layers: Arc<[Arc<PluginInstance>]>,
    balancer: Option<usize>,
    policy: TrapPolicy,
    /// Some layer exports `on_response`: only then are attempts timed (its
    /// latency argument) and request bodies kept for replay.
    any_on_response: bool,
}

/// The chain cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("a chain has at most {MAX_LAYERS} plugins, this one has {0}")]
pub struct TooManyLayers(pub usize);

impl Chain {
    /// A chain over `layers`, outermost first.
    pub fn new(
        layers: Vec<Arc<PluginInstance>>,
        policy: TrapPolicy,
    ) -> Result<Self, TooManyLayers> {
        if layers.len() > MAX_LAYERS {
            return Err(TooManyLayers(layers.len()));
        }
        let balancer = layers.iter().rposition(|l| l.hooks().select);
        let any_on_response = layers.iter().any(|l| l.hooks().on_response);
        Ok(Self {
            layers: layers.into(),
            balancer,
            policy,
            any_on_response,
        })
    }

    /// The layers, outermost first.
    pub fn layers(&self) -> &[Arc<PluginInstance>] {
        &self.layers
    }

    /// The route's trap policy.
    pub fn policy(&self) -> TrapPolicy {
        self.policy
    }

    /// The policy for one layer: the route's, unless the plugin declares
    /// that it guards access (then it always fails closed).
    pub fn policy_of(&self, layer: usize) -> TrapPolicy {
        if self.layers[layer].plugin().declares_fail_closed() {
            TrapPolicy::FailClosed
        } else {
            self.policy
        }
    }

    /// A plugin call failed: log it and say what the request gets instead
    /// (`None`: skip the plugin).
    fn failed(&self, layer: usize, e: &PluginError) -> Option<LocalAnswer> {
        let plugin = self.layers[layer].name();
        let policy = self.policy_of(layer);
        tracing::warn!(plugin, ?policy, error = %e, "plugin failed on the request path");
        match policy {
            TrapPolicy::FailOpen => None,
            TrapPolicy::FailClosed => Some(LocalAnswer::plugin_failure(plugin)),
        }
    }

    /// Whether any layer may ask for a retry (exports `on_response`): only
    /// then does the server keep the request body for replay.
    pub fn may_retry(&self) -> bool {
        self.any_on_response
    }

    /// Runs the request through the chain around `core`; returns what goes to
    /// the client and the [`EndToken`] whose drop runs the `on_end`s — keep it
    /// until the response body has been sent. Dropping the future instead
    /// runs them at once, flagged cancelled.
    pub async fn run<B, C: Core<B>>(
        &self,
        req: &mut Box<RequestView>,
        core: &mut C,
    ) -> (Outcome<B>, EndToken) {
        let mut guard = self.end_token();
        let outcome = self.attempts(req, core, &mut guard).await;
        (outcome, guard)
    }

    /// As [`Chain::run`], within `deadline` (the route's timeout): `None`
    /// when it passed first, and the `on_end`s have run then, flagged timed
    /// out.
    pub async fn run_until<B, C: Core<B>>(
        &self,
        req: &mut Box<RequestView>,
        core: &mut C,
        deadline: tokio::time::Instant,
    ) -> Option<(Outcome<B>, EndToken)> {
        let mut guard = self.end_token();
        match tokio::time::timeout_at(deadline, self.attempts(req, core, &mut guard)).await {
            Ok(outcome) => Some((outcome, guard)),
            Err(_) => {
                guard.error = weir_abi::TIMED_OUT;
                None
            }
        }
    }

    /// A token for a new request: until the chain finishes, `on_end` is
    /// told the request was cancelled.
    fn end_token(&self) -> EndToken {
        EndToken {
            layers: Arc::clone(&self.layers),
            id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
            entered: 0,
            status: 0,
            error: weir_abi::CANCELLED,
        }
    }

    /// The attempts of one request; leaves the final outcome's scalars in
    /// `guard`.
    async fn attempts<B, C: Core<B>>(
        &self,
        req: &mut Box<RequestView>,
        core: &mut C,
        guard: &mut EndToken,
    ) -> Outcome<B> {
        let id = guard.id;
        let n = self.layers.len();
        // Layers skipped for the rest of the request (fail-open after a failure).
        let mut skipped = 0u64;
        let mut tried: Vec<u32> = Vec::new();
        let mut endpoints: Vec<EndpointInfo> = Vec::new();
        let mut start = 0;
        let mut attempt = 0;
        // Attempt timeouts by layer: a layer's timeout covers every attempt
        // it encloses, including the retries of inner layers that do not
        // re-run its `on_request` (e.g. a retry plugin's per-try timeout).
        let mut held: Vec<(usize, Duration)> = Vec::new();
        loop {
            attempt += 1;
            let began = self.any_on_response.then(Instant::now);
            held.retain(|(layer, _)| *layer < start);
            let mut timeout: Option<Duration> = held.iter().map(|(_, t)| *t).min();
            let mut early: Option<Outcome<B>> = None;
            // on_response runs for layers [0, top).
            let mut top = n;
            let mut i = start;
            while i < n {
                let bit = 1u64 << i;
                i += 1;
                if skipped & bit != 0 {
                    continue;
                }
                let layer = i - 1;
                match self.layers[layer].on_request(id, req, attempt) {
                    Ok(RequestVerdict::Continue { timeout: t }) => {
                        guard.entered |= bit;
                        // A cache follower (`cache_lock`): wait for the fetch
                        // in flight outside any plugin call, then run this
                        // layer's on_request again (it waits at most once).
                        if let Some(wait) = req.cache.take_wait() {
                            wait.wait().await;
                            i = layer;
                            continue;
                        }
                        held.extend(t.map(|t| (layer, t)));
                        timeout = match (timeout, t) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    Ok(RequestVerdict::Answer(a)) => {
                        if matches!(a.status.as_u16(), 401 | 403)
                            && self.policy_of(layer) == TrapPolicy::FailOpen
                        {
                            self.layers[layer].warn_guard_fails_open(a.status.as_u16());
                        }
                        guard.entered |= bit;
                        req.cache.take_wait();
                        early = Some(Outcome::Local(a));
                        top = layer;
                        break;
                    }
                    Err(e) => {
                        skipped |= bit;
                        req.cache.take_wait();
                        if let Some(a) = self.failed(layer, &e) {
                            early = Some(Outcome::Local(a));
                            top = layer;
                            break;
                        }
                    }
                }
            }
            // A request-wide deadline (a plugin's `deadline_set`) caps every attempt.
            if let Some(d) = req.deadline {
                let left = d.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            let (mut outcome, endpoint) = match early {
                Some(o) => (o, None),
                None => {
                    match self.select(id, req, attempt, &tried, core, &mut endpoints, skipped) {
                        Err(answer) => (Outcome::Local(*answer), None),
                        Ok(chosen) => {
                            let a = Attempt {
                                number: attempt,
                                timeout,
                                endpoint: chosen,
                                tried: &tried,
                            };
                            let (o, used) = core.send(req, &a).await;
                            tried.extend(used);
                            if let Outcome::Client(_) = o {
                                // The client's fault: no layer may take it
                                // for the upstream's (no on_response).
                                (guard.status, guard.error) = o.scalars();
                                return o;
                            }
                            (o, used)
                        }
                    }
                }
            };
            let latency = began.map_or(Duration::ZERO, |b| b.elapsed());
            let mut retry = None;
            for i in (0..top).rev() {
                if skipped & (1u64 << i) != 0 {
                    continue;
                }
                match self.layers[i].on_response(id, req, attempt, &mut outcome, endpoint, latency)
                {
                    Ok(ResponseVerdict::Pass) => {}
                    Ok(ResponseVerdict::Replace(a)) => outcome = Outcome::Local(a),
                    Ok(ResponseVerdict::Retry(_)) if !core.can_retry() => {
                        tracing::debug!(
                            plugin = self.layers[i].name(),
                            "retry refused: the request body was not kept for replay"
                        );
                    }
                    Ok(ResponseVerdict::Retry(delay)) if attempt < MAX_ATTEMPTS => {
                        retry = Some((i, delay));
                        break;
                    }
                    Ok(ResponseVerdict::Retry(_)) => {
                        tracing::debug!(
                            plugin = self.layers[i].name(),
                            "retry refused: attempt limit"
                        );
                    }
                    Err(e) => {
                        skipped |= 1u64 << i;
                        if let Some(a) = self.failed(i, &e) {
                            outcome = Outcome::Local(a);
                        }
                    }
                }
            }
            match retry {
                None => {
                    (guard.status, guard.error) = outcome.scalars();
                    req.cache
                        .settle(matches!(outcome, Outcome::Response { .. }));
                    return outcome;
                }
                Some((i, delay)) => {
                    // The discarded outcome's body (if any) is dropped here,
                    // and with it any order to store it.
                    drop(outcome);
                    req.cache.discard_attempt();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    start = i + 1;
                }
            }
        }
    }

    /// Moves the endpoint marks the chain's plugins left (passive ejection:
    /// endpoint id, unhealthy for; `Duration::ZERO` clears a mark) into `out`,
    /// oldest first per plugin. The server drains them after each request and
    /// applies them to the route's upstream; marks are bounded per instance
    /// (`weir_abi::limits::MARKS_MAX`) until drained.
    pub fn drain_endpoint_marks(&self, out: &mut Vec<(u32, Duration)>) {
        for layer in self.layers.iter() {
            layer.drain_endpoint_marks(out);
        }
    }

    /// Asks the balancer (if any) for the attempt's endpoint. `Err` is the
    /// fail-closed answer.
    #[allow(clippy::too_many_arguments)]
    fn select<B, C: Core<B>>(
        &self,
        id: u64,
        req: &mut Box<RequestView>,
        attempt: u32,
        tried: &[u32],
        core: &mut C,
        endpoints: &mut Vec<EndpointInfo>,
        skipped: u64,
    ) -> Result<Option<u32>, Box<LocalAnswer>> {
        let Some(b) = self.balancer.filter(|b| skipped & (1u64 << b) == 0) else {
            return Ok(None);
        };
        endpoints.clear();
        req.endpoint_facts = core.endpoints(endpoints);
        match self.layers[b].select(id, req, attempt, endpoints, tried) {
            Ok(chosen) => Ok(chosen),
            Err(e) => self.failed(b, &e).map_or(Ok(None), |a| Err(Box::new(a))),
        }
    }
}

/// Calls `on_end` on every entered layer, inner → outer, when dropped: after
/// the response body was sent (the server holds it until then), or when the
/// chain's future is dropped mid-way.
#[derive(Debug)]
pub struct EndToken {
    layers: Arc<[Arc<PluginInstance>]>,
    id: u64,
    entered: u64,
    status: i32,
    error: i32,
}

impl EndToken {
    /// The response did not reach the client whole (it went away, or the
    /// upstream's body failed): `on_end` gets the cancelled flag.
    pub fn mark_cancelled(&mut self) {
        self.error |= weir_abi::CANCELLED;
    }
}

impl Drop for EndToken {
    fn drop(&mut self) {
        for (i, layer) in self.layers.iter().enumerate().rev() {
            if self.entered & (1u64 << i) != 0
                && let Err(e) = layer.on_end(self.id, self.status, self.error)
            {
                tracing::warn!(plugin = layer.name(), error = %e, "on_end failed");
            }
        }
    }
}
