//! One breaker's state machine: closed → open (tripped) → half-open (after
//! `open_timeout`, admitting up to `half_open_max_probes` probes) → closed
//! after `success_threshold` probe successes, or open again on any probe
//! failure.

use crate::config::{Config, Mode, WindowKind};
use crate::window::Window;

/// The three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// A state change, for metrics and marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
}

/// What admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go on.
    Allowed,
    /// Half-open: go on as a probe (its result decides).
    Probe,
    /// Open, or half-open with every probe slot taken.
    Rejected { retry_after_ms: u64 },
}

/// The part of a breaker carried across a hot reload.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub state: State,
    pub since_ns: u64,
    pub open_until_ns: u64,
    pub consecutive_failures: u32,
    pub half_open_successes: u32,
    pub opened: u64,
    pub half_opened: u64,
    pub closed: u64,
}

/// One breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    pub saved: Saved,
    pub probes_in_flight: u32,
    pub window: Window,
}

impl Breaker {
    pub fn new(c: &Config, now: u64) -> Self {
        let window = match c.window {
            WindowKind::Count => Window::count(c.window_size as usize),
            WindowKind::Time => Window::time(c.window_duration.as_ns()),
        };
        Self {
            saved: Saved {
                since_ns: now,
                ..Saved::default()
            },
            probes_in_flight: 0,
            window,
        }
    }

    pub fn state(&self) -> State {
        self.saved.state
    }

    /// Open → half-open once the open time is over.
    pub fn tick(&mut self, now: u64) -> Option<Transition> {
        if self.saved.state == State::Open && now >= self.saved.open_until_ns {
            self.saved.state = State::HalfOpen;
            self.saved.since_ns = now;
            self.saved.half_open_successes = 0;
            self.probes_in_flight = 0;
            self.saved.half_opened += 1;
            return Some(Transition::HalfOpened);
        }
        None
    }

    /// Route scope: may a request go on?
    pub fn admit(&mut self, c: &Config, now: u64) -> (Admit, Option<Transition>) {
        let t = self.tick(now);
        let admit = match self.saved.state {
            State::Closed => Admit::Allowed,
            State::Open => Admit::Rejected {
                retry_after_ms: self.saved.open_until_ns.saturating_sub(now) / 1_000_000,
            },
            State::HalfOpen if self.probes_in_flight < c.half_open_max_probes => {
                self.probes_in_flight += 1;
                Admit::Probe
            }
            State::HalfOpen => Admit::Rejected {
                retry_after_ms: 1000,
            },
        };
        (admit, t)
    }

    /// A probe ended without a result (the client went away).
    pub fn release_probe(&mut self) {
        self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
    }

    /// Records an outcome. `probe`: it was admitted as a probe (route scope)
    /// or is the first outcome after the open time (endpoint scope).
    pub fn record(
        &mut self,
        c: &Config,
        now: u64,
        failed: bool,
        slow: bool,
        probe: bool,
    ) -> Option<Transition> {
        if probe {
            self.release_probe();
        }
        // In slow mode a slow call is as bad as a failure.
        let bad = failed || (c.mode == Mode::Slow && slow);
        match self.saved.state {
            State::Open => None,
            // Only probes decide; late results of requests admitted before
            // the breaker opened say nothing about now.
            State::HalfOpen if !probe => None,
            State::HalfOpen if bad => Some(self.open(c, now)),
            State::HalfOpen => {
                self.saved.half_open_successes += 1;
                (self.saved.half_open_successes >= c.success_threshold).then(|| self.close(now))
            }
            State::Closed => {
                let trip = match c.mode {
                    Mode::Consecutive => {
                        if failed {
                            self.saved.consecutive_failures += 1;
                        } else {
                            self.saved.consecutive_failures = 0;
                        }
                        self.saved.consecutive_failures >= c.failure_threshold
                    }
                    Mode::Rate | Mode::Slow => {
                        self.window.push(now, failed, slow);
                        let t = self.window.totals(now);
                        let (bad, threshold) = if c.mode == Mode::Rate {
                            (t.failures, c.failure_rate)
                        } else {
                            (t.slow, c.slow_call_rate)
                        };
                        t.calls >= c.minimum_calls
                            && f64::from(bad) >= threshold * f64::from(t.calls)
                    }
                };
                trip.then(|| self.open(c, now))
            }
        }
    }

    pub fn open(&mut self, c: &Config, now: u64) -> Transition {
        self.saved.state = State::Open;
        self.saved.since_ns = now;
        self.saved.open_until_ns = now.saturating_add(c.open_timeout.as_ns());
        self.saved.consecutive_failures = 0;
        self.saved.opened += 1;
        self.window.clear();
        Transition::Opened
    }

    fn close(&mut self, now: u64) -> Transition {
        self.saved.state = State::Closed;
        self.saved.since_ns = now;
        self.saved.consecutive_failures = 0;
        self.saved.half_open_successes = 0;
        self.saved.closed += 1;
        self.window.clear();
        Transition::Closed
    }

    /// Forgets failures without a transition (an ejection over the cap).
    pub fn reset_counts(&mut self) {
        self.saved.consecutive_failures = 0;
        self.window.clear();
    }

    pub fn status(&self, now: u64) -> serde_json::Value {
        let s = &self.saved;
        serde_json::json!({
            "state": s.state,
            "since_ms_ago": now.saturating_sub(s.since_ns) / 1_000_000,
            "open_remaining_ms": if s.state == State::Open {
                s.open_until_ns.saturating_sub(now) / 1_000_000
            } else { 0 },
            "consecutive_failures": s.consecutive_failures,
            "window": self.window.totals(now),
            "half_open": { "probes_in_flight": self.probes_in_flight, "successes": s.half_open_successes },
            "transitions": { "opened": s.opened, "half_opened": s.half_opened, "closed": s.closed },
        })
    }
}
