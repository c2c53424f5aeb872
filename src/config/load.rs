//! Reading and validating the configuration. Every problem found is collected, so an operator
//! fixes them all in one go: `config/personas/ada.toml: schedule.every: expected a duration like "90m"`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{Config, Persona, ProviderKind, ServiceConfig};

/// Prefix of environment overrides: `CHORUS__STORE__URL=postgres://…` sets `store.url`.
const ENV_PREFIX: &str = "CHORUS__";
/// Parse attempts per file: each attempt past the first reports one more structural error.
const MAX_ERRORS_PER_FILE: usize = 32;
/// The most runtime worker threads `runtime.worker_threads` may ask for: a typo of a few more
/// digits would otherwise start that many threads.
pub const MAX_WORKER_THREADS: usize = 1024;

/// One problem, located by file (or environment variable) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

/// All problems of one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors for one source file.
struct Report<'a> {
    errors: &'a mut Vec<ConfigError>,
    source: String,
    env_keys: BTreeMap<String, String>,
}

impl Report<'_> {
    /// Whether this file already has an error at `key` (a value that could not be read at all).
    fn has(&self, key: &str) -> bool {
        self.errors.iter().any(|error| error.source == self.source && error.key == key)
    }

    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let source = match self.env_keys.get(&key) {
            Some(var) => format!("environment {var}"),
            None => self.source.clone(),
        };
        self.errors.push(ConfigError { source, key, message: message.into() });
    }
}

/// Loads `path` and the persona files it points to, applying `CHORUS__…` overrides from the
/// process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();

    let mut report = Report { errors: &mut errors, source: path.display().to_string(), env_keys: BTreeMap::new() };
    let Some(mut table) = read_table(path, &mut report) else {
        return Err(ConfigErrors(errors));
    };
    report.env_keys = apply_env_overrides(&mut table, env, &mut report);
    let service: Option<ServiceConfig> = deserialize_all(table, &mut report);
    // Without a usable service file the persona files are still checked, against the defaults.
    // (Its errors are already reported, so the load fails either way.)
    let Some(service) = service.or_else(|| toml::from_str::<ServiceConfig>("").ok()) else {
        return Err(ConfigErrors(errors));
    };
    validate_service(&service, &mut report);
    // An unset token variable disables the admin routes (warned at start); a token file that is
    // configured but unreadable is a mistake.
    let admin_token = match service.admin.token.resolve(&base) {
        Ok(token) => Some(token),
        Err(message) if service.admin.token.file.is_some() || service.admin.token.env.is_none() => {
            report.push("admin.token", message);
            None
        }
        Err(_) => None,
    };
    let store_password = service.store.password.as_ref().and_then(|password| match password.resolve(&base) {
        Ok(secret) => Some(secret),
        Err(message) => {
            report.push("store.password", message);
            None
        }
    });
    let mut llm_keys = BTreeMap::new();
    for (name, provider) in &service.llm.providers {
        if let Some(key_ref) = &provider.api_key {
            match key_ref.resolve(&base) {
                Ok(secret) => {
                    llm_keys.insert(name.clone(), secret);
                }
                Err(message) => report.push(format!("llm.providers.{name}.api_key"), message),
            }
        }
    }

    let jupiter_key = service.trading.jupiter_api_key.as_ref().and_then(|key| match key.resolve(&base) {
        Ok(secret) => Some(secret),
        Err(message) => {
            report.push("trading.jupiter_api_key", message);
            None
        }
    });

    let personas_dir = base.join(&service.personas_dir);
    let personas = load_personas(&personas_dir, &service, &mut errors);
    let persona_secrets = resolve_persona_secrets(&personas_dir, &base, &service, &personas, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        path: path.to_path_buf(),
        service,
        personas,
        admin_token,
        llm_keys,
        store_password,
        persona_secrets,
        jupiter_key,
    })
}

fn read_table(path: &Path, report: &mut Report<'_>) -> Option<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            report.push("", format!("cannot read file: {err}"));
            return None;
        }
    };
    match toml::from_str::<toml::Table>(&text) {
        Ok(table) => Some(table),
        Err(err) => {
            report.push("", format!("invalid TOML: {}", err.message().trim()));
            None
        }
    }
}

/// Applies `CHORUS__A__B=value` as `a.b = value`. Values are read as TOML scalars when they
/// parse as one (`5`, `true`, `"x"`), as plain strings otherwise. Returns key → variable name.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    report: &mut Report<'_>,
) -> BTreeMap<String, String> {
    let mut applied = BTreeMap::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            report.push("", format!("environment {var}: empty key segment"));
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut parsed| parsed.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        match set_path(table, &segments, value) {
            Ok(()) => {
                applied.insert(segments.join("."), var);
            }
            Err(segment) => report.push(segments.join("."), format!("environment {var}: {segment} is not a table")),
        }
    }
    applied
}

/// Deserializes `table` into `T`, reporting as many structural errors as it can: after each
/// error the offending key is removed and deserialization tried again.
fn deserialize_all<T: DeserializeOwned>(mut table: toml::Table, report: &mut Report<'_>) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_ERRORS_PER_FILE {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, T>(value) {
            // Parsed once the bad keys were removed: the errors are already reported, and the rest
            // of the file can still be validated.
            Ok(parsed) => return Some(parsed),
            Err(err) => {
                let path = err.path().to_string();
                // toml appends "in `key`" on a second line; the key is reported on its own.
                let message = err.inner().to_string();
                let message = message.lines().next().unwrap_or_default().trim().to_owned();
                let (key, removable) = locate(&path, &message);
                if removed.contains(&key) {
                    // A required key we removed ourselves after reporting it: nothing new.
                    return None;
                }
                report.push(key.clone(), message);
                if !removable || !remove_path(&mut table, &key) {
                    return None;
                }
                removed.push(key);
            }
        }
    }
    None
}

/// The key an error is about, and whether removing it lets parsing go on.
fn locate(path: &str, message: &str) -> (String, bool) {
    let path = if path == "." { "" } else { path };
    if let Some(field) = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) {
        let key = if path.is_empty() || path.ends_with(field) {
            if path.is_empty() { field.to_owned() } else { path.to_owned() }
        } else {
            format!("{path}.{field}")
        };
        return (key, true);
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
        let key = if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") };
        return (key, false);
    }
    (path.to_owned(), !path.is_empty())
}

/// Sets `segments` (a key path) to `value`, creating tables on the way. Fails with the segment
/// that exists but is not a table.
fn set_path(table: &mut toml::Table, segments: &[String], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else { return Ok(()) };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(inner) => set_path(inner, rest, value),
        _ => Err(first.clone()),
    }
}

/// Removes the key at a dotted path. When the path goes through something that is not a table
/// (an array element), the whole entry is removed.
fn remove_path(table: &mut toml::Table, key: &str) -> bool {
    let segments: Vec<&str> = key.split('.').collect();
    remove_segments(table, &segments)
}

fn remove_segments(table: &mut toml::Table, segments: &[&str]) -> bool {
    let Some((first, rest)) = segments.split_first() else { return false };
    if rest.is_empty() || !matches!(table.get(*first), Some(toml::Value::Table(_))) {
        return table.remove(*first).is_some();
    }
    match table.get_mut(*first) {
        Some(toml::Value::Table(inner)) => remove_segments(inner, rest),
        _ => false,
    }
}

fn validate_service(service: &ServiceConfig, report: &mut Report<'_>) {
    let url = service.store.url.as_str();
    if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        report.push("store.url", "expected sqlite://PATH or postgres://…");
    }
    for (key, duration) in [
        ("store.health_every", service.store.health_every),
        ("publisher.sweep_every", service.publisher.sweep_every),
        ("publisher.retry_initial", service.publisher.retry_initial),
        ("sandbox.crowd_every", service.sandbox.crowd_every),
        ("shutdown.deadline", service.shutdown.deadline),
    ] {
        if duration.get().is_zero() {
            report.push(key, "must be longer than zero");
        }
    }
    if let Ok(url) = reqwest::Url::parse(&service.store.url)
        && url.password().is_some()
    {
        report
            .push("store.url", "must not contain a password: use store.password = { env = \"…\" } or { file = \"…\" }");
    }
    if service.store.max_connections == 0 {
        report.push("store.max_connections", "must be at least 1");
    }
    if service.runtime.worker_threads.is_some_and(|threads| !(1..=MAX_WORKER_THREADS).contains(&threads)) {
        report.push("runtime.worker_threads", format!("must be between 1 and {MAX_WORKER_THREADS}"));
    }
    let supervisor = &service.supervisor;
    if supervisor.max_restarts == 0 {
        report.push("supervisor.max_restarts", "must be at least 1");
    }
    if supervisor.backoff_initial > supervisor.backoff_max {
        report.push("supervisor.backoff_initial", "must not exceed supervisor.backoff_max");
    }
    if supervisor.window.get().is_zero() {
        report.push("supervisor.window", "must be longer than zero");
    }
    if service.llm.default_chain.is_empty() {
        report.push("llm.default_chain", "name at least one provider");
    }
    for name in &service.llm.default_chain {
        if !service.llm.providers.contains_key(name) {
            report.push("llm.default_chain", format!("unknown provider {name:?}"));
        }
    }
    for (name, provider) in &service.llm.providers {
        let key = |field: &str| format!("llm.providers.{name}.{field}");
        if provider.max_queue == 0 {
            report.push(key("max_queue"), "must be at least 1");
        }
        if provider.max_concurrency == 0 {
            report.push(key("max_concurrency"), "must be at least 1");
        }
        let remote = match provider.kind {
            ProviderKind::Offline => None,
            ProviderKind::OpenaiCompat => Some("openai_compat"),
            ProviderKind::Anthropic => Some("anthropic"),
        };
        if let Some(kind) = remote {
            match provider.base_url.as_deref().map(reqwest::Url::parse) {
                None => report.push(key("base_url"), format!("required for kind = \"{kind}\"")),
                Some(Err(err)) => report.push(key("base_url"), format!("not a URL: {err}")),
                Some(Ok(_)) => {}
            }
            if provider.model.is_none() {
                report.push(key("model"), format!("required for kind = \"{kind}\""));
            }
        }
        if provider.max_tokens == 0 {
            report.push(key("max_tokens"), "must be at least 1");
        }
        if provider.max_tokens_ceiling < provider.max_tokens {
            report.push(key("max_tokens_ceiling"), "must not be below max_tokens");
        }
        if provider.breaker_failures == 0 {
            report.push(key("breaker_failures"), "must be at least 1");
        }
        if provider.timeout.get().is_zero() {
            report.push(key("timeout"), "must be longer than zero");
        }
        if provider.retry_initial > provider.retry_max {
            report.push(key("retry_initial"), "must not exceed retry_max");
        }
        for (field, price) in
            [("price_in_per_mtok", provider.price_in_per_mtok), ("price_out_per_mtok", provider.price_out_per_mtok)]
        {
            if !price.is_finite() || price < 0.0 {
                report.push(key(field), "must be a price of zero or more");
            }
        }
    }
    if let Some(embedding) = &service.llm.embedding {
        match service.llm.providers.get(&embedding.provider) {
            None => report.push("llm.embedding.provider", format!("unknown provider {:?}", embedding.provider)),
            Some(provider) if provider.kind == ProviderKind::Anthropic => {
                report.push("llm.embedding.provider", "must be an openai_compat or offline provider")
            }
            Some(_) => {}
        }
        if embedding.max_in_flight == 0 {
            report.push("llm.embedding.max_in_flight", "must be at least 1");
        }
    }
    let budget = &service.llm.budget;
    for (key, tokens) in [
        ("llm.budget.global_daily_tokens", budget.global_daily_tokens),
        ("llm.budget.persona_daily_tokens", budget.persona_daily_tokens),
    ] {
        if tokens == Some(0) {
            report.push(key, "must be at least 1 (leave it out for no cap)");
        }
    }
    for (key, usd) in [
        ("llm.budget.global_daily_usd", budget.global_daily_usd),
        ("llm.budget.persona_daily_usd", budget.persona_daily_usd),
    ] {
        if usd.is_some_and(|usd| !usd.is_finite() || usd <= 0.0) {
            report.push(key, "must be more than zero (leave it out for no cap)");
        }
    }
    if let Some(addr) = service.sandbox.llm_simulator
        && !addr.ip().is_loopback()
    {
        report.push("sandbox.llm_simulator", "must be a loopback address, e.g. \"127.0.0.1:9100\"");
    }
    let x = &service.platforms.x;
    if !(5..=100).contains(&x.mentions_per_poll) {
        report.push("platforms.x.mentions_per_poll", "must be between 5 and 100");
    }
    if service.platforms.reddit.user_agent.trim().is_empty() {
        report.push("platforms.reddit.user_agent", "Reddit requires a descriptive User-Agent");
    }
    let discord = &service.platforms.discord;
    for (key, url) in [
        ("platforms.x.base_url", &x.base_url),
        ("platforms.reddit.auth_base_url", &service.platforms.reddit.auth_base_url),
        ("platforms.reddit.api_base_url", &service.platforms.reddit.api_base_url),
        ("platforms.discord.api_base_url", &discord.api_base_url),
    ] {
        if let Err(err) = reqwest::Url::parse(url) {
            report.push(key, format!("not a URL: {err}"));
        }
    }
    for (key, config) in [
        ("platforms.x", &x.rate_limit),
        ("platforms.reddit", &service.platforms.reddit.rate_limit),
        ("platforms.discord", &discord.rate_limit),
    ] {
        if config.burst == 0 || config.per.get().is_zero() {
            report.push(format!("{key}.rate_limit"), "burst must be at least 1 and per longer than zero");
        }
    }
    for (key, timeout) in [
        ("platforms.x.timeout", x.timeout),
        ("platforms.reddit.timeout", service.platforms.reddit.timeout),
        ("platforms.discord.timeout", discord.timeout),
    ] {
        if timeout.get().is_zero() {
            report.push(key, "must be longer than zero");
        }
    }
    for (key, every) in
        [("platforms.x.poll_every", x.poll_every), ("platforms.reddit.poll_every", service.platforms.reddit.poll_every)]
    {
        if every.get() < Duration::from_millis(10) {
            report.push(key, "must be at least 10ms");
        }
    }
    if discord.max_reply_chars < 100 {
        report.push("platforms.discord.max_reply_chars", "must be at least 100");
    }
    let local = &service.platforms.local;
    if local.rate_limit.burst == 0 {
        report.push("platforms.local.rate_limit.burst", "must be at least 1");
    }
    if local.rate_limit.per.get().is_zero() {
        report.push("platforms.local.rate_limit.per", "must be longer than zero");
    }
    if local.poll_every.get() < Duration::from_millis(10) {
        report.push("platforms.local.poll_every", "must be at least 10ms");
    }
    let memory = &service.memory;
    if !(memory.dedup_threshold > 0.0 && memory.dedup_threshold <= 1.0) {
        report.push("memory.dedup_threshold", "must be more than 0 and at most 1 (a cosine similarity)");
    }
    if memory.sweep_every.get() < Duration::from_millis(10) {
        report.push("memory.sweep_every", "must be at least 10ms");
    }
    if memory.retention.max_per_persona == 0 {
        report.push("memory.retention.max_per_persona", "must be at least 1");
    }
    for (key, age) in [
        ("memory.retention.inbound", memory.retention.inbound),
        ("memory.retention.reply", memory.retention.reply),
        ("memory.retention.post", memory.retention.post),
    ] {
        if age.is_some_and(|age| age.get().is_zero()) {
            report.push(key, "must be longer than zero (leave it out to keep forever)");
        }
    }
    if service.agents.max_in_flight == 0 {
        report.push("agents.max_in_flight", "must be at least 1");
    }
    if service.agents.max_pending < service.agents.max_in_flight {
        report.push("agents.max_pending", "must be at least agents.max_in_flight");
    }
    if service.agents.max_unpublished == 0 {
        report.push("agents.max_unpublished", "must be at least 1");
    }
    for (key, message) in service.trading.problems() {
        report.push(key, message);
    }
    for (key, message) in service.team.problems() {
        report.push(key, message);
    }
    for (key, message) in service.calendar.problems() {
        report.push(key, message);
    }
    for (key, message) in service.policy.problems("") {
        report.push(key, message);
    }
    if service.airlock.expire_after.get().is_zero() {
        report.push("airlock.expire_after", "must be longer than zero");
    }
}

fn load_personas(dir: &Path, service: &ServiceConfig, errors: &mut Vec<ConfigError>) -> BTreeMap<String, Arc<Persona>> {
    let mut personas = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(ConfigError {
                source: dir.display().to_string(),
                key: String::new(),
                message: format!("cannot read persona directory: {err}"),
            });
            return personas;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        errors.push(ConfigError {
            source: dir.display().to_string(),
            key: String::new(),
            message: "no persona files (*.toml) found".to_owned(),
        });
    }
    for file in files {
        let mut report = Report { errors, source: file.display().to_string(), env_keys: BTreeMap::new() };
        let Some(table) = read_table(&file, &mut report) else { continue };
        let Some(persona) = deserialize_all::<Persona>(table, &mut report) else { continue };
        validate_persona(&persona, service, &mut report);
        if personas.contains_key(&persona.name) {
            report.push("name", format!("persona {:?} is defined twice", persona.name));
            continue;
        }
        personas.insert(persona.name.clone(), Arc::new(persona));
    }
    personas
}

/// Resolves the account secrets of personas on an enabled X or Reddit that is not simulated; such a
/// persona must have its account section.
fn resolve_persona_secrets(
    personas_dir: &Path,
    base: &Path,
    service: &ServiceConfig,
    personas: &BTreeMap<String, Arc<Persona>>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<(String, String), crate::config::Secret> {
    use crate::config::{PlatformKind, XAuthConfig};
    let mut secrets = BTreeMap::new();
    for persona in personas.values() {
        let source = personas_dir.join(format!("{}.toml", persona.name)).display().to_string();
        let mut report = Report { errors, source, env_keys: BTreeMap::new() };
        let needs = |platform| {
            persona.platforms.contains(&platform) && service.platform_enabled(platform) && !service.simulated(platform)
        };
        let mut refs: Vec<(&str, &crate::config::SecretRef)> = Vec::new();
        if needs(PlatformKind::X) {
            match &persona.x {
                None => report.push("x", "an [x] account section is required: x is enabled and not simulated"),
                Some(x) => match &x.auth {
                    XAuthConfig::Oauth1 { consumer_key, consumer_secret, access_token, access_token_secret } => refs
                        .extend([
                            ("x.auth.consumer_key", consumer_key),
                            ("x.auth.consumer_secret", consumer_secret),
                            ("x.auth.access_token", access_token),
                            ("x.auth.access_token_secret", access_token_secret),
                        ]),
                    XAuthConfig::Oauth2 { client_secret, access_token, refresh_token, .. } => {
                        refs.push(("x.auth.access_token", access_token));
                        refs.extend(client_secret.iter().map(|secret| ("x.auth.client_secret", secret)));
                        refs.extend(refresh_token.iter().map(|secret| ("x.auth.refresh_token", secret)));
                    }
                },
            }
        }
        if needs(PlatformKind::Reddit) {
            match &persona.reddit {
                None => {
                    report.push("reddit", "a [reddit] account section is required: reddit is enabled and not simulated")
                }
                Some(reddit) => refs
                    .extend([("reddit.client_secret", &reddit.client_secret), ("reddit.password", &reddit.password)]),
            }
        }
        if needs(PlatformKind::Discord) {
            match persona.discord.as_ref().and_then(|discord| discord.token.as_ref()) {
                None => report.push(
                    "discord.token",
                    "a [discord] section with a token is required: discord is enabled and not simulated",
                ),
                Some(token) => refs.push(("discord.token", token)),
            }
        }
        if persona.trades() && service.trading.mode == crate::config::TradingMode::Live {
            match persona.trading.as_ref().and_then(|trading| trading.keypair.as_ref()) {
                None => report.push(
                    "trading.keypair",
                    "a keypair file is required: trading.mode is \"live\" and this persona trades",
                ),
                Some(keypair) => refs.push(("trading.keypair", keypair)),
            }
        }
        for (key, secret_ref) in refs {
            match secret_ref.resolve(base) {
                Ok(secret) => {
                    if key == "trading.keypair"
                        && let Err(err) = crate::trader::wallet::Wallet::from_secret(&secret)
                    {
                        report.push(key, format!("not a usable Solana keypair: {err}"));
                        continue;
                    }
                    secrets.insert((persona.name.clone(), key.to_owned()), secret);
                }
                Err(message) => report.push(key, message),
            }
        }
    }
    secrets
}

fn validate_persona(persona: &Persona, service: &ServiceConfig, report: &mut Report<'_>) {
    let name_ok = !persona.name.is_empty()
        && persona.name.len() <= 32
        && persona.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok {
        report.push("name", "expected 1 to 32 lowercase letters, digits or underscores");
    }
    if persona.bio.trim().is_empty() {
        report.push("bio", "must not be empty");
    }
    if persona.voice.trim().is_empty() {
        report.push("voice", "must not be empty");
    }
    if persona.topics.iter().all(|topic| topic.trim().is_empty()) {
        report.push("topics", "name at least one topic");
    }
    if persona.platforms.is_empty() {
        report.push("platforms", "name at least one platform");
    }
    let mut schedule_problems = BTreeMap::new();
    for platform in &persona.platforms {
        if let Err(problems) = persona.schedule.rule(*platform) {
            schedule_problems.extend(problems);
        }
    }
    for (key, message) in schedule_problems {
        // `schedule.every = "soon"` was reported when it was read: no second error for it.
        if !report.has(&key) {
            report.push(key, message);
        }
    }
    if let Some(policy) = &persona.policy {
        for (key, message) in policy.problems("") {
            report.push(key, message);
        }
    }
    if persona.airlock.as_ref().and_then(|airlock| airlock.expire_after).is_some_and(|after| after.get().is_zero()) {
        report.push("airlock.expire_after", "must be longer than zero");
    }
    for (key, chain) in [
        ("llm_chain", &persona.llm_chain),
        ("llm_chains.reply", &persona.chains().reply),
        ("llm_chains.post", &persona.chains().post),
        ("llm_chains.trade", &persona.chains().trade),
        ("llm_chains.review", &persona.chains().review),
    ] {
        for provider in chain {
            if !service.llm.providers.contains_key(provider) {
                report.push(key, format!("unknown provider {provider:?}"));
            }
        }
    }
    if let Some(discord) = &persona.discord {
        let ids = discord.channels.iter().map(|id| ("discord.channels", id));
        for (key, id) in ids.chain(discord.post_channel.iter().map(|id| ("discord.post_channel", id))) {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) || id.parse::<u64>().is_err() {
                report.push(key, format!("expected a channel id (a number), got {id:?}"));
            }
        }
    }
    if let Some(budget) = &persona.budget {
        if budget.daily_tokens == Some(0) {
            report.push("budget.daily_tokens", "must be at least 1 (leave it out for no cap)");
        }
        if budget.daily_usd.is_some_and(|usd| !usd.is_finite() || usd <= 0.0) {
            report.push("budget.daily_usd", "must be more than zero (leave it out for no cap)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::write_test_file as write;
    use crate::config::{Mode, Secret};

    const PERSONA: &str = r#"
name = "ada"
bio = "b"
voice = "v"
topics = ["rust"]
platforms = ["local"]
schedule = { every = "90m" }
"#;

    #[test]
    fn valid_config_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "");
        write(dir.path(), "personas/ada.toml", PERSONA);
        let config = load_with_env(&dir.path().join("chorus.toml"), []).unwrap();
        assert_eq!(config.personas["ada"].schedule.every.unwrap().get(), Duration::from_secs(90 * 60));
        assert_eq!(config.agent_keys().len(), 1);
        assert_eq!(config.service.mode, Mode::Sandbox);
    }

    #[test]
    fn every_error_is_reported_with_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "chorus.toml",
            "colour = 1\n[store]\nmax_connections = 0\n[agents]\nmax_in_flight = 8\nmax_pending = 4\nmax_unpublished = 0\n\
             [llm.embedding]\nprovider = \"offline\"\nmodel = \"m\"\nmax_in_flight = 0\n[runtime]\nworker_threads = 0\n",
        );
        write(
            dir.path(),
            "personas/ada.toml",
            &PERSONA.replace("\"90m\"", "\"soon\"").replace("bio = \"b\"", "bio = \"b\"\nmood = 2"),
        );
        write(dir.path(), "personas/bob.toml", &PERSONA.replace("ada", "Bob!"));
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(errors.contains("chorus.toml: colour: unknown field"), "{errors}");
        assert!(errors.contains("chorus.toml: store.max_connections: must be at least 1"), "{errors}");
        assert!(errors.contains("chorus.toml: agents.max_pending: must be at least agents.max_in_flight"), "{errors}");
        assert!(errors.contains("chorus.toml: agents.max_unpublished: must be at least 1"), "{errors}");
        assert!(errors.contains("chorus.toml: llm.embedding.max_in_flight: must be at least 1"), "{errors}");
        assert!(errors.contains("chorus.toml: runtime.worker_threads: must be between 1 and 1024"), "{errors}");
        assert!(errors.contains("ada.toml: mood: unknown field"), "{errors}");
        assert!(errors.contains("ada.toml: schedule.every: expected a duration like \"90m\""), "{errors}");
        assert!(errors.contains("bob.toml: name: expected 1 to 32 lowercase"), "{errors}");
    }

    #[test]
    fn env_overrides_apply_and_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "[store]\nurl = \"sqlite://a.db\"\n");
        write(dir.path(), "personas/ada.toml", PERSONA);
        let env = [
            ("CHORUS__STORE__URL".to_owned(), "postgres://localhost/test".to_owned()),
            ("CHORUS__ADMIN__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("CHORUS__AGENTS__MAX_IN_FLIGHT".to_owned(), "7".to_owned()),
            ("CHORUS__RUNTIME__WORKER_THREADS".to_owned(), "1".to_owned()),
        ];
        let config = load_with_env(&dir.path().join("chorus.toml"), env).unwrap();
        assert_eq!(config.service.store.url, "postgres://localhost/test");
        assert_eq!(config.service.admin.listen.port(), 0);
        assert_eq!(config.service.agents.max_in_flight, 7);
        assert_eq!(config.service.runtime.worker_threads(), 1);

        let env = [("CHORUS__STORE__MAX_CONNECTIONS".to_owned(), "many".to_owned())];
        let errors = load_with_env(&dir.path().join("chorus.toml"), env).unwrap_err().to_string();
        assert!(errors.contains("environment CHORUS__STORE__MAX_CONNECTIONS: store.max_connections"), "{errors}");
    }

    #[test]
    fn a_bad_value_is_reported_once_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "");
        write(dir.path(), "personas/ada.toml", &PERSONA.replace("\"90m\"", "\"soon\""));
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].key, "schedule.every");
        assert!(!errors.0[0].message.contains('\n'), "{errors}");
        let typed = PERSONA.replace("\"90m\"", "5");
        write(dir.path(), "personas/ada.toml", &typed);
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(
            errors.contains("schedule.every: invalid type: integer `5`, expected a duration like \"90m\""),
            "{errors}"
        );
    }

    #[test]
    fn zero_intervals_passwords_in_urls_and_unreadable_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "chorus.toml",
            "[store]\nurl = \"postgres://u:hunter2@db/chorus\"\nhealth_every = \"0s\"\n\
             [publisher]\nsweep_every = \"0ms\"\n[admin]\ntoken = { file = \"missing-token\" }\n",
        );
        write(dir.path(), "personas/ada.toml", PERSONA);
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(errors.contains("store.health_every: must be longer than zero"), "{errors}");
        assert!(errors.contains("publisher.sweep_every: must be longer than zero"), "{errors}");
        assert!(errors.contains("store.url: must not contain a password"), "{errors}");
        assert!(errors.contains("admin.token: cannot read secret file"), "{errors}");
        assert!(!errors.contains("hunter2"), "a password must never be echoed: {errors}");
    }

    #[test]
    fn secrets_resolve_from_files_and_an_unset_admin_token_variable_disables_admin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        write(
            dir.path(),
            "chorus.toml",
            "[store]\nurl = \"postgres://u@db/chorus\"\npassword = { file = \"pw\" }\n\
             [admin]\ntoken = { env = \"CHORUS_TEST_TOKEN_THAT_IS_NOT_SET\" }\n",
        );
        write(dir.path(), "personas/ada.toml", PERSONA);
        let config = load_with_env(&dir.path().join("chorus.toml"), []).unwrap();
        assert_eq!(config.store_password.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(config.admin_token.is_none());
        assert!(!format!("{config:?}").contains("s3cret"), "Debug output must redact secrets");
    }

    #[test]
    fn real_x_and_reddit_accounts_need_their_sections_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "[platforms.x]\nenabled = true\n[platforms.reddit]\nenabled = true\n");
        let on_all = PERSONA.replace("platforms = [\"local\"]", "platforms = [\"local\", \"x\", \"reddit\"]");
        write(dir.path(), "personas/ada.toml", &on_all);
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(errors.contains("ada.toml: x: an [x] account section is required"), "{errors}");
        assert!(errors.contains("ada.toml: reddit: a [reddit] account section is required"), "{errors}");

        std::fs::write(dir.path().join("x_token"), "tok").unwrap();
        let with_accounts = format!(
            "{on_all}\n[x]\nusername = \"Ada_Bot\"\nauth = {{ kind = \"oauth2\", client_id = \"cid\", access_token = {{ file = \"x_token\" }} }}\n\
             [reddit]\nusername = \"ada_r\"\nclient_id = \"c\"\nclient_secret = {{ file = \"missing\" }}\n\
             password = {{ env = \"CHORUS_TEST_UNSET_PASSWORD\" }}\nsubreddit = \"test\"\n"
        );
        write(dir.path(), "personas/ada.toml", &with_accounts);
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(errors.contains("ada.toml: reddit.client_secret: cannot read secret file"), "{errors}");
        assert!(
            errors.contains("ada.toml: reddit.password: environment variable CHORUS_TEST_UNSET_PASSWORD is not set"),
            "{errors}"
        );
        assert!(!errors.contains("x.auth"), "the x token resolved: {errors}");

        // Simulated platforms need no account at all.
        write(
            dir.path(),
            "chorus.toml",
            "[platforms.x]\nenabled = true\nsimulated = true\n[platforms.reddit]\nenabled = true\nsimulated = true\n",
        );
        write(dir.path(), "personas/ada.toml", &on_all);
        let config = load_with_env(&dir.path().join("chorus.toml"), []).unwrap();
        assert_eq!(config.agent_keys().len(), 3);
        assert_eq!(config.personas["ada"].handle_on(crate::config::PlatformKind::X), "ada");
    }

    #[test]
    fn a_real_discord_bot_needs_a_token_and_numeric_channel_ids() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "[platforms.discord]\nenabled = true\nmax_reply_chars = 10\n");
        let on_discord = PERSONA.replace("platforms = [\"local\"]", "platforms = [\"local\", \"discord\"]");
        write(dir.path(), "personas/ada.toml", &on_discord);
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(errors.contains("ada.toml: discord.token: a [discord] section with a token is required"), "{errors}");
        assert!(errors.contains("chorus.toml: platforms.discord.max_reply_chars: must be at least 100"), "{errors}");

        write(dir.path(), "chorus.toml", "[platforms.discord]\nenabled = true\n");
        std::fs::write(dir.path().join("discord_token"), "tok\n").unwrap();
        let with_bot = format!(
            "{on_discord}\n[discord]\ntoken = {{ file = \"discord_token\" }}\nchannels = [\"123\", \"#general\"]\n\
             post_channel = \"\"\n"
        );
        write(dir.path(), "personas/ada.toml", &with_bot);
        let errors = load_with_env(&dir.path().join("chorus.toml"), []).unwrap_err().to_string();
        assert!(
            errors.contains("ada.toml: discord.channels: expected a channel id (a number), got \"#general\""),
            "{errors}"
        );
        assert!(errors.contains("ada.toml: discord.post_channel: expected a channel id"), "{errors}");
        assert!(!errors.contains("discord.token"), "the token resolved: {errors}");

        write(
            dir.path(),
            "personas/ada.toml",
            &with_bot.replace(", \"#general\"", "").replace("post_channel = \"\"", ""),
        );
        let config = load_with_env(&dir.path().join("chorus.toml"), []).unwrap();
        assert_eq!(config.persona_secret("ada", "discord.token").unwrap().expose(), "tok");
        assert_eq!(config.agent_keys().len(), 2);
    }
}
