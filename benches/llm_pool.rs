//! The LlmPool's own overhead: requests/s through the pool and the latency it adds, against
//! zero-latency providers. Run with `cargo bench --bench llm_pool`; prints a Markdown table.
//!
//! - `offline`: the in-process dry-run provider, so the numbers are the pool alone (actor
//!   mailbox, task, concurrency slot, breaker, budget check, metrics, batched usage rows).
//! - `openai_compat`: the same through HTTP to the local simulator, for comparison; the "direct"
//!   column calls the provider client without the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus::config::{Config, ProviderConfig, ProviderKind};
use chorus::llm::{
    ChatMessage, CompletionRequest, LlmMsg, LlmPool, LlmPoolArgs, OfflineProvider, OpenAiCompatProvider, Provider,
    Role, Task,
};
use chorus::sim::llm::LlmSim;
use chorus::store::Db;
use ractor::{Actor, ActorRef};

const SEQUENTIAL: usize = 5_000;
const CONCURRENT: usize = 20_000;
const IN_FLIGHT: usize = 64;

fn config(dir: &std::path::Path, sim: &LlmSim) -> Config {
    std::fs::create_dir_all(dir.join("personas")).unwrap();
    std::fs::write(
        dir.join("chorus.toml"),
        format!(
            "[store]\nurl = \"sqlite://{}/bench.db\"\n[llm]\ndefault_chain = [\"offline\"]\n\
             [llm.providers.offline]\nkind = \"offline\"\nmax_concurrency = 256\nmax_queue = 100000\n\
             [llm.providers.http]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\nmax_concurrency = 256\nmax_queue = 100000\n",
            dir.display(),
            sim.openai_base_url()
        ),
    )
    .unwrap();
    for (name, chain) in [("ada", "offline"), ("hal", "http")] {
        std::fs::write(
            dir.join(format!("personas/{name}.toml")),
            format!(
                "name = \"{name}\"\nbio = \"b\"\nvoice = \"v\"\ntopics = [\"benchmarks\"]\nplatforms = [\"local\"]\n\
                 llm_chain = [\"{chain}\"]\nschedule = {{ every = \"1h\" }}\n"
            ),
        )
        .unwrap();
    }
    chorus::config::load(&dir.join("chorus.toml")).expect("bench config")
}

fn request(config: &Config, persona: &str) -> CompletionRequest {
    CompletionRequest {
        persona: config.personas[persona].clone(),
        task: Task::Reply,
        messages: vec![
            ChatMessage::new(Role::System, "You are a benchmark."),
            ChatMessage::new(Role::User, "how fast?"),
        ],
        reply_to_author: Some("sam".into()),
        seed: 7,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

struct Row {
    name: &'static str,
    direct: Vec<Duration>,
    pooled: Vec<Duration>,
    throughput: f64,
}

async fn sequential<F, Fut>(mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        call().await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

async fn throughput(pool: &ActorRef<LlmMsg>, request: &CompletionRequest) -> f64 {
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let (pool, request) = (pool.clone(), request.clone());
        tasks.spawn(async move {
            let result = ractor::call!(pool, |reply| LlmMsg::Complete { request, reply }).unwrap();
            result.expect("completion");
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    CONCURRENT as f64 / started.elapsed().as_secs_f64()
}

async fn measure(
    name: &'static str,
    pool: &ActorRef<LlmMsg>,
    provider: Arc<dyn Provider>,
    request: CompletionRequest,
) -> Row {
    // Warm up connections, caches and the metrics registry.
    for _ in 0..200 {
        let request = request.clone();
        ractor::call!(pool, |reply| LlmMsg::Complete { request, reply }).unwrap().unwrap();
    }
    let direct = sequential(|| {
        let (provider, request) = (provider.clone(), request.clone());
        async move {
            provider.complete(&request, 256).await.unwrap();
        }
    })
    .await;
    let pooled = sequential(|| {
        let (pool, request) = (pool.clone(), request.clone());
        async move {
            ractor::call!(pool, |reply| LlmMsg::Complete { request, reply }).unwrap().unwrap();
        }
    })
    .await;
    let throughput = throughput(pool, &request).await;
    Row { name, direct, pooled, throughput }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sim = LlmSim::start().await.unwrap();
        let config = Arc::new(config(dir.path(), &sim));
        let db = Db::connect(&config.service.store.url, 4).await.unwrap();
        db.migrate().await.unwrap();
        let (pool, _) = Actor::spawn(None, LlmPool, LlmPoolArgs { config: config.clone(), db }).await.unwrap();

        let offline: Arc<dyn Provider> = Arc::new(OfflineProvider::new("offline"));
        let http_config = ProviderConfig {
            kind: ProviderKind::OpenaiCompat,
            base_url: Some(sim.openai_base_url()),
            model: Some("m".into()),
            ..ProviderConfig::default()
        };
        let http: Arc<dyn Provider> = Arc::new(OpenAiCompatProvider::new("http", &http_config, None).unwrap());
        let rows = vec![
            measure("offline (in-process)", &pool, offline, request(&config, "ada")).await,
            measure("openai_compat (HTTP simulator)", &pool, http, request(&config, "hal")).await,
        ];

        println!("| provider | direct p50 | direct p99 | pool p50 | pool p99 | added p50 | added p99 | pool requests/s ({IN_FLIGHT} in flight) |");
        println!("|---|---|---|---|---|---|---|---|");
        for row in &rows {
            let (d50, d99) = (percentile(&row.direct, 0.50), percentile(&row.direct, 0.99));
            let (p50, p99) = (percentile(&row.pooled, 0.50), percentile(&row.pooled, 0.99));
            println!(
                "| {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.0} |",
                row.name,
                micros(d50),
                micros(d99),
                micros(p50),
                micros(p99),
                micros(p50.saturating_sub(d50)),
                micros(p99.saturating_sub(d99)),
                row.throughput
            );
        }
    });
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
