//! Sliding windows of call outcomes for the rate and slow-call modes:
//! count-based (the last N calls) or time-based (the calls of the last
//! duration, in ten buckets).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

const FAILED: u8 = 1;
const SLOW: u8 = 2;
/// Buckets of a time-based window.
const BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

/// A window of outcomes.
#[derive(Debug)]
pub enum Window {
    /// The last `cap` calls.
    Count {
        ring: VecDeque<u8>,
        cap: usize,
        totals: Totals,
    },
    /// The calls of the last `BUCKETS × width_ns`.
    Time { buckets: Vec<Bucket>, width_ns: u64 },
}

impl Default for Window {
    fn default() -> Self {
        Self::count(1)
    }
}

impl Window {
    pub fn count(cap: usize) -> Self {
        Self::Count {
            ring: VecDeque::with_capacity(cap),
            cap,
            totals: Totals::default(),
        }
    }

    pub fn time(window_ns: u64) -> Self {
        Self::Time {
            buckets: alloc::vec![Bucket::default(); BUCKETS as usize],
            width_ns: (window_ns / BUCKETS).max(1),
        }
    }

    pub fn push(&mut self, now: u64, failed: bool, slow: bool) {
        match self {
            Self::Count { ring, cap, totals } => {
                if ring.len() == *cap
                    && let Some(old) = ring.pop_front()
                {
                    totals.calls -= 1;
                    totals.failures -= u32::from(old & FAILED != 0);
                    totals.slow -= u32::from(old & SLOW != 0);
                }
                let bits = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                ring.push_back(bits);
                totals.calls += 1;
                totals.failures += u32::from(failed);
                totals.slow += u32::from(slow);
            }
            Self::Time { buckets, width_ns } => {
                let epoch = now / *width_ns;
                let b = &mut buckets[(epoch % BUCKETS) as usize];
                if b.epoch != epoch {
                    *b = Bucket {
                        epoch,
                        ..Bucket::default()
                    };
                }
                b.calls += 1;
                b.failures += u32::from(failed);
                b.slow += u32::from(slow);
            }
        }
    }

    pub fn totals(&self, now: u64) -> Totals {
        match self {
            Self::Count { totals, .. } => *totals,
            Self::Time { buckets, width_ns } => {
                let epoch = now / *width_ns;
                buckets
                    .iter()
                    .filter(|b| b.calls > 0 && b.epoch <= epoch && b.epoch + BUCKETS > epoch)
                    .fold(Totals::default(), |t, b| Totals {
                        calls: t.calls + b.calls,
                        failures: t.failures + b.failures,
                        slow: t.slow + b.slow,
                    })
            }
        }
    }

    pub fn clear(&mut self) {
        match self {
            Self::Count { ring, totals, .. } => {
                ring.clear();
                *totals = Totals::default();
            }
            Self::Time { buckets, .. } => buckets.fill(Bucket::default()),
        }
    }
}
