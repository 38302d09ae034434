//! The host functions plugins import (module `weir`), and the per-store state
//! they work on. Every function bounds-checks guest pointers and answers bad
//! input with a status code: a plugin can never make the host trap or panic.
//! The header imports live in `host_headers`, the cache's in `host_cache`,
//! a few more in `host_extra`.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wasmtime::{Caller, Linker, Memory, StoreLimits};
use weir_abi::{self as abi, Phase, imports, limits, status};

use super::intern::HeaderInterner;
use super::metrics::MetricsRegistry;
use super::services::HostServices;
use super::views::{EndpointInfo, LocalAnswer, RequestView};

/// What a store holds: limits, the current phase, and the request data moved
/// in for the current call.
pub(crate) struct HostState {
    pub limits: StoreLimits,
    pub phase: Phase,
    pub memory: Option<Memory>,
    pub plugin: Arc<str>,
    pub services: Arc<HostServices>,
    pub metrics: MetricsRegistry,
    /// The request, swapped in for request-phase calls.
    pub req: Box<RequestView>,
    /// The response (or answer) headers, swapped in for `on_response`.
    pub resp: HeaderMap,
    pub has_resp: bool,
    /// An answer the plugin made in this call.
    /// Boxed: it travels back through the call's result, and is rare.
    pub answer: Option<Box<LocalAnswer>>,
    pub attempt_timeout: Option<Duration>,
    /// Input of `configure`/`restore`; output of `configure`/`status`/`snapshot`.
    pub input: Bytes,
    pub output: Vec<u8>,
    /// The status of the upstream response `on_response` sees (`None` for
    /// an error or a local answer); `cache_store` and `cache_freshen` need it.
    pub upstream_status: Option<StatusCode>,
    /// Offered to `select`; kept for `endpoint_stats`.
    pub endpoints: Vec<EndpointInfo>,
    pub tried: Vec<u32>,
    /// Endpoint marks (passive ejection) left by the plugin, drained by the
    /// core through `Chain::drain_endpoint_marks`; `Duration::ZERO` clears.
    pub marks: Vec<(u32, Duration)>,
    /// The header names and values this plugin passed, parsed once.
    pub interner: HeaderInterner,
    /// What the SDK's panic hook logged just before a panic traps, so the
    /// trap's error can say it (a trap alone says "unreachable").
    pub panic: Option<String>,
    rng: u64,
}

impl HostState {
    pub fn new(plugin: Arc<str>, services: Arc<HostServices>, limits: StoreLimits) -> Self {
        // Seed from std's per-process random keys; plugins need speed, not secrecy.
        let seed = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(Instant::now())
        };
        Self {
            limits,
            phase: Phase::Idle,
            memory: None,
            plugin,
            services,
            metrics: MetricsRegistry::default(),
            req: Box::default(),
            resp: HeaderMap::new(),
            has_resp: false,
            upstream_status: None,
            answer: None,
            attempt_timeout: None,
            input: Bytes::new(),
            output: Vec::new(),
            endpoints: Vec::new(),
            tried: Vec::new(),
            marks: Vec::new(),
            interner: HeaderInterner::default(),
            panic: None,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The range `ptr..ptr+len` if it lies inside memory of `size` bytes.
pub(super) fn range(size: usize, ptr: i32, len: i32) -> Option<Range<usize>> {
    let start = usize::try_from(ptr as u32).ok()?;
    let end = start.checked_add(usize::try_from(len as u32).ok()?)?;
    (end <= size).then_some(start..end)
}

/// Guest memory and host state, borrowed together.
pub(super) fn parts<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Option<(&'a mut [u8], &'a mut HostState)> {
    let memory = caller.data().memory?;
    Some(memory.data_and_store_mut(caller))
}

/// Copies `value` to `ptr` if it fits in `cap`; returns its full length either
/// way, so the guest can retry with a buffer that fits.
pub(super) fn copy_out(mem: &mut [u8], ptr: i32, cap: i32, value: &[u8]) -> i32 {
    let Some(out) = range(mem.len(), ptr, cap) else {
        return status::BAD_ARGUMENT;
    };
    let Ok(n) = i32::try_from(value.len()) else {
        return status::TOO_LARGE;
    };
    if value.len() <= out.len() {
        mem[out.start..out.start + value.len()].copy_from_slice(value);
    }
    n
}

pub(super) fn phase_in(state: &HostState, allowed: &[Phase]) -> bool {
    allowed.contains(&state.phase)
}

pub(super) const REQUEST_READ: &[Phase] = &[Phase::OnRequest, Phase::Select, Phase::OnResponse];

/// A name or key argument, borrowed from guest memory.
pub(super) fn arg(mem: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    range(mem.len(), ptr, len).map(|r| &mem[r])
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_rejects_overflow_and_out_of_bounds() {
        assert_eq!(range(100, 10, 20), Some(10..30));
        assert_eq!(range(100, 90, 20), None);
        assert_eq!(range(100, -1, 1), None);
        assert_eq!(range(100, 0, -1), None);
        assert_eq!(range(100, 100, 0), Some(100..100));
    }

    #[test]
    fn copy_out_reports_full_length() {
        let mut mem = [0u8; 8];
        assert_eq!(copy_out(&mut mem, 0, 2, b"hello"), 5);
        assert_eq!(&mem[..2], &[0, 0]);
        assert_eq!(copy_out(&mut mem, 0, 8, b"hello"), 5);
        assert_eq!(&mem[..5], b"hello");
        assert_eq!(copy_out(&mut mem, 4, 8, b"x"), status::BAD_ARGUMENT);
    }
}
