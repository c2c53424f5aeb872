//! The Memory actor: every post, reply and inbound message of each persona, and the facts of its
//! persona file, stored with an embedding; recall by recency and by meaning; semantic dedup of
//! what the team is about to say; retention.
//!
//! - **Vectors.** A memory is stored first, then embedded through the LlmPool (`LlmMsg::Embed`:
//!   an OpenAI-compatible `/embeddings`, or the offline embedder) in a task, and its vector is
//!   written back with the model's name. Each persona has an in-process [`VectorIndex`] of the
//!   current model's vectors, loaded from the database at start. Vectors of another model (after
//!   `llm.embedding` changed) are never searched: the sweep embeds those memories again in the
//!   background, a batch at a time.
//! - **Recall.** The persona's latest posts, the latest turns of one conversation, and the
//!   memories most similar to the message being answered — among its posts and facts, and the
//!   replies and mentions of public platforms (never another conversation of Discord, where a DM
//!   is private).
//! - **Dedup.** `Check` compares a draft with the recent outputs (posts and replies, within
//!   `memory.dedup_window`) of every persona on every platform. An accepted draft is reserved at
//!   once under its outbox key, so two personas writing at the same moment cannot both say it; the
//!   same key (a retry of the same item) never blocks itself.
//! - **Retention.** Every `memory.sweep_every`, memories older than their kind's retention are
//!   deleted, and each persona's oldest past `retention.max_per_persona` (facts are kept); the
//!   indexes shrink with them.
//!
//! Writes are applied in mailbox order; embedding, recall, checks and searches run in tasks, so
//! a slow provider or read never delays the mailbox.

mod cache;
pub mod index;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::config::{Config, MemoryConfig, Persona, PlatformKind};
use crate::directory::Directory;
use crate::llm::LlmMsg;
use crate::metrics as m;
use crate::store::{Db, MemoryKind, MemoryRow, NewMemory, StoreError, ToInsert, now_ms};
use crate::task::AbortOnDrop;
use cache::{EmbeddingCache, Lookup};
use index::{GraphBuild, GraphOutcome};
pub use index::{IndexError, VectorIndex};

/// How long an embedding call may take before the memory waits for the next sweep ...
const EMBED_TIMEOUT_MS: u64 = 30_000;
/// ... and before a recall goes on without its relevant memories (the Agent waits 5 s for all
/// of it), or a dedup check lets the draft through (the Agent waits 10 s).
const RECALL_EMBED_TIMEOUT_MS: u64 = 3_000;
const CHECK_EMBED_TIMEOUT_MS: u64 = 8_000;
/// Memories embedded per call by the sweep, and vectors loaded per page at start.
const EMBED_BATCH: i64 = 64;
const LOAD_PAGE: i64 = 2_000;
/// Personas whose facts are stored per query at start.
const FACTS_BATCH: usize = 256;

// The metrics every reply updates, registered once each ([`m::Kept`]).
static STORED: m::Kept<Counter, 1> = m::Kept::new(m::MEMORIES_STORED, ["kind"]);
static DEDUP_CHECKS: m::Kept<Counter, 1> = m::Kept::new(m::DEDUP_CHECKS, ["outcome"]);
static OUTPUTS_VECTORS: m::Kept<Gauge, 0> = m::Kept::new(m::MEMORY_OUTPUTS_VECTORS, []);
static INDEX_VECTORS: m::Kept<Gauge, 0> = m::Kept::new(m::MEMORY_INDEX_VECTORS, []);
static INDEX_BYTES: m::Kept<Gauge, 0> = m::Kept::new(m::MEMORY_INDEX_BYTES, []);
static SEARCH_SECONDS: m::Kept<Histogram, 0> = m::Kept::new(m::MEMORY_SEARCH_SECONDS, []);

pub struct Memory;

pub struct MemoryArgs {
    pub db: Db,
    pub directory: Arc<Directory>,
    pub config: MemoryConfig,
    /// The embedding model of this run ([`Config::embedding_model`]).
    pub model: String,
    pub personas: Vec<Arc<Persona>>,
}

impl MemoryArgs {
    pub fn from_config(config: &Config, db: Db, directory: Arc<Directory>) -> Self {
        Self {
            db,
            directory,
            config: config.service.memory.clone(),
            model: config.embedding_model(),
            personas: config.personas.values().cloned().collect(),
        }
    }
}

/// What search needs to know of an indexed memory.
#[derive(Debug, Clone, Copy)]
struct Meta {
    kind: MemoryKind,
    /// Another person may see it recalled: not a Discord message or reply.
    public: bool,
    conversation: u64,
    created_at: i64,
}

/// Metadata by memory id, looked up by searches for the rows that score high enough: a fast
/// hash (ids are ours, not an attacker's); with SipHash a lookup cost about a dot product.
type IdMap<V> = HashMap<i64, V, foldhash::fast::RandomState>;

/// One persona's vectors.
struct PersonaIndex {
    index: VectorIndex,
    meta: IdMap<Meta>,
}

/// A persona's index, read from the store at the persona's first search: an idle persona holds
/// none of its vectors in memory.
enum PersonaSlot {
    /// Being read; vectors stored meanwhile wait here and are added when it is ready.
    Loading(Vec<(MemoryRow, Vec<f32>)>),
    /// Behind a lock of its own: one persona's inserts into an HNSW graph (about a millisecond
    /// each) hold up that persona's searches, not the others'. The map's lock is only held to
    /// find a slot.
    Ready(Arc<RwLock<PersonaIndex>>),
}

/// A recent output of the team, for dedup.
#[derive(Debug, Clone)]
struct Output {
    created_at: i64,
    /// The outbox key of a reserved draft (reservations have negative ids).
    key: Option<String>,
}

struct Outputs {
    index: VectorIndex,
    meta: IdMap<Output>,
    next_reservation: i64,
    /// The reservation of each draft text not stored as a memory yet: its memory, when it comes
    /// (with the same vector), takes the reservation's place.
    reserved: HashMap<String, i64>,
}

impl Outputs {
    /// Drops an output or reservation from the index.
    fn remove(&mut self, id: i64) {
        self.meta.remove(&id);
        self.index.remove(id);
    }

    /// No output yet, for vectors of `dimension` components.
    fn empty(shared: &Shared, dimension: usize) -> Self {
        Outputs {
            index: shared.new_index(dimension),
            meta: IdMap::default(),
            next_reservation: -1,
            reserved: HashMap::new(),
        }
    }
}

/// An index that [`build_graph`] works on: a persona's, or the team's outputs.
#[derive(Debug)]
enum Which {
    Persona(String),
    Outputs,
}

impl Shared {
    /// `persona`'s index if it is loaded (the map's lock is released before the index is locked).
    fn ready(&self, persona: &str) -> Option<Arc<RwLock<PersonaIndex>>> {
        match self.personas.read().get(persona) {
            Some(PersonaSlot::Ready(index)) => Some(index.clone()),
            Some(PersonaSlot::Loading(_)) | None => None,
        }
    }

    /// Every loaded persona's index.
    fn ready_all(&self) -> Vec<Arc<RwLock<PersonaIndex>>> {
        self.personas
            .read()
            .values()
            .filter_map(|slot| match slot {
                PersonaSlot::Ready(index) => Some(index.clone()),
                PersonaSlot::Loading(_) => None,
            })
            .collect()
    }

    /// An empty index for this run's vectors: exact up to `memory.exact_threshold`, its graph
    /// then built off its lock ([`build_graph`]).
    fn new_index(&self, dimension: usize) -> VectorIndex {
        VectorIndex::with_threshold(dimension, self.exact_threshold).deferring_graph()
    }
}

/// The indexes, shared with the tasks that search them.
struct Shared {
    model: String,
    /// Vectors an index holds before its graph is built (`memory.exact_threshold`).
    exact_threshold: usize,
    /// Vector length of the current model, known from the first vector.
    dimension: RwLock<Option<usize>>,
    /// The personas searched since the start (the others are in the store only).
    personas: RwLock<HashMap<String, PersonaSlot>>,
    outputs: RwLock<Option<Outputs>>,
    /// The vectors of texts embedded lately, of `model` (see [`cache`]).
    embeddings: std::sync::Mutex<EmbeddingCache>,
}

pub struct MemoryState {
    db: Db,
    directory: Arc<Directory>,
    config: MemoryConfig,
    shared: Arc<Shared>,
    personas: Vec<Arc<Persona>>,
    /// Set while a sweep's embedding batch is out, so batches do not pile up.
    embedding: bool,
    /// The retention run under way, if any (one at a time).
    retention: Option<AbortOnDrop>,
    /// Memories waiting for the next group write.
    to_store: Vec<ToStore>,
    /// The group write in flight, or the wait before it (at most one: what arrives meanwhile goes
    /// in the next).
    storing: Option<AbortOnDrop>,
    _sweep: AbortOnDrop,
}

/// A memory waiting for its group write, with its vector (model, vector) when known.
pub type ToStore = (NewMemory, Option<(String, Vec<f32>)>);

/// How long a memory to remember waits for others to share its group write: a reply's memories
/// (the mention's, the reply's) are written a few replies at a time, not one statement each.
/// Memories that arrive during a write wait again (unless a batch is full). Nothing waits on the
/// write; a memory is in recall this much later (plus the write before it, if one was running).
const STORE_LINGER: Duration = Duration::from_millis(20);

/// Most memories in one group write (9 values each, well under the engines' parameter limits).
const MAX_STORE_BATCH: usize = 256;

/// What generation gets to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recollection {
    /// The persona's latest own posts, newest first (replies stay in their conversation).
    pub recent: Vec<MemoryRow>,
    /// The latest messages of the conversation (both sides), newest first.
    pub conversation: Vec<MemoryRow>,
    /// The memories most similar to the message answered, most similar first.
    pub relevant: Vec<MemoryRow>,
}

/// Whether a draft may be said.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing recent is that close; the draft is now reserved under its key.
    Unique,
    /// Too close to something said recently.
    Duplicate { similarity: f32, of: String },
}

/// One hit of an admin search.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub id: i64,
    pub kind: &'static str,
    pub platform: String,
    pub text: String,
    pub created_at: i64,
    pub similarity: f32,
}

pub enum MemoryMsg {
    /// Store one memory with its vector (embedded first when not known).
    Remember(NewMemory),
    /// The wait before a group write is over ([`STORE_LINGER`]): write what is waiting.
    StoreDue,
    /// A group write of memories finished: `rows` in the order of `batch`.
    Stored { batch: Vec<ToStore>, rows: Result<Vec<MemoryRow>, StoreError> },
    /// Vectors for stored memories arrived (or their embedding failed).
    Embedded { rows: Vec<MemoryRow>, vectors: Option<(String, Vec<Vec<f32>>)>, sweep: bool },
    /// Recent memories of a persona and of one conversation, and the ones most like `query`.
    Recall {
        persona: String,
        /// `(platform, conversation id)`.
        conversation: Option<(String, String)>,
        query: Option<String>,
        recent: u32,
        in_conversation: u32,
        relevant: u32,
        reply: RpcReplyPort<Recollection>,
    },
    /// Is `text`, about to be queued under outbox key `key`, too close to a recent output?
    Check { key: String, text: String, reply: RpcReplyPort<Verdict> },
    /// The persona's memories most like `query` (the admin search), of one kind and created at or
    /// after `since` (epoch milliseconds) when given.
    Search {
        persona: String,
        query: String,
        k: usize,
        kind: Option<MemoryKind>,
        since: Option<i64>,
        reply: RpcReplyPort<Vec<Hit>>,
    },
    /// Retention and re-embedding (timer).
    Sweep,
}

impl Memory {
    /// Writes the waiting memories (up to [`MAX_STORE_BATCH`]) in one statement a run and reports
    /// `Stored`. Those without a vector are embedded first, together; one whose embedding fails
    /// is stored without (the sweep embeds it later).
    fn start_store(&self, myself: &ActorRef<MemoryMsg>, state: &mut MemoryState) {
        let take = state.to_store.len().min(MAX_STORE_BATCH);
        let mut batch: Vec<ToStore> = state.to_store.drain(..take).collect();
        let (db, directory, shared, myself) =
            (state.db.clone(), state.directory.clone(), state.shared.clone(), myself.clone());
        let write = tokio::spawn(async move {
            let embeddings = batch.iter().map(|(memory, vector)| async {
                match vector {
                    Some(_) => None,
                    None => embed_cached(&shared, &directory, &memory.text, EMBED_TIMEOUT_MS).await,
                }
            });
            let embedded = futures::future::join_all(embeddings).await;
            for ((_, vector), embedded) in batch.iter_mut().zip(embedded) {
                if vector.is_none() {
                    *vector = embedded;
                }
            }
            let memories: Vec<ToInsert> = batch
                .iter()
                .map(|(memory, vector)| {
                    (memory, vector.as_ref().map(|(model, vector)| (model.as_str(), vector.as_slice())))
                })
                .collect();
            let rows = db.insert_memories(&memories).await;
            let _ = myself.send_message(MemoryMsg::Stored { batch, rows });
        });
        state.storing = Some(write.into());
    }

    /// Adds stored memories and their vectors (of the current model) to the indexes: here while
    /// the indexes they go to are exact (a copy each, past the threshold too: the graph is then
    /// built off the index's lock, [`build_graph`]), else on the blocking pool: an insert into an
    /// HNSW graph (about a millisecond) is for neither the mailbox nor an async worker thread.
    fn index(&self, state: &MemoryState, rows: Vec<MemoryRow>, vectors: Vec<Vec<f32>>) {
        let window_start = now_ms() - state.config.dedup_window.get().as_millis() as i64;
        let shared = state.shared.clone();
        let inline = stays_exact(&shared, &rows);
        let add_all = move || {
            for (row, vector) in rows.iter().zip(&vectors) {
                add(&shared, row, vector, window_start);
            }
            publish_sizes(&shared);
        };
        if inline {
            add_all();
        } else {
            tokio::task::spawn_blocking(add_all);
        }
    }
}

impl Actor for Memory {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = MemoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MemoryArgs,
    ) -> Result<MemoryState, ActorProcessingErr> {
        let shared = Arc::new(Shared {
            model: args.model,
            exact_threshold: args.config.exact_threshold as usize,
            dimension: RwLock::new(None),
            personas: RwLock::new(HashMap::new()),
            outputs: RwLock::new(None),
            embeddings: std::sync::Mutex::new(EmbeddingCache::new(cache::CAPACITY)),
        });
        let sweep = myself.send_interval(args.config.sweep_every.get(), || MemoryMsg::Sweep).into();
        Ok(MemoryState {
            db: args.db,
            directory: args.directory,
            config: args.config,
            shared,
            personas: args.personas,
            embedding: false,
            retention: None,
            to_store: Vec::new(),
            storing: None,
            _sweep: sweep,
        })
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, state: &mut MemoryState) -> Result<(), ActorProcessingErr> {
        // The persona files' facts, then the stored vectors: off the mailbox (a large memory takes
        // a while to load; recall works on what is loaded so far).
        let (db, shared, personas) = (state.db.clone(), state.shared.clone(), state.personas.clone());
        let directory = state.directory.clone();
        let window = state.config.dedup_window.get();
        tokio::spawn(async move {
            let mut facts = Vec::new();
            for batch in personas.chunks(FACTS_BATCH) {
                let files: Vec<(String, Vec<String>)> =
                    batch.iter().map(|persona| (persona.name.clone(), persona_facts(persona))).collect();
                let files: Vec<(&str, &[String])> =
                    files.iter().map(|(name, facts)| (name.as_str(), facts.as_slice())).collect();
                match db.ensure_facts_of(&files).await {
                    Ok(added) => facts.extend(added),
                    Err(err) => tracing::warn!(personas = files.len(), error = %err, "cannot store persona facts"),
                }
            }
            for rows in facts.chunks(EMBED_BATCH as usize) {
                embed(&directory, &myself, rows.to_vec(), false).await;
            }
            if let Err(err) = load(&db, &shared, window).await {
                metrics::counter!(m::STORE_ERRORS, "operation" => "memory_load").increment(1);
                tracing::warn!(error = %err, "cannot load memory vectors; recall by meaning starts empty");
            }
            let _ = myself.send_message(MemoryMsg::Sweep);
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: MemoryMsg,
        state: &mut MemoryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemoryMsg::Remember(memory) => {
                // A text embedded already (a reply, checked for repeats before it was queued)
                // comes with its vector; another is embedded by the group write, before it is
                // stored: one write either way, in the order remembered.
                let known = crate::sync::lock(&state.shared.embeddings).get(&memory.text);
                state.to_store.push((memory, known.map(|vector| (state.shared.model.clone(), vector))));
                if state.storing.is_none() {
                    linger(&myself, state);
                }
            }
            MemoryMsg::StoreDue => {
                state.storing = None;
                if !state.to_store.is_empty() {
                    self.start_store(&myself, state);
                }
            }
            MemoryMsg::Stored { batch, rows } => {
                state.storing = None;
                match rows {
                    Ok(rows) => {
                        let (mut indexed, mut vectors) = (Vec::new(), Vec::new());
                        for (row, (_, vector)) in rows.into_iter().zip(batch) {
                            STORED.get([row.kind.as_str()]).increment(1);
                            if let Some((model, vector)) = vector
                                && model == state.shared.model
                            {
                                indexed.push(row);
                                vectors.push(vector);
                            }
                        }
                        self.index(state, indexed, vectors);
                    }
                    // A lost memory degrades recall but must not lose the reply: log, count, go on.
                    Err(err) => {
                        metrics::counter!(m::STORE_ERRORS, "operation" => "memory").increment(1);
                        tracing::warn!(error = %err, memories = batch.len(), "cannot store memories");
                    }
                }
                // What arrived during the write waits for company too, unless a batch is full.
                if state.to_store.len() >= MAX_STORE_BATCH {
                    self.start_store(&myself, state);
                } else if !state.to_store.is_empty() {
                    linger(&myself, state);
                }
            }
            MemoryMsg::Embedded { rows, vectors, sweep } => {
                if sweep {
                    state.embedding = false;
                }
                let Some((model, vectors)) = vectors else { return Ok(()) };
                let pairs: Vec<(i64, Vec<f32>)> = rows.iter().map(|row| row.id).zip(vectors.iter().cloned()).collect();
                if let Err(err) = state.db.set_embeddings(&model, &pairs).await {
                    metrics::counter!(m::STORE_ERRORS, "operation" => "memory_vector").increment(1);
                    tracing::warn!(error = %err, "cannot store memory vectors; they are embedded again later");
                }
                if model == state.shared.model {
                    self.index(state, rows, vectors);
                }
            }
            MemoryMsg::Recall { persona, conversation, query, recent, in_conversation, relevant, reply } => {
                let (db, shared, directory) = (state.db.clone(), state.shared.clone(), state.directory.clone());
                let ask = RecallAsk { persona, conversation, query, recent, in_conversation, relevant };
                tokio::spawn(async move {
                    let _ = reply.send(recall(&db, &shared, &directory, ask).await);
                });
            }
            MemoryMsg::Check { key, text, reply } => {
                let (shared, directory) = (state.shared.clone(), state.directory.clone());
                let (threshold, window) = (state.config.dedup_threshold, state.config.dedup_window.get());
                tokio::spawn(async move {
                    let verdict = check(&shared, &directory, &key, &text, threshold, window).await;
                    let outcome = if matches!(verdict, Verdict::Unique) { "unique" } else { "duplicate" };
                    DEDUP_CHECKS.get([outcome]).increment(1);
                    let _ = reply.send(verdict);
                });
            }
            MemoryMsg::Search { persona, query, k, kind, since, reply } => {
                let (db, shared, directory) = (state.db.clone(), state.shared.clone(), state.directory.clone());
                tokio::spawn(async move {
                    let what = (persona.as_str(), query.as_str(), k);
                    let _ = reply.send(search(&db, &shared, &directory, what, kind, since).await);
                });
            }
            MemoryMsg::Sweep => {
                if state.retention.as_ref().is_none_or(AbortOnDrop::is_finished) {
                    let (db, shared, config) = (state.db.clone(), state.shared.clone(), state.config.clone());
                    state.retention = Some(tokio::spawn(retention(db, shared, config)).into());
                }
                if !state.embedding {
                    match state.db.memories_to_embed(&state.shared.model, EMBED_BATCH).await {
                        Ok(rows) if !rows.is_empty() => {
                            state.embedding = true;
                            let (myself, directory) = (myself.clone(), state.directory.clone());
                            tokio::spawn(async move { embed(&directory, &myself, rows, true).await });
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "cannot list memories to embed"),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Starts the wait before the next group write ([`STORE_LINGER`]): nothing waits on the write,
/// so what arrives in the next moments joins it.
fn linger(myself: &ActorRef<MemoryMsg>, state: &mut MemoryState) {
    let myself = myself.clone();
    let wait = tokio::spawn(async move {
        tokio::time::sleep(STORE_LINGER).await;
        let _ = myself.send_message(MemoryMsg::StoreDue);
    });
    state.storing = Some(wait.into());
}

/// Deletes what retention says must go, from the database and the indexes. Runs in a task: a
/// first retention over a large table is a long `DELETE`, and the mailbox must not wait for it.
async fn retention(db: Db, shared: Arc<Shared>, config: MemoryConfig) {
    let retention = &config.retention;
    let mut deleted: Vec<i64> = Vec::new();
    for (kind, age) in [
        (MemoryKind::Inbound, retention.inbound),
        (MemoryKind::Reply, retention.reply),
        (MemoryKind::Post, retention.post),
    ] {
        let Some(age) = age else { continue };
        match db.delete_memories_before(kind, now_ms() - age.get().as_millis() as i64).await {
            Ok(ids) => {
                metrics::counter!(m::MEMORIES_DELETED, "kind" => kind.as_str()).increment(ids.len() as u64);
                deleted.extend(ids);
            }
            Err(err) => tracing::warn!(kind = kind.as_str(), error = %err, "retention failed; it runs again later"),
        }
    }
    match db.memory_personas().await {
        Ok(personas) => {
            let keep = i64::try_from(retention.max_per_persona).unwrap_or(i64::MAX);
            for persona in personas {
                match db.trim_memories(&persona, keep).await {
                    Ok(ids) => {
                        metrics::counter!(m::MEMORIES_DELETED, "kind" => "over_cap").increment(ids.len() as u64);
                        deleted.extend(ids);
                    }
                    Err(err) => tracing::warn!(error = %err, "retention cap failed; it runs again later"),
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "retention cannot list personas"),
    }
    // The indexes' locks may wait for a batch of graph inserts: on the blocking pool.
    let window_start = now_ms() - config.dedup_window.get().as_millis() as i64;
    let _ = tokio::task::spawn_blocking(move || {
        if !deleted.is_empty() {
            for persona in shared.ready_all() {
                let mut persona = persona.write();
                for id in &deleted {
                    if persona.meta.remove(id).is_some() {
                        persona.index.remove(*id);
                    }
                }
            }
            if let Some(outputs) = shared.outputs.write().as_mut() {
                for id in &deleted {
                    outputs.remove(*id);
                }
                OUTPUTS_VECTORS.get([]).set(outputs.index.len() as f64);
            }
        }
        prune_outputs(&shared, window_start);
        publish_sizes(&shared);
    })
    .await;
}

/// The persona file as facts: who it is, how it writes, what it talks about, how it sounds.
fn persona_facts(persona: &Persona) -> Vec<String> {
    let name = persona.display_name.as_deref().unwrap_or(&persona.name);
    let mut facts = vec![
        format!("{name}: {}", persona.bio.trim()),
        format!("{name}'s voice: {}", persona.voice.trim()),
        format!("{name} talks about {}.", persona.topics.join(", ")),
    ];
    facts.extend(persona.example_posts.iter().map(|post| post.trim().to_owned()));
    facts
}

/// A stable key for a conversation, to leave it out of recall by meaning.
fn conversation_key(platform: &str, conversation: &str) -> u64 {
    crate::hash::fnv1a(format!("{platform}\u{0}{conversation}").as_bytes())
}

/// Embeds `rows` through the LlmPool and reports to the actor; a failure leaves them for the sweep.
/// A failed batch is tried a memory at a time, so one text the provider refuses does not hold up
/// the others.
async fn embed(directory: &Directory, myself: &ActorRef<MemoryMsg>, rows: Vec<MemoryRow>, sweep: bool) {
    let texts: Vec<String> = rows.iter().map(|row| row.text.clone()).collect();
    if let Some(vectors) = embed_with(directory, &texts, EMBED_TIMEOUT_MS).await {
        let _ = myself.send_message(MemoryMsg::Embedded { rows, vectors: Some(vectors), sweep });
        return;
    }
    if rows.len() > 1 {
        for row in rows {
            let vectors = embed_with(directory, std::slice::from_ref(&row.text), EMBED_TIMEOUT_MS).await;
            let _ = myself.send_message(MemoryMsg::Embedded { rows: vec![row], vectors, sweep: false });
        }
    }
    let _ = myself.send_message(MemoryMsg::Embedded { rows: Vec::new(), vectors: None, sweep });
}

async fn embed_with(directory: &Directory, texts: &[String], timeout_ms: u64) -> Option<(String, Vec<Vec<f32>>)> {
    let llm = directory.llm()?;
    let owned = texts.to_vec();
    match ractor::call_t!(llm, |reply| LlmMsg::Embed { texts: owned, reply }, timeout_ms) {
        Ok(Ok(embeddings)) if embeddings.vectors.len() == texts.len() => Some((embeddings.model, embeddings.vectors)),
        Ok(Ok(_)) => {
            tracing::warn!("the embedder returned the wrong number of vectors");
            None
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "embedding failed; the memories are embedded again later");
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "the llm pool did not answer an embedding request");
            None
        }
    }
}

/// Adds a memory's vector to its persona's index and, for a recent output, to the team's.
fn add(shared: &Arc<Shared>, row: &MemoryRow, vector: &[f32], window_start: i64) {
    {
        let mut dimension = shared.dimension.write();
        match *dimension {
            Some(expected) if expected != vector.len() => {
                tracing::warn!(expected, got = vector.len(), "a vector of another size for the same model; skipped");
                return;
            }
            Some(_) => {}
            None => *dimension = Some(vector.len()),
        }
    }
    let ready = match shared.personas.write().get_mut(&row.persona) {
        // Not searched yet: the vector is read from the store with the rest at the first search.
        None => None,
        Some(PersonaSlot::Loading(waiting)) => {
            waiting.push((row.clone(), vector.to_vec()));
            None
        }
        Some(PersonaSlot::Ready(persona)) => Some(persona.clone()),
    };
    if let Some(persona) = ready {
        let mut persona = persona.write();
        insert_into(&mut persona, row, vector);
        start_graph(shared, &mut persona.index, || Which::Persona(row.persona.clone()));
    }
    if matches!(row.kind, MemoryKind::Post | MemoryKind::Reply) && row.created_at >= window_start {
        add_output(shared, row, vector);
    }
}

fn insert_into(persona: &mut PersonaIndex, row: &MemoryRow, vector: &[f32]) {
    match persona.index.insert(row.id, vector) {
        Ok(()) => {
            persona.meta.insert(row.id, meta_of(row));
        }
        Err(err) => tracing::debug!(id = row.id, error = %err, "memory vector not indexed"),
    }
}

/// Starts building the graph of an index past the exact threshold, on the blocking pool
/// ([`build_graph`]); called with the index's lock held, right after an insert.
fn start_graph(shared: &Arc<Shared>, index: &mut VectorIndex, which: impl FnOnce() -> Which) {
    if let Some(build) = index.start_graph() {
        let (shared, which) = (shared.clone(), which());
        tokio::task::spawn_blocking(move || build_graph(&shared, &which, build));
    }
}

/// Runs `f` on `which`'s index under its write lock; `None` if it is not there (any more).
fn with_index<R>(shared: &Shared, which: &Which, f: impl FnOnce(&mut VectorIndex) -> R) -> Option<R> {
    match which {
        Which::Persona(persona) => shared.ready(persona).map(|persona| f(&mut persona.write().index)),
        Which::Outputs => shared.outputs.write().as_mut().map(|outputs| f(&mut outputs.index)),
    }
}

/// Moves an index past the exact threshold into an HNSW graph without holding its lock while
/// the graph is built (about 16 s for 40,000 vectors on 2 cores; [`GraphBuild::run`]): searches
/// go on exactly and inserts into the exact store meanwhile. A failed build leaves the index
/// exact; its next insert starts another.
fn build_graph(shared: &Shared, which: &Which, build: GraphBuild) {
    let started = Instant::now();
    let outcome = build.run(|locked| with_index(shared, which, |index| locked(index)).is_some());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        GraphOutcome::Built { vectors } => {
            metrics::counter!(m::MEMORY_GRAPH_BUILDS, "outcome" => "built").increment(1);
            tracing::info!(index = ?which, vectors, elapsed_ms, "memory index moved to an HNSW graph");
            publish_sizes(shared);
        }
        // The index went away (or was replaced) during the build: nothing to swap.
        GraphOutcome::Gone => tracing::debug!(index = ?which, "memory index gone during its graph build"),
        GraphOutcome::Failed(err) => {
            metrics::counter!(m::MEMORY_GRAPH_BUILDS, "outcome" => "failed").increment(1);
            tracing::warn!(index = ?which, error = %err, elapsed_ms, "memory index graph not built; it stays exact and tries again at its next insert");
        }
    }
}

/// A vector search can use: finite, not zero.
fn usable(vector: &[f32]) -> bool {
    let norm = vector.iter().map(|x| x * x).sum::<f32>();
    norm.is_finite() && norm > 0.0
}

/// How long a search waits for another one loading the same persona's index.
const LOAD_WAIT: Duration = Duration::from_secs(3);

/// Reads `persona`'s vectors from the store into its index unless that was done already; `false`
/// if it could not (a store error, or another search's load taking longer than [`LOAD_WAIT`]).
async fn ensure_loaded(db: &Db, shared: &Shared, persona: &str) -> bool {
    // The common case, under the map's read lock (held only for the look-up).
    if matches!(shared.personas.read().get(persona), Some(PersonaSlot::Ready(_))) {
        return true;
    }
    let started = Instant::now();
    loop {
        {
            let mut personas = shared.personas.write();
            match personas.get(persona) {
                Some(PersonaSlot::Ready(_)) => return true,
                Some(PersonaSlot::Loading(_)) if started.elapsed() >= LOAD_WAIT => return false,
                Some(PersonaSlot::Loading(_)) => {}
                None => {
                    personas.insert(persona.to_owned(), PersonaSlot::Loading(Vec::new()));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // From here this call loads; if it is dropped half-way, the slot is freed for the next one.
    let mut guard = LoadGuard { shared, persona, done: false };
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        match db.persona_vectors(&shared.model, persona, after, LOAD_PAGE).await {
            Ok(page) => {
                let full = page.len() as i64 == LOAD_PAGE;
                after = page.last().map_or(after, |last| last.row.id);
                stored.extend(page);
                if !full {
                    break;
                }
            }
            Err(err) => {
                metrics::counter!(m::STORE_ERRORS, "operation" => "memory_load").increment(1);
                tracing::warn!(persona, error = %err, "cannot load a persona's memory vectors; searched without");
                return false;
            }
        }
    }
    let Some(dimension) = (*shared.dimension.read()).or_else(|| stored.first().map(|first| first.vector.len())) else {
        // No vector stored or seen yet: nothing to search; the next search looks again.
        shared.personas.write().remove(persona);
        guard.done = true;
        return true;
    };
    *shared.dimension.write() = Some(dimension);
    let count = stored.len();
    let empty = shared.new_index(dimension);
    let build = move || {
        let mut index = PersonaIndex { index: empty, meta: IdMap::default() };
        let items: Vec<_> =
            stored.iter().filter(|stored| stored.vector.len() == dimension && usable(&stored.vector)).collect();
        match index.index.extend(items.iter().map(|stored| (stored.row.id, stored.vector.as_slice()))) {
            Ok(()) => index.meta.extend(items.iter().map(|stored| (stored.row.id, meta_of(&stored.row)))),
            Err(err) => tracing::warn!(error = %err, "memory vectors not indexed"),
        }
        // Not shared yet: its graph is built here, with no lock to keep short.
        if let Err(err) = index.index.build_graph_now() {
            tracing::warn!(error = %err, "memory index graph not built; it stays exact and tries again at its next insert");
        }
        index
    };
    // Past the exact threshold the load builds an HNSW graph (seconds): on the blocking pool.
    let mut index = if count <= shared.exact_threshold {
        build()
    } else {
        match tokio::task::spawn_blocking(build).await {
            Ok(index) => index,
            Err(_) => return false,
        }
    };
    let mut personas = shared.personas.write();
    if let Some(PersonaSlot::Loading(waiting)) = personas.remove(persona) {
        for (row, vector) in &waiting {
            insert_into(&mut index, row, vector);
        }
    }
    personas.insert(persona.to_owned(), PersonaSlot::Ready(Arc::new(RwLock::new(index))));
    drop(personas);
    guard.done = true;
    publish_sizes(shared);
    true
}

/// Frees a persona's `Loading` slot if its load did not finish.
struct LoadGuard<'a> {
    shared: &'a Shared,
    persona: &'a str,
    done: bool,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.personas.write().remove(self.persona);
        }
    }
}

/// Whether adding `rows` keeps every persona index they go to exact and free to lock now (a
/// persona without an index yet gets an exact one). A persona's index a writer holds or waits for
/// (a batch of graph inserts on the blocking pool) sends the rows there too, so the handler does
/// not wait behind it.
fn stays_exact(shared: &Shared, rows: &[MemoryRow]) -> bool {
    let persona_indexes = rows.iter().all(|row| {
        let more = rows.iter().filter(|other| other.persona == row.persona).count();
        // Not loaded, or loading: the vector waits; nothing is inserted now.
        shared
            .ready(&row.persona)
            .is_none_or(|persona| persona.try_read().is_some_and(|persona| persona.index.stays_exact_with(more)))
    });
    persona_indexes && shared.outputs.read().as_ref().is_none_or(|outputs| outputs.index.stays_exact_with(rows.len()))
}

fn meta_of(row: &MemoryRow) -> Meta {
    Meta {
        kind: row.kind,
        public: row.platform != PlatformKind::Discord.as_str(),
        conversation: row.conversation.as_deref().map(|id| conversation_key(&row.platform, id)).unwrap_or(0),
        created_at: row.created_at,
    }
}

fn add_output(shared: &Arc<Shared>, row: &MemoryRow, vector: &[f32]) {
    let mut outputs = shared.outputs.write();
    let outputs = outputs.get_or_insert_with(|| Outputs::empty(shared, vector.len()));
    if let Some(reservation) = outputs.reserved.remove(&row.text) {
        outputs.remove(reservation);
    }
    if outputs.index.insert(row.id, vector).is_ok() {
        outputs.meta.insert(row.id, Output { created_at: row.created_at, key: None });
    }
    OUTPUTS_VECTORS.get([]).set(outputs.index.len() as f64);
    start_graph(shared, &mut outputs.index, || Which::Outputs);
}

/// Drops outputs (and reservations) older than the dedup window.
fn prune_outputs(shared: &Shared, window_start: i64) {
    if let Some(outputs) = shared.outputs.write().as_mut() {
        let old: Vec<i64> =
            outputs.meta.iter().filter(|(_, output)| output.created_at < window_start).map(|(id, _)| *id).collect();
        for id in old {
            outputs.remove(id);
        }
        let Outputs { reserved, meta, index, .. } = outputs;
        reserved.retain(|_, id| meta.contains_key(id));
        OUTPUTS_VECTORS.get([]).set(index.len() as f64);
    }
}

/// Sets the personas' index gauges (vectors, bytes) and returns what it set, unless a writer
/// holds or waits for one of the indexes: then nothing, as every writer publishes the sizes when
/// it is done, and the caller (the handler, recall, a task) does not wait for it.
fn publish_sizes(shared: &Shared) -> Option<(usize, usize)> {
    let (mut vectors, mut bytes) = (0, 0);
    for persona in shared.ready_all() {
        let persona = persona.try_read()?;
        vectors += persona.index.len();
        bytes += persona.index.memory_bytes();
    }
    INDEX_VECTORS.get([]).set(vectors as f64);
    INDEX_BYTES.get([]).set(bytes as f64);
    Some((vectors, bytes))
}

/// Loads the team's recent outputs (posts and replies within the dedup window), page by page;
/// each persona's own index is read at its first search ([`ensure_loaded`]).
async fn load(db: &Db, shared: &Arc<Shared>, window: Duration) -> Result<(), crate::store::StoreError> {
    let started = Instant::now();
    let window_start = now_ms() - window.as_millis() as i64;
    let mut after = 0;
    let mut loaded = 0usize;
    loop {
        let page = db.output_vectors(&shared.model, window_start, after, LOAD_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.row.id;
        loaded += page.len();
        let full = page.len() as i64 == LOAD_PAGE;
        // Past the exact threshold an insert goes into an HNSW graph: on the blocking pool.
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for stored in page.iter().filter(|stored| usable(&stored.vector)) {
                let dimension = *shared.dimension.write().get_or_insert(stored.vector.len());
                if stored.vector.len() == dimension {
                    add_output(&shared, &stored.row, &stored.vector);
                }
            }
        })
        .await;
        if !full {
            break;
        }
    }
    tracing::info!(outputs = loaded, elapsed_ms = started.elapsed().as_millis() as u64, model = %shared.model, "memory index loaded");
    Ok(())
}

/// The vector of one text, or `None` (no LlmPool, a failed call, or a vector of another model
/// than the indexes hold).
async fn query_vector(shared: &Shared, directory: &Directory, text: &str, timeout_ms: u64) -> Option<Vec<f32>> {
    let (model, vector) = embed_cached(shared, directory, text, timeout_ms).await?;
    if model != shared.model {
        tracing::warn!(model, expected = %shared.model, "the embedder answered with another model; not searched");
        return None;
    }
    Some(vector)
}

/// The vector of one text and its model: from the embedding cache, from the call embedding it
/// right now, or from a call of its own (kept in the cache when it is of Memory's model).
async fn embed_cached(
    shared: &Shared,
    directory: &Directory,
    text: &str,
    timeout_ms: u64,
) -> Option<(String, Vec<f32>)> {
    let lookup = crate::sync::lock(&shared.embeddings).lookup(text);
    match lookup {
        Lookup::Hit(vector) => return Some((shared.model.clone(), vector)),
        Lookup::Wait(waiter) => {
            let vector = tokio::time::timeout(Duration::from_millis(timeout_ms), waiter).await.ok()?.ok()??;
            return Some((shared.model.clone(), vector));
        }
        Lookup::Lead => {}
    }
    // Reports to the cache even if this future is dropped half-way, so nobody waits forever.
    let mut flight = Flight { shared, text, vector: None };
    let (model, mut vectors) = embed_with(directory, &[text.to_owned()], timeout_ms).await?;
    let vector = vectors.pop()?;
    if model == shared.model {
        flight.vector = Some(vector.clone());
    }
    Some((model, vector))
}

/// One embedding in flight for the cache; reports its outcome when dropped.
struct Flight<'a> {
    shared: &'a Shared,
    text: &'a str,
    vector: Option<Vec<f32>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        crate::sync::lock(&self.shared.embeddings).finish(self.text, self.vector.as_deref());
    }
}

/// The `k` memories of `persona` most like `query` among those `accept` lets through, with their
/// similarity, most similar first. `wait`: wait for an index being rebuilt, else go on without.
async fn search_persona(
    db: &Db,
    shared: &Shared,
    directory: &Directory,
    (persona, query, k): (&str, &str, usize),
    timeout_ms: u64,
    wait: bool,
    accept: impl Fn(&Meta) -> bool,
) -> Vec<(MemoryRow, f32)> {
    let hits = similar_ids(db, shared, directory, (persona, query, k), timeout_ms, wait, accept).await;
    let ids: Vec<i64> = hits.iter().map(|(id, _)| *id).collect();
    let rows = db.memories_by_ids(&ids).await.unwrap_or_default();
    in_hit_order(&hits, rows)
}

/// [`search_persona`] without reading the rows: the ids and similarities, most similar first.
async fn similar_ids(
    db: &Db,
    shared: &Shared,
    directory: &Directory,
    (persona, query, k): (&str, &str, usize),
    timeout_ms: u64,
    wait: bool,
    accept: impl Fn(&Meta) -> bool,
) -> Vec<(i64, f32)> {
    let (vector, loaded) =
        tokio::join!(query_vector(shared, directory, query, timeout_ms), ensure_loaded(db, shared, persona));
    let (Some(vector), true) = (vector, loaded) else { return Vec::new() };
    let started = Instant::now();
    let Some(hits) = search_ready(shared, persona, &vector, k, wait, accept) else { return Vec::new() };
    SEARCH_SECONDS.get([]).record(started.elapsed().as_secs_f64());
    hits
}

/// Searches `persona`'s loaded index; `None` if it is not loaded, or if `wait` is false and a
/// writer holds it or waits for it (another persona's writer never does).
fn search_ready(
    shared: &Shared,
    persona: &str,
    vector: &[f32],
    k: usize,
    wait: bool,
    accept: impl Fn(&Meta) -> bool,
) -> Option<Vec<(i64, f32)>> {
    let index = shared.ready(persona)?;
    let index = if wait { index.read() } else { index.try_read()? };
    Some(index.index.search(vector, k, |id| index.meta.get(&id).is_some_and(&accept)))
}

/// `rows` in the order of `hits`, with their similarity (a row that is gone is skipped).
fn in_hit_order(hits: &[(i64, f32)], rows: Vec<MemoryRow>) -> Vec<(MemoryRow, f32)> {
    let mut rows: HashMap<i64, MemoryRow> = rows.into_iter().map(|row| (row.id, row)).collect();
    hits.iter().filter_map(|(id, similarity)| Some((rows.remove(id)?, *similarity))).collect()
}

/// Recall by meaning: posts, facts and trades, and replies and mentions of public platforms, outside the
/// conversation being answered (it is in the prompt already). Busy (an index being built): recall
/// goes on without, rather than block a worker thread. The ids only: [`recall`] reads the rows
/// with the rest of the recollection.
async fn relevant_ids(
    db: &Db,
    shared: &Shared,
    directory: &Directory,
    (persona, query, k): (&str, &str, usize),
    exclude_conversation: Option<u64>,
) -> Vec<(i64, f32)> {
    let accept = |meta: &Meta| {
        let allowed = match meta.kind {
            MemoryKind::Post | MemoryKind::Fact | MemoryKind::Trade => true,
            MemoryKind::Reply | MemoryKind::Inbound => meta.public,
        };
        allowed && Some(meta.conversation) != exclude_conversation
    };
    similar_ids(db, shared, directory, (persona, query, k), RECALL_EMBED_TIMEOUT_MS, false, accept).await
}

/// What a `Recall` asks for, read in one query after the search by meaning.
async fn recall(db: &Db, shared: &Shared, directory: &Directory, ask: RecallAsk) -> Recollection {
    let RecallAsk { persona, conversation, query, recent, in_conversation, relevant } = ask;
    let hits = match query.filter(|_| relevant > 0) {
        Some(query) => {
            let exclude = conversation.as_ref().map(|(platform, id)| conversation_key(platform, id));
            relevant_ids(db, shared, directory, (persona.as_str(), query.as_str(), relevant as usize), exclude).await
        }
        None => Vec::new(),
    };
    let ids: Vec<i64> = hits.iter().map(|(id, _)| *id).collect();
    let thread = conversation.as_ref().map(|(platform, id)| (platform.as_str(), id.as_str()));
    let limits = (i64::from(recent), i64::from(in_conversation));
    match db.recall_memories(&persona, limits, thread, &ids).await {
        Ok(recalled) => Recollection {
            recent: recalled.recent,
            conversation: recalled.conversation,
            relevant: in_hit_order(&hits, recalled.by_id).into_iter().map(|(row, _)| row).collect(),
        },
        Err(err) => {
            metrics::counter!(m::STORE_ERRORS, "operation" => "recall").increment(1);
            tracing::warn!(error = %err, "recall failed, generating without memory");
            Recollection::default()
        }
    }
}

/// The fields of [`MemoryMsg::Recall`] but its reply port.
struct RecallAsk {
    persona: String,
    conversation: Option<(String, String)>,
    query: Option<String>,
    recent: u32,
    in_conversation: u32,
    relevant: u32,
}

async fn check(
    shared: &Arc<Shared>,
    directory: &Directory,
    key: &str,
    text: &str,
    threshold: f32,
    window: Duration,
) -> Verdict {
    let Some(vector) = query_vector(shared, directory, text, CHECK_EMBED_TIMEOUT_MS).await else {
        // Without a vector there is nothing to compare with: never block speech on it.
        return Verdict::Unique;
    };
    let window_start = now_ms() - window.as_millis() as i64;
    let mut outputs = shared.outputs.write();
    let outputs = outputs.get_or_insert_with(|| Outputs::empty(shared, vector.len()));
    let started = Instant::now();
    let best = outputs.index.search(&vector, 1, |id| {
        outputs
            .meta
            .get(&id)
            .is_some_and(|output| output.created_at >= window_start && output.key.as_deref() != Some(key))
    });
    SEARCH_SECONDS.get([]).record(started.elapsed().as_secs_f64());
    if let Some((id, similarity)) = best.first().copied().filter(|(_, similarity)| *similarity >= threshold) {
        return Verdict::Duplicate { similarity, of: format!("memory {id}") };
    }
    let id = outputs.next_reservation;
    outputs.next_reservation -= 1;
    if outputs.index.insert(id, &vector).is_ok() {
        outputs.meta.insert(id, Output { created_at: now_ms(), key: Some(key.to_owned()) });
        // The same text checked again for the same draft: the newer reservation stands for both.
        if let Some(earlier) = outputs.reserved.insert(text.to_owned(), id) {
            outputs.remove(earlier);
        }
    }
    OUTPUTS_VECTORS.get([]).set(outputs.index.len() as f64);
    start_graph(shared, &mut outputs.index, || Which::Outputs);
    // Its reply's memory is stored with this vector, however long publishing takes.
    crate::sync::lock(&shared.embeddings).pin(text, vector);
    Verdict::Unique
}

async fn search(
    db: &Db,
    shared: &Shared,
    directory: &Directory,
    (persona, query, k): (&str, &str, usize),
    kind: Option<MemoryKind>,
    since: Option<i64>,
) -> Vec<Hit> {
    let accept =
        |meta: &Meta| kind.is_none_or(|kind| meta.kind == kind) && since.is_none_or(|since| meta.created_at >= since);
    let hits = search_persona(db, shared, directory, (persona, query, k), EMBED_TIMEOUT_MS, true, accept).await;
    hits.into_iter()
        .map(|(row, similarity)| Hit {
            id: row.id,
            kind: row.kind.as_str(),
            platform: row.platform,
            text: row.text,
            created_at: row.created_at,
            similarity,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMENSION: usize = 8;

    fn shared() -> Shared {
        Shared {
            model: "test".to_owned(),
            exact_threshold: 1_000,
            dimension: RwLock::new(Some(DIMENSION)),
            personas: RwLock::new(HashMap::new()),
            outputs: RwLock::new(None),
            embeddings: std::sync::Mutex::new(EmbeddingCache::new(cache::CAPACITY)),
        }
    }

    fn row(id: i64, persona: &str) -> MemoryRow {
        MemoryRow {
            id,
            persona: persona.to_owned(),
            kind: MemoryKind::Inbound,
            platform: "local".to_owned(),
            conversation: None,
            author: "someone".to_owned(),
            text: format!("memory {id}"),
            created_at: 0,
        }
    }

    fn vector(id: i64) -> Vec<f32> {
        (0..DIMENSION).map(|i| if i as i64 == id % DIMENSION as i64 { 1.0 } else { 0.1 }).collect()
    }

    /// Loads `persona` with `ids`, as a first search would.
    fn load(shared: &Shared, persona: &str, ids: std::ops::Range<i64>) -> Arc<RwLock<PersonaIndex>> {
        let mut index = PersonaIndex { index: shared.new_index(DIMENSION), meta: IdMap::default() };
        for id in ids {
            insert_into(&mut index, &row(id, persona), &vector(id));
        }
        let index = Arc::new(RwLock::new(index));
        shared.personas.write().insert(persona.to_owned(), PersonaSlot::Ready(index.clone()));
        index
    }

    /// Ada with memories 1..20 and Bo with 100..120, both loaded; Ada's index is returned.
    fn ada_and_bo() -> (Shared, Arc<RwLock<PersonaIndex>>) {
        let shared = shared();
        let ada = load(&shared, "ada", 1..20);
        load(&shared, "bo", 100..120);
        (shared, ada)
    }

    #[test]
    fn a_persona_whose_index_is_being_written_does_not_hold_up_another_personas_search() {
        let (shared, ada) = ada_and_bo();
        let held = ada.write();
        let bo = search_ready(&shared, "bo", &vector(101), 3, false, |_| true).expect("bo's index is free");
        assert_eq!(bo.first().map(|hit| hit.0 % DIMENSION as i64), Some(101 % DIMENSION as i64));
        assert!(bo.iter().all(|(id, _)| (100..120).contains(id)), "{bo:?}");
        // The persona being written goes without, rather than wait, unless asked to wait.
        assert_eq!(search_ready(&shared, "ada", &vector(1), 3, false, |_| true), None);
        drop(held);
        let ada = search_ready(&shared, "ada", &vector(1), 3, true, |_| true).expect("ada's index is free again");
        assert_eq!(ada.len(), 3);
        assert_eq!(search_ready(&shared, "cy", &vector(1), 3, true, |_| true), None, "cy is not loaded");
    }

    #[test]
    fn rows_for_an_index_held_by_a_writer_go_to_the_blocking_pool_and_the_others_stay_inline() {
        let (shared, ada) = ada_and_bo();
        let held = ada.write();
        assert!(!stays_exact(&shared, &[row(30, "ada")]));
        assert!(!stays_exact(&shared, &[row(130, "bo"), row(30, "ada")]));
        assert!(stays_exact(&shared, &[row(130, "bo")]));
        assert!(stays_exact(&shared, &[row(230, "cy")]), "not loaded: nothing to insert now");
        drop(held);
        assert!(stays_exact(&shared, &[row(30, "ada")]));
    }

    #[test]
    fn index_sizes_are_published_without_waiting_for_a_writer() {
        let (shared, ada) = ada_and_bo();
        let shared = Arc::new(shared);
        let held = ada.write();
        let (answer, answered) = std::sync::mpsc::channel();
        let asking = shared.clone();
        std::thread::spawn(move || answer.send(publish_sizes(&asking)).unwrap());
        let published = answered.recv_timeout(Duration::from_secs(10)).expect("answered while ada's index is held");
        assert_eq!(published, None, "nothing is published while a writer holds an index: it publishes when done");
        drop(held);
        let (vectors, bytes) = publish_sizes(&shared).expect("published once the writer is done");
        assert_eq!(vectors, 19 + 20, "ada's and bo's memories");
        assert!(bytes > 0);
    }

    #[test]
    fn stored_vectors_reach_a_loaded_persona_and_wait_for_a_loading_one() {
        let shared = Arc::new(shared());
        let ada = load(&shared, "ada", 1..5);
        shared.personas.write().insert("bo".to_owned(), PersonaSlot::Loading(Vec::new()));
        add(&shared, &row(9, "ada"), &vector(9), i64::MAX);
        add(&shared, &row(109, "bo"), &vector(109), i64::MAX);
        add(&shared, &row(209, "cy"), &vector(209), i64::MAX);
        assert_eq!(ada.read().index.len(), 5);
        assert!(ada.read().meta.contains_key(&9));
        match shared.personas.read().get("bo") {
            Some(PersonaSlot::Loading(waiting)) => {
                assert_eq!(waiting.iter().map(|(row, _)| row.id).collect::<Vec<_>>(), [109])
            }
            _ => panic!("bo is still loading"),
        }
        assert!(shared.personas.read().get("cy").is_none(), "an unloaded persona's vector waits in the store");
    }
}
