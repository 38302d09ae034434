//! Metrics a plugin defines by name (counter, gauge, histogram). They live in
//! the instance's store, survive instance replacement, and are read by the
//! admin API's `/metrics` through [`super::PluginInstance::metrics`].

use weir_abi::{MetricKind, limits, status};

/// Upper bounds of histogram buckets (plus an implicit `+Inf`). Generic
/// because the plugin chooses the unit; Prometheus' defaults, widened.
pub const HISTOGRAM_BOUNDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0, 1000.0,
];

/// One metric's current value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Its name, as the plugin defined it.
    pub name: String,
    /// Its kind.
    pub kind: MetricKind,
    /// Counter total, gauge value, or histogram sum.
    pub value: f64,
    /// Histogram only: observations per bucket of [`HISTOGRAM_BOUNDS`], then `+Inf`.
    pub buckets: Vec<u64>,
}

/// The metrics of one plugin instance.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricsRegistry {
    entries: Vec<MetricSample>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl MetricsRegistry {
    /// Defines a metric (or finds it, if defined again with the same kind);
    /// returns its id or a status code.
    pub fn define(&mut self, kind: MetricKind, name: &str) -> i32 {
        if !valid_name(name) {
            return status::BAD_ARGUMENT;
        }
        if let Some(i) = self.entries.iter().position(|e| e.name == name) {
            return if self.entries[i].kind == kind {
                i as i32
            } else {
                status::BAD_ARGUMENT
            };
        }
        if self.entries.len() >= limits::METRICS_MAX {
            return status::TOO_LARGE;
        }
        let buckets = if kind == MetricKind::Histogram {
            vec![0; HISTOGRAM_BOUNDS.len() + 1]
        } else {
            Vec::new()
        };
        self.entries.push(MetricSample {
            name: name.to_owned(),
            kind,
            value: 0.0,
            buckets,
        });
        (self.entries.len() - 1) as i32
    }

    /// Records a value; returns a status code.
    pub fn record(&mut self, id: i32, v: f64) -> i32 {
        let Some(e) = usize::try_from(id)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return status::NOT_FOUND;
        };
        if !v.is_finite() {
            return status::BAD_ARGUMENT;
        }
        match e.kind {
            MetricKind::Counter if v < 0.0 => return status::BAD_ARGUMENT,
            MetricKind::Counter => e.value += v,
            MetricKind::Gauge => e.value = v,
            MetricKind::Histogram => {
                e.value += v;
                let i = HISTOGRAM_BOUNDS
                    .iter()
                    .position(|b| v <= *b)
                    .unwrap_or(HISTOGRAM_BOUNDS.len());
                e.buckets[i] += 1;
            }
        }
        status::OK
    }

    /// Adds the counters and histograms of `old` (a replaced version's) to
    /// the same-named ones here, so they never go back across a swap;
    /// gauges keep this version's value.
    pub fn carry(&mut self, old: &MetricsRegistry) {
        for before in &old.entries {
            let Some(now) = self
                .entries
                .iter_mut()
                .find(|e| e.name == before.name && e.kind == before.kind)
            else {
                continue;
            };
            match now.kind {
                MetricKind::Counter => now.value += before.value,
                MetricKind::Gauge => {}
                MetricKind::Histogram => {
                    now.value += before.value;
                    for (n, b) in now.buckets.iter_mut().zip(&before.buckets) {
                        *n += b;
                    }
                }
            }
        }
    }

    /// The current values.
    pub fn samples(&self) -> Vec<MetricSample> {
        self.entries.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_record_and_reject() {
        let mut r = MetricsRegistry::default();
        let c = r.define(MetricKind::Counter, "hits_total");
        assert_eq!(c, 0);
        assert_eq!(r.define(MetricKind::Counter, "hits_total"), 0);
        assert_eq!(
            r.define(MetricKind::Gauge, "hits_total"),
            status::BAD_ARGUMENT
        );
        assert_eq!(r.define(MetricKind::Gauge, "9bad"), status::BAD_ARGUMENT);
        let h = r.define(MetricKind::Histogram, "lat");
        assert_eq!(r.record(c, 2.0), status::OK);
        assert_eq!(r.record(c, -1.0), status::BAD_ARGUMENT);
        assert_eq!(r.record(h, 0.3), status::OK);
        assert_eq!(r.record(99, 1.0), status::NOT_FOUND);
        let s = r.samples();
        assert_eq!(s[0].value, 2.0);
        assert_eq!(s[1].buckets.iter().sum::<u64>(), 1);

        // A new version's registry carries the old counters and histograms.
        let mut next = MetricsRegistry::default();
        let c2 = next.define(MetricKind::Counter, "hits_total");
        next.define(MetricKind::Histogram, "lat");
        next.define(MetricKind::Gauge, "open");
        assert_eq!(next.record(c2, 1.0), status::OK);
        next.carry(&r);
        let s = next.samples();
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].buckets.iter().sum::<u64>(), 1);
        assert_eq!(s[2].value, 0.0);
    }
}
