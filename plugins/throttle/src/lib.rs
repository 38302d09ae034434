//! The `throttle` policy: a token bucket (rate, burst) and a concurrency
//! limit, per route or per key (a request header or the client address),
//! with a bounded key table. Rejections answer locally: `429` with
//! `Retry-After` for the rate, `503` for concurrency, both with
//! `Proxy-Status`. In-flight slots are released in `on_end`, which the proxy
//! runs for every request, so a client that goes away leaks nothing.
//!
//! `global` mode counts through the host's shared counters (in-process, or
//! Redis when the proxy names one) so several proxies enforce one limit: the
//! rate as a fixed-window count, the concurrency as a shared gauge.
//! Settings: see `README.md`.

extern crate alloc;

mod config;
mod table;

use alloc::format;
use alloc::string::String;

use weir_sdk::{Answer, End, Metric, Plugin, Request, RequestAction};

pub use config::{Config, Fallback, KeyBy, RawConfig};
use table::Table;

/// Per-request state: the key whose in-flight slot this request holds.
#[derive(Debug, Default)]
pub struct Ctx {
    holds: Option<String>,
    global_holds: Option<String>,
    /// A slot of the local fallback table (global mode, store down).
    fallback_holds: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    allowed: Metric,
    rate: Metric,
    concurrency: Metric,
    in_flight: Metric,
    keys: Metric,
    store_errors: Metric,
}

/// The plugin.
#[derive(Default)]
pub struct Throttle {
    config: Config,
    table: Table,
    /// Global mode's local fallback: this proxy's share of the limit.
    fallback: Config,
    fallback_table: Table,
    /// Requests decided by the local fallback.
    fell_back: u64,
    metrics: Option<Metrics>,
    allowed: u64,
    rejected_rate: u64,
    rejected_concurrency: u64,
    store_errors: u64,
}

/// The key a request counts under (`""` for the route).
fn key_of(by: &KeyBy, req: &Request) -> String {
    let v = match by {
        KeyBy::Route => None,
        KeyBy::Header(h) => req.header(h).ok().flatten(),
        KeyBy::Client => req.client_addr().ok().flatten(),
    };
    v.unwrap_or_default()
}

fn rate_answer(retry_after_s: u64) -> Answer {
    Answer::new(429)
        .header("retry-after", &format!("{}", retry_after_s.max(1)))
        .proxy_status("http_request_denied", "rate limit exceeded")
        .header("content-type", "text/plain")
        .body("429 too many requests\n")
}

fn concurrency_answer() -> Answer {
    Answer::new(503)
        .header("retry-after", "1")
        .proxy_status("http_request_denied", "concurrency limit exceeded")
        .header("content-type", "text/plain")
        .body("503 too many requests in flight\n")
}

impl Throttle {
    fn count(&self, pick: impl Fn(&Metrics) -> Metric) {
        if let Some(m) = &self.metrics {
            let _ = pick(m).record(1.0);
        }
    }

    fn gauges(&self) {
        if let Some(m) = &self.metrics {
            let _ = m.in_flight.record(self.table.in_flight() as f64);
            let _ = m.keys.record(self.table.len() as f64);
        }
    }

    /// Checks `key` against `config`'s limits in `table` (local mode, or
    /// global mode's fallback); `Ok(true)`: the request holds a slot.
    fn admit_local(table: &mut Table, config: &Config, key: &str) -> Result<bool, Answer> {
        let now = weir_sdk::host::clock_ns();
        match table.admit(config, key, now) {
            Ok(held) => Ok(held),
            Err(table::Reject::Rate { retry_after_s }) => Err(rate_answer(retry_after_s)),
            Err(table::Reject::Concurrency) => Err(concurrency_answer()),
        }
    }

    /// The shared store failed for this request: decide as configured. The
    /// host reports the outage (once per interval, with a count).
    fn store_failed(&mut self, ctx: &mut Ctx, key: &str, reject: Answer) -> Option<Answer> {
        self.store_errors += 1;
        self.count(|m| m.store_errors);
        match self.config.fallback {
            Fallback::Unlimited => None,
            Fallback::Closed => Some(reject),
            Fallback::Local => {
                self.fell_back += 1;
                match Self::admit_local(&mut self.fallback_table, &self.fallback, key) {
                    Ok(held) => {
                        if held {
                            ctx.fallback_holds = Some(key.into());
                        }
                        None
                    }
                    Err(answer) => Some(answer),
                }
            }
        }
    }

    /// Global mode: one fixed-window count and one shared in-flight gauge.
    fn global(&mut self, ctx: &mut Ctx, key: &str) -> Option<Answer> {
        let c = &self.config;
        if let Some(rate) = c.rate {
            // A fixed window that starts with its first request and expires
            // in the shared store: no clock needs to agree across proxies.
            let limit = (rate * c.window_ms as f64 / 1000.0).ceil().max(1.0) as i64;
            let name = format!("{}:rate:{key}", c.name);
            match weir_sdk::host::counter_add_ttl(&name, 1, c.window_ms) {
                Ok(n) if n > limit => {
                    return Some(rate_answer(c.window_ms.div_ceil(1000)));
                }
                Ok(_) => {}
                // The store is down: the fallback decides the whole request.
                Err(_) => return self.store_failed(ctx, key, rate_answer(1)),
            }
        }
        if let Some(max) = self.config.max_concurrent {
            let name = format!("{}:inflight:{key}", self.config.name);
            match weir_sdk::host::counter_add(&name, 1) {
                Ok(n) if n > i64::from(max) => {
                    let _ = weir_sdk::host::counter_add(&name, -1);
                    return Some(concurrency_answer());
                }
                Ok(_) => ctx.global_holds = Some(name),
                Err(_) => return self.store_failed(ctx, key, concurrency_answer()),
            }
        }
        None
    }
}

#[weir_sdk::plugin]
impl Plugin for Throttle {
    type Config = RawConfig;
    type Ctx = Ctx;

    fn configure(&mut self, raw: RawConfig) -> Result<(), String> {
        self.config = Config::try_from(raw)?;
        self.table = Table::new(self.config.max_keys);
        self.fallback = self.config.local_share();
        self.fallback_table = Table::new(self.config.max_keys);
        let m = |name: &str| Metric::counter(name).map_err(|e| e.to_string());
        let g = |name: &str| Metric::gauge(name).map_err(|e| e.to_string());
        self.metrics = Some(Metrics {
            allowed: m("throttle_allowed_total")?,
            rate: m("throttle_rejected_rate_total")?,
            concurrency: m("throttle_rejected_concurrency_total")?,
            in_flight: g("throttle_in_flight")?,
            keys: g("throttle_keys")?,
            store_errors: m("throttle_store_errors_total")?,
        });
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> RequestAction {
        // Inside a retrying layer this runs per attempt: the rate counts
        // every attempt, the concurrency slot is taken once per request.
        if ctx.holds.is_some() || ctx.global_holds.is_some() || ctx.fallback_holds.is_some() {
            return RequestAction::Continue;
        }
        let key = key_of(&self.config.key, req);
        let verdict = if self.config.global {
            self.global(ctx, &key)
        } else {
            match Self::admit_local(&mut self.table, &self.config, &key) {
                Ok(held) => {
                    if held {
                        ctx.holds = Some(key);
                    }
                    None
                }
                Err(answer) => Some(answer),
            }
        };
        let action = match verdict {
            None => {
                self.allowed += 1;
                self.count(|m| m.allowed);
                RequestAction::Continue
            }
            Some(a) => {
                if a.status() == 429 {
                    self.rejected_rate += 1;
                    self.count(|m| m.rate);
                } else {
                    self.rejected_concurrency += 1;
                    self.count(|m| m.concurrency);
                }
                RequestAction::Answer(a)
            }
        };
        self.gauges();
        action
    }

    fn on_end(&mut self, ctx: Ctx, _: &End) {
        if let Some(key) = ctx.holds {
            self.table.release(&key);
        }
        if let Some(name) = ctx.global_holds {
            let _ = weir_sdk::host::counter_add(&name, -1);
        }
        if let Some(key) = ctx.fallback_holds {
            self.fallback_table.release(&key);
        }
        self.gauges();
    }

    /// Local token buckets carry over a hot swap, so a new version does not
    /// start every key with a full burst. In-flight slots do not: those
    /// requests end on the old version. Global mode keeps its counts in
    /// the shared store.
    fn snapshot(&self) -> alloc::vec::Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "buckets": self.table.buckets() }))
            .unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Snapshot {
            buckets: alloc::vec::Vec<(String, f64, u64)>,
        }
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| format!("throttle: bad snapshot: {e}"))?;
        let now = weir_sdk::host::clock_ns();
        self.table.restore(snap.buckets, &self.config, now);
        self.gauges();
        Ok(())
    }

    fn status(&self) -> String {
        let c = &self.config;
        serde_json::json!({
            "mode": if c.global { "global" } else { "local" },
            "rate": c.rate,
            "burst": c.burst,
            "max_concurrent": c.max_concurrent,
            "key": match &c.key {
                KeyBy::Route => String::from("route"),
                KeyBy::Client => String::from("client"),
                KeyBy::Header(h) => format!("header:{h}"),
            },
            "keys": self.table.len(),
            "max_keys": c.max_keys,
            "in_flight": self.table.in_flight(),
            "allowed": self.allowed,
            "rejected": { "rate": self.rejected_rate, "concurrency": self.rejected_concurrency },
            "store_errors": self.store_errors,
            "fallback": match c.fallback {
                Fallback::Local => "local",
                Fallback::Unlimited => "unlimited",
                Fallback::Closed => "closed",
            },
            "decided_by_fallback": self.fell_back,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests;
