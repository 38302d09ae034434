//! The RFC 9111 decisions, as pure functions of header facts: may a
//! response be stored (§3), how long is it fresh (§4.2.1, heuristics
//! §4.2.2), how old is it (§4.2.3), and may a stored one be reused for a
//! request (§4.2, §4.2.4, RFC 5861).

use crate::config::Config;
use crate::directives::{CacheControl, http_date};

/// Statuses heuristically cacheable (RFC 9110 §15.1), minus 206 (this cache
/// does not store partial content).
pub const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// What the cache needs to know of a response's header fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// The status.
    pub status: u16,
    /// Its `Cache-Control`.
    pub cc: CacheControl,
    /// `Date`, Unix seconds.
    pub date: Option<u64>,
    /// `Expires`: `Some(None)` if present but invalid (then it is stale).
    pub expires: Option<Option<u64>>,
    /// `Last-Modified`, Unix seconds.
    pub last_modified: Option<u64>,
    /// `Age`, seconds.
    pub age: Option<u64>,
    /// Whether it has a validator (`ETag` or `Last-Modified`).
    pub has_validator: bool,
    /// `Vary`, if present.
    pub vary: Option<String>,
    /// Whether it sets a cookie.
    pub set_cookie: bool,
}

impl ResponseFacts {
    /// Builds the facts from a header lookup (`get(name)` → first value).
    pub fn from_headers(status: u16, get: impl Fn(&str) -> Option<String>) -> Self {
        let cc = get("cache-control")
            .map(|v| CacheControl::parse(&v))
            .unwrap_or_default();
        let last_modified = get("last-modified").and_then(|v| http_date(&v));
        let etag = get("etag").is_some();
        Self {
            status,
            cc,
            date: get("date").and_then(|v| http_date(&v)),
            expires: get("expires").map(|v| http_date(&v)),
            last_modified,
            age: get("age").and_then(|v| crate::directives::delta_seconds(v.trim())),
            has_validator: etag || last_modified.is_some(),
            vary: get("vary"),
            set_cookie: get("set-cookie").is_some(),
        }
    }
}

/// What the cache needs to know of the request that fetched a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// GET (only GET responses are stored).
    pub is_get: bool,
    /// Its `Cache-Control`.
    pub cc: CacheControl,
    /// It carries `Authorization`.
    pub authorization: bool,
}

/// Whether the response has explicit freshness information.
fn explicit(f: &ResponseFacts, shared: bool) -> bool {
    (shared && f.cc.s_maxage.is_some()) || f.cc.max_age.is_some() || f.expires.is_some()
}

/// May this response be stored (RFC 9111 §3, §3.5)? `Err` says why not,
/// in words fit for a `Cache-Status` detail.
pub fn storable(req: &RequestFacts, f: &ResponseFacts, cfg: &Config) -> Result<(), &'static str> {
    let shared = cfg.shared;
    if !req.is_get {
        return Err("method");
    }
    if f.status < 200 || f.status == 206 || f.status == 304 {
        return Err("status");
    }
    if req.cc.no_store || f.cc.no_store {
        return Err("no-store");
    }
    if shared && f.cc.private {
        return Err("private");
    }
    if shared
        && req.authorization
        && !(f.cc.public || f.cc.s_maxage.is_some() || f.cc.must_revalidate)
    {
        return Err("authorization");
    }
    if f.vary
        .as_deref()
        .is_some_and(|v| v.split(',').any(|n| n.trim() == "*"))
    {
        return Err("vary-star");
    }
    if f.set_cookie && !cfg.store_set_cookie {
        return Err("set-cookie");
    }
    let heuristic = HEURISTIC_STATUSES.contains(&f.status);
    if !(f.cc.public || explicit(f, shared) || heuristic) {
        return Err("not cacheable");
    }
    Ok(())
}

/// The freshness lifetime in seconds (RFC 9111 §4.2.1), capped at the
/// configured maximum; `true` if it is heuristic. `now` is the response time.
pub fn lifetime(f: &ResponseFacts, cfg: &Config, now: u64) -> (u64, bool) {
    let cap = cfg.max_ttl_secs;
    if cfg.shared
        && let Some(s) = f.cc.s_maxage
    {
        return (s.min(cap), false);
    }
    if let Some(m) = f.cc.max_age {
        return (m.min(cap), false);
    }
    if let Some(expires) = f.expires {
        // An invalid Expires means "already expired".
        let base = f.date.unwrap_or(now);
        return (
            expires.map_or(0, |e| e.saturating_sub(base)).min(cap),
            false,
        );
    }
    // Heuristic freshness (§4.2.2): only for heuristically cacheable
    // statuses (or `public`), from Last-Modified, a fraction of its age.
    if (HEURISTIC_STATUSES.contains(&f.status) || f.cc.public)
        && let Some(lm) = f.last_modified
    {
        let since = f.date.unwrap_or(now).saturating_sub(lm);
        let h = (since as f64 * cfg.heuristic_fraction) as u64;
        return (h.min(cfg.heuristic_max_secs).min(cap), true);
    }
    (0, false)
}

/// The corrected initial age in seconds (RFC 9111 §4.2.3), from the `Age`
/// and `Date` fields and when the request was sent and the response came
/// back (Unix milliseconds).
///
/// The response delay is rounded to the nearest second: a fast upstream
/// (a few milliseconds) adds no age, as in other caches, while a slow one
/// (1.5 s) still counts. Rounding up made every fresh response a second old.
pub fn initial_age(f: &ResponseFacts, request_ms: u64, response_ms: u64) -> u64 {
    let response_time = response_ms / 1000;
    let apparent = f.date.map_or(0, |d| response_time.saturating_sub(d));
    let delay = response_ms.saturating_sub(request_ms).saturating_add(500) / 1000;
    let corrected = f.age.unwrap_or(0).saturating_add(delay);
    apparent.max(corrected)
}

/// What is kept with a stored response (serialized by [`crate::meta`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// Corrected initial age, seconds.
    pub initial_age: u64,
    /// Freshness lifetime, seconds.
    pub lifetime: u64,
    /// The lifetime is heuristic.
    pub heuristic: bool,
    /// `no-cache`: always revalidate.
    pub no_cache: bool,
    /// `must-revalidate` (or, in a shared cache, `proxy-revalidate` or
    /// `s-maxage`): never serve it stale.
    pub must_revalidate: bool,
    /// `stale-while-revalidate` window, seconds.
    pub swr: u64,
    /// `stale-if-error` window, seconds.
    pub sie: u64,
    /// It has a validator, so a stale copy can be revalidated.
    pub has_validator: bool,
}

impl Meta {
    /// The metadata for a response about to be stored.
    pub fn new(f: &ResponseFacts, cfg: &Config, request_ms: u64, response_ms: u64) -> Self {
        let (lifetime, heuristic) = lifetime(f, cfg, response_ms / 1000);
        let shared = cfg.shared;
        Self {
            initial_age: initial_age(f, request_ms, response_ms),
            lifetime,
            heuristic,
            no_cache: f.cc.no_cache,
            must_revalidate: f.cc.must_revalidate
                || (shared && (f.cc.proxy_revalidate || f.cc.s_maxage.is_some())),
            swr: f
                .cc
                .stale_while_revalidate
                .unwrap_or(0)
                .min(cfg.max_stale_secs),
            sie: f.cc.stale_if_error.unwrap_or(0).min(cfg.max_stale_secs),
            has_validator: f.has_validator,
        }
    }

    /// How long the host should keep the entry, in seconds: while fresh,
    /// then while it may be served stale, then (with a validator) a while
    /// longer for revalidation. `0`: not worth storing.
    pub fn keep(&self, cfg: &Config) -> u64 {
        let fresh = self.lifetime.saturating_sub(self.initial_age);
        let stale = if self.must_revalidate {
            0
        } else {
            self.swr.max(self.sie)
        };
        let revalidate = if self.has_validator {
            cfg.stale_keep_secs
        } else {
            0
        };
        if fresh == 0 && revalidate == 0 {
            return 0;
        }
        fresh + stale.max(revalidate)
    }
}

/// What a stored response may be used for, for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it: fresh (or stale within the request's `max-stale`).
    Fresh,
    /// Stale, inside its `stale-while-revalidate` window: serve it while
    /// one request revalidates.
    StaleWhileRevalidate,
    /// Revalidate (or refetch) before using it; `true` if it is because
    /// the request asked (`no-cache`, `max-age`, `min-fresh`).
    Revalidate(bool),
}

/// Decides whether the stored response (its metadata, its current `age`)
/// may be reused for a request with directives `req` (RFC 9111 §4.2,
/// §5.2.1; RFC 5861 §3).
pub fn reuse(m: &Meta, age: u64, req: &CacheControl) -> Reuse {
    if m.no_cache {
        return Reuse::Revalidate(false);
    }
    if req.no_cache {
        return Reuse::Revalidate(true);
    }
    let fresh = m.lifetime > age;
    let remaining = m.lifetime.saturating_sub(age);
    if fresh {
        let too_old = req.max_age.is_some_and(|a| age > a);
        let not_fresh_enough = req.min_fresh.is_some_and(|f| remaining < f);
        if too_old || not_fresh_enough {
            return Reuse::Revalidate(true);
        }
        return Reuse::Fresh;
    }
    if m.must_revalidate {
        return Reuse::Revalidate(false);
    }
    let staleness = age - m.lifetime;
    if req.max_age.is_none()
        && let Some(max_stale) = req.max_stale
        && max_stale.is_none_or(|s| staleness <= s)
    {
        return Reuse::Fresh;
    }
    if m.swr > 0 && staleness <= m.swr && req.max_age.is_none() {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate(false)
}

/// Whether a stale stored response may answer an error (RFC 5861 §4).
pub fn stale_if_error(m: &Meta, age: u64) -> bool {
    m.sie > 0 && !m.must_revalidate && !m.no_cache && age.saturating_sub(m.lifetime) <= m.sie
}

#[cfg(test)]
mod tests;
