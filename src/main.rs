//! The `chorus` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use chorus::config::{self, Config};

/// mimalloc rather than the system allocator: after a burst (a fleet starting, a load spike) it
/// hands freed memory back instead of keeping it in per-thread arenas (see the README's
/// Performance section; `.cargo/config.toml` builds it without transparent huge pages).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its number in `mimalloc.h`, the same in mimalloc 2 and 3;
/// `libmimalloc-sys` names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has mimalloc give freed memory back to the OS at once rather than a second later (its
/// default). The delayed purge runs only when a thread allocates again, so memory freed by a
/// burst stayed resident in a service gone idle: 6 MB of 141 MiB with 10,000 idle agents, 3–5 MB
/// with 1,000, for no measurable CPU at 500 replies/s (2.43 against 2.44 ms a reply, alternated
/// runs). `MIMALLOC_PURGE_DELAY` in the environment still decides when it is set.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, a plain store read by its allocation paths.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure to start or run.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(name = "chorus", version, about = "A supervised team of AI personas on social platforms.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGINT/SIGTERM (SIGHUP reloads the configuration).
    Run {
        /// The service configuration file.
        #[arg(long, short, default_value = "config/chorus.toml", env = "CHORUS_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration and print a summary of personas and platforms.
    CheckConfig {
        #[arg(long, short, default_value = "config/chorus.toml", env = "CHORUS_CONFIG")]
        config: PathBuf,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, default_value = "config/chorus.toml", env = "CHORUS_CONFIG")]
        config: PathBuf,
    },
    /// Build the weekly report (Monday to Monday, UTC), store it and print it.
    Report {
        #[arg(long, short, default_value = "config/chorus.toml", env = "CHORUS_CONFIG")]
        config: PathBuf,
        /// The week: `last` (the last complete week), `current`, or any day of it as YYYY-MM-DD.
        #[arg(long, value_name = "DATE", num_args = 0..=1, default_value = "last", default_missing_value = "last",
              value_parser = week_spec)]
        week: String,
        /// Print the report as JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the whole service in process against zero-latency simulators: prints the
    /// targets table (Markdown) and writes every measurement as JSON.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Small numbers (2 s per latency run, 1 and 1,000 idle agents, fewer max-rate steps).
    #[arg(long, conflicts_with = "scenario")]
    quick: bool,
    /// Where to write all measurements as JSON.
    #[arg(long, value_name = "FILE", default_value = "target/bench/report.json", conflicts_with = "scenario")]
    json: PathBuf,
    /// Run one scenario in this process and print its measurement as one JSON line:
    /// latency, max-rate, idle or shutdown.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Offered mentions per second (latency, shutdown).
    #[arg(long, requires = "scenario")]
    rate: Option<u32>,
    /// Seconds of load (latency), or per step (max-rate).
    #[arg(long, requires = "scenario")]
    seconds: Option<f64>,
    /// A fixed LLM delay: replies are written by the LLM simulator instead of the offline provider.
    #[arg(long, value_name = "MS", requires = "scenario")]
    llm_delay_ms: Option<u64>,
    /// With --llm-delay-ms: embeddings too go to the LLM simulator (384 dimensions, the same delay)
    /// instead of the offline embedder.
    #[arg(long, requires = "llm_delay_ms")]
    remote_embedder: bool,
    /// Personas the mentions name in turn, each an account of its own (latency) [default: 1].
    #[arg(long, value_name = "N", requires = "scenario",
        value_parser = clap::value_parser!(u16).range(1..))]
    personas: Option<u16>,
    /// Memories each persona holds before the run, earlier mentions with their embeddings, so
    /// recall searches an index of that size (latency) [default: 0].
    #[arg(long, value_name = "N", requires = "scenario")]
    memories: Option<usize>,
    /// Idle agents (idle).
    #[arg(long, requires = "scenario")]
    agents: Option<usize>,
    /// The highest offered rate max-rate tries.
    #[arg(long, value_name = "RATE", requires = "scenario")]
    up_to: Option<u32>,
    /// The runtime's worker threads, like `runtime.worker_threads` [default: one a core].
    #[arg(long, value_name = "N", requires = "scenario",
        value_parser = clap::value_parser!(u16).range(1..=chorus::config::MAX_WORKER_THREADS as i64))]
    worker_threads: Option<u16>,
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    // Before anything opens SQLite, which takes these options only then; logged once logging is up.
    let sqlite_options = chorus::store::configure_sqlite();
    let cli = Cli::parse();
    if let Command::Bench(args) = cli.command {
        return bench(args);
    }
    let path = match &cli.command {
        Command::Run { config }
        | Command::CheckConfig { config }
        | Command::Migrate { config }
        | Command::Report { config, .. } => config.clone(),
        Command::Bench(_) => unreachable!("handled above"),
    };
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Command::CheckConfig { .. } = cli.command {
        print_summary(&config);
        return ExitCode::SUCCESS;
    }
    if let Command::Report { week, json, .. } = &cli.command {
        // Before telemetry: logs go to stdout, which carries the report alone.
        return report(&config, week, *json);
    }
    chorus::telemetry::init(&config.service.telemetry);
    if let Err(code) = sqlite_options {
        tracing::warn!(code, "SQLite was initialized already: its process-wide options stay SQLite's defaults");
    }
    let runtime = match multi_thread_runtime(config.service.runtime.worker_threads()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { .. } => {
                let signals = chorus::shutdown::Signals::install()?;
                let service = chorus::service::start(config).await?;
                chorus::shutdown::run_until_signalled(service, signals).await?;
                Ok(())
            }
            Command::Migrate { .. } => migrate(&config).await,
            Command::CheckConfig { .. } | Command::Report { .. } | Command::Bench(_) => unreachable!("handled above"),
        }
    });
    // Background tasks of a stopped service (timers, idle connections) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "chorus stopped with an error");
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("invalid configuration ({} problem{}):", errors.0.len(), if errors.0.len() == 1 { "" } else { "s" });
        for error in &errors.0 {
            eprintln!("  {error}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let store = &config.service.store;
    let db = chorus::store::Db::connect_with_password(&store.url, config.store_password.as_ref(), 1)
        .await
        .context("store.url: cannot open the database")?;
    db.migrate().await.context("cannot migrate the database")?;
    db.close().await;
    println!("migrations applied");
    Ok(())
}

/// `chorus bench`: every scenario as a child process and the report, or (`--scenario`) one
/// scenario in this process, its measurement printed as one JSON line on stdout.
fn bench(args: BenchArgs) -> ExitCode {
    chorus::bench::init_logs();
    let Some(name) = args.scenario else {
        let options = chorus::bench::SuiteOptions { quick: args.quick, json: args.json };
        return match chorus::bench::run_suite(&options) {
            Ok(markdown) => {
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), markdown.as_bytes());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    };
    let scenario = chorus::bench::ScenarioArgs {
        name,
        rate: args.rate,
        seconds: args.seconds,
        llm_delay_ms: args.llm_delay_ms,
        remote_embedder: args.remote_embedder,
        personas: args.personas.map(usize::from),
        memories: args.memories,
        agents: args.agents,
        up_to: args.up_to,
    };
    let worker_threads =
        args.worker_threads.map_or_else(|| chorus::config::RuntimeConfig::default().worker_threads(), usize::from);
    let runtime = match multi_thread_runtime(worker_threads) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(chorus::bench::run_scenario(&scenario));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result.and_then(|measurement| Ok(serde_json::to_string(&measurement)?)) {
        Ok(line) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), format!("{line}\n").as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The runtime of `chorus run` and of a benchmark scenario. The worker count is always set here,
/// so tokio never reads `TOKIO_WORKER_THREADS` (it panics on a value that is not a number):
/// `runtime.worker_threads` is the setting.
fn multi_thread_runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads).enable_all().build().map_err(|err| {
        eprintln!("error: cannot start the runtime: {err}");
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Checks a `--week` value (`last`, `current` or a date) while parsing the command line.
fn week_spec(text: &str) -> Result<String, String> {
    chorus::report::resolve_week(text, 0).map(|_| text.to_owned())
}

/// `chorus report`: builds the week's report, stores it and prints it (Markdown, or JSON).
fn report(config: &Config, week: &str, json: bool) -> ExitCode {
    let week_start = match chorus::report::resolve_week(week, chorus::store::now_ms()) {
        Ok(week_start) => week_start,
        Err(err) => {
            eprintln!("error: --week: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        use anyhow::Context as _;
        let store = &config.service.store;
        let db = chorus::store::Db::connect_with_password(&store.url, config.store_password.as_ref(), 1)
            .await
            .context("store.url: cannot open the database")?;
        db.migrate().await.context("cannot migrate the database")?;
        let report = chorus::report::generate_and_store(&db, week_start).await.context("cannot build the report");
        db.close().await;
        report
    });
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let text = if json {
        let mut text = serde_json::to_string_pretty(&report).expect("a weekly report always serializes");
        text.push('\n');
        text
    } else {
        report.to_markdown()
    };
    // One write, so a closed pipe (`| head`) is not a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
}

/// Prints the summary in one write, so a closed pipe (`| head`) is not a panic.
fn print_summary(config: &Config) {
    use std::fmt::Write as _;
    let service = &config.service;
    let mut out = String::new();
    // A store URL never holds a password here: validation refuses one (`store.password`).
    let _ = writeln!(out, "configuration {} is valid", config.path.display());
    let _ = writeln!(out, "mode: {:?}", service.mode);
    let _ = writeln!(out, "store: {}", service.store.url);
    let _ = writeln!(out, "runtime: {} worker threads", service.runtime.worker_threads());
    let token = if config.admin_token.is_some() { "set" } else { "not set" };
    let _ = writeln!(out, "admin: http://{} (token {token})", service.admin.listen);
    let providers: Vec<String> =
        service.llm.providers.iter().map(|(name, provider)| format!("{name} ({:?})", provider.kind)).collect();
    let _ = writeln!(
        out,
        "llm providers: {}; default chain: {}",
        providers.join(", "),
        service.llm.default_chain.join(" → ")
    );
    let platforms: Vec<String> = chorus::config::PlatformKind::ALL
        .iter()
        .map(|platform| {
            let state = match (service.platform_enabled(*platform), service.simulated(*platform)) {
                (false, _) => "off",
                (true, true) => "simulated",
                (true, false) => "on",
            };
            format!("{platform}={state}")
        })
        .collect();
    let _ = writeln!(out, "platforms: {}", platforms.join(", "));
    let _ = writeln!(out, "personas ({}):", config.personas.len());
    for persona in config.personas.values() {
        let platforms: Vec<&str> = persona.platforms.iter().map(|p| p.as_str()).collect();
        let _ = writeln!(
            out,
            "  {} — platforms: {}; posts {}; topics: {}",
            persona.name,
            platforms.join(", "),
            describe_schedule(&persona.schedule),
            persona.topics.join(", ")
        );
    }
    let _ = writeln!(out, "agents: {}", config.agent_keys().len());
    let airlock = &service.airlock;
    let policy = &service.policy;
    let _ = writeln!(
        out,
        "airlock: posts {}, replies {}, trades {}; holds expire after {}; two-person rule {}",
        airlock.posts.as_str(),
        airlock.replies.as_str(),
        airlock.trades.as_str(),
        humantime::format_duration(airlock.expire_after.get()),
        if airlock.two_person { "on" } else { "off" }
    );
    let links = if policy.allowed_links.is_empty() { "none".to_owned() } else { policy.allowed_links.join(", ") };
    let _ = writeln!(
        out,
        "policy: {} banned terms; links to {links}; tone review {}",
        policy.banned_terms.len(),
        if policy.tone_review == Some(true) { "on" } else { "off" }
    );
    let traders: Vec<String> = config.trading_personas().iter().map(|persona| persona.name.clone()).collect();
    if !traders.is_empty() {
        let trading = &service.trading;
        let limits = &trading.limits;
        let _ = writeln!(
            out,
            "trading: {} ({}) for {}; allow {}; ${}/trade, ${}/day, ${} exposure; kill switch {}",
            trading.mode.as_str(),
            if service.mode == chorus::config::Mode::Sandbox && trading.simulated {
                "simulated"
            } else {
                "real endpoints"
            },
            traders.join(", "),
            if limits.allow.is_empty() { "nothing".to_owned() } else { limits.allow.join(", ") },
            limits.max_per_trade_usd,
            limits.max_per_day_usd,
            limits.max_exposure_usd,
            if trading.kill_switch { "on" } else { "off" },
        );
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
}

/// `every 2h`, `at 09:00, 18:30 Europe/Paris`, with the daily cap and quiet hours if set.
fn describe_schedule(schedule: &chorus::config::Schedule) -> String {
    let mut parts = Vec::new();
    if let Some(every) = schedule.every {
        parts.push(format!("every {}", humantime::format_duration(every.get())));
    }
    if !schedule.slots.is_empty() {
        parts.push(format!("at {}", schedule.slots.join(", ")));
    }
    if let Some(zone) = &schedule.timezone {
        parts.push(zone.clone());
    }
    if let Some(max) = schedule.max_per_day {
        parts.push(format!("at most {max} a day"));
    }
    if let Some(quiet) = &schedule.quiet_hours {
        parts.push(format!("quiet {quiet}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // The option's number is not exported by `libmimalloc-sys`: an upgrade that renumbered the
        // options would set another one. `purge_delay` is the option whose default is 1,000 ms.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("skipped: MIMALLOC_PURGE_DELAY is set in the environment");
            return;
        }
        // SAFETY: reads one of mimalloc's options.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        purge_freed_memory_at_once();
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 0);
    }
}
