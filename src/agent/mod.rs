//! The Agent actor: one per persona × platform.
//!
//! - **Intake.** The service's poll clock ([`clock`]; first poll spread by random jitter, so a start
//!   does not burst) has the agent read
//!   mentions after the saved cursor in a task. Each mention is stored once (unique platform +
//!   remote id) before the cursor moves, so nothing is lost or seen twice across restarts.
//!   On a push platform (Discord) the agent instead opens the account's live connection in
//!   `post_start` — after the supervisor has it, so a slow platform never holds up the tree — and
//!   owns it: gateway events arrive as [`AgentMsg::Live`], the connection is closed on drain and
//!   on stop, and a connection that cannot go on (a refused token) fails the agent, which opens
//!   its circuit.
//! - **Replies.** Stored, unanswered mentions are the agent's queue (in the database, not the
//!   mailbox). At most `agents.max_in_flight` are generated at once, each in a task: loop guard →
//!   Memory recall → LlmPool (with the platform's typing indicator on while it runs) → finishing →
//!   Publisher `Enqueue`, which marks the mention answered in the outbox transaction. After a
//!   crash, pending mentions are simply picked up again. A backlog of `agents.max_pending`
//!   holds reading: new mentions wait on the platform until it is half drained. Replies drafted
//!   but not yet published (the account's outbox rows and those in flight) stay within
//!   `agents.max_unpublished`, so drafting never runs far ahead of what the platform takes.
//! - **Coordination.** A mention that @-mentions several personas is answered first by the one the
//!   TeamLeader's rule picks (topic fit, then load; decided once and stored), then by at most
//!   `team.max_joiners` others, each after the first answer is published; the rest skip it.
//! - **Posts.** The TeamLeader plans posts and sends each due one ([`AgentMsg::PostDue`]); the
//!   agent writes them one at a time about the planned topic. The plan's key is the idempotency
//!   key, so a restart never posts a slot twice; posts handed over but not written are resumed at
//!   the next start.
//! - **Review and airlock.** Every draft goes through [`crate::pipeline::gate`] (adapt, policy
//!   review, airlock) before the outbox: it is queued, held for a human, or blocked.
//! - **Failures.** A poll is retried twice in its task; `agents.max_poll_failures` failed polls in a
//!   row return `Err` ("restart me"); an authentication error fails at once, which opens the
//!   agent's circuit in the supervisor.

pub mod clock;
mod prompt;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::config::{AgentKey, Config, Persona};
use crate::directory::Directory;
use crate::llm::{ChatMessage, CompletionRequest, LlmError, LlmMsg, Role, Task};
use crate::memory::{MemoryMsg, Recollection, Verdict};
use crate::metrics as m;
use crate::pipeline::{self, Gate, Gatekeeper};
use crate::platform::{LiveConnection, LiveEvent, LiveSink, MentionBatch, Platform, PlatformError};
use crate::publisher::PublisherMsg;
use crate::store::{
    ContentItem, ContentLog, Db, InboundRow, MemoryKind, NewContent, NewInbound, NewMemory, NewOutbox,
    StoredAssignment, now_ms,
};
use crate::task::AbortOnDrop;
use crate::team_leader::coordinate::{self, Candidate, Role as Turn};
use clock::{PollClock, PollTimer};

pub use prompt::{POST_ABOUT, finish};

/// How long a reply waits for the LlmPool before the mention is retried later.
const GENERATION_TIMEOUT_MS: u64 = 180_000;
/// A mention whose generation failed is tried again after this long ...
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(15);
/// ... or this long when a daily LLM budget refused it (nothing was sent; the cap resets daily).
const RETRY_OVER_BUDGET_AFTER: Duration = Duration::from_secs(300);
/// Retries of one poll inside its task, before it counts as a failed poll.
const POLL_RETRIES: u32 = 2;
/// First delay between those retries (then doubled, capped at the poll interval).
const POLL_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// A planned post whose writing failed is tried again after this long ...
const POST_RETRY_AFTER: Duration = Duration::from_secs(60);
/// ... until it is this late.
const POST_GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// How often a joiner looks again whether the first answer is out.
const JOIN_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the typing indicator is renewed while a reply is generated (Discord shows it for
/// about ten seconds).
const TYPING_EVERY: Duration = Duration::from_secs(8);

/// Inbound mentions by platform and outcome, counted for each mention: registered once per
/// pair ([`m::Kept`]).
static INBOUND_EVENTS: m::Kept<metrics::Counter, 2> = m::Kept::new(m::INBOUND_EVENTS, ["platform", "outcome"]);

pub struct Agent;

/// What an agent needs to know; rebuilt from the config on each (re)spawn.
#[derive(Clone)]
pub struct AgentArgs {
    pub key: AgentKey,
    pub persona: Arc<Persona>,
    /// Review and airlock of this persona here; its `team` (every persona's handle on this
    /// platform) also feeds the loop guard.
    pub keeper: Arc<Gatekeeper>,
    /// Every persona on this platform, for coordination.
    pub roster: Arc<Roster>,
    pub platform: Arc<dyn Platform>,
    pub db: Db,
    pub directory: Arc<Directory>,
    pub settings: AgentSettings,
    /// This agent's rows as the TeamLeader read them for every agent at once, at the service's
    /// start; `None` on a restart or after a reload, when the agent reads its own.
    pub first_start: Option<FirstStart>,
    /// The service's poll clock.
    pub clock: PollClock,
}

/// What an agent's first start needs from the database, read for the whole team in a few queries
/// (a start of N agents ran 3N) by [`crate::team_leader::TeamCache`] before the first spawn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstStart {
    pub cursor: Option<String>,
    /// Posts were handed over and not written: the agent reads them.
    pub dispatched_posts: bool,
    /// How many mentions are stored and not answered: the agent answers them at once, and they
    /// are its backlog (`agents.max_pending`).
    pub pending_inbound: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    pub poll_every: Duration,
    pub max_in_flight: usize,
    pub max_pending: usize,
    pub max_unpublished: usize,
    pub max_bot_turns: u32,
    pub max_poll_failures: u32,
    pub recall_recent: u32,
    pub recall_conversation: u32,
    pub context_tokens: u32,
    pub recall_relevant: u32,
    pub dedup_attempts: u32,
    /// How many personas may join the first answer to a message that mentions several.
    pub max_joiners: usize,
    /// How long a joiner waits for the first answer.
    pub join_wait: Duration,
}

/// The team on one platform, for coordination: built once per platform and shared by its agents.
#[derive(Debug, Default)]
pub struct Roster {
    /// The personas on the platform, sorted by name.
    personas: Vec<Arc<Persona>>,
    handles: coordinate::Handles,
}

impl Roster {
    pub fn new(config: &Config, platform: crate::config::PlatformKind) -> Roster {
        // `Config::personas` is ordered by name.
        let personas: Vec<Arc<Persona>> =
            config.personas.values().filter(|persona| persona.platforms.contains(&platform)).cloned().collect();
        let handles: Vec<(String, &str)> =
            personas.iter().map(|persona| (persona.handle_on(platform), persona.name.as_str())).collect();
        let handles = coordinate::Handles::new(handles.iter().map(|(handle, name)| (handle.as_str(), *name)));
        Roster { personas, handles }
    }

    /// Whether `persona` is the only persona of the team on the platform: it has nobody to share a
    /// message with.
    fn alone(&self, persona: &str) -> bool {
        self.personas.iter().all(|member| member.name == persona)
    }

    /// The topics of a persona of the team (none for a stranger).
    fn topics_of(&self, persona: &str) -> &[String] {
        match self.personas.binary_search_by(|member| member.name.as_str().cmp(persona)) {
            Ok(found) => &self.personas[found].topics,
            Err(_) => &[],
        }
    }
}

impl AgentSettings {
    pub fn from_config(config: &Config, platform: crate::config::PlatformKind) -> Self {
        let service = &config.service;
        Self {
            poll_every: service.poll_every(platform),
            max_in_flight: service.agents.max_in_flight,
            max_pending: service.agents.max_pending,
            max_unpublished: service.agents.max_unpublished,
            max_bot_turns: service.agents.max_bot_turns,
            max_poll_failures: service.agents.max_poll_failures,
            recall_recent: service.memory.recall_recent,
            recall_conversation: service.memory.recall_conversation,
            context_tokens: service.memory.context_tokens,
            recall_relevant: service.memory.recall_relevant,
            dedup_attempts: service.memory.dedup_attempts,
            max_joiners: service.team.max_joiners as usize,
            join_wait: service.team.join_wait.get(),
        }
    }
}

pub struct AgentState {
    args: Arc<AgentArgs>,
    cursor: Option<String>,
    polling: bool,
    /// A wake-up came while a poll ran: poll again when it is done.
    poll_again: bool,
    poll_failures: u32,
    /// Inbound ids being answered right now, with their tasks (aborted if the agent stops: the
    /// mention stays pending for the next incarnation).
    in_flight: HashMap<i64, AbortOnDrop>,
    /// Inbound ids whose generation failed, with when to try again.
    retry_at: HashMap<i64, Instant>,
    /// The highest inbound id handed to a task: a fill reads only rows above it, except a full
    /// read when a retry falls due and once per poll interval (a Postgres row may commit after a
    /// higher id was read).
    taken_up_to: i64,
    last_full_read: Option<Instant>,
    /// New mentions were stored since the last read of pending ones.
    stored_new: bool,
    /// Pending mentions not handed to a task yet, in id order, when `fresh_complete`: a fill
    /// takes them from here instead of reading them back.
    fresh: VecDeque<InboundRow>,
    /// `fresh` holds every pending mention that is not in flight or waiting for a retry (true
    /// after a read that saw them all; false when `fresh` would pass `agents.max_pending`).
    fresh_complete: bool,
    /// Stored mentions not handed to a task yet (with `in_flight` and `retry_at`, the backlog
    /// that `agents.max_pending` bounds).
    queued: usize,
    /// A poll was skipped because the backlog was full: poll once it drains.
    held: bool,
    /// The account's outbox had no room for another reply (`outbox_room`): this task waits for
    /// the Publisher to take rows, down to the count given, and reports `OutboxDrained`.
    outbox_wait: Option<(i64, AbortOnDrop)>,
    /// Planned posts handed over by the TeamLeader, to write one at a time.
    posts: VecDeque<ContentItem>,
    /// The post being written, if any.
    posting: Option<AbortOnDrop>,
    draining: bool,
    drain_waiters: Vec<RpcReplyPort<()>>,
    /// The poll timer; dropping it (drain, stop) stops the polls.
    poll: Option<PollTimer>,
    /// The live connection of a push platform, closed on drain and stop.
    live: Option<Box<dyn LiveConnection>>,
}

pub enum AgentMsg {
    /// Read new mentions (poll timer).
    Poll,
    /// A poll finished.
    PollDone(Result<MentionBatch, PlatformError>),
    /// Answering a mention finished: queued or ignored (`retry_after: None`), or failed and to be
    /// tried again after `retry_after`.
    ReplyDone { inbound_id: i64, retry_after: Option<Duration> },
    /// A planned post is due (from the TeamLeader; the item is `dispatched`).
    PostDue(Box<ContentItem>),
    /// The post being written finished.
    PostDone,
    /// The account's outbox has room again for replies (`outbox_room`): start them.
    OutboxDrained,
    /// Stop intake and schedules; answer once nothing is in flight (graceful shutdown).
    Drain { reply: RpcReplyPort<()> },
    /// An event of the live connection (push platforms).
    Live(LiveEvent),
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = Arc<AgentArgs>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Arc<AgentArgs>,
    ) -> Result<AgentState, ActorProcessingErr> {
        let platform = args.key.platform.as_str();
        let (cursor, resume_posts) = match &args.first_start {
            Some(first) => (first.cursor.clone(), first.dispatched_posts),
            None => (args.db.cursor(&args.persona.name, platform).await?, true),
        };
        // The backlog a previous run left.
        let queued = match &args.first_start {
            Some(first) => first.pending_inbound,
            None => args.db.pending_inbound_count(&args.persona.name, platform).await?.max(0) as usize,
        };
        // Posts handed over before a restart and not written yet.
        let posts = if resume_posts {
            args.db.dispatched_posts(&args.persona.name, platform).await?.into()
        } else {
            VecDeque::new()
        };
        tracing::info!(agent = %args.key, "agent started");
        Ok(AgentState {
            args,
            cursor,
            polling: false,
            poll_again: false,
            poll_failures: 0,
            in_flight: HashMap::new(),
            retry_at: HashMap::new(),
            taken_up_to: 0,
            last_full_read: None,
            stored_new: false,
            fresh: VecDeque::new(),
            fresh_complete: false,
            queued,
            held: false,
            outbox_wait: None,
            posts,
            posting: None,
            draining: false,
            drain_waiters: Vec::new(),
            poll: None,
            live: None,
        })
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, state: &mut AgentState) -> Result<(), ActorProcessingErr> {
        let events = myself.clone();
        let sink: LiveSink = Arc::new(move |event| events.send_message(AgentMsg::Live(event)).is_ok());
        state.live = state.args.platform.connect(&state.args.persona.name, sink).await?;
        if state.live.is_none() || state.args.platform.polls_while_connected() {
            state.poll = Some(state.args.clock.every(&myself, state.args.settings.poll_every));
        }
        // Mentions stored but not answered before a restart are answered now.
        if state.args.first_start.as_ref().is_none_or(|first| first.pending_inbound > 0) {
            self.fill(&myself, state).await?;
        }
        self.next_post(&myself, state);
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut AgentState) -> Result<(), ActorProcessingErr> {
        if let Some(live) = state.live.take() {
            live.close().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: ractor keeps one boxed processing-loop future per actor for the actor's whole
        // life, sized by the largest state of this future. With the database calls awaited in
        // `on_message` inline, that future took 2.4 KB per agent; boxed, 1.2 KB (10,000 idle
        // agents: 12 MB less), for one allocation per message.
        Box::pin(self.on_message(myself, message, state)).await
    }
}

impl AgentState {
    /// Stored mentions this agent has not finished with.
    fn backlog(&self) -> usize {
        self.queued + self.in_flight.len() + self.retry_at.len()
    }
}

impl Agent {
    /// What a message does (see [`Actor::handle`] for why it is boxed).
    async fn on_message(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Poll => {
                self.start_poll(&myself, state);
                if state.held {
                    // Reading is held: the timer still takes the retries that fell due.
                    self.fill(&myself, state).await?;
                }
            }
            AgentMsg::PollDone(result) => {
                state.polling = false;
                match result {
                    Ok(batch) => {
                        state.poll_failures = 0;
                        // A full page: read the next one now (a poll reads one page). A wake-up
                        // that came while this poll ran sets `poll_again`.
                        let more = batch.more;
                        self.store_mentions(state, batch).await?;
                        self.fill(&myself, state).await?;
                        if std::mem::take(&mut state.poll_again) || more {
                            self.start_poll(&myself, state);
                        }
                    }
                    Err(err) => {
                        if matches!(err, PlatformError::Auth(_)) {
                            return Err(Box::new(err));
                        }
                        if let PlatformError::RateLimited { retry_after } = err {
                            // Waiting for the platform's reset is not a failure: the gate refuses
                            // polls without sending anything until then.
                            tracing::debug!(agent = %state.args.key, retry_after_ms = retry_after.as_millis() as u64,
                                "poll rate limited, waiting for the reset");
                            return Ok(());
                        }
                        metrics::counter!(m::POLL_FAILURES, "platform" => state.args.key.platform.as_str())
                            .increment(1);
                        state.poll_failures += 1;
                        tracing::warn!(agent = %state.args.key, failures = state.poll_failures, error = %err, "poll failed");
                        if state.poll_failures >= state.args.settings.max_poll_failures {
                            return Err(Box::new(err));
                        }
                    }
                }
            }
            AgentMsg::ReplyDone { inbound_id, retry_after } => {
                state.in_flight.remove(&inbound_id);
                if let Some(retry_after) = retry_after {
                    state.retry_at.insert(inbound_id, Instant::now() + retry_after);
                }
                self.fill(&myself, state).await?;
                // Reading was held for a full backlog: go on once it is half drained.
                if state.held && state.backlog() <= state.args.settings.max_pending / 2 {
                    self.start_poll(&myself, state);
                }
                self.maybe_finish_drain(state);
            }
            AgentMsg::OutboxDrained => {
                state.outbox_wait = None;
                self.fill(&myself, state).await?;
            }
            AgentMsg::PostDue(item) => {
                if state.draining {
                    // Still `dispatched`: written after the next start.
                    return Ok(());
                }
                if !state.posts.iter().any(|queued| queued.id == item.id) {
                    state.posts.push_back(*item);
                }
                self.next_post(&myself, state);
            }
            AgentMsg::PostDone => {
                state.posting = None;
                self.next_post(&myself, state);
                self.maybe_finish_drain(state);
            }
            AgentMsg::Drain { reply } => {
                state.draining = true;
                state.poll = None;
                state.outbox_wait = None;
                state.posts.clear();
                if let Some(live) = state.live.take() {
                    // In a task: closing may take seconds, and in-flight replies must finish.
                    tokio::spawn(live.close());
                }
                state.drain_waiters.push(reply);
                self.maybe_finish_drain(state);
            }
            AgentMsg::Live(event) => match event {
                LiveEvent::Mention(mention) => {
                    // Stored even while draining (it is answered after the next start).
                    self.store_mentions(state, MentionBatch { mentions: vec![mention], cursor: None, more: false })
                        .await?;
                    self.fill(&myself, state).await?;
                }
                LiveEvent::Wake => {
                    if state.polling {
                        state.poll_again = true;
                    } else {
                        self.start_poll(&myself, state);
                    }
                }
                LiveEvent::Ready { user } => {
                    tracing::info!(agent = %state.args.key, user, "live connection ready");
                }
                LiveEvent::Resumed => tracing::info!(agent = %state.args.key, "live connection resumed"),
                LiveEvent::Closed(Ok(())) => {}
                LiveEvent::Closed(Err(err)) => {
                    if state.draining {
                        return Ok(());
                    }
                    // Whatever the platform could not recover from: the supervisor restarts the
                    // agent (a fresh connection), or opens its circuit at once for credentials.
                    state.live = None;
                    return Err(Box::new(err));
                }
            },
        }
        Ok(())
    }

    /// Reads new mentions in a task, unless a poll runs already, the agent drains, or its backlog
    /// is at `agents.max_pending`.
    fn start_poll(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState) {
        if state.draining || state.polling {
            return;
        }
        if state.backlog() >= state.args.settings.max_pending {
            // Backpressure: new mentions wait on the platform until the backlog drains.
            if !std::mem::replace(&mut state.held, true) {
                metrics::counter!(m::POLLS_HELD, "platform" => state.args.key.platform.as_str()).increment(1);
                tracing::debug!(agent = %state.args.key, backlog = state.backlog(), "backlog full; reading held");
            }
            return;
        }
        state.held = false;
        state.polling = true;
        let args = state.args.clone();
        let cursor = state.cursor.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = poll_with_retries(&args, cursor.as_deref()).await;
            let _ = myself.send_message(AgentMsg::PollDone(result));
        });
    }

    /// Starts writing the next handed-over post, unless one is being written.
    fn next_post(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState) {
        if state.draining || state.posting.is_some() {
            return;
        }
        let Some(item) = state.posts.pop_front() else { return };
        let args = state.args.clone();
        let myself = myself.clone();
        let task = tokio::spawn(async move {
            if let Err(err) = planned_post(&args, &item).await {
                // Tried again a minute later while it is less than an hour late (after that, at
                // the next start: it stays `dispatched`).
                let late = now_ms() - item.due_at.unwrap_or_else(now_ms);
                tracing::warn!(agent = %args.key, item = item.id, error = %err, "planned post failed");
                if late < POST_GIVE_UP_AFTER.as_millis() as i64 {
                    // Detached: dropping a timer's JoinHandle does not cancel it.
                    drop(myself.send_after(POST_RETRY_AFTER, move || AgentMsg::PostDue(Box::new(item))));
                }
            }
            let _ = myself.send_message(AgentMsg::PostDone);
        });
        state.posting = Some(task.into());
    }

    /// Stores each mention once, remembers it, then moves the cursor.
    async fn store_mentions(&self, state: &mut AgentState, batch: MentionBatch) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        let platform = args.key.platform.as_str();
        let events: Vec<NewInbound> = batch
            .mentions
            .iter()
            .map(|mention| NewInbound {
                platform,
                remote_id: &mention.remote_id,
                persona: &args.persona.name,
                author: &mention.author,
                author_is_persona: args.keeper.team.contains(&mention.author.to_ascii_lowercase()) || mention.from_bot,
                text: &mention.text,
                conversation: &mention.conversation,
            })
            .collect();
        // The mentions, then the cursor past them: a crash between reads them again (stored once).
        let cursor = batch.cursor.as_deref().map(|cursor| (args.persona.name.as_str(), platform, cursor));
        let stored = args.db.store_inbound(&events, cursor).await?;
        for (mention, row) in batch.mentions.iter().zip(stored) {
            let outcome = match row {
                Some(row) => {
                    if state.fresh_complete && state.fresh.len() < args.settings.max_pending {
                        state.fresh.push_back(row);
                    } else {
                        state.fresh_complete = false;
                        state.fresh.clear();
                    }
                    if let Some(memory) = args.directory.memory() {
                        let _ = memory.send_message(MemoryMsg::Remember(NewMemory {
                            persona: args.persona.name.clone(),
                            platform: platform.to_owned(),
                            kind: MemoryKind::Inbound,
                            conversation: Some(mention.conversation.clone()),
                            author: mention.author.clone(),
                            text: mention.text.clone(),
                        }));
                    }
                    state.stored_new = true;
                    state.queued += 1;
                    "new"
                }
                None => "duplicate",
            };
            INBOUND_EVENTS.get([platform, outcome]).increment(1);
        }
        if batch.cursor.is_some() {
            state.cursor = batch.cursor;
        }
        if !batch.mentions.is_empty() && args.platform.acknowledges() {
            let ids: Vec<String> = batch.mentions.iter().map(|mention| mention.remote_id.clone()).collect();
            let (platform_client, account) = (args.platform.clone(), args.persona.name.clone());
            // Off the mailbox: an acknowledgement is a network call on some platforms.
            tokio::spawn(async move {
                if let Err(err) = platform_client.acknowledge(&account, &ids).await {
                    tracing::warn!(account, error = %err, "could not acknowledge mentions; they may be read again");
                }
            });
        }
        Ok(())
    }

    /// Starts answering pending mentions up to the in-flight limit.
    async fn fill(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState) -> Result<(), ActorProcessingErr> {
        if state.draining {
            return Ok(());
        }
        let capacity = state.args.settings.max_in_flight.saturating_sub(state.in_flight.len());
        let capacity = if capacity == 0 { 0 } else { capacity.min(self.outbox_room(myself, state)) };
        if capacity == 0 {
            return Ok(());
        }
        let args = state.args.clone();
        let now = Instant::now();
        let retries = state.retry_at.len();
        state.retry_at.retain(|_, at| *at > now);
        // Reading every pending row each time a reply finishes costs O(backlog) a reply: read
        // only what is new, and everything when a retry is due or a poll interval has passed.
        let full = state.retry_at.len() < retries
            || state.last_full_read.is_none_or(|at| now.duration_since(at) >= args.settings.poll_every);
        let stored_new = std::mem::take(&mut state.stored_new);
        if !full && !stored_new {
            // Nothing new since the last read, and nothing older due: no query.
            return Ok(());
        }
        let pending: Vec<InboundRow> = if !full && state.fresh_complete {
            // Everything pending is in memory already (stored by this agent since the last read).
            std::mem::take(&mut state.fresh).into()
        } else {
            let (after, window) = if full {
                state.last_full_read = Some(now);
                (0, (state.in_flight.len() + state.retry_at.len() + capacity) as i64)
            } else {
                (state.taken_up_to, capacity as i64)
            };
            let pending =
                args.db.pending_inbound_after(&args.persona.name, args.key.platform.as_str(), after, window).await?;
            // A full page: there may be more than was read.
            let full_page = pending.len() as i64 == window;
            state.stored_new |= full_page;
            state.fresh.clear();
            state.fresh_complete = !full_page;
            pending
        };
        let mut fresh = pending
            .into_iter()
            .filter(|row| !state.in_flight.contains_key(&row.id) && !state.retry_at.contains_key(&row.id));
        let taken: Vec<InboundRow> = fresh.by_ref().take(capacity).collect();
        // What did not fit waits in memory (in order, before anything stored since), if the rest
        // is there too; otherwise the next fill reads it.
        for row in fresh.rev() {
            state.fresh.push_front(row);
            state.stored_new = true;
        }
        for row in taken {
            state.taken_up_to = state.taken_up_to.max(row.id);
            state.queued = state.queued.saturating_sub(1);
            if let Some(reason) = self.loop_guard(&args, &row).await? {
                args.db.ignore_inbound(row.id, reason).await?;
                INBOUND_EVENTS.get([args.key.platform.as_str(), reason]).increment(1);
                continue;
            }
            let inbound_id = row.id;
            let args = args.clone();
            let myself = myself.clone();
            let task = tokio::spawn(async move {
                let retry_after = match answer(&args, &row).await {
                    Ok(wait) => wait,
                    Err(err) => {
                        let over_budget = matches!(err.downcast_ref(), Some(LlmError::BudgetExceeded { .. }));
                        let retry_after = if over_budget { RETRY_OVER_BUDGET_AFTER } else { RETRY_FAILED_AFTER };
                        tracing::warn!(agent = %args.key, inbound_id, retry_after_s = retry_after.as_secs(), error = %err,
                            "reply failed; will try again");
                        Some(retry_after)
                    }
                };
                let _ = myself.send_message(AgentMsg::ReplyDone { inbound_id, retry_after });
            });
            state.in_flight.insert(inbound_id, task.into());
        }
        Ok(())
    }

    /// How many more replies may start: `agents.max_unpublished` less the account's rows waiting
    /// in the outbox (committed, not yet published) and the replies being drafted, which will
    /// join them. With no room, a task waits until the Publisher has taken enough rows for an
    /// eighth of the bound (at least one; or all of them) and reports `OutboxDrained`; the
    /// mentions wait, and past `agents.max_pending` so does reading.
    fn outbox_room(&self, myself: &ActorRef<AgentMsg>, state: &mut AgentState) -> usize {
        let args = &state.args;
        let (platform, persona) = (args.key.platform.as_str(), args.persona.name.as_str());
        let limit = args.settings.max_unpublished as i64;
        let drafting = state.in_flight.len() as i64;
        let rows = args.directory.outbox.rows(platform, persona);
        let room = limit - rows - drafting;
        if room > 0 {
            return room as usize;
        }
        // Wake once there is room for a few; a waiter set for fewer rows (more were being
        // drafted then) is replaced, so it does not wake late.
        let wake_at = (limit - drafting - (limit / 8).max(1)).max(0);
        if state.outbox_wait.as_ref().is_some_and(|(waiting_for, _)| *waiting_for >= wake_at) {
            return 0;
        }
        if state.outbox_wait.is_none() {
            metrics::counter!(m::DRAFTING_HELD, "platform" => platform).increment(1);
            tracing::debug!(agent = %args.key, rows, drafting, "outbox full; replies held");
        }
        let account = args.directory.outbox.account(platform, persona);
        let myself = myself.clone();
        let wait = tokio::spawn(async move {
            account.drained_to(wake_at).await;
            let _ = myself.send_message(AgentMsg::OutboxDrained);
        });
        state.outbox_wait = Some((wake_at, wait.into()));
        0
    }

    /// Why a mention must not be answered, if it must not.
    async fn loop_guard(&self, args: &AgentArgs, row: &InboundRow) -> Result<Option<&'static str>, ActorProcessingErr> {
        if row.author.eq_ignore_ascii_case(&args.persona.handle_on(args.key.platform)) {
            return Ok(Some("ignored_self"));
        }
        if row.author_is_persona {
            let turns = args.db.persona_turns(args.key.platform.as_str(), &row.conversation).await?;
            if turns > i64::from(args.settings.max_bot_turns) {
                return Ok(Some("loop_guard"));
            }
        }
        Ok(None)
    }

    fn maybe_finish_drain(&self, state: &mut AgentState) {
        if state.draining && state.in_flight.is_empty() && state.posting.is_none() {
            for waiter in state.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

async fn poll_with_retries(args: &AgentArgs, cursor: Option<&str>) -> Result<MentionBatch, PlatformError> {
    let mut attempt = 0;
    loop {
        match args.platform.mentions(&args.persona.name, cursor).await {
            Ok(batch) => return Ok(batch),
            Err(err @ (PlatformError::Auth(_) | PlatformError::Permanent(_))) => return Err(err),
            Err(err) if attempt >= POLL_RETRIES => return Err(err),
            Err(PlatformError::RateLimited { retry_after }) if retry_after > args.settings.poll_every => {
                return Err(PlatformError::RateLimited { retry_after });
            }
            Err(_) => {
                tokio::time::sleep(crate::backoff::delay(POLL_RETRY_INITIAL, args.settings.poll_every, attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// Generates and queues the reply to one mention. Errors leave the mention pending; `Some(wait)`
/// means "not yet" (a joiner waiting for the first answer).
async fn answer(args: &Arc<AgentArgs>, row: &InboundRow) -> anyhow::Result<Option<Duration>> {
    use anyhow::Context as _;
    let platform = args.key.platform.as_str();
    let mentioned = coordinate::mentioned(&row.text, &args.roster.handles);
    // A mention naming this persona alone is almost always its own to answer: recall runs beside
    // the assignment read. Otherwise recall waits for the turn (a skipped or waiting turn recalls
    // nothing).
    let (role, recalled) = if mentioned.len() == 1 && mentioned[0] == args.persona.name {
        let (role, recollection) =
            tokio::join!(turn(args, row, &mentioned), recall(args, Some(&row.conversation), Some(&row.text)));
        (role?, Some(recollection))
    } else {
        (turn(args, row, &mentioned).await?, None)
    };
    match role {
        Turn::First => {}
        Turn::Joiner => {
            if let Some(wait) = joiner_wait(args, row).await? {
                return Ok(Some(wait));
            }
        }
        Turn::Skipped => {
            args.db.ignore_inbound(row.id, "coordination_skipped").await?;
            INBOUND_EVENTS.get([platform, "coordination_skipped"]).increment(1);
            return Ok(None);
        }
    }
    let key = reply_key(platform, &args.persona.name, &row.remote_id);
    let content = NewContent {
        stage: "generating",
        idempotency_key: key.clone(),
        persona: args.persona.name.clone(),
        platform: platform.to_owned(),
        kind: "reply".to_owned(),
        reply_to: Some(row.remote_id.clone()),
        conversation: Some(row.conversation.clone()),
        inbound_id: Some(row.id),
        submitted_by: args.persona.name.clone(),
    };
    let recollection = match recalled {
        Some(recollection) => recollection,
        None => recall(args, Some(&row.conversation), Some(&row.text)).await,
    };
    let context = prompt::Context {
        recollection: &recollection,
        budget_tokens: args.settings.context_tokens as usize,
        brand: &args.keeper.brand,
    };
    let request = CompletionRequest {
        persona: args.persona.clone(),
        task: Task::Reply,
        messages: prompt::reply(&args.persona, args.key.platform, &context, &row.author, &row.text),
        reply_to_author: Some(row.author.clone()),
        seed: fnv1a(&key),
    };
    let typing = show_typing(args, &row.remote_id);
    let drafted = draft(args, &key, "reply", request).await;
    drop(typing);
    let text = match drafted? {
        Draft::Text(text) => text,
        Draft::Dropped(reason) => {
            let item_id = args.db.start_content(&content).await?;
            args.db.drop_content(item_id, reason, &args.persona.name).await?;
            args.db.ignore_inbound(row.id, reason).await?;
            INBOUND_EVENTS.get([platform, reason]).increment(1);
            return Ok(None);
        }
    };
    let mut log = ContentLog::default();
    log.push("generate", "generated", None, &args.persona.name);
    let gated = pipeline::gate(
        &args.db,
        &args.directory,
        &args.keeper,
        pipeline::Draft {
            content: &content,
            log,
            kind: "reply",
            text: &text,
            platform: args.key.platform,
            max_chars: args.platform.max_text_chars(),
            replying_to: Some(&row.author),
            persona: &args.persona,
            actor: &args.persona.name,
        },
    )
    .await?;
    let Gate::Queue(text, log) = gated else { return Ok(None) };
    let item = NewOutbox {
        idempotency_key: key,
        persona: args.persona.name.clone(),
        platform: platform.to_owned(),
        kind: "reply".to_owned(),
        text,
        reply_to: Some(row.remote_id.clone()),
        conversation: Some(row.conversation.clone()),
    };
    enqueue(args, item, Some(row.id), log).await.context("queue reply")?;
    Ok(None)
}

fn reply_key(platform: &str, persona: &str, remote_id: &str) -> String {
    format!("reply:{platform}:{persona}:{remote_id}")
}

/// This persona's turn on a mention: `First` unless the mention @-mentions several personas of
/// the team (or another persona was already assigned to it), in which case the stored
/// assignment decides. The first agent to see such a mention decides for everyone it names, by
/// topic fit and load ([`coordinate::assign`]); the insert is conditional, so two agents deciding
/// at once end up with the same answer. A persona alone on its platform is always `First`, with
/// nothing read or stored: one round trip to the database fewer a reply.
async fn turn(args: &AgentArgs, row: &InboundRow, mentioned: &[String]) -> anyhow::Result<Turn> {
    let platform = args.key.platform.as_str();
    let me = &args.persona.name;
    if args.roster.alone(me) {
        return Ok(Turn::First);
    }
    let stored = args.db.thread_assignment(platform, &row.remote_id).await?;
    let assignment = match stored {
        Some(assignment) => assignment,
        None if mentioned.len() < 2 && mentioned.contains(me) => return Ok(Turn::First),
        // Not @-mentioned by name (a watched Discord channel, a reply to the bot): other personas
        // may have received the same message; the first to claim it answers.
        None if !mentioned.contains(me) => {
            let claim = StoredAssignment { first: me.clone(), joiners: Vec::new(), skipped: Vec::new() };
            args.db.assign_thread(platform, &row.remote_id, &claim, "claimed by the first to see it").await?
        }
        None => {
            let loads = args.db.pending_load(platform, mentioned).await?;
            let candidates: Vec<Candidate> = loads
                .into_iter()
                .map(|(persona, load)| Candidate { topics: args.roster.topics_of(&persona).to_vec(), persona, load })
                .collect();
            let decided = coordinate::assign(&row.text, &candidates, args.settings.max_joiners);
            let stored = StoredAssignment {
                first: decided.first.clone(),
                joiners: decided.joiners.clone(),
                skipped: decided.skipped.clone(),
            };
            let in_force = args.db.assign_thread(platform, &row.remote_id, &stored, &decided.detail).await?;
            tracing::info!(agent = %args.key, remote_id = %row.remote_id, first = %in_force.first,
                joiners = ?in_force.joiners, detail = %decided.detail, "several personas mentioned: assigned");
            in_force
        }
    };
    let StoredAssignment { first, joiners, skipped } = assignment;
    let role = coordinate::Assignment { first, joiners, skipped, detail: String::new() }.role(me);
    let label = match role {
        Turn::First => "first",
        Turn::Joiner => "joiner",
        Turn::Skipped => "skipped",
    };
    metrics::counter!(m::COORDINATION, "platform" => platform, "role" => label).increment(1);
    Ok(role)
}

/// A joiner answers once the first answer is published (or will never be: then it goes ahead
/// as if it were first); until then it waits, at most `team.join_wait` after the mention arrived.
async fn joiner_wait(args: &AgentArgs, row: &InboundRow) -> anyhow::Result<Option<Duration>> {
    let platform = args.key.platform.as_str();
    let Some(assignment) = args.db.thread_assignment(platform, &row.remote_id).await? else { return Ok(None) };
    let first_key = reply_key(platform, &assignment.first, &row.remote_id);
    let first_done = match args.db.reply_stage(&first_key).await?.as_deref() {
        Some("published") => true,
        Some("dropped" | "blocked" | "rejected" | "expired" | "failed") => {
            metrics::counter!(m::COORDINATION, "platform" => platform, "role" => "promoted").increment(1);
            true
        }
        Some(_) => false,
        // Nothing started: the first persona ignored it (loop guard), or has not got to it yet.
        None => matches!(
            args.db.inbound_state(platform, &row.remote_id, &assignment.first).await?.as_deref(),
            Some("ignored")
        ),
    };
    if first_done {
        return Ok(None);
    }
    if now_ms() - row.received_at > args.settings.join_wait.as_millis() as i64 {
        args.db.ignore_inbound(row.id, "coordination_timeout").await?;
        metrics::counter!(m::COORDINATION, "platform" => platform, "role" => "timed_out").increment(1);
        // Settled: nothing to retry.
        return Ok(None);
    }
    Ok(Some(JOIN_CHECK_EVERY))
}

/// Writes one planned post about its topic and sends it through the review and the airlock.
async fn planned_post(args: &AgentArgs, item: &ContentItem) -> anyhow::Result<()> {
    let platform = args.key.platform.as_str();
    let key = item.idempotency_key.clone();
    if args.db.outbox_exists(&key).await? {
        return Ok(());
    }
    let recollection = recall(args, None, None).await;
    let request = CompletionRequest {
        persona: args.persona.clone(),
        task: Task::Post,
        messages: prompt::post(
            &args.persona,
            args.key.platform,
            &args.keeper.brand,
            &recollection,
            item.topic.as_deref(),
        ),
        reply_to_author: None,
        seed: fnv1a(&key),
    };
    let text = match draft(args, &key, "post", request).await? {
        Draft::Text(text) => text,
        Draft::Dropped(reason) => {
            // The plan goes on: the next slot writes a new post.
            tracing::info!(agent = %args.key, item = item.id, reason, "planned post dropped");
            args.db.drop_content(item.id, reason, &args.persona.name).await?;
            return Ok(());
        }
    };
    let mut log = ContentLog::default();
    log.push("generate", "generated", item.topic.as_deref(), &args.persona.name);
    let content = NewContent {
        stage: "dispatched",
        idempotency_key: key.clone(),
        persona: args.persona.name.clone(),
        platform: platform.to_owned(),
        kind: "post".to_owned(),
        reply_to: None,
        conversation: None,
        inbound_id: None,
        submitted_by: args.persona.name.clone(),
    };
    let gated = pipeline::gate(
        &args.db,
        &args.directory,
        &args.keeper,
        pipeline::Draft {
            content: &content,
            log,
            kind: "post",
            text: &text,
            platform: args.key.platform,
            max_chars: args.platform.max_text_chars(),
            replying_to: None,
            persona: &args.persona,
            actor: &args.persona.name,
        },
    )
    .await?;
    let Gate::Queue(text, log) = gated else { return Ok(()) };
    let item = NewOutbox {
        idempotency_key: key,
        persona: args.persona.name.clone(),
        platform: platform.to_owned(),
        kind: "post".to_owned(),
        text,
        reply_to: None,
        conversation: None,
    };
    enqueue(args, item, None, log).await
}

/// A draft ready to queue, or why there is none.
enum Draft {
    Text(String),
    /// `empty_generation` or `dedup_dropped`.
    Dropped(&'static str),
}

/// Generates until the text is neither empty (nothing with a letter or digit, such as emoji only)
/// nor too close to a recent output of any persona on any platform (Memory `Check`): at most
/// `memory.dedup_attempts` new drafts after the first, each told what was wrong with the last.
async fn draft(
    args: &AgentArgs,
    key: &str,
    kind: &'static str,
    mut request: CompletionRequest,
) -> anyhow::Result<Draft> {
    let mut reason = "empty_generation";
    for attempt in 0..=args.settings.dedup_attempts {
        if attempt > 0 {
            request.seed = request.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
        let completion = generate(args, request.clone()).await?;
        let nudge = match finish(&completion.text, completion.truncated, args.platform.max_text_chars()) {
            None => {
                reason = "empty_generation";
                "Your last draft had no words in it. Write the message in plain words.".to_owned()
            }
            Some(text) => match check(args, key, &text).await {
                Verdict::Unique => {
                    if attempt > 0 {
                        metrics::counter!(m::DEDUP_OUTCOMES, "outcome" => "rewritten", "kind" => kind).increment(1);
                    }
                    return Ok(Draft::Text(text));
                }
                Verdict::Duplicate { similarity, .. } => {
                    reason = "dedup_dropped";
                    tracing::info!(agent = %args.key, attempt, similarity, "draft too close to a recent output");
                    format!(
                        "{} (by you or another persona): \"{text}\". Say something different.",
                        crate::llm::offline::REPEATED_NUDGE
                    )
                }
            },
        };
        request.messages.push(ChatMessage::new(Role::System, nudge));
    }
    metrics::counter!(m::DEDUP_OUTCOMES, "outcome" => "dropped", "kind" => kind).increment(1);
    Ok(Draft::Dropped(reason))
}

/// Memory's verdict on a draft; without Memory (restarting) or an answer, the draft goes.
async fn check(args: &AgentArgs, key: &str, text: &str) -> Verdict {
    let Some(memory) = args.directory.memory() else { return Verdict::Unique };
    let (key, text) = (key.to_owned(), text.to_owned());
    ractor::call_t!(memory, |reply| MemoryMsg::Check { key, text, reply }, 10_000).unwrap_or(Verdict::Unique)
}

/// Keeps the platform's typing indicator on (renewed every [`TYPING_EVERY`]) until dropped; the
/// first one is always sent, even when the answer is quicker. A failed indicator is only logged:
/// it never holds up the reply.
fn show_typing(args: &Arc<AgentArgs>, reply_to: &str) -> Option<tokio::sync::oneshot::Sender<()>> {
    if !args.platform.shows_typing() {
        return None;
    }
    let (args, reply_to) = (args.clone(), reply_to.to_owned());
    let (done, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            if let Err(err) = args.platform.typing(&args.persona.name, &reply_to).await {
                tracing::debug!(agent = %args.key, error = %err, "typing indicator failed");
            }
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(TYPING_EVERY) => {}
            }
        }
    });
    Some(done)
}

async fn recall(args: &AgentArgs, conversation: Option<&str>, query: Option<&str>) -> Recollection {
    let Some(memory) = args.directory.memory() else { return Recollection::default() };
    let persona = args.persona.name.clone();
    let conversation = conversation.map(|id| (args.key.platform.as_str().to_owned(), id.to_owned()));
    let query = query.map(str::to_owned);
    let (recent, in_conversation) = (args.settings.recall_recent, args.settings.recall_conversation);
    let relevant = args.settings.recall_relevant;
    ractor::call_t!(
        memory,
        |reply| MemoryMsg::Recall { persona, conversation, query, recent, in_conversation, relevant, reply },
        5_000
    )
    .unwrap_or_default()
}

async fn generate(args: &AgentArgs, request: CompletionRequest) -> anyhow::Result<crate::llm::Completion> {
    let llm = args.directory.llm().ok_or_else(|| anyhow::anyhow!("the llm pool is restarting"))?;
    let result = ractor::call_t!(llm, |reply| LlmMsg::Complete { request, reply }, GENERATION_TIMEOUT_MS)
        .map_err(|err| anyhow::anyhow!("llm pool did not answer: {err}"))?;
    Ok(result?)
}

async fn enqueue(args: &AgentArgs, item: NewOutbox, inbound_id: Option<i64>, log: ContentLog) -> anyhow::Result<()> {
    let publisher = args.directory.publisher().ok_or_else(|| anyhow::anyhow!("the publisher is restarting"))?;
    ractor::call_t!(publisher, |reply| PublisherMsg::Enqueue { item, inbound_id, log: Box::new(log), reply }, 30_000)
        .map_err(|err| anyhow::anyhow!("publisher did not answer: {err}"))?
        .map_err(|err| anyhow::anyhow!("outbox write failed: {err}"))?;
    Ok(())
}

fn fnv1a(text: &str) -> u64 {
    crate::hash::fnv1a(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PlatformKind, write_test_file as write};

    #[test]
    fn the_roster_knows_the_teams_handles_and_topics_on_its_platform() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "");
        let persona = |name: &str, topics: &str, platforms: &str| {
            format!(
                "name = \"{name}\"\nbio = \"b\"\nvoice = \"v\"\ntopics = [{topics}]\nplatforms = [{platforms}]\n\
                 schedule = {{ every = \"90m\" }}\n"
            )
        };
        write(dir.path(), "personas/zoe.toml", &persona("zoe", "\"jazz\"", "\"local\""));
        write(dir.path(), "personas/ada.toml", &persona("ada", "\"rust\", \"compilers\"", "\"local\", \"x\""));
        write(dir.path(), "personas/bob.toml", &persona("bob", "\"sailing\"", "\"x\""));
        let config = crate::config::load(&dir.path().join("chorus.toml")).unwrap();

        let local = Roster::new(&config, PlatformKind::Local);
        assert_eq!(local.topics_of("ada"), ["rust", "compilers"]);
        assert_eq!(local.topics_of("zoe"), ["jazz"]);
        assert!(local.topics_of("bob").is_empty(), "bob is not on the local platform");
        assert!(local.topics_of("nobody").is_empty());
        assert_eq!(coordinate::mentioned("@Zoe and @ada, and @bob", &local.handles), ["zoe", "ada"]);
        assert!(!local.alone("ada") && !local.alone("zoe"), "ada and zoe share the local platform");
        let x = Roster::new(&config, PlatformKind::X);
        assert!(!x.alone("ada"));
        let reddit = Roster::new(&config, PlatformKind::Reddit);
        assert!(reddit.alone("ada"), "nobody of the team is on Reddit");
        let only_ada = Roster { personas: vec![config.personas["ada"].clone()], handles: Default::default() };
        assert!(only_ada.alone("ada") && !only_ada.alone("zoe"));
    }
}
