//! The key table: one token bucket and in-flight count per key, bounded in
//! size. When full, keys that hold nothing (bucket refilled, nothing in
//! flight) are dropped first — forgetting them changes no decision — then
//! the least recently seen idle key.

use alloc::collections::BTreeMap;
use alloc::string::String;

use crate::Config;

#[derive(Debug, Clone, Copy)]
struct Entry {
    tokens: f64,
    refilled_ns: u64,
    in_flight: u32,
    seen_ns: u64,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    /// Out of tokens; one comes back in this many seconds (rounded up).
    Rate { retry_after_s: u64 },
    /// Too many in flight.
    Concurrency,
}

/// Buckets by key.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<String, Entry>,
    max: usize,
    in_flight: u64,
}

impl Table {
    pub fn new(max: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            max,
            in_flight: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Admits a request under `key` at `now`; `Ok(true)` if it now holds an
    /// in-flight slot (to release in `on_end`).
    pub fn admit(&mut self, c: &Config, key: &str, now: u64) -> Result<bool, Reject> {
        if !self.entries.contains_key(key) && self.entries.len() >= self.max {
            self.evict(c, now);
        }
        if !self.entries.contains_key(key) && self.entries.len() >= self.max {
            // Every key is busy: count the newcomer under the shared key "",
            // so the table stays bounded and the newcomer is still limited.
            return self.admit_entry(c, "", now);
        }
        self.admit_entry(c, key, now)
    }

    fn admit_entry(&mut self, c: &Config, key: &str, now: u64) -> Result<bool, Reject> {
        let e = match self.entries.get_mut(key) {
            Some(e) => e,
            None => self.entries.entry(key.into()).or_insert(Entry {
                tokens: c.burst,
                refilled_ns: now,
                in_flight: 0,
                seen_ns: now,
            }),
        };
        e.seen_ns = now;
        if let Some(max) = c.max_concurrent
            && e.in_flight >= max
        {
            return Err(Reject::Concurrency);
        }
        if let Some(rate) = c.rate {
            let elapsed = now.saturating_sub(e.refilled_ns) as f64 / 1e9;
            e.tokens = (e.tokens + elapsed * rate).min(c.burst);
            e.refilled_ns = now;
            if e.tokens < 1.0 {
                let wait = (1.0 - e.tokens) / rate;
                return Err(Reject::Rate {
                    retry_after_s: wait.ceil() as u64,
                });
            }
            e.tokens -= 1.0;
        }
        if c.max_concurrent.is_some() {
            e.in_flight += 1;
            self.in_flight += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Releases the in-flight slot of `key` (or of the shared key, if the
    /// request was counted there).
    pub fn release(&mut self, key: &str) {
        let k = if self.entries.contains_key(key) {
            key
        } else {
            ""
        };
        if let Some(e) = self.entries.get_mut(k)
            && e.in_flight > 0
        {
            e.in_flight -= 1;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// The buckets worth carrying over a hot swap: `(key, tokens, refilled
    /// at)`. In-flight counts stay behind: those requests end on the old
    /// instance.
    pub fn buckets(&self) -> alloc::vec::Vec<(String, f64, u64)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.tokens, e.refilled_ns))
            .collect()
    }

    /// Takes over buckets from a snapshot, as far as the table's bound
    /// allows; tokens above the (possibly new) burst are cut to it, and a
    /// refill time after `now` counts as `now`.
    pub fn restore(&mut self, buckets: alloc::vec::Vec<(String, f64, u64)>, c: &Config, now: u64) {
        for (key, tokens, refilled_ns) in buckets.into_iter().take(self.max) {
            if !tokens.is_finite() {
                continue;
            }
            self.entries.insert(
                key,
                Entry {
                    tokens: tokens.clamp(0.0, c.burst),
                    refilled_ns: refilled_ns.min(now),
                    in_flight: 0,
                    seen_ns: now,
                },
            );
        }
    }

    fn evict(&mut self, c: &Config, now: u64) {
        let full = |e: &Entry| {
            let refill = c.rate.map_or(c.burst, |r| {
                e.tokens + now.saturating_sub(e.refilled_ns) as f64 / 1e9 * r
            });
            e.in_flight == 0 && refill >= c.burst
        };
        self.entries.retain(|k, e| k.is_empty() || !full(e));
        if self.entries.len() < self.max {
            return;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(k, e)| !k.is_empty() && e.in_flight == 0)
            .min_by_key(|(_, e)| e.seen_ns)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.entries.remove(&k);
        }
    }
}
