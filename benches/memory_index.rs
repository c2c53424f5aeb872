//! The memory vector index at scale: insert rate, top-10 search latency, recall@10 against exact
//! search, and resident memory, on synthetic 384-dimensional embeddings. Run with
//! `cargo bench --bench memory_index`; prints a Markdown table and one JSON line.
//!
//! - `CHORUS_BENCH_SIZES`: comma-separated index sizes (default `100000,1000000`).
//! - The vectors are a Gaussian mixture of 4,096 clusters, normalised. Within a cluster the
//!   spread follows a power law over a per-cluster ordering of the dimensions (the few leading
//!   directions carry most of it), as in real sentence embeddings; isotropic noise would make
//!   every neighbour almost equally far and nothing like an embedding model's output.
//! - Queries are held-out vectors drawn from the same clusters; search latency is single-threaded
//!   over 1,000 of them. Recall@10 compares with an exact index (`usize::MAX` threshold) over 300.
//! - The index is built with `extend` (every core), then 5,000 more vectors are inserted one at
//!   a time to time `insert`.
//! - Resident memory is VmRSS from /proc/self/status just before and after building the index
//!   (the generated vectors are already resident then), next to `memory_bytes()` and the raw size
//!   `N × 384 × 4 B`.
//! - A second table times the exact search at small sizes, which sets `EXACT_THRESHOLD`.
//!   `CHORUS_BENCH_EXACT_ONLY=1` prints that table alone (a few seconds), to measure the scan.
//! - A third follows an index across `EXACT_THRESHOLD` behind an `RwLock` (parking_lot's), as
//!   the Memory actor shares its indexes: one thread inserts 500 vectors a second, another
//!   searches as often, once with the graph built inside the insert that crosses (the lock held
//!   throughout) and once built off the lock (`deferring_graph`, `GraphBuild::run`). It reports
//!   the longest insert and search, each including its wait for the lock.
//! - A fourth puts two personas side by side, as the Memory actor holds them: one a graph of
//!   20,000 vectors taking 500 inserts a second, the other an exact index of 5,000 searched 500
//!   times a second the way recall searches (it goes without rather than wait for a writer).
//!   Once with both behind one lock (the map of personas, as before), once with a lock each
//!   (`PersonaSlot::Ready`): how many of the second persona's searches went without.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus::memory::index::{EXACT_THRESHOLD, VectorIndex};
use parking_lot::RwLock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIMENSION: usize = 384;
const CLUSTERS: usize = 4_096;
/// Length of the spread within a cluster relative to the (unit) cluster centre.
const SPREAD: f32 = 0.75;
const K: usize = 10;
const QUERIES: usize = 1_000;
const RECALL_QUERIES: usize = 300;
/// The filtered searches accept one id in this many.
const FILTER_ONE_IN: i64 = 10;
/// Vectors then inserted one at a time into the full index.
const SINGLE_INSERTS: usize = 5_000;
const SEED: u64 = 0x00c0_ffee;
/// Vectors generated per RNG stream (each stream is seeded from its position, so the data does
/// not depend on the number of threads).
const CHUNK: usize = 8_192;

/// The cluster centres and, per cluster, the spread of each dimension.
struct Mixture {
    centres: Vec<f32>,
    spreads: Vec<f32>,
}

impl Mixture {
    fn new(rng: &mut StdRng) -> Self {
        let mut centres = vec![0.0f32; CLUSTERS * DIMENSION];
        for centre in centres.chunks_exact_mut(DIMENSION) {
            fill_gaussian(rng, centre);
            normalise(centre);
        }
        // A power-law spectrum: the i-th strongest direction has standard deviation ∝ 1/√(i+1),
        // scaled so that the expected squared length of the spread is SPREAD².
        let spectrum: Vec<f32> = (0..DIMENSION).map(|i| 1.0 / ((i + 1) as f32).sqrt()).collect();
        let total: f32 = spectrum.iter().map(|s| s * s).sum();
        let spectrum: Vec<f32> = spectrum.iter().map(|s| s * SPREAD / total.sqrt()).collect();
        let mut spreads = Vec::with_capacity(CLUSTERS * DIMENSION);
        let mut order: Vec<usize> = (0..DIMENSION).collect();
        for _ in 0..CLUSTERS {
            // Each cluster spreads along its own directions.
            for i in (1..DIMENSION).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            spreads.extend(order.iter().map(|&o| spectrum[o]));
        }
        Mixture { centres, spreads }
    }

    /// `n` normalised vectors, each near a random cluster centre, from the stream `stream`.
    fn sample(&self, n: usize, stream: u64) -> Vec<f32> {
        let mut out = vec![0.0f32; n * DIMENSION];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunks: Vec<(usize, &mut [f32])> = out.chunks_mut(CHUNK * DIMENSION).enumerate().collect();
        let per_thread = chunks.len().div_ceil(threads).max(1);
        let mut chunks = chunks.into_iter();
        std::thread::scope(|scope| {
            loop {
                let batch: Vec<_> = chunks.by_ref().take(per_thread).collect();
                if batch.is_empty() {
                    break;
                }
                scope.spawn(move || {
                    for (chunk, vectors) in batch {
                        let mut rng = StdRng::seed_from_u64(SEED ^ (stream << 32) ^ chunk as u64);
                        for vector in vectors.chunks_exact_mut(DIMENSION) {
                            let cluster = rng.random_range(0..CLUSTERS);
                            fill_gaussian(&mut rng, vector);
                            let centre = &self.centres[cluster * DIMENSION..][..DIMENSION];
                            let spread = &self.spreads[cluster * DIMENSION..][..DIMENSION];
                            for ((x, c), s) in vector.iter_mut().zip(centre).zip(spread) {
                                *x = c + s * *x;
                            }
                            normalise(vector);
                        }
                    }
                });
            }
        });
        out
    }
}

/// Fills `out` with standard normal samples (Box–Muller, two per pair of uniforms).
fn fill_gaussian(rng: &mut StdRng, out: &mut [f32]) {
    for pair in out.chunks_mut(2) {
        let u: f32 = rng.random_range(f32::EPSILON..1.0);
        let v: f32 = rng.random();
        let r = (-2.0 * u.ln()).sqrt();
        let (sin, cos) = (std::f32::consts::TAU * v).sin_cos();
        pair[0] = r * cos;
        if let Some(second) = pair.get_mut(1) {
            *second = r * sin;
        }
    }
}

fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|x| *x /= norm);
}

/// The process's resident set size in bytes (VmRSS), or 0 where /proc is missing.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

/// Runs `search` on every query, single-threaded; returns the results and (p50, p99) in ms.
fn timed(queries: &[f32], search: impl Fn(&[f32]) -> Vec<(i64, f32)>) -> (Vec<Vec<(i64, f32)>>, f64, f64) {
    for query in queries.chunks_exact(DIMENSION).take(20) {
        std::hint::black_box(search(query));
    }
    let mut latencies = Vec::new();
    let results = queries
        .chunks_exact(DIMENSION)
        .map(|query| {
            let start = Instant::now();
            let result = search(query);
            latencies.push(start.elapsed());
            result
        })
        .collect();
    latencies.sort_unstable();
    (results, percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

/// The exact top-k of each query, over every core.
fn exact_results(exact: &VectorIndex, queries: &[f32], filter: impl Fn(i64) -> bool + Sync) -> Vec<Vec<i64>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queries: Vec<&[f32]> = queries.chunks_exact(DIMENSION).collect();
    let per_thread = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = queries
            .chunks(per_thread)
            .map(|chunk| {
                let filter = &filter;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|q| exact.search(q, K, filter).into_iter().map(|r| r.0).collect())
                        .collect::<Vec<Vec<i64>>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("exact search thread")).collect::<Vec<Vec<i64>>>()
    })
}

fn recall(truth: &[Vec<i64>], found: &[Vec<(i64, f32)>]) -> f64 {
    let hits: usize = truth.iter().zip(found).map(|(t, f)| f.iter().filter(|(id, _)| t.contains(id)).count()).sum();
    let wanted: usize = truth.iter().map(Vec::len).sum();
    hits as f64 / wanted.max(1) as f64
}

struct Row {
    n: usize,
    build_secs: f64,
    inserts_per_sec: f64,
    single_inserts_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    filtered_p50_ms: f64,
    filtered_p99_ms: f64,
    recall: f64,
    filtered_recall: f64,
    rss_delta: usize,
    memory_bytes: usize,
    raw_bytes: usize,
    exact_mean_ms: f64,
}

fn run(mixture: &Mixture, n: usize) -> Row {
    let data = mixture.sample(n, 1);
    let queries = mixture.sample(QUERIES, 2);
    let accepted = |id: i64| id % FILTER_ONE_IN == 0;

    let rss_before = rss_bytes();
    let start = Instant::now();
    let mut index = VectorIndex::new(DIMENSION);
    index.extend(data.chunks_exact(DIMENSION).enumerate().map(|(id, v)| (id as i64, v))).expect("extend");
    let build_secs = start.elapsed().as_secs_f64();
    let rss_delta = rss_bytes().saturating_sub(rss_before);
    let memory_bytes = index.memory_bytes();
    assert_eq!(index.len(), n);

    let (found, p50_ms, p99_ms) = timed(&queries, |q| index.search(q, K, |_| true));
    let (filtered, filtered_p50_ms, filtered_p99_ms) = timed(&queries, |q| index.search(q, K, accepted));
    assert!(found.iter().chain(&filtered).all(|r| r.len() == K), "every search returns k results");
    assert!(filtered.iter().flatten().all(|(id, _)| accepted(*id)), "the filter is honoured");

    // One at a time into the full index, as the Memory actor adds new memories.
    let extra = mixture.sample(SINGLE_INSERTS, 5);
    let start = Instant::now();
    for (i, vector) in extra.chunks_exact(DIMENSION).enumerate() {
        index.insert((n + i) as i64, vector).expect("insert");
    }
    let single_inserts_per_sec = SINGLE_INSERTS as f64 / start.elapsed().as_secs_f64();
    drop(index);

    let mut exact = VectorIndex::with_threshold(DIMENSION, usize::MAX);
    for (id, vector) in data.chunks_exact(DIMENSION).enumerate() {
        exact.insert(id as i64, vector).expect("insert");
    }
    drop(data);
    let sample = &queries[..RECALL_QUERIES * DIMENSION];
    let start = Instant::now();
    let truth = exact_results(&exact, sample, |_| true);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let exact_mean_ms = start.elapsed().as_secs_f64() * 1e3 * threads / RECALL_QUERIES as f64;
    let filtered_truth = exact_results(&exact, sample, accepted);

    Row {
        n,
        build_secs,
        inserts_per_sec: n as f64 / build_secs,
        single_inserts_per_sec,
        p50_ms,
        p99_ms,
        filtered_p50_ms,
        filtered_p99_ms,
        recall: recall(&truth, &found[..RECALL_QUERIES]),
        filtered_recall: recall(&filtered_truth, &filtered[..RECALL_QUERIES]),
        rss_delta,
        memory_bytes,
        raw_bytes: n * DIMENSION * size_of::<f32>(),
        exact_mean_ms,
    }
}

/// Vectors inserted a second, one at a time, while an index crosses its threshold, and searches
/// made a second meanwhile (about a reply's worth of each).
const CROSSING_RATE: u64 = 500;
/// How long the crossing measurement goes on once the index is a graph.
const CROSSING_AFTER: Duration = Duration::from_secs(2);

/// Sleeps until the `n`th of [`CROSSING_RATE`] events a second counted from `started` is due (at
/// once if it is late).
fn pace(started: Instant, n: usize) {
    let due = started + Duration::from_micros(n as u64 * 1_000_000 / CROSSING_RATE);
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
}

/// One index crossing the threshold, see the module docs.
struct Crossing {
    mode: &'static str,
    /// From the insert that crossed to the index being a graph.
    switch_secs: f64,
    inserts: usize,
    insert_p99_ms: f64,
    insert_max_ms: f64,
    /// Searches answered from the crossing to the switch.
    searches_meanwhile: usize,
    search_p99_ms: f64,
    search_max_ms: f64,
}

impl Crossing {
    /// The numbers, as (JSON key, value), in the Markdown table's column order.
    fn cells(&self) -> [(&'static str, String); 7] {
        [
            ("switch_s", format!("{:.2}", self.switch_secs)),
            ("inserts", self.inserts.to_string()),
            ("insert_p99_ms", format!("{:.3}", self.insert_p99_ms)),
            ("insert_max_ms", format!("{:.1}", self.insert_max_ms)),
            ("searches_meanwhile", self.searches_meanwhile.to_string()),
            ("search_p99_ms", format!("{:.3}", self.search_p99_ms)),
            ("search_max_ms", format!("{:.1}", self.search_max_ms)),
        ]
    }
}

/// Fills an index to `EXACT_THRESHOLD` and times inserts and searches through its crossing.
fn crossing(mixture: &Mixture, deferred: bool) -> Crossing {
    // Enough for three minutes of inserts: the graph built off the lock swaps in once it has
    // caught up with them.
    let data = mixture.sample(EXACT_THRESHOLD + 3 * 60 * CROSSING_RATE as usize, 5);
    let queries = mixture.sample(200, 6);
    let mut index = VectorIndex::with_threshold(DIMENSION, EXACT_THRESHOLD);
    if deferred {
        index = index.deferring_graph();
    }
    let mut rows = data.chunks_exact(DIMENSION).enumerate().map(|(id, v)| (id as i64, v));
    index.extend(rows.by_ref().take(EXACT_THRESHOLD)).expect("extend");
    let shared = Arc::new(RwLock::new(index));
    let done = AtomicBool::new(false);
    let crossed = std::sync::OnceLock::<Instant>::new();
    let switched = std::sync::OnceLock::<Instant>::new();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut latencies = Vec::new();
            let mut meanwhile = 0;
            let started = Instant::now();
            for (n, query) in queries.chunks_exact(DIMENSION).cycle().enumerate() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                pace(started, n);
                let start = Instant::now();
                std::hint::black_box(shared.read().search(query, K, |_| true));
                latencies.push(start.elapsed());
                meanwhile += usize::from(crossed.get().is_some() && switched.get().is_none());
            }
            (latencies, meanwhile)
        });
        let mut inserts = Vec::new();
        let started = Instant::now();
        for (n, (id, vector)) in rows.enumerate() {
            pace(started, n);
            let start = Instant::now();
            let mut index = shared.write();
            index.insert(id, vector).expect("insert");
            let build = index.start_graph();
            let exact = index.is_exact();
            drop(index);
            inserts.push(start.elapsed());
            if inserts.last().is_some_and(|took| *took > Duration::from_millis(50)) {
                eprintln!("memory_index: insert {n} of the crossing took {:?}", inserts.last().unwrap());
            }
            crossed.get_or_init(|| start);
            if let Some(build) = build {
                let shared = shared.clone();
                scope.spawn(move || {
                    build.run(|locked| {
                        locked(&mut shared.write());
                        true
                    })
                });
            }
            if !exact {
                let at = *switched.get_or_init(Instant::now);
                if at.elapsed() >= CROSSING_AFTER {
                    break;
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        let (mut searches, searches_meanwhile) = reader.join().expect("reader");
        inserts.sort_unstable();
        searches.sort_unstable();
        let switch_secs = switched
            .get()
            .zip(crossed.get())
            .map_or(f64::NAN, |(switched, crossed)| switched.duration_since(*crossed).as_secs_f64());
        Crossing {
            mode: if deferred { "off the lock" } else { "in the insert" },
            switch_secs,
            inserts: inserts.len(),
            insert_p99_ms: percentile(&inserts, 0.99),
            insert_max_ms: percentile(&inserts, 1.0),
            searches_meanwhile,
            search_p99_ms: percentile(&searches, 0.99),
            search_max_ms: percentile(&searches, 1.0),
        }
    })
}

/// The graph persona's vectors in the side-by-side measurement, and its threshold.
const NEIGHBOUR_GRAPH: usize = 20_000;
/// The searched persona's vectors (an exact index).
const NEIGHBOUR_EXACT: usize = 5_000;
/// How long the side-by-side measurement runs.
const NEIGHBOUR_FOR: Duration = Duration::from_secs(10);

/// One persona's searches beside another's graph inserts, see the module docs.
struct Neighbour {
    mode: &'static str,
    inserts: usize,
    searches: usize,
    /// Searches that found a writer holding the lock and went without.
    without: usize,
    search_p99_ms: f64,
}

impl Neighbour {
    /// The numbers, as (JSON key, value), in the Markdown table's column order.
    fn cells(&self) -> [(&'static str, String); 5] {
        [
            ("inserts", self.inserts.to_string()),
            ("searches", self.searches.to_string()),
            ("without", self.without.to_string()),
            ("without_pct", format!("{:.1}", 100.0 * self.without as f64 / self.searches.max(1) as f64)),
            ("search_p99_ms", format!("{:.3}", self.search_p99_ms)),
        ]
    }
}

/// Two personas' indexes: `[graph, exact]`.
fn neighbours(mixture: &Mixture) -> ([VectorIndex; 2], Vec<f32>) {
    let data = mixture.sample(NEIGHBOUR_GRAPH + NEIGHBOUR_EXACT, 7);
    let (graph_rows, exact_rows) = data.split_at(NEIGHBOUR_GRAPH * DIMENSION);
    let mut graph = VectorIndex::with_threshold(DIMENSION, NEIGHBOUR_GRAPH / 2);
    graph.extend(graph_rows.chunks_exact(DIMENSION).enumerate().map(|(id, v)| (id as i64, v))).expect("extend");
    assert!(!graph.is_exact(), "the first persona's index is a graph");
    let mut exact = VectorIndex::with_threshold(DIMENSION, EXACT_THRESHOLD);
    exact.extend(exact_rows.chunks_exact(DIMENSION).enumerate().map(|(id, v)| (id as i64, v))).expect("extend");
    let inserts = mixture.sample(NEIGHBOUR_FOR.as_secs() as usize * CROSSING_RATE as usize, 8);
    ([graph, exact], inserts)
}

/// Inserts into the graph persona and searches the other at [`CROSSING_RATE`] each, for
/// [`NEIGHBOUR_FOR`]; `insert` and `search` lock as the layout measured does.
fn side_by_side(
    mode: &'static str,
    inserts: &[f32],
    queries: &[f32],
    insert: impl Fn(i64, &[f32]) + Sync,
    search: impl Fn(&[f32]) -> Option<Vec<(i64, f32)>> + Sync,
) -> Neighbour {
    let done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let (mut latencies, mut without) = (Vec::new(), 0);
            for (n, query) in queries.chunks_exact(DIMENSION).cycle().enumerate() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                pace(started, n);
                let start = Instant::now();
                match search(query) {
                    Some(hits) => {
                        std::hint::black_box(hits);
                        latencies.push(start.elapsed());
                    }
                    None => without += 1,
                }
            }
            (latencies, without)
        });
        let mut count = 0;
        for (n, vector) in inserts.chunks_exact(DIMENSION).enumerate() {
            pace(started, n);
            insert((NEIGHBOUR_GRAPH + n) as i64, vector);
            count += 1;
        }
        done.store(true, Ordering::Relaxed);
        let (mut latencies, without) = reader.join().expect("reader");
        latencies.sort_unstable();
        Neighbour {
            mode,
            inserts: count,
            searches: latencies.len() + without,
            without,
            search_p99_ms: percentile(&latencies, 0.99),
        }
    })
}

/// The second persona's searches beside the first one's graph inserts, with one lock for both
/// and with a lock each.
fn neighbour_runs(mixture: &Mixture) -> [Neighbour; 2] {
    let queries = mixture.sample(200, 9);
    let (indexes, inserts) = neighbours(mixture);
    let one = RwLock::new(indexes);
    let shared = side_by_side(
        "one lock for both",
        &inserts,
        &queries,
        |id, vector| one.write()[0].insert(id, vector).expect("insert"),
        |query| one.try_read().map(|indexes| indexes[1].search(query, K, |_| true)),
    );
    let ([graph, exact], inserts) = neighbours(mixture);
    let (graph, exact) = (RwLock::new(graph), RwLock::new(exact));
    let own = side_by_side(
        "a lock each",
        &inserts,
        &queries,
        |id, vector| graph.write().insert(id, vector).expect("insert"),
        |query| exact.try_read().map(|index| index.search(query, K, |_| true)),
    );
    [shared, own]
}

/// Exact-search latency at small sizes, to place the exact/HNSW threshold.
fn exact_latencies(mixture: &Mixture) -> Vec<(usize, f64, f64)> {
    let queries = mixture.sample(200, 3);
    let data = mixture.sample(80_000, 4);
    [2_500, 5_000, 10_000, 20_000, 40_000, 80_000]
        .into_iter()
        .map(|n| {
            let mut exact = VectorIndex::with_threshold(DIMENSION, usize::MAX);
            for (id, vector) in data.chunks_exact(DIMENSION).take(n).enumerate() {
                exact.insert(id as i64, vector).expect("insert");
            }
            let (_, p50, p99) = timed(&queries, |q| exact.search(q, K, |_| true));
            (n, p50, p99)
        })
        .collect()
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CHORUS_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().replace('_', "").parse().expect("CHORUS_BENCH_SIZES: comma-separated sizes"))
        .collect();
    let mixture = Mixture::new(&mut StdRng::seed_from_u64(SEED));

    let exact = exact_latencies(&mixture);
    println!("\nExact top-{K} search, {DIMENSION} dimensions (threshold {EXACT_THRESHOLD}):\n");
    println!("| vectors | p50 ms | p99 ms |\n|---:|---:|---:|");
    for (n, p50, p99) in &exact {
        println!("| {n} | {p50:.3} | {p99:.3} |");
    }
    if std::env::var_os("CHORUS_BENCH_EXACT_ONLY").is_some() {
        return;
    }

    eprintln!("memory_index: crossing {EXACT_THRESHOLD}…");
    let crossings = [crossing(&mixture, false), crossing(&mixture, true)];
    println!(
        "\nCrossing {EXACT_THRESHOLD} behind an RwLock, {CROSSING_RATE} inserts/s and {CROSSING_RATE} \
         searches/s (each timed with its wait for the lock):\n"
    );
    println!(
        "| graph built | crossing → graph s | inserts | insert p99 ms | insert max ms | searches meanwhile | \
         search p99 ms | search max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &crossings {
        let values: Vec<String> = c.cells().into_iter().map(|(_, value)| value).collect();
        println!("| {} | {} |", c.mode, values.join(" | "));
    }

    eprintln!("memory_index: two personas side by side…");
    let neighbours = neighbour_runs(&mixture);
    println!(
        "\nTwo personas: {CROSSING_RATE} inserts/s into one's graph of {NEIGHBOUR_GRAPH}, {CROSSING_RATE} \
         searches/s of the other's {NEIGHBOUR_EXACT} (going without while a writer holds the lock), {} s:\n",
        NEIGHBOUR_FOR.as_secs()
    );
    println!(
        "| locks | inserts | searches | went without | went without % | search p99 ms |\n|---|---:|---:|---:|---:|---:|"
    );
    for n in &neighbours {
        let values: Vec<String> = n.cells().into_iter().map(|(_, value)| value).collect();
        println!("| {} | {} |", n.mode, values.join(" | "));
    }

    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("memory_index: {n} vectors…");
        rows.push(run(&mixture, n));
    }

    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    println!(
        "\nVectorIndex, {DIMENSION} dimensions, {CLUSTERS}-cluster mixture, top-{K}, {QUERIES} queries \
         (filtered: 1 id in {FILTER_ONE_IN}), recall over {RECALL_QUERIES}:\n"
    );
    println!(
        "| vectors | build s | bulk inserts/s | single inserts/s | p50 ms | p99 ms | filtered p50 ms | filtered p99 ms | recall@10 | \
         filtered recall@10 | RSS Δ MiB | memory_bytes MiB | raw MiB | RSS Δ / raw | exact mean ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} | {:.4} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} |",
            r.n,
            r.build_secs,
            r.inserts_per_sec,
            r.single_inserts_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.filtered_p50_ms,
            r.filtered_p99_ms,
            r.recall,
            r.filtered_recall,
            mib(r.rss_delta),
            mib(r.memory_bytes),
            mib(r.raw_bytes),
            r.rss_delta as f64 / r.raw_bytes as f64,
            r.exact_mean_ms,
        );
    }

    let exact_json: Vec<String> =
        exact.iter().map(|(n, p50, p99)| format!(r#"{{"n":{n},"p50_ms":{p50:.4},"p99_ms":{p99:.4}}}"#)).collect();
    let rows_json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                r#"{{"n":{},"build_s":{:.2},"inserts_per_s":{:.0},"single_inserts_per_s":{:.0},"p50_ms":{:.4},"p99_ms":{:.4},"filtered_p50_ms":{:.4},"filtered_p99_ms":{:.4},"recall_at_10":{:.4},"filtered_recall_at_10":{:.4},"rss_delta_bytes":{},"memory_bytes":{},"raw_bytes":{},"rss_ratio":{:.3},"exact_mean_ms":{:.2}}}"#,
                r.n,
                r.build_secs,
                r.inserts_per_sec,
                r.single_inserts_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.filtered_p50_ms,
                r.filtered_p99_ms,
                r.recall,
                r.filtered_recall,
                r.rss_delta,
                r.memory_bytes,
                r.raw_bytes,
                r.rss_delta as f64 / r.raw_bytes as f64,
                r.exact_mean_ms,
            )
        })
        .collect();
    let crossing_json: Vec<String> = crossings.iter().map(|c| json_object(c.mode, c.cells())).collect();
    let neighbour_json: Vec<String> = neighbours.iter().map(|n| json_object(n.mode, n.cells())).collect();
    println!(
        "\n{{\"bench\":\"memory_index\",\"dimension\":{DIMENSION},\"k\":{K},\"threshold\":{EXACT_THRESHOLD},\"exact\":[{}],\"crossing\":[{}],\"neighbours\":[{}],\"results\":[{}]}}",
        exact_json.join(","),
        crossing_json.join(","),
        neighbour_json.join(","),
        rows_json.join(",")
    );
}

/// `{"mode": mode, key: value, …}` from a table row's cells (numbers, unquoted).
fn json_object<const N: usize>(mode: &str, cells: [(&'static str, String); N]) -> String {
    let fields: Vec<String> = cells.into_iter().map(|(key, value)| format!(r#""{key}":{value}"#)).collect();
    format!(r#"{{"mode":"{mode}",{}}}"#, fields.join(","))
}
