//! The one backoff curve of the service: exponential from `initial`, capped at `max`, with ±20 %
//! jitter so that restarts and retries of many actors do not fall into step. Used by the
//! supervisor (restarts), the agents (polls), the Publisher (outbox retries) and the LlmPool
//! (provider retries). The loops around it differ too much for one retry combinator (Retry-After
//! floors, circuit breakers, durable next-attempt times), so only the curve is shared.

use std::time::Duration;

use rand::Rng;

/// Delay before retry number `attempt + 1` (`attempt` starts at 0).
pub fn delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    delay_with(initial, max, attempt, &mut rand::rng())
}

/// [`delay`] with an explicit random source, for deterministic tests.
pub fn delay_with(initial: Duration, max: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    let base = initial.saturating_mul(factor).min(max);
    base.mul_f64(rng.random_range(0.8..1.2)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_is_jittered_and_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let delays: Vec<_> = (0..10).map(|n| delay_with(initial, max, n, &mut rng)).collect();
        for pair in delays.windows(2).take(5) {
            assert!(pair[1] > pair[0], "{delays:?}");
        }
        assert!(delays.iter().all(|d| *d <= max));
        assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
        assert!(delay_with(initial, max, u32::MAX, &mut rng) >= max.mul_f64(0.8), "huge attempts saturate at the cap");
    }
}
