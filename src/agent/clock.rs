//! The poll clock: one task that sends every agent its `Poll`, instead of a timer task per agent.
//!
//! An idle agent's own timer task (its future, its `Sleep`, the handle that cancels it) cost
//! about 0.3 KB, 3 MB at 10,000 agents, and most agents of a large fleet only ever wait for it.
//! Here an agent is an entry in a map and a due time in a heap. The clock sends `Poll` every
//! `every` (±10 %, so agents started together drift apart), the first time after a random part of
//! it, until the agent's [`PollTimer`] is dropped (drain, stop) or the agent is gone.
//!
//! A binary heap rather than `tokio_util`'s `DelayQueue`: the timer is cancelled by dropping its
//! handle on the agent's side, which knows only the id it was given, so the clock keeps a map by
//! id either way; a removed id's heap entry is skipped when it falls due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::ActorRef;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::AgentMsg;

/// Starts and stops poll timers; cheap to clone. The clock's task ends when the last handle and
/// timer are dropped.
#[derive(Clone)]
pub struct PollClock {
    commands: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
}

/// An agent's poll timer; dropping it stops the polls.
pub struct PollTimer {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

enum Command {
    Start { id: u64, agent: ActorRef<AgentMsg>, every: Duration },
    Stop { id: u64 },
}

impl PollClock {
    /// Spawns the clock's task on the current runtime.
    pub fn start() -> PollClock {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(receiver));
        PollClock { commands, next_id: Arc::new(AtomicU64::new(0)) }
    }

    /// Sends `agent` a `Poll` every `every` (±10 %), the first after a random part of it.
    pub fn every(&self, agent: &ActorRef<AgentMsg>, every: Duration) -> PollTimer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A send fails only once the clock's task is gone, which it is not while a handle exists.
        let _ = self.commands.send(Command::Start { id, agent: agent.clone(), every });
        PollTimer { id, commands: self.commands.clone() }
    }
}

impl Drop for PollTimer {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop { id: self.id });
    }
}

struct Entry {
    agent: ActorRef<AgentMsg>,
    every: Duration,
}

async fn run(mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    loop {
        let next = due.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Start { id, agent, every }) => {
                    let first = every.mul_f64(rand::rng().random_range(0.0..1.0));
                    due.push(Reverse((Instant::now() + first, id)));
                    entries.insert(id, Entry { agent, every });
                }
                Some(Command::Stop { id }) => {
                    entries.remove(&id);
                    if entries.is_empty() {
                        // Every timer stopped: drop the stale due times with them.
                        due.clear();
                    }
                }
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                while let Some(Reverse((at, id))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    let Some(entry) = entries.get(&id) else { continue };
                    if entry.agent.send_message(AgentMsg::Poll).is_err() {
                        // The agent is gone (its timer's stop may still be on the way).
                        entries.remove(&id);
                        continue;
                    }
                    let jitter: f64 = rand::rng().random_range(0.9..1.1);
                    due.push(Reverse((at.max(now) + entry.every.mul_f64(jitter), id)));
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when nothing is due.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};
    use std::sync::atomic::AtomicUsize;

    /// Counts the polls it receives.
    struct Counter;

    impl Actor for Counter {
        type Msg = AgentMsg;
        type State = Arc<AtomicUsize>;
        type Arguments = Arc<AtomicUsize>;

        async fn pre_start(
            &self,
            _myself: ActorRef<AgentMsg>,
            polls: Arc<AtomicUsize>,
        ) -> Result<Arc<AtomicUsize>, ActorProcessingErr> {
            Ok(polls)
        }

        async fn handle(
            &self,
            _myself: ActorRef<AgentMsg>,
            message: AgentMsg,
            polls: &mut Arc<AtomicUsize>,
        ) -> Result<(), ActorProcessingErr> {
            if matches!(message, AgentMsg::Poll) {
                polls.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    async fn counter() -> (ActorRef<AgentMsg>, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let (actor, _) = Actor::spawn(None, Counter, polls.clone()).await.expect("spawn");
        (actor, polls)
    }

    /// Real time with wide bounds (a busy machine delays a timer, never hastens it).
    #[tokio::test]
    async fn agents_are_polled_every_interval_until_their_timer_is_dropped() {
        let clock = PollClock::start();
        let (fast, fast_polls) = counter().await;
        let (slow, slow_polls) = counter().await;
        let fast_timer = clock.every(&fast, Duration::from_millis(50));
        let _slow_timer = clock.every(&slow, Duration::from_secs(3600));

        // 50 ms ± 10 % apart: about 20 polls in a second, at most 23.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let fast_count = fast_polls.load(Ordering::SeqCst);
        assert!((5..=23).contains(&fast_count), "the fast agent was polled {fast_count} times in 1 s");
        assert!(slow_polls.load(Ordering::SeqCst) <= 1, "the hourly agent is polled at most once in 1 s");

        drop(fast_timer);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped_at = fast_polls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fast_polls.load(Ordering::SeqCst), stopped_at, "no poll after the timer was dropped");
        fast.stop(None);
        slow.stop(None);
    }

    #[tokio::test]
    async fn the_clock_goes_on_after_an_agent_stops_with_its_timer_alive() {
        let clock = PollClock::start();
        let (gone, gone_polls) = counter().await;
        let _gone_timer = clock.every(&gone, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(gone_polls.load(Ordering::SeqCst) >= 1);
        gone.stop(None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Polling the stopped agent fails: its entry goes, and the clock keeps serving the others.
        let (other, other_polls) = counter().await;
        let _other_timer = clock.every(&other, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(other_polls.load(Ordering::SeqCst) >= 1);
        other.stop(None);
    }
}
