//! Services the host offers to every plugin instance of an engine: the
//! cache store ([`crate::cache_store`]) and the shared counters —
//! in-process for now; a Redis-backed counter store for several proxies can
//! replace them behind the same calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache_store::{CacheStore, CacheStoreConfig};

/// Services shared by every plugin instance of one engine: the cache store
/// and the shared counters (in-process for now).
#[derive(Debug)]
pub struct HostServices {
    origin: Instant,
    cache: Arc<CacheStore>,
    counters: Mutex<HashMap<Box<str>, i64>>,
}

impl Default for HostServices {
    fn default() -> Self {
        Self::new(CacheStoreConfig::default())
    }
}

impl HostServices {
    /// Services with a cache store of the given size.
    pub fn new(cache: CacheStoreConfig) -> Self {
        Self {
            origin: Instant::now(),
            cache: Arc::new(CacheStore::new(cache)),
            counters: Mutex::default(),
        }
    }

    /// Time since the engine started (the plugins' monotonic clock).
    pub(crate) fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The HTTP cache store.
    pub fn cache(&self) -> &Arc<CacheStore> {
        &self.cache
    }

    pub(crate) fn cache_get(&self, key: &[u8]) -> Option<Bytes> {
        self.cache.get_value(key)
    }

    pub(crate) fn cache_put(&self, key: &[u8], value: Bytes, ttl: Duration) {
        self.cache.put_value(key, value, ttl);
    }

    /// Adds `delta` to a shared counter and returns the new value.
    pub fn counter_add(&self, name: &str, delta: i64) -> i64 {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = counters.get_mut(name) {
            *v = v.wrapping_add(delta);
            return *v;
        }
        counters.insert(name.into(), delta);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_counters_add() {
        let s = HostServices::default();
        s.cache_put(b"k", Bytes::from_static(b"v"), Duration::from_secs(60));
        assert_eq!(s.cache_get(b"k").as_deref(), Some(&b"v"[..]));
        s.cache_put(b"gone", Bytes::from_static(b"v"), Duration::ZERO);
        assert_eq!(s.cache_get(b"gone"), None);
        assert_eq!(s.counter_add("c", 2), 2);
        assert_eq!(s.counter_add("c", -5), -3);
    }
}
