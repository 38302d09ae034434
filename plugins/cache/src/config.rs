//! The plugin's settings (every one documented, with its default, in the
//! crate's README.md). Unknown or out-of-range settings are rejected.

use serde::Deserialize;

/// What goes into the primary cache key besides the path.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// Include the authority (`Host`), lowercased.
    pub host: bool,
    /// Include the query string.
    pub query: bool,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            host: true,
            query: true,
        }
    }
}

/// The cache plugin's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The cache's name in `Cache-Status` (an RFC 8941 token).
    pub name: String,
    /// Cap on any freshness lifetime, seconds.
    pub max_ttl_secs: u64,
    /// Heuristic freshness: this fraction of the time since `Last-Modified`.
    pub heuristic_fraction: f64,
    /// Cap on heuristic freshness, seconds.
    pub heuristic_max_secs: u64,
    /// Cap on `stale-while-revalidate` and `stale-if-error` windows, seconds.
    pub max_stale_secs: u64,
    /// How long a stale entry with a validator is kept for revalidation, seconds.
    pub stale_keep_secs: u64,
    /// Largest body stored, bytes (`0`: the host's maximum object size).
    pub max_object_bytes: u64,
    /// Behave as a shared cache: do not store `private` responses, honour
    /// `s-maxage` and `proxy-revalidate`, store responses to requests with
    /// `Authorization` only when the response allows it.
    pub shared: bool,
    /// Store responses that carry `Set-Cookie` (off: they would be served
    /// to every client).
    pub store_set_cookie: bool,
    /// Coalesce concurrent misses for one key into one upstream request.
    pub coalesce: bool,
    /// Longest a coalesced request waits for the one in flight, milliseconds.
    pub coalesce_wait_ms: u64,
    /// Primary key composition.
    pub key: KeyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "weir".into(),
            max_ttl_secs: 86_400,
            heuristic_fraction: 0.1,
            heuristic_max_secs: 86_400,
            max_stale_secs: 86_400,
            stale_keep_secs: 3_600,
            max_object_bytes: 0,
            shared: true,
            store_set_cookie: false,
            coalesce: true,
            coalesce_wait_ms: 5_000,
            key: KeyConfig::default(),
        }
    }
}

impl Config {
    /// Checks ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let token = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
        };
        if !token(&self.name) {
            return Err(format!(
                "name: {:?} is not a token (letters, digits, -._~…)",
                self.name
            ));
        }
        if self.max_ttl_secs == 0 {
            return Err("max_ttl_secs: must be at least 1".into());
        }
        if !(self.heuristic_fraction > 0.0 && self.heuristic_fraction <= 1.0) {
            return Err(format!(
                "heuristic_fraction: {} is not in (0, 1]",
                self.heuristic_fraction
            ));
        }
        if self.coalesce_wait_ms > 60_000 {
            return Err(format!(
                "coalesce_wait_ms: {} is over the limit of 60000",
                self.coalesce_wait_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        let c: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse("{}").ok(), Some(Config::default()));
        let c = parse(r#"{"max_ttl_secs": 60, "key": {"query": false}}"#).ok();
        assert_eq!(c.as_ref().map(|c| c.max_ttl_secs), Some(60));
        assert_eq!(c.map(|c| (c.key.host, c.key.query)), Some((true, false)));
    }

    #[test]
    fn bad_values_are_rejected_with_the_setting_named() {
        for (json, needle) in [
            (r#"{"max_ttl_secs": 0}"#, "max_ttl_secs"),
            (r#"{"heuristic_fraction": 1.5}"#, "heuristic_fraction"),
            (r#"{"name": "a b"}"#, "name"),
            (r#"{"coalesce_wait_ms": 120000}"#, "coalesce_wait_ms"),
            (r#"{"max_tll_secs": 5}"#, "max_tll_secs"),
            (r#"{"shared": "yes"}"#, "invalid type"),
        ] {
            let err = parse(json).err().unwrap_or_default();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
