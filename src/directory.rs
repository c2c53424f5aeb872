//! Where the tree's shared actors are right now. A restarted child gets a new `ActorRef`; the
//! TeamLeader updates this directory on every (re)spawn, and callers look refs up at call time
//! instead of keeping one that may be dead. Per service, not the global ractor registry, so
//! several services can share one process (the tests). It also holds the outbox backlog per
//! account, which the Publisher counts and agents read (it outlives a Publisher restart).

use std::collections::HashMap;
use std::sync::RwLock;

use ractor::ActorRef;

use crate::llm::LlmMsg;
use crate::memory::MemoryMsg;
use crate::publisher::{OutboxBacklog, PublisherMsg};
use crate::rate_limit::RateLimiterMsg;
use crate::trader::TraderMsg;

#[derive(Default)]
pub struct Directory {
    llm: RwLock<Option<ActorRef<LlmMsg>>>,
    memory: RwLock<Option<ActorRef<MemoryMsg>>>,
    publisher: RwLock<Option<ActorRef<PublisherMsg>>>,
    rate_limiters: RwLock<HashMap<String, ActorRef<RateLimiterMsg>>>,
    traders: RwLock<HashMap<String, ActorRef<TraderMsg>>>,
    /// Rows each account has committed to the outbox and not published yet.
    pub outbox: OutboxBacklog,
}

impl Directory {
    pub fn llm(&self) -> Option<ActorRef<LlmMsg>> {
        self.llm.read().expect("directory lock").clone()
    }
    pub fn set_llm(&self, actor: Option<ActorRef<LlmMsg>>) {
        *self.llm.write().expect("directory lock") = actor;
    }
    pub fn memory(&self) -> Option<ActorRef<MemoryMsg>> {
        self.memory.read().expect("directory lock").clone()
    }
    pub fn set_memory(&self, actor: Option<ActorRef<MemoryMsg>>) {
        *self.memory.write().expect("directory lock") = actor;
    }
    pub fn publisher(&self) -> Option<ActorRef<PublisherMsg>> {
        self.publisher.read().expect("directory lock").clone()
    }
    pub fn set_publisher(&self, actor: Option<ActorRef<PublisherMsg>>) {
        *self.publisher.write().expect("directory lock") = actor;
    }
    /// The rate limiter of one platform (its messages name the persona; it finds the account).
    pub fn rate_limiter(&self, platform: &str) -> Option<ActorRef<RateLimiterMsg>> {
        self.rate_limiters.read().expect("directory lock").get(platform).cloned()
    }
    pub fn set_rate_limiter(&self, platform: &str, actor: Option<ActorRef<RateLimiterMsg>>) {
        let mut limiters = self.rate_limiters.write().expect("directory lock");
        match actor {
            Some(actor) => limiters.insert(platform.to_owned(), actor),
            None => limiters.remove(platform),
        };
    }
}

impl Directory {
    /// The Trader of one persona.
    pub fn trader(&self, persona: &str) -> Option<ActorRef<TraderMsg>> {
        self.traders.read().expect("directory lock").get(persona).cloned()
    }
    /// Every running Trader, by persona.
    pub fn traders(&self) -> Vec<(String, ActorRef<TraderMsg>)> {
        let traders = self.traders.read().expect("directory lock");
        let mut all: Vec<_> = traders.iter().map(|(persona, actor)| (persona.clone(), actor.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
    pub fn set_trader(&self, persona: &str, actor: Option<ActorRef<TraderMsg>>) {
        let mut traders = self.traders.write().expect("directory lock");
        match actor {
            Some(actor) => traders.insert(persona.to_owned(), actor),
            None => traders.remove(persona),
        };
    }
}

/// How reports name the rate-limit bucket that guards `account` on `platform`.
pub fn rate_limiter_key(platform: &str, account: &str) -> String {
    format!("{platform}:{account}")
}
