//! The retry budget (Finagle's and Linkerd's idea): over a sliding window,
//! retries may be at most `ratio` × requests, plus `min_per_second` × the
//! window so a quiet route can still retry. When an outage makes every
//! request fail, retries stay a fraction of the traffic instead of
//! multiplying it.

/// Buckets per window: the window slides in tenths.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    requests: u64,
    retries: u64,
}

/// Counts of requests and retries over the last window.
#[derive(Debug, Default)]
pub struct Budget {
    buckets: [Bucket; BUCKETS],
    width_ns: u64,
    ratio: f64,
    min_per_window: f64,
}

impl Budget {
    pub fn new(window_ns: u64, ratio: f64, min_per_second: f64) -> Self {
        Self {
            buckets: [Bucket::default(); BUCKETS],
            width_ns: (window_ns / BUCKETS as u64).max(1),
            ratio,
            min_per_window: min_per_second * window_ns as f64 / 1e9,
        }
    }

    fn bucket(&mut self, now: u64) -> &mut Bucket {
        let epoch = now / self.width_ns;
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }

    /// (requests, retries) in the window ending at `now`.
    pub fn totals(&self, now: u64) -> (u64, u64) {
        let epoch = now / self.width_ns;
        self.buckets
            .iter()
            .filter(|b| b.epoch + (BUCKETS as u64) > epoch && b.epoch <= epoch)
            .fold((0, 0), |(q, r), b| (q + b.requests, r + b.retries))
    }

    /// Takes over another instance's window totals (a hot swap): they are
    /// counted now, so they expire a whole window later rather than bucket
    /// by bucket; the ratio of retries to requests is kept.
    pub fn carry(&mut self, requests: u64, retries: u64, now: u64) {
        let b = self.bucket(now);
        b.requests = b.requests.saturating_add(requests);
        b.retries = b.retries.saturating_add(retries);
    }

    pub fn request(&mut self, now: u64) {
        self.bucket(now).requests += 1;
    }

    /// Spends one retry if the budget allows it.
    pub fn try_retry(&mut self, now: u64) -> bool {
        if self.available(now) < 1.0 {
            return false;
        }
        self.bucket(now).retries += 1;
        true
    }

    /// Retries still allowed in the window.
    pub fn available(&self, now: u64) -> f64 {
        let (requests, retries) = self.totals(now);
        self.ratio * requests as f64 + self.min_per_window - retries as f64
    }
}
