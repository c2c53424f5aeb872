//! The policy review: every draft is checked before it is published, and each violation either
//! blocks it or flags it for a human (the airlock holds flagged items under `hold-if-flagged`).
//!
//! [`review`] is pure and offline. It checks one text against a persona's [`EffectivePolicy`]
//! and the [`ReviewContext`] of the platform it goes to, rule by rule ([`PolicyRule`]):
//!
//! - **secret** ([`secrets`]): a configured secret value (from [`SecretSet`]; values shorter than
//!   6 characters are not looked for), or a token-shaped string: `sk-` keys, GitHub, Slack and
//!   Discord bot tokens, AWS access keys, JWTs, `Bearer` tokens, PEM private keys, byte-array
//!   keys and long letter-and-digit blobs (hex, base58, base64). Always blocks.
//! - **banned_term**: a configured word or phrase, case-insensitive, as a whole word
//!   ("moon" does not match "moonlight").
//! - **link** ([`links`]): a URL (`http(s)://`, `www.`, or a bare domain with a common TLD)
//!   whose host is neither an `allowed_links` domain nor one of its subdomains. No link is
//!   allowed when the list is empty.
//! - **mention** ([`mentions`]): an `@handle` (and `u/name` on Reddit) that is not on the team,
//!   not the author answered and not in `allowed_mentions`. Email addresses are not mentions.
//! - **pii** ([`pii`], when `policy.pii`): email addresses and phone numbers.
//! - **length**: more characters (Unicode scalar values) than the platform's longest text.
//! - **format** ([`format`]): markdown that X and the local platform would show literally;
//!   Reddit and Discord render it. [`adapt`] strips it beforehand.
//! - **tone**: the optional LLM check, outside [`review`]: [`tone_messages`] builds the prompt,
//!   [`parse_tone`] reads the answer and [`Review::push_tone`] records it.
//!
//! A violation blocks unless its rule is listed in `policy.flag_only`, where it only flags;
//! a secret always blocks.
//!
//! **Invariant: no reason ever repeats a secret.** Reasons are stored, logged and shown on the
//! admin API. A secret violation names the configured label ("llm key openai") or the shape
//! ("sk- key"), pii names the kind ("a phone number"), and hosts or handles quoted from the
//! text are replaced by `[redacted]` when they contain a secret.

mod format;
mod links;
mod mentions;
mod pii;
mod secrets;
mod tone;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::{EffectivePolicy, PlatformKind, PolicyRule};

pub use format::adapt;
pub use secrets::SecretSet;
pub use tone::{parse_tone, tone_messages};

/// Where a text goes: what [`review`] needs to know beyond the policy.
#[derive(Debug, Clone, Copy)]
pub struct ReviewContext<'a> {
    pub platform: PlatformKind,
    /// The platform's longest text, in characters.
    pub max_chars: usize,
    /// Every persona's handle on this platform, lowercase, without `@`.
    pub team: &'a BTreeSet<String>,
    /// The author being answered, who may be @-mentioned.
    pub replying_to: Option<&'a str>,
    pub secrets: &'a SecretSet,
}

/// What a violation does to the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Never published.
    Block,
    /// Published, or held for a human under `hold-if-flagged`.
    Flag,
}

/// One broken rule. `reason` never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: PolicyRule,
    pub action: Action,
    pub reason: String,
}

/// Every violation found in one text; empty when it may go out as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    pub violations: Vec<Violation>,
}

impl Review {
    /// Whether any violation blocks the item.
    pub fn blocked(&self) -> bool {
        self.violations.iter().any(|violation| violation.action == Action::Block)
    }

    /// Whether any violation flags the item.
    pub fn flagged(&self) -> bool {
        self.violations.iter().any(|violation| violation.action == Action::Flag)
    }

    /// Every violation as `rule: reason`, separated by `; `.
    pub fn reasons(&self) -> String {
        let reasons: Vec<String> = self
            .violations
            .iter()
            .map(|violation| format!("{}: {}", violation.rule.as_str(), violation.reason))
            .collect();
        reasons.join("; ")
    }

    /// Records the LLM tone review's objection, flagged or blocking as the policy says.
    pub fn push_tone(&mut self, policy: &EffectivePolicy, reason: String) {
        self.push(policy, PolicyRule::Tone, reason);
    }

    fn push(&mut self, policy: &EffectivePolicy, rule: PolicyRule, reason: String) {
        self.violations.push(Violation { rule, action: action(policy, rule), reason });
    }
}

/// What a violation of `rule` does under `policy`.
fn action(policy: &EffectivePolicy, rule: PolicyRule) -> Action {
    if rule != PolicyRule::Secret && policy.flag_only.contains(&rule) { Action::Flag } else { Action::Block }
}

/// Checks `text` against every rule but tone; see the module documentation.
pub fn review(policy: &EffectivePolicy, text: &str, ctx: &ReviewContext<'_>) -> Review {
    let mut review = Review::default();
    for reason in secrets::find(text, ctx.secrets) {
        review.push(policy, PolicyRule::Secret, reason);
    }
    for term in banned_terms(text, &policy.banned_terms) {
        review.push(policy, PolicyRule::BannedTerm, format!("banned term \"{term}\""));
    }
    for host in links::disallowed_hosts(text, &policy.allowed_links) {
        let host = ctx.secrets.redact(&host);
        review.push(policy, PolicyRule::Link, format!("link to {host} is not on the allowlist"));
    }
    for handle in mentions::disallowed(text, ctx, &policy.allowed_mentions) {
        let handle = ctx.secrets.redact(&handle);
        review.push(policy, PolicyRule::Mention, format!("mentions {handle}, who is not on the allowlist"));
    }
    if policy.pii {
        for kind in pii::find(text) {
            review.push(policy, PolicyRule::Pii, kind.to_owned());
        }
    }
    let chars = text.chars().count();
    if chars > ctx.max_chars {
        let reason = format!("{chars} characters; {} allows at most {}", ctx.platform, ctx.max_chars);
        review.push(policy, PolicyRule::Length, reason);
    }
    if let Some(reason) = format::literal_markdown(text, ctx.platform) {
        review.push(policy, PolicyRule::Format, reason);
    }
    review
}

/// The configured terms found in `text`: case-insensitive, whole words (a term that starts or
/// ends with a word character must not touch another one there), any whitespace between words.
fn banned_terms<'p>(text: &str, terms: &'p [String]) -> Vec<&'p str> {
    terms
        .iter()
        .map(|term| term.trim())
        .filter(|term| !term.is_empty())
        .filter(|term| {
            let words: Vec<String> = term.split_whitespace().map(regex::escape).collect();
            let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            let start = if is_word(term.chars().next()) { r"\b" } else { "" };
            let end = if is_word(term.chars().last()) { r"\b" } else { "" };
            let pattern = format!(r"(?i){start}{}{end}", words.join(r"\s+"));
            match regex::Regex::new(&pattern) {
                Ok(pattern) => pattern.is_match(text),
                // Only a term too large for the regex engine gets here; never let it through.
                Err(_) => text.to_lowercase().contains(&term.to_lowercase()),
            }
        })
        .collect()
}

/// A policy and a context to review texts with, for the tests of every rule.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    pub struct Fixture {
        pub policy: EffectivePolicy,
        pub platform: PlatformKind,
        pub max_chars: usize,
        pub team: BTreeSet<String>,
        pub replying_to: Option<String>,
        pub secrets: SecretSet,
    }

    impl Fixture {
        /// The default policy on `platform`, a team of `ada` and `grace`, no secrets.
        pub fn on(platform: PlatformKind) -> Self {
            Self {
                policy: EffectivePolicy::default(),
                platform,
                max_chars: 280,
                team: ["ada".to_owned(), "grace".to_owned()].into(),
                replying_to: None,
                secrets: SecretSet::default(),
            }
        }

        pub fn review(&self, text: &str) -> Review {
            let ctx = ReviewContext {
                platform: self.platform,
                max_chars: self.max_chars,
                team: &self.team,
                replying_to: self.replying_to.as_deref(),
                secrets: &self.secrets,
            };
            review(&self.policy, text, &ctx)
        }

        /// The rules `text` breaks, in order.
        pub fn rules(&self, text: &str) -> Vec<PolicyRule> {
            self.review(text).violations.iter().map(|violation| violation.rule).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;

    #[test]
    fn a_clean_text_passes() {
        let review = Fixture::on(PlatformKind::X).review("Shipping the new release today, thanks @grace!");
        assert_eq!(review, Review::default());
        assert!(!review.blocked() && !review.flagged());
        assert_eq!(review.reasons(), "");
    }

    #[test]
    fn banned_terms_match_whole_words_in_any_case() {
        let mut fixture = Fixture::on(PlatformKind::Local);
        fixture.policy.banned_terms = vec!["moon".into(), "to the   moon".into(), "$SCAM".into()];
        assert_eq!(fixture.rules("Walks by moonlight, honeymoon plans"), vec![]);
        let review = fixture.review("We are going TO THE\nMoon!");
        let reasons: Vec<&str> = review.violations.iter().map(|violation| violation.reason.as_str()).collect();
        assert_eq!(reasons, vec!["banned term \"moon\"", "banned term \"to the   moon\""]);
        assert!(review.blocked());
        assert_eq!(fixture.rules("buy $scam now"), vec![PolicyRule::BannedTerm]);
        assert_eq!(fixture.rules("buy $scammy now"), vec![]);
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let mut fixture = Fixture::on(PlatformKind::X);
        fixture.max_chars = 5;
        assert_eq!(fixture.rules("ééééé"), vec![]);
        let review = fixture.review("éééééé");
        assert_eq!(review.violations[0].rule, PolicyRule::Length);
        assert_eq!(review.violations[0].reason, "6 characters; x allows at most 5");
    }

    #[test]
    fn flag_only_rules_flag_and_secrets_always_block() {
        let mut fixture = Fixture::on(PlatformKind::X);
        fixture.policy.flag_only = vec![PolicyRule::Link, PolicyRule::Secret];
        let review = fixture.review("see https://evil.example/x");
        assert_eq!(review.violations[0].action, Action::Flag);
        assert!(review.flagged() && !review.blocked());

        let review = fixture.review("key sk-abcdefghijklmnopqrstuvwxyz012345");
        assert_eq!(review.violations[0].rule, PolicyRule::Secret);
        assert_eq!(review.violations[0].action, Action::Block);

        fixture.policy.flag_only = vec![];
        assert!(fixture.review("see https://evil.example/x").blocked());
    }

    #[test]
    fn reasons_join_every_violation_with_its_rule() {
        let fixture = Fixture::on(PlatformKind::X);
        let review = fixture.review("mail bob@example.org or see https://evil.example/path");
        assert_eq!(review.reasons(), "link: link to evil.example is not on the allowlist; pii: an email address");
    }

    #[test]
    fn tone_objections_follow_the_policy() {
        let mut policy = EffectivePolicy::default();
        let mut review = Review::default();
        review.push_tone(&policy, "too sarcastic".into());
        assert_eq!(
            review.violations[0],
            Violation { rule: PolicyRule::Tone, action: Action::Flag, reason: "too sarcastic".into() }
        );
        policy.flag_only.clear();
        review.push_tone(&policy, "rude".into());
        assert!(review.blocked());
        assert_eq!(review.reasons(), "tone: too sarcastic; tone: rude");
    }

    #[test]
    fn violations_serialize_with_snake_case_names() {
        let violation = Violation { rule: PolicyRule::BannedTerm, action: Action::Flag, reason: "x".into() };
        let json = serde_json::to_string(&violation).unwrap();
        assert_eq!(json, r#"{"rule":"banned_term","action":"flag","reason":"x"}"#);
        assert_eq!(serde_json::from_str::<Violation>(&json).unwrap(), violation);
    }
}
