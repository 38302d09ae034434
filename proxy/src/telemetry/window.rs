//! A sliding window of counts and sums in fixed time buckets (e.g. the last
//! 60 s in 5-s buckets), lock-free, for the health report's rolling averages.
//! A bucket is reused once its slot falls out of the window; a record that
//! races a reset may be lost, which is harmless for an average.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Buckets in a window.
pub const BUCKETS: usize = 12;
/// Width of one bucket.
pub const BUCKET_WIDTH: Duration = Duration::from_secs(5);

struct Bucket {
    /// The time slot this bucket holds (1-based; 0 = never used).
    slot: AtomicU64,
    count: AtomicU64,
    sum: AtomicU64,
}

/// Counts and sums over the last `BUCKETS × BUCKET_WIDTH`.
pub struct Window {
    buckets: [Bucket; BUCKETS],
    epoch: Instant,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (count, sum) = self.totals();
        f.debug_struct("Window")
            .field("count", &count)
            .field("sum", &sum)
            .finish()
    }
}

impl Default for Window {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| Bucket {
                slot: AtomicU64::new(0),
                count: AtomicU64::new(0),
                sum: AtomicU64::new(0),
            }),
            epoch: Instant::now(),
        }
    }
}

impl Window {
    fn slot_now(&self) -> u64 {
        self.slot_at(Instant::now())
    }

    fn slot_at(&self, now: Instant) -> u64 {
        let width = BUCKET_WIDTH.as_millis().max(1);
        let since = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(since / width).unwrap_or(u64::MAX - 1) + 1
    }

    /// Adds one sample of `value` taken at `now` (a clock read the caller
    /// already made for its own figures).
    pub fn record(&self, value: u64, now: Instant) {
        let slot = self.slot_at(now);
        let bucket = &self.buckets[usize::try_from(slot).unwrap_or(0) % BUCKETS];
        let seen = bucket.slot.load(Relaxed);
        if seen != slot
            && bucket
                .slot
                .compare_exchange(seen, slot, Relaxed, Relaxed)
                .is_ok()
        {
            bucket.count.store(0, Relaxed);
            bucket.sum.store(0, Relaxed);
        }
        bucket.count.fetch_add(1, Relaxed);
        bucket.sum.fetch_add(value, Relaxed);
    }

    /// Samples and their sum within the window.
    pub fn totals(&self) -> (u64, u64) {
        let now = self.slot_now();
        let oldest = now.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let slot = b.slot.load(Relaxed);
                slot != 0 && slot >= oldest && slot <= now
            })
            .fold((0, 0), |(count, sum), b| {
                (count + b.count.load(Relaxed), sum + b.sum.load(Relaxed))
            })
    }

    /// The mean sample within the window, if any.
    pub fn mean(&self) -> Option<f64> {
        let (count, sum) = self.totals();
        (count > 0).then(|| sum as f64 / count as f64)
    }

    /// The window's length.
    pub fn span() -> Duration {
        BUCKET_WIDTH * u32::try_from(BUCKETS).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_recent_samples() {
        let window = Window::default();
        assert_eq!(window.mean(), None);
        for v in [10, 20, 30] {
            window.record(v, Instant::now());
        }
        assert_eq!(window.totals(), (3, 60));
        assert_eq!(window.mean(), Some(20.0));
    }

    #[test]
    fn old_buckets_fall_out() {
        let mut window = Window::default();
        window.record(5, Instant::now());
        // Pretend the sample is a whole window old.
        window.epoch = window
            .epoch
            .checked_sub(Window::span() + BUCKET_WIDTH)
            .unwrap();
        assert_eq!(window.totals(), (0, 0));
        window.record(7, Instant::now());
        assert_eq!(window.totals(), (1, 7));
    }
}
