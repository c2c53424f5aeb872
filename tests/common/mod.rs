//! Helpers shared by the integration tests: a sandbox directory with a config, an in-process
//! service, the real `chorus` binary as a child process, an HTTP client for the admin server and
//! a polling helper (no fixed sleeps).

#![allow(dead_code)]

pub mod discord_spec;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

pub const TOKEN: &str = "test-admin-token";

/// A directory holding `chorus.toml`, `personas/` and the SQLite database.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// Fast timings, no crowd, port 0, JSON logs, personas `ada` and `bob`. `extra` is appended to
    /// `chorus.toml` (later sections override nothing: write only sections not present below).
    pub fn new(extra: &str) -> Self {
        Self::with_store(extra, None)
    }

    pub fn with_store(extra: &str, store_url: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_url =
            store_url.map(str::to_owned).unwrap_or_else(|| format!("sqlite://{}/chorus.db", dir.path().display()));
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        let base = format!(
            r#"mode = "sandbox"

[store]
url = "{store_url}"
health_every = "200ms"

[admin]
listen = "127.0.0.1:0"
token = {{ file = "token" }}

[telemetry]
format = "json"
filter = "info"

[platforms.local]
poll_every = "100ms"
rate_limit = {{ burst = 1000, per = "1s" }}

[publisher]
sweep_every = "100ms"
retry_initial = "200ms"
retry_max = "1s"

[sandbox]
crowd = false
"#
        );
        std::fs::write(dir.path().join("chorus.toml"), format!("{base}\n{extra}")).unwrap();
        let sandbox = Self { dir };
        sandbox.write_persona("ada", &["compilers", "gardening"]);
        sandbox.write_persona("bob", &["coffee", "cooking"]);
        sandbox
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("chorus.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("chorus.db")
    }

    pub fn write_persona(&self, name: &str, topics: &[&str]) {
        self.write_persona_on(name, topics, &["local"]);
    }

    /// A persona on the given platforms (`"local"`, `"x"`, `"reddit"`).
    pub fn write_persona_on(&self, name: &str, topics: &[&str], platforms: &[&str]) {
        let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
        let platforms: Vec<String> = platforms.iter().map(|p| format!("{p:?}")).collect();
        let text = format!(
            r#"name = "{name}"
bio = "{name} is a test persona."
voice = "Plain."
topics = [{}]
example_posts = ["A sentence in {name}'s voice."]
platforms = [{}]

[schedule]
every = "1h"
jitter = "1s"
"#,
            topics.join(", "),
            platforms.join(", ")
        );
        self.write("personas", &format!("{name}.toml"), &text);
    }

    pub fn write(&self, subdir: &str, file: &str, text: &str) {
        let dir = self.dir.path().join(subdir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    pub fn load(&self) -> chorus::config::Config {
        chorus::config::load(&self.config_path()).unwrap_or_else(|errors| panic!("test config invalid:\n{errors}"))
    }

    pub async fn start(&self) -> chorus::service::Service {
        chorus::service::start(self.load()).await.expect("service starts")
    }
}

/// A post as the local platform's API returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Post {
    pub id: i64,
    pub author: String,
    pub text: String,
    pub reply_to: Option<i64>,
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self { base: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    pub async fn post(&self, author: &str, text: &str) -> Post {
        let response = self
            .http
            .post(format!("{}/local/posts", self.base))
            .json(&json!({ "author": author, "text": text }))
            .send()
            .await
            .expect("post request");
        assert_eq!(response.status(), 201, "post failed: {:?}", response.text().await);
        response.json().await.expect("post json")
    }

    pub async fn replies(&self, id: i64) -> Vec<Post> {
        let body: Value = self.get_json(&format!("/local/posts/{id}/replies")).await;
        serde_json::from_value(body["posts"].clone()).expect("replies json")
    }

    pub async fn timeline(&self) -> Vec<Post> {
        let body: Value = self.get_json("/local/timeline?limit=500").await;
        serde_json::from_value(body["posts"].clone()).expect("timeline json")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("get").json().await.expect("json")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("get")
    }

    pub async fn text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("get").text().await.expect("text")
    }

    /// The value of one sample on `/metrics`: its name with its labels as exposed, e.g.
    /// `chorus_memory_graph_builds_total{outcome="built"}`; `None` if it is not there.
    pub async fn sample(&self, sample: &str) -> Option<f64> {
        let text = self.text("/metrics").await;
        text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Polls `check` every 25 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The real `chorus` binary, running `chorus run` on a sandbox, with its log captured.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts with extra environment variables (e.g. `CHORUS__…` overrides).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chorus");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (stream, is_stdout) in
            [(Box::new(stdout) as Box<dyn std::io::Read + Send>, true), (Box::new(stderr), false)]
        {
            let log = log.clone();
            let addr_tx = addr_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if is_stdout
                        && let Ok(event) = serde_json::from_str::<Value>(&line)
                        && event["message"] == "admin server listening"
                        && let Some(addr) = event["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = addr_tx.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("chorus did not start; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Self { child, addr, log }
    }

    pub fn api(&self) -> Api {
        Api::new(self.addr)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("chorus did not exit within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(needle))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment variable naming the Postgres server of the `#[ignore]`d Postgres tests.
pub const POSTGRES_URL_VAR: &str = "CHORUS_TEST_POSTGRES_URL";

/// A fresh Postgres database for one test, created through the server named by
/// `CHORUS_TEST_POSTGRES_URL` (the tests that use it are `#[ignore]`d unless that is set and
/// `--ignored` is passed, as `.ci/run` does; unset, they fail loudly). [`TestDatabase::drop_now`]
/// drops it, and so does `Drop` when the test panicked before that.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
    dropped: bool,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VAR} is not set: the Postgres tests need a server, e.g. \
                 {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test cargo test -- --ignored"
            )
        });
        let name = format!("chorus_test_{:016x}", rand::random::<u64>());
        admin_execute(&admin_url, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("CREATE DATABASE {name} through {admin_url}: {err}"));
        let url = with_database(&admin_url, &name);
        Self { admin_url, name, url, dropped: false }
    }

    pub async fn drop_now(&mut self) {
        drop_database(&self.admin_url, &self.name).await.unwrap_or_else(|err| panic!("drop {}: {err}", self.name));
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The test panicked: drop the database from a runtime of our own, since `Drop` cannot await.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(drop_database(&admin_url, &name)).map_err(std::io::Error::other)
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!("could not drop test database {}: the cleanup thread panicked", self.name),
        }
    }
}

async fn admin_execute(admin_url: &str, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(admin_url).await?;
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await;
    pool.close().await;
    result.map(drop)
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    admin_execute(admin_url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// `url` with its database name replaced by `database` (query parameters are kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|at| at + 3).unwrap_or_else(|| panic!("not a URL: {url}"));
    let authority_end = base[authority_start..].find('/').map_or(base.len(), |at| authority_start + at);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Collects log lines written through a `tracing` subscriber, for asserting on what was logged.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || sink.clone())
            .finish()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
