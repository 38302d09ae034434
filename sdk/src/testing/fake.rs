//! The fake host behind the imports off wasm32: one per thread, swapped in by
//! the [`Harness`](super::Harness) for each hook call. It follows the real
//! host's rules (`sdk/ABI.md`): the same phases, status codes and limits, so
//! a plugin that misuses a host call natively fails the same way in the proxy.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::mem::MaybeUninit;

use weir_abi::{self as abi, LogLevel, MetricKind, Phase, limits, status};

/// One metric the plugin defined, with what was recorded.
#[derive(Debug, Clone)]
pub(crate) struct MetricState {
    pub name: String,
    pub kind: MetricKind,
    pub value: f64,
    pub observations: Vec<f64>,
}

/// The request data of the current call (moved in from the flight).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReqData {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authority: Option<String>,
    pub client_addr: Option<String>,
    /// Set when the request came over TLS: SNI and ALPN.
    pub tls: Option<(Option<String>, Option<String>)>,
    /// The client certificate's subject and names (one per line).
    pub client_cert: Option<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body_replayable: bool,
    pub deadline_ns: Option<u64>,
}

/// An answer staged with `answer`.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Everything the fake host holds.
#[derive(Debug, Default)]
pub(crate) struct FakeHost {
    pub phase: Option<Phase>,
    pub now_ns: u64,
    pub rng: u64,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub req: Option<ReqData>,
    pub resp: Option<Vec<(String, String)>>,
    pub answer: Option<Staged>,
    pub attempt_timeout_ms: Option<u64>,
    pub offered: Vec<abi::EndpointRecord>,
    /// Address, zone and metadata of the harness's endpoints, by id.
    pub endpoint_facts: BTreeMap<u32, EndpointFacts>,
    pub tried: Vec<u32>,
    pub metrics: Vec<MetricState>,
    pub cache: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    pub counters: BTreeMap<String, (i64, Option<u64>)>,
    pub logs: Vec<(LogLevel, String)>,
    pub marks: Vec<(u32, u64)>,
}

std::thread_local! {
    static HOST: RefCell<FakeHost> = RefCell::new(FakeHost::default());
}

/// Swaps `host` with the thread's fake host (in, then out again after a call).
pub(crate) fn swap(host: &mut FakeHost) {
    HOST.with(|h| core::mem::swap(&mut *h.borrow_mut(), host));
}

fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

fn phase_in(h: &FakeHost, allowed: &[Phase]) -> bool {
    h.phase.is_some_and(|p| allowed.contains(&p))
}

const REQUEST_READ: &[Phase] = &[Phase::OnRequest, Phase::Select, Phase::OnResponse];

/// Copies `value` into `out` if it fits; returns its full length either way.
fn copy_out(out: &mut [MaybeUninit<u8>], value: &[u8]) -> i32 {
    if value.len() <= out.len() {
        for (slot, byte) in out.iter_mut().zip(value) {
            slot.write(*byte);
        }
    }
    i32::try_from(value.len()).unwrap_or(status::TOO_LARGE)
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

fn valid_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The header list a `header_*` call addresses, if this phase allows it.
fn headers(h: &mut FakeHost, map: i32, write: bool) -> Result<&mut Vec<(String, String)>, i32> {
    match abi::HeaderMap::from_code(map) {
        Some(abi::HeaderMap::Request) => {
            let ok = if write {
                h.phase == Some(Phase::OnRequest)
            } else {
                phase_in(h, REQUEST_READ)
            };
            match (&mut h.req, ok) {
                (Some(r), true) => Ok(&mut r.headers),
                _ => Err(status::BAD_PHASE),
            }
        }
        Some(abi::HeaderMap::Response) => {
            if h.phase != Some(Phase::OnResponse) {
                return Err(status::BAD_PHASE);
            }
            h.resp.as_mut().ok_or(status::UNAVAILABLE)
        }
        // The fake host keeps no cache, so there is never a looked-up entry.
        Some(abi::HeaderMap::Cached) => Err(status::UNAVAILABLE),
        None => Err(status::BAD_ARGUMENT),
    }
}

/// The imports, with the signatures `hostcalls` expects of its backend.
pub(crate) mod backend {
    use super::*;

    pub fn clock_ns() -> i64 {
        with(|h| i64::try_from(h.now_ns).unwrap_or(i64::MAX))
    }

    pub fn random() -> i64 {
        with(|h| {
            // splitmix64, like the host: deterministic from the harness seed.
            h.rng = h.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = h.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as i64
        })
    }

    pub fn log(level: i32, msg: &[u8]) -> i32 {
        let Some(level) = LogLevel::from_code(level) else {
            return status::BAD_ARGUMENT;
        };
        let msg = String::from_utf8_lossy(&msg[..msg.len().min(limits::LOG_MAX)]).into_owned();
        with(|h| h.logs.push((level, msg)));
        status::OK
    }

    pub fn input_read(out: &mut [MaybeUninit<u8>]) -> i32 {
        with(|h| {
            if !phase_in(h, &[Phase::Configure, Phase::Restore]) {
                return status::BAD_PHASE;
            }
            copy_out(out, &h.input)
        })
    }

    pub fn output_write(bytes: &[u8]) -> i32 {
        with(|h| {
            let allowed = [
                Phase::Configure,
                Phase::Status,
                Phase::Snapshot,
                Phase::Restore,
            ];
            if !phase_in(h, &allowed) {
                return status::BAD_PHASE;
            }
            if bytes.len() > limits::OUTPUT_MAX {
                return status::TOO_LARGE;
            }
            h.output = bytes.to_vec();
            status::OK
        })
    }

    pub fn request_field(field: i32, out: &mut [MaybeUninit<u8>]) -> i32 {
        with(|h| {
            if !phase_in(h, REQUEST_READ) {
                return status::BAD_PHASE;
            }
            let Some(r) = &h.req else {
                return status::BAD_PHASE;
            };
            let value = match abi::RequestField::from_code(field) {
                Some(abi::RequestField::Path) => Some(r.path.as_str()),
                Some(abi::RequestField::Query) => r.query.as_deref(),
                Some(abi::RequestField::Method) => Some(r.method.as_str()),
                Some(abi::RequestField::Authority) => r.authority.as_deref().or_else(|| {
                    r.headers
                        .iter()
                        .find(|(n, _)| n == "host")
                        .map(|(_, v)| v.as_str())
                }),
                Some(abi::RequestField::ClientAddr) => r.client_addr.as_deref(),
                Some(abi::RequestField::Scheme) => {
                    Some(if r.tls.is_some() { "https" } else { "http" })
                }
                Some(abi::RequestField::TlsServerName) => {
                    r.tls.as_ref().and_then(|(sni, _)| sni.as_deref())
                }
                Some(abi::RequestField::TlsAlpn) => {
                    r.tls.as_ref().and_then(|(_, alpn)| alpn.as_deref())
                }
                Some(abi::RequestField::ClientCertSubject) => {
                    r.client_cert.as_ref().map(|(subject, _)| subject.as_str())
                }
                Some(abi::RequestField::ClientCertNames) => {
                    r.client_cert.as_ref().map(|(_, names)| names.as_str())
                }
                None => return status::BAD_ARGUMENT,
            };
            value.map_or(status::NOT_FOUND, |v| copy_out(out, v.as_bytes()))
        })
    }

    pub fn header_get(map: i32, name: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        with(|h| {
            let joined = map & abi::HEADER_JOINED != 0;
            let list = match headers(h, map & !abi::HEADER_JOINED, false) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let Ok(name) = core::str::from_utf8(name) else {
                return status::BAD_ARGUMENT;
            };
            let mut values = list
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            match (values.next(), joined) {
                (None, _) => status::NOT_FOUND,
                (Some(first), false) => copy_out(out, first.as_bytes()),
                (Some(first), true) => {
                    let all = core::iter::once(first).chain(values).collect::<Vec<_>>();
                    copy_out(out, all.join(", ").as_bytes())
                }
            }
        })
    }

    pub fn header_set(map: i32, name: &[u8], value: &[u8], mode: i32) -> i32 {
        with(|h| {
            let list = match headers(h, map, true) {
                Ok(l) => l,
                Err(code) => return code,
            };
            if !valid_name(name) || !valid_value(value) {
                return status::BAD_ARGUMENT;
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let value = String::from_utf8_lossy(value).into_owned();
            match abi::SetMode::from_code(mode) {
                Some(abi::SetMode::Replace) => {
                    list.retain(|(n, _)| *n != name);
                    list.push((name, value));
                }
                Some(abi::SetMode::Append) => list.push((name, value)),
                None => return status::BAD_ARGUMENT,
            }
            status::OK
        })
    }

    pub fn header_remove(map: i32, name: &[u8]) -> i32 {
        with(|h| {
            let list = match headers(h, map, true) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let before = list.len();
            list.retain(|(n, _)| !n.as_bytes().eq_ignore_ascii_case(name));
            if list.len() == before {
                status::NOT_FOUND
            } else {
                status::OK
            }
        })
    }

    pub fn set_attempt_timeout(ms: i64) -> i32 {
        with(|h| {
            if h.phase != Some(Phase::OnRequest) {
                return status::BAD_PHASE;
            }
            let Ok(ms) = u64::try_from(ms) else {
                return status::BAD_ARGUMENT;
            };
            h.attempt_timeout_ms = Some(h.attempt_timeout_ms.map_or(ms, |old| old.min(ms)));
            status::OK
        })
    }

    pub fn answer(code: i32, block: &[u8], body: &[u8]) -> i32 {
        with(|h| {
            if !phase_in(h, &[Phase::OnRequest, Phase::OnResponse]) {
                return status::BAD_PHASE;
            }
            if body.len() > limits::ANSWER_BODY_MAX || block.len() > limits::ANSWER_HEADERS_MAX {
                return status::TOO_LARGE;
            }
            let Some(code) = u16::try_from(code).ok().filter(|c| (100..1000).contains(c)) else {
                return status::BAD_ARGUMENT;
            };
            let mut headers = Vec::new();
            for entry in abi::header_block::iter(block) {
                let Ok((n, v)) = entry else {
                    return status::BAD_ARGUMENT;
                };
                if !valid_name(n) || !valid_value(v) {
                    return status::BAD_ARGUMENT;
                }
                headers.push((
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
            }
            h.answer = Some(Staged {
                status: code,
                headers,
                body: body.to_vec(),
            });
            status::OK
        })
    }

    pub fn endpoints_read(out: &mut [u8]) -> i32 {
        with(|h| {
            if h.phase != Some(Phase::Select) {
                return status::BAD_PHASE;
            }
            let mut written = 0usize;
            for (e, chunk) in h
                .offered
                .iter()
                .zip(out.chunks_exact_mut(abi::ENDPOINT_SIZE))
            {
                if let Ok(chunk) = <&mut [u8; abi::ENDPOINT_SIZE]>::try_from(chunk) {
                    e.encode(chunk);
                    written += abi::ENDPOINT_SIZE;
                }
            }
            i32::try_from(written).unwrap_or(status::TOO_LARGE)
        })
    }

    pub fn tried_read(out: &mut [u8]) -> i32 {
        with(|h| {
            if h.phase != Some(Phase::Select) {
                return status::BAD_PHASE;
            }
            let mut written = 0usize;
            for (id, chunk) in h.tried.iter().zip(out.chunks_exact_mut(4)) {
                chunk.copy_from_slice(&id.to_le_bytes());
                written += 4;
            }
            i32::try_from(written).unwrap_or(status::TOO_LARGE)
        })
    }

    pub fn endpoint_stats(id: i32, out: &mut [u8; abi::ENDPOINT_SIZE]) -> i32 {
        with(|h| match h.offered.iter().find(|e| e.id == id as u32) {
            Some(e) => {
                e.encode(out);
                status::OK
            }
            None => status::NOT_FOUND,
        })
    }

    pub fn endpoint_field(id: i32, field: i32, key: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        with(|h| {
            let Some(field) = abi::EndpointField::from_code(field) else {
                return status::BAD_ARGUMENT;
            };
            // The proxy knows the facts from the request's `select` on.
            if !matches!(h.phase, Some(Phase::Select | Phase::OnResponse)) {
                return status::NOT_FOUND;
            }
            let Ok(id) = u32::try_from(id) else {
                return status::NOT_FOUND;
            };
            let Some(facts) = h.endpoint_facts.get(&id) else {
                return status::NOT_FOUND;
            };
            let value = match field {
                abi::EndpointField::Address => Some(facts.address.as_str()),
                abi::EndpointField::Zone => facts.zone.as_deref(),
                abi::EndpointField::Metadata => facts
                    .metadata
                    .iter()
                    .find(|(k, _)| k.as_bytes() == key)
                    .map(|(_, v)| v.as_str()),
            };
            match value {
                Some(v) => copy_out(out, v.as_bytes()),
                None => status::NOT_FOUND,
            }
        })
    }

    pub fn metric_define(kind: i32, name: &[u8]) -> i32 {
        with(|h| {
            let Some(kind) = MetricKind::from_code(kind) else {
                return status::BAD_ARGUMENT;
            };
            let Ok(name) = core::str::from_utf8(name) else {
                return status::BAD_ARGUMENT;
            };
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                && !name.as_bytes()[0].is_ascii_digit();
            if !ok {
                return status::BAD_ARGUMENT;
            }
            if let Some(i) = h.metrics.iter().position(|m| m.name == name) {
                return if h.metrics[i].kind == kind {
                    i as i32
                } else {
                    status::BAD_ARGUMENT
                };
            }
            if h.metrics.len() >= limits::METRICS_MAX {
                return status::TOO_LARGE;
            }
            h.metrics.push(MetricState {
                name: name.into(),
                kind,
                value: 0.0,
                observations: Vec::new(),
            });
            (h.metrics.len() - 1) as i32
        })
    }

    pub fn metric_record(id: i32, v: f64) -> i32 {
        with(|h| {
            let Some(m) = usize::try_from(id).ok().and_then(|i| h.metrics.get_mut(i)) else {
                return status::NOT_FOUND;
            };
            if !v.is_finite() {
                return status::BAD_ARGUMENT;
            }
            match m.kind {
                MetricKind::Counter if v < 0.0 => return status::BAD_ARGUMENT,
                MetricKind::Counter => m.value += v,
                MetricKind::Gauge => m.value = v,
                MetricKind::Histogram => {
                    m.value += v;
                    m.observations.push(v);
                }
            }
            status::OK
        })
    }

    pub fn cache_get(key: &[u8], out: &mut [MaybeUninit<u8>]) -> i32 {
        with(|h| match h.cache.get(key) {
            Some((v, exp)) if *exp > h.now_ns => copy_out(out, v),
            _ => status::NOT_FOUND,
        })
    }

    pub fn cache_put(key: &[u8], value: &[u8], ttl_ms: i64) -> i32 {
        with(|h| {
            let Ok(ttl) = u64::try_from(ttl_ms) else {
                return status::BAD_ARGUMENT;
            };
            if value.len() > limits::CACHE_VALUE_MAX {
                return status::TOO_LARGE;
            }
            let exp = h.now_ns.saturating_add(ttl.saturating_mul(1_000_000));
            h.cache.insert(key.to_vec(), (value.to_vec(), exp));
            status::OK
        })
    }

    pub fn counter_add(name: &[u8], delta: i64, out: &mut [u8; 8]) -> i32 {
        counter_add_ttl(name, delta, 0, out)
    }

    pub fn counter_add_ttl(name: &[u8], delta: i64, ttl_ms: i64, out: &mut [u8; 8]) -> i32 {
        with(|h| {
            let (Ok(name), Ok(ttl)) = (core::str::from_utf8(name), u64::try_from(ttl_ms)) else {
                return status::BAD_ARGUMENT;
            };
            let now = h.now_ns;
            let entry = h.counters.entry(name.into()).or_insert((0, None));
            if entry.1.is_some_and(|exp| exp <= now) {
                *entry = (0, None);
            }
            if entry.1.is_none() && ttl > 0 && entry.0 == 0 {
                entry.1 = Some(now.saturating_add(ttl.saturating_mul(1_000_000)));
            }
            entry.0 = entry.0.wrapping_add(delta);
            *out = entry.0.to_le_bytes();
            status::OK
        })
    }

    pub fn endpoint_mark(id: i32, ms: i64) -> i32 {
        with(|h| {
            let (Ok(id), Ok(ms)) = (u32::try_from(id), u64::try_from(ms)) else {
                return status::BAD_ARGUMENT;
            };
            if h.phase.is_none() || h.phase == Some(Phase::Idle) {
                return status::BAD_PHASE;
            }
            if h.marks.len() >= limits::MARKS_MAX {
                return status::TOO_LARGE;
            }
            h.marks.push((id, ms));
            status::OK
        })
    }

    pub fn request_flags() -> i32 {
        with(|h| match (&h.req, phase_in(h, REQUEST_READ)) {
            (Some(r), true) => {
                if r.body_replayable {
                    0
                } else {
                    abi::request_flags::BODY_NOT_REPLAYABLE
                }
            }
            _ => status::BAD_PHASE,
        })
    }

    pub fn deadline_set(ms: i64) -> i32 {
        with(|h| {
            let now = h.now_ns;
            if h.phase != Some(Phase::OnRequest) {
                return status::BAD_PHASE;
            }
            let Ok(ms) = u64::try_from(ms) else {
                return status::BAD_ARGUMENT;
            };
            let Some(r) = &mut h.req else {
                return status::BAD_PHASE;
            };
            let d = now.saturating_add(ms.saturating_mul(1_000_000));
            r.deadline_ns = Some(r.deadline_ns.map_or(d, |old| old.min(d)));
            status::OK
        })
    }

    pub fn deadline_remaining() -> i64 {
        with(|h| match (&h.req, phase_in(h, REQUEST_READ)) {
            (Some(r), true) => r.deadline_ns.map_or(i64::from(status::NOT_FOUND), |d| {
                i64::try_from(d.saturating_sub(h.now_ns) / 1_000_000).unwrap_or(i64::MAX)
            }),
            _ => i64::from(status::BAD_PHASE),
        })
    }

    // The fake host keeps no HTTP cache: the cache plugin's logic is tested
    // as plain functions and through the real host (tests/tests/plugin_cache.rs).
    pub fn time_unix_ms() -> i64 {
        with(|h| i64::try_from(h.now_ns / 1_000_000).unwrap_or(i64::MAX))
    }
    pub fn cache_lookup(_: &[u8], _: &mut [MaybeUninit<u8>]) -> i32 {
        status::UNAVAILABLE
    }
    pub fn cache_serve(_: &[u8], _: &[u8], _: i32) -> i32 {
        status::UNAVAILABLE
    }
    pub fn cache_store(_: &[u8], _: &[u8], _: i64, _: i64) -> i32 {
        status::UNAVAILABLE
    }
    pub fn cache_freshen(_: &[u8], _: &[u8], _: i64) -> i32 {
        status::UNAVAILABLE
    }
    pub fn cache_invalidate(_: &[u8]) -> i32 {
        status::UNAVAILABLE
    }
    pub fn cache_lock(_: &[u8], _: i64) -> i32 {
        status::UNAVAILABLE
    }
    pub fn cache_stats(_: &mut [u8; 16]) -> i32 {
        status::UNAVAILABLE
    }
}

/// What the config says about one endpoint, for
/// [`Harness::describe_endpoint`](super::Harness::describe_endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointFacts {
    pub(crate) address: String,
    pub(crate) zone: Option<String>,
    pub(crate) metadata: Vec<(String, String)>,
}

impl EndpointFacts {
    /// An endpoint at `address` (`host:port`), no zone, no metadata.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            ..Self::default()
        }
    }

    /// With a zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// With one metadata entry (a later one for the same key replaces it).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value.into()));
        self
    }
}
