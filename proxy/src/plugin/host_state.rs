//! The per-store state the host functions work on, and the helpers every
//! group of them shares: bounds-checked guest memory access, copying a value
//! out, phase checks. A plugin can never make the host trap or panic.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wasmtime::{Caller, Memory, StoreLimits};
use weir_abi::{Phase, status};

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

    pub(super) fn next_random(&mut self) -> u64 {
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
