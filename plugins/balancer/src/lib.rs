//! The `balancer` policy: chooses the endpoint of every attempt. Round
//! robin, smooth weighted round robin, random, least request and peak EWMA
//! (both with two random choices), and consistent hashing on the path, a
//! header or a cookie, with a ring or a Maglev table.
//!
//! The proxy offers only healthy endpoints (all of them if none is healthy).
//! A retry never goes to an endpoint the request already tried while an
//! untried one is offered; consistent hashing then walks on to the next
//! owner, so the retry is still stable. Settings: see `README.md`.

extern crate alloc;

mod config;
mod hash;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use weir_sdk::{Endpoint, Metric, Plugin, Request};

pub use config::{Algorithm, Config, HashOn, RawConfig};
use hash::{Maglev, Ring};

#[derive(Debug, Clone, Copy)]
struct Metrics {
    picks: Metric,
    all_tried: Metric,
    no_key: Metric,
}

/// The plugin.
#[derive(Default)]
pub struct Balancer {
    config: Config,
    metrics: Option<Metrics>,
    rr: usize,
    /// Smooth WRR: current weight per endpoint id.
    current: Vec<(u32, i64)>,
    /// Consistent hashing: the endpoint set the ring/table was built for.
    built_for: u64,
    ring: Ring,
    maglev: Maglev,
    /// Scratch list of candidates (reused: no allocation per pick).
    scratch: Vec<Endpoint>,
    picks: BTreeMap<u32, u64>,
    all_tried: u64,
    no_key: u64,
}

/// A fingerprint of the endpoint set (ids and weights, in order).
fn fingerprint(endpoints: &[Endpoint]) -> u64 {
    endpoints.iter().fold(endpoints.len() as u64, |h, e| {
        hash::mix(h ^ (u64::from(e.id) << 32 | u64::from(e.weight)))
    })
}

fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim().into())
    })
}

/// Whether `a` is less loaded than `b` by (in-flight + 1) / weight.
fn less_requests(a: &Endpoint, b: &Endpoint) -> bool {
    let ca = u64::from(a.in_flight + 1) * u64::from(b.weight.max(1));
    let cb = u64::from(b.in_flight + 1) * u64::from(a.weight.max(1));
    ca < cb
}

/// Peak EWMA cost: latency × (in-flight + 1) / weight. An endpoint with no
/// latency yet (new, or never chosen) costs `neutral`, the mean of the
/// others, rather than nothing: it is tried, without drawing every request.
fn ewma_cost(e: &Endpoint, neutral: f64) -> f64 {
    let latency = if e.latency_ewma_us == 0 {
        neutral
    } else {
        e.latency_ewma_us as f64
    };
    latency.max(1.0) * f64::from(e.in_flight + 1) / f64::from(e.weight.max(1))
}

/// The mean latency EWMA of the candidates that have one (1 µs if none has).
fn neutral_latency(cands: &[Endpoint]) -> f64 {
    let (sum, n) = cands
        .iter()
        .filter(|e| e.latency_ewma_us > 0)
        .fold((0.0, 0u32), |(s, n), e| {
            (s + e.latency_ewma_us as f64, n + 1)
        });
    if n == 0 { 1.0 } else { sum / f64::from(n) }
}

impl Balancer {
    fn random(&self) -> u64 {
        weir_sdk::host::random()
    }

    /// Two distinct random candidates.
    fn two(&self, n: usize) -> (usize, usize) {
        let i = (self.random() % n as u64) as usize;
        let mut j = (self.random() % (n as u64 - 1)) as usize;
        if j >= i {
            j += 1;
        }
        (i, j)
    }

    fn smooth_weighted(&mut self, cands: &[Endpoint]) -> u32 {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for e in cands {
            let w = i64::from(e.weight.max(1));
            total += w;
            let i = match self.current.iter().position(|(id, _)| *id == e.id) {
                Some(i) => i,
                None => {
                    self.current.push((e.id, 0));
                    self.current.len() - 1
                }
            };
            self.current[i].1 += w;
            if best.is_none_or(|(_, cw)| self.current[i].1 > cw) {
                best = Some((i, self.current[i].1));
            }
        }
        let Some((i, _)) = best else { return 0 };
        self.current[i].1 -= total;
        if self.current.len() > 4 * cands.len() + 16 {
            self.current
                .retain(|(id, _)| cands.iter().any(|e| e.id == *id));
        }
        self.current[i].0
    }

    fn weighted_random(&self, cands: &[Endpoint]) -> u32 {
        let total: u64 = cands.iter().map(|e| u64::from(e.weight.max(1))).sum();
        let mut r = self.random() % total.max(1);
        for e in cands {
            let w = u64::from(e.weight.max(1));
            if r < w {
                return e.id;
            }
            r -= w;
        }
        cands[0].id
    }

    fn hash_key(&self, req: &Request) -> Option<u64> {
        let key = match &self.config.hash_on {
            HashOn::Path => req.path().ok(),
            HashOn::Header(h) => req.header(h).ok().flatten(),
            HashOn::Cookie(c) => req
                .header("cookie")
                .ok()
                .flatten()
                .and_then(|v| cookie(&v, c)),
        }?;
        Some(hash::hash(key.as_bytes(), 0))
    }

    fn consistent(&mut self, req: &Request, all: &[Endpoint], cands: &[Endpoint]) -> u32 {
        let Some(key) = self.hash_key(req) else {
            self.no_key += 1;
            if let Some(m) = self.metrics {
                let _ = m.no_key.record(1.0);
            }
            return self.weighted_random(cands);
        };
        let fp = fingerprint(all);
        let maglev = self.config.algorithm == Algorithm::Maglev;
        if fp != self.built_for {
            if maglev {
                self.maglev = Maglev::build(all, self.config.maglev_table_size);
            } else {
                self.ring = Ring::build(all, self.config.ring_vnodes);
            }
            self.built_for = fp;
        }
        let untried = |id: &u32| cands.iter().any(|e| e.id == *id);
        let found = if maglev {
            self.maglev.walk(key).find(untried)
        } else {
            self.ring.walk(key).find(untried)
        };
        found.unwrap_or(cands[0].id)
    }

    /// Picks among `cands` (never empty).
    fn pick(&mut self, req: &Request, all: &[Endpoint], cands: &[Endpoint]) -> u32 {
        let n = cands.len();
        match self.config.algorithm {
            _ if n == 1 => cands[0].id,
            Algorithm::RoundRobin => {
                self.rr = self.rr.wrapping_add(1);
                cands[self.rr % n].id
            }
            Algorithm::WeightedRoundRobin => self.smooth_weighted(cands),
            Algorithm::Random => self.weighted_random(cands),
            Algorithm::LeastRequest => {
                let (i, j) = self.two(n);
                if less_requests(&cands[j], &cands[i]) {
                    cands[j].id
                } else {
                    cands[i].id
                }
            }
            Algorithm::PeakEwma => {
                let (i, j) = self.two(n);
                let neutral = neutral_latency(cands);
                if ewma_cost(&cands[j], neutral) < ewma_cost(&cands[i], neutral) {
                    cands[j].id
                } else {
                    cands[i].id
                }
            }
            Algorithm::RingHash | Algorithm::Maglev => self.consistent(req, all, cands),
        }
    }
}

#[weir_sdk::plugin]
impl Plugin for Balancer {
    type Config = RawConfig;
    type Ctx = ();

    fn configure(&mut self, raw: RawConfig) -> Result<(), String> {
        self.config = Config::try_from(raw)?;
        let c = |name: &str| Metric::counter(name).map_err(|e| e.to_string());
        self.metrics = Some(Metrics {
            picks: c("balancer_picks_total")?,
            all_tried: c("balancer_all_tried_total")?,
            no_key: c("balancer_hash_key_missing_total")?,
        });
        Ok(())
    }

    fn select(
        &mut self,
        _: &mut (),
        req: &Request,
        endpoints: &[Endpoint],
        tried: &[u32],
    ) -> Option<u32> {
        if endpoints.is_empty() {
            return None;
        }
        let mut cands = core::mem::take(&mut self.scratch);
        cands.clear();
        // The host offers healthy endpoints (all if none is); filtering on
        // the flag as well keeps that rule if a host offers more.
        let any_healthy = endpoints.iter().any(|e| e.healthy);
        cands.extend(
            endpoints
                .iter()
                .filter(|e| (e.healthy || !any_healthy) && !tried.contains(&e.id)),
        );
        if cands.is_empty() {
            // Every offered endpoint was tried: going back to one beats failing.
            self.all_tried += 1;
            if let Some(m) = self.metrics {
                let _ = m.all_tried.record(1.0);
            }
            cands.extend_from_slice(endpoints);
        }
        let id = self.pick(req, endpoints, &cands);
        self.scratch = cands;
        *self.picks.entry(id).or_default() += 1;
        if let Some(m) = self.metrics {
            let _ = m.picks.record(1.0);
        }
        Some(id)
    }

    fn status(&self) -> String {
        let picks: BTreeMap<String, u64> = self
            .picks
            .iter()
            .map(|(id, n)| (alloc::format!("{id}"), *n))
            .collect();
        serde_json::json!({
            "algorithm": self.config.algorithm,
            "hash_on": match &self.config.hash_on {
                HashOn::Path => String::from("path"),
                HashOn::Header(h) => alloc::format!("header:{h}"),
                HashOn::Cookie(c) => alloc::format!("cookie:{c}"),
            },
            "picks": picks,
            "all_tried": self.all_tried,
            "hash_key_missing": self.no_key,
        })
        .to_string()
    }

    /// Where round robin and smooth WRR stand, and the pick counts, carry
    /// over a hot swap, so a new version continues the same sequence. The
    /// latency EWMAs and in-flight counts are the host's, per endpoint, and
    /// survive a swap without this; a hash ring is rebuilt from the
    /// endpoints.
    fn snapshot(&self) -> Vec<u8> {
        let snapshot = Snapshot {
            rr: self.rr as u64,
            current: self.current.clone(),
            picks: self.picks.clone(),
            all_tried: self.all_tried,
            no_key: self.no_key,
        };
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)
            .map_err(|e| alloc::format!("balancer: bad snapshot: {e}"))?;
        self.rr = snapshot.rr as usize;
        self.current = snapshot.current;
        self.picks = snapshot.picks;
        self.all_tried = snapshot.all_tried;
        self.no_key = snapshot.no_key;
        Ok(())
    }
}

/// What a hot swap carries over.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    rr: u64,
    current: Vec<(u32, i64)>,
    picks: BTreeMap<u32, u64>,
    all_tried: u64,
    no_key: u64,
}

#[cfg(test)]
mod tests;
