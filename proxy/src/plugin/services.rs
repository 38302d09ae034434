//! Services the host offers to every plugin instance of an engine: the
//! cache store ([`crate::cache_store`]) and the shared counters. Counters are
//! in-process by default;
//! with [`HostServices::with_redis`] they live in Redis, so that several
//! proxies enforce one limit together (throttle's `global` mode).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache_store::{CacheStore, CacheStoreConfig};

/// In-process counters: name → (value, expiry).
type CounterMap = HashMap<Box<str>, (i64, Option<Instant>)>;

/// Services shared by every plugin instance of one engine: the cache store
/// and the shared counters.
#[derive(Debug)]
pub struct HostServices {
    origin: Instant,
    cache: Arc<CacheStore>,
    counters: Mutex<CounterMap>,
    redis: Option<RedisCounters>,
}

/// Most in-process counters; past it, expired ones are swept first.
const COUNTERS_MAX: usize = 100_000;

impl Default for HostServices {
    fn default() -> Self {
        Self::new(CacheStoreConfig::default())
    }
}

/// The Redis URL is not valid.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL for the shared counters: {0}")]
pub struct RedisUrlError(String);

impl HostServices {
    /// Services with a cache store of the given size and in-process counters.
    pub fn new(cache: CacheStoreConfig) -> Self {
        Self {
            origin: Instant::now(),
            cache: Arc::new(CacheStore::new(cache)),
            counters: Mutex::default(),
            redis: None,
        }
    }

    /// The same services with the shared counters in Redis at `url` (see
    /// [`HostServices::with_redis`]).
    pub fn using_redis(mut self, url: &str, timeout: Duration) -> Result<Self, RedisUrlError> {
        let client = redis::Client::open(url).map_err(|e| RedisUrlError(e.to_string()))?;
        self.redis = Some(RedisCounters {
            client,
            conn: Mutex::new(None),
            timeout,
            outage: Mutex::default(),
        });
        Ok(self)
    }

    /// Services whose shared counters live in Redis at `url`
    /// (`redis://host:port/db`). The connection is made on first use and
    /// re-made after an error; each counter call is one round trip, bounded
    /// by `timeout`. While Redis cannot be reached, counter calls answer
    /// `UNAVAILABLE` at once (a reconnect is tried at most every
    /// [`RECONNECT_BACKOFF`]) and the plugin decides (throttle falls back to
    /// a local limit by default). The outage is logged once per
    /// [`OUTAGE_REPORT_EVERY`], with the number of failed calls.
    pub fn with_redis(url: &str, timeout: Duration) -> Result<Self, RedisUrlError> {
        Self::default().using_redis(url, timeout)
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

    /// Adds `delta` to a shared counter and returns the new value (in-process
    /// counters only; `0` if the Redis store is unreachable).
    pub fn counter_add(&self, name: &str, delta: i64) -> i64 {
        self.counter_add_ttl(name, delta, None).unwrap_or_default()
    }

    /// Adds `delta` to a shared counter that, when `ttl` is given, expires
    /// `ttl` after it was created (then counts from zero again); returns the
    /// new value, or `None` if the Redis store cannot be reached.
    pub fn counter_add_ttl(&self, name: &str, delta: i64, ttl: Option<Duration>) -> Option<i64> {
        if let Some(r) = &self.redis {
            return r.add(name, delta, ttl);
        }
        // The clock is read only when an expiry is involved, and then once.
        let mut clock = None;
        let mut now = || *clock.get_or_insert_with(Instant::now);
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.len() >= COUNTERS_MAX && !counters.contains_key(name) {
            let now = now();
            counters.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        }
        let entry = match counters.get_mut(name) {
            Some(e) => e,
            None => counters.entry(name.into()).or_insert((0, None)),
        };
        if entry.1.is_some_and(|e| e <= now()) {
            *entry = (0, None);
        }
        if entry.1.is_none() && entry.0 == 0 {
            entry.1 = ttl.map(|t| now() + t);
        }
        entry.0 = entry.0.wrapping_add(delta);
        Some(entry.0)
    }
}

/// While Redis is unreachable, a reconnect is tried at most this often;
/// calls in between fail at once instead of each waiting for a connect.
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// An outage is reported at most this often (with a count), not per call.
pub const OUTAGE_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Shared counters in Redis: `INCRBY`, and `PEXPIRE` on creation, in one
/// script so that a counter never lives without its expiry.
struct RedisCounters {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    timeout: Duration,
    outage: Mutex<Outage>,
}

/// What is known of a Redis outage in progress.
#[derive(Debug, Default)]
struct Outage {
    /// No reconnect before this.
    retry_at: Option<Instant>,
    /// When the outage was last reported, and calls failed since.
    reported_at: Option<Instant>,
    failed_since_report: u64,
}

impl Outage {
    /// A call failed: back off reconnecting, report if it is time.
    fn failed(&mut self, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        self.retry_at = Some(now + RECONNECT_BACKOFF);
        self.failed_since_report += 1;
        if self
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= OUTAGE_REPORT_EVERY)
        {
            tracing::warn!(
                %error,
                failed_calls = self.failed_since_report,
                "shared counters: Redis unreachable; counter calls fail until it is back"
            );
            self.reported_at = Some(now);
            self.failed_since_report = 0;
        }
    }

    /// A call went through: the outage, if any, is over.
    fn ok(&mut self) {
        if self.reported_at.is_some() {
            tracing::info!(
                failed_calls = self.failed_since_report,
                "shared counters: Redis reachable again"
            );
        }
        *self = Self::default();
    }

    /// Whether a reconnect may be tried now.
    fn may_retry(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const INCR_SCRIPT: &str = "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) \
     if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then \
     redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return v";

impl RedisCounters {
    fn add(&self, name: &str, delta: i64, ttl: Option<Duration>) -> Option<i64> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
            if !outage.may_retry() {
                outage.failed_since_report += 1;
                return None;
            }
            match self.connect() {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    outage.failed(&e);
                    return None;
                }
            }
        }
        let c = conn.as_mut()?;
        let ttl_ms = ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let r: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(INCR_SCRIPT)
            .arg(1)
            .arg(format!("weir:counter:{name}"))
            .arg(delta)
            .arg(ttl_ms)
            .query(c);
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(v) => {
                outage.ok();
                Some(v)
            }
            Err(e) => {
                outage.failed(&e);
                // Reconnect (after the back-off): the connection may be broken.
                *conn = None;
                None
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let c = self.client.get_connection_with_timeout(self.timeout)?;
        c.set_read_timeout(Some(self.timeout))?;
        c.set_write_timeout(Some(self.timeout))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_per_interval_and_backs_off_reconnects() {
        let mut outage = Outage::default();
        assert!(outage.may_retry());
        for _ in 0..100 {
            outage.failed(&"connection refused");
        }
        // Reported at the first failure only; the rest are counted.
        assert_eq!(outage.failed_since_report, 99);
        assert!(!outage.may_retry(), "no reconnect during the back-off");
        outage.ok();
        assert!(outage.may_retry());
        assert_eq!(outage.failed_since_report, 0);
    }

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

    #[test]
    fn windowed_counters_expire() {
        let s = HostServices::default();
        let ttl = Some(Duration::from_millis(30));
        assert_eq!(s.counter_add_ttl("w", 1, ttl), Some(1));
        assert_eq!(s.counter_add_ttl("w", 1, ttl), Some(2));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.counter_add_ttl("w", 1, ttl), Some(1));
    }

    #[test]
    fn unreachable_redis_is_unavailable() {
        let s = HostServices::with_redis("redis://127.0.0.1:1/", Duration::from_millis(200))
            .unwrap_or_default();
        assert!(HostServices::with_redis("not a url", Duration::from_secs(1)).is_err());
        assert_eq!(s.counter_add_ttl("x", 1, None), None);
    }
}
