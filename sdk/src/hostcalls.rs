//! Every raw host import and its safe wrapper: the only `unsafe` in the SDK.
//!
//! The raw functions follow `sdk/ABI.md` exactly. The wrappers turn negative
//! status codes into [`HostError`] and never panic, so a plugin decides what a
//! failed host call means (the proxy-wasm SDK unwraps them into panics; a
//! panic here would trap and cost the instance).
//!
//! Off wasm32 (the SDK's own unit tests, clippy on the host) the imports are
//! stubs that answer `UNAVAILABLE`, so the crate builds and links everywhere.

use alloc::vec::Vec;
use core::fmt;

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

/// Host-side stubs with the imports' signatures, for non-wasm builds.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
mod raw {
    use weir_abi::status::UNAVAILABLE;
    pub unsafe fn clock_ns() -> i64 {
        0
    }
    pub unsafe fn random() -> i64 {
        0
    }
    pub unsafe fn log(_: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn input_read(_: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn output_write(_: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn request_field(_: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn header_get(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn header_set(_: i32, _: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn header_remove(_: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn set_attempt_timeout(_: i64) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn answer(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn endpoints_read(_: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn tried_read(_: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn endpoint_stats(_: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn metric_define(_: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn metric_record(_: i32, _: f64) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_get(_: i32, _: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_put(_: i32, _: i32, _: i32, _: i32, _: i64) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn counter_add(_: i32, _: i32, _: i64, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn time_unix_ms() -> i64 {
        0
    }
    pub unsafe fn cache_lookup(_: i32, _: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_serve(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_store(_: i32, _: i32, _: i32, _: i32, _: i64, _: i64) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_freshen(_: i32, _: i32, _: i32, _: i32, _: i64) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_invalidate(_: i32, _: i32) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_lock(_: i32, _: i32, _: i64) -> i32 {
        UNAVAILABLE
    }
    pub unsafe fn cache_stats(_: i32) -> i32 {
        UNAVAILABLE
    }
}

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
fn ptr(b: &[u8]) -> i32 {
    b.as_ptr() as usize as i32
}
fn mptr(b: &mut [u8]) -> i32 {
    b.as_mut_ptr() as usize as i32
}
fn len(b: &[u8]) -> i32 {
    i32::try_from(b.len()).unwrap_or(i32::MAX)
}

/// Reads a variable-length value: first into a small stack buffer (most
/// headers fit), then, if the host says it is longer, into an exact one.
/// `NOT_FOUND` becomes `Ok(None)`.
fn read_value(mut call: impl FnMut(i32, i32) -> i32) -> HostResult<Option<Vec<u8>>> {
    let mut small = [0u8; 256];
    let n = match check(call(mptr(&mut small), len(&small))) {
        Ok(n) => n as usize,
        Err(HostError(status::NOT_FOUND)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if n <= small.len() {
        return Ok(Some(small[..n].to_vec()));
    }
    let mut big = alloc::vec![0u8; n];
    let m = check(call(mptr(&mut big), len(&big)))? as usize;
    big.truncate(m.min(n));
    Ok(Some(big))
}

/// Monotonic nanoseconds since the proxy started.
pub fn clock_ns() -> u64 {
    // SAFETY: no arguments; the host only returns a value.
    unsafe { raw::clock_ns() as u64 }
}

/// 64 random bits from the host (fast, not cryptographic).
pub fn random() -> u64 {
    // SAFETY: no arguments; the host only returns a value.
    unsafe { raw::random() as u64 }
}

/// Logs `msg` into the proxy's tracing at `level`, labelled with the route and plugin.
pub fn log(level: abi::LogLevel, msg: &str) -> HostResult<()> {
    // SAFETY: the host reads `msg` only during the call and bounds-checks it.
    check(unsafe { raw::log(level.code(), ptr(msg.as_bytes()), len(msg.as_bytes())) }).map(drop)
}

/// The current call's input bytes (config for `configure`, snapshot for `restore`).
pub(crate) fn input() -> HostResult<Vec<u8>> {
    // SAFETY: the host writes at most `cap` bytes at `ptr`, which we own.
    read_value(|p, c| unsafe { raw::input_read(p, c) }).map(Option::unwrap_or_default)
}

/// Hands the host this call's output (status JSON, snapshot, reject message).
pub(crate) fn output(bytes: &[u8]) -> HostResult<()> {
    // SAFETY: the host copies `bytes` during the call.
    check(unsafe { raw::output_write(ptr(bytes), len(bytes)) }).map(drop)
}

pub(crate) fn request_field(field: abi::RequestField) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: the host writes at most `cap` bytes at `ptr`, which we own.
    read_value(|p, c| unsafe { raw::request_field(field.code(), p, c) })
}

pub(crate) fn header_get(map: abi::HeaderMap, name: &str) -> HostResult<Option<Vec<u8>>> {
    let n = name.as_bytes();
    // SAFETY: the host reads `name` and writes at most `cap` bytes at `ptr`.
    read_value(|p, c| unsafe { raw::header_get(map.code(), ptr(n), len(n), p, c) })
}

pub(crate) fn header_set(
    map: abi::HeaderMap,
    name: &str,
    value: &[u8],
    mode: abi::SetMode,
) -> HostResult<()> {
    let n = name.as_bytes();
    // SAFETY: the host only reads both buffers during the call.
    let code = unsafe {
        raw::header_set(
            map.code(),
            ptr(n),
            len(n),
            ptr(value),
            len(value),
            mode.code(),
        )
    };
    check(code).map(drop)
}

pub(crate) fn header_remove(map: abi::HeaderMap, name: &str) -> HostResult<()> {
    let n = name.as_bytes();
    // SAFETY: the host only reads `name` during the call.
    check(unsafe { raw::header_remove(map.code(), ptr(n), len(n)) }).map(drop)
}

pub(crate) fn set_attempt_timeout(ms: u64) -> HostResult<()> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    // SAFETY: scalar arguments only.
    check(unsafe { raw::set_attempt_timeout(ms) }).map(drop)
}

pub(crate) fn answer(status_code: u16, headers: &[u8], body: &[u8]) -> HostResult<()> {
    // SAFETY: the host copies both buffers during the call.
    let code = unsafe {
        raw::answer(
            i32::from(status_code),
            ptr(headers),
            len(headers),
            ptr(body),
            len(body),
        )
    };
    check(code).map(drop)
}

/// Fills `out` with the endpoints offered to `select` (`count` of them).
pub(crate) fn endpoints_read(count: usize, out: &mut Vec<abi::EndpointRecord>) -> HostResult<()> {
    out.clear();
    let mut buf = alloc::vec![0u8; count * abi::ENDPOINT_SIZE];
    // SAFETY: the host writes at most `cap` bytes at `ptr`, which we own.
    let n = check(unsafe { raw::endpoints_read(mptr(&mut buf), len(&buf)) })? as usize;
    let filled = buf.get(..n.min(buf.len())).unwrap_or_default();
    for rec in filled.chunks_exact(abi::ENDPOINT_SIZE) {
        if let Ok(rec) = <&[u8; abi::ENDPOINT_SIZE]>::try_from(rec) {
            out.push(abi::EndpointRecord::decode(rec));
        }
    }
    Ok(())
}

/// Fills `out` with the endpoint ids this request already tried (`count` of them).
pub(crate) fn tried_read(count: usize, out: &mut Vec<u32>) -> HostResult<()> {
    out.clear();
    let mut buf = alloc::vec![0u8; count * 4];
    // SAFETY: the host writes at most `cap` bytes at `ptr`, which we own.
    let n = check(unsafe { raw::tried_read(mptr(&mut buf), len(&buf)) })? as usize;
    let filled = buf.get(..n.min(buf.len())).unwrap_or_default();
    out.extend(
        filled
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// The current stats of one endpoint of the route's upstream.
pub fn endpoint_stats(id: u32) -> HostResult<abi::EndpointRecord> {
    let mut buf = [0u8; abi::ENDPOINT_SIZE];
    // SAFETY: the host writes exactly ENDPOINT_SIZE bytes at `ptr`, which we own.
    check(unsafe { raw::endpoint_stats(id as i32, mptr(&mut buf)) })?;
    Ok(abi::EndpointRecord::decode(&buf))
}

pub(crate) fn metric_define(kind: abi::MetricKind, name: &str) -> HostResult<u32> {
    let n = name.as_bytes();
    // SAFETY: the host only reads `name` during the call.
    check(unsafe { raw::metric_define(kind.code(), ptr(n), len(n)) })
}

pub(crate) fn metric_record(id: u32, value: f64) -> HostResult<()> {
    // SAFETY: scalar arguments only.
    check(unsafe { raw::metric_record(id as i32, value) }).map(drop)
}

/// Reads a value from the host's cache store.
pub fn cache_get(key: &[u8]) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: the host reads `key` and writes at most `cap` bytes at `ptr`.
    read_value(|p, c| unsafe { raw::cache_get(ptr(key), len(key), p, c) })
}

/// Stores a value in the host's cache store for `ttl_ms` milliseconds.
pub fn cache_put(key: &[u8], value: &[u8], ttl_ms: u64) -> HostResult<()> {
    let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
    // SAFETY: the host copies both buffers during the call.
    check(unsafe { raw::cache_put(ptr(key), len(key), ptr(value), len(value), ttl) }).map(drop)
}

/// Adds `delta` to the shared counter `name` (in-process by default, shared
/// by every plugin instance of the proxy) and returns its new value.
pub fn counter_add(name: &str, delta: i64) -> HostResult<i64> {
    let n = name.as_bytes();
    let mut out = [0u8; 8];
    // SAFETY: the host reads `name` and writes 8 bytes at `out`, which we own.
    check(unsafe { raw::counter_add(ptr(n), len(n), delta, mptr(&mut out)) })?;
    Ok(i64::from_le_bytes(out))
}

/// Wall-clock milliseconds since the Unix epoch (for HTTP dates; `0` off wasm).
pub fn time_unix_ms() -> u64 {
    // SAFETY: no arguments; the host only returns a value.
    u64::try_from(unsafe { raw::time_unix_ms() }).unwrap_or(0)
}

fn ms(d: core::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `cache_lookup`: the entry's info record and metadata, `None` on a miss.
pub(crate) fn cache_lookup(key: &[u8]) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: the host reads `key` and writes at most `cap` bytes at `ptr`.
    read_value(|p, c| unsafe { raw::cache_lookup(ptr(key), len(key), p, c) })
}

pub(crate) fn cache_serve(key: &[u8], headers: &[u8], flags: i32) -> HostResult<()> {
    // SAFETY: the host only reads both buffers during the call.
    let code = unsafe { raw::cache_serve(ptr(key), len(key), ptr(headers), len(headers), flags) };
    check(code).map(drop)
}

pub(crate) fn cache_store(
    key: &[u8],
    meta: &[u8],
    keep: core::time::Duration,
    max_bytes: u64,
) -> HostResult<()> {
    let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    // SAFETY: the host copies both buffers during the call.
    let code = unsafe { raw::cache_store(ptr(key), len(key), ptr(meta), len(meta), ms(keep), max) };
    check(code).map(drop)
}

pub(crate) fn cache_freshen(key: &[u8], meta: &[u8], keep: core::time::Duration) -> HostResult<()> {
    // SAFETY: the host copies both buffers during the call.
    let code = unsafe { raw::cache_freshen(ptr(key), len(key), ptr(meta), len(meta), ms(keep)) };
    check(code).map(drop)
}

/// `cache_invalidate`: `Ok(false)` if nothing was stored under `key`.
pub(crate) fn cache_invalidate(key: &[u8]) -> HostResult<bool> {
    // SAFETY: the host only reads `key` during the call.
    match check(unsafe { raw::cache_invalidate(ptr(key), len(key)) }) {
        Ok(_) => Ok(true),
        Err(HostError(status::NOT_FOUND)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn cache_lock(key: &[u8], wait: core::time::Duration) -> HostResult<abi::cache::Lock> {
    // SAFETY: the host only reads `key` during the call.
    let code = check(unsafe { raw::cache_lock(ptr(key), len(key), ms(wait)) })?;
    abi::cache::Lock::from_code(code as i32).ok_or(HostError(status::BAD_ARGUMENT))
}

/// `cache_stats`: (entries, bytes) of the whole store.
pub(crate) fn cache_stats() -> HostResult<(u64, u64)> {
    let mut out = [0u8; 16];
    // SAFETY: the host writes 16 bytes at `out`, which we own.
    check(unsafe { raw::cache_stats(mptr(&mut out)) })?;
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&out[..8]);
    b.copy_from_slice(&out[8..]);
    Ok((u64::from_le_bytes(a), u64::from_le_bytes(b)))
}
