//! The RateLimiter actor: one per platform, holding a token bucket per account that every
//! publish to that account draws from. All personas sharing an account (their handle on the
//! platform) share its bucket. A bucket is created at the account's first use, so an idle agent
//! costs the limiter nothing but its persona → account entry.
//!
//! A permit is a reservation, not a block: `Acquire` answers at once with how long the caller
//! must wait before its call (the bucket may go negative, queueing callers in order); a wait
//! beyond `max_wait` is refused so callers retry later instead of piling up. The mailbox never
//! waits. X's and Reddit's rate-limit headers cap the bucket (`Observe`), which is why this is a
//! small bucket of our own rather than `governor`, whose state cannot be set from outside.
//! Discord's limits are per route and channel: its client's gates keep them, and its bots'
//! buckets hold the configured budget only.

pub mod headers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::config::RateLimitConfig;
use crate::metrics as m;

pub struct RateLimiter;

pub struct RateLimiterArgs {
    pub platform: &'static str,
    pub config: RateLimitConfig,
    /// Each persona's account (handle) on the platform; a persona not listed is its own account.
    pub accounts: HashMap<String, String>,
}

pub struct RateLimiterState {
    platform: &'static str,
    config: RateLimitConfig,
    accounts: HashMap<String, String>,
    /// By account, from its first use.
    buckets: HashMap<String, TokenBucket>,
}

impl RateLimiterState {
    /// The bucket of `persona`'s account, created full at its first use.
    fn bucket(&mut self, persona: &str, now: Instant) -> &mut TokenBucket {
        let account = self.accounts.get(persona).map_or(persona, String::as_str);
        if !self.buckets.contains_key(account) {
            self.buckets.insert(account.to_owned(), TokenBucket::new(&self.config, now));
        }
        self.buckets.get_mut(account).expect("inserted above")
    }
}

/// A permit decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go after waiting this long (zero: now).
    After(Duration),
    /// The wait would exceed the limit; try again after this long.
    Refused(Duration),
}

/// Each message names the persona it is for; the limiter finds its account.
pub enum RateLimiterMsg {
    /// Reserve one call.
    Acquire { persona: String, reply: RpcReplyPort<Permit> },
    /// The platform told us to back off (a 429): no permits until then.
    BackOff { persona: String, until: Duration },
    /// A response's rate-limit headers: never hand out more than the platform says is left.
    Observe { persona: String, snapshot: headers::RateLimitSnapshot },
    /// Replace the buckets' limits and the personas' accounts (a config reload). A persona whose
    /// account changed draws from its new account's bucket from now on.
    Reconfigure { config: RateLimitConfig, accounts: HashMap<String, String> },
}

impl Actor for RateLimiter {
    type Msg = RateLimiterMsg;
    type State = RateLimiterState;
    type Arguments = RateLimiterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RateLimiterArgs,
    ) -> Result<RateLimiterState, ActorProcessingErr> {
        Ok(RateLimiterState {
            platform: args.platform,
            config: args.config,
            accounts: args.accounts,
            buckets: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: RateLimiterMsg,
        state: &mut RateLimiterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RateLimiterMsg::Acquire { persona, reply } => {
                let permit = state.bucket(&persona, Instant::now()).acquire(Instant::now());
                match permit {
                    Permit::After(wait) if !wait.is_zero() => {
                        metrics::counter!(m::RATE_LIMIT_WAITS, "platform" => state.platform).increment(1);
                    }
                    Permit::Refused(_) => {
                        metrics::counter!(m::RATE_LIMIT_REFUSALS, "platform" => state.platform).increment(1);
                    }
                    Permit::After(_) => {}
                }
                let _ = reply.send(permit);
            }
            RateLimiterMsg::BackOff { persona, until } => {
                let now = Instant::now();
                state.bucket(&persona, now).empty_for(until, now);
            }
            RateLimiterMsg::Observe { persona, snapshot } => {
                let now = Instant::now();
                state.bucket(&persona, now).observe(&snapshot, now);
            }
            RateLimiterMsg::Reconfigure { config, accounts } => {
                for bucket in state.buckets.values_mut() {
                    bucket.reconfigure(&config);
                }
                state.config = config;
                state.accounts = accounts;
            }
        }
        Ok(())
    }
}

/// `capacity` tokens, one more every `interval`; tokens may go negative to hand out reservations.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    interval: Duration,
    max_wait: Duration,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(config: &RateLimitConfig, now: Instant) -> Self {
        let capacity = f64::from(config.burst.max(1));
        Self {
            capacity,
            interval: config.per.get() / config.burst.max(1),
            max_wait: config.max_wait.get(),
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        if !self.interval.is_zero() {
            self.tokens = (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64()).min(self.capacity);
        }
        self.updated = now;
    }

    /// Reserves one token.
    pub fn acquire(&mut self, now: Instant) -> Permit {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Permit::After(Duration::ZERO);
        }
        let wait = self.interval.mul_f64(1.0 - self.tokens);
        if wait > self.max_wait {
            return Permit::Refused(wait - self.max_wait);
        }
        self.tokens -= 1.0;
        Permit::After(wait)
    }

    /// No token is available before `until` from now.
    pub fn empty_for(&mut self, until: Duration, now: Instant) {
        self.refill(now);
        let deficit = until.as_secs_f64() / self.interval.as_secs_f64().max(f64::EPSILON);
        self.tokens = self.tokens.min(-deficit);
    }

    /// Caps the tokens at what the platform reports left; none left means none before the reset.
    pub fn observe(&mut self, snapshot: &headers::RateLimitSnapshot, now: Instant) {
        self.refill(now);
        if snapshot.remaining == 0 {
            self.empty_for(snapshot.reset_after, now);
        } else {
            self.tokens = self.tokens.min(f64::from(snapshot.remaining));
        }
    }

    pub fn reconfigure(&mut self, config: &RateLimitConfig) {
        let capacity = f64::from(config.burst.max(1));
        self.capacity = capacity;
        self.interval = config.per.get() / config.burst.max(1);
        self.max_wait = config.max_wait.get();
        self.tokens = self.tokens.min(capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn config(burst: u32, per_secs: u64, max_wait_secs: u64) -> RateLimitConfig {
        RateLimitConfig { burst, per: Dur::secs(per_secs), max_wait: Dur::secs(max_wait_secs) }
    }

    #[test]
    fn burst_then_spaced_reservations_then_refusal() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&config(2, 10, 12), start);
        assert_eq!(bucket.acquire(start), Permit::After(Duration::ZERO));
        assert_eq!(bucket.acquire(start), Permit::After(Duration::ZERO));
        assert_eq!(bucket.acquire(start), Permit::After(Duration::from_secs(5)));
        assert_eq!(bucket.acquire(start), Permit::After(Duration::from_secs(10)));
        assert!(matches!(bucket.acquire(start), Permit::Refused(_)));
        // Refill: after 20 s the two reservations are paid back and one token has come in.
        assert_eq!(bucket.acquire(start + Duration::from_secs(25)), Permit::After(Duration::ZERO));
    }

    #[test]
    fn platform_headers_cap_the_bucket() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&config(10, 10, 60), start);
        let two_left =
            headers::RateLimitSnapshot { limit: Some(100), remaining: 2, reset_after: Duration::from_secs(900) };
        bucket.observe(&two_left, start);
        assert_eq!(bucket.acquire(start), Permit::After(Duration::ZERO));
        assert_eq!(bucket.acquire(start), Permit::After(Duration::ZERO));
        assert!(!matches!(bucket.acquire(start), Permit::After(wait) if wait.is_zero()));
        let none_left =
            headers::RateLimitSnapshot { limit: Some(100), remaining: 0, reset_after: Duration::from_secs(120) };
        bucket.observe(&none_left, start);
        assert!(matches!(bucket.acquire(start), Permit::Refused(_)), "nothing before the reset");
    }

    #[tokio::test]
    async fn personas_of_one_account_share_its_bucket_and_a_reload_moves_them() {
        let accounts = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(persona, account)| (persona.to_string(), account.to_string())).collect()
        };
        let args = RateLimiterArgs {
            platform: "x",
            config: config(1, 10, 60),
            accounts: accounts(&[("ada", "team"), ("bob", "team")]),
        };
        let (limiter, handle) = Actor::spawn(None, RateLimiter, args).await.expect("spawn");
        let acquire = |persona: &str| {
            let (limiter, persona) = (limiter.clone(), persona.to_owned());
            async move { ractor::call!(limiter, |reply| RateLimiterMsg::Acquire { persona, reply }) }
        };
        assert_eq!(acquire("ada").await.unwrap(), Permit::After(Duration::ZERO));
        match acquire("bob").await.unwrap() {
            Permit::After(wait) => assert!(wait > Duration::from_secs(9), "bob shares ada's account: {wait:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(acquire("carol").await.unwrap(), Permit::After(Duration::ZERO), "carol is her own account");

        let moved = accounts(&[("ada", "team"), ("bob", "bobby")]);
        limiter.send_message(RateLimiterMsg::Reconfigure { config: config(1, 10, 60), accounts: moved }).unwrap();
        assert_eq!(acquire("bob").await.unwrap(), Permit::After(Duration::ZERO), "bob's new account is fresh");
        limiter
            .send_message(RateLimiterMsg::BackOff { persona: "carol".into(), until: Duration::from_secs(600) })
            .unwrap();
        assert!(matches!(acquire("carol").await.unwrap(), Permit::Refused(_)), "carol backs off");
        match acquire("ada").await.unwrap() {
            Permit::After(wait) => {
                assert!(wait < Duration::from_secs(30), "ada is not held by carol's back-off: {wait:?}")
            }
            other => panic!("{other:?}"),
        }
        limiter.stop(None);
        handle.await.unwrap();
    }

    #[test]
    fn back_off_empties_the_bucket() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(&config(5, 5, 60), start);
        bucket.empty_for(Duration::from_secs(30), start);
        match bucket.acquire(start) {
            Permit::After(wait) => assert!(wait >= Duration::from_secs(30), "{wait:?}"),
            other => panic!("{other:?}"),
        }
    }
}
