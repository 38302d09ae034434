//! The host functions plugins import (module `weir`): the request fields,
//! the endpoint list, metrics, answers and logging here; the header imports
//! in `host_headers`, the cache's in `host_cache`, a few more in
//! `host_extra`. Every function bounds-checks guest pointers and answers bad
//! input with a status code.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wasmtime::{Caller, Linker};
use weir_abi::{self as abi, Phase, imports, limits, status};

use super::host_state::{HostState, REQUEST_READ, arg, copy_out, parts, phase_in, range};
use super::views::LocalAnswer;

/// Registers every import of `sdk/ABI.md` in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    super::host_cache::add_to_linker(linker)?;
    super::host_headers::add_to_linker(linker)?;
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(m, imports::CLOCK_NS, |c: Caller<'_, HostState>| -> i64 {
        i64::try_from(c.data().services.elapsed().as_nanos()).unwrap_or(i64::MAX)
    })?;
    linker.func_wrap(m, imports::RANDOM, |mut c: Caller<'_, HostState>| -> i64 {
        c.data_mut().next_random() as i64
    })?;
    linker.func_wrap(
        m,
        imports::LOG,
        |mut c: Caller<'_, HostState>, level: i32, p: i32, l: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(msg) = arg(mem, p, l) else {
                return status::BAD_ARGUMENT;
            };
            let msg = String::from_utf8_lossy(&msg[..msg.len().min(limits::LOG_MAX)]);
            let plugin = &*st.plugin;
            match abi::LogLevel::from_code(level) {
                Some(abi::LogLevel::Error) => {
                    tracing::error!(target: "weir::plugin", plugin, "{msg}");
                    if msg.starts_with("plugin panicked: ") {
                        st.panic = Some(msg.into_owned());
                    }
                }
                Some(abi::LogLevel::Warn) => {
                    tracing::warn!(target: "weir::plugin", plugin, "{msg}")
                }
                Some(abi::LogLevel::Info) => {
                    tracing::info!(target: "weir::plugin", plugin, "{msg}")
                }
                Some(abi::LogLevel::Debug) => {
                    tracing::debug!(target: "weir::plugin", plugin, "{msg}")
                }
                Some(abi::LogLevel::Trace) => {
                    tracing::trace!(target: "weir::plugin", plugin, "{msg}")
                }
                None => return status::BAD_ARGUMENT,
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::INPUT_READ,
        |mut c: Caller<'_, HostState>, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if !phase_in(st, &[Phase::Configure, Phase::Restore]) {
                return status::BAD_PHASE;
            }
            copy_out(mem, p, cap, &st.input)
        },
    )?;
    linker.func_wrap(
        m,
        imports::OUTPUT_WRITE,
        |mut c: Caller<'_, HostState>, p: i32, l: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let allowed = [
                Phase::Configure,
                Phase::Status,
                Phase::Snapshot,
                Phase::Restore,
            ];
            if !phase_in(st, &allowed) {
                return status::BAD_PHASE;
            }
            let Some(bytes) = arg(mem, p, l) else {
                return status::BAD_ARGUMENT;
            };
            if bytes.len() > limits::OUTPUT_MAX {
                return status::TOO_LARGE;
            }
            st.output.clear();
            st.output.extend_from_slice(bytes);
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::REQUEST_FIELD,
        |mut c: Caller<'_, HostState>, field: i32, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if !phase_in(st, REQUEST_READ) {
                return status::BAD_PHASE;
            }
            let value = match abi::RequestField::from_code(field) {
                Some(abi::RequestField::Path) => Some(st.req.uri.path()),
                Some(abi::RequestField::Query) => st.req.uri.query(),
                Some(abi::RequestField::Method) => Some(st.req.method.as_str()),
                Some(abi::RequestField::ClientAddr) => {
                    let ip = st.req.client_addr.map(|a| a.to_string());
                    return match ip {
                        Some(v) => copy_out(mem, p, cap, v.as_bytes()),
                        None => status::NOT_FOUND,
                    };
                }
                Some(abi::RequestField::Scheme) => Some(if st.req.tls.is_some() {
                    "https"
                } else {
                    "http"
                }),
                Some(abi::RequestField::TlsServerName) => {
                    st.req.tls.as_ref().and_then(|t| t.server_name.as_deref())
                }
                Some(abi::RequestField::TlsAlpn) => {
                    st.req.tls.as_ref().and_then(|t| t.alpn.as_deref())
                }
                Some(abi::RequestField::ClientCertSubject) => st
                    .req
                    .tls
                    .as_ref()
                    .and_then(|t| t.client.as_ref())
                    .map(|c| c.subject.as_str()),
                Some(abi::RequestField::ClientCertNames) => st
                    .req
                    .tls
                    .as_ref()
                    .and_then(|t| t.client.as_ref())
                    .map(|c| c.names.as_str()),
                Some(abi::RequestField::Authority) => {
                    st.req.uri.authority().map(|a| a.as_str()).or_else(|| {
                        st.req
                            .headers
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                    })
                }
                None => return status::BAD_ARGUMENT,
            };
            match value {
                Some(v) => copy_out(mem, p, cap, v.as_bytes()),
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::SET_ATTEMPT_TIMEOUT,
        |mut c: Caller<'_, HostState>, ms: i64| {
            let st = c.data_mut();
            if st.phase != Phase::OnRequest {
                return status::BAD_PHASE;
            }
            let Ok(ms) = u64::try_from(ms) else {
                return status::BAD_ARGUMENT;
            };
            let t = Duration::from_millis(ms);
            st.attempt_timeout = Some(st.attempt_timeout.map_or(t, |old| old.min(t)));
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::ANSWER,
        |mut c: Caller<'_, HostState>, code: i32, hp: i32, hl: i32, bp: i32, bl: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if !phase_in(st, &[Phase::OnRequest, Phase::OnResponse]) {
                return status::BAD_PHASE;
            }
            let (Some(block), Some(body)) = (arg(mem, hp, hl), arg(mem, bp, bl)) else {
                return status::BAD_ARGUMENT;
            };
            if body.len() > limits::ANSWER_BODY_MAX || block.len() > limits::ANSWER_HEADERS_MAX {
                return status::TOO_LARGE;
            }
            let Ok(code) = u16::try_from(code) else {
                return status::BAD_ARGUMENT;
            };
            let Ok(status_code) = StatusCode::from_u16(code) else {
                return status::BAD_ARGUMENT;
            };
            let mut headers = HeaderMap::new();
            for entry in abi::header_block::iter(block) {
                let Ok((n, v)) = entry else {
                    return status::BAD_ARGUMENT;
                };
                let (Ok(v), Ok(n)) = (st.interner.value(v), st.interner.name(n)) else {
                    return status::BAD_ARGUMENT;
                };
                headers.append(n.clone(), v);
            }
            let body = Bytes::copy_from_slice(body);
            st.answer = Some(Box::new(LocalAnswer {
                status: status_code,
                headers,
                body,
            }));
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::ENDPOINTS_READ,
        |mut c: Caller<'_, HostState>, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if st.phase != Phase::Select {
                return status::BAD_PHASE;
            }
            let Some(out) = range(mem.len(), p, cap) else {
                return status::BAD_ARGUMENT;
            };
            let mut written = 0usize;
            for (e, chunk) in st
                .endpoints
                .iter()
                .zip(mem[out].chunks_exact_mut(abi::ENDPOINT_SIZE))
            {
                if let Ok(chunk) = <&mut [u8; abi::ENDPOINT_SIZE]>::try_from(chunk) {
                    e.encode(chunk);
                    written += abi::ENDPOINT_SIZE;
                }
            }
            i32::try_from(written).unwrap_or(status::TOO_LARGE)
        },
    )?;
    linker.func_wrap(
        m,
        imports::TRIED_READ,
        |mut c: Caller<'_, HostState>, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            if st.phase != Phase::Select {
                return status::BAD_PHASE;
            }
            let Some(out) = range(mem.len(), p, cap) else {
                return status::BAD_ARGUMENT;
            };
            let mut written = 0usize;
            for (id, chunk) in st.tried.iter().zip(mem[out].chunks_exact_mut(4)) {
                chunk.copy_from_slice(&id.to_le_bytes());
                written += 4;
            }
            i32::try_from(written).unwrap_or(status::TOO_LARGE)
        },
    )?;
    linker.func_wrap(
        m,
        imports::ENDPOINT_STATS,
        |mut c: Caller<'_, HostState>, id: i32, p: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(out) = range(mem.len(), p, abi::ENDPOINT_SIZE as i32) else {
                return status::BAD_ARGUMENT;
            };
            let Some(e) = st.endpoints.iter().find(|e| e.id == id as u32) else {
                return status::NOT_FOUND;
            };
            if let Ok(chunk) = <&mut [u8; abi::ENDPOINT_SIZE]>::try_from(&mut mem[out]) {
                e.encode(chunk);
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::ENDPOINT_FIELD,
        |mut c: Caller<'_, HostState>, id: i32, field: i32, kp: i32, kl: i32, p: i32, cap: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(field) = abi::EndpointField::from_code(field) else {
                return status::BAD_ARGUMENT;
            };
            let Some(key) = arg(mem, kp, kl) else {
                return status::BAD_ARGUMENT;
            };
            // Known from the request's first `select` on (its upstream's set).
            let (Some(facts), Ok(id)) = (&st.req.endpoint_facts, u32::try_from(id)) else {
                return status::NOT_FOUND;
            };
            let value = match field {
                abi::EndpointField::Address => facts.address(id),
                abi::EndpointField::Zone => facts.zone(id),
                abi::EndpointField::Metadata => std::str::from_utf8(key)
                    .ok()
                    .and_then(|key| facts.metadata(id, key)),
            };
            match value {
                Some(v) => copy_out(mem, p, cap, v.as_bytes()),
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::METRIC_DEFINE,
        |mut c: Caller<'_, HostState>, kind: i32, np: i32, nl: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(kind) = abi::MetricKind::from_code(kind) else {
                return status::BAD_ARGUMENT;
            };
            let Some(name) = arg(mem, np, nl) else {
                return status::BAD_ARGUMENT;
            };
            let Ok(name) = std::str::from_utf8(name) else {
                return status::BAD_ARGUMENT;
            };
            st.metrics.define(kind, name)
        },
    )?;
    linker.func_wrap(
        m,
        imports::METRIC_RECORD,
        |mut c: Caller<'_, HostState>, id: i32, v: f64| c.data_mut().metrics.record(id, v),
    )?;
    linker.func_wrap(
        m,
        imports::COUNTER_ADD,
        |mut c: Caller<'_, HostState>, np: i32, nl: i32, delta: i64, out: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(out) = range(mem.len(), out, 8) else {
                return status::BAD_ARGUMENT;
            };
            let Some(name) = arg(mem, np, nl) else {
                return status::BAD_ARGUMENT;
            };
            let Ok(name) = std::str::from_utf8(name) else {
                return status::BAD_ARGUMENT;
            };
            let Some(v) = st.services.counter_add_ttl(name, delta, None) else {
                return status::UNAVAILABLE;
            };
            mem[out].copy_from_slice(&v.to_le_bytes());
            status::OK
        },
    )?;
    super::host_extra::add_to_linker(linker)
}
