//! Request coalescing: one fetch per key in flight. The first request for a
//! key leads and holds a [`FlightGuard`]; the others get a [`Wait`] that
//! ends when the guard is dropped — after the leader's response was stored,
//! or when the leader gave up (uncacheable response, error, client gone).
//! Waiting happens in the chain between plugin calls, never inside one, so a
//! follower does not hold its plugin instance's lock while it waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::CacheStore;

/// A fetch in flight: its generation and a receiver of the leader's channel.
type Flight = (u64, watch::Receiver<()>);

/// The fetches in flight, by key.
#[derive(Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<Box<[u8]>, Flight>>,
    next: AtomicU64,
}

/// What [`CacheStore::acquire`] gives.
#[derive(Debug)]
pub enum Acquired {
    /// Fetch it; followers wait until this guard is dropped.
    Leader(FlightGuard),
    /// Someone else is fetching it.
    Follower(Wait),
}

/// Held by the request fetching a key; dropping it wakes the followers.
pub struct FlightGuard {
    store: Arc<CacheStore>,
    key: Box<[u8]>,
    generation: u64,
    // Never sent on: dropping it is the signal.
    _done: watch::Sender<()>,
}

impl std::fmt::Debug for FlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightGuard")
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish_non_exhaustive()
    }
}

impl FlightGuard {
    /// The key this guard holds.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut map = self
            .store
            .flights
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            map.remove(&self.key);
        }
    }
}

/// A follower's wait for the leader of its key.
#[derive(Debug)]
pub struct Wait {
    done: watch::Receiver<()>,
    limit: Duration,
}

impl Wait {
    /// Sets the longest wait.
    pub(crate) fn with_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Waits until the leader is done or the limit passes; `true` if the
    /// leader finished in time.
    pub async fn wait(mut self) -> bool {
        let done = async {
            // The leader never sends: `changed` fails once its sender is gone.
            while self.done.changed().await.is_ok() {}
        };
        tokio::time::timeout(self.limit, done).await.is_ok()
    }
}

impl Flights {
    pub(super) fn acquire(&self, store: &Arc<CacheStore>, key: &[u8]) -> Acquired {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = map.get(key)
            && rx.has_changed().is_ok()
        {
            return Acquired::Follower(Wait {
                done: rx.clone(),
                limit: Duration::ZERO,
            });
        }
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(());
        map.insert(key.into(), (generation, rx));
        Acquired::Leader(FlightGuard {
            store: Arc::clone(store),
            key: key.into(),
            generation,
            _done: tx,
        })
    }
}
