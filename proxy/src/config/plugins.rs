//! The `[plugins]` table: where plugins come from, how they are run and
//! cached, and the host services they share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::raw::RawPlugins;
use super::{Diagnostic, Locator, bounded, defaults, duration_text};

/// Where plugins come from and how they are run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginSettings {
    /// The watched plugins directory; a plugin's name is its file's stem.
    pub dir: PathBuf,
    /// Where compiled plugins are cached across restarts.
    pub compile_cache: PathBuf,
    /// The key that authenticates the cache's entries (created 0600).
    pub compile_cache_key: PathBuf,
    /// Past this total size, the oldest cache entries are removed.
    pub compile_cache_max_bytes: usize,
    /// The longest one hook call may run before it is trapped.
    #[serde(with = "duration_text")]
    pub call_deadline: Duration,
    /// How long a swapped-in version stays on probation (zero: none).
    #[serde(with = "duration_text")]
    pub probation: Duration,
    /// Failed calls within the probation window that roll a version back.
    pub probation_max_traps: u32,
    /// The most linear memory one plugin instance may grow to.
    pub memory_limit_bytes: usize,
    /// On routes whose plugins may retry, request bodies up to this size are
    /// kept for replay; larger ones are sent once and never retried.
    pub replay_buffer_bytes: usize,
    /// The host cache store's size (bodies, heads, keys), shared by all routes.
    pub cache_capacity_bytes: usize,
    /// The largest body the cache store keeps.
    pub cache_max_object_bytes: usize,
    /// Where shared counters live when several proxies must agree (throttle's
    /// `global` mode): `redis://host:port/db`. `None`: in-process.
    pub redis_url: Option<String>,
    /// Longest one Redis round trip may take.
    #[serde(with = "duration_text")]
    pub redis_timeout: Duration,
}

/// Validates the `[plugins]` table; paths are relative to `base`, the
/// config file's directory.
pub(super) fn validate(
    raw: &RawPlugins,
    base: &Path,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> PluginSettings {
    let plugins_dir = base.join(raw.dir.as_deref().unwrap_or(defaults::PLUGINS_DIR));
    let key_file = match &raw.compile_cache_key {
        Some(path) => {
            let file = base.join(path.get_ref());
            if file.starts_with(&plugins_dir) {
                errors.push(locate.at(
                    path.span(),
                    format!(
                        "plugins.compile_cache_key {:?} is inside the plugins directory, where whoever deploys plugins could replace it; keep it elsewhere",
                        path.get_ref()
                    ),
                ));
            }
            file
        }
        None => base.join(defaults::COMPILE_CACHE_KEY),
    };
    PluginSettings {
        compile_cache: base.join(
            raw.compile_cache
                .as_deref()
                .unwrap_or(defaults::COMPILE_CACHE_DIR),
        ),
        compile_cache_key: key_file,
        compile_cache_max_bytes: bounded(
            errors,
            locate,
            raw.compile_cache_max_bytes.clone(),
            1 << 20..=1 << 40,
            "plugins.compile_cache_max_bytes",
        )
        .unwrap_or(defaults::COMPILE_CACHE_MAX_BYTES),
        dir: plugins_dir,
        call_deadline: raw.call_deadline.unwrap_or(defaults::CALL_DEADLINE),
        probation: raw.probation.unwrap_or(defaults::PROBATION),
        probation_max_traps: bounded(
            errors,
            locate,
            raw.probation_max_traps.clone(),
            1..=10_000,
            "plugins.probation_max_traps",
        )
        .map_or(defaults::PROBATION_MAX_TRAPS, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        }),
        memory_limit_bytes: bounded(
            errors,
            locate,
            raw.memory_limit_bytes.clone(),
            1 << 16..=1 << 32,
            "plugins.memory_limit_bytes",
        )
        .unwrap_or(defaults::MEMORY_LIMIT_BYTES),
        replay_buffer_bytes: bounded(
            errors,
            locate,
            raw.replay_buffer_bytes.clone(),
            0..=64 << 20,
            "plugins.replay_buffer_bytes",
        )
        .unwrap_or(defaults::REPLAY_BUFFER_BYTES),
        cache_capacity_bytes: bounded(
            errors,
            locate,
            raw.cache_capacity_bytes.clone(),
            0..=1 << 40,
            "plugins.cache_capacity_bytes",
        )
        .unwrap_or(defaults::CACHE_CAPACITY_BYTES),
        cache_max_object_bytes: bounded(
            errors,
            locate,
            raw.cache_max_object_bytes.clone(),
            0..=1 << 32,
            "plugins.cache_max_object_bytes",
        )
        .unwrap_or(defaults::CACHE_MAX_OBJECT_BYTES),
        redis_url: match &raw.redis_url {
            Some(url) if !url.get_ref().starts_with("redis://") => {
                errors.push(locate.at(
                    url.span(),
                    format!(
                        "plugins.redis_url {:?} must start with redis://",
                        crate::redact::redact_text(url.get_ref())
                    ),
                ));
                None
            }
            Some(url) => Some(url.get_ref().clone()),
            None => None,
        },
        redis_timeout: raw.redis_timeout.unwrap_or(defaults::REDIS_TIMEOUT),
    }
}
