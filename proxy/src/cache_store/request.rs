//! The cache state one request carries through the chain (a field of
//! `RequestView`, so the host functions reach it during any hook): the entry
//! the plugin looked up, the coalescing lock or wait, and the store
//! directive that the server carries out on the response body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::{CacheStore, FlightGuard, StoredResponse, TeeBody, Wait};

/// Cache state of one request. The server only needs
/// [`RequestCache::take_store`]; everything else is the runtime's.
#[derive(Debug, Default)]
pub struct RequestCache {
    /// The entry the plugin last looked up (kept alive for `cache_serve`,
    /// `cache_freshen` and the `Cached` header map, even if evicted since).
    pub(crate) pinned: Option<(Box<[u8]>, Arc<StoredResponse>)>,
    /// This request leads the fetch of a key.
    pub(crate) lock: Option<FlightGuard>,
    /// This request must wait for another's fetch before `on_request` runs again.
    pub(crate) wait: Option<Wait>,
    /// It already waited once (a second `cache_lock` answers `Pass`).
    pub(crate) waited: bool,
    /// The response must be stored.
    pub(crate) store: Option<StoreDirective>,
}

impl RequestCache {
    /// The wait a plugin's `cache_lock` asked for in the hook that just ran.
    pub(crate) fn take_wait(&mut self) -> Option<Wait> {
        self.wait.take()
    }

    /// An outer layer asked for a retry: the attempt's response is discarded,
    /// so is the order to store it.
    pub(crate) fn discard_attempt(&mut self) {
        self.store = None;
        self.wait = None;
    }

    /// The chain is done: keep the store directive only if the final outcome
    /// is an upstream response, hand it the coalescing lock (released when
    /// the body is stored or abandoned), and release the rest now.
    pub(crate) fn settle(&mut self, is_response: bool) {
        self.wait = None;
        self.pinned = None;
        if !is_response {
            self.store = None;
        }
        match &mut self.store {
            Some(d) => d.lock = self.lock.take(),
            None => self.lock = None,
        }
    }

    /// The store directive, if the chain's final outcome is an upstream
    /// response that the cache plugin decided to store. The server wraps the
    /// response body with [`StoreDirective::tee`] (or stores an in-memory
    /// body with [`StoreDirective::store_full`]); dropping it instead just
    /// releases waiting followers.
    pub fn take_store(&mut self) -> Option<StoreDirective> {
        self.store.take()
    }
}

/// "Store this response": made by the cache plugin's `cache_store` in
/// `on_response`, carried out by the server on the body.
pub struct StoreDirective {
    pub(crate) store: Arc<CacheStore>,
    pub(crate) key: Box<[u8]>,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) meta: Bytes,
    pub(crate) keep: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) stored_at: Instant,
    pub(crate) lock: Option<FlightGuard>,
}

impl std::fmt::Debug for StoreDirective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDirective")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("status", &self.status)
            .field("keep", &self.keep)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl StoreDirective {
    /// A directive for `store` (the runtime makes these; public for tests
    /// and for servers that store responses themselves).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<CacheStore>,
        key: &[u8],
        status: StatusCode,
        mut headers: HeaderMap,
        meta: Bytes,
        keep: Duration,
        max_bytes: u64,
    ) -> Self {
        super::strip_hop_by_hop(&mut headers);
        let max_bytes = match max_bytes {
            0 => store.config.max_object_bytes,
            n => n.min(store.config.max_object_bytes),
        };
        Self {
            store,
            key: key.into(),
            status,
            headers,
            meta,
            keep,
            max_bytes,
            stored_at: Instant::now(),
            lock: None,
        }
    }

    /// The key the response will be stored under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Largest body it will store.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Wraps the response body: frames pass through unchanged and are
    /// copied (by reference) aside; when the body ends cleanly the response
    /// is stored. Over `max_bytes`, on an error, or if dropped early, nothing
    /// is stored.
    pub fn tee<B>(self, body: B) -> TeeBody<B>
    where
        B: http_body::Body<Data = Bytes>,
    {
        TeeBody::new(body, self)
    }

    /// Stores a body that is already complete; `false` if it is too large.
    pub fn store_full(self, body: Bytes) -> bool {
        if body.len() as u64 > self.max_bytes {
            return false;
        }
        let Self {
            store,
            key,
            status,
            headers,
            meta,
            keep,
            stored_at,
            lock,
            ..
        } = self;
        let stored = store.insert(
            &key,
            StoredResponse {
                status,
                headers,
                body,
                meta,
                stored_at,
                keep,
            },
        );
        // Followers wake only once the entry is in.
        drop(lock);
        stored
    }
}
