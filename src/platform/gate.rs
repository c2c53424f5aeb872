//! Header-driven gates: the last rate-limit snapshot a platform sent for an account (and, on X,
//! an endpoint). While it says nothing is left, calls are refused here, before any request is
//! sent, until the reset — the platform's own count, not a guess.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::PlatformError;
use crate::rate_limit::headers::RateLimitSnapshot;

#[derive(Debug, Default)]
pub struct RateGate {
    exhausted_until: Mutex<HashMap<String, Instant>>,
}

impl RateGate {
    /// Refuses a call on `key` while its window is exhausted.
    pub fn check(&self, key: &str) -> Result<(), PlatformError> {
        let mut exhausted = self.exhausted_until.lock().expect("gate lock");
        match exhausted.get(key) {
            Some(until) if *until > Instant::now() => {
                Err(PlatformError::RateLimited { retry_after: until.saturating_duration_since(Instant::now()) })
            }
            Some(_) => {
                exhausted.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records what a response said about `key`'s window.
    pub fn observe(&self, key: &str, snapshot: Option<RateLimitSnapshot>) {
        let Some(snapshot) = snapshot else { return };
        let mut exhausted = self.exhausted_until.lock().expect("gate lock");
        if snapshot.remaining == 0 {
            exhausted.insert(key.to_owned(), Instant::now() + snapshot.reset_after);
        } else {
            exhausted.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nothing_is_sent_after_remaining_zero_until_the_reset() {
        let gate = RateGate::default();
        assert!(gate.check("ada").is_ok());
        gate.observe(
            "ada",
            Some(RateLimitSnapshot { limit: Some(5), remaining: 0, reset_after: Duration::from_secs(30) }),
        );
        match gate.check("ada") {
            Err(PlatformError::RateLimited { retry_after }) => assert!(retry_after > Duration::from_secs(29)),
            other => panic!("{other:?}"),
        }
        assert!(gate.check("bob").is_ok(), "other accounts are not affected");
        gate.observe("ada", Some(RateLimitSnapshot { limit: Some(5), remaining: 0, reset_after: Duration::ZERO }));
        assert!(gate.check("ada").is_ok(), "after the reset");
    }
}
