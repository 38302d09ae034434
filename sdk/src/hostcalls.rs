//! Every raw host import and its safe wrapper: the only `unsafe` in the SDK.
//!
//! The raw functions follow `sdk/ABI.md` exactly. The wrappers turn negative
//! status codes into [`HostError`] and never panic, so a plugin decides what a
//! failed host call means (the proxy-wasm SDK unwraps them into panics; a
//! panic here would trap and cost the instance).
//!
//! Off wasm32 (native unit tests of plugins, clippy on the host) the imports
//! go to the thread's fake host in [`crate::testing`] instead, through the
//! same slice-based `backend` functions, so the wrappers below are the code
//! that runs in both builds.

use alloc::vec::Vec;
use core::fmt;
use core::mem::MaybeUninit;

use weir_abi::{self as abi, status};

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "weir")]
    unsafe extern "C" {
        pub fn clock_ns() -> i64;
        pub fn random() -> i64;
        pub fn log(level: i32, ptr: i32, len: i32) -> i32;
        pub fn input_read(ptr: i32, cap: i32) -> i32;
        pub fn output_write(ptr: i32, len: i32) -> i32;
        pub fn request_field(field: i32, ptr: i32, cap: i32) -> i32;
        pub fn header_get(map: i32, name_ptr: i32, name_len: i32, ptr: i32, cap: i32) -> i32;
        pub fn header_set(
            map: i32,
            name_ptr: i32,
            name_len: i32,
            value_ptr: i32,
            value_len: i32,
            mode: i32,
        ) -> i32;
        pub fn header_remove(map: i32, name_ptr: i32, name_len: i32) -> i32;
        pub fn set_attempt_timeout(timeout_ms: i64) -> i32;
        pub fn answer(status: i32, hdr_ptr: i32, hdr_len: i32, body_ptr: i32, body_len: i32)
        -> i32;
        pub fn endpoints_read(ptr: i32, cap: i32) -> i32;
        pub fn tried_read(ptr: i32, cap: i32) -> i32;
        pub fn endpoint_stats(id: i32, ptr: i32) -> i32;
        pub fn metric_define(kind: i32, name_ptr: i32, name_len: i32) -> i32;
        pub fn metric_record(id: i32, value: f64) -> i32;
        pub fn cache_get(key_ptr: i32, key_len: i32, ptr: i32, cap: i32) -> i32;
        pub fn cache_put(
            key_ptr: i32,
            key_len: i32,
            val_ptr: i32,
            val_len: i32,
            ttl_ms: i64,
        ) -> i32;
        pub fn counter_add(name_ptr: i32, name_len: i32, delta: i64, out_ptr: i32) -> i32;
        pub fn counter_add_ttl(
            name_ptr: i32,
            name_len: i32,
            delta: i64,
            ttl_ms: i64,
            out_ptr: i32,
        ) -> i32;
        pub fn endpoint_mark(id: i32, unhealthy_for_ms: i64) -> i32;
        pub fn request_flags() -> i32;
        pub fn deadline_set(ms: i64) -> i32;
        pub fn deadline_remaining() -> i64;
        pub fn endpoint_field(
            id: i32,
            field: i32,
            key_ptr: i32,
            key_len: i32,
            ptr: i32,
            cap: i32,
        ) -> i32;
        pub fn time_unix_ms() -> i64;
        pub fn cache_lookup(key_ptr: i32, key_len: i32, ptr: i32, cap: i32) -> i32;
        pub fn cache_serve(
            key_ptr: i32,
            key_len: i32,
            hdr_ptr: i32,
            hdr_len: i32,
            flags: i32,
        ) -> i32;
        pub fn cache_store(
            key_ptr: i32,
            key_len: i32,
            meta_ptr: i32,
            meta_len: i32,
            keep_ms: i64,
            max_bytes: i64,
        ) -> i32;
        pub fn cache_freshen(
            key_ptr: i32,
            key_len: i32,
            meta_ptr: i32,
            meta_len: i32,
            keep_ms: i64,
        ) -> i32;
        pub fn cache_invalidate(key_ptr: i32, key_len: i32) -> i32;
        pub fn cache_lock(key_ptr: i32, key_len: i32, wait_ms: i64) -> i32;
        pub fn cache_stats(ptr: i32) -> i32;
    }
}

/// The imports with slice arguments. On wasm32 each is one raw import call;
/// elsewhere each goes to the thread's fake host ([`crate::testing`]).
#[cfg(target_arch = "wasm32")]
mod backend {
    use core::mem::MaybeUninit;

    use super::{len, mptr, ptr, raw, ulen, uptr};

    // SAFETY (for every function here): the host reads and writes guest
    // memory only during the call, only inside the `(ptr, len)` ranges given,
    // which are live borrows of ours for the call's duration.
    pub fn clock_ns() -> i64 {
        unsafe { raw::clock_ns() }
    }
    pub fn random() -> i64 {
        unsafe { raw::random() }
    }
    pub fn log(level: i32, msg: &[u8]) -> i32 {
        unsafe { raw::log(level, ptr(msg), len(msg)) }
    }
    pub fn input_read(out: &mut [MaybeUninit<u8>]) -> i32 {
        unsafe { raw::input_read(uptr(out), ulen(out)) }
    }
    pub fn output_write(bytes: &[u8]) -> i32 {
        unsafe { raw::output_write(ptr(bytes), len(bytes)) }
    }
    pub fn request_field(field: i32, out: &mut [MaybeUninit<u8>]) -> i32 {
        unsafe { raw::request_field(field, uptr(out), ulen(out)) }
    }
    pub fn header_get(map: i32, name: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        unsafe { raw::header_get(map, ptr(name), len(name), uptr(out), ulen(out)) }
    }
    pub fn header_set(map: i32, name: &[u8], value: &[u8], mode: i32) -> i32 {
        unsafe { raw::header_set(map, ptr(name), len(name), ptr(value), len(value), mode) }
    }
    pub fn header_remove(map: i32, name: &[u8]) -> i32 {
        unsafe { raw::header_remove(map, ptr(name), len(name)) }
    }
    pub fn set_attempt_timeout(ms: i64) -> i32 {
        unsafe { raw::set_attempt_timeout(ms) }
    }
    pub fn answer(status: i32, headers: &[u8], body: &[u8]) -> i32 {
        unsafe { raw::answer(status, ptr(headers), len(headers), ptr(body), len(body)) }
    }
    pub fn endpoints_read(out: &mut [u8]) -> i32 {
        unsafe { raw::endpoints_read(mptr(out), len(out)) }
    }
    pub fn tried_read(out: &mut [u8]) -> i32 {
        unsafe { raw::tried_read(mptr(out), len(out)) }
    }
    pub fn endpoint_stats(id: i32, out: &mut [u8; weir_abi::ENDPOINT_SIZE]) -> i32 {
        unsafe { raw::endpoint_stats(id, mptr(out)) }
    }
    pub fn metric_define(kind: i32, name: &[u8]) -> i32 {
        unsafe { raw::metric_define(kind, ptr(name), len(name)) }
    }
    pub fn metric_record(id: i32, value: f64) -> i32 {
        unsafe { raw::metric_record(id, value) }
    }
    pub fn cache_get(key: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        unsafe { raw::cache_get(ptr(key), len(key), uptr(out), ulen(out)) }
    }
    pub fn cache_put(key: &[u8], value: &[u8], ttl_ms: i64) -> i32 {
        unsafe { raw::cache_put(ptr(key), len(key), ptr(value), len(value), ttl_ms) }
    }
    pub fn counter_add(name: &[u8], delta: i64, out: &mut [u8; 8]) -> i32 {
        unsafe { raw::counter_add(ptr(name), len(name), delta, mptr(out)) }
    }
    pub fn counter_add_ttl(name: &[u8], delta: i64, ttl_ms: i64, out: &mut [u8; 8]) -> i32 {
        unsafe { raw::counter_add_ttl(ptr(name), len(name), delta, ttl_ms, mptr(out)) }
    }
    pub fn endpoint_mark(id: i32, ms: i64) -> i32 {
        unsafe { raw::endpoint_mark(id, ms) }
    }
    pub fn time_unix_ms() -> i64 {
        unsafe { raw::time_unix_ms() }
    }
    pub fn cache_lookup(key: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        unsafe { raw::cache_lookup(ptr(key), len(key), uptr(out), ulen(out)) }
    }
    pub fn cache_serve(key: &[u8], headers: &[u8], flags: i32) -> i32 {
        unsafe { raw::cache_serve(ptr(key), len(key), ptr(headers), len(headers), flags) }
    }
    pub fn cache_store(key: &[u8], meta: &[u8], keep_ms: i64, max_bytes: i64) -> i32 {
        unsafe { raw::cache_store(ptr(key), len(key), ptr(meta), len(meta), keep_ms, max_bytes) }
    }
    pub fn cache_freshen(key: &[u8], meta: &[u8], keep_ms: i64) -> i32 {
        unsafe { raw::cache_freshen(ptr(key), len(key), ptr(meta), len(meta), keep_ms) }
    }
    pub fn cache_invalidate(key: &[u8]) -> i32 {
        unsafe { raw::cache_invalidate(ptr(key), len(key)) }
    }
    pub fn cache_lock(key: &[u8], wait_ms: i64) -> i32 {
        unsafe { raw::cache_lock(ptr(key), len(key), wait_ms) }
    }
    pub fn cache_stats(out: &mut [u8; 16]) -> i32 {
        unsafe { raw::cache_stats(mptr(out)) }
    }
    pub fn request_flags() -> i32 {
        unsafe { raw::request_flags() }
    }
    pub fn deadline_set(ms: i64) -> i32 {
        unsafe { raw::deadline_set(ms) }
    }
    pub fn deadline_remaining() -> i64 {
        unsafe { raw::deadline_remaining() }
    }
    pub fn endpoint_field(id: i32, field: i32, key: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        unsafe { raw::endpoint_field(id, field, ptr(key), len(key), uptr(out), ulen(out)) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake::backend;

/// A host call failed; the code is one of [`weir_abi::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub i32);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call failed: {} ({})", status::name(self.0), self.0)
    }
}

impl core::error::Error for HostError {}

/// The result of a host call.
pub type HostResult<T> = Result<T, HostError>;

fn check(code: i32) -> HostResult<u32> {
    u32::try_from(code).map_err(|_| HostError(code))
}

// Guest pointers and lengths are 32-bit on wasm32; the casts are lossless there.
#[cfg(target_arch = "wasm32")]
fn ptr(b: &[u8]) -> i32 {
    b.as_ptr() as usize as i32
}
#[cfg(target_arch = "wasm32")]
fn mptr(b: &mut [u8]) -> i32 {
    b.as_mut_ptr() as usize as i32
}
#[cfg(target_arch = "wasm32")]
fn len(b: &[u8]) -> i32 {
    i32::try_from(b.len()).unwrap_or(i32::MAX)
}
#[cfg(target_arch = "wasm32")]
fn uptr(b: &mut [MaybeUninit<u8>]) -> i32 {
    b.as_mut_ptr() as usize as i32
}
#[cfg(target_arch = "wasm32")]
fn ulen(b: &[MaybeUninit<u8>]) -> i32 {
    i32::try_from(b.len()).unwrap_or(i32::MAX)
}

/// Most values fit in this; a longer one costs a second call.
const FIRST_READ: usize = 128;

/// Reads a variable-length value straight into the `Vec` it returns: the
/// host writes into its spare capacity (no zeroing, no copy — in wasm both
/// are calls out to the runtime), and if the value is longer than that, the
/// call is repeated with room for all of it. `NOT_FOUND` becomes `Ok(None)`.
fn read_value(mut call: impl FnMut(&mut [MaybeUninit<u8>]) -> i32) -> HostResult<Option<Vec<u8>>> {
    let mut value = Vec::with_capacity(FIRST_READ);
    let mut n = match check(call(value.spare_capacity_mut())) {
        Ok(n) => n as usize,
        Err(HostError(status::NOT_FOUND)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if n > value.capacity() {
        value.reserve_exact(n);
        n = check(call(value.spare_capacity_mut()))? as usize;
        if n > value.capacity() {
            // The value grew between the two calls; the host wrote nothing.
            return Err(HostError(status::TOO_LARGE));
        }
    }
    // SAFETY: the host (or the fake host) writes a value only when it fits
    // the buffer it was given, and returns its length; `n` is within the
    // capacity, so exactly the first `n` bytes were written.
    unsafe { value.set_len(n) };
    Ok(Some(value))
}

/// Monotonic nanoseconds since the proxy started.
pub fn clock_ns() -> u64 {
    backend::clock_ns() as u64
}

/// 64 random bits from the host (fast, not cryptographic).
pub fn random() -> u64 {
    backend::random() as u64
}

/// Logs `msg` into the proxy's tracing at `level`, labelled with the route and plugin.
pub fn log(level: abi::LogLevel, msg: &str) -> HostResult<()> {
    check(backend::log(level.code(), msg.as_bytes())).map(drop)
}

/// The current call's input bytes (config for `configure`, snapshot for `restore`).
pub(crate) fn input() -> HostResult<Vec<u8>> {
    read_value(backend::input_read).map(Option::unwrap_or_default)
}

/// Hands the host this call's output (status JSON, snapshot, reject message).
pub(crate) fn output(bytes: &[u8]) -> HostResult<()> {
    check(backend::output_write(bytes)).map(drop)
}

pub(crate) fn request_field(field: abi::RequestField) -> HostResult<Option<Vec<u8>>> {
    read_value(|out| backend::request_field(field.code(), out))
}

pub(crate) fn header_get(map: abi::HeaderMap, name: &str) -> HostResult<Option<Vec<u8>>> {
    read_value(|out| backend::header_get(map.code(), name.as_bytes(), out))
}

/// Every line of a header, joined with `", "`.
pub(crate) fn header_get_joined(map: abi::HeaderMap, name: &str) -> HostResult<Option<Vec<u8>>> {
    let map = map.code() | abi::HEADER_JOINED;
    read_value(|out| backend::header_get(map, name.as_bytes(), out))
}

pub(crate) fn header_set(
    map: abi::HeaderMap,
    name: &str,
    value: &[u8],
    mode: abi::SetMode,
) -> HostResult<()> {
    check(backend::header_set(
        map.code(),
        name.as_bytes(),
        value,
        mode.code(),
    ))
    .map(drop)
}

pub(crate) fn header_remove(map: abi::HeaderMap, name: &str) -> HostResult<()> {
    check(backend::header_remove(map.code(), name.as_bytes())).map(drop)
}

pub(crate) fn set_attempt_timeout(ms: u64) -> HostResult<()> {
    check(backend::set_attempt_timeout(
        i64::try_from(ms).unwrap_or(i64::MAX),
    ))
    .map(drop)
}

pub(crate) fn answer(status_code: u16, headers: &[u8], body: &[u8]) -> HostResult<()> {
    check(backend::answer(i32::from(status_code), headers, body)).map(drop)
}

/// Fills `out` with the endpoints offered to `select` (`count` of them).
pub(crate) fn endpoints_read(count: usize, out: &mut Vec<crate::Endpoint>) -> HostResult<()> {
    out.clear();
    // Up to 32 endpoints are read through the stack: no allocation per pick.
    let mut stack = [0u8; 32 * abi::ENDPOINT_SIZE];
    let mut heap = Vec::new();
    let want = count.saturating_mul(abi::ENDPOINT_SIZE);
    let buf: &mut [u8] = match stack.get_mut(..want) {
        Some(b) => b,
        None => {
            heap.resize(want, 0);
            &mut heap
        }
    };
    let n = check(backend::endpoints_read(buf))? as usize;
    let filled = buf.get(..n.min(buf.len())).unwrap_or_default();
    for rec in filled.chunks_exact(abi::ENDPOINT_SIZE) {
        if let Ok(rec) = <&[u8; abi::ENDPOINT_SIZE]>::try_from(rec) {
            out.push(abi::EndpointRecord::decode(rec).into());
        }
    }
    Ok(())
}

/// Fills `out` with the endpoint ids this request already tried (`count` of them).
pub(crate) fn tried_read(count: usize, out: &mut Vec<u32>) -> HostResult<()> {
    out.clear();
    let mut stack = [0u8; 32 * 4];
    let mut heap = Vec::new();
    let want = count.saturating_mul(4);
    let buf: &mut [u8] = match stack.get_mut(..want) {
        Some(b) => b,
        None => {
            heap.resize(want, 0);
            &mut heap
        }
    };
    let n = check(backend::tried_read(buf))? as usize;
    let filled = buf.get(..n.min(buf.len())).unwrap_or_default();
    out.extend(
        filled
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// The current stats of one endpoint of the route's upstream.
pub fn endpoint_stats(id: u32) -> HostResult<crate::Endpoint> {
    let mut buf = [0u8; abi::ENDPOINT_SIZE];
    check(backend::endpoint_stats(id as i32, &mut buf))?;
    Ok(abi::EndpointRecord::decode(&buf).into())
}

/// A fact about one endpoint of the route's upstream (see [`crate::Endpoint::address`]).
pub(crate) fn endpoint_field(
    id: u32,
    field: abi::EndpointField,
    key: &str,
) -> HostResult<Option<Vec<u8>>> {
    read_value(|out| backend::endpoint_field(id as i32, field.code(), key.as_bytes(), out))
}

pub(crate) fn metric_define(kind: abi::MetricKind, name: &str) -> HostResult<u32> {
    check(backend::metric_define(kind.code(), name.as_bytes()))
}

pub(crate) fn metric_record(id: u32, value: f64) -> HostResult<()> {
    check(backend::metric_record(id as i32, value)).map(drop)
}

/// Reads a value from the host's cache store.
pub fn cache_get(key: &[u8]) -> HostResult<Option<Vec<u8>>> {
    read_value(|out| backend::cache_get(key, out))
}

/// Stores a value in the host's cache store for `ttl_ms` milliseconds.
pub fn cache_put(key: &[u8], value: &[u8], ttl_ms: u64) -> HostResult<()> {
    let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
    check(backend::cache_put(key, value, ttl)).map(drop)
}

/// Adds `delta` to the shared counter `name` (in-process by default, Redis
/// when the proxy is configured with one; shared by every plugin instance)
/// and returns its new value.
pub fn counter_add(name: &str, delta: i64) -> HostResult<i64> {
    let mut out = [0u8; 8];
    check(backend::counter_add(name.as_bytes(), delta, &mut out))?;
    Ok(i64::from_le_bytes(out))
}

/// Like [`counter_add`], for a counter that expires `ttl_ms` milliseconds
/// after it was created (the first add), then starts again from zero: a
/// fixed-window count shared by every proxy using the same store.
pub fn counter_add_ttl(name: &str, delta: i64, ttl_ms: u64) -> HostResult<i64> {
    let mut out = [0u8; 8];
    let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
    check(backend::counter_add_ttl(
        name.as_bytes(),
        delta,
        ttl,
        &mut out,
    ))?;
    Ok(i64::from_le_bytes(out))
}

/// Marks an endpoint of the route's upstream unhealthy for `for_ms`
/// milliseconds (passive ejection: the balancer stops seeing it); `0`
/// clears the mark.
pub fn endpoint_mark(id: u32, for_ms: u64) -> HostResult<()> {
    let ms = i64::try_from(for_ms).unwrap_or(i64::MAX);
    check(backend::endpoint_mark(id as i32, ms)).map(drop)
}

/// The request's flags ([`weir_abi::request_flags`]).
pub(crate) fn request_flags() -> HostResult<u32> {
    check(backend::request_flags())
}

pub(crate) fn deadline_set(ms: u64) -> HostResult<()> {
    check(backend::deadline_set(i64::try_from(ms).unwrap_or(i64::MAX))).map(drop)
}

/// Milliseconds left before the request's deadline; `None` if it has none.
pub(crate) fn deadline_remaining() -> HostResult<Option<u64>> {
    let v = backend::deadline_remaining();
    match i32::try_from(v) {
        Ok(status::NOT_FOUND) => Ok(None),
        Ok(code) if code < 0 => Err(HostError(code)),
        _ => Ok(Some(v.max(0) as u64)),
    }
}

/// Wall-clock milliseconds since the Unix epoch (for HTTP dates).
pub fn time_unix_ms() -> u64 {
    u64::try_from(backend::time_unix_ms()).unwrap_or(0)
}

fn ms(d: core::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `cache_lookup`: the entry's info record and metadata, `None` on a miss.
pub(crate) fn cache_lookup(key: &[u8]) -> HostResult<Option<Vec<u8>>> {
    read_value(|out| backend::cache_lookup(key, out))
}

pub(crate) fn cache_serve(key: &[u8], headers: &[u8], flags: i32) -> HostResult<()> {
    check(backend::cache_serve(key, headers, flags)).map(drop)
}

pub(crate) fn cache_store(
    key: &[u8],
    meta: &[u8],
    keep: core::time::Duration,
    max_bytes: u64,
) -> HostResult<()> {
    let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    check(backend::cache_store(key, meta, ms(keep), max)).map(drop)
}

pub(crate) fn cache_freshen(key: &[u8], meta: &[u8], keep: core::time::Duration) -> HostResult<()> {
    check(backend::cache_freshen(key, meta, ms(keep))).map(drop)
}

/// `cache_invalidate`: `Ok(false)` if nothing was stored under `key`.
pub(crate) fn cache_invalidate(key: &[u8]) -> HostResult<bool> {
    match check(backend::cache_invalidate(key)) {
        Ok(_) => Ok(true),
        Err(HostError(status::NOT_FOUND)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn cache_lock(key: &[u8], wait: core::time::Duration) -> HostResult<abi::cache::Lock> {
    let code = check(backend::cache_lock(key, ms(wait)))?;
    abi::cache::Lock::from_code(code as i32).ok_or(HostError(status::BAD_ARGUMENT))
}

/// `cache_stats`: (entries, bytes) of the whole store.
pub(crate) fn cache_stats() -> HostResult<(u64, u64)> {
    let mut out = [0u8; 16];
    check(backend::cache_stats(&mut out))?;
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&out[..8]);
    b.copy_from_slice(&out[8..]);
    Ok((u64::from_le_bytes(a), u64::from_le_bytes(b)))
}
