//! `Cache-Control` parsing (RFC 9111 §5.2) and the other header fields the
//! cache reads: pure functions, unit-tested natively.

/// Delta-seconds too large to represent become this (RFC 9111 §1.2.2).
pub const DELTA_MAX: u64 = 2_147_483_648;

/// The directives of one `Cache-Control` field (request or response). A
/// directive given twice keeps its first value (RFC 9111 §4.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age`; `Some(0)` if its value is invalid (treated as stale).
    pub max_age: Option<u64>,
    /// `s-maxage` (shared caches).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (qualified forms are treated as unqualified: stricter).
    pub no_cache: bool,
    /// `private` (qualified forms are treated as unqualified: stricter).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// Request `max-stale`: `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    /// Request `min-fresh`.
    pub min_fresh: Option<u64>,
    /// Request `only-if-cached`.
    pub only_if_cached: bool,
}

/// Parses delta-seconds: digits only, saturating at [`DELTA_MAX`].
pub fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

/// Splits a field value on commas outside quoted strings.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

impl CacheControl {
    /// Parses a field value; unknown directives are ignored.
    pub fn parse(value: &str) -> Self {
        let mut cc = Self::default();
        for item in split_list(value) {
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (item, None),
            };
            let secs = || arg.and_then(delta_seconds);
            match name.to_ascii_lowercase().as_str() {
                // An invalid max-age makes the response stale (§4.2.1).
                "max-age" if cc.max_age.is_none() => cc.max_age = Some(secs().unwrap_or(0)),
                "s-maxage" if cc.s_maxage.is_none() => cc.s_maxage = Some(secs().unwrap_or(0)),
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "must-revalidate" => cc.must_revalidate = true,
                "proxy-revalidate" => cc.proxy_revalidate = true,
                "stale-while-revalidate" if cc.stale_while_revalidate.is_none() => {
                    cc.stale_while_revalidate = secs();
                }
                "stale-if-error" if cc.stale_if_error.is_none() => cc.stale_if_error = secs(),
                "max-stale" if cc.max_stale.is_none() => {
                    cc.max_stale = Some(arg.and_then(delta_seconds));
                }
                "min-fresh" if cc.min_fresh.is_none() => cc.min_fresh = secs(),
                "only-if-cached" => cc.only_if_cached = true,
                _ => {}
            }
        }
        cc
    }
}

/// HTTP dates are parsed by the SDK, shared with the other policies.
pub use weir_sdk::http_date::parse as http_date;

/// Whether an entity tag in a stored `ETag` matches one listed in
/// `If-None-Match` (weak comparison, RFC 9110 §8.8.3.2; `*` matches any).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let stored = opaque(etag);
    split_list(if_none_match).any(|t| t == "*" || opaque(t) == stored)
}

#[cfg(test)]
mod tests;
