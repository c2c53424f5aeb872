//! A circuit breaker per provider: closed → open after `failures` consecutive provider failures
//! (at once on an authentication failure) → after `cooldown`, half-open: exactly one probe request
//! is let through; its success closes the circuit, its failure opens it again. While open, a
//! provider costs nothing: requests skip it without a connection attempt.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker allows for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead (with retries).
    Allowed,
    /// Half-open: this request is the single probe (no retries).
    Probe,
    /// Open, or a probe is already out: skip this provider.
    Rejected,
}

/// The breaker's phase, as the `chorus_llm_breaker_state` gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
enum State {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self { failures: failures.max(1), cooldown, state: Mutex::new(State::Closed { consecutive: 0 }) }
    }

    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Rejected,
        }
    }

    /// A request succeeded: the circuit closes.
    pub fn success(&self) {
        *self.state.lock().expect("breaker lock") = State::Closed { consecutive: 0 };
    }

    /// A provider failure. Returns true when this failure opened the circuit.
    pub fn failure(&self, now: Instant, open_at_once: bool) -> bool {
        let mut state = self.state.lock().expect("breaker lock");
        let open = match *state {
            State::Closed { consecutive } => {
                let consecutive = consecutive + 1;
                *state = State::Closed { consecutive };
                open_at_once || consecutive >= self.failures
            }
            State::HalfOpen => true,
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open { until: now + self.cooldown };
        }
        open
    }

    /// The half-open probe ended without a verdict on the provider (e.g. a 429 or a refusal of
    /// ours): let the next request probe again.
    pub fn release_probe(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if matches!(*state, State::HalfOpen) {
            *state = State::Open { until: Instant::now() };
        }
    }

    pub fn phase(&self) -> Phase {
        match *self.state.lock().expect("breaker lock") {
            State::Closed { .. } => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::HalfOpen => Phase::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        let start = Instant::now();
        assert!(!breaker.failure(start, false));
        breaker.success();
        assert!(!breaker.failure(start, false));
        assert!(!breaker.failure(start, false));
        assert_eq!(breaker.admit(start), Admission::Allowed, "a success reset the count");
        assert!(breaker.failure(start, false), "third consecutive failure opens");
        assert_eq!(breaker.phase(), Phase::Open);
        assert_eq!(breaker.admit(start + Duration::from_secs(9)), Admission::Rejected);
        let later = start + Duration::from_secs(10);
        assert_eq!(breaker.admit(later), Admission::Probe);
        assert_eq!(breaker.admit(later), Admission::Rejected, "one probe at a time");
        assert!(breaker.failure(later, false), "a failed probe opens again");
        assert_eq!(breaker.admit(later + Duration::from_secs(1)), Admission::Rejected);
        let again = later + Duration::from_secs(10);
        assert_eq!(breaker.admit(again), Admission::Probe);
        breaker.success();
        assert_eq!(breaker.phase(), Phase::Closed);
    }

    #[test]
    fn auth_failure_opens_at_once_and_a_released_probe_can_be_retried() {
        let breaker = Breaker::new(5, Duration::from_secs(1));
        let start = Instant::now();
        assert!(breaker.failure(start, true));
        let later = start + Duration::from_secs(1);
        assert_eq!(breaker.admit(later), Admission::Probe);
        breaker.release_probe();
        assert_eq!(breaker.admit(Instant::now() + Duration::from_millis(1)), Admission::Probe);
    }
}
