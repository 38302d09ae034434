//! The host's HTTP cache store (`docs/architecture.md`, "The request path"):
//! the cache plugin decides what to store and for how long; this module holds
//! the bytes. It is size-bounded in bytes (moka, weighed by body, headers and
//! metadata), refuses objects over a maximum size, tees response bodies into
//! itself while they stream to the client ([`TeeBody`]), serves hits without
//! copying the body, and coalesces concurrent fetches of one key
//! ([`flight`]).
//!
//! Besides stored responses it holds small plain values (`cache_put` /
//! `cache_get` of the ABI), which the cache plugin uses for its Vary index.
//!
//! What travels with one request lives in [`RequestCache`], a field of the
//! plugin runtime's `RequestView`: the entry the plugin looked up, the
//! coalescing lock or wait, and the store directive the server carries out.

mod flight;
mod request;
mod tee;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode, header};
use moka::Expiry;
use moka::sync::Cache;

pub use flight::{Acquired, FlightGuard, Wait};
pub use request::{RequestCache, StoreDirective};
pub use tee::TeeBody;

/// How big the store may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStoreConfig {
    /// Most bytes (bodies, headers, keys and metadata) the store keeps; the
    /// least useful entries are evicted beyond it.
    pub capacity_bytes: u64,
    /// Largest body one entry may have; a longer body streams through
    /// without being stored.
    pub max_object_bytes: u64,
}

impl Default for CacheStoreConfig {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 << 20,
            max_object_bytes: 8 << 20,
        }
    }
}

/// A stored response: head, body, and what the plugin attached.
#[derive(Debug)]
pub struct StoredResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, hop-by-hop fields removed.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The plugin's metadata (freshness lifetime, initial age, …), opaque here.
    pub meta: Bytes,
    /// When the response was received (or last freshened by a 304).
    pub stored_at: Instant,
    /// How long the store keeps it after `stored_at`.
    pub keep: Duration,
}

impl StoredResponse {
    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + self.meta.len() + headers + 128
    }
}

/// One slot of the store.
#[derive(Debug, Clone)]
enum Slot {
    Response(Arc<StoredResponse>),
    Value { value: Bytes, keep: Duration },
}

impl Slot {
    fn keep(&self) -> Duration {
        match self {
            Self::Response(r) => r.keep,
            Self::Value { keep, .. } => *keep,
        }
    }
}

/// Per-entry time to live: what the plugin asked for.
struct KeepFor;

impl Expiry<Box<[u8]>, Slot> for KeepFor {
    fn expire_after_create(&self, _: &Box<[u8]>, v: &Slot, _: Instant) -> Option<Duration> {
        Some(v.keep())
    }

    fn expire_after_update(
        &self,
        _: &Box<[u8]>,
        v: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep())
    }
}

/// The store; shared (behind an `Arc`) by every plugin instance of an engine
/// and by the bodies being teed into it.
pub struct CacheStore {
    config: CacheStoreConfig,
    cache: Cache<Box<[u8]>, Slot>,
    flights: flight::Flights,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("config", &self.config)
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish_non_exhaustive()
    }
}

/// Fields a cache never stores nor takes from a 304 (RFC 9111 §3.1, §3.2).
const NOT_STORED: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop fields, including those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(&NOT_STORED) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// An entry's weight in bytes, as the byte budget counts it.
fn weigh(key: &[u8], slot: &Slot) -> u32 {
    let w = key.len()
        + match slot {
            Slot::Response(r) => r.weight(),
            Slot::Value { value, .. } => value.len() + 64,
        };
    u32::try_from(w).unwrap_or(u32::MAX)
}

impl CacheStore {
    /// An empty store.
    // moka's weigher takes `&K`, and `K` is `Box<[u8]>`.
    #[allow(clippy::borrowed_box)]
    pub fn new(config: CacheStoreConfig) -> Self {
        let cache: Cache<Box<[u8]>, Slot> = Cache::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|k: &Box<[u8]>, v: &Slot| weigh(k, v))
            .expire_after(KeepFor)
            .build();
        Self {
            config,
            cache,
            flights: flight::Flights::default(),
        }
    }

    /// Its limits.
    pub fn config(&self) -> CacheStoreConfig {
        self.config
    }

    /// The stored response under `key`, if any and not expired.
    pub fn lookup(&self, key: &[u8]) -> Option<Arc<StoredResponse>> {
        match self.cache.get(key)? {
            Slot::Response(r) => Some(r),
            Slot::Value { .. } => None,
        }
    }

    /// Stores a complete response (what [`TeeBody`] calls when a body ends
    /// cleanly). Returns `false` if the body is over the maximum object size.
    pub fn insert(&self, key: &[u8], response: StoredResponse) -> bool {
        if response.body.len() as u64 > self.config.max_object_bytes {
            return false;
        }
        self.cache
            .insert(key.into(), Slot::Response(Arc::new(response)));
        true
    }

    /// Updates a stored response from a `304 Not Modified` (RFC 9111 §4.3.4):
    /// the 304's fields replace the stored ones (except hop-by-hop fields,
    /// `Content-Length` and `Content-Encoding`), and the entry starts a new
    /// life with `meta` and `keep`. `base` is the entry to update (the one
    /// the request looked up, even if evicted since). Returns the new entry.
    pub fn freshen(
        &self,
        key: &[u8],
        base: &StoredResponse,
        not_modified: &HeaderMap,
        meta: Bytes,
        keep: Duration,
    ) -> Arc<StoredResponse> {
        let mut update = not_modified.clone();
        strip_hop_by_hop(&mut update);
        update.remove(header::CONTENT_LENGTH);
        update.remove(header::CONTENT_ENCODING);
        let mut headers = base.headers.clone();
        for name in update.keys() {
            headers.remove(name);
        }
        for (name, value) in &update {
            headers.append(name.clone(), value.clone());
        }
        let fresh = Arc::new(StoredResponse {
            status: base.status,
            headers,
            body: base.body.clone(),
            meta,
            stored_at: Instant::now(),
            keep,
        });
        self.cache
            .insert(key.into(), Slot::Response(Arc::clone(&fresh)));
        fresh
    }

    /// A small plain value (the ABI's `cache_get`).
    pub fn get_value(&self, key: &[u8]) -> Option<Bytes> {
        match self.cache.get(key)? {
            Slot::Value { value, .. } => Some(value),
            Slot::Response(_) => None,
        }
    }

    /// Stores a small plain value for `keep` (the ABI's `cache_put`).
    pub fn put_value(&self, key: &[u8], value: Bytes, keep: Duration) {
        if keep.is_zero() {
            self.cache.invalidate(key);
            return;
        }
        self.cache.insert(key.into(), Slot::Value { value, keep });
    }

    /// Removes whatever is stored under `key`; `true` if something was.
    pub fn invalidate(&self, key: &[u8]) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Claims the fetch of `key`: the first caller leads (and holds the
    /// returned guard until its response is stored or abandoned), the others
    /// get a [`Wait`] that ends when the leader's guard is dropped.
    pub fn acquire(self: &Arc<Self>, key: &[u8]) -> Acquired {
        self.flights.acquire(self, key)
    }

    /// Entries now stored (approximate until pending maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Bytes now stored, as weighed (approximate until pending maintenance runs).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Runs moka's pending maintenance (evictions, counts) now.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests;
