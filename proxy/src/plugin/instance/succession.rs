//! Succession between versions of one route's plugin: a new version takes
//! over the old instance's state, counts and later calls in one locked
//! step, goes on probation with the old instance kept, and gives the calls
//! back if the probation trips.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::super::probation::Probation;
use super::{PluginInstance, Slot};

impl PluginInstance {
    /// Puts this new instance on `probation`, with `previous` (the instance
    /// it replaced) to take its calls if the probation trips.
    pub(in crate::plugin) fn enter_probation(
        &self,
        probation: Arc<Probation>,
        previous: Arc<PluginInstance>,
    ) {
        let _ = self.probation.set(probation);
        self.lock().previous = Some(previous);
    }

    /// The probation ended clean (or a newer version came): the previous
    /// instance is let go.
    pub(in crate::plugin) fn leave_probation(&self) {
        self.lock().previous = None;
    }

    pub(super) fn probation_tripped(&self) -> bool {
        self.probation.get().is_some_and(|p| p.has_tripped())
    }

    /// The instance that serves this one's route again because this one's
    /// probation tripped.
    pub fn rolled_back_to(&self) -> Option<Arc<PluginInstance>> {
        if self.probation_tripped() {
            self.lock().previous.clone()
        } else {
            None
        }
    }

    /// This instance serves again (its successor was rolled back): it stops
    /// sending calls there.
    pub fn reinstate(&self) {
        self.lock().successor = None;
    }

    /// Where this instance's calls go instead, if anywhere: decided under
    /// its lock, so a call that waited while a swap or a rollback happened
    /// goes where it now should.
    pub(super) fn elsewhere(&self, slot: &mut Slot) -> Option<Arc<PluginInstance>> {
        if self.probation_tripped() {
            return slot.previous.clone();
        }
        let next = slot.successor.as_ref()?;
        if next.probation_tripped() {
            // Its successor was rolled back: this version serves again.
            slot.successor = None;
            return None;
        }
        Some(Arc::clone(next))
    }

    /// Hands this instance's state, call counts and metric values to `new`
    /// (the same route and plugin, a new version), and sends every later
    /// call of this instance there — as one step under both locks, so a
    /// request still holding this version updates the state that serves and
    /// no update falls between the snapshot and the switch.
    pub fn hand_over_to(&self, new: &Arc<PluginInstance>, route: &str) {
        let mut new_slot = new.lock();
        let mut old_slot = self.lock();
        let snapshot = if self.plugin.hooks.snapshot && new.plugin.hooks.restore {
            self.snapshot_locked(&mut old_slot)
        } else {
            Ok(None)
        };
        let shared = Arc::clone(&old_slot.counts);
        let own = &new_slot.counts;
        shared
            .calls
            .fetch_add(own.calls.load(Ordering::Relaxed), Ordering::Relaxed);
        shared
            .traps
            .fetch_add(own.traps.load(Ordering::Relaxed), Ordering::Relaxed);
        new_slot.counts = shared;
        let old_metrics = match &old_slot.live {
            Some(live) => live.store.data().metrics.clone(),
            None => old_slot.metrics.clone(),
        };
        match new_slot.live.as_mut() {
            Some(live) => live.store.data_mut().metrics.carry(&old_metrics),
            None => new_slot.metrics.carry(&old_metrics),
        }
        old_slot.successor = Some(Arc::clone(new));
        drop(old_slot);
        match snapshot {
            Ok(Some(state)) => {
                if let Err(error) = new.restore_locked(&mut new_slot, Bytes::from(state)) {
                    tracing::warn!(plugin = new.name(), route, %error, "new version refused the old state; starting fresh");
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(plugin = self.name(), route, %error, "snapshot failed; starting fresh");
            }
        }
    }
}
