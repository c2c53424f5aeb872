//! The secret rule: configured secret values and token-shaped strings in a text.
//!
//! Findings are described by a label ("llm key openai") or a shape ("sk- key"), never by the
//! value. A stretch of text is reported once: a configured value is not reported again as the
//! token it looks like, nor a JWT again as a long blob.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use crate::config::{Config, Secret};

/// Configured values shorter than this are not looked for: they occur in ordinary text.
const MIN_SECRET_CHARS: usize = 6;

/// A run of key characters at least this long that mixes letters and digits is a key.
const MIN_BLOB_CHARS: usize = 32;

/// Within a blob, a piece between `/`, `-`, `_` or `+` this long that mixes letters and digits
/// marks it as a key; shorter pieces are URL paths and slugs (`2024/05/launch-notes-v2`).
const MIN_BLOB_PIECE_CHARS: usize = 16;

/// Every configured secret value, to keep out of anything published. `Debug` shows the labels
/// only: the values are [`Secret`]s, which redact themselves.
#[derive(Debug, Clone, Default)]
pub struct SecretSet {
    values: Vec<(String, Secret)>,
}

impl SecretSet {
    /// Every secret of the configuration, labelled by where it comes from: `admin token`,
    /// `llm key <provider>`, `store password`, `<persona> <key>` (`ada x.access_token`) and
    /// `jupiter key`.
    pub fn from_config(config: &Config) -> SecretSet {
        let mut values = Vec::new();
        if let Some(token) = &config.admin_token {
            values.push(("admin token".to_owned(), token.clone()));
        }
        for (provider, key) in &config.llm_keys {
            values.push((format!("llm key {provider}"), key.clone()));
        }
        if let Some(password) = &config.store_password {
            values.push(("store password".to_owned(), password.clone()));
        }
        for ((persona, key), secret) in &config.persona_secrets {
            values.push((format!("{persona} {key}"), secret.clone()));
        }
        if let Some(key) = &config.jupiter_key {
            values.push(("jupiter key".to_owned(), key.clone()));
        }
        SecretSet::new(values)
    }

    /// `(label, value)` pairs. Values shorter than 6 characters are kept but never looked for.
    pub fn new(values: Vec<(String, Secret)>) -> SecretSet {
        SecretSet { values }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values long enough to look for, with their labels.
    fn searchable(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(label, secret)| (label.as_str(), secret.expose()))
            .filter(|(_, value)| value.chars().count() >= MIN_SECRET_CHARS)
    }

    /// `fragment` (a host or handle quoted from a text) as a reason may show it: `[redacted]`
    /// when it holds a configured value in any case (hosts are lowercased) or a token shape.
    pub(super) fn redact<'t>(&self, fragment: &'t str) -> Cow<'t, str> {
        let lowered = fragment.to_lowercase();
        let holds_value = self.searchable().any(|(_, value)| lowered.contains(&value.to_lowercase()));
        if holds_value || !find(fragment, &SecretSet::default()).is_empty() {
            Cow::Borrowed("[redacted]")
        } else {
            Cow::Borrowed(fragment)
        }
    }
}

/// Token shapes with a recognizable prefix or structure, most specific first.
static SHAPES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("private key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"),
        ("sk- key", r"\bsk-[A-Za-z0-9_-]{20,}"),
        ("GitHub token", r"\b(?:gh[opsur]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
        ("Slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
        ("AWS access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("JWT", r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        ("Discord bot token", r"[A-Za-z0-9_-]{24,}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),
        ("bearer token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}"),
        // A keypair file's bytes, `[174, 47, ...]` (Solana's `id.json`).
        ("byte-array key", r"\[\s*(?:\d{1,3}\s*,\s*){31,}\d{1,3}\s*\]"),
    ]
    .into_iter()
    .map(|(kind, pattern)| (kind, Regex::new(pattern).expect("token shape patterns are valid")))
    .collect()
});

/// Runs of hex, base58 and base64 characters, candidates for [`is_blob`].
static KEY_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_-]{32,}").expect("the key run pattern is valid"));

/// Reasons for every secret in `text`: one per configured label, one per token shape.
pub(super) fn find(text: &str, secrets: &SecretSet) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut covered: Vec<Range<usize>> = Vec::new();
    for (label, value) in secrets.searchable() {
        let spans: Vec<Range<usize>> =
            text.match_indices(value).map(|(start, value)| start..start + value.len()).collect();
        if !spans.is_empty() {
            reasons.push(format!("contains a configured secret ({label})"));
            covered.extend(spans);
        }
    }
    let blobs = KEY_RUN.find_iter(text).filter(|run| is_blob(run.as_str())).map(|run| ("long key-like string", run));
    let shapes = SHAPES.iter().flat_map(|(kind, pattern)| pattern.find_iter(text).map(move |found| (*kind, found)));
    let mut kinds: Vec<&str> = Vec::new();
    for (kind, found) in shapes.chain(blobs) {
        let span = found.range();
        if covered.iter().any(|seen| seen.start < span.end && span.start < seen.end) {
            continue;
        }
        covered.push(span);
        if !kinds.contains(&kind) {
            kinds.push(kind);
            reasons.push(format!("contains a token-shaped string ({kind})"));
        }
    }
    reasons
}

/// Whether a run of key characters is a key rather than a URL path or a slug: some piece of it
/// is long and mixes letters and digits.
fn is_blob(run: &str) -> bool {
    let mixes = |piece: &str| {
        piece.bytes().any(|byte| byte.is_ascii_alphabetic()) && piece.bytes().any(|byte| byte.is_ascii_digit())
    };
    run.len() >= MIN_BLOB_CHARS
        && run.split(['/', '-', '_', '+']).any(|piece| piece.len() >= MIN_BLOB_PIECE_CHARS && mixes(piece))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::config::{PlatformKind, PolicyRule};

    const OPENAI_KEY: &str = "sk-proj-Zq8xY3vTn6Lm2Pw9Rk4Hc7Jd5Fb1Gs0A";

    fn with_secrets() -> Fixture {
        let mut fixture = Fixture::on(PlatformKind::Local);
        fixture.secrets = SecretSet::new(vec![
            ("llm key openai".into(), Secret::new(OPENAI_KEY)),
            ("ada reddit.password".into(), Secret::new("hunter2!")),
            ("short".into(), Secret::new("abc12")),
        ]);
        fixture
    }

    #[test]
    fn a_configured_value_blocks_and_the_reason_names_only_its_label() {
        let fixture = with_secrets();
        let review = fixture.review(&format!("debug: {OPENAI_KEY} ok"));
        assert_eq!(review.violations.len(), 1, "one finding, not the key and its shape: {review:?}");
        assert_eq!(review.violations[0].reason, "contains a configured secret (llm key openai)");
        assert!(review.blocked());
        assert!(!review.reasons().contains(&OPENAI_KEY[3..12]));

        let review = fixture.review("my password is hunter2!");
        assert_eq!(review.reasons(), "secret: contains a configured secret (ada reddit.password)");
        assert!(!review.reasons().contains("hunter2"));
    }

    #[test]
    fn configured_values_are_case_sensitive_and_short_ones_ignored() {
        let fixture = with_secrets();
        assert_eq!(fixture.rules("HUNTER2! is a meme"), vec![]);
        assert_eq!(fixture.rules("abc12 is not a secret worth finding"), vec![]);
    }

    #[test]
    fn token_shapes_are_caught_and_named_without_their_value() {
        let fixture = Fixture::on(PlatformKind::Local);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let cases = [
            ("sk-ant-api03-abcdefghijklmnopqrstuvwx", "sk- key"),
            ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "GitHub token"),
            ("github_pat_11ABCDEFG0123456789_abcdefghij", "GitHub token"),
            ("xoxb-1234567890-abcdefghij", "Slack token"),
            ("AKIAIOSFODNN7EXAMPLE", "AWS access key"),
            (jwt, "JWT"),
            ("MTA1MjM0NTY3ODkwMTIzNDU2Nzg.GAbCdE.aBcDeFgHiJkLmNoPqRsTuVwXyZ01234", "Discord bot token"),
            ("Authorization: Bearer abcDEF123ghiJKL456mnoPQR", "bearer token"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
            ("-----BEGIN PRIVATE KEY-----", "private key"),
            (
                "4NwwCq5bBkhmKq1hB6gDZqLzMS7KaoDnZHq1DcgVNbrADTg1wjzoXXd5mF7fV4i8LTuMqDUAkTkcw4sZxEPW5ZdK",
                "long key-like string",
            ),
            ("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318", "long key-like string"),
        ];
        for (text, kind) in cases {
            let review = fixture.review(&format!("oops: {text} (sorry)"));
            assert_eq!(review.reasons(), format!("secret: contains a token-shaped string ({kind})"), "{text}");
            assert!(review.blocked());
        }
        let bytes: Vec<String> = (0..64).map(|byte| (byte * 3).to_string()).collect();
        let keypair = format!("[{}]", bytes.join(","));
        assert_eq!(fixture.rules(&keypair), vec![PolicyRule::Secret]);
    }

    #[test]
    fn prose_numbers_and_urls_are_not_secrets() {
        let mut fixture = Fixture::on(PlatformKind::Local);
        fixture.policy.allowed_links = vec!["example.com".into()];
        fixture.policy.pii = false;
        let texts = [
            "In 2024 we shipped 3 releases, 1,299 commits and 42 fixes; version 1.2.3 is out for $19.99.",
            "Read https://example.com/blog/2024/05/roadmap-for-the-next-12-months-and-beyond-v2 today",
            "https://example.com/search?q=rust+async+runtime+comparison+2024&page=2&sort=relevance",
            "The sky-is-the-limit-approach-to-building-communities-in-2024 talk was great",
            "Our task-runner handles 128 jobs; bearer of good news: tests pass!",
            "A UUID like 550e8400-e29b-41d4-a716-446655440000 is an id, not a key",
        ];
        for text in texts {
            assert_eq!(fixture.rules(text), vec![], "{text}");
        }
    }

    #[test]
    fn debug_never_prints_values_and_redact_hides_them_in_fragments() {
        let fixture = with_secrets();
        let debug = format!("{:?}", fixture.secrets);
        assert!(debug.contains("llm key openai") && !debug.contains("Zq8x") && !debug.contains("hunter2"));
        assert_eq!(fixture.secrets.len(), 3);
        assert!(!fixture.secrets.is_empty() && SecretSet::default().is_empty());
        assert_eq!(fixture.secrets.redact("HUNTER2!.evil.example"), "[redacted]");
        assert_eq!(fixture.secrets.redact("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"), "[redacted]");
        assert_eq!(fixture.secrets.redact("evil.example"), "evil.example");
    }

    #[test]
    fn a_host_holding_a_secret_is_redacted_in_the_link_reason() {
        let fixture = with_secrets();
        let review = fixture.review("https://HUNTER2!.evil.example/");
        assert_eq!(review.reasons(), "link: link to [redacted] is not on the allowlist");
    }

    #[test]
    fn the_configuration_s_secrets_are_labelled_by_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("admin-token", "admin-token-value-42\n");
        write("db-password", "db-password-value-42\n");
        write(
            "chorus.toml",
            "[store]\nurl = \"postgres://u@db/chorus\"\npassword = { file = \"db-password\" }\n\
             [admin]\ntoken = { file = \"admin-token\" }\n",
        );
        write(
            "personas/ada.toml",
            "name = \"ada\"\nbio = \"b\"\nvoice = \"v\"\ntopics = [\"rust\"]\nplatforms = [\"local\"]\n\
             schedule = { every = \"90m\" }\n",
        );
        let config = crate::config::load(&dir.path().join("chorus.toml")).unwrap();
        let secrets = SecretSet::from_config(&config);
        assert_eq!(secrets.len(), 2);
        let reasons = find("leaked admin-token-value-42 and db-password-value-42", &secrets);
        assert_eq!(
            reasons,
            vec!["contains a configured secret (admin token)", "contains a configured secret (store password)"]
        );
    }
}
