//! Consistent hashing: a hash function, a ring (Karger et al., weighted
//! virtual nodes) and a Maglev table (Eisenbud et al., NSDI 2016). Both move
//! only about `1/n` of the keys when one of `n` endpoints comes or goes.

use alloc::vec::Vec;

use weir_sdk::Endpoint;

/// FNV-1a with a final avalanche (splitmix64's), so nearby inputs land far apart.
pub fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finalizer.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ring of virtual nodes: `vnodes × weight` points per endpoint.
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn build(endpoints: &[Endpoint], vnodes: u32) -> Self {
        let mut points = Vec::new();
        for e in endpoints {
            let n = vnodes.saturating_mul(e.weight.max(1));
            for i in 0..n {
                let p = mix(u64::from(e.id) << 32 | u64::from(i));
                points.push((p, e.id));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Endpoints clockwise from `key`'s point, first the owner.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = u32> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < key);
        let n = self.points.len();
        (0..n).map(move |i| self.points[(start + i) % n].1)
    }
}

/// A Maglev lookup table of prime size `m`.
#[derive(Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table; weights repeat an endpoint's turns.
    pub fn build(endpoints: &[Endpoint], m: usize) -> Self {
        if endpoints.is_empty() || m == 0 {
            return Self::default();
        }
        let prefs: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let id = e.id.to_le_bytes();
                let offset = hash(&id, 0x6d61_676c) % m as u64;
                let skip = hash(&id, 0x736b_6970) % (m as u64 - 1).max(1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = alloc::vec![0u64; endpoints.len()];
        let mut table = alloc::vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (i, e) in endpoints.iter().enumerate() {
                for _ in 0..e.weight.max(1) {
                    let (offset, skip) = prefs[i];
                    let mut c = (offset + next[i] * skip) % m as u64;
                    while table[c as usize] != u32::MAX {
                        next[i] += 1;
                        c = (offset + next[i] * skip) % m as u64;
                    }
                    table[c as usize] = e.id;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Self { table }
    }

    /// Endpoints from `key`'s slot on, first the owner.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = u32> + '_ {
        let n = self.table.len();
        let start = if n == 0 { 0 } else { (key % n as u64) as usize };
        (0..n).map(move |i| self.table[(start + i) % n])
    }
}
