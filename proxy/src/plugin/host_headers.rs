//! The header imports (`header_get`, `header_set`, `header_remove`): which
//! map a call addresses in which phase, names and values through the
//! store's interner, and reads that avoid hashing on small maps.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::{Caller, Linker};
use weir_abi::{self as abi, Phase, imports, status};

use super::host_state::{HostState, REQUEST_READ, arg, copy_out, parts};
use super::intern::HeaderInterner;

/// Registers the header imports of `sdk/ABI.md` in `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(
        m,
        imports::HEADER_GET,
        |mut c: Caller<'_, HostState>, map: i32, np: i32, nl: i32, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let joined = map & abi::HEADER_JOINED != 0;
            let map = map & !abi::HEADER_JOINED;
            // The common case first: one value of the request or response.
            if !joined && map != abi::HeaderMap::Cached.code() {
                return match named_map(st, mem, (np, nl), map, false) {
                    Ok((name, headers)) => match first_value(headers, name) {
                        Some(value) => copy_out(mem, p, cap, value.as_bytes()),
                        None => status::NOT_FOUND,
                    },
                    Err(code) => code,
                };
            }
            let (name, headers) = match get_target(st, mem, (np, nl), map) {
                Ok(found) => found,
                Err(code) => return code,
            };
            let mut values = headers.get_all(&*name).iter();
            let Some(first) = values.next() else {
                return status::NOT_FOUND;
            };
            let Some(second) = values.next().filter(|_| joined) else {
                return copy_out(mem, p, cap, first.as_bytes());
            };
            let mut all = first.as_bytes().to_vec();
            for value in std::iter::once(second).chain(values) {
                all.extend_from_slice(b", ");
                all.extend_from_slice(value.as_bytes());
            }
            copy_out(mem, p, cap, &all)
        },
    )?;
    linker.func_wrap(
        m,
        imports::HEADER_SET,
        |mut c: Caller<'_, HostState>, map: i32, np: i32, nl: i32, vp: i32, vl: i32, mode: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let (Some(name), Some(value)) = (arg(mem, np, nl), arg(mem, vp, vl)) else {
                return status::BAD_ARGUMENT;
            };
            let (Ok(value), Ok(name)) = (st.interner.value(value), st.interner.name(name)) else {
                return status::BAD_ARGUMENT;
            };
            let name = name.clone();
            let headers = match header_map(st, map, true) {
                Ok((h, _)) => h,
                Err(code) => return code,
            };
            match abi::SetMode::from_code(mode) {
                Some(abi::SetMode::Replace) => {
                    headers.insert(name, value);
                }
                Some(abi::SetMode::Append) => {
                    headers.append(name, value);
                }
                None => return status::BAD_ARGUMENT,
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::HEADER_REMOVE,
        |mut c: Caller<'_, HostState>, map: i32, np: i32, nl: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let (name, headers) = match named_map(st, mem, (np, nl), map, true) {
                Ok(found) => found,
                Err(code) => return code,
            };
            match headers.remove(name) {
                Some(_) => status::OK,
                None => status::NOT_FOUND,
            }
        },
    )?;
    Ok(())
}

/// The header map a `header_*` call addresses, if this phase may read it
/// (`write`: may also change it), and the store's interner beside it.
fn header_map(
    st: &mut HostState,
    map: i32,
    write: bool,
) -> Result<(&mut HeaderMap, &mut HeaderInterner), i32> {
    let phase = st.phase;
    let headers = match abi::HeaderMap::from_code(map) {
        Some(abi::HeaderMap::Request) => {
            let ok = if write {
                phase == Phase::OnRequest
            } else {
                REQUEST_READ.contains(&phase)
            };
            if !ok {
                return Err(status::BAD_PHASE);
            }
            &mut st.req.headers
        }
        Some(abi::HeaderMap::Response) => {
            if phase != Phase::OnResponse {
                return Err(status::BAD_PHASE);
            }
            if !st.has_resp {
                return Err(status::UNAVAILABLE);
            }
            &mut st.resp
        }
        // Read-only, and read through `header_get` alone.
        Some(abi::HeaderMap::Cached) => return Err(status::BAD_PHASE),
        None => return Err(status::BAD_ARGUMENT),
    };
    Ok((headers, &mut st.interner))
}

/// The map a `header_get`/`header_remove` call addresses and the name it
/// looks for (the map's phase check comes first, as its errors do).
fn named_map<'a>(
    st: &'a mut HostState,
    mem: &[u8],
    (ptr, len): (i32, i32),
    map: i32,
    write: bool,
) -> Result<(&'a HeaderName, &'a mut HeaderMap), i32> {
    let (headers, interner) = header_map(st, map, write)?;
    let name = lookup_name(interner, mem, ptr, len)?;
    Ok((name, headers))
}

/// The header name a `header_get`/`header_remove` call looks for. A name
/// that is no valid header name names no header (`NOT_FOUND`); bytes that
/// are not even UTF-8 are a bad argument.
fn lookup_name<'a>(
    interner: &'a mut HeaderInterner,
    mem: &[u8],
    ptr: i32,
    len: i32,
) -> Result<&'a HeaderName, i32> {
    let raw = arg(mem, ptr, len).ok_or(status::BAD_ARGUMENT)?;
    interner.name(raw).map_err(|_| {
        if std::str::from_utf8(raw).is_err() {
            status::BAD_ARGUMENT
        } else {
            status::NOT_FOUND
        }
    })
}

/// The map a `header_get` reads (the cached response's too) and the name it
/// looks for. The cached map's name is cloned: that map is borrowed from
/// the whole store.
fn get_target<'a>(
    st: &'a mut HostState,
    mem: &[u8],
    name: (i32, i32),
    map: i32,
) -> Result<(Cow<'a, HeaderName>, &'a HeaderMap), i32> {
    if map == abi::HeaderMap::Cached.code() {
        let name = lookup_name(&mut st.interner, mem, name.0, name.1)?.clone();
        let headers = super::host_cache::cached_headers(st)?;
        return Ok((Cow::Owned(name), headers));
    }
    let (name, headers) = named_map(st, mem, name, map, false)?;
    Ok((Cow::Borrowed(name), headers))
}

/// Maps with at most this many values are scanned by [`first_value`].
const SCAN_MAX: usize = 16;

/// The first value of `name`, as `HeaderMap::get` finds it. A small map (as
/// most requests are) is scanned instead: comparing a dozen names costs less
/// than `get`'s hashing of the name, which runs byte by byte (FNV) over the
/// name, its length and its kind.
fn first_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() <= SCAN_MAX {
        // Each name's first value comes before its others.
        headers.iter().find_map(|(n, v)| (n == name).then_some(v))
    } else {
        headers.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_matches_get_on_small_and_large_maps() {
        for extra in [0, SCAN_MAX] {
            let mut headers = HeaderMap::new();
            for i in 0..extra {
                headers.insert(
                    HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                    HeaderValue::from_static("f"),
                );
            }
            headers.insert(http::header::ACCEPT, "a1".parse().unwrap());
            headers.append(http::header::ACCEPT, "a2".parse().unwrap());
            headers.append("x-user", "u1".parse().unwrap());
            headers.append("x-user", "u2".parse().unwrap());
            assert_eq!(headers.len() <= SCAN_MAX, extra == 0);
            for name in ["accept", "x-user", "x-missing", "x-filler-3", "x-use"] {
                let name = HeaderName::from_static(name);
                assert_eq!(first_value(&headers, &name), headers.get(&name), "{name}");
            }
        }
    }
}
