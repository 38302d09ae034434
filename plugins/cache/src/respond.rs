//! `on_response`: store, revalidate (304), serve stale on errors,
//! invalidate after unsafe methods, and label with `Cache-Status`.

use weir_sdk::cache::{self, Serve};
use weir_sdk::{Request, Response, ResponseAction};

use crate::freshness::{self, Meta, ResponseFacts};
use crate::keys::{self, CacheStatus, Index};
use crate::{Ctx, HttpCache, bump, header};

/// The path and query a `Location`/`Content-Location` value names, if it is
/// on `authority` (RFC 9111 §4.4: only same-origin URIs are invalidated).
pub fn same_origin_target(
    value: &str,
    authority: Option<&str>,
) -> Option<(String, Option<String>)> {
    let rest = if let Some(abs) = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
    {
        let (auth, path) = abs.split_at(abs.find('/').unwrap_or(abs.len()));
        if !authority.is_some_and(|a| a.eq_ignore_ascii_case(auth)) {
            return None;
        }
        if path.is_empty() { "/" } else { path }
    } else if value.starts_with('/') {
        value
    } else {
        return None;
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    Some(match rest.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (rest.to_owned(), None),
    })
}

impl HttpCache {
    fn invalidate_primary(&mut self, primary: &str) {
        if cache::invalidate(keys::index_key(primary).as_bytes()).unwrap_or(false) {
            bump(&mut self.counts.invalidations, &self.metrics.invalidations);
        }
    }

    /// After a successful unsafe request: the target and the URIs in
    /// `Location` and `Content-Location` (same origin only).
    fn invalidate_after(&mut self, primary: &str, req: &Request, resp: &Response) {
        self.invalidate_primary(primary);
        let authority = req.authority().ok().flatten();
        for name in ["location", "content-location"] {
            let Some(v) = resp.header(name).ok().flatten() else {
                continue;
            };
            if let Some((path, query)) = same_origin_target(&v, authority.as_deref()) {
                let k = keys::primary(&self.cfg.key, authority.as_deref(), &path, query.as_deref());
                self.invalidate_primary(&k);
            }
        }
    }

    fn index_keep_secs(&self) -> u64 {
        self.cfg.max_ttl_secs + self.cfg.stale_keep_secs.max(self.cfg.max_stale_secs)
    }

    pub(crate) fn respond(
        &mut self,
        ctx: &mut Ctx,
        req: &Request,
        resp: &mut Response,
    ) -> ResponseAction {
        let status = resp.status();
        if let Some(primary) = ctx.invalidate.clone() {
            if status.is_some_and(|s| (200..400).contains(&s)) && !resp.is_local_answer() {
                self.invalidate_after(&primary, req, resp);
            }
            return ResponseAction::Pass;
        }
        let Some(primary) = ctx.primary.clone() else {
            return ResponseAction::Pass;
        };
        let mut cs = self.status_member().fwd(ctx.fwd.as_str());
        if ctx.collapsed {
            cs = cs.collapsed();
        }
        if let Some(s) = status {
            cs = cs.fwd_status(s);
        }
        let failed =
            resp.error().is_some() || status.is_some_and(|s| matches!(s, 500 | 502 | 503 | 504));
        if failed
            && !resp.is_local_answer()
            && let (Some((meta, age, _)), Some(variant)) = (ctx.stale, ctx.variant.as_deref())
            && freshness::stale_if_error(&meta, age)
        {
            bump(&mut self.counts.stale_served, &self.metrics.stale_served);
            bump(&mut self.counts.hits, &self.metrics.hits);
            let ttl = meta.lifetime as i64 - age as i64;
            let cs = cs.hit().ttl(ttl).detail("stale-if-error");
            return ResponseAction::Serve(
                Serve::new(variant.as_bytes())
                    .header("age", &age.to_string())
                    .header("cache-status", cs.as_str()),
            );
        }
        let Some(status) = status else {
            return ResponseAction::Pass;
        };
        if resp.is_local_answer() {
            let _ = resp.append_header("cache-status", cs.detail("local answer").as_str());
            return ResponseAction::Pass;
        }
        if status == 304 && ctx.revalidating {
            return self.freshen(ctx, resp, cs);
        }
        let cs = if ctx.head || status == 304 {
            cs
        } else {
            self.maybe_store(ctx, req, resp, &primary, status, cs)
        };
        let _ = resp.append_header("cache-status", cs.as_str());
        ResponseAction::Pass
    }

    fn maybe_store(
        &mut self,
        ctx: &Ctx,
        req: &Request,
        resp: &Response,
        primary: &str,
        status: u16,
        cs: CacheStatus,
    ) -> CacheStatus {
        let facts = ResponseFacts::from_headers(status, |n| resp.header_joined(n).ok().flatten());
        if let Err(reason) = freshness::storable(&ctx.req, &facts, &self.cfg) {
            return cs.detail(reason);
        }
        let meta = Meta::new(&facts, &self.cfg, ctx.request_ms, cache::unix_time_ms());
        let keep = meta.keep(&self.cfg);
        if keep == 0 {
            return cs.detail("no freshness");
        }
        let index_key = keys::index_key(primary);
        let existing = weir_sdk::host::cache_get(index_key.as_bytes())
            .ok()
            .flatten()
            .and_then(|b| Index::decode(&b));
        let mut index = Index::from_vary(facts.vary.as_deref(), 0);
        index.nonce = match existing {
            Some(e) if e.names == index.names => e.nonce,
            _ => weir_sdk::host::random(),
        };
        let keep_index = self.index_keep_secs().saturating_mul(1000);
        if weir_sdk::host::cache_put(index_key.as_bytes(), &index.encode(), keep_index).is_err() {
            return cs.detail("index refused");
        }
        let variant = index.variant(primary, |n| header(req, n));
        let stored = cache::store(
            variant.as_bytes(),
            &keys::encode_meta(&meta),
            core::time::Duration::from_secs(keep),
            self.cfg.max_object_bytes,
        );
        match stored {
            Ok(()) => {
                bump(&mut self.counts.stored, &self.metrics.stored);
                cs.stored()
                    .ttl(meta.lifetime as i64 - meta.initial_age as i64)
            }
            Err(_) => cs.detail("store refused"),
        }
    }

    /// A 304 to our conditional request: refresh the stored response with
    /// the 304's fields and serve it (RFC 9111 §4.3.3, §4.3.4).
    fn freshen(&mut self, ctx: &Ctx, resp: &mut Response, cs: CacheStatus) -> ResponseAction {
        let (Some(variant), Some((_, _, stored_status))) = (ctx.variant.as_deref(), ctx.stale)
        else {
            return ResponseAction::Pass;
        };
        let facts = ResponseFacts::from_headers(stored_status, |n| {
            resp.header_joined(n)
                .ok()
                .flatten()
                .or_else(|| cache::stored_header(n).ok().flatten())
        });
        let meta = Meta::new(&facts, &self.cfg, ctx.request_ms, cache::unix_time_ms());
        let keep = meta.keep(&self.cfg).max(1);
        let keep = core::time::Duration::from_secs(keep);
        if cache::freshen(variant.as_bytes(), &keys::encode_meta(&meta), keep).is_err() {
            let _ = resp.append_header("cache-status", cs.detail("entry gone").as_str());
            return ResponseAction::Pass;
        }
        bump(&mut self.counts.revalidated, &self.metrics.revalidated);
        let age = meta.initial_age;
        let cs = cs.ttl(meta.lifetime as i64 - age as i64);
        ResponseAction::Serve(
            Serve::new(variant.as_bytes())
                .header("age", &age.to_string())
                .header("cache-status", cs.as_str()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::same_origin_target;

    #[test]
    fn only_same_origin_locations_are_invalidated() {
        let a = Some("example.com");
        assert_eq!(
            same_origin_target("/a?b=1", a),
            Some(("/a".into(), Some("b=1".into())))
        );
        assert_eq!(
            same_origin_target("http://EXAMPLE.com/x", a),
            Some(("/x".into(), None))
        );
        assert_eq!(
            same_origin_target("https://example.com", a),
            Some(("/".into(), None))
        );
        assert_eq!(same_origin_target("http://other.com/x", a), None);
        assert_eq!(same_origin_target("relative/path", a), None);
        assert_eq!(same_origin_target("/p#frag", a), Some(("/p".into(), None)));
    }
}
