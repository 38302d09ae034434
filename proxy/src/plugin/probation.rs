//! Probation of a newly swapped-in plugin version. For a window after the
//! swap, each new instance keeps the instance of the previous version it
//! replaced. A call of the new version that fails — a trap (deadline,
//! memory, panic) or a refusal while it backs off after traps — counts; at
//! the `max_failures`-th within the window the probation trips: from that
//! moment every call of a new instance goes to the previous one (so no
//! further request meets the bad version, even one already holding the new
//! chain), and the server is woken to put the previous version back into
//! the route table and registry. A window that ends clean promotes the new
//! version and lets the previous instances go.
//!
//! Tripping only flips a flag: the instances check it under their own
//! lock, so no instance lock is ever taken while another is held here.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::PluginInstance;

const WATCHING: u8 = 0;
const TRIPPED: u8 = 1;
const ENDED: u8 = 2;

/// One new version's probation.
pub struct Probation {
    plugin: String,
    hash: [u8; 32],
    until: Instant,
    max_failures: u32,
    failures: AtomicU32,
    state: AtomicU8,
    reason: Mutex<Option<String>>,
    /// The new instances (weak: the chains own them; each keeps its
    /// previous instance until the probation ends).
    links: Mutex<Vec<Weak<PluginInstance>>>,
    tripped: Notify,
}

impl std::fmt::Debug for Probation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probation")
            .field("plugin", &self.plugin)
            .field("failures", &self.failures())
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Probation {
    /// A probation of `window` for the version of `plugin` with `hash`.
    pub fn new(plugin: &str, hash: [u8; 32], window: Duration, max_failures: u32) -> Arc<Self> {
        Arc::new(Self {
            plugin: plugin.to_owned(),
            hash,
            until: Instant::now() + window,
            max_failures: max_failures.max(1),
            failures: AtomicU32::new(0),
            state: AtomicU8::new(WATCHING),
            reason: Mutex::default(),
            links: Mutex::default(),
            tripped: Notify::new(),
        })
    }

    /// Puts `new` on probation, with `previous` to take over if it trips.
    pub fn watch(self: &Arc<Self>, new: &Arc<PluginInstance>, previous: Arc<PluginInstance>) {
        new.enter_probation(Arc::clone(self), previous);
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(new));
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The SHA-256 of the version on probation.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Failed calls so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The failures that trip it.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// Time left in the window.
    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// Whether the window is still being watched (not tripped nor ended).
    pub fn watching(&self) -> bool {
        self.state.load(Ordering::Acquire) == WATCHING
    }

    /// Whether it tripped (the version is being or was rolled back).
    pub fn has_tripped(&self) -> bool {
        self.state.load(Ordering::Acquire) == TRIPPED
    }

    /// Why it tripped: the failure that tripped it.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A call of a new instance failed (called with that instance's lock
    /// held: nothing here takes an instance's lock).
    pub(super) fn failed_call(&self, why: &str) {
        if !self.watching() || Instant::now() >= self.until {
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < self.max_failures
            || self
                .state
                .compare_exchange(WATCHING, TRIPPED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
            "{failures} failed calls within the probation window; the last: {why}"
        ));
        self.tripped.notify_one();
    }

    /// Waits until it trips.
    pub async fn wait_tripped(&self) {
        self.tripped.notified().await;
    }

    /// Ends the probation without a rollback (the window ended clean, or a
    /// newer version replaced this one): the previous instances are let go.
    /// Returns whether it was still being watched.
    pub fn end(&self) -> bool {
        let ended = self
            .state
            .compare_exchange(WATCHING, ENDED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ended {
            let links =
                std::mem::take(&mut *self.links.lock().unwrap_or_else(PoisonError::into_inner));
            for new in links.iter().filter_map(Weak::upgrade) {
                new.leave_probation();
            }
        }
        ended
    }
}
