//! Cache keys: the primary key from the request (method-independent: HEAD
//! is answered from GET entries), the Vary index that lists a URL's
//! selecting headers, and the variant key that adds their values (RFC 9111
//! §4.1). Also the metadata's byte layout and the `Cache-Status` value.

use crate::config::KeyConfig;
use crate::freshness::Meta;

/// The primary key: `host path?query` per the key settings.
pub fn primary(
    cfg: &KeyConfig,
    authority: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> String {
    let mut k = String::from("GET ");
    if cfg.host {
        k.push_str(&authority.unwrap_or_default().to_ascii_lowercase());
    }
    k.push_str(path);
    if cfg.query
        && let Some(q) = query
    {
        k.push('?');
        k.push_str(q);
    }
    k
}

/// Key of the Vary index of a primary key (a plain value in the store).
pub fn index_key(primary: &str) -> String {
    format!("vary-index\n{primary}")
}

/// The Vary index: a generation nonce (so that invalidating the index
/// orphans every old variant) and the selecting header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Changes whenever the index is rewritten with other names or invalidated.
    pub nonce: u64,
    /// Lowercased header names from `Vary`, in order.
    pub names: Vec<String>,
}

impl Index {
    /// The index for a response's `Vary` (absent: no names).
    pub fn from_vary(vary: Option<&str>, nonce: u64) -> Self {
        let names = vary
            .map(|v| {
                crate::directives::split_list(v)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        Self { nonce, names }
    }

    /// `nonce\nname,name`.
    pub fn encode(&self) -> Vec<u8> {
        format!("{:016x}\n{}", self.nonce, self.names.join(",")).into_bytes()
    }

    /// Reads what [`Self::encode`] wrote.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let s = core::str::from_utf8(b).ok()?;
        let (nonce, names) = s.split_once('\n')?;
        Some(Self {
            nonce: u64::from_str_radix(nonce, 16).ok()?,
            names: names
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The variant key for a request whose header values (first value of
    /// each selecting header, `None` if absent) are `value(name)`.
    /// Values are normalized: trimmed, inner whitespace collapsed.
    pub fn variant(&self, primary: &str, value: impl Fn(&str) -> Option<String>) -> String {
        let mut k = format!("{primary}\n{:016x}", self.nonce);
        for name in &self.names {
            k.push('\n');
            match value(name) {
                Some(v) => {
                    k.push('=');
                    k.push_str(&v.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                // Absent differs from empty.
                None => k.push('-'),
            }
        }
        k
    }
}

/// Metadata layout: version byte, flags byte, then LE u64s: initial age,
/// lifetime, swr, sie.
const META_VERSION: u8 = 1;

/// Serializes the metadata attached to a stored response.
pub fn encode_meta(m: &Meta) -> Vec<u8> {
    let flags = u8::from(m.heuristic)
        | u8::from(m.no_cache) << 1
        | u8::from(m.must_revalidate) << 2
        | u8::from(m.has_validator) << 3;
    let mut out = vec![META_VERSION, flags];
    for v in [m.initial_age, m.lifetime, m.swr, m.sie] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads [`encode_meta`]'s output; `None` for anything else.
pub fn decode_meta(b: &[u8]) -> Option<Meta> {
    let (&[version, flags], rest) = b.split_first_chunk::<2>()?;
    if version != META_VERSION || rest.len() != 32 {
        return None;
    }
    let n = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&rest[i * 8..i * 8 + 8]);
        u64::from_le_bytes(a)
    };
    Some(Meta {
        initial_age: n(0),
        lifetime: n(1),
        swr: n(2),
        sie: n(3),
        heuristic: flags & 1 != 0,
        no_cache: flags & 2 != 0,
        must_revalidate: flags & 4 != 0,
        has_validator: flags & 8 != 0,
    })
}

/// Builds one `Cache-Status` member (RFC 9211): `name; param; param=…`.
#[derive(Debug, Clone)]
pub struct CacheStatus(String);

impl CacheStatus {
    /// A member for the cache called `name`.
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// `; hit`.
    pub fn hit(self) -> Self {
        self.flag("hit")
    }

    /// `; stored`.
    pub fn stored(self) -> Self {
        self.flag("stored")
    }

    /// `; collapsed` (waited for another request's fetch).
    pub fn collapsed(self) -> Self {
        self.flag("collapsed")
    }

    fn flag(mut self, f: &str) -> Self {
        self.0.push_str("; ");
        self.0.push_str(f);
        self
    }

    /// `; fwd=reason`.
    pub fn fwd(mut self, reason: &str) -> Self {
        self.0.push_str("; fwd=");
        self.0.push_str(reason);
        self
    }

    /// `; fwd-status=N`.
    pub fn fwd_status(mut self, status: u16) -> Self {
        self.0.push_str(&format!("; fwd-status={status}"));
        self
    }

    /// `; ttl=N` (negative when stale).
    pub fn ttl(mut self, ttl: i64) -> Self {
        self.0.push_str(&format!("; ttl={ttl}"));
        self
    }

    /// `; detail="…"`.
    pub fn detail(mut self, d: &str) -> Self {
        self.0.push_str(&format!("; detail=\"{d}\""));
        self
    }

    /// The member's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests;
