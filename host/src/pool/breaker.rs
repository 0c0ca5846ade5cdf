//! The per-backend circuit breaker: closed, open after consecutive failures, half-open
//! for one trial request once the open period ends.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen,
}

/// What [`Breaker::try_pass`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The circuit is closed.
    Closed,
    /// The circuit was open long enough: this request is the one trial.
    Trial,
    /// Open, or a trial is already under way.
    Refused,
}

/// A circuit breaker. Lock held only for a state change, never across `.await`.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether a request could pass now, without claiming the trial.
    pub(crate) fn is_passable(&self) -> bool {
        self.with(|s| match *s {
            State::Closed { .. } => true,
            State::Open { since } => since.elapsed() >= self.open_for,
            State::HalfOpen => false,
        })
    }

    pub(crate) fn try_pass(&self) -> Pass {
        self.with(|s| match *s {
            State::Closed { .. } => Pass::Closed,
            State::Open { since } if since.elapsed() >= self.open_for => {
                *s = State::HalfOpen;
                Pass::Trial
            }
            State::Open { .. } | State::HalfOpen => Pass::Refused,
        })
    }

    pub(crate) fn record_success(&self) {
        self.with(|s| *s = State::Closed { failures: 0 });
    }

    pub(crate) fn record_failure(&self) {
        self.with(|s| {
            *s = match *s {
                State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                    failures: failures + 1,
                },
                _ => State::Open {
                    since: Instant::now(),
                },
            }
        });
    }

    pub(crate) fn abandon_trial(&self) {
        self.with(|s| {
            if let State::HalfOpen = *s {
                let since = Instant::now()
                    .checked_sub(self.open_for)
                    .unwrap_or_else(Instant::now);
                *s = State::Open { since };
            }
        });
    }

    pub(crate) fn state_name(&self) -> &'static str {
        self.with(|s| match *s {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens_and_closes() {
        let b = Breaker::new(2, Duration::ZERO);
        b.record_failure();
        assert_eq!(b.state_name(), "closed");
        b.record_failure();
        assert_eq!(b.state_name(), "open");
        assert_eq!(b.try_pass(), Pass::Trial);
        assert_eq!(b.try_pass(), Pass::Refused, "one trial at a time");
        b.record_success();
        assert_eq!(b.try_pass(), Pass::Closed);
    }

    #[test]
    fn failed_trial_reopens_and_open_refuses_until_elapsed() {
        let b = Breaker::new(1, Duration::from_secs(3600));
        b.record_failure();
        assert_eq!(b.try_pass(), Pass::Refused);
        assert!(!b.is_passable());
    }

    #[test]
    fn abandoned_trial_lets_the_next_request_try() {
        let b = Breaker::new(1, Duration::ZERO);
        b.record_failure();
        assert_eq!(b.try_pass(), Pass::Trial);
        b.abandon_trial();
        assert_eq!(b.try_pass(), Pass::Trial);
    }
}
