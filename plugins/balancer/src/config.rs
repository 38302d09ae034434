//! The balancer's settings, parsed and checked at load.

use alloc::format;
use alloc::string::String;

/// The algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's).
    WeightedRoundRobin,
    /// Uniformly at random, or by weight if weights differ.
    Random,
    /// Least in-flight requests (per weight) of two random choices.
    LeastRequest,
    /// Lowest latency EWMA × (in-flight + 1) (per weight) of two random choices.
    PeakEwma,
    /// Consistent hashing on a ring of virtual nodes.
    RingHash,
    /// Consistent hashing with a Maglev table.
    Maglev,
}

/// What a consistent hash is computed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The path.
    Path,
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

/// The route's settings, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub algorithm: Algorithm,
    /// `"path"`, `"header:NAME"` or `"cookie:NAME"` (hashing algorithms).
    pub hash_on: String,
    /// Ring points per endpoint per unit of weight (ring hash).
    pub ring_vnodes: u32,
    /// Maglev table size (a prime, larger than 100 × the endpoints).
    pub maglev_table_size: usize,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::RoundRobin,
            hash_on: "path".into(),
            ring_vnodes: 160,
            maglev_table_size: 65_537,
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub algorithm: Algorithm,
    pub hash_on: HashOn,
    pub ring_vnodes: u32,
    pub maglev_table_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::RoundRobin,
            hash_on: HashOn::Path,
            ring_vnodes: 160,
            maglev_table_size: 65_537,
        }
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Self, String> {
        let hash_on = match r.hash_on.as_str() {
            "path" => HashOn::Path,
            s => match s.split_once(':') {
                Some(("header", h)) if !h.is_empty() => HashOn::Header(h.to_ascii_lowercase()),
                Some(("cookie", c)) if !c.is_empty() => HashOn::Cookie(c.into()),
                _ => {
                    return Err(format!(
                        "balancer: hash_on {s:?} must be \"path\", \"header:NAME\" or \"cookie:NAME\""
                    ));
                }
            },
        };
        if !(1..=10_000).contains(&r.ring_vnodes) {
            return Err("balancer: ring_vnodes must be between 1 and 10000".into());
        }
        if !is_prime(r.maglev_table_size) || r.maglev_table_size > 5_000_011 {
            return Err(format!(
                "balancer: maglev_table_size must be a prime up to 5000011, not {}",
                r.maglev_table_size
            ));
        }
        Ok(Self {
            algorithm: r.algorithm,
            hash_on,
            ring_vnodes: r.ring_vnodes,
            maglev_table_size: r.maglev_table_size,
        })
    }
}
