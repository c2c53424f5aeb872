//! In-process cosine-similarity search over the memory embeddings of one persona and one
//! embedding model.
//!
//! A [`VectorIndex`] starts *exact*: its vectors sit in one contiguous `Vec<f32>`, with an i8
//! copy beside it (a quarter of the bytes, with a scale and an error bound per row), and a search
//! scores every row on the copy in integer arithmetic, then rescores in f32 the few rows whose
//! bounds say they could reach the best `k` (see [`ExactStore::search`]): the answer is the one a
//! scan of the f32 vectors gives (with AVX2 where the CPU has it). When an insert takes it past
//! its threshold ([`EXACT_THRESHOLD`] by default) it moves its vectors into an HNSW graph
//! ([USearch](https://github.com/unum-cloud/USearch)) and stays approximate from then on, even if
//! removes shrink it again. An index shared behind a lock is made [`deferring_graph`]: its inserts
//! past the threshold stay exact, and its owner builds the graph from a copy of the vectors with
//! the lock released ([`VectorIndex::start_graph`]), then swaps it in with what changed meanwhile.
//!
//! [`deferring_graph`]: VectorIndex::deferring_graph
//!
//! Every vector is normalised on the way in, so cosine similarity is a plain dot product in both
//! modes; results carry the similarity in `[-1, 1]`, best first.
//!
//! Ids are `i64` (memory row ids). One of them, [`i64::MIN`], is taken by the HNSW graph to mark
//! removed slots and is refused.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex, PoisonError};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Up to this many vectors the index searches exactly; one more and it switches to HNSW.
///
/// Measured with `cargo bench --bench memory_index` (384 dimensions, 2-core EPYC VM): an exact
/// top-10 search took 0.28 ms over 10,000 vectors, 0.8 ms (p99 1 ms) over 20,000 and 1.9 ms
/// over 40,000, while the HNSW search takes 0.9–1.3 ms (p99 1.9 ms) from 100,000 to 1,000,000:
/// past 20,000 the exact search was the slower one. Scanning the bfloat16 copy (on a 2-core Xeon
/// VM: 0.38 against 0.55 ms at 10,000, 0.75 against 1.11 at 20,000, 1.47 against 2.51 at
/// 40,000; HNSW 1.0 ms at 100,000) moves the crossing to about 27,000, and AVX2 (on a 2-core
/// EPYC VM: 0.33 against 0.48–0.55 ms at 10,000, 0.65 against 0.95 at 20,000, 1.3 against 2.0 at
/// 40,000) further out still; the threshold stayed, as the graph's inserts (about 1 ms each)
/// and its build (seconds) come with crossing it. The integer scan of an i8 copy that replaced
/// the bfloat16 one (6 December, Intel Xeon) searches 40,000 in 0.82 ms, against 0.95 ms
/// (recall@10 0.979) for the graph of the same 40,000, whose inserts then cost 1.25 ms each; in
/// 18 s runs at 1,000 mentions/s offered, a persona's index growing to 36,000, 756–774 against
/// 454–480 replies/s at 1.79–1.83 against 3.25–3.43 ms of CPU a reply with the threshold at
/// 20,000. So it moved to 40,000: the graph's build at the crossing takes 15.6 s on 2 cores
/// (about 8 at 20,000), once per index, on the blocking pool.
pub const EXACT_THRESHOLD: usize = 40_000;

/// HNSW connectivity: neighbours kept per node on the upper layers (twice that on the base one).
pub const CONNECTIVITY: usize = 16;

/// HNSW candidate-list size while inserting: larger builds a better graph, more slowly.
pub const EXPANSION_ADD: usize = 128;

/// HNSW candidate-list size while searching (at least `k`): larger finds more of the true
/// neighbours, more slowly.
pub const EXPANSION_SEARCH: usize = 128;

/// How many searches may run inside the HNSW graph at once. USearch keeps one scratch context
/// per concurrent operation; further searches wait for a free one rather than fail.
const SEARCH_CONTEXTS: usize = 16;

/// Why a vector or an operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    /// The vector does not have the index's number of dimensions.
    #[error("the vector has {actual} dimensions, the index takes {expected}")]
    WrongDimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        actual: usize,
    },
    /// A component is NaN or infinite.
    #[error("the vector has a NaN or infinite component")]
    NotFinite,
    /// All components are zero: no direction to compare.
    #[error("the vector has a zero norm")]
    ZeroNorm,
    /// The id is reserved by the index (only `i64::MIN`).
    #[error("id {0} is reserved by the vector index")]
    ReservedId(i64),
    /// The HNSW library refused the operation (out of memory, mostly).
    #[error("the HNSW index failed: {0}")]
    Ann(String),
}

/// Wraps an error of the HNSW library (a C++ exception).
fn ann_error(error: impl std::fmt::Display) -> IndexError {
    IndexError::Ann(error.to_string())
}

/// Cosine-similarity search over the vectors of one persona for one embedding model.
///
/// `search` takes `&self`, so any number of searches may run at once (for example behind an
/// `Arc<RwLock<VectorIndex>>` read guard); `insert` and `remove` take `&mut self`.
pub struct VectorIndex {
    dimension: usize,
    threshold: usize,
    /// Whether the insert past the threshold leaves the graph to the owner ([`Self::start_graph`]).
    deferred: bool,
    /// The graph build under way, if any: the ids changed since its copy was taken.
    pending: Option<Box<PendingGraph>>,
    store: Store,
}

/// A graph build started by [`VectorIndex::start_graph`] and not yet finished.
struct PendingGraph {
    token: u64,
    /// Ids inserted, overwritten or removed since the copy (or the last catch-up) was taken.
    changed: Vec<i64>,
}

/// Tells builds apart, so a build is only ever finished into the index that started it.
static GRAPH_BUILDS: AtomicU64 = AtomicU64::new(1);

/// An HNSW graph being built from a copy of an index's vectors, owned by the caller so that the
/// slow part ([`GraphBuild::build`]) runs with no lock on the index held; see
/// [`VectorIndex::start_graph`].
pub struct GraphBuild {
    token: u64,
    dimension: usize,
    /// The copy to build from, until [`GraphBuild::build`] turns it into `graph`.
    copy: Option<(Vec<i64>, Vec<f32>)>,
    graph: Option<AnnStore>,
}

/// How a [`GraphBuild::run`] ended.
#[derive(Debug, PartialEq)]
pub enum GraphOutcome {
    /// The graph is the index's store now; it holds this many vectors.
    Built { vectors: usize },
    /// The index went away, or no longer waits for this build: nothing was swapped in.
    Gone,
    /// The HNSW library failed: the index stays exact and wants a graph again.
    Failed(IndexError),
}

/// Changes to an index left for the swap under its lock ([`GraphBuild::run`]): this few or
/// fewer, and the build stops catching up off the lock. A graph insert costs about 1.25 ms.
pub const GRAPH_CATCH_UP_UNDER_LOCK: usize = 64;

/// What changed in an index since its graph build's copy or last catch-up: the current vectors of
/// the ids inserted or overwritten, and the ids removed.
pub struct GraphChanges {
    ids: Vec<i64>,
    vectors: Vec<f32>,
    removed: Vec<i64>,
}

/// Where the vectors live: first exact, then (past the threshold, for good) the HNSW graph.
enum Store {
    Exact(ExactStore),
    Ann(AnnStore),
}

/// Vectors in one contiguous buffer, row `i` belonging to `ids[i]`.
#[derive(Default)]
struct ExactStore {
    ids: Vec<i64>,
    vectors: Vec<f32>,
    /// `vectors` in i8 ([`code_row`]), row for row: what a search scans first.
    codes: Vec<i8>,
    /// Per row, what its codes are multiplied by to give the vector back.
    scales: Vec<f32>,
    /// Per row, how far `scale × codes` is from the vector (its Euclidean length, rounded up).
    residuals: Vec<f32>,
    rows: HashMap<i64, usize>,
}

/// The HNSW graph (which holds its own copy of the vectors) and the gate that keeps concurrent
/// searches within its scratch contexts.
struct AnnStore {
    index: Index,
    contexts: ContextGate,
}

impl VectorIndex {
    /// An empty index for vectors of `dimension` components, exact up to [`EXACT_THRESHOLD`]
    /// vectors.
    pub fn new(dimension: usize) -> Self {
        Self::with_threshold(dimension, EXACT_THRESHOLD)
    }

    /// An empty index that stays exact up to `threshold` vectors (tests use a small one;
    /// `usize::MAX` keeps it exact for good, as a reference).
    pub fn with_threshold(dimension: usize, threshold: usize) -> Self {
        VectorIndex { dimension, threshold, deferred: false, pending: None, store: Store::Exact(ExactStore::default()) }
    }

    /// This index, with its inserts past the threshold left exact (a copy each) until its owner
    /// moves the vectors into a graph: [`wants_graph`](Self::wants_graph) says when,
    /// [`start_graph`](Self::start_graph) takes the copy to build from (under the owner's lock),
    /// [`GraphBuild::build`] builds it (without), and [`finish_graph`](Self::finish_graph) swaps
    /// it in (under the lock again). Searches stay exact, and inserts cheap, meanwhile.
    pub fn deferring_graph(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Adds (or replaces) the vector of memory `id`. Vectors are normalised here; a vector of the
    /// wrong dimension or with a zero/NaN norm is refused with an error (never a panic).
    ///
    /// The insert that takes the index past its threshold builds the HNSW graph from all the
    /// vectors, on every core (about 16 s at the default threshold on 2 cores), unless the index
    /// is [deferring](Self::deferring_graph): then it stays exact until its owner moves it. If the HNSW
    /// library fails (out of memory), the vector of `id` may be gone; if it fails to build the
    /// graph, the index stays exact, keeps the vector, and tries again at the next insert.
    pub fn insert(&mut self, id: i64, vector: &[f32]) -> Result<(), IndexError> {
        let mut normalized = Vec::with_capacity(self.dimension);
        normalize_into(id, vector, self.dimension, &mut normalized)?;
        if let Some(pending) = &mut self.pending {
            pending.changed.push(id);
        }
        match &mut self.store {
            Store::Exact(_) => self.insert_exact(&[id], &normalized),
            Store::Ann(ann) => ann.insert(id, &normalized),
        }
    }

    /// Adds (or replaces) many vectors, as [`insert`](Self::insert) would one after the other
    /// (a later vector of the same id wins), but adding to the HNSW graph from every core: the
    /// way to load an index from the store. Stops at the first refused vector and returns its
    /// error; the vectors before it are in.
    pub fn extend<'a>(&mut self, items: impl IntoIterator<Item = (i64, &'a [f32])>) -> Result<(), IndexError> {
        const BATCH: usize = 65_536;
        let mut items = items.into_iter();
        loop {
            let mut ids = Vec::new();
            let mut vectors = Vec::new();
            let mut refused = None;
            for (id, vector) in items.by_ref().take(BATCH) {
                match normalize_into(id, vector, self.dimension, &mut vectors) {
                    Ok(()) => ids.push(id),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            let done = ids.len() < BATCH;
            if let Some(pending) = &mut self.pending {
                pending.changed.extend_from_slice(&ids);
            }
            match &mut self.store {
                Store::Exact(_) => self.insert_exact(&ids, &vectors)?,
                Store::Ann(ann) => ann.extend(&ids, &vectors)?,
            }
            if let Some(e) = refused {
                return Err(e);
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Stores normalised vectors in the exact store, then moves everything to a new HNSW graph
    /// if that takes it past the threshold.
    fn insert_exact(&mut self, ids: &[i64], vectors: &[f32]) -> Result<(), IndexError> {
        let Store::Exact(exact) = &mut self.store else {
            return Err(IndexError::Ann("the index is no longer exact".into()));
        };
        // A batch that may take the store past the threshold (a large load) skips the i8 copy of
        // its rows: the graph will not need it. If the store stays exact after all (ids replaced
        // rather than added, or the graph failed to build), the copy is made whole. A deferring
        // index goes on searching exactly until its owner builds the graph: it keeps the copy.
        let crossing = !self.deferred && exact.ids.len() + ids.len() > self.threshold;
        for (row, &id) in ids.iter().enumerate() {
            exact.insert(id, &vectors[row * self.dimension..(row + 1) * self.dimension], !crossing);
        }
        if !self.deferred && exact.ids.len() > self.threshold {
            match AnnStore::build(self.dimension, &exact.ids, &exact.vectors) {
                Ok(ann) => {
                    self.store = Store::Ann(ann);
                    return Ok(());
                }
                Err(err) => {
                    exact.recode();
                    return Err(err);
                }
            }
        }
        if crossing {
            exact.recode();
        }
        Ok(())
    }

    /// Removes the vector of memory `id`; `false` if there was none.
    pub fn remove(&mut self, id: i64) -> bool {
        let removed = match &mut self.store {
            Store::Exact(exact) => exact.remove(id),
            Store::Ann(ann) => ann.remove(id),
        };
        if let (true, Some(pending)) = (removed, &mut self.pending) {
            pending.changed.push(id);
        }
        removed
    }

    /// Whether this [deferring](Self::deferring_graph) index is past its threshold, still exact,
    /// with no graph build under way: its owner should [start one](Self::start_graph).
    pub fn wants_graph(&self) -> bool {
        self.deferred && self.pending.is_none() && self.is_exact() && self.len() > self.threshold
    }

    /// Starts moving the vectors into an HNSW graph if [`wants_graph`](Self::wants_graph): takes
    /// a copy of them (a memory copy, under whatever lock guards the index) and from then on
    /// records which ids change. The caller builds the graph from the copy with no lock held
    /// ([`GraphBuild::build`], seconds), may catch it up with what changed meanwhile
    /// ([`graph_changes`](Self::graph_changes), then [`GraphBuild::catch_up`] without the lock),
    /// and swaps it in with [`finish_graph`](Self::finish_graph), or gives up with
    /// [`abandon_graph`](Self::abandon_graph).
    pub fn start_graph(&mut self) -> Option<GraphBuild> {
        if !self.wants_graph() {
            return None;
        }
        let Store::Exact(exact) = &self.store else { return None };
        let token = GRAPH_BUILDS.fetch_add(1, AtomicOrdering::Relaxed);
        self.pending = Some(Box::new(PendingGraph { token, changed: Vec::new() }));
        let copy = (exact.ids.clone(), exact.vectors.clone());
        Some(GraphBuild { token, dimension: self.dimension, copy: Some(copy), graph: None })
    }

    /// What changed since `build`'s copy or last catch-up (and from now on, what changes after
    /// this call); `None` if `build` is not this index's build under way (another index's, or
    /// finished or abandoned since).
    pub fn graph_changes(&mut self, build: &GraphBuild) -> Option<GraphChanges> {
        let pending = self.pending.as_mut().filter(|pending| pending.token == build.token)?;
        let mut changed = std::mem::take(&mut pending.changed);
        changed.sort_unstable();
        changed.dedup();
        let Store::Exact(exact) = &self.store else { return None };
        let mut changes = GraphChanges { ids: Vec::new(), vectors: Vec::new(), removed: Vec::new() };
        for id in changed {
            match exact.rows.get(&id) {
                Some(&row) => {
                    changes.ids.push(id);
                    changes.vectors.extend_from_slice(&exact.vectors[row * self.dimension..(row + 1) * self.dimension]);
                }
                None => changes.removed.push(id),
            }
        }
        Some(changes)
    }

    /// Catches `build` up with the last changes (building it first if that was not done) and
    /// makes its graph this index's store: from now on searches are approximate and the exact
    /// vectors are freed. Returns `Ok(false)` (and leaves the index as it is) if `build` is not
    /// this index's build under way. If the HNSW library fails, the index stays exact and
    /// [wants a graph](Self::wants_graph) again.
    pub fn finish_graph(&mut self, mut build: GraphBuild) -> Result<bool, IndexError> {
        let Some(changes) = self.graph_changes(&build) else { return Ok(false) };
        self.pending = None;
        build.build()?;
        build.catch_up(changes)?;
        if let Some(graph) = build.graph.take() {
            self.store = Store::Ann(graph);
        }
        Ok(true)
    }

    /// Gives up `build` (its graph failed): the index stays exact, stops recording changes and
    /// [wants a graph](Self::wants_graph) again. Nothing happens if `build` is not its build.
    pub fn abandon_graph(&mut self, build: &GraphBuild) {
        if self.pending.as_ref().is_some_and(|pending| pending.token == build.token) {
            self.pending = None;
        }
    }

    /// Builds and swaps in the graph of a [deferring](Self::deferring_graph) index past its
    /// threshold right here, for an index the caller holds alone (being loaded, say). Does
    /// nothing if it does not [want a graph](Self::wants_graph).
    pub fn build_graph_now(&mut self) -> Result<(), IndexError> {
        match self.start_graph() {
            Some(build) => self.finish_graph(build).map(drop),
            None => Ok(()),
        }
    }

    /// The `k` most similar vectors among those `filter` accepts, best first, as (id, cosine
    /// similarity in [-1, 1]). `filter` is applied during the search (not by trimming a top-k
    /// afterwards), so a selective filter still returns k results when k exist.
    ///
    /// A query of the wrong dimension or with a zero/NaN norm matches nothing. Exact below the
    /// threshold; approximate above it (recall@10 ≥ 0.95, see the benchmark). The HNSW search
    /// walks the graph until it has met `k` accepted vectors, so a selective filter costs more:
    /// at 100,000 vectors, about 1 ms unfiltered, 9 ms when 1 vector in 10 is accepted, 45 ms
    /// for 1 in 100 and 80 ms (the whole graph) for 1 in 1,000 or fewer. `filter` must not
    /// panic (it is called from C++, and a panic there aborts).
    pub fn search(&self, query: &[f32], k: usize, filter: impl Fn(i64) -> bool) -> Vec<(i64, f32)> {
        let k = k.min(self.len());
        if k == 0 {
            return Vec::new();
        }
        let mut normalized = Vec::with_capacity(self.dimension);
        if normalize_into(0, query, self.dimension, &mut normalized).is_err() {
            return Vec::new();
        }
        let query = normalized.as_slice();
        match &self.store {
            Store::Exact(exact) => exact.search(query, k, filter),
            Store::Ann(ann) => ann.search(query, k, filter),
        }
    }

    /// How many vectors the index holds (removed ones excluded).
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Exact(exact) => exact.ids.len(),
            Store::Ann(ann) => ann.index.size(),
        }
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of components of every vector.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Whether `more` inserts keep the index exact: each is a copy into its vectors, with no graph
    /// to build or update (always, while a [deferring](Self::deferring_graph) index is exact).
    pub fn stays_exact_with(&self, more: usize) -> bool {
        self.is_exact() && (self.deferred || self.len().saturating_add(more) <= self.threshold)
    }

    /// Whether searches are exact (`false` once the index has switched to HNSW).
    pub fn is_exact(&self) -> bool {
        matches!(self.store, Store::Exact(_))
    }

    /// Approximate bytes held (vectors + graph), for the index-size metric.
    pub fn memory_bytes(&self) -> usize {
        match &self.store {
            Store::Exact(exact) => exact.memory_bytes(),
            Store::Ann(ann) => ann.memory_bytes(),
        }
    }
}

impl GraphBuild {
    /// Builds the graph from the copy [`VectorIndex::start_graph`] took, adding from every core
    /// (about 16 s for 40,000 vectors of 384 on 2 cores), and frees the copy. Holds no lock: the
    /// index goes on being searched and changed meanwhile.
    pub fn build(&mut self) -> Result<(), IndexError> {
        let Some((ids, vectors)) = self.copy.take() else { return Ok(()) };
        self.graph = Some(AnnStore::build(self.dimension, &ids, &vectors)?);
        Ok(())
    }

    /// Runs this build to its end, with the index's lock held only inside `locked`, which runs
    /// the closure it is given on the index under its lock and returns `false` if the index is
    /// gone. Builds the graph (seconds, no lock), catches it up in rounds with what changed
    /// meanwhile (each round's changes taken under the lock, added to the graph without it)
    /// until a round brings [`GRAPH_CATCH_UP_UNDER_LOCK`] or fewer, then swaps it in under the
    /// lock with the last changes ([`VectorIndex::finish_graph`]); on a failure it gives the
    /// build up ([`VectorIndex::abandon_graph`]). While vectors arrive faster than the graph
    /// takes them (2 cores add about 1,000 a second at 40,000), the rounds go on and the index
    /// stays exact: swapping in a graph that far behind would hold the lock for seconds, and a
    /// graph could not keep up with those inserts either.
    pub fn run(mut self, mut locked: impl FnMut(&mut dyn FnMut(&mut VectorIndex)) -> bool) -> GraphOutcome {
        let caught_up = self.build().and_then(|()| {
            loop {
                let mut changes = None;
                if !locked(&mut |index| changes = index.graph_changes(&self)) {
                    break;
                }
                let Some(changes) = changes else { break };
                let last = changes.len() <= GRAPH_CATCH_UP_UNDER_LOCK;
                self.catch_up(changes)?;
                if last {
                    break;
                }
            }
            Ok(())
        });
        if let Err(err) = caught_up {
            locked(&mut |index| index.abandon_graph(&self));
            return GraphOutcome::Failed(err);
        }
        let mut build = Some(self);
        let mut outcome = GraphOutcome::Gone;
        locked(&mut |index| {
            if let Some(build) = build.take() {
                outcome = match index.finish_graph(build) {
                    Ok(true) => GraphOutcome::Built { vectors: index.len() },
                    Ok(false) => GraphOutcome::Gone,
                    Err(err) => GraphOutcome::Failed(err),
                };
            }
        });
        outcome
    }

    /// Applies changes taken from the index ([`VectorIndex::graph_changes`]) to the built graph:
    /// removals, then the current vectors of the ids inserted or overwritten.
    pub fn catch_up(&mut self, changes: GraphChanges) -> Result<(), IndexError> {
        let Some(graph) = &mut self.graph else {
            return Err(IndexError::Ann("the graph is not built yet".into()));
        };
        for id in changes.removed {
            graph.remove(id);
        }
        graph.extend(&changes.ids, &changes.vectors)
    }
}

impl GraphChanges {
    /// How many ids changed.
    pub fn len(&self) -> usize {
        self.ids.len() + self.removed.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dimension", &self.dimension)
            .field("len", &self.len())
            .field("exact", &self.is_exact())
            .finish_non_exhaustive()
    }
}

impl ExactStore {
    /// Stores an already normalised vector, overwriting the row of `id` if it has one, and its
    /// i8 copy unless `coded` is false (then [`ExactStore::recode`] must follow).
    fn insert(&mut self, id: i64, vector: &[f32], coded: bool) {
        let dimension = vector.len();
        if let Some(&row) = self.rows.get(&id) {
            self.vectors[row * dimension..(row + 1) * dimension].copy_from_slice(vector);
            if coded {
                let (scale, residual) = code_row(vector, &mut self.codes[row * dimension..(row + 1) * dimension]);
                self.scales[row] = scale;
                self.residuals[row] = residual;
            }
        } else {
            self.rows.insert(id, self.ids.len());
            self.ids.push(id);
            self.vectors.extend_from_slice(vector);
            if coded {
                self.push_codes(vector);
            }
        }
    }

    /// Appends the i8 copy of one more row.
    fn push_codes(&mut self, vector: &[f32]) {
        let start = self.codes.len();
        self.codes.resize(start + vector.len(), 0);
        let (scale, residual) = code_row(vector, &mut self.codes[start..]);
        self.scales.push(scale);
        self.residuals.push(residual);
    }

    /// Makes the i8 copy again from every vector.
    fn recode(&mut self) {
        self.codes.clear();
        self.scales.clear();
        self.residuals.clear();
        if let Some(dimension) = self.vectors.len().checked_div(self.ids.len()) {
            let vectors = std::mem::take(&mut self.vectors);
            for vector in vectors.chunks_exact(dimension) {
                self.push_codes(vector);
            }
            self.vectors = vectors;
        }
    }

    /// Drops the row of `id`, moving the last row into its place.
    fn remove(&mut self, id: i64) -> bool {
        let Some(row) = self.rows.remove(&id) else {
            return false;
        };
        let dimension = self.vectors.len() / self.ids.len();
        let last = self.ids.len() - 1;
        if row != last {
            let moved = self.ids[last];
            self.ids[row] = moved;
            self.rows.insert(moved, row);
            self.vectors.copy_within(last * dimension..(last + 1) * dimension, row * dimension);
            self.codes.copy_within(last * dimension..(last + 1) * dimension, row * dimension);
            self.scales[row] = self.scales[last];
            self.residuals[row] = self.residuals[last];
        }
        self.ids.truncate(last);
        self.vectors.truncate(last * dimension);
        self.codes.truncate(last * dimension);
        self.scales.truncate(last);
        self.residuals.truncate(last);
        true
    }

    /// The `k` best accepted rows for the (normalised) query by f32 score: every row scored on the
    /// i8 copy, then the rows that could make the best `k` rescored in f32, in row order, as a
    /// scan of every row in f32 would keep them (ties included: a row that could not make the
    /// best `k` only ever held a place a better row then took).
    ///
    /// The query is coded too, in i16 ([`CodedQuery`]), so a row's coarse score is one integer
    /// dot product times the two scales. With `q = t·d + e` (the query, its scale, codes and
    /// residual) and `v = s·c + r` (a row's), `q·v − s·t·(d·c) = q·r + s·(e·c)`, and by
    /// Cauchy–Schwarz on unit vectors `|q·r| ≤ ‖r‖` and `|s·(e·c)| ≤ ‖e‖·‖s·c‖ ≤ ‖e‖·(1 + ‖r‖)`;
    /// [`float_slack`] covers what the float arithmetic of both scores rounds. So each row's f32
    /// score lies within its bound of its coarse score, and a row whose upper end is below the
    /// `k`-th best lower end among accepted rows cannot be among the best `k`.
    fn search(&self, query: &[f32], k: usize, filter: impl Fn(i64) -> bool) -> Vec<(i64, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let dimension = query.len();
        let query_codes = CodedQuery::new(query);
        let (lower_best, reachable) = self.coarse_pass(&query_codes, k, &filter);
        let bar = lower_best.kth();
        let mut best = TopK::new(k);
        for (row, upper) in reachable {
            if upper < bar {
                continue;
            }
            let id = self.ids[row];
            let score = dot(query, &self.vectors[row * dimension..(row + 1) * dimension]);
            if best.admits(score) && filter(id) {
                best.offer(id, score);
            }
        }
        best.into_sorted().into_iter().map(|(id, similarity)| (id, similarity.clamp(-1.0, 1.0))).collect()
    }

    /// The first pass of [`ExactStore::search`] (`k` at least 1): the best `k` accepted rows by
    /// the lower end of their coarse scores, and the rows whose upper end reached the `k`-th best
    /// lower end at the time, with that upper end. One loop compiled for AVX2 where the CPU has
    /// it, with the integer dot product inlined: chosen once a search, not once a row.
    fn coarse_pass(&self, query: &CodedQuery, k: usize, filter: &impl Fn(i64) -> bool) -> (TopK, Vec<(usize, f32)>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2 (checked just above).
            return unsafe { avx2::coarse_pass(self, query, k, filter) };
        }
        self.coarse_pass_by(query, k, filter)
    }

    /// [`ExactStore::coarse_pass`]'s loop, inlined where it is compiled (as [`dot_codes_by`]).
    #[inline(always)]
    fn coarse_pass_by(&self, query: &CodedQuery, k: usize, filter: &impl Fn(i64) -> bool) -> (TopK, Vec<(usize, f32)>) {
        let dimension = query.codes.len();
        let slack = float_slack(dimension);
        let mut lower_best = TopK::new(k);
        // `lower_best.kth()`, kept up to date as rows are kept.
        let mut bar = f32::NEG_INFINITY;
        // Rows within reach of the best `k` so far; the bar only rises, so a row left out here
        // is out of reach at the end too.
        let mut reachable = Vec::new();
        let coded = self.codes.chunks_exact(dimension).zip(&self.scales).zip(&self.residuals);
        for (row, (&id, ((codes, &scale), &residual))) in self.ids.iter().zip(coded).enumerate() {
            let estimate = scale * query.scale * dot_codes_by(&query.codes, codes) as f32;
            let bound = residual + query.residual * (1.0 + residual) + slack;
            if estimate + bound >= bar {
                reachable.push((row, estimate + bound));
            }
            // The score first: once `k` are kept, few rows score high enough to be offered, so
            // the filter (a metadata lookup, as dear as the dot product) runs for those few.
            // While fewer than `k` are kept the bar is minus infinity and every row is offered
            // (`TopK::admits`).
            let lower = estimate - bound;
            if lower > bar && filter(id) {
                lower_best.offer(id, lower);
                bar = lower_best.kth();
            }
        }
        (lower_best, reachable)
    }

    /// Bytes held by the buffers and the id-to-row map.
    fn memory_bytes(&self) -> usize {
        // A hashbrown entry is the (key, value) pair plus one control byte.
        self.vectors.capacity() * size_of::<f32>()
            + self.codes.capacity()
            + (self.scales.capacity() + self.residuals.capacity()) * size_of::<f32>()
            + self.ids.capacity() * size_of::<i64>()
            + self.rows.capacity() * (size_of::<(i64, usize)>() + 1)
    }
}

impl AnnStore {
    /// Builds the graph from the rows of an exact store, adding from every core at once.
    fn build(dimension: usize, ids: &[i64], vectors: &[f32]) -> Result<Self, IndexError> {
        let options = IndexOptions {
            dimensions: dimension,
            // Inner product on normalised vectors is the cosine, without the norms.
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let index = Index::new(&options).map_err(ann_error)?;
        index.reserve_capacity_and_threads(ids.len().next_power_of_two(), SEARCH_CONTEXTS).map_err(ann_error)?;
        let rows: Vec<usize> = (0..ids.len()).collect();
        add_in_parallel(&index, dimension, ids, vectors, &rows)?;
        Ok(AnnStore { index, contexts: ContextGate::new(SEARCH_CONTEXTS) })
    }

    /// Adds an already normalised vector, replacing the one `id` had.
    fn insert(&mut self, id: i64, vector: &[f32]) -> Result<(), IndexError> {
        let key = to_key(id);
        if self.index.contains(key) {
            self.index.remove(key).map_err(ann_error)?;
        }
        self.reserve_for(1)?;
        self.index.add(key, vector).map_err(ann_error)
    }

    /// Adds already normalised vectors from every core, replacing those their ids had; of two
    /// vectors with the same id, the later one wins.
    fn extend(&mut self, ids: &[i64], vectors: &[f32]) -> Result<(), IndexError> {
        let mut last = HashMap::with_capacity(ids.len());
        for (row, &id) in ids.iter().enumerate() {
            last.insert(id, row);
        }
        let rows: Vec<usize> = (0..ids.len()).filter(|&row| last.get(&ids[row]) == Some(&row)).collect();
        for &row in &rows {
            let key = to_key(ids[row]);
            if self.index.contains(key) {
                self.index.remove(key).map_err(ann_error)?;
            }
        }
        self.reserve_for(rows.len())?;
        add_in_parallel(&self.index, self.index.dimensions(), ids, vectors, &rows)
    }

    /// The bytes in use on USearch's graph and vector tapes, plus its per-slot lookup tables.
    /// (`Index::memory_usage` also counts the untouched tail of the last arena it mapped, up
    /// to half again the vectors' size, which is not resident.)
    fn memory_bytes(&self) -> usize {
        let stats = self.index.memory_stats();
        let tapes = stats.graph_allocated.saturating_sub(stats.graph_reserved)
            + stats.vectors_allocated.saturating_sub(stats.vectors_reserved);
        // Per slot: the vector pointer, the key-to-slot hash entry and the node reference.
        tapes + self.index.capacity() * 3 * size_of::<u64>()
    }

    /// Makes room for `more` vectors. A removed slot is reused before a new one is taken, so
    /// this may reserve more than needed, never less (`size` excludes removed slots).
    fn reserve_for(&self, more: usize) -> Result<(), IndexError> {
        let needed = self.index.size() + more;
        if needed > self.index.capacity() {
            let capacity = needed.max(self.index.capacity() * 2).max(1024);
            self.index.reserve_capacity_and_threads(capacity, SEARCH_CONTEXTS).map_err(ann_error)?;
        }
        Ok(())
    }

    /// Removes the vector of `id` (leaving a slot the next insert reuses); `false` if none.
    fn remove(&mut self, id: i64) -> bool {
        id != i64::MIN && self.index.remove(to_key(id)).is_ok_and(|removed| removed > 0)
    }

    /// The graph's `k` best accepted matches for a normalised query, best first.
    fn search(&self, query: &[f32], k: usize, filter: impl Fn(i64) -> bool) -> Vec<(i64, f32)> {
        let _context = self.contexts.acquire();
        // USearch only fails a search for want of memory or of a scratch context (which the gate
        // rules out); an empty answer is the only one this signature can give then.
        let Ok(matches) = self.index.filtered_search(query, k, |key| filter(from_key(key))) else {
            return Vec::new();
        };
        // The inner-product "distance" is 1 - cosine.
        matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &distance)| (from_key(key), (1.0 - distance).clamp(-1.0, 1.0)))
            .collect()
    }
}

/// Adds the given `rows` of (`ids`, `vectors`) to `index`, split over every core (USearch's
/// `add` is thread-safe). The index must have room and scratch contexts for them.
fn add_in_parallel(
    index: &Index,
    dimension: usize,
    ids: &[i64],
    vectors: &[f32],
    rows: &[usize],
) -> Result<(), IndexError> {
    let add = |rows: &[usize]| -> Result<(), IndexError> {
        for &row in rows {
            index.add(to_key(ids[row]), &vectors[row * dimension..(row + 1) * dimension]).map_err(ann_error)?;
        }
        Ok(())
    };
    // A graph insert costs about a millisecond at 40,000 vectors, a thread about 20 µs to start:
    // a build's catch-up rounds (tens to thousands of rows) go faster on every core too.
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get).min(SEARCH_CONTEXTS);
    if threads == 1 || rows.len() < 64 {
        return add(rows);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            rows.chunks(rows.len().div_ceil(threads)).map(|rows| scope.spawn(move || add(rows))).collect();
        workers.into_iter().try_for_each(|worker| {
            worker.join().unwrap_or_else(|_| Err(IndexError::Ann("an insert thread panicked".into())))
        })
    })
}

/// The HNSW key of a memory id. USearch marks removed slots with key `u64::MAX`; this bijection
/// sends `i64::MIN` there (and that id is refused), keeping every other id usable.
fn to_key(id: i64) -> u64 {
    (id as u64) ^ (i64::MAX as u64)
}

/// The memory id of an HNSW key (the inverse of [`to_key`]).
fn from_key(key: u64) -> i64 {
    (key ^ (i64::MAX as u64)) as i64
}

/// Appends `vector` scaled to unit length to `out`, or says why it cannot be (`out` unchanged).
fn normalize_into(id: i64, vector: &[f32], dimension: usize, out: &mut Vec<f32>) -> Result<(), IndexError> {
    if id == i64::MIN {
        return Err(IndexError::ReservedId(id));
    }
    if vector.len() != dimension {
        return Err(IndexError::WrongDimension { expected: dimension, actual: vector.len() });
    }
    if !vector.iter().all(|x| x.is_finite()) {
        return Err(IndexError::NotFinite);
    }
    // In f64 so that neither large components overflow nor tiny ones underflow the norm.
    // A positive norm leaves some component of at least 1/√dimension, so nothing underflows to 0.
    let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(IndexError::ZeroNorm);
    }
    out.extend(vector.iter().map(|&x| (f64::from(x) / norm) as f32));
    Ok(())
}

/// Number of independent partial sums in [`dot`]: enough for the compiler to fill vector
/// registers (4 SSE or 2 AVX registers of f32) without a reassociation it may not do on its own.
const LANES: usize = 16;

/// The dot product of two equally long slices.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2 (checked just above).
        return unsafe { avx2::dot(a, b) };
    }
    dot_by(a, b)
}

/// The dot product of `a` and `b`, written so that LLVM vectorises it.
#[inline(always)]
fn dot_by(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut sums = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    sums.iter().sum::<f32>() + rest
}

/// The largest magnitude of a row's i8 code.
const ROW_CODE_MAX: f32 = 127.0;

/// Codes a normalised vector in i8 into `codes` ([`quantize`] to [`ROW_CODE_MAX`]). Returns the
/// scale and the residual.
fn code_row(vector: &[f32], codes: &mut [i8]) -> (f32, f32) {
    quantize(vector, ROW_CODE_MAX, codes, |code| code as i8)
}

/// Codes `vector` into `codes` as integers of at most `limit` in magnitude: each component over
/// the scale (its largest magnitude over `limit`), rounded to the nearest integer, stored with
/// `cast` (exact: the value is a whole number within `limit`). Returns the scale and the
/// residual `‖vector − scale × codes‖`, computed in f64 and rounded up.
///
/// Each step works on a chunk of components at a time in loops the compiler vectorizes (the
/// largest magnitude in lanes; the division, rounding and clamp of every component); only the
/// residual's sum runs component by component, in order, so the result is the same, bit for bit,
/// as one loop's. One loop took about 45 instructions a component (two rows and a query coded
/// a reply).
fn quantize<T: Default>(vector: &[f32], limit: f32, codes: &mut [T], cast: impl Fn(f32) -> T) -> (f32, f32) {
    const CHUNK: usize = 64;
    let largest = largest_magnitude(vector);
    let scale = largest / limit;
    if scale == 0.0 {
        codes.fill_with(T::default);
        return (0.0, 0.0);
    }
    let mut residual = 0.0f64;
    let mut rounded = [0.0f32; CHUNK];
    for (codes, vector) in codes.chunks_mut(CHUNK).zip(vector.chunks(CHUNK)) {
        let rounded = &mut rounded[..vector.len()];
        round_into(rounded, vector, scale, limit);
        for ((stored, &x), &code) in codes.iter_mut().zip(vector).zip(rounded.iter()) {
            let off = f64::from(x) - f64::from(scale) * f64::from(code);
            residual += off * off;
            *stored = cast(code);
        }
    }
    (scale, round_up(residual.sqrt()))
}

/// Each of `vector` over `scale`, rounded ([`round_half_away_small`]) and clamped to `limit`, into
/// `rounded`, in vector instructions: eight floats at a time where the CPU has AVX2 (chosen at run
/// time), four on x86-64's baseline. Neither path fuses a multiply and an add, so both round
/// alike.
fn round_into(rounded: &mut [f32], vector: &[f32], scale: f32, limit: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2 (checked just above).
        return unsafe { avx2::round_into(rounded, vector, scale, limit) };
    }
    round_into_by(rounded, vector, scale, limit)
}

/// [`round_into`]'s loop, written so that LLVM vectorises it. Each quotient is at most `limit`
/// (under 2¹⁵) in magnitude, give or take a rounding, so [`round_half_away_small`] rounds it as
/// [`f32::round`] would.
#[inline(always)]
fn round_into_by(rounded: &mut [f32], vector: &[f32], scale: f32, limit: f32) {
    for (code, &x) in rounded.iter_mut().zip(vector) {
        *code = round_half_away_small(x / scale).clamp(-limit, limit);
    }
}

/// `x` rounded to the nearest whole number, halves away from zero, as [`f32::round`] (without its
/// call into the C library), for `|x| < 2²³` (NaN gives NaN), in float operations only, which
/// LLVM vectorises: a conversion to an integer it does one float at a time, as Rust's casts
/// saturate (the codes' first rounding, kept in the tests as `round_half_away`, did that).
/// Adding and taking away 2²³ rounds `|x|` to a whole number (halves to even), exactly, as the
/// floats from 2²³ to 2²⁴ are the whole numbers; one less if that went up gives `|x|`'s whole
/// part, and the fraction left is exact, so the comparison with one half is too. The sign is
/// `x`'s, so −0.25 rounds to −0, as [`f32::round`].
#[inline(always)]
fn round_half_away_small(x: f32) -> f32 {
    const TWO_TO_23: f32 = 8_388_608.0;
    let magnitude = x.abs();
    let nearest = (magnitude + TWO_TO_23) - TWO_TO_23;
    let whole = if nearest > magnitude { nearest - 1.0 } else { nearest };
    let rounded = if magnitude - whole >= 0.5 { whole + 1.0 } else { whole };
    rounded.copysign(x)
}

/// The largest `|x|` of `vector` (NaNs left out, as [`f32::max`] does; 0 when empty), found in
/// eight lanes the compiler vectorizes: a maximum is the same in any order.
fn largest_magnitude(vector: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0.0f32; LANES];
    let mut chunks = vector.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x.abs());
        }
    }
    let largest = chunks.remainder().iter().fold(0.0f32, |largest, x| largest.max(x.abs()));
    lanes.iter().fold(largest, |largest, &lane| largest.max(lane))
}

/// `x` rounded to the nearest whole number, halves away from zero: [`f32::round`] for `|x| < 2³¹`,
/// without its call into the C library (x86-64's baseline has no rounding instruction; the call
/// was a fiftieth of the instructions of a reply, two per component coded). `x − trunc(x)` is
/// exact, so the comparison with one half is too; the sign is kept, so −0.25 rounds to −0.
/// The codes rounded with it until [`round_half_away_small`], which the tests check against it
/// (and it against [`f32::round`]).
#[cfg(test)]
fn round_half_away(x: f32) -> f32 {
    let whole = (x as i32 as f32).copysign(x);
    let fraction = x - whole;
    if fraction >= 0.5 {
        whole + 1.0
    } else if fraction <= -0.5 {
        whole - 1.0
    } else {
        whole
    }
}

/// `x` as an f32 no smaller than it.
fn round_up(x: f64) -> f32 {
    let rounded = x as f32;
    if f64::from(rounded) < x { rounded.next_up() } else { rounded }
}

/// What the float arithmetic may round, at most, between a row's coarse score and its f32 score
/// ([`dot`], partial sums of at most `dimension` products of unit vectors, each rounded once):
/// `dimension + 8` times f32's epsilon, over twice the usual bound for such sums.
fn float_slack(dimension: usize) -> f32 {
    (dimension as f32 + 8.0) * f32::EPSILON
}

/// A normalised query in i16, for [`dot_codes`] against rows in i8.
struct CodedQuery {
    codes: Vec<i16>,
    scale: f32,
    /// `‖query − scale × codes‖`, rounded up.
    residual: f32,
}

impl CodedQuery {
    /// Codes `query` as finely as keeps [`dot_codes`] within i32: no code larger than 32,767,
    /// nor than `i32::MAX / (127 × len)`, so no partial sum can overflow (up to 16 million
    /// components, far past any embedding model's).
    fn new(query: &[f32]) -> Self {
        let limit =
            (i32::MAX as usize / (ROW_CODE_MAX as usize * query.len().max(1))).clamp(1, i16::MAX as usize) as f32;
        let mut codes = vec![0; query.len()];
        let (scale, residual) = quantize(query, limit, &mut codes, |code| code as i16);
        CodedQuery { codes, scale, residual }
    }
}

/// Number of independent partial sums in [`dot_codes`]. With 32, LLVM pairs neighbouring products
/// into `vpmaddwd` (AVX2) or `pmaddwd` (SSE2); compiled for AVX2 with 16 or 64, the scan was two
/// to three times slower (standalone, Intel Xeon).
const CODE_LANES: usize = 32;

/// The integer dot product of an i16 query and an i8 row. Integer sums are exact, so every path
/// gives the same value; they wrap rather than panic past i32 (which [`CodedQuery`]'s codes rule
/// out). The search inlines [`dot_codes_by`] into its loop ([`ExactStore::coarse_pass`]); the
/// tests check both paths through this.
#[cfg(test)]
fn dot_codes(query: &[i16], row: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2 (checked just above).
        return unsafe { avx2::dot_codes(query, row) };
    }
    dot_codes_by(query, row)
}

/// [`dot_codes`], written so that LLVM vectorises it: as the baseline x86-64 (SSE2) or any other
/// target computes it, and with AVX2 once inlined into a function compiled for it.
#[inline(always)]
fn dot_codes_by(query: &[i16], row: &[i8]) -> i32 {
    let (query_chunks, query_rest) = query.as_chunks::<CODE_LANES>();
    let (row_chunks, row_rest) = row.as_chunks::<CODE_LANES>();
    let mut sums = [0i32; CODE_LANES];
    for (x, y) in query_chunks.iter().zip(row_chunks) {
        for ((sum, &x), &y) in sums.iter_mut().zip(x).zip(y) {
            *sum = sum.wrapping_add(i32::from(x) * i32::from(y));
        }
    }
    let rest =
        query_rest.iter().zip(row_rest).fold(0i32, |sum, (&x, &y)| sum.wrapping_add(i32::from(x) * i32::from(y)));
    sums.iter().fold(rest, |sum, &x| sum.wrapping_add(x))
}

/// The dot products compiled for AVX2, chosen at run time where the CPU has it (x86-64's baseline
/// is SSE2). The f32 sums are the same bit for bit: the [`LANES`] partial sums and their order are
/// the code's, whatever the register width, and without FMA each product is rounded before it is
/// added, as with SSE2. The i8 scan: 16.8 against 29 ns a row of 384 with SSE2 at 20,000 rows
/// (standalone, Intel Xeon; the bfloat16 scan it replaced took 35 with AVX2).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{CodedQuery, ExactStore, TopK, dot_by, round_into_by};

    #[target_feature(enable = "avx2")]
    pub(super) fn round_into(rounded: &mut [f32], vector: &[f32], scale: f32, limit: f32) {
        round_into_by(rounded, vector, scale, limit)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot_by(a, b)
    }

    #[cfg(test)]
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_codes(query: &[i16], row: &[i8]) -> i32 {
        super::dot_codes_by(query, row)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn coarse_pass(
        store: &ExactStore,
        query: &CodedQuery,
        k: usize,
        filter: &impl Fn(i64) -> bool,
    ) -> (TopK, Vec<(usize, f32)>) {
        store.coarse_pass_by(query, k, filter)
    }
}

/// The best `k` (id, score) pairs offered so far, kept in a min-heap on the score.
struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

/// An (id, score) pair ordered so that the heap's top is the *worst* score kept.
struct Scored {
    score: f32,
    id: i64,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl TopK {
    /// An empty selection of the best `k`.
    fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1024)) }
    }

    /// The worst score kept once `k` are kept; minus infinity before.
    fn kth(&self) -> f32 {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => worst.score,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Whether `offer` would keep a pair with this score.
    fn admits(&self, score: f32) -> bool {
        self.heap.len() < self.k || self.heap.peek().is_some_and(|worst| score > worst.score)
    }

    /// Keeps `(id, score)` if it is among the best `k` so far.
    fn offer(&mut self, id: i64, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(Scored { score, id });
        } else if let Some(mut worst) = self.heap.peek_mut()
            && score > worst.score
        {
            *worst = Scored { score, id };
        }
    }

    /// The kept pairs, best first.
    fn into_sorted(self) -> Vec<(i64, f32)> {
        // Ascending in `Scored`'s order is descending in score.
        self.heap.into_sorted_vec().into_iter().map(|s| (s.id, s.score)).collect()
    }
}

/// A counting semaphore over USearch's scratch contexts: a search holds one while it runs.
struct ContextGate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One scratch context, handed back when dropped.
struct ContextPermit<'a> {
    gate: &'a ContextGate,
}

impl ContextGate {
    /// A gate over `contexts` scratch contexts, all free.
    fn new(contexts: usize) -> Self {
        ContextGate { free: Mutex::new(contexts), freed: Condvar::new() }
    }

    /// Waits for a free context and takes it.
    fn acquire(&self) -> ContextPermit<'_> {
        // The counter is consistent whatever a panicking holder was doing, so poison is ignored.
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        ContextPermit { gate: self }
    }
}

impl Drop for ContextPermit<'_> {
    fn drop(&mut self) {
        *self.gate.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.gate.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A standard normal sample (Box–Muller).
    fn gaussian(rng: &mut StdRng) -> f32 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let v: f64 = rng.random();
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// `n` vectors of `dimension` components around `clusters` random centres, like embeddings.
    fn clustered(rng: &mut StdRng, n: usize, dimension: usize, clusters: usize) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| (0..dimension).map(|_| gaussian(rng)).collect()).collect();
        (0..n)
            .map(|_| {
                let centre = &centres[rng.random_range(0..clusters)];
                centre.iter().map(|&c| c + 0.6 * gaussian(rng)).collect()
            })
            .collect()
    }

    fn unit(vector: &[f32]) -> Vec<f64> {
        let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        vector.iter().map(|&x| f64::from(x) / norm).collect()
    }

    /// The true top `k` among the accepted `(id, vector)` pairs, by cosine computed in f64.
    fn brute_force(data: &[(i64, Vec<f32>)], query: &[f32], k: usize, filter: impl Fn(i64) -> bool) -> Vec<(i64, f64)> {
        let query = unit(query);
        let mut scored: Vec<(i64, f64)> = data
            .iter()
            .filter(|(id, _)| filter(*id))
            .map(|(id, v)| (*id, unit(v).iter().zip(&query).map(|(a, b)| a * b).sum()))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }

    fn filled(index: &mut VectorIndex, data: &[(i64, Vec<f32>)]) {
        for (id, vector) in data {
            index.insert(*id, vector).expect("valid vector");
        }
    }

    fn numbered(vectors: Vec<Vec<f32>>) -> Vec<(i64, Vec<f32>)> {
        vectors.into_iter().enumerate().map(|(i, v)| (i as i64 * 3 + 1, v)).collect()
    }

    /// Mean fraction of the true top 10 that the index finds.
    fn recall_at_10(index: &VectorIndex, data: &[(i64, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
        let found: usize = queries
            .iter()
            .map(|q| {
                let truth = brute_force(data, q, 10, |_| true);
                let got = index.search(q, 10, |_| true);
                got.iter().filter(|(id, _)| truth.iter().any(|(t, _)| t == id)).count()
            })
            .sum();
        found as f64 / (queries.len() * 10) as f64
    }

    /// [`quantize`] as one loop, component by component: what it computed before its steps ran
    /// in chunks.
    fn quantize_in_one_loop<T: Default>(
        vector: &[f32],
        limit: f32,
        codes: &mut [T],
        cast: impl Fn(f32) -> T,
    ) -> (f32, f32) {
        let largest = vector.iter().fold(0.0f32, |largest, x| largest.max(x.abs()));
        let scale = largest / limit;
        if scale == 0.0 {
            codes.fill_with(T::default);
            return (0.0, 0.0);
        }
        let mut residual = 0.0f64;
        for (stored, &x) in codes.iter_mut().zip(vector) {
            let code = round_half_away(x / scale).clamp(-limit, limit);
            let off = f64::from(x) - f64::from(scale) * f64::from(code);
            residual += off * off;
            *stored = cast(code);
        }
        (scale, round_up(residual.sqrt()))
    }

    /// The chunked codes, scale and residual are the one loop's, bit for bit: at every length
    /// around the chunks' and lanes' edges, for both code widths, with zeros, minus zeros, NaNs,
    /// infinities, subnormals and halves among the components.
    #[test]
    fn quantizing_in_chunks_is_the_one_loop_bit_for_bit() {
        // The scale and residual, bit for bit; any NaN as one (a NaN component makes the residual
        // NaN either way, and the two paths may carry different NaNs).
        let bits = |(scale, residual): (f32, f32)| {
            let bits = |x: f32| if x.is_nan() { f32::NAN.to_bits() } else { x.to_bits() };
            (bits(scale), bits(residual))
        };
        let mut rng = StdRng::seed_from_u64(11);
        let specials = [0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, 0.5, -0.5, 1.0];
        let mut compared = 0;
        for len in [0, 1, 2, 7, 8, 9, 63, 64, 65, 127, 128, 129, 384, 385, 1000, 1536] {
            for case in 0..24 {
                let mut vector: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                match case % 6 {
                    // Some special components among random ones.
                    1 if len > 0 => {
                        for _ in 0..3 {
                            vector[rng.random_range(0..len)] = specials[rng.random_range(0..specials.len())];
                        }
                    }
                    // All zeros, some minus.
                    2 => vector.iter_mut().for_each(|x| *x = if rng.random_bool(0.5) { -0.0 } else { 0.0 }),
                    // Components on halves of the i8 scale.
                    3 => vector.iter_mut().for_each(|x| *x = rng.random_range(-254..=254) as f32 / 2.0),
                    // One large component, the rest tiny.
                    4 if len > 0 => {
                        vector.iter_mut().for_each(|x| *x *= 1e-30);
                        vector[rng.random_range(0..len)] = 3e38;
                    }
                    // Unit length, as rows and queries are.
                    5 => {
                        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                        if norm > 0.0 {
                            vector.iter_mut().for_each(|x| *x /= norm);
                        }
                    }
                    _ => {}
                }
                let (mut chunked, mut looped) = (vec![0i8; len], vec![0i8; len]);
                let got = quantize(&vector, ROW_CODE_MAX, &mut chunked, |code| code as i8);
                let want = quantize_in_one_loop(&vector, ROW_CODE_MAX, &mut looped, |code| code as i8);
                assert_eq!(bits(got), bits(want), "{len} {case}");
                assert_eq!(chunked, looped, "{len} {case}");
                let limit = 32_767.0;
                let (mut chunked, mut looped) = (vec![0i16; len], vec![0i16; len]);
                let got = quantize(&vector, limit, &mut chunked, |code| code as i16);
                let want = quantize_in_one_loop(&vector, limit, &mut looped, |code| code as i16);
                assert_eq!(bits(got), bits(want), "{len} {case}");
                assert_eq!(chunked, looped, "{len} {case}");
                compared += 1;
            }
        }
        assert_eq!(compared, 16 * 24);
    }

    /// The vectorised rounding is the other's below 2²³: at every whole number and half up to
    /// 2¹⁶, the floats a few steps either side, random values up to 2²³, and minus zero.
    #[test]
    fn rounding_without_integers_is_the_same_below_two_to_the_23() {
        for twice in 0..=2 * 65_536 {
            let at = twice as f32 / 2.0;
            let (mut below, mut above) = (at, at);
            for _ in 0..4 {
                for x in [below, above, -below, -above] {
                    assert_eq!(round_half_away_small(x).to_bits(), round_half_away(x).to_bits(), "{x:e}");
                }
                below = below.next_down();
                above = above.next_up();
            }
        }
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200_000 {
            let x = rng.random_range(-8_388_607.0f32..8_388_607.0);
            assert_eq!(round_half_away_small(x).to_bits(), round_half_away(x).to_bits(), "{x:e}");
            let x = rng.random_range(-2.0f32..2.0);
            assert_eq!(round_half_away_small(x).to_bits(), round_half_away(x).to_bits(), "{x:e}");
        }
        for x in [8_388_607.5f32, -8_388_607.5, 0.499_999_97, -0.499_999_97, 1e-40, -1e-40] {
            assert_eq!(round_half_away_small(x).to_bits(), round_half_away(x).to_bits(), "{x:e}");
        }
        assert!(round_half_away_small(f32::NAN).is_nan());
    }

    /// The codes' rounding is `f32::round`'s: at every whole number and half up to the i16 codes'
    /// limit, the floats a few steps either side of it, and random values.
    #[test]
    fn rounding_halves_away_from_zero_is_f32_round() {
        let mut checked = 0;
        for twice in 0..=2 * 32_768 {
            let at = twice as f32 / 2.0;
            let mut below = at;
            let mut above = at;
            for _ in 0..4 {
                for x in [below, above, -below, -above] {
                    assert_eq!(round_half_away(x).to_bits(), x.round().to_bits(), "{x:e}");
                    checked += 1;
                }
                below = below.next_down();
                above = above.next_up();
            }
        }
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100_000 {
            let x = rng.random_range(-33_000.0f32..33_000.0);
            assert_eq!(round_half_away(x).to_bits(), x.round().to_bits(), "{x:e}");
        }
        assert_eq!(checked, 16 * 65_537);
        assert_eq!(round_half_away(0.499_999_97), 0.0, "where adding a half and truncating is wrong");
        assert!(round_half_away(-0.25).is_sign_negative(), "minus zero, as f32::round");
    }

    #[test]
    fn exact_search_matches_brute_force() {
        let mut rng = StdRng::seed_from_u64(1);
        let data = numbered(clustered(&mut rng, 1_500, 37, 20));
        let mut index = VectorIndex::new(37);
        filled(&mut index, &data);
        assert!(index.is_exact());
        assert_eq!(index.len(), 1_500);
        for query in clustered(&mut rng, 25, 37, 5) {
            let truth = brute_force(&data, &query, 10, |_| true);
            let got = index.search(&query, 10, |_| true);
            assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), truth.iter().map(|r| r.0).collect::<Vec<_>>());
            for ((_, s), (_, t)) in got.iter().zip(&truth) {
                assert!((f64::from(*s) - t).abs() < 1e-5, "{s} vs {t}");
            }
            // Filtered: the best of the rows the filter accepts, however well the others score.
            let even = |id: i64| id % 2 == 0;
            let truth = brute_force(&data, &query, 10, even);
            let got = index.search(&query, 10, even);
            assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), truth.iter().map(|r| r.0).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_stored_vector_is_its_own_best_match() {
        let mut rng = StdRng::seed_from_u64(2);
        let data = numbered(clustered(&mut rng, 300, 16, 10));
        for threshold in [usize::MAX, 50] {
            let mut index = VectorIndex::with_threshold(16, threshold);
            filled(&mut index, &data);
            let (id, vector) = &data[123];
            let scaled: Vec<f32> = vector.iter().map(|x| x * 7.5).collect();
            let best = index.search(&scaled, 1, |_| true);
            assert_eq!(best[0].0, *id);
            assert!((best[0].1 - 1.0).abs() < 1e-5, "similarity {}", best[0].1);
        }
    }

    #[test]
    fn past_the_threshold_recall_at_10_is_at_least_0_95() {
        let mut rng = StdRng::seed_from_u64(3);
        let data = numbered(clustered(&mut rng, 4_000, 64, 40));
        let mut index = VectorIndex::with_threshold(64, 1_000);
        assert!(index.stays_exact_with(1_000) && !index.stays_exact_with(1_001));
        filled(&mut index, &data[..999]);
        assert!(index.stays_exact_with(1) && !index.stays_exact_with(2), "the 1,001st vector builds the graph");
        filled(&mut index, &data[999..1_000]);
        assert!(index.is_exact());
        filled(&mut index, &data[1_000..]);
        assert!(!index.is_exact() && !index.stays_exact_with(0), "HNSW for good");
        assert_eq!(index.len(), 4_000);
        assert!(index.memory_bytes() >= 4_000 * 64 * 4);
        let queries = clustered(&mut rng, 100, 64, 40);
        let recall = recall_at_10(&index, &data, &queries);
        assert!(recall >= 0.95, "recall@10 = {recall}");
    }

    #[test]
    fn similarities_are_cosines_best_first() {
        let mut rng = StdRng::seed_from_u64(4);
        let data = numbered(clustered(&mut rng, 2_000, 24, 10));
        for threshold in [usize::MAX, 100] {
            let mut index = VectorIndex::with_threshold(24, threshold);
            filled(&mut index, &data);
            let query = &clustered(&mut rng, 1, 24, 3)[0];
            let got = index.search(query, 20, |_| true);
            assert_eq!(got.len(), 20);
            assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
            for (id, similarity) in got {
                let vector = &data.iter().find(|(i, _)| *i == id).expect("known id").1;
                let cosine: f64 = unit(vector).iter().zip(unit(query)).map(|(a, b)| a * b).sum();
                assert!((f64::from(similarity) - cosine).abs() < 1e-4, "{similarity} vs {cosine}");
            }
        }
    }

    #[test]
    fn remove_works_in_both_modes() {
        let mut rng = StdRng::seed_from_u64(5);
        let data = numbered(clustered(&mut rng, 1_200, 32, 12));
        for threshold in [usize::MAX, 400] {
            let mut index = VectorIndex::with_threshold(32, threshold);
            filled(&mut index, &data);
            assert_eq!(index.is_exact(), threshold == usize::MAX);
            let removed: Vec<i64> = data.iter().step_by(3).map(|(id, _)| *id).collect();
            for id in &removed {
                assert!(index.remove(*id));
                assert!(!index.remove(*id), "a second remove finds nothing");
            }
            assert!(!index.remove(2), "an id never inserted");
            assert_eq!(index.len(), 1_200 - removed.len());
            let kept: Vec<(i64, Vec<f32>)> = data.iter().filter(|(id, _)| !removed.contains(id)).cloned().collect();
            for (id, vector) in data.iter().step_by(3).take(50) {
                let got = index.search(vector, 10, |_| true);
                assert_eq!(got.len(), 10);
                assert!(got.iter().all(|(g, _)| !removed.contains(g)), "removed id found");
                assert!(got.iter().all(|(g, _)| g != id));
            }
            if threshold == usize::MAX {
                for (_, vector) in kept.iter().take(20) {
                    let truth = brute_force(&kept, vector, 10, |_| true);
                    let got = index.search(vector, 10, |_| true);
                    assert_eq!(
                        got.iter().map(|r| r.0).collect::<Vec<_>>(),
                        truth.iter().map(|r| r.0).collect::<Vec<_>>()
                    );
                }
            }
            // Removed ids come back, and replacing an id keeps one vector for it.
            index.insert(removed[0], &data[0].1).expect("valid vector");
            index.insert(data[1].0, &data[0].1).expect("valid vector");
            assert_eq!(index.len(), 1_200 - removed.len() + 1);
            let got = index.search(&data[0].1, 2, |_| true);
            let mut ids: Vec<i64> = got.iter().map(|r| r.0).collect();
            ids.sort_unstable();
            assert_eq!(ids, vec![removed[0], data[1].0]);
            assert!(got.iter().all(|(_, s)| (s - 1.0).abs() < 1e-5));
        }
    }

    #[test]
    fn removing_everything_empties_the_index() {
        let mut rng = StdRng::seed_from_u64(6);
        let data = numbered(clustered(&mut rng, 300, 8, 4));
        for threshold in [usize::MAX, 100] {
            let mut index = VectorIndex::with_threshold(8, threshold);
            filled(&mut index, &data);
            for (id, _) in &data {
                assert!(index.remove(*id));
            }
            assert!(index.is_empty());
            assert!(index.search(&data[0].1, 5, |_| true).is_empty());
            filled(&mut index, &data[..10]);
            assert_eq!(index.len(), 10);
            assert_eq!(index.search(&data[0].1, 50, |_| true).len(), 10);
        }
    }

    #[test]
    fn the_filter_is_honoured_and_still_returns_k() {
        let mut rng = StdRng::seed_from_u64(7);
        let data: Vec<(i64, Vec<f32>)> =
            clustered(&mut rng, 4_000, 48, 40).into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
        let queries = clustered(&mut rng, 20, 48, 40);
        for threshold in [usize::MAX, 500] {
            let mut index = VectorIndex::with_threshold(48, threshold);
            filled(&mut index, &data);
            for query in &queries {
                let even = index.search(query, 10, |id| id % 2 == 0);
                assert_eq!(even.len(), 10);
                assert!(even.iter().all(|(id, _)| id % 2 == 0));
                // 1 vector in 200 accepted: a top-k trimmed afterwards would come back empty.
                let rare = index.search(query, 10, |id| id % 200 == 7);
                assert_eq!(rare.len(), 10, "threshold {threshold}");
                assert!(rare.iter().all(|(id, _)| id % 200 == 7));
                let truth = brute_force(&data, query, 10, |id| id % 200 == 7);
                let hits = rare.iter().filter(|(id, _)| truth.iter().any(|(t, _)| t == id)).count();
                assert!(hits >= 9, "{hits} of the true filtered top 10");
                // Fewer accepted than k: all of them.
                assert_eq!(index.search(query, 10, |id| id < 3).len(), 3);
                assert!(index.search(query, 10, |_| false).is_empty());
            }
        }
    }

    #[test]
    fn invalid_vectors_are_refused() {
        for threshold in [usize::MAX, 2] {
            let mut index = VectorIndex::with_threshold(4, threshold);
            for id in 0..5 {
                index.insert(id, &[1.0, id as f32, 0.5, -2.0]).expect("valid vector");
            }
            assert_eq!(index.insert(9, &[1.0, 2.0, 3.0]), Err(IndexError::WrongDimension { expected: 4, actual: 3 }));
            assert_eq!(index.insert(9, &[1.0, f32::NAN, 3.0, 4.0]), Err(IndexError::NotFinite));
            assert_eq!(index.insert(9, &[1.0, f32::INFINITY, 3.0, 4.0]), Err(IndexError::NotFinite));
            assert_eq!(index.insert(9, &[0.0; 4]), Err(IndexError::ZeroNorm));
            assert_eq!(index.insert(i64::MIN, &[1.0; 4]), Err(IndexError::ReservedId(i64::MIN)));
            assert!(!index.remove(i64::MIN));
            assert_eq!(index.len(), 5);
            // Extreme but valid vectors are fine.
            index.insert(10, &[f32::MAX, f32::MAX, 0.0, 0.0]).expect("large components");
            index.insert(11, &[f32::MIN_POSITIVE, 0.0, 0.0, 0.0]).expect("tiny components");
            index.insert(i64::MAX, &[0.0, 0.0, 0.0, 1.0]).expect("largest id");
            index.insert(-1, &[0.0, 0.0, 1.0, 0.0]).expect("negative id");
            assert_eq!(index.search(&[0.0, 0.0, 0.0, 3.0], 1, |_| true)[0].0, i64::MAX);
            assert_eq!(index.search(&[0.0, 0.0, 3.0, 0.0], 1, |_| true)[0].0, -1);
            // Bad queries match nothing.
            assert!(index.search(&[1.0, 2.0], 3, |_| true).is_empty());
            assert!(index.search(&[f32::NAN; 4], 3, |_| true).is_empty());
            assert!(index.search(&[0.0; 4], 3, |_| true).is_empty());
            assert!(index.search(&[1.0; 4], 0, |_| true).is_empty());
            assert_eq!(index.search(&[1.0; 4], 100, |_| true).len(), 9);
            assert_eq!(index.search(&[1.0; 4], usize::MAX, |_| true).len(), 9);
        }
    }

    #[test]
    fn searches_run_concurrently_from_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<VectorIndex>();

        let mut rng = StdRng::seed_from_u64(8);
        let data = numbered(clustered(&mut rng, 3_000, 32, 30));
        let queries = clustered(&mut rng, 64, 32, 30);
        for threshold in [usize::MAX, 500] {
            let mut index = VectorIndex::with_threshold(32, threshold);
            filled(&mut index, &data);
            let index = Arc::new(index);
            let expected: Vec<Vec<(i64, f32)>> = queries.iter().map(|q| index.search(q, 10, |_| true)).collect();
            // More threads than USearch has scratch contexts, so some wait for one.
            let threads: Vec<_> = (0..2 * SEARCH_CONTEXTS)
                .map(|t| {
                    let index = Arc::clone(&index);
                    let queries = queries.clone();
                    std::thread::spawn(move || {
                        (0..20)
                            .map(|round| {
                                let q = (t * 7 + round) % queries.len();
                                (q, index.search(&queries[q], 10, |id| id != 1))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for thread in threads {
                for (q, got) in thread.join().expect("search thread") {
                    let want: Vec<i64> = expected[q].iter().map(|r| r.0).filter(|&id| id != 1).collect();
                    assert_eq!(got.len(), 10);
                    assert!(want.iter().all(|id| got.iter().any(|g| g.0 == *id)));
                }
            }
        }
    }

    #[test]
    fn extend_is_insert_on_every_core() {
        let mut rng = StdRng::seed_from_u64(10);
        let data = numbered(clustered(&mut rng, 3_000, 32, 30));
        let queries = clustered(&mut rng, 50, 32, 30);
        for threshold in [usize::MAX, 2_000, 10] {
            // In two calls, so that one crosses the threshold (or starts past it).
            let mut index = VectorIndex::with_threshold(32, threshold);
            index.extend(data[..1_500].iter().map(|(id, v)| (*id, v.as_slice()))).expect("valid vectors");
            index.extend(data[1_500..].iter().map(|(id, v)| (*id, v.as_slice()))).expect("valid vectors");
            assert_eq!(index.len(), 3_000);
            assert_eq!(index.is_exact(), threshold == usize::MAX);
            let recall = recall_at_10(&index, &data, &queries);
            assert!(recall >= 0.95, "recall@10 = {recall}");

            // Replacements, and a later vector of the same id winning over an earlier one.
            let (a, b) = (&data[0], &data[1]);
            let batch = [(a.0, b.1.as_slice()), (2, a.1.as_slice()), (2, b.1.as_slice()), (b.0, a.1.as_slice())];
            index.extend(batch).expect("valid vectors");
            assert_eq!(index.len(), 3_001);
            let like_b = index.search(&b.1, 3, |_| true);
            let mut ids: Vec<i64> = like_b[..2].iter().map(|r| r.0).collect();
            ids.sort_unstable();
            assert_eq!(ids, vec![a.0, 2]);
            assert!(like_b[2].1 < 0.9999);
            let like_a = index.search(&a.1, 2, |_| true);
            assert_eq!(like_a[0].0, b.0);
            assert!(like_a[1].1 < 0.9999);

            // A refused vector stops the batch; the ones before it are in.
            let bad = [0.0f32; 32];
            let batch = [(5, a.1.as_slice()), (8, bad.as_slice()), (11, a.1.as_slice())];
            assert_eq!(index.extend(batch), Err(IndexError::ZeroNorm));
            assert_eq!(index.len(), 3_002);
            assert_eq!(index.search(&a.1, 2, |id| id == 5 || id == 11).len(), 1);
        }
    }

    #[test]
    fn a_zero_dimension_index_refuses_everything() {
        let mut index = VectorIndex::new(0);
        assert_eq!(index.insert(1, &[]), Err(IndexError::ZeroNorm));
        assert_eq!(index.extend([(1, [].as_slice())]), Err(IndexError::ZeroNorm));
        index.extend(std::iter::empty()).expect("nothing to add");
        assert!(index.is_empty());
        assert!(index.search(&[], 3, |_| true).is_empty());
    }

    /// What [`ExactStore::search`] answered before the coarse pass: every row scored in f32, in
    /// row order.
    fn full_f32_scan(index: &VectorIndex, query: &[f32], k: usize, filter: impl Fn(i64) -> bool) -> Vec<(i64, f32)> {
        let Store::Exact(exact) = &index.store else { panic!("an exact index") };
        let mut normalized = Vec::new();
        normalize_into(0, query, index.dimension, &mut normalized).unwrap();
        let mut best = TopK::new(k.min(exact.ids.len()));
        for (&id, row) in exact.ids.iter().zip(exact.vectors.chunks_exact(index.dimension)) {
            let score = dot(&normalized, row);
            if best.admits(score) && filter(id) {
                best.offer(id, score);
            }
        }
        best.into_sorted().into_iter().map(|(id, similarity)| (id, similarity.clamp(-1.0, 1.0))).collect()
    }

    /// The ids [`the_coarse_pass_answers_what_a_full_f32_scan_does`] removes: every 7th row's.
    fn index_has_removed(id: i64) -> bool {
        ((id - 1) / 3) % 7 == 0
    }

    #[test]
    fn the_coarse_pass_answers_what_a_full_f32_scan_does() {
        let mut rng = StdRng::seed_from_u64(21);
        let dimension = 384;
        let mut vectors = clustered(&mut rng, 1_500, dimension, 8);
        // Exact copies and near copies (closer than the i8 rounding), where the coarse scores tie
        // or cross and only the f32 rescoring can order them.
        for n in 0..300 {
            let mut copy = vectors[n * 3].clone();
            if n % 2 == 1 {
                let at = rng.random_range(0..dimension);
                copy[at] += 1e-4 * gaussian(&mut rng);
            }
            vectors.push(copy);
        }
        let mut data = numbered(vectors);
        let mut index = VectorIndex::with_threshold(dimension, usize::MAX);
        filled(&mut index, &data);
        // Rows moved by removals, and rows overwritten in place, keep their copies in step.
        for (id, _) in data.iter().step_by(7) {
            assert!(index.remove(*id));
        }
        data.retain(|(id, _)| !index_has_removed(*id));
        for (id, vector) in data.iter_mut().step_by(11) {
            vector.reverse();
            index.insert(*id, vector).unwrap();
        }
        let mut queries: Vec<Vec<f32>> = data.iter().step_by(173).map(|(_, v)| v.clone()).collect();
        queries.extend(clustered(&mut rng, 10, dimension, 8));
        let filters: [&dyn Fn(i64) -> bool; 3] = [&|_| true, &|id| id % 2 == 0, &|id| id % 97 == 1];
        for query in &queries {
            for filter in filters {
                for k in [1, 3, 10, 50] {
                    assert_eq!(index.search(query, k, filter), full_f32_scan(&index, query, k, filter), "k {k}");
                }
            }
        }
    }

    /// In a few dimensions, thousands of vectors sit closer to one another than the i8 codes can
    /// tell apart, and a coarse score can be off by nearly its whole bound: only rows kept by the
    /// bounds, rescored in f32, give the full scan's order.
    #[test]
    fn in_few_dimensions_the_bounds_still_keep_every_row_that_could_win() {
        let mut rng = StdRng::seed_from_u64(34);
        for dimension in [2, 3, 5] {
            let data = numbered((0..4_000).map(|_| (0..dimension).map(|_| gaussian(&mut rng)).collect()).collect());
            let mut index = VectorIndex::with_threshold(dimension, usize::MAX);
            filled(&mut index, &data);
            for _ in 0..200 {
                let query: Vec<f32> = (0..dimension).map(|_| gaussian(&mut rng)).collect();
                for k in [1, 5, 20] {
                    let full = full_f32_scan(&index, &query, k, |_| true);
                    assert_eq!(index.search(&query, k, |_| true), full, "dimension {dimension}, k {k}");
                }
            }
        }
    }

    #[test]
    fn a_batch_that_might_cross_the_threshold_but_does_not_keeps_the_copy_whole() {
        let mut rng = StdRng::seed_from_u64(8);
        let dimension = 32;
        let mut data = numbered(clustered(&mut rng, 8, dimension, 2));
        let mut index = VectorIndex::with_threshold(dimension, 10);
        filled(&mut index, &data);
        // Five vectors, four of them replacing stored ones: 8 + 5 could pass 10, 9 do not.
        let mut batch: Vec<(i64, Vec<f32>)> =
            data.iter().take(4).map(|(id, v)| (*id, v.iter().rev().copied().collect())).collect();
        batch.push((1_000, clustered(&mut rng, 1, dimension, 1).remove(0)));
        index.extend(batch.iter().map(|(id, v)| (*id, v.as_slice()))).unwrap();
        assert!(index.is_exact());
        data.splice(0..4, batch);
        for (_, query) in &data {
            assert_eq!(index.search(query, 3, |_| true), full_f32_scan(&index, query, 3, |_| true));
        }
    }

    /// `data` as a map, with `changes` applied: `Some` inserts or overwrites, `None` removes.
    fn applied(data: &mut HashMap<i64, Vec<f32>>, index: &mut VectorIndex, changes: Vec<(i64, Option<Vec<f32>>)>) {
        for (id, vector) in changes {
            match vector {
                Some(vector) => {
                    index.insert(id, &vector).unwrap();
                    data.insert(id, vector);
                }
                None => {
                    assert_eq!(index.remove(id), data.remove(&id).is_some());
                }
            }
        }
    }

    #[test]
    fn a_deferring_index_builds_its_graph_off_the_lock_and_keeps_what_changed_meanwhile() {
        fn send_static<T: Send + 'static>() {}
        // The build owns its copy: nothing ties it to the index (or to a lock's guard).
        send_static::<GraphBuild>();
        let dimension = 32;
        let mut rng = StdRng::seed_from_u64(11);
        let mut fresh = clustered(&mut rng, 1_000, dimension, 12).into_iter();
        let mut index = VectorIndex::with_threshold(dimension, 500).deferring_graph();
        let mut data: HashMap<i64, Vec<f32>> = HashMap::new();
        let first: Vec<_> = (0..600).map(|id| (id, fresh.next())).collect();
        applied(&mut data, &mut index, first);
        assert!(index.is_exact() && index.stays_exact_with(1_000), "past the threshold, still exact");
        assert!(index.wants_graph());

        let mut build = index.start_graph().expect("a build");
        assert!(!index.wants_graph() && index.start_graph().is_none(), "one build at a time");
        // While the graph is built: new ids, overwritten ones, removed old and new ones.
        let mut meanwhile: Vec<_> = (600..800).map(|id| (id, fresh.next())).collect();
        meanwhile.extend((0..40).map(|id| (id * 7, fresh.next())));
        meanwhile.extend((0..30).map(|id| (id * 11 + 1, None)));
        meanwhile.extend((0..10).map(|id| (600 + id * 3, None)));
        applied(&mut data, &mut index, meanwhile);
        build.build().unwrap();
        assert!(index.is_exact(), "searched exactly until the swap");
        let changes = index.graph_changes(&build).expect("this index's build");
        // 600..800 (ten of them removed again), 40 overwritten, 30 removed (three of those
        // overwritten first): each changed id once.
        assert_eq!(changes.len(), 200 + 40 + 30 - 3);
        build.catch_up(changes).unwrap();
        // After the catch-up, before the swap.
        let mut late: Vec<_> = (800..850).map(|id| (id, fresh.next())).collect();
        late.extend([(5, None), (610, None), (14, fresh.next())]);
        applied(&mut data, &mut index, late);
        assert_eq!(index.finish_graph(build), Ok(true));
        assert!(!index.is_exact() && !index.wants_graph());
        assert_eq!(index.len(), data.len());

        let data: Vec<(i64, Vec<f32>)> = data.into_iter().collect();
        // Each id is in the graph with its latest vector: a search that accepts that id only walks
        // the graph until it meets it. An HNSW graph may leave a few nodes unreachable, more so
        // after removals and concurrent inserts: 0-4 of these 808 in 150 runs alone, up to 8 (and
        // recall@10 down to 0.97) in 100 runs beside the other memory tests on 2 cores. A missed
        // catch-up round would lose 200, the changes after the catch-up 51.
        let mut unreachable = 0;
        for (id, vector) in &data {
            match index.search(vector, 1, |hit| hit == *id).first() {
                Some((_, similarity)) => assert!(*similarity > 0.999, "{id} has its latest vector: {similarity}"),
                None => unreachable += 1,
            }
        }
        assert!(unreachable <= data.len() / 25, "{unreachable} of {} not found", data.len());
        let gone = [5, 610, 1, 12, 600, 603];
        let everything = index.search(&data[0].1, index.len(), |_| true);
        assert!(everything.iter().all(|(id, _)| !gone.contains(id)), "removed ids stay removed");
        let queries = clustered(&mut rng, 50, dimension, 12);
        let recall = recall_at_10(&index, &data, &queries);
        assert!(recall >= 0.9, "recall@10 = {recall}");
    }

    #[test]
    fn a_graph_build_is_finished_only_into_the_index_that_started_it() {
        let dimension = 16;
        let mut rng = StdRng::seed_from_u64(12);
        let data = numbered(clustered(&mut rng, 60, dimension, 4));
        let mut one = VectorIndex::with_threshold(dimension, 50).deferring_graph();
        let mut other = VectorIndex::with_threshold(dimension, 50).deferring_graph();
        filled(&mut one, &data);
        filled(&mut other, &data);
        let mut build = one.start_graph().unwrap();
        let mut foreign = build_of(&data, dimension);
        foreign.build().unwrap();
        assert_eq!(one.finish_graph(foreign), Ok(false));
        assert!(one.is_exact(), "a build of another index is not swapped in");
        build.build().unwrap();
        assert!(other.graph_changes(&build).is_none());
        other.abandon_graph(&build);
        assert!(other.wants_graph(), "another index's build leaves it alone");
        one.abandon_graph(&build);
        assert!(one.wants_graph(), "abandoned: it wants a graph again");
        assert_eq!(one.finish_graph(build), Ok(false), "an abandoned build is not swapped in");
        assert!(one.is_exact());
        // Finished without a build first: built then, under the caller's lock.
        let unbuilt = one.start_graph().unwrap();
        assert_eq!(one.finish_graph(unbuilt), Ok(true));
        assert!(!one.is_exact() && one.len() == data.len());
        other.build_graph_now().unwrap();
        assert!(!other.is_exact() && other.len() == data.len());
        // A plain index builds at the insert that crosses: nothing to start.
        let mut plain = VectorIndex::with_threshold(dimension, 50);
        filled(&mut plain, &data);
        assert!(!plain.is_exact() && !plain.wants_graph() && plain.start_graph().is_none());
    }

    /// A started (not built) build of a fresh deferring index holding `data`.
    fn build_of(data: &[(i64, Vec<f32>)], dimension: usize) -> GraphBuild {
        let mut index = VectorIndex::with_threshold(dimension, 1).deferring_graph();
        filled(&mut index, data);
        index.start_graph().unwrap()
    }

    /// A row's coarse score as [`ExactStore::search`] makes it, and its bound.
    fn coarse_score(query: &[f32], row: &[f32]) -> (f32, f32) {
        let query_codes = CodedQuery::new(query);
        let mut codes = vec![0; row.len()];
        let (scale, residual) = code_row(row, &mut codes);
        let estimate = scale * query_codes.scale * dot_codes(&query_codes.codes, &codes) as f32;
        (estimate, residual + query_codes.residual * (1.0 + residual) + float_slack(row.len()))
    }

    fn normalized(vector: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        normalize_into(0, vector, vector.len(), &mut out).unwrap();
        out
    }

    #[test]
    fn coded_rows_stay_within_their_residual_and_scores_within_their_bound() {
        let mut rng = StdRng::seed_from_u64(5);
        for dimension in [1, 3, 32, 384, 1536] {
            for case in 0..300 {
                // Dense vectors, and spiky ones (one large component) whose small components code
                // coarsely.
                let draw = |rng: &mut StdRng| -> Vec<f32> {
                    let mut v: Vec<f32> = (0..dimension).map(|_| gaussian(rng)).collect();
                    if case % 3 == 0 {
                        v[rng.random_range(0..dimension)] *= 40.0;
                    }
                    normalized(&v)
                };
                let (a, b) = (draw(&mut rng), draw(&mut rng));
                let mut codes = vec![0; dimension];
                let (scale, residual) = code_row(&b, &mut codes);
                assert!(codes.iter().all(|&c| c.unsigned_abs() <= 127));
                assert!(codes.iter().any(|&c| c.unsigned_abs() == 127), "the largest component takes the full range");
                let off: f64 =
                    b.iter().zip(&codes).map(|(&x, &c)| (f64::from(x) - f64::from(scale) * f64::from(c)).powi(2)).sum();
                assert!(off.sqrt() <= f64::from(residual), "the residual is rounded up");
                // Against another vector, and against itself (the largest products, all of one sign).
                for (query, row) in [(&a, &b), (&a, &a)] {
                    let (estimate, bound) = coarse_score(query, row);
                    assert!(
                        (dot(query, row) - estimate).abs() <= bound,
                        "dimension {dimension}: {} vs {estimate} ± {bound}",
                        dot(query, row)
                    );
                }
            }
        }
    }

    #[test]
    fn query_codes_keep_the_integer_sum_within_i32() {
        for dimension in [384, 4_096, 100_000] {
            // The largest sum there can be: every code at its limit, all of one sign.
            let query = normalized(&vec![1.0; dimension]);
            let coded = CodedQuery::new(&query);
            let row = vec![127i8; dimension];
            let exact: i64 = coded.codes.iter().map(|&c| i64::from(c) * 127).sum();
            assert!(exact <= i64::from(i32::MAX), "dimension {dimension}");
            assert_eq!(i64::from(dot_codes(&coded.codes, &row)), exact);
        }
        // A short query codes as finely as i16 allows.
        let coded = CodedQuery::new(&normalized(&[3.0, -4.0, 0.0, 1.0]));
        assert_eq!(coded.codes.iter().map(|c| c.unsigned_abs()).max(), Some(i16::MAX as u16));
    }

    /// The dot products this CPU runs (AVX2 where it has it) give the portable code's sums, bit
    /// for bit, so the coarse pass and the rescoring answer alike on every x86-64.
    #[test]
    fn the_dispatched_dot_products_give_the_portable_sums() {
        let mut rng = StdRng::seed_from_u64(11);
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 383, 384, 385, 1536] {
            for _ in 0..50 {
                let a: Vec<f32> = (0..len).map(|_| gaussian(&mut rng)).collect();
                let b: Vec<f32> = (0..len).map(|_| gaussian(&mut rng)).collect();
                assert_eq!(dot(&a, &b).to_bits(), portable_dot(&a, &b).to_bits(), "len {len}");
                let query: Vec<i16> = (0..len).map(|_| rng.random()).collect();
                let row: Vec<i8> = (0..len).map(|_| rng.random_range(-127..=127)).collect();
                let naive: i64 = query.iter().zip(&row).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
                assert_eq!(dot_codes(&query, &row), portable_dot_codes(&query, &row), "len {len}");
                assert_eq!(i64::from(dot_codes(&query, &row)), naive, "len {len}");
            }
        }
    }

    /// [`dot`] as the baseline x86-64 (SSE2) or any other target computes it.
    #[inline(never)]
    fn portable_dot(a: &[f32], b: &[f32]) -> f32 {
        dot_by(a, b)
    }

    /// [`dot_codes`] as the baseline x86-64 (SSE2) or any other target computes it.
    #[inline(never)]
    fn portable_dot_codes(query: &[i16], row: &[i8]) -> i32 {
        dot_codes_by(query, row)
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let mut rng = StdRng::seed_from_u64(9);
        for len in [0, 1, 15, 16, 17, 100, 384] {
            let a: Vec<f32> = (0..len).map(|_| gaussian(&mut rng)).collect();
            let b: Vec<f32> = (0..len).map(|_| gaussian(&mut rng)).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn ids_map_to_keys_one_to_one() {
        for id in [0, 1, -1, 42, i64::MAX, i64::MIN + 1] {
            assert_eq!(from_key(to_key(id)), id);
            assert_ne!(to_key(id), u64::MAX);
        }
        assert_eq!(to_key(i64::MIN), u64::MAX);
    }
}
