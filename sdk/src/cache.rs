//! The host's HTTP cache store, for caching plugins. Bodies never enter the
//! plugin: it looks entries up (their age, status and the metadata it
//! attached), reads their stored headers, and tells the host to serve,
//! store, freshen or invalidate them. The host tees response bodies into
//! the store and serves hits from it.
//!
//! ```text
//! on_request:  lookup(key) ─ fresh ─▶ RequestAction::Serve(Serve::new(key).header("age", …))
//!                 │ miss/stale
//!                 ├─ lock(key, wait) ─ Follower ─▶ Continue (the host waits, then runs on_request again)
//!                 └─ Leader ─▶ Continue (upstream; conditional headers for a stale entry)
//! on_response: 200 ─▶ store(key, meta, keep)   304 ─▶ freshen(key, …) + ResponseAction::Serve
//! ```

use alloc::vec::Vec;
use core::time::Duration;

use weir_abi::{self as abi, HeaderMap, cache::INFO_SIZE};

use crate::hostcalls::{self, HostError, HostResult};

pub use weir_abi::cache::Lock;

/// A stored response, as `lookup` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Time since it was stored (or last freshened).
    pub resident: Duration,
    /// The stored status.
    pub status: u16,
    /// Length of the stored body.
    pub body_len: u32,
    /// What the plugin attached when storing it.
    pub meta: Vec<u8>,
}

/// Looks up the response stored under `key` (in `on_request` or
/// `on_response`); `None` if there is none. The entry stays readable with
/// [`stored_header`] and servable for the rest of the request, even if the
/// store evicts it meanwhile.
pub fn lookup(key: &[u8]) -> HostResult<Option<Entry>> {
    let Some(raw) = hostcalls::cache_lookup(key)? else {
        return Ok(None);
    };
    let (head, meta) = raw
        .split_at_checked(INFO_SIZE)
        .ok_or(HostError(abi::status::BAD_ARGUMENT))?;
    let head =
        <&[u8; INFO_SIZE]>::try_from(head).map_err(|_| HostError(abi::status::BAD_ARGUMENT))?;
    let info = abi::cache::EntryInfo::decode(head);
    Ok(Some(Entry {
        resident: Duration::from_millis(info.resident_ms),
        status: info.status,
        body_len: info.body_len,
        meta: meta.to_vec(),
    }))
}

/// A header of the entry last looked up by this request: every line,
/// joined with `", "`.
pub fn stored_header(name: &str) -> HostResult<Option<alloc::string::String>> {
    hostcalls::header_get_joined(HeaderMap::Cached, name)
        .map(|v| v.map(|b| alloc::string::String::from_utf8_lossy(&b).into_owned()))
}

/// Asks the host to store the response `on_response` sees under `key`
/// (with `meta` attached) for `keep`; the body is teed into the store as it
/// streams to the client. `max_bytes` caps the body (`0`: the host's limit).
/// Only for upstream responses (`UNAVAILABLE` otherwise).
pub fn store(key: &[u8], meta: &[u8], keep: Duration, max_bytes: u64) -> HostResult<()> {
    hostcalls::cache_store(key, meta, keep, max_bytes)
}

/// On a `304 Not Modified`: updates the entry under `key` with the 304's
/// headers, replaces its metadata and restarts its life (`keep`). Serve it
/// afterwards with [`crate::ResponseAction::Serve`].
pub fn freshen(key: &[u8], meta: &[u8], keep: Duration) -> HostResult<()> {
    hostcalls::cache_freshen(key, meta, keep)
}

/// Removes whatever is stored under `key`; `false` if nothing was.
pub fn invalidate(key: &[u8]) -> HostResult<bool> {
    hostcalls::cache_invalidate(key)
}

/// Coalesces fetches of `key` (in `on_request`): [`Lock::Leader`] fetches;
/// [`Lock::Follower`] means another request is fetching — with a non-zero
/// `wait`, return `Continue` and the host waits (up to `wait`) for that
/// fetch, then runs `on_request` again; with zero `wait` nothing waits (a
/// try-lock). [`Lock::Pass`]: this request already waited once.
pub fn lock(key: &[u8], wait: Duration) -> HostResult<Lock> {
    hostcalls::cache_lock(key, wait)
}

/// Size of the whole store (all routes and plugins): entries and bytes.
pub fn stats() -> HostResult<(u64, u64)> {
    hostcalls::cache_stats()
}

/// Wall-clock time, milliseconds since the Unix epoch (for HTTP dates).
pub fn unix_time_ms() -> u64 {
    hostcalls::time_unix_ms()
}

/// An answer served from the store: the stored response plus `header`s
/// that replace stored fields of the same name (`Age`, `Cache-Status`).
#[derive(Debug, Clone)]
pub struct Serve {
    pub(crate) key: Vec<u8>,
    pub(crate) headers: Vec<u8>,
    pub(crate) not_modified: bool,
}

impl Serve {
    /// Serves the entry under `key`.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            headers: Vec::new(),
            not_modified: false,
        }
    }

    /// Adds a header that replaces the stored ones of that name.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        abi::header_block::push(&mut self.headers, name.as_bytes(), value.as_bytes());
        self
    }

    /// Answers `304 Not Modified` (the client's conditional matched) instead.
    pub fn not_modified(mut self) -> Self {
        self.not_modified = true;
        self
    }

    /// Stages the answer with the host.
    pub(crate) fn send(&self) -> HostResult<()> {
        let flags = if self.not_modified {
            abi::cache::SERVE_NOT_MODIFIED
        } else {
            0
        };
        hostcalls::cache_serve(&self.key, &self.headers, flags)
    }
}
