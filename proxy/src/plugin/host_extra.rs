//! The imports added for the shipped policies (see `sdk/ABI.md`):
//! `counter_add_ttl` (windowed shared counters), `endpoint_mark` (passive
//! ejection), `request_flags` (is the body replayable), `deadline_set` and
//! `deadline_remaining` (a request-wide deadline). Split from [`super::host`]
//! only to keep files short; the rules are the same: bounds-checked, status
//! codes, never a trap.

use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker};
use weir_abi::{self as abi, Phase, imports, limits, status};

use super::host_state::{HostState, REQUEST_READ, arg, parts, phase_in, range};

/// Registers the extra imports in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(
        m,
        imports::COUNTER_ADD_TTL,
        |mut c: Caller<'_, HostState>, np: i32, nl: i32, delta: i64, ttl: i64, out: i32| {
            let Some((mem, st)) = parts(&mut c) else {
                return status::UNAVAILABLE;
            };
            let Some(out) = range(mem.len(), out, 8) else {
                return status::BAD_ARGUMENT;
            };
            let Some(name) = arg(mem, np, nl) else {
                return status::BAD_ARGUMENT;
            };
            let (Ok(name), Ok(ttl)) = (std::str::from_utf8(name), u64::try_from(ttl)) else {
                return status::BAD_ARGUMENT;
            };
            let ttl = (ttl > 0).then(|| Duration::from_millis(ttl));
            match st.services.counter_add_ttl(name, delta, ttl) {
                Some(v) => {
                    mem[out].copy_from_slice(&v.to_le_bytes());
                    status::OK
                }
                None => status::UNAVAILABLE,
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::ENDPOINT_MARK,
        |mut c: Caller<'_, HostState>, id: i32, ms: i64| {
            let st = c.data_mut();
            let (Ok(id), Ok(ms)) = (u32::try_from(id), u64::try_from(ms)) else {
                return status::BAD_ARGUMENT;
            };
            if st.phase == Phase::Idle {
                return status::BAD_PHASE;
            }
            if st.marks.len() >= limits::MARKS_MAX {
                return status::TOO_LARGE;
            }
            st.marks.push((id, Duration::from_millis(ms)));
            status::OK
        },
    )?;
    linker.func_wrap(m, imports::REQUEST_FLAGS, |c: Caller<'_, HostState>| {
        let st = c.data();
        if !phase_in(st, REQUEST_READ) {
            return status::BAD_PHASE;
        }
        if st.req.body_not_replayable {
            abi::request_flags::BODY_NOT_REPLAYABLE
        } else {
            0
        }
    })?;
    linker.func_wrap(
        m,
        imports::DEADLINE_SET,
        |mut c: Caller<'_, HostState>, ms: i64| {
            let st = c.data_mut();
            if st.phase != Phase::OnRequest {
                return status::BAD_PHASE;
            }
            let Ok(ms) = u64::try_from(ms) else {
                return status::BAD_ARGUMENT;
            };
            let d = Instant::now() + Duration::from_millis(ms);
            st.req.deadline = Some(st.req.deadline.map_or(d, |old| old.min(d)));
            status::OK
        },
    )?;
    linker.func_wrap(
        m,
        imports::DEADLINE_REMAINING,
        |c: Caller<'_, HostState>| {
            let st = c.data();
            if !phase_in(st, REQUEST_READ) {
                return i64::from(status::BAD_PHASE);
            }
            match st.req.deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    i64::try_from(left.as_millis()).unwrap_or(i64::MAX)
                }
                None => i64::from(status::NOT_FOUND),
            }
        },
    )?;
    Ok(())
}
