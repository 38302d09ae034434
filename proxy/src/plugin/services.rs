//! Services the host offers to every plugin instance of an engine: the
//! cache store and the shared counters — in-process for now; a Redis-backed
//! counter store for several proxies can replace them behind the same calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Services shared by every plugin instance of one engine: the cache store
/// and the shared counters (in-process for now).
/// Cache entries: key → (value, expiry).
type CacheMap = HashMap<Box<[u8]>, (Bytes, Instant)>;

#[derive(Debug)]
pub struct HostServices {
    origin: Instant,
    cache: Mutex<CacheMap>,
    counters: Mutex<HashMap<Box<str>, i64>>,
}

/// Most entries the in-memory cache store keeps before evicting.
const CACHE_ENTRIES_MAX: usize = 10_000;

impl Default for HostServices {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            cache: Mutex::default(),
            counters: Mutex::default(),
        }
    }
}

impl HostServices {
    /// Time since the engine started (the plugins' monotonic clock).
    pub(crate) fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(crate) fn cache_get(&self, key: &[u8]) -> Option<Bytes> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v.clone())
    }

    pub(crate) fn cache_put(&self, key: &[u8], value: Bytes, ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES_MAX && !cache.contains_key(key) {
            cache.retain(|_, (_, exp)| *exp > now);
            if cache.len() >= CACHE_ENTRIES_MAX {
                // Still full of live entries: drop an arbitrary one. A real
                // store (LRU, byte budget) replaces this with the cache plugin.
                let victim = cache.keys().next().cloned();
                if let Some(k) = victim {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(key.into(), (value, now + ttl));
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
