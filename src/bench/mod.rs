//! `chorus bench`: the whole service, in process, against zero-latency simulators — real actors,
//! real store (SQLite in a temporary directory), real admin server — measured from outside.
//!
//! Every scenario can run on its own (`chorus bench --scenario NAME …`, one JSON object on
//! stdout), so that memory and CPU are measured in a process of their own; `chorus bench` runs
//! them one by one as child processes and prints the table (Markdown) and the JSON.

pub mod fleet;
pub mod reply;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One scenario's result: named numbers, with what they were measured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub scenario: String,
    /// The scenario's parameters (agents, offered rate, LLM delay, …).
    pub params: BTreeMap<String, serde_json::Value>,
    /// The numbers, by name (latencies in microseconds, sizes in bytes, rates per second).
    pub values: BTreeMap<String, f64>,
    /// Anything a reader should know about this run.
    pub notes: Vec<String>,
}

impl Measurement {
    pub fn new(scenario: &str) -> Self {
        Measurement { scenario: scenario.to_owned(), ..Measurement::default() }
    }

    pub fn param(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    pub fn set(&mut self, name: &str, value: f64) {
        self.values.insert(name.to_owned(), value);
    }
}

/// A directory of its own under the system temporary directory, removed when dropped.
pub(crate) struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    pub(crate) fn create(label: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name =
            format!("chorus-bench-{label}-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This process's resident memory (VmRSS), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_bytes(&std::fs::read_to_string("/proc/self/status").ok()?, "VmRSS")
}

/// This process's resident memory and what it is made of, in bytes (`/proc/self/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// VmRSS: all of it.
    pub total: u64,
    /// RssAnon: memory of the process's own (heap, stacks, relocated data), which only exiting or
    /// freeing gives back.
    pub anon: u64,
    /// RssFile: pages of mapped files (the binary's and the libraries' code and read-only data),
    /// which the kernel can drop and read again.
    pub file: u64,
}

/// Reads [`Resident`] for this process.
pub fn resident() -> Option<Resident> {
    parse_resident(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// [`Resident`] from the text of a `/proc/PID/status` (RssAnon and RssFile since Linux 4.5).
fn parse_resident(status: &str) -> Option<Resident> {
    Some(Resident {
        total: status_bytes(status, "VmRSS")?,
        anon: status_bytes(status, "RssAnon")?,
        file: status_bytes(status, "RssFile")?,
    })
}

/// The value of `key` in the text of a `/proc/PID/status`, given in kB there, in bytes.
fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (10 ms resolution).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the state field.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Writes a sandbox configuration for a benchmark into `dir`: the local platform only, no crowd,
/// the offline LLM provider (or `llm_section` instead), `personas` personas `p000000…` that post
/// nothing on their own, the admin server on an ephemeral loopback port, logs at `warn`, and
/// `extra` appended to `chorus.toml`. Returns the configuration, loaded and validated like
/// `chorus run` does.
pub fn write_config(
    dir: &Path,
    personas: usize,
    poll_every: &str,
    llm_section: Option<&str>,
    extra: &str,
) -> anyhow::Result<crate::config::Config> {
    let llm = llm_section.map(str::to_owned).unwrap_or_else(|| {
        "[llm]\ndefault_chain = [\"offline\"]\n\n[llm.providers.offline]\nkind = \"offline\"\n".to_owned()
    });
    let toml = format!(
        r#"mode = "sandbox"
personas_dir = "personas"

[store]
url = "sqlite://{db}"

[admin]
listen = "127.0.0.1:0"
token = {{ env = "CHORUS_BENCH_ADMIN_TOKEN" }}

[telemetry]
format = "plain"
filter = "warn"

[platforms.local]
poll_every = "{poll_every}"
rate_limit = {{ burst = 1000000, per = "1s" }}

[platforms.x]
enabled = false

[platforms.reddit]
enabled = false

[platforms.discord]
enabled = false

[publisher]
sweep_every = "100ms"

[sandbox]
crowd = false

[team]
weekly_report = false

{llm}
{extra}
"#,
        db = dir.join("chorus.db").display(),
    );
    std::fs::write(dir.join("chorus.toml"), toml)?;
    let personas_dir = dir.join("personas");
    std::fs::create_dir_all(&personas_dir)?;
    for index in 0..personas {
        let name = persona_name(index);
        let text = format!(
            "name = \"{name}\"\nbio = \"A benchmark persona.\"\nvoice = \"Plain.\"\ntopics = [\"benchmarks\", \"latency\"]\n\
             platforms = [\"local\"]\n\n[schedule]\nevery = \"24h\"\nmax_per_day = 0\n"
        );
        std::fs::write(personas_dir.join(format!("{name}.toml")), text)?;
    }
    crate::config::load(&dir.join("chorus.toml")).map_err(|errors| anyhow::anyhow!("benchmark configuration: {errors}"))
}

/// The name of benchmark persona `index`: `p000000`, `p000001`, …
pub fn persona_name(index: usize) -> String {
    format!("p{index:06}")
}

/// Percentile `q` (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Logs of a benchmark process: `warn` (or `RUST_LOG`) on stderr, so stdout carries the result.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// One scenario run in this process: `chorus bench --scenario NAME [--rate R] [--seconds S]
/// [--llm-delay-ms D [--remote-embedder]] [--personas N] [--memories N] [--agents N] [--up-to R]
/// [--worker-threads N]`. Unset
/// parameters take the scenario's default; the worker threads are the runtime's (`main` builds it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenarioArgs {
    /// `latency`, `max-rate`, `idle` or `shutdown`.
    pub name: String,
    /// Offered mentions per second (`latency`, `shutdown`).
    pub rate: Option<u32>,
    /// Seconds of load (`latency`), or per step (`max-rate`).
    pub seconds: Option<f64>,
    /// A fixed LLM delay: completions go to the LLM simulator instead of the offline provider.
    pub llm_delay_ms: Option<u64>,
    /// With `llm_delay_ms`: embeddings go to the LLM simulator too (`latency`).
    pub remote_embedder: bool,
    /// Personas the mentions name in turn (`latency`; one by default).
    pub personas: Option<usize>,
    /// Memories each persona holds before the run (`latency`; none by default).
    pub memories: Option<usize>,
    /// Idle agents (`idle`).
    pub agents: Option<usize>,
    /// The highest offered rate `max-rate` tries.
    pub up_to: Option<u32>,
}

/// Runs one scenario in this process (on the current tokio runtime, whose worker count the
/// measurement's `worker_threads` parameter reports).
pub async fn run_scenario(args: &ScenarioArgs) -> anyhow::Result<Measurement> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let measurement = match args.name.as_str() {
        "latency" => {
            let llm = match args.llm_delay_ms.map(Duration::from_millis) {
                Some(delay) => reply::Llm::Simulated { delay, embeddings: args.remote_embedder },
                None => reply::Llm::Offline,
            };
            let personas = args.personas.unwrap_or(1);
            let memories = args.memories.unwrap_or(0);
            reply::latency(args.rate.unwrap_or(1000), args.seconds.unwrap_or(10.0), llm, personas, memories).await
        }
        "max-rate" => reply::max_rate_up_to(args.seconds.unwrap_or(5.0), args.up_to.unwrap_or(u32::MAX)).await,
        "idle" => fleet::idle(args.agents.unwrap_or(1000)).await,
        "shutdown" => fleet::shutdown(args.rate.unwrap_or(1000)).await,
        other => anyhow::bail!("unknown scenario {other:?}: expected latency, max-rate, idle or shutdown"),
    }?;
    Ok(measurement.param("worker_threads", workers as u64))
}

/// What `chorus bench` (all scenarios) runs and where it writes the JSON.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Small numbers: a quick look, not the reference run.
    pub quick: bool,
    pub json: PathBuf,
}

/// One scenario run as a child process, and what came back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteRun {
    /// The run's name in the tables, e.g. `latency 5000/s`.
    pub label: String,
    /// The arguments after `chorus bench`.
    pub args: Vec<String>,
    pub measurement: Option<Measurement>,
    /// Why there is no measurement: the child's exit status and its last lines on stderr.
    pub error: Option<String>,
    pub wall_ms: u64,
}

/// One row of the targets table (issue 9).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetRow {
    pub target: String,
    pub goal: String,
    pub measured: String,
    /// `met`, `not met`, `reported` (no target), `not run` or `failed`; for a fleet stopped before
    /// it was ready, `met (projected)`, `not met (never ready)` or `never ready`.
    pub status: String,
}

/// Everything `chorus bench` measured, as written to `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    pub command: String,
    pub quick: bool,
    pub machine: BTreeMap<String, String>,
    pub targets: Vec<TargetRow>,
    pub runs: Vec<SuiteRun>,
}

/// The scenarios of `chorus bench`, in order: (label, arguments after `bench`, time limit).
fn plan(quick: bool) -> Vec<(String, Vec<String>, Duration)> {
    let seconds = if quick { "2" } else { "10" };
    let step_seconds = if quick { "1" } else { "5" };
    let minutes = |n: u64| Duration::from_secs(60 * n);
    let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    // A latency run: its label, the offered rate and what follows `--seconds`.
    let latency = |label: &str, rate: &str, extra: &[&str]| {
        let mut list = args(&["--scenario", "latency", "--rate", rate, "--seconds", seconds]);
        list.extend(args(extra));
        (label.to_owned(), list, minutes(5))
    };
    let mut plan = vec![
        latency("latency 1000/s", "1000", &[]),
        latency("latency 5000/s", "5000", &[]),
        latency("latency 200/s, LLM 50 ms", "200", &["--llm-delay-ms", "50"]),
        latency("latency 200/s, LLM and embeddings 50 ms", "200", &["--llm-delay-ms", "50", "--remote-embedder"]),
        latency("latency 250/s", "250", &[]),
        latency("latency 250/s, one runtime worker", "250", &["--worker-threads", "1"]),
        latency("latency 1000/s, 4 personas", "1000", &["--personas", "4"]),
    ];
    let mut max_rate = args(&["--scenario", "max-rate", "--seconds", step_seconds]);
    if quick {
        max_rate.extend(args(&["--up-to", "16000"]));
    }
    plan.push(("max-rate".to_owned(), max_rate, minutes(30)));
    let agents: &[usize] = if quick { &[1, 1000] } else { &[1, 1000, 10_000, 100_000] };
    for agents in agents {
        let count = agents.to_string();
        plan.push((format!("idle {agents}"), args(&["--scenario", "idle", "--agents", &count]), minutes(20)));
    }
    plan.push(("shutdown 1000/s".to_owned(), args(&["--scenario", "shutdown", "--rate", "1000"]), minutes(5)));
    plan
}

/// `chorus bench`: runs every scenario as a child process of this binary (so memory and CPU are
/// each scenario's own), writes the JSON report and returns the Markdown one. A scenario that
/// fails is reported as such; only a report that cannot be written is an error.
pub fn run_suite(options: &SuiteOptions) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut runs = Vec::new();
    for (label, args, limit) in plan(options.quick) {
        eprintln!("bench: {label} (chorus bench {})", args.join(" "));
        let started = Instant::now();
        let (measurement, error) = match run_child(&exe, &args, limit) {
            Ok(measurement) => (Some(measurement), None),
            Err(err) => {
                eprintln!("bench: {label} failed: {err:#}");
                (None, Some(format!("{err:#}")))
            }
        };
        let wall_ms = started.elapsed().as_millis() as u64;
        runs.push(SuiteRun { label, args, measurement, error, wall_ms });
    }
    let report = SuiteReport {
        command: format!("chorus bench{}", if options.quick { " --quick" } else { "" }),
        quick: options.quick,
        machine: machine(),
        targets: targets(&runs),
        runs,
    };
    if let Some(parent) = options.json.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&options.json, json + "\n").with_context(|| format!("cannot write {}", options.json.display()))?;
    Ok(to_markdown(&report, &options.json))
}

/// Runs `exe bench ARGS`, waits at most `limit`, and parses the last stdout line that is a
/// [`Measurement`].
fn run_child(exe: &Path, args: &[String], limit: Duration) -> anyhow::Result<Measurement> {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| anyhow::anyhow!("cannot start {}: {err}", exe.display()))?;
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let tail = || {
        let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    };
    let Some(status) = status else {
        anyhow::bail!("no result within {}: {}", humantime::format_duration(limit), tail());
    };
    if !status.success() {
        anyhow::bail!("{status}: {}", tail());
    }
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Measurement>(line).ok())
        .ok_or_else(|| anyhow::anyhow!("no measurement on stdout: {}", tail()))
}

/// The machine the numbers were measured on.
fn machine() -> BTreeMap<String, String> {
    let mut machine = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = cpuinfo.lines().find_map(|line| line.strip_prefix("model name")) {
        machine.insert("cpu".to_owned(), model.trim_start_matches([' ', '\t', ':']).trim().to_owned());
    }
    if let Ok(cores) = std::thread::available_parallelism() {
        machine.insert("cores_available".to_owned(), cores.to_string());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(total) = meminfo.lines().find_map(|line| line.strip_prefix("MemTotal:")) {
        machine.insert("memory".to_owned(), total.trim().to_owned());
    }
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        machine.insert("kernel".to_owned(), format!("{} {}", std::env::consts::OS, release.trim()));
    }
    machine.insert("build".to_owned(), if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned());
    machine
}

/// A value of the run labelled `label`.
fn value_of(runs: &[SuiteRun], label: &str, name: &str) -> Result<f64, String> {
    let Some(run) = runs.iter().find(|run| run.label == label) else { return Err("not run".to_owned()) };
    let Some(measurement) = &run.measurement else { return Err("failed".to_owned()) };
    measurement.values.get(name).copied().ok_or_else(|| format!("no {name}"))
}

/// The rows of the targets table: each target of issue 9, what was measured and whether it is met.
fn targets(runs: &[SuiteRun]) -> Vec<TargetRow> {
    /// How a measured number compares with its goal.
    enum Goal {
        AtMost(f64),
        AtLeast(f64),
        Exactly(f64),
        Reported,
    }
    let row = |target: &str, goal_text: &str, goal: Goal, label: &str, name: &str, show: &dyn Fn(f64) -> String| {
        // A fleet too large for this machine is stopped before it is ready: it reports how far it
        // got and, when it can, a projection, which is compared with the goal instead.
        let stopped = value_of(runs, label, "stopped_after_ms").ok().map(|after| {
            let running = value_of(runs, label, "agents_running").unwrap_or(f64::NAN);
            format!("stopped after {:.0} s with {running:.0} agents running", after / 1000.0)
        });
        let (value, suffix) = match (value_of(runs, label, &format!("projected_{name}")), &stopped) {
            (Ok(value), Some(stopped)) => (Ok(value), format!(" (projected; {stopped})")),
            (Ok(value), None) => (Ok(value), " (projected)".to_owned()),
            (Err(_), Some(stopped)) => (value_of(runs, label, name), format!(" ({stopped})")),
            (Err(_), None) => (value_of(runs, label, name), String::new()),
        };
        let (measured, status) = match value {
            Err(why) if why == "not run" => ("—".to_owned(), "not run".to_owned()),
            Err(why) if stopped.is_some() => (format!("{why}{suffix}"), "never ready".to_owned()),
            Err(why) => (why, "failed".to_owned()),
            Ok(value) => {
                let met = match goal {
                    Goal::AtMost(limit) => Some(value <= limit),
                    Goal::AtLeast(floor) => Some(value >= floor),
                    Goal::Exactly(wanted) => Some((value - wanted).abs() < 1e-9),
                    Goal::Reported => None,
                };
                // What a stopped fleet held is no evidence that a ready one would meet the goal.
                let status = match (met, &stopped) {
                    (None, _) => "reported",
                    (Some(false), _) => "not met",
                    (Some(true), Some(_)) if suffix.starts_with(" (projected") => "met (projected)",
                    (Some(true), Some(_)) => "not met (never ready)",
                    (Some(true), None) if suffix.starts_with(" (projected") => "met (projected)",
                    (Some(true), None) => "met",
                };
                (format!("{}{suffix}", show(value)), status.to_owned())
            }
        };
        TargetRow { target: target.to_owned(), goal: goal_text.to_owned(), measured, status }
    };
    let micros = |value: f64| format_micros(value);
    let bytes = |value: f64| format_bytes(value);
    let plain = |value: f64| format!("{value:.2}");
    let millis = |value: f64| format!("{value:.0} ms");
    let rate = |value: f64| format!("{value:.0}/s");
    let count = |value: f64| format!("{value:.0}");
    let mut rows = vec![
        row("mention → reply p50 at 5,000/s", "≤ 300 µs", Goal::AtMost(300.0), "latency 5000/s", "p50_us", &micros),
        row("mention → reply p99 at 5,000/s", "≤ 1 ms", Goal::AtMost(1000.0), "latency 5000/s", "p99_us", &micros),
        row("mention → reply p99.9 at 5,000/s", "—", Goal::Reported, "latency 5000/s", "p999_us", &micros),
        row("mention → reply p50 at 1,000/s", "—", Goal::Reported, "latency 1000/s", "p50_us", &micros),
        row("mention → reply p99 at 1,000/s", "—", Goal::Reported, "latency 1000/s", "p99_us", &micros),
        row("mention → reply p99.9 at 1,000/s", "—", Goal::Reported, "latency 1000/s", "p999_us", &micros),
        row("replies per second at 1,000/s offered", "—", Goal::Reported, "latency 1000/s", "achieved_rate", &rate),
        row(
            "… to a team of 4 personas (4 accounts publishing)",
            "—",
            Goal::Reported,
            "latency 1000/s, 4 personas",
            "achieved_rate",
            &rate,
        ),
        row("CPU per reply at 1,000/s", "—", Goal::Reported, "latency 1000/s", "cpu_per_reply_us", &micros),
        row(
            "… to a team of 4 personas",
            "—",
            Goal::Reported,
            "latency 1000/s, 4 personas",
            "cpu_per_reply_us",
            &micros,
        ),
        row(
            "reply p50 ÷ bare LLM round trip p50, 50 ms LLM delay",
            "≤ 1.05",
            Goal::AtMost(1.05),
            "latency 200/s, LLM 50 ms",
            "ratio_p50",
            &|value| format!("{value:.3}"),
        ),
        row(
            "durable replies per second, sustained",
            "≥ 20,000/s",
            Goal::AtLeast(20_000.0),
            "max-rate",
            "max_sustained_rate",
            &rate,
        ),
        row("CPU per reply at 5,000/s", "≤ 0.5 ms", Goal::AtMost(500.0), "latency 5000/s", "cpu_per_reply_us", &micros),
        row("CPU per reply at 250/s", "≤ 0.5 ms", Goal::AtMost(500.0), "latency 250/s", "cpu_per_reply_us", &micros),
        row(
            "… with one runtime worker (`runtime.worker_threads = 1`)",
            "—",
            Goal::Reported,
            "latency 250/s, one runtime worker",
            "cpu_per_reply_us",
            &micros,
        ),
        row("mention → reply p50 at 250/s", "—", Goal::Reported, "latency 250/s", "p50_us", &micros),
        row("… with one runtime worker", "—", Goal::Reported, "latency 250/s, one runtime worker", "p50_us", &micros),
    ];
    // What the service did at the first step it could not sustain: its throughput overloaded.
    if let (Ok(offered), Ok(achieved)) = (
        value_of(runs, "max-rate", "first_unsustained_rate"),
        value_of(runs, "max-rate", "first_unsustained_achieved_rate"),
    ) && let Some(durable) = rows.iter_mut().find(|row| row.target.starts_with("durable replies"))
    {
        durable.measured = format!("{} (offered {offered:.0}/s: {achieved:.0}/s)", durable.measured);
    }
    // Exactly one completion per reply in every latency run.
    let latency_runs: Vec<&SuiteRun> = runs.iter().filter(|run| run.label.starts_with("latency")).collect();
    let calls: Vec<(String, Option<f64>)> = latency_runs
        .iter()
        .map(|run| {
            let calls = run.measurement.as_ref().and_then(|m| m.values.get("llm_calls_per_reply").copied());
            (run.label.clone(), calls)
        })
        .collect();
    let (measured, status) = if calls.is_empty() {
        ("—".to_owned(), "not run")
    } else if calls.iter().any(|(_, calls)| calls.is_none()) {
        ("a latency run failed".to_owned(), "failed")
    } else {
        let all_one = calls.iter().all(|(_, calls)| calls.is_some_and(|calls| (calls - 1.0).abs() < 1e-9));
        let text = calls
            .iter()
            .map(|(label, calls)| format!("{:.3} ({label})", calls.unwrap_or(f64::NAN)))
            .collect::<Vec<_>>()
            .join(", ");
        (text, if all_one { "met" } else { "not met" })
    };
    rows.push(TargetRow {
        target: "LLM completions per reply".to_owned(),
        goal: "exactly 1".to_owned(),
        measured,
        status: status.to_owned(),
    });
    rows.extend([
        row(
            "embedding requests per reply at 5,000/s",
            "≤ 1",
            Goal::AtMost(1.0),
            "latency 5000/s",
            "embeddings_per_reply",
            &plain,
        ),
        row(
            "… embeddings asked for per reply (joined into those requests)",
            "—",
            Goal::Reported,
            "latency 5000/s",
            "embedding_jobs_per_reply",
            &plain,
        ),
        row(
            "embedding requests per reply at 200/s, embedding model 50 ms away",
            "—",
            Goal::Reported,
            "latency 200/s, LLM and embeddings 50 ms",
            "embeddings_per_reply",
            &plain,
        ),
        row(
            "… mention → reply p50 there (three 50 ms calls in a row)",
            "—",
            Goal::Reported,
            "latency 200/s, LLM and embeddings 50 ms",
            "p50_us",
            &micros,
        ),
        row("idle RSS, 1 agent", "≤ 20 MiB", Goal::AtMost(20.0 * MIB), "idle 1", "rss_bytes", &bytes),
        row(
            "… of which anonymous (heap, stacks, relocations)",
            "—",
            Goal::Reported,
            "idle 1",
            "rss_anon_bytes",
            &bytes,
        ),
        row("… of which mapped files (code, read-only data)", "—", Goal::Reported, "idle 1", "rss_file_bytes", &bytes),
        row("idle RSS, 1,000 agents", "—", Goal::Reported, "idle 1000", "rss_bytes", &bytes),
        row("idle RSS, 10,000 agents", "≤ 128 MiB", Goal::AtMost(128.0 * MIB), "idle 10000", "rss_bytes", &bytes),
        row("idle RSS, 100,000 agents", "≤ 1.5 GiB", Goal::AtMost(1536.0 * MIB), "idle 100000", "rss_bytes", &bytes),
        row("bytes per idle agent (100,000 agents)", "—", Goal::Reported, "idle 100000", "bytes_per_agent", &bytes),
        row("start → ready, 1,000 agents", "—", Goal::Reported, "idle 1000", "ready_ms", &millis),
        row("start → ready, 10,000 agents", "≤ 1 s", Goal::AtMost(1000.0), "idle 10000", "ready_ms", &millis),
        row(
            "SIGTERM → exit under 1,000 mentions/s",
            "≤ 5 s",
            Goal::AtMost(5000.0),
            "shutdown 1000/s",
            "exit_ms",
            &millis,
        ),
        row("mentions lost at SIGTERM", "0", Goal::Exactly(0.0), "shutdown 1000/s", "lost", &count),
    ]);
    rows
}

const MIB: f64 = 1024.0 * 1024.0;

fn format_micros(value: f64) -> String {
    if value >= 1_000_000.0 {
        format!("{:.2} s", value / 1_000_000.0)
    } else if value >= 10_000.0 {
        format!("{:.1} ms", value / 1000.0)
    } else {
        format!("{value:.0} µs")
    }
}

fn format_bytes(value: f64) -> String {
    if value >= 1024.0 * MIB {
        format!("{:.2} GiB", value / (1024.0 * MIB))
    } else if value >= MIB {
        format!("{:.1} MiB", value / MIB)
    } else if value >= 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{value:.0} B")
    }
}

/// A number as it reads best: integers without decimals, small numbers with three.
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The report as Markdown: the machine, the targets table, then every run's raw numbers.
pub fn to_markdown(report: &SuiteReport, json: &Path) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "## `{}`\n", report.command);
    let machine: Vec<String> = report.machine.iter().map(|(key, value)| format!("{key}: {value}")).collect();
    let _ = writeln!(out, "Machine: {}.\n", machine.join("; "));
    let _ = writeln!(out, "| target | goal | measured | status |");
    let _ = writeln!(out, "|---|---|---|---|");
    for row in &report.targets {
        let _ = writeln!(out, "| {} | {} | {} | {} |", row.target, row.goal, row.measured, row.status);
    }
    let _ = writeln!(out, "\n### Raw numbers\n");
    for run in &report.runs {
        let _ = writeln!(
            out,
            "**{}** (`chorus bench {}`, {:.1} s)\n",
            run.label,
            run.args.join(" "),
            run.wall_ms as f64 / 1000.0
        );
        let Some(measurement) = &run.measurement else {
            let _ = writeln!(out, "failed: {}\n", run.error.as_deref().unwrap_or("no result"));
            continue;
        };
        let values: Vec<String> =
            measurement.values.iter().map(|(name, value)| format!("{name} {}", format_number(*value))).collect();
        let _ = writeln!(out, "{}\n", values.join(" · "));
        for note in &measurement.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !measurement.notes.is_empty() {
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "All measurements: {}", json.display());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_with_its_parts() {
        let status = "Name:\tchorus\nVmRSS:\t   19876 kB\nRssAnon:\t    4268 kB\nRssFile:\t   15608 kB\nRssShmem:\t       0 kB\n";
        let parsed = parse_resident(status).expect("parsed");
        assert_eq!(parsed, Resident { total: 19_876 * 1024, anon: 4_268 * 1024, file: 15_608 * 1024 });
        // A key must match whole: "RssFile" is not read from a "RssFileX" line.
        assert_eq!(parse_resident("VmRSS: 1 kB\nRssAnon: 1 kB\nRssFileX: 1 kB\n"), None);
        assert_eq!(status_bytes("VmRSSX: 2 kB\nVmRSS: 1 kB\n", "VmRSS"), Some(1024));
        let own = resident().expect("this process's status");
        assert!(own.anon > 0 && own.file > 0 && own.anon + own.file <= own.total, "{own:?}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 500.0);
        assert_eq!(percentile(&values, 0.99), 990.0);
        assert_eq!(percentile(&values, 0.999), 999.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    fn suite_run(label: &str, values: &[(&str, f64)]) -> SuiteRun {
        let mut measurement = Measurement::new(label);
        for (name, value) in values {
            measurement.set(name, *value);
        }
        SuiteRun { label: label.to_owned(), args: Vec::new(), measurement: Some(measurement), error: None, wall_ms: 0 }
    }

    #[test]
    fn targets_compare_each_measurement_with_its_goal() {
        let failed =
            SuiteRun { measurement: None, error: Some("exit 1".to_owned()), ..suite_run("shutdown 1000/s", &[]) };
        let runs = vec![
            suite_run("latency 5000/s", &[("p50_us", 200.0), ("p99_us", 2500.0)]),
            suite_run("idle 10000", &[("rss_bytes", 50.0 * MIB), ("projected_rss_bytes", 200.0 * MIB)]),
            suite_run(
                "idle 100000",
                &[("rss_bytes", 298.0 * MIB), ("stopped_after_ms", 120_000.0), ("agents_running", 0.0)],
            ),
            failed,
        ];
        let rows = targets(&runs);
        let row = |target: &str| rows.iter().find(|row| row.target == target).expect(target).clone();
        let p50 = row("mention → reply p50 at 5,000/s");
        assert_eq!((p50.measured.as_str(), p50.status.as_str()), ("200 µs", "met"));
        let p99 = row("mention → reply p99 at 5,000/s");
        assert_eq!((p99.measured.as_str(), p99.status.as_str()), ("2500 µs", "not met"));
        let fleet = row("idle RSS, 10,000 agents");
        assert_eq!((fleet.measured.as_str(), fleet.status.as_str()), ("200.0 MiB (projected)", "not met"));
        let never_ready = row("idle RSS, 100,000 agents");
        assert_eq!(never_ready.status, "not met (never ready)", "{never_ready:?}");
        assert_eq!(never_ready.measured, "298.0 MiB (stopped after 120 s with 0 agents running)", "{never_ready:?}");
        assert_eq!(row("bytes per idle agent (100,000 agents)").status, "never ready");
        assert_eq!(row("SIGTERM → exit under 1,000 mentions/s").status, "failed");
        assert_eq!(row("durable replies per second, sustained").status, "not run");

        let report = SuiteReport {
            command: "chorus bench".to_owned(),
            quick: false,
            machine: BTreeMap::new(),
            targets: rows,
            runs,
        };
        let markdown = to_markdown(&report, Path::new("report.json"));
        assert!(markdown.contains("| mention → reply p50 at 5,000/s | ≤ 300 µs | 200 µs | met |"), "{markdown}");
        assert!(markdown.contains("failed: exit 1"), "{markdown}");
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        assert!(rss_bytes().is_some_and(|bytes| bytes > 1024 * 1024));
        assert!(cpu_time().is_some());
    }
}
