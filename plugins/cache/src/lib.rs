//! `weir-plugin-cache`: an HTTP cache following RFC 9111 for a shared cache,
//! with RFC 5861's `stale-while-revalidate`/`stale-if-error`, request
//! coalescing and RFC 9211's `Cache-Status`. The plugin decides; the host's
//! cache store holds the bodies (they never enter the plugin), tees them
//! while streaming and serves hits. Settings: see README.md.
//!
//! Per request: `on_request` computes the primary key, reads the key's Vary
//! index, looks the variant up and serves it if fresh (or stale where
//! allowed), else leads or joins the one fetch in flight and adds
//! conditional headers for a stale entry. `on_response` stores what may be
//! stored, turns a 304 into the refreshed stored response, answers errors
//! with a stale copy where `stale-if-error` allows, invalidates on unsafe
//! methods, and labels every response with `Cache-Status`.

pub mod config;
pub mod directives;
pub mod freshness;
pub mod keys;

use core::time::Duration;

use weir_sdk::cache::{self, Lock, Serve};
use weir_sdk::{
    Answer, End, Method, Metric, Plugin, Request, RequestAction, Response, ResponseAction,
};

use config::Config;
use directives::{CacheControl, etag_matches, http_date};
use freshness::{Meta, RequestFacts, Reuse};
use keys::{CacheStatus, Index};

/// Counters shown by `status()` and as metrics.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    hits: u64,
    misses: u64,
    stored: u64,
    revalidated: u64,
    stale_served: u64,
    coalesced: u64,
    invalidations: u64,
}

impl Counts {
    const LEN: usize = 7;

    fn as_array(&self) -> [u64; Self::LEN] {
        [
            self.hits,
            self.misses,
            self.stored,
            self.revalidated,
            self.stale_served,
            self.coalesced,
            self.invalidations,
        ]
    }

    fn from_array(n: [u64; Self::LEN]) -> Self {
        let [
            hits,
            misses,
            stored,
            revalidated,
            stale_served,
            coalesced,
            invalidations,
        ] = n;
        Self {
            hits,
            misses,
            stored,
            revalidated,
            stale_served,
            coalesced,
            invalidations,
        }
    }
}

/// The plugin's metrics (`cache_<counter>_total`).
#[derive(Debug, Default)]
struct Metrics {
    hits: Option<Metric>,
    misses: Option<Metric>,
    stored: Option<Metric>,
    revalidated: Option<Metric>,
    stale_served: Option<Metric>,
    coalesced: Option<Metric>,
    invalidations: Option<Metric>,
}

fn bump(counter: &mut u64, metric: &Option<Metric>) {
    *counter += 1;
    if let Some(m) = metric {
        let _ = m.record(1.0);
    }
}

/// The cache plugin.
#[derive(Debug, Default)]
pub struct HttpCache {
    cfg: Config,
    counts: Counts,
    metrics: Metrics,
}

/// Why the request was forwarded (`Cache-Status` `fwd=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Fwd {
    /// Not a cacheable request.
    #[default]
    Bypass,
    /// No entry for the URL.
    UriMiss,
    /// Entries for the URL, none for these selecting headers.
    VaryMiss,
    /// A stale entry.
    Stale,
    /// The request's directives forbade using the entry.
    Request,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Stale => "stale",
            Self::Request => "request",
        }
    }
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    /// The primary key of a cacheable (GET/HEAD) request.
    primary: Option<String>,
    /// The primary key of an unsafe request (to invalidate).
    invalidate: Option<String>,
    variant: Option<String>,
    fwd: Fwd,
    req: RequestFacts,
    head: bool,
    request_ms: u64,
    /// The stale entry we may fall back on: its metadata, age and status.
    stale: Option<(Meta, u64, u16)>,
    /// We added conditional headers (a 304 is ours to resolve).
    revalidating: bool,
    /// This request waited for another's fetch.
    collapsed: bool,
}

fn header(req: &Request, name: &str) -> Option<String> {
    // Every line: a list such as `Cache-Control` may come split over lines.
    req.header_joined(name).ok().flatten()
}

impl HttpCache {
    fn status_member(&self) -> CacheStatus {
        CacheStatus::new(&self.cfg.name)
    }

    /// The stored response answers a client's own conditional request.
    fn client_not_modified(req: &Request) -> bool {
        if let Some(inm) = header(req, "if-none-match") {
            return cache::stored_header("etag")
                .ok()
                .flatten()
                .is_some_and(|etag| etag_matches(&inm, &etag));
        }
        let ims = header(req, "if-modified-since").and_then(|v| http_date(&v));
        let lm = cache::stored_header("last-modified")
            .ok()
            .flatten()
            .and_then(|v| http_date(&v));
        matches!((ims, lm), (Some(ims), Some(lm)) if lm <= ims)
    }

    fn serve(
        &mut self,
        key: &str,
        meta: &Meta,
        age: u64,
        req: &Request,
        detail: Option<&str>,
    ) -> RequestAction {
        let ttl = meta.lifetime as i64 - age as i64;
        let mut cs = self.status_member().hit().ttl(ttl);
        if let Some(d) = detail {
            cs = cs.detail(d);
        }
        if ttl <= 0 {
            bump(&mut self.counts.stale_served, &self.metrics.stale_served);
        }
        bump(&mut self.counts.hits, &self.metrics.hits);
        let mut serve = Serve::new(key.as_bytes())
            .header("age", &age.to_string())
            .header("cache-status", cs.as_str());
        if Self::client_not_modified(req) {
            serve = serve.not_modified();
        }
        RequestAction::Serve(serve)
    }

    /// Leads or joins the fetch of `key`; `Some` if this call must return
    /// `Continue` at once (the host waits and calls `on_request` again).
    fn coalesce(&mut self, ctx: &mut Ctx, key: &str) -> Option<RequestAction> {
        if !self.cfg.coalesce || ctx.head {
            return None;
        }
        let wait = Duration::from_millis(self.cfg.coalesce_wait_ms);
        match cache::lock(key.as_bytes(), wait) {
            Ok(Lock::Follower) if !wait.is_zero() => {
                ctx.collapsed = true;
                bump(&mut self.counts.coalesced, &self.metrics.coalesced);
                Some(RequestAction::Continue)
            }
            _ => None,
        }
    }

    fn on_cacheable_request(
        &mut self,
        ctx: &mut Ctx,
        req: &mut Request,
        primary: String,
    ) -> RequestAction {
        let range = ["range", "if-match", "if-unmodified-since", "if-range"]
            .iter()
            .any(|h| header(req, h).is_some());
        ctx.primary = Some(primary.clone());
        if range {
            // Partial and precondition requests go upstream; their 206/412 are not stored.
            ctx.fwd = Fwd::Bypass;
            return RequestAction::Continue;
        }
        let index = weir_sdk::host::cache_get(keys::index_key(&primary).as_bytes())
            .ok()
            .flatten()
            .and_then(|b| Index::decode(&b));
        let Some(index) = index else {
            ctx.fwd = Fwd::UriMiss;
            return self.miss(ctx, &primary);
        };
        let variant = index.variant(&primary, |n| header(req, n));
        ctx.variant = Some(variant.clone());
        let entry = cache::lookup(variant.as_bytes()).ok().flatten();
        let Some((entry, meta)) = entry.and_then(|e| keys::decode_meta(&e.meta).map(|m| (e, m)))
        else {
            ctx.fwd = if index.names.is_empty() {
                Fwd::UriMiss
            } else {
                Fwd::VaryMiss
            };
            return self.miss(ctx, &variant);
        };
        let age = meta.initial_age + entry.resident.as_secs();
        match freshness::reuse(&meta, age, &ctx.req.cc) {
            Reuse::Fresh => {
                let detail = ctx.collapsed.then_some("collapsed");
                return self.serve(&variant, &meta, age, req, detail);
            }
            Reuse::StaleWhileRevalidate => {
                // Someone is revalidating it already: serve it stale now.
                if let Ok(Lock::Follower) = cache::lock(variant.as_bytes(), Duration::ZERO) {
                    return self.serve(&variant, &meta, age, req, Some("stale-while-revalidate"));
                }
                ctx.fwd = Fwd::Stale;
            }
            Reuse::Revalidate(by_request) => {
                ctx.fwd = if by_request { Fwd::Request } else { Fwd::Stale };
                if ctx.req.cc.only_if_cached {
                    return self.only_if_cached();
                }
                if let Some(wait) = self.coalesce(ctx, &variant) {
                    return wait;
                }
            }
        }
        ctx.stale = Some((meta, age, entry.status));
        self.add_conditionals(ctx, req);
        bump(&mut self.counts.misses, &self.metrics.misses);
        RequestAction::Continue
    }

    fn only_if_cached(&self) -> RequestAction {
        let cs = self.status_member().fwd("miss").detail("only-if-cached");
        RequestAction::Answer(Answer::new(504).header("cache-status", cs.as_str()))
    }

    fn miss(&mut self, ctx: &mut Ctx, lock_key: &str) -> RequestAction {
        if ctx.req.cc.only_if_cached {
            return self.only_if_cached();
        }
        if let Some(wait) = self.coalesce(ctx, lock_key) {
            return wait;
        }
        bump(&mut self.counts.misses, &self.metrics.misses);
        RequestAction::Continue
    }

    /// Revalidation (RFC 9111 §4.3.1): the stored validators, unless the
    /// client sent its own conditionals.
    fn add_conditionals(&self, ctx: &mut Ctx, req: &mut Request) {
        if header(req, "if-none-match").is_some() || header(req, "if-modified-since").is_some() {
            return;
        }
        if let Some(etag) = cache::stored_header("etag").ok().flatten() {
            ctx.revalidating = req.set_header("if-none-match", &etag).is_ok();
        } else if let Some(lm) = cache::stored_header("last-modified").ok().flatten() {
            ctx.revalidating = req.set_header("if-modified-since", &lm).is_ok();
        }
    }
}

#[weir_sdk::plugin]
impl Plugin for HttpCache {
    type Config = Config;
    type Ctx = Ctx;

    fn configure(&mut self, cfg: Config) -> Result<(), String> {
        cfg.validate()?;
        self.cfg = cfg;
        let m = |name: &str| Metric::counter(name).ok();
        self.metrics = Metrics {
            hits: m("cache_hits_total"),
            misses: m("cache_misses_total"),
            stored: m("cache_stored_total"),
            revalidated: m("cache_revalidated_total"),
            stale_served: m("cache_stale_served_total"),
            coalesced: m("cache_coalesced_total"),
            invalidations: m("cache_invalidations_total"),
        };
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> RequestAction {
        // A follower's second run keeps knowing that it waited.
        *ctx = Ctx {
            collapsed: ctx.collapsed,
            request_ms: cache::unix_time_ms(),
            ..Ctx::default()
        };
        let method = req.method();
        let primary = keys::primary(
            &self.cfg.key,
            req.authority().ok().flatten().as_deref(),
            &req.path().unwrap_or_default(),
            req.query().ok().flatten().as_deref(),
        );
        match method {
            Method::Get | Method::Head => {}
            Method::Options | Method::Trace | Method::Connect => return RequestAction::Continue,
            _ => {
                ctx.invalidate = Some(primary);
                return RequestAction::Continue;
            }
        }
        ctx.head = method == Method::Head;
        let cc_field = header(req, "cache-control");
        let mut cc = cc_field
            .as_deref()
            .map(CacheControl::parse)
            .unwrap_or_default();
        // RFC 9111 §5.4: Pragma: no-cache counts only without Cache-Control.
        if cc_field.is_none() && header(req, "pragma").is_some_and(|p| p.contains("no-cache")) {
            cc.no_cache = true;
        }
        ctx.req = RequestFacts {
            is_get: method == Method::Get,
            cc,
            authorization: header(req, "authorization").is_some(),
        };
        self.on_cacheable_request(ctx, req, primary)
    }

    fn on_response(&mut self, ctx: &mut Ctx, req: &Request, resp: &mut Response) -> ResponseAction {
        self.respond(ctx, req, resp)
    }

    fn on_end(&mut self, _: Ctx, _: &End) {}

    fn status(&self) -> String {
        let (entries, bytes) = cache::stats().unwrap_or((0, 0));
        let c = &self.counts;
        format!(
            r#"{{"entries":{entries},"bytes":{bytes},"hits":{},"misses":{},"stored":{},"revalidated":{},"stale_served":{},"coalesced":{},"invalidations":{}}}"#,
            c.hits, c.misses, c.stored, c.revalidated, c.stale_served, c.coalesced, c.invalidations
        )
    }

    /// The route's counts carry over a hot swap. The stored responses are
    /// the host's and stay without this.
    fn snapshot(&self) -> Vec<u8> {
        self.counts
            .as_array()
            .iter()
            .flat_map(|n| n.to_le_bytes())
            .collect()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut numbers = [0u64; Counts::LEN];
        if bytes.len() != numbers.len() * 8 {
            return Err(format!(
                "cache: a snapshot of {} bytes, expected {}",
                bytes.len(),
                numbers.len() * 8
            ));
        }
        for (n, chunk) in numbers.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            *n = u64::from_le_bytes(le);
        }
        self.counts = Counts::from_array(numbers);
        Ok(())
    }
}

mod respond;

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Harness, Outcome, TestRequest};

    use super::HttpCache;

    #[test]
    fn the_counts_survive_a_hot_swap() {
        let mut old = Harness::<HttpCache>::new("{}").unwrap();
        for _ in 0..3 {
            old.run(TestRequest::get("/a"), &[Outcome::status(200)]);
        }
        let before = old.status_json();
        assert_eq!(before["misses"], 3, "{before}");
        let snapshot = old.snapshot();
        let mut new = Harness::<HttpCache>::new("{}").unwrap();
        new.restore(&snapshot).unwrap();
        assert_eq!(new.status_json(), before);
        let error = new.restore(b"garbage").unwrap_err();
        assert!(error.contains("snapshot of 7 bytes"), "{error}");
    }
}
