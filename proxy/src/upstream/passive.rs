//! Passive ejection: plugins (the breaker, outlier detectors) mark an
//! endpoint bad with [`Upstream::eject`]. Like Envoy's outlier detection, the
//! n-th consecutive ejection lasts n × `base_ejection_time` (at most
//! `max_ejection_time`), and no more than `max_ejected_percent` of the
//! endpoints are ejected at once, so a misbehaving detector cannot empty
//! an upstream.

use std::sync::PoisonError;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::Upstream;

/// Why an ejection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EjectError {
    #[error("upstream {upstream} has no endpoint with id {id}")]
    UnknownEndpoint { upstream: String, id: u32 },
    #[error("endpoint {id} of upstream {upstream} is already ejected")]
    AlreadyEjected { upstream: String, id: u32 },
    #[error(
        "upstream {upstream}: {ejected} of {total} endpoints are ejected, the most allowed is {allowed}"
    )]
    CapReached {
        upstream: String,
        ejected: usize,
        total: usize,
        allowed: usize,
    },
}

/// How many of `total` endpoints may be ejected at once: `percent` of them
/// rounded down, but at least one unless `percent` is 0.
pub fn max_ejected(total: usize, percent: u8) -> usize {
    if percent == 0 || total == 0 {
        return 0;
    }
    (total * usize::from(percent) / 100).max(1)
}

impl Upstream {
    /// Ejects endpoint `id` for a time that grows with repeated ejections.
    /// Returns the ejection's length.
    pub fn eject(&self, id: u32, reason: &str) -> Result<Duration, EjectError> {
        self.eject_with(id, reason, None)
    }

    /// Applies a plugin's mark (`endpoint_mark`): ejects endpoint `id` for
    /// the time the plugin asked (at most `max_ejection_time`, within the
    /// same cap), or ends its ejection when `duration` is zero.
    pub fn apply_mark(
        &self,
        id: u32,
        duration: Duration,
        plugin: &str,
    ) -> Result<Duration, EjectError> {
        if duration.is_zero() {
            self.uneject(id);
            return Ok(Duration::ZERO);
        }
        self.eject_with(id, plugin, Some(duration))
    }

    fn eject_with(
        &self,
        id: u32,
        reason: &str,
        asked: Option<Duration>,
    ) -> Result<Duration, EjectError> {
        let _serial = self
            .eject_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let set = self.endpoints();
        let Some(endpoint) = set.get(id) else {
            return Err(EjectError::UnknownEndpoint {
                upstream: self.name.clone(),
                id,
            });
        };
        if endpoint.stats.is_ejected() {
            return Err(EjectError::AlreadyEjected {
                upstream: self.name.clone(),
                id,
            });
        }
        let total = set.all().len();
        let ejected = set.all().iter().filter(|e| e.stats.is_ejected()).count();
        let allowed = max_ejected(total, self.spec.passive.max_ejected_percent);
        if ejected >= allowed {
            self.metrics.ejections_refused.fetch_add(1, Relaxed);
            tracing::warn!(
                upstream = %self.name,
                endpoint = %endpoint.authority,
                reason,
                ejected,
                allowed,
                "ejection refused: too many endpoints ejected"
            );
            return Err(EjectError::CapReached {
                upstream: self.name.clone(),
                ejected,
                total,
                allowed,
            });
        }
        let passive = &self.spec.passive;
        let now = Instant::now();
        let duration = endpoint.stats.update_note(|note| {
            // An endpoint that stayed in for a whole max_ejection_time since
            // its last ejection ended starts over at the base time.
            let calm = note.ejection_ends.is_none_or(|ended| {
                now.saturating_duration_since(ended) >= passive.max_ejection_time
            });
            note.ejections = if calm {
                1
            } else {
                note.ejections.saturating_add(1)
            };
            let duration = asked
                .unwrap_or_else(|| passive.base_ejection_time.saturating_mul(note.ejections))
                .min(passive.max_ejection_time);
            note.ejection_reason = Some(reason.to_owned());
            note.ejection_ends = Some(now + duration);
            duration
        });
        endpoint.stats.eject_for(duration);
        self.metrics.ejections.fetch_add(1, Relaxed);
        tracing::warn!(
            upstream = %self.name,
            endpoint = %endpoint.authority,
            reason,
            seconds = duration.as_secs_f64(),
            "endpoint ejected"
        );
        Ok(duration)
    }

    /// Ends endpoint `id`'s ejection early (e.g. a plugin saw it recover).
    /// Returns whether it was ejected.
    pub fn uneject(&self, id: u32) -> bool {
        let set = self.endpoints();
        let Some(endpoint) = set.get(id) else {
            return false;
        };
        let was = endpoint.stats.is_ejected();
        endpoint.stats.clear_ejection();
        endpoint
            .stats
            .update_note(|note| note.ejection_ends = Some(Instant::now()));
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_allows_at_least_one() {
        assert_eq!(max_ejected(2, 10), 1);
        assert_eq!(max_ejected(10, 10), 1);
        assert_eq!(max_ejected(10, 50), 5);
        assert_eq!(max_ejected(3, 100), 3);
        assert_eq!(max_ejected(3, 0), 0);
        assert_eq!(max_ejected(0, 50), 0);
    }
}
