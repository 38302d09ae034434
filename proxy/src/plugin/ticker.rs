//! The epoch ticker: the clock of every plugin call's deadline. It advances
//! the engine's epoch while some call's deadline is pending and parks once
//! none has been for a while, so an idle proxy does not wake a thousand
//! times a second (in a VM each wake-up is costly: ~3 % of a core at a 1 ms
//! tick, measured).
//!
//! Every place that calls into wasm owns a [`Watch`] and arms it before the
//! call: that sets the store's epoch deadline, records the tick by which the
//! ticker must have run, and wakes the ticker if it is parked. Arming costs
//! two relaxed loads and a relaxed store.
//!
//! A call armed just as the ticker decides to park may be missed by its last
//! check; a parked ticker still wakes every [`PARK_MAX`], so such a call's
//! deadline is late by at most that, never lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::{self, Thread};
use std::time::Duration;

use wasmtime::{Engine, Store};

/// Ticks without a pending deadline before the ticker parks.
const IDLE_TICKS: u64 = 16;

/// Longest a parked ticker sleeps before it looks again.
const PARK_MAX: Duration = Duration::from_millis(50);

/// What the ticker thread and the watches share.
#[derive(Default)]
struct Shared {
    /// Ticks so far (the engine's epoch advances with it).
    ticks: AtomicU64,
    parked: AtomicBool,
    stop: AtomicBool,
    /// The tick each watch needs reached. An entry only this list still
    /// holds belongs to a dropped watch, and goes on the next scan.
    watches: Mutex<Vec<Arc<AtomicU64>>>,
    thread: OnceLock<Thread>,
}

impl Shared {
    /// Whether some watch's deadline lies beyond tick `now`.
    fn pending(&self, now: u64) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = false;
        watches.retain(|until| {
            pending |= until.load(Ordering::Relaxed) > now;
            Arc::strong_count(until) > 1
        });
        pending
    }

    fn wake(&self) {
        if self.parked.swap(false, Ordering::AcqRel)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }
}

/// The running ticker of one engine; dropping it stops the thread.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
    /// Dropping the sender ends the ticking phase's sleep at once.
    _sleep: mpsc::Sender<()>,
}

impl Ticker {
    /// Starts a ticker advancing `engine`'s epoch every `tick`.
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<()>();
        let state = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || run(&engine, &state, tick, &rx))?;
        // The thread parks only after IDLE_TICKS, long after this is set.
        let _ = shared.thread.set(handle.thread().clone());
        Ok(Self { shared, _sleep: tx })
    }

    /// A new watch, for one place that calls into wasm.
    pub(crate) fn watch(&self) -> Watch {
        let until = Arc::new(AtomicU64::new(0));
        self.shared
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&until));
        Watch {
            until,
            shared: Arc::clone(&self.shared),
            call: Arc::default(),
        }
    }

    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.parked.store(false, Ordering::Release);
        if let Some(thread) = self.shared.thread.get() {
            thread.unpark();
        }
    }
}

fn run(engine: &Engine, shared: &Shared, tick: Duration, sleep: &mpsc::Receiver<()>) {
    let mut idle = 0;
    while !shared.stop.load(Ordering::Acquire) {
        if let Err(mpsc::RecvTimeoutError::Disconnected) = sleep.recv_timeout(tick) {
            return;
        }
        engine.increment_epoch();
        let now = shared.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if shared.pending(now) {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        shared.parked.store(true, Ordering::SeqCst);
        // A watch armed between the scan above and the flag is seen here.
        if shared.pending(now) {
            shared.parked.store(false, Ordering::Release);
            idle = 0;
            continue;
        }
        thread::park_timeout(PARK_MAX);
        shared.parked.store(false, Ordering::Release);
    }
}

/// One caller's claim on the ticker: the tick its current call needs.
pub(crate) struct Watch {
    until: Arc<AtomicU64>,
    shared: Arc<Shared>,
    call: Arc<CallCount>,
}

/// Which call a watch was last armed for, and with how many ticks: the
/// epoch callback tells a new slow call from one it already extended.
#[derive(Default)]
struct CallCount {
    calls: AtomicU64,
    ticks: AtomicU64,
}

/// The part of a [`Watch`] the store's epoch callback holds.
#[derive(Clone)]
pub(crate) struct WatchHandle {
    until: Arc<AtomicU64>,
    shared: Arc<Shared>,
    call: Arc<CallCount>,
}

impl WatchHandle {
    /// The current call's number (it changes with every arming) and the
    /// ticks it was armed with.
    pub(crate) fn current_call(&self) -> (u64, u64) {
        (
            self.call.calls.load(Ordering::Relaxed),
            self.call.ticks.load(Ordering::Relaxed),
        )
    }

    /// Keeps the ticker going for `ticks` more ticks (a call given more time).
    pub(crate) fn extend(&self, ticks: u64) {
        claim(&self.shared, &self.until, ticks);
    }
}

/// Records that the ticker must reach `ticks` past now, and wakes it.
fn claim(shared: &Shared, until: &AtomicU64, ticks: u64) {
    // One tick more: `ticks` counts from the engine's epoch, which may
    // run one ahead of `shared.ticks`.
    let now = shared.ticks.load(Ordering::Relaxed);
    until.store(
        now.saturating_add(ticks).saturating_add(1),
        Ordering::Relaxed,
    );
    if shared.parked.load(Ordering::Relaxed) {
        shared.wake();
    }
}

impl Watch {
    /// Gives `store`'s next call `ticks` epoch ticks and keeps the ticker
    /// running until they have passed.
    pub(crate) fn arm<T>(&self, store: &mut Store<T>, ticks: u64) {
        store.set_epoch_deadline(ticks);
        // One writer per watch (calls into a store are serialized): a load
        // and a store, no read-modify-write.
        let calls = self.call.calls.load(Ordering::Relaxed);
        self.call
            .calls
            .store(calls.wrapping_add(1), Ordering::Relaxed);
        self.call.ticks.store(ticks, Ordering::Relaxed);
        claim(&self.shared, &self.until, ticks);
    }

    /// A handle for the store's epoch callback.
    pub(crate) fn handle(&self) -> WatchHandle {
        WatchHandle {
            until: Arc::clone(&self.until),
            shared: Arc::clone(&self.shared),
            call: Arc::clone(&self.call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Waits (up to 5 s) until `done` holds.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if done() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn parks_when_idle_and_an_armed_call_wakes_it() {
        let engine = Engine::default();
        let ticker = Ticker::start(engine.clone(), Duration::from_millis(1)).unwrap();
        let watch = ticker.watch();
        let mut store = Store::new(&engine, ());

        assert!(eventually(|| ticker.is_parked()), "an idle ticker parks");
        watch.arm(&mut store, 100);
        assert!(!ticker.is_parked(), "arming wakes it");
        let from = ticker.ticks();
        // It keeps ticking until the armed deadline has passed, then parks.
        assert!(eventually(|| ticker.ticks() >= from + 100));
        assert!(eventually(|| ticker.is_parked()));
    }

    #[test]
    fn a_parked_ticker_still_looks_again() {
        let engine = Engine::default();
        let ticker = Ticker::start(engine.clone(), Duration::from_millis(1)).unwrap();
        let watch = ticker.watch();
        assert!(eventually(|| ticker.is_parked()));
        // A deadline recorded without the wake (the race the module doc
        // names) is found when the parked ticker looks again.
        let now = ticker.ticks();
        watch.until.store(now + 50, Ordering::Relaxed);
        assert!(eventually(|| ticker.ticks() >= now + 50));
    }

    #[test]
    fn dropped_watches_leave_the_list() {
        let engine = Engine::default();
        let ticker = Ticker::start(engine, Duration::from_millis(1)).unwrap();
        let kept = ticker.watch();
        let dropped: Vec<Watch> = (0..3).map(|_| ticker.watch()).collect();
        drop(dropped);
        let count = || ticker.shared.watches.lock().unwrap().len();
        assert!(eventually(|| count() == 1));
        assert_eq!(Arc::strong_count(&kept.until), 2);
    }

    #[test]
    fn dropping_the_ticker_stops_a_parked_thread() {
        let engine = Engine::default();
        let ticker = Ticker::start(engine, Duration::from_millis(1)).unwrap();
        assert!(eventually(|| ticker.is_parked()));
        let shared = Arc::clone(&ticker.shared);
        drop(ticker);
        // The thread holds the engine; once it exits, only this test holds
        // `shared`.
        assert!(eventually(|| Arc::strong_count(&shared) == 1));
    }
}
