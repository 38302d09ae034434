//! Per-store interning of the header names and values a plugin passes to the
//! host. A plugin reads and sets the same few names (and often the same
//! values: a tenant tag, `x-cache: HIT`) on every request; a hit here costs a
//! compare and a reference-count bump, where parsing a name and copying a
//! value cost a validation pass and an allocation each.
//!
//! Both tables are direct-mapped (one candidate slot per key, a miss
//! overwrites it), so a plugin that sets a unique value per request costs one
//! hash and one compare more than without the table, never a scan.

use http::header::{InvalidHeaderName, InvalidHeaderValue};
use http::{HeaderName, HeaderValue};

/// Sets per table (a power of two), of two slots each.
const SETS: usize = 32;

/// Values longer than this are not interned: long values (ids, tokens,
/// timestamps) are rarely repeated.
const VALUE_MAX: usize = 64;

/// A two-way set-associative cache: a key has two candidate slots, the
/// most recently used first; a miss evicts the other. Entries are boxed so
/// that reordering a set moves pointers.
struct Table<T> {
    sets: Vec<[Option<Box<T>>; 2]>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self { sets: Vec::new() }
    }
}

impl<T> Table<T> {
    /// The entry of `key` for which `hit` holds, else the one `make` builds
    /// (which then replaces the set's least recently used).
    fn get_or_make<E>(
        &mut self,
        key: &[u8],
        hit: impl Fn(&T) -> bool,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E> {
        if self.sets.is_empty() {
            self.sets.resize_with(SETS, || [None, None]);
        }
        let [first, second] = &mut self.sets[set_of(key)];
        let entry = match first.take() {
            Some(entry) if hit(&entry) => entry,
            old_first => match second.take() {
                Some(entry) if hit(&entry) => {
                    *second = old_first;
                    entry
                }
                old_second => match make() {
                    Ok(made) => {
                        *second = old_first;
                        Box::new(made)
                    }
                    Err(e) => {
                        (*first, *second) = (old_first, old_second);
                        return Err(e);
                    }
                },
            },
        };
        Ok(&**first.insert(entry))
    }
}

/// The interned names and values of one store.
#[derive(Default)]
pub(crate) struct HeaderInterner {
    /// Keyed by the bytes the plugin passed (any case), so a hit is one
    /// exact compare.
    names: Table<(Box<[u8]>, HeaderName)>,
    values: Table<HeaderValue>,
}

/// The set of `bytes`: their length and first and last eight bytes, mixed.
/// Constant time: names and short values differ early or late.
fn set_of(bytes: &[u8]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let word = |chunk: &[u8]| {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(buf)
    };
    let n = bytes.len();
    let head = word(&bytes[..n.min(8)]);
    let tail = word(&bytes[n.saturating_sub(8)..]);
    let mut h = (head ^ n as u64).wrapping_mul(K);
    h = (h ^ (h >> 29) ^ tail).wrapping_mul(K);
    (h >> 59) as usize & (SETS - 1)
}

impl HeaderInterner {
    /// The header name `raw` names (any case), parsed once while it stays
    /// in the table.
    pub(crate) fn name(&mut self, raw: &[u8]) -> Result<&HeaderName, InvalidHeaderName> {
        self.names
            .get_or_make(
                raw,
                |(key, _)| **key == *raw,
                || Ok((raw.into(), HeaderName::from_bytes(raw)?)),
            )
            .map(|(_, name)| name)
    }

    /// A header value with exactly these bytes.
    pub(crate) fn value(&mut self, raw: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
        if raw.len() > VALUE_MAX {
            return HeaderValue::from_bytes(raw);
        }
        self.values
            .get_or_make(
                raw,
                |value| value.as_bytes() == raw,
                || HeaderValue::from_bytes(raw),
            )
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_and_reject_what_http_rejects() {
        let mut interner = HeaderInterner::default();
        let a = interner.name(b"X-Tenant").unwrap().clone();
        assert_eq!(a.as_str(), "x-tenant");
        assert_eq!(interner.name(b"x-tenant").unwrap(), a);
        assert_eq!(interner.name(b"X-TENANT").unwrap(), a);
        assert_eq!(interner.name(b"X-Tenant").unwrap(), a);
        assert_eq!(
            interner.name(b"content-type").unwrap(),
            http::header::CONTENT_TYPE
        );
        assert!(interner.name(b"bad name").is_err());
        assert!(interner.name(b"").is_err());
        // A bad name never poisons the slot of a good one.
        assert_eq!(interner.name(b"x-tenant").unwrap(), a);
    }

    #[test]
    fn values_match_exactly() {
        let mut interner = HeaderInterner::default();
        assert_eq!(interner.value(b"ops").unwrap(), "ops");
        assert_eq!(interner.value(b"OPS").unwrap(), "OPS");
        assert_eq!(interner.value(b"ops").unwrap(), "ops");
        assert!(interner.value(b"bad\nvalue").is_err());
        let long = vec![b'a'; VALUE_MAX + 1];
        assert_eq!(interner.value(&long).unwrap().as_bytes(), &long[..]);
    }

    #[test]
    fn a_miss_replaces_the_slot() {
        let mut interner = HeaderInterner::default();
        // More distinct names than slots: every one still comes back right.
        for round in 0..2 {
            for i in 0..(SETS * 6) {
                let raw = format!("x-name-{i}");
                let name = interner.name(raw.as_bytes()).unwrap();
                assert_eq!(name.as_str(), raw, "round {round}");
            }
        }
    }
}
