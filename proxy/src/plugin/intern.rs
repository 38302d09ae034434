//! Per-store interning of the header names and values a plugin passes to the
//! host. A plugin reads and sets the same few names (and often the same
//! values: a tenant tag, `x-cache: HIT`) on every request; a hit here costs a
//! compare and a reference-count bump, where parsing a name and copying a
//! value cost a validation pass and an allocation each.
//!
//! An entry seen a second time is made static: its bytes are leaked once,
//! within a process-wide budget, so that cloning it (into every request)
//! copies a pointer instead of counting references with atomics, and
//! dropping it costs nothing. Values seen once (ids, timestamps) never are.
//!
//! The tables are two-way set-associative (two candidate slots per key, a
//! miss evicts the older), so a plugin that sets a unique value per request
//! costs one hash and two compares more than without them, never a scan.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{InvalidHeaderName, InvalidHeaderValue};
use http::{HeaderName, HeaderValue};

/// Sets per table (a power of two), of two slots each.
const SETS: usize = 32;

/// Values longer than this are not interned: long values (ids, tokens,
/// timestamps) are rarely repeated.
const VALUE_MAX: usize = 64;

/// Names longer than this are parsed every time, not kept: the tables'
/// memory lies outside the plugin's memory limit, so it stays small.
const NAME_MAX: usize = 128;

/// Keys up to this long are identified by their [`Fingerprint`] alone.
const SHORT: usize = 16;

/// A key's length and its first and last (up to) eight bytes, read as
/// words. For keys of at most [`SHORT`] bytes the two words cover every
/// byte, so equal fingerprints mean equal keys, found without a byte loop
/// or a pointer chase.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    head: u64,
    tail: u64,
}

impl Fingerprint {
    fn of(bytes: &[u8]) -> Self {
        let n = bytes.len();
        let word8 = |b: &[u8]| <[u8; 8]>::try_from(b).map_or(0, u64::from_le_bytes);
        let word4 =
            |b: &[u8]| <[u8; 4]>::try_from(b).map_or(0, |w| u64::from(u32::from_le_bytes(w)));
        let (head, tail) = match n {
            8.. => (word8(&bytes[..8]), word8(&bytes[n - 8..])),
            4..=7 => (word4(&bytes[..4]), word4(&bytes[n - 4..])),
            1..=3 => {
                let (a, b, c) = (bytes[0], bytes[n / 2], bytes[n - 1]);
                (u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16, 0)
            }
            0 => (0, 0),
        };
        Self { len: n, head, tail }
    }

    /// The key's set.
    fn set(&self) -> usize {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = (self.head ^ self.len as u64).wrapping_mul(K);
        h = (h ^ (h >> 29) ^ self.tail).wrapping_mul(K);
        (h >> 59) as usize & (SETS - 1)
    }
}

/// Bytes all stores together may leak for static entries. Past it, entries
/// stay reference-counted, as they are before their second use.
const LEAK_BUDGET: usize = 256 * 1024;

/// Bytes leaked so far (with an allocator's overhead per leak).
static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// `bytes`, leaked for the life of the process, if the budget allows.
fn leak(bytes: &[u8]) -> Option<&'static [u8]> {
    reserve(&LEAKED, bytes.len() + 16, LEAK_BUDGET).then(|| &*Box::leak(bytes.into()))
}

/// Adds `cost` to `spent` if that stays within `budget`.
fn reserve(spent: &AtomicUsize, cost: usize, budget: usize) -> bool {
    spent
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(cost).filter(|after| *after <= budget)
        })
        .is_ok()
}

/// `name`, backed by static bytes.
fn static_name(name: &HeaderName) -> Option<HeaderName> {
    let leaked = leak(name.as_str().as_bytes())?;
    let leaked = std::str::from_utf8(leaked).ok()?;
    // Cannot panic: `leaked` is the lowercase text of a valid header name,
    // which is exactly what `from_static` accepts.
    Some(HeaderName::from_static(leaked))
}

/// `value`, backed by static bytes.
fn static_value(value: &HeaderValue) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from_static(leak(value.as_bytes())?)).ok()
}

/// A slot: the key's fingerprint, the entry made from it, and whether the
/// entry is settled (made static, or past trying: at most once a slot).
struct Slot<T> {
    print: Fingerprint,
    item: T,
    settled: bool,
}

/// A fingerprint no key has: it marks a slot not filled yet.
const EMPTY: Fingerprint = Fingerprint {
    len: usize::MAX,
    head: 0,
    tail: 0,
};

/// A two-way set-associative cache, the most recently used slot of a set
/// first. Slots start out holding `filler` under [`EMPTY`], so a lookup is
/// a compare in place: no `Option`s to take apart and put back.
struct Table<T> {
    sets: Vec<[Slot<T>; 2]>,
    filler: T,
}

impl<T: Clone> Table<T> {
    fn new(filler: T) -> Self {
        Self {
            sets: Vec::new(),
            filler,
        }
    }

    /// The entry of `key`, else the one `make` builds (which then replaces
    /// the set's least recently used). `same` compares a long key in full;
    /// `settle` makes a static copy of an entry on its second use.
    fn get_or_make<E>(
        &mut self,
        key: &[u8],
        same: impl Fn(&T) -> bool,
        make: impl FnOnce() -> Result<T, E>,
        settle: impl FnOnce(&T) -> Option<T>,
    ) -> Result<&T, E> {
        if self.sets.is_empty() {
            let empty = || Slot {
                print: EMPTY,
                item: self.filler.clone(),
                settled: true,
            };
            self.sets.resize_with(SETS, || [empty(), empty()]);
        }
        let print = Fingerprint::of(key);
        let hit = |slot: &Slot<T>| slot.print == print && (print.len <= SHORT || same(&slot.item));
        let set = &mut self.sets[print.set()];
        if !hit(&set[0]) {
            if hit(&set[1]) {
                set.swap(0, 1);
            } else {
                let made = Slot {
                    print,
                    item: make()?,
                    settled: false,
                };
                set[1] = std::mem::replace(&mut set[0], made);
                return Ok(&set[0].item);
            }
        }
        let slot = &mut set[0];
        if !slot.settled {
            slot.settled = true;
            if let Some(settled) = settle(&slot.item) {
                slot.item = settled;
            }
        }
        Ok(&slot.item)
    }
}

/// The interned names and values of one store.
pub(crate) struct HeaderInterner {
    /// Keyed by the bytes the plugin passed (any case): a hit is an exact
    /// match.
    names: Table<(Box<[u8]>, HeaderName)>,
    values: Table<HeaderValue>,
    /// The last name over [`NAME_MAX`], lent out like a table entry.
    long_name: Option<HeaderName>,
}

impl Default for HeaderInterner {
    fn default() -> Self {
        // Fillers of empty slots: never handed out, as no key matches them.
        Self {
            names: Table::new((Box::default(), http::header::HOST)),
            values: Table::new(HeaderValue::from_static("")),
            long_name: None,
        }
    }
}

impl HeaderInterner {
    /// The header name `raw` names (any case), parsed once while it stays
    /// in the table.
    pub(crate) fn name(&mut self, raw: &[u8]) -> Result<&HeaderName, InvalidHeaderName> {
        if raw.len() > NAME_MAX {
            return Ok(self.long_name.insert(HeaderName::from_bytes(raw)?));
        }
        self.names
            .get_or_make(
                raw,
                |(key, _)| **key == *raw,
                || Ok((raw.into(), HeaderName::from_bytes(raw)?)),
                |(key, name)| Some((key.clone(), static_name(name)?)),
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
                static_value,
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
        let long_name = vec![b'x'; NAME_MAX + 1];
        assert_eq!(
            interner.name(&long_name).unwrap().as_str().as_bytes(),
            &long_name[..]
        );
        assert!(interner.name(&vec![b'x'; 70_000]).is_err());
    }

    #[test]
    fn a_second_use_makes_the_entry_static() {
        let mut interner = HeaderInterner::default();
        let first = interner.value(b"settle-me").unwrap();
        let second = interner.value(b"settle-me").unwrap();
        let third = interner.value(b"settle-me").unwrap();
        for value in [&first, &second, &third] {
            assert_eq!(value, "settle-me");
        }
        // The second use swapped in a leaked copy; later ones hand it out.
        assert_ne!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr());
        assert_eq!(second.as_bytes().as_ptr(), third.as_bytes().as_ptr());

        let name = interner.name(b"X-Settle").unwrap().clone();
        let settled = interner.name(b"X-Settle").unwrap().clone();
        assert_eq!((name.as_str(), settled.as_str()), ("x-settle", "x-settle"));
        assert_ne!(name.as_str().as_ptr(), settled.as_str().as_ptr());
        assert_eq!(interner.name(b"x-settle").unwrap(), settled);
    }

    #[test]
    fn leaking_stops_at_the_budget() {
        let spent = AtomicUsize::new(0);
        assert!(reserve(&spent, 60, 100));
        assert!(reserve(&spent, 40, 100));
        assert!(!reserve(&spent, 1, 100));
        assert!(!reserve(&spent, usize::MAX, 100));
        assert_eq!(spent.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn fingerprints_tell_short_keys_apart() {
        let keys: Vec<Vec<u8>> = (0..=SHORT)
            .flat_map(|n| {
                (0..4u8).map(move |v| (0..n).map(|i| b'a' + (i as u8 + v) % 26).collect())
            })
            .collect();
        for a in &keys {
            for b in &keys {
                assert_eq!(
                    Fingerprint::of(a) == Fingerprint::of(b),
                    a == b,
                    "{a:?} {b:?}"
                );
            }
        }
        // Long keys share fingerprints when only their middles differ; the
        // full compare tells them apart.
        let mut interner = HeaderInterner::default();
        let (a, b) = (b"x-aaaaaaaa-1-aaaaaaaa", b"x-aaaaaaaa-2-aaaaaaaa");
        assert!(Fingerprint::of(a) == Fingerprint::of(b));
        assert_eq!(interner.name(a).unwrap().as_str(), "x-aaaaaaaa-1-aaaaaaaa");
        assert_eq!(interner.name(b).unwrap().as_str(), "x-aaaaaaaa-2-aaaaaaaa");
        assert_eq!(interner.name(a).unwrap().as_str(), "x-aaaaaaaa-1-aaaaaaaa");
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
