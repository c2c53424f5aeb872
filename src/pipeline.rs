//! The content pipeline's middle: a generated draft is adapted to its platform, reviewed against
//! the persona's policy (in code, plus the optional LLM tone pass), and then the airlock decides:
//! queue it, hold it for a human, or — for a violation that blocks — drop it for good. Every step
//! is written to the item's stage log (`content_events`), so an operator can see why an item was
//! held or never published.
//!
//! One path for every platform and every source: the Agent's replies and planned posts, and
//! posts an operator submits through the admin API. What comes before (plan, generate) and after
//! (outbox, publish, measure) lives with the TeamLeader, the Agent and the Publisher.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{
    AirlockConfig, AirlockMode, Config, EffectivePolicy, Persona, PersonaAirlock, PlatformKind, PolicyConfig,
    PolicyRule,
};
use crate::directory::Directory;
use crate::llm::{CompletionRequest, LlmMsg, Task};
use crate::metrics as m;
use crate::policy::{self, Review, ReviewContext, SecretSet};
use crate::store::{ContentLog, Db, NewContent, StoreResult, now_ms};

/// What is stored instead of a draft that contained a secret.
pub const WITHHELD: &str = "[withheld: the draft contained a secret]";

/// How long the tone review may take before the draft is flagged as unreviewed.
const TONE_TIMEOUT_MS: u64 = 60_000;

/// What the review and the airlock need about one persona on one platform; built once per agent.
#[derive(Debug, Clone)]
pub struct Gatekeeper {
    pub policy: EffectivePolicy,
    pub airlock: AirlockConfig,
    pub secrets: Arc<SecretSet>,
    /// Every persona's handle on this platform (they may mention each other).
    pub team: Arc<BTreeSet<String>>,
    /// The brand's shared voice rules, for the tone review.
    pub brand: String,
}

impl Gatekeeper {
    /// `team`: every persona's handle on the platform ([`team_handles`]), shared by its agents.
    pub fn new(config: &Config, persona: &Persona, secrets: Arc<SecretSet>, team: Arc<BTreeSet<String>>) -> Self {
        let overrides = (persona.policy.as_deref(), persona.airlock.as_deref());
        Gatekeeper::with_overrides(config, overrides, secrets, team)
    }

    /// The service's own rules, for every persona that overrides neither `[policy]` nor
    /// `[airlock]` ([`Gatekeeper::is_shared_by`]): one copy per platform, not one per agent.
    pub fn service_wide(config: &Config, secrets: Arc<SecretSet>, team: Arc<BTreeSet<String>>) -> Self {
        Gatekeeper::with_overrides(config, (None, None), secrets, team)
    }

    /// The service's `[policy]` and `[airlock]` with a persona's overrides, if any.
    fn with_overrides(
        config: &Config,
        (policy, airlock): (Option<&PolicyConfig>, Option<&PersonaAirlock>),
        secrets: Arc<SecretSet>,
        team: Arc<BTreeSet<String>>,
    ) -> Self {
        Gatekeeper {
            policy: config.service.policy.with(policy),
            airlock: config.service.airlock.with(airlock),
            secrets,
            team,
            brand: config.service.team.brand.clone(),
        }
    }

    /// Whether `persona` gets the [`Gatekeeper::service_wide`] one.
    pub fn is_shared_by(persona: &Persona) -> bool {
        persona.policy.is_none() && persona.airlock.is_none()
    }
}

/// Every persona's handle on `platform`.
pub fn team_handles(config: &Config, platform: PlatformKind) -> BTreeSet<String> {
    config.personas.values().map(|persona| persona.handle_on(platform)).collect()
}

/// One draft on its way to the outbox.
pub struct Draft<'a> {
    /// The item: created only when it stops here (held, blocked); a queued one is created or
    /// moved in the outbox transaction.
    pub content: &'a NewContent,
    /// The stage log so far (generate).
    pub log: ContentLog,
    /// `post` or `reply`.
    pub kind: &'a str,
    pub text: &'a str,
    pub platform: PlatformKind,
    pub max_chars: usize,
    /// The author answered, who may be @-mentioned.
    pub replying_to: Option<&'a str>,
    pub persona: &'a Arc<Persona>,
    /// Who is acting: the persona, or the operator who submitted the post.
    pub actor: &'a str,
}

/// Where the draft goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// To the outbox, with this (adapted) text and the stage log to write with it.
    Queue(String, ContentLog),
    /// Held for a human (the item is `held`).
    Held(String),
    /// Blocked by the review (the item is `blocked`).
    Blocked(String),
}

/// Drafts by platform and decision, counted for each draft: registered once per pair
/// ([`m::Kept`]).
static DECISIONS: m::Kept<metrics::Counter, 2> = m::Kept::new(m::CONTENT_DECISIONS, ["platform", "decision"]);

/// Adapts, reviews and decides, logging each step. A `Queue` is left to the caller to put in the
/// outbox with its log (`Db::enqueue_logged`, through the Publisher): the item is written once,
/// in the outbox transaction. A held or blocked draft is written here.
pub async fn gate(db: &Db, directory: &Directory, keeper: &Gatekeeper, draft: Draft<'_>) -> StoreResult<Gate> {
    let platform = draft.platform.as_str();
    let mut log = draft.log;
    let text = policy::adapt(draft.text, draft.platform);
    let adapted = if text == draft.text.trim() { "unchanged" } else { "adapted" };
    log.push("adapt", adapted, None, draft.actor);

    let context = ReviewContext {
        platform: draft.platform,
        max_chars: draft.max_chars,
        team: &keeper.team,
        replying_to: draft.replying_to,
        secrets: &keeper.secrets,
    };
    let mut review = policy::review(&keeper.policy, &text, &context);
    if keeper.policy.tone_review
        && !review.blocked()
        && let Some(reason) = tone(directory, keeper, draft.persona, &text).await
    {
        review.push_tone(&keeper.policy, reason);
    }
    let flags = (!review.violations.is_empty())
        .then(|| serde_json::to_string(&review.violations).unwrap_or_else(|_| "[]".to_owned()));
    for violation in &review.violations {
        metrics::counter!(m::POLICY_VIOLATIONS, "platform" => platform, "rule" => violation.rule.as_str()).increment(1);
    }

    if review.blocked() {
        let reasons = review.reasons();
        // A draft with a secret in it is not kept: the admin API would show it.
        let text = if review.violations.iter().any(|violation| violation.rule == PolicyRule::Secret) {
            WITHHELD.to_owned()
        } else {
            text
        };
        tracing::info!(persona = %draft.persona.name, platform, kind = draft.kind, reasons = %reasons, "draft blocked by the policy review");
        let item_id = stop_here(db, draft.content, &log).await?;
        db.block_content(item_id, &text, flags.as_deref().unwrap_or("[]"), &reasons, draft.actor).await?;
        DECISIONS.get([platform, "blocked"]).increment(1);
        return Ok(Gate::Blocked(reasons));
    }
    let outcome = if review.flagged() { "flagged" } else { "passed" };
    let detail = review.flagged().then(|| review.reasons());
    log.push("review", outcome, detail.as_deref(), draft.actor);

    let mode = keeper.airlock.mode(draft.kind);
    let hold = match mode {
        AirlockMode::Hold => Some(format!("{} are held for approval", plural(draft.kind))),
        AirlockMode::HoldIfFlagged if review.flagged() => Some(format!("flagged: {}", review.reasons())),
        _ => None,
    };
    if let Some(reason) = hold {
        let expires_at = now_ms() + keeper.airlock.expire_after.get().as_millis() as i64;
        let item_id = stop_here(db, draft.content, &log).await?;
        db.hold_content(item_id, &text, flags.as_deref(), &reason, expires_at, draft.actor).await?;
        DECISIONS.get([platform, "held"]).increment(1);
        return Ok(Gate::Held(reason));
    }
    log.push("approve", "auto", Some(mode.as_str()), draft.actor);
    log.flags = flags;
    DECISIONS.get([platform, "queued"]).increment(1);
    Ok(Gate::Queue(text, log))
}

/// The item of a draft that stops before the outbox (created, or the planned one), with its log.
async fn stop_here(db: &Db, content: &NewContent, log: &ContentLog) -> StoreResult<i64> {
    let item_id = db.start_content(content).await?;
    db.content_log(item_id, &log.entries).await?;
    Ok(item_id)
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "reply" => "replies",
        "trade" => "trades",
        _ => "posts",
    }
}

/// The LLM's tone verdict: `None` when it fits, else the reason. A review that cannot be had
/// (no LlmPool, an error, a timeout) flags the draft: unreviewed is not the same as fine.
async fn tone(directory: &Directory, keeper: &Gatekeeper, persona: &Arc<Persona>, text: &str) -> Option<String> {
    let Some(llm) = directory.llm() else { return Some("tone review unavailable".to_owned()) };
    let request = CompletionRequest {
        persona: persona.clone(),
        task: Task::Review,
        messages: policy::tone_messages(&persona.voice, &keeper.brand, text),
        reply_to_author: None,
        seed: crate::hash::fnv1a(text.as_bytes()),
    };
    match ractor::call_t!(llm, |reply| LlmMsg::Complete { request, reply }, TONE_TIMEOUT_MS) {
        Ok(Ok(completion)) => policy::parse_tone(&completion.text),
        Ok(Err(err)) => Some(format!("tone review failed: {err}")),
        Err(_) => Some("tone review timed out".to_owned()),
    }
}

/// The policy review without the airlock, for an operator's edit (an edit must pass it too).
pub fn review_edit(
    keeper: &Gatekeeper,
    platform: PlatformKind,
    max_chars: usize,
    replying_to: Option<&str>,
    text: &str,
) -> Review {
    let context = ReviewContext { platform, max_chars, team: &keeper.team, replying_to, secrets: &keeper.secrets };
    policy::review(&keeper.policy, text, &context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::write_test_file as write;

    fn persona(name: &str, extra: &str) -> String {
        format!(
            "name = \"{name}\"\nbio = \"b\"\nvoice = \"v\"\ntopics = [\"rust\"]\nplatforms = [\"local\"]\n\
             schedule = {{ every = \"90m\" }}\n{extra}"
        )
    }

    #[test]
    fn only_personas_without_their_own_policy_or_airlock_share_the_service_wide_gatekeeper() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "chorus.toml", "[policy]\nbanned_terms = [\"moon\"]\n\n[airlock]\nposts = \"hold\"\n");
        write(dir.path(), "personas/ada.toml", &persona("ada", ""));
        write(dir.path(), "personas/bruno.toml", &persona("bruno", "[policy]\nbanned_terms = [\"sun\"]\n"));
        write(dir.path(), "personas/carla.toml", &persona("carla", "[airlock]\nreplies = \"hold\"\n"));
        let config = crate::config::load(&dir.path().join("chorus.toml")).unwrap();
        let secrets = Arc::new(SecretSet::from_config(&config));
        let team = Arc::new(team_handles(&config, PlatformKind::Local));
        let shared = Gatekeeper::service_wide(&config, secrets.clone(), team.clone());
        let own = |name: &str| Gatekeeper::new(&config, &config.personas[name], secrets.clone(), team.clone());

        // Ada overrides nothing: the shared gatekeeper is exactly the one she would get alone.
        assert!(Gatekeeper::is_shared_by(&config.personas["ada"]));
        assert_eq!(shared.policy, own("ada").policy);
        assert_eq!(shared.airlock, own("ada").airlock);
        assert_eq!(shared.brand, own("ada").brand);
        assert_eq!(shared.policy.banned_terms, ["moon"]);

        // Bruno adds a banned term, Carla holds replies: each keeps a gatekeeper of their own.
        assert!(!Gatekeeper::is_shared_by(&config.personas["bruno"]));
        assert_eq!(own("bruno").policy.banned_terms, ["moon", "sun"]);
        assert!(!Gatekeeper::is_shared_by(&config.personas["carla"]));
        assert_ne!(own("carla").airlock, shared.airlock);
    }
}
