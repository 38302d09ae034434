//! CPU-time call deadlines. A plugin's budget is the CPU it used, not the
//! time the scheduler took from it: on a busy machine a well-behaved call
//! can take several times its CPU in wall time, and must not trap for it.
//!
//! The epoch deadline stays the cheap alarm (no clock is read on the fast
//! path). When it rings — the call has run its budget in *wall* time — the
//! store's epoch callback reads the thread's CPU clock and lets the call go
//! on, a tick at a time, until the CPU it used *since the alarm* reaches the
//! budget. The CPU used before the alarm is unknown (at most the budget), so
//! a call traps after using between one and two budgets of CPU, never less
//! than one. A wall-clock backstop of [`BACKSTOP_FACTOR`] budgets traps a
//! call whatever its CPU, so a thread that is starved for good cannot hold
//! an instance forever.

use std::time::Duration;

use wasmtime::{StoreContextMut, UpdateDeadline};

use super::ticker::WatchHandle;

/// A call is interrupted after this many budgets of wall time, whatever CPU
/// it used.
pub const BACKSTOP_FACTOR: u64 = 20;

/// The CPU time the calling thread has used so far, if the clock can be read.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // is supported on every Linux and macOS this builds for. A failure is
    // reported through the return value and handled below.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// The state of the call the alarm rang for.
struct SlowCall {
    /// Which arming of the watch it was (see [`WatchHandle::current_call`]).
    call: u64,
    /// The thread's CPU clock when the alarm first rang.
    cpu_at_alarm: Duration,
    /// Ticks granted since then.
    extra_ticks: u64,
}

/// The epoch callback for one store: `tick` is the engine's epoch tick.
pub(crate) fn callback<T>(
    watch: WatchHandle,
    tick: Duration,
) -> impl FnMut(StoreContextMut<'_, T>) -> wasmtime::Result<UpdateDeadline> + Send + Sync + 'static
{
    let mut slow: Option<SlowCall> = None;
    move |_store| {
        let (call, armed_ticks) = watch.current_call();
        let Some(cpu_now) = thread_cpu_time() else {
            // No CPU clock: the wall-clock deadline is all there is.
            return Ok(UpdateDeadline::Interrupt);
        };
        let state = match &mut slow {
            Some(s) if s.call == call => s,
            _ => slow.insert(SlowCall {
                call,
                cpu_at_alarm: cpu_now,
                extra_ticks: 0,
            }),
        };
        let budget = tick.saturating_mul(u32::try_from(armed_ticks).unwrap_or(u32::MAX));
        let used = cpu_now.saturating_sub(state.cpu_at_alarm);
        let backstop = armed_ticks.saturating_mul(BACKSTOP_FACTOR - 1);
        if used >= budget || state.extra_ticks >= backstop {
            return Ok(UpdateDeadline::Interrupt);
        }
        // Look again after the CPU still allowed could have been used, in
        // whole ticks (at least one).
        let left = budget - used;
        let step = u64::try_from(left.as_nanos().div_ceil(tick.as_nanos().max(1)))
            .unwrap_or(1)
            .clamp(1, armed_ticks.max(1));
        state.extra_ticks = state.extra_ticks.saturating_add(step);
        watch.extend(step);
        Ok(UpdateDeadline::Continue(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_cpu_clock_moves_with_work_not_with_sleep() {
        let start = thread_cpu_time().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time().unwrap() - start;
        assert!(slept < Duration::from_millis(20), "{slept:?}");
        let start = thread_cpu_time().unwrap();
        let mut x = 0u64;
        while thread_cpu_time().unwrap() - start < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(x > 0);
    }
}
