//! The cache-store imports of `sdk/ABI.md` (`cache_lookup`, `cache_serve`,
//! `cache_store`, `cache_freshen`, `cache_invalidate`, `cache_lock`,
//! `cache_stats`, the plain `cache_get`/`cache_put`) and the wall clock HTTP
//! dates need. Bodies never enter the guest: a lookup hands over the
//! entry's scalars and the plugin's metadata, a serve builds the local
//! answer from the stored bytes, a store leaves a directive on the request
//! for the server to carry out on the body.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use wasmtime::{Caller, Linker};
use weir_abi::{self as abi, Phase, cache, imports, limits, status};

use super::host_state::{HostState, arg, copy_out, parts, phase_in, range};
use super::views::LocalAnswer;
use crate::cache_store::{Acquired, StoreDirective, StoredResponse};

const LOOKUP_PHASES: &[Phase] = &[Phase::OnRequest, Phase::OnResponse];

/// The headers of the entry this request last looked up (`HeaderMap::Cached`).
pub(super) fn cached_headers(st: &HostState) -> Result<&HeaderMap, i32> {
    if !phase_in(st, LOOKUP_PHASES) {
        return Err(status::BAD_PHASE);
    }
    match &st.req.cache.pinned {
        Some((_, entry)) => Ok(&entry.headers),
        None => Err(status::UNAVAILABLE),
    }
}

/// A key argument: in bounds and not over the key limit.
fn key_arg(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], i32> {
    let key = arg(mem, ptr, len).ok_or(status::BAD_ARGUMENT)?;
    if key.len() > limits::CACHE_KEY_MAX {
        return Err(status::TOO_LARGE);
    }
    Ok(key)
}

/// A metadata argument: in bounds and not over the metadata limit.
fn meta_arg(mem: &[u8], ptr: i32, len: i32) -> Result<Bytes, i32> {
    let meta = arg(mem, ptr, len).ok_or(status::BAD_ARGUMENT)?;
    if meta.len() > limits::CACHE_META_MAX {
        return Err(status::TOO_LARGE);
    }
    Ok(Bytes::copy_from_slice(meta))
}

fn keep_arg(ms: i64) -> Result<Duration, i32> {
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| status::BAD_ARGUMENT)
}

/// The entry under `key`: the one this request pinned, else the store's.
fn entry_for(st: &HostState, key: &[u8]) -> Option<Arc<StoredResponse>> {
    match &st.req.cache.pinned {
        Some((k, e)) if &**k == key => Some(Arc::clone(e)),
        _ => st.services.cache().lookup(key),
    }
}

/// The local answer for a stored entry, with `extra` fields (a header
/// block) replacing stored ones of the same name.
fn serve(entry: &StoredResponse, extra: &[u8], not_modified: bool) -> Result<LocalAnswer, i32> {
    let mut headers = if not_modified {
        // RFC 9110 §15.4.5: a 304 carries the fields a 200 would have had
        // among these, and no other representation metadata.
        let keep = [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
        ];
        let mut h = HeaderMap::new();
        for name in keep {
            for v in entry.headers.get_all(&name) {
                h.append(name.clone(), v.clone());
            }
        }
        h
    } else {
        entry.headers.clone()
    };
    let mut replaced: Vec<HeaderName> = Vec::new();
    for item in abi::header_block::iter(extra) {
        let (n, v) = item.map_err(|()| status::BAD_ARGUMENT)?;
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) else {
            return Err(status::BAD_ARGUMENT);
        };
        if !replaced.contains(&n) {
            headers.remove(&n);
            replaced.push(n.clone());
        }
        headers.append(n, v);
    }
    Ok(LocalAnswer {
        status: if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            entry.status
        },
        headers,
        body: if not_modified {
            Bytes::new()
        } else {
            entry.body.clone()
        },
    })
}

/// Registers the cache imports in `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(m, imports::TIME_UNIX_MS, || -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })?;
    linker.func_wrap(
        m,
        imports::CACHE_GET,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(key) = arg(mem, kp, kl) else {
                return status::BAD_ARGUMENT;
            };
            match st.services.cache_get(key) {
                Some(v) => copy_out(mem, p, cap, &v),
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_PUT,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, vp: i32, vl: i32, ttl: i64| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let (Some(key), Some(value)) = (arg(mem, kp, kl), arg(mem, vp, vl)) else {
                return status::BAD_ARGUMENT;
            };
            let Ok(ttl) = keep_arg(ttl) else {
                return status::BAD_ARGUMENT;
            };
            if value.len() > limits::CACHE_VALUE_MAX {
                return status::TOO_LARGE;
            }
            st.services
                .cache_put(key, Bytes::copy_from_slice(value), ttl);
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_LOOKUP,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if !phase_in(st, LOOKUP_PHASES) {
                return status::BAD_PHASE;
            }
            let key: Box<[u8]> = match key_arg(mem, kp, kl) {
                Ok(k) => k.into(),
                Err(code) => return code,
            };
            let Some(out) = range(mem.len(), p, cap) else {
                return status::BAD_ARGUMENT;
            };
            let Some(entry) = st.services.cache().lookup(&key) else {
                return status::NOT_FOUND;
            };
            let info = cache::EntryInfo {
                resident_ms: u64::try_from(entry.stored_at.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
                status: entry.status.as_u16(),
                body_len: u32::try_from(entry.body.len()).unwrap_or(u32::MAX),
            };
            let total = cache::INFO_SIZE + entry.meta.len();
            if total <= out.len() {
                let dst = &mut mem[out.start..out.start + total];
                let (head, rest) = dst.split_at_mut(cache::INFO_SIZE);
                if let Ok(head) = <&mut [u8; cache::INFO_SIZE]>::try_from(head) {
                    info.encode(head);
                }
                rest.copy_from_slice(&entry.meta);
            }
            st.req.cache.pinned = Some((key, entry));
            i32::try_from(total).unwrap_or(status::TOO_LARGE)
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_SERVE,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, hp: i32, hl: i32, flags: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if !phase_in(st, LOOKUP_PHASES) {
                return status::BAD_PHASE;
            }
            let key = match key_arg(mem, kp, kl) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let Some(extra) = arg(mem, hp, hl) else {
                return status::BAD_ARGUMENT;
            };
            if extra.len() > limits::ANSWER_HEADERS_MAX {
                return status::TOO_LARGE;
            }
            let Some(entry) = entry_for(st, key) else {
                return status::NOT_FOUND;
            };
            match serve(&entry, extra, flags & cache::SERVE_NOT_MODIFIED != 0) {
                Ok(answer) => {
                    st.answer = Some(Box::new(answer));
                    status::OK
                }
                Err(code) => code,
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_STORE,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, mp: i32, ml: i32, keep: i64, max: i64| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if st.phase != Phase::OnResponse {
                return status::BAD_PHASE;
            }
            let Some(code) = st.upstream_status else {
                return status::UNAVAILABLE;
            };
            let (key, meta, keep) = match (key_arg(mem, kp, kl), meta_arg(mem, mp, ml)) {
                (Ok(k), Ok(m)) => match keep_arg(keep) {
                    Ok(keep) => (k, m, keep),
                    Err(e) => return e,
                },
                (Err(e), _) | (_, Err(e)) => return e,
            };
            let Ok(max) = u64::try_from(max) else {
                return status::BAD_ARGUMENT;
            };
            let store = Arc::clone(st.services.cache());
            let directive = StoreDirective::new(store, key, code, st.resp.clone(), meta, keep, max);
            st.req.cache.store = Some(directive);
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_FRESHEN,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, mp: i32, ml: i32, keep: i64| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if st.phase != Phase::OnResponse {
                return status::BAD_PHASE;
            }
            if st.upstream_status != Some(StatusCode::NOT_MODIFIED) {
                return status::UNAVAILABLE;
            }
            let (key, meta, keep) = match (key_arg(mem, kp, kl), meta_arg(mem, mp, ml)) {
                (Ok(k), Ok(m)) => match keep_arg(keep) {
                    Ok(keep) => (k, m, keep),
                    Err(e) => return e,
                },
                (Err(e), _) | (_, Err(e)) => return e,
            };
            let Some(base) = entry_for(st, key) else {
                return status::NOT_FOUND;
            };
            let fresh = st
                .services
                .cache()
                .freshen(key, &base, &st.resp, meta, keep);
            st.req.cache.pinned = Some((key.into(), fresh));
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_INVALIDATE,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(key) = arg(mem, kp, kl) else {
                return status::BAD_ARGUMENT;
            };
            if st.services.cache().invalidate(key) {
                status::OK
            } else {
                status::NOT_FOUND
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_LOCK,
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32, wait_ms: i64| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if st.phase != Phase::OnRequest {
                return status::BAD_PHASE;
            }
            let key = match key_arg(mem, kp, kl) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let Ok(wait_ms) = u64::try_from(wait_ms) else {
                return status::BAD_ARGUMENT;
            };
            let rc = &mut st.req.cache;
            if rc.lock.as_ref().is_some_and(|g| g.key() == key) {
                return cache::Lock::Leader.code();
            }
            if rc.waited {
                return cache::Lock::Pass.code();
            }
            match st.services.cache().acquire(key) {
                Acquired::Leader(guard) => {
                    rc.lock = Some(guard);
                    cache::Lock::Leader.code()
                }
                Acquired::Follower(wait) => {
                    if wait_ms > 0 {
                        let ms = wait_ms.min(limits::CACHE_WAIT_MAX_MS);
                        rc.wait = Some(wait.with_limit(Duration::from_millis(ms)));
                        rc.waited = true;
                    }
                    cache::Lock::Follower.code()
                }
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::CACHE_STATS,
        |mut c: Caller<'_, HostState>, p: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(out) = range(mem.len(), p, 16) else {
                return status::BAD_ARGUMENT;
            };
            let store = st.services.cache();
            mem[out.start..out.start + 8].copy_from_slice(&store.entry_count().to_le_bytes());
            mem[out.start + 8..out.end].copy_from_slice(&store.weighted_size().to_le_bytes());
            status::OK
        },
    )?;
    Ok(())
}
