//! The team's configuration: the content plan (schedules, the topics calendar), policy review,
//! the airlock (human approval), coordination of replies, engagement measuring and the brand's
//! shared voice rules.
//!
//! Service-wide sections live in `chorus.toml` (`[team]`, `[calendar]`, `[policy]`, `[airlock]`);
//! a persona file may add its own `[policy]` and `[airlock]` on top, and has its own `[schedule]`
//! (with `[schedule.on.<platform>]` overrides).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;

use super::{Dur, PlatformKind};

/// `[team]` in `chorus.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeamConfig {
    /// The brand's shared voice rules, part of every persona's prompt.
    pub brand: String,
    /// How often the TeamLeader plans posts and hands due ones to their agents.
    pub plan_every: Dur,
    /// Posts of two different personas are planned at least this far apart where the schedules
    /// allow it (so the team does not post in the same minute).
    pub min_gap: Dur,
    /// When one message mentions several personas: how many may join after the first answer.
    pub max_joiners: u32,
    /// How long a joiner waits for the first answer to be published before giving up.
    pub join_wait: Dur,
    /// Engagement of a published item is fetched this long after it was published ...
    pub measure_after: Dur,
    /// ... and again every `measure_every` ...
    pub measure_every: Dur,
    /// ... until it is this old.
    pub measure_for: Dur,
    /// Whether the TeamLeader writes last week's report by itself once the week is over.
    pub weekly_report: bool,
}

impl Default for TeamConfig {
    fn default() -> Self {
        Self {
            brand: String::new(),
            plan_every: Dur::secs(1),
            min_gap: Dur::secs(60),
            max_joiners: 1,
            join_wait: Dur::secs(600),
            measure_after: Dur::secs(3600),
            measure_every: Dur::secs(6 * 3600),
            measure_for: Dur::secs(7 * 86_400),
            weekly_report: true,
        }
    }
}

impl TeamConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("team.plan_every", self.plan_every),
            ("team.measure_every", self.measure_every),
            ("team.join_wait", self.join_wait),
        ] {
            if value.get().is_zero() {
                problems.push((key, "must be longer than zero".to_owned()));
            }
        }
        problems
    }
}

/// `[calendar]` in `chorus.toml`: themes by weekday and by date, and campaigns.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// Themes by weekday: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`.
    pub weekdays: BTreeMap<String, Vec<String>>,
    /// Themes of one date, `"2026-12-24" = ["holiday gifts"]`.
    pub dates: BTreeMap<String, Vec<String>>,
    pub campaigns: Vec<Campaign>,
}

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl CalendarConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for day in self.weekdays.keys() {
            if !WEEKDAYS.contains(&day.as_str()) {
                problems.push((
                    format!("calendar.weekdays.{day}"),
                    "expected one of mon, tue, wed, thu, fri, sat, sun".to_owned(),
                ));
            }
        }
        for date in self.dates.keys() {
            if parse_date(date).is_none() {
                problems.push((format!("calendar.dates.{date}"), "expected a date like \"2026-12-24\"".to_owned()));
            }
        }
        for (index, campaign) in self.campaigns.iter().enumerate() {
            let key = |field: &str| format!("calendar.campaigns[{index}].{field}");
            let (start, end) = (parse_date(&campaign.start), parse_date(&campaign.end));
            if start.is_none() {
                problems.push((key("start"), "expected a date like \"2026-12-01\"".to_owned()));
            }
            if end.is_none() {
                problems.push((key("end"), "expected a date like \"2026-12-24\"".to_owned()));
            }
            if let (Some(start), Some(end)) = (start, end)
                && end < start
            {
                problems.push((key("end"), "must not be before start".to_owned()));
            }
            if campaign.topics.iter().all(|topic| topic.trim().is_empty()) {
                problems.push((key("topics"), "name at least one topic".to_owned()));
            }
        }
        problems
    }
}

/// A campaign: topics every persona it names (all when none) covers between two dates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: String,
    /// First and last day, inclusive, `"2026-12-01"`.
    pub start: String,
    pub end: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub personas: Vec<String>,
}

impl Campaign {
    pub fn start_date(&self) -> Option<NaiveDate> {
        parse_date(&self.start)
    }
    pub fn end_date(&self) -> Option<NaiveDate> {
        parse_date(&self.end)
    }
}

pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// `[schedule]` of a persona: when it posts on its own, with `[schedule.on.<platform>]`
/// overriding any of the keys for one platform.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// One post per this interval (from local midnight), each offset by a deterministic jitter.
    #[serde(default)]
    pub every: Option<Dur>,
    /// A deterministic offset in `[0, jitter)` into each interval, so personas do not post at once.
    #[serde(default)]
    pub jitter: Dur,
    /// Fixed daily times, `"09:00"`, in `timezone`.
    #[serde(default)]
    pub slots: Vec<String>,
    /// An IANA time zone such as `"Europe/Paris"`; UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// No posts between these local times, `"22:00-07:00"` (may wrap midnight).
    #[serde(default)]
    pub quiet_hours: Option<String>,
    /// At most this many posts a (local) day on each platform.
    #[serde(default)]
    pub max_per_day: Option<u32>,
    /// Per-platform overrides.
    #[serde(default)]
    pub on: BTreeMap<PlatformKind, ScheduleOverride>,
}

/// `[schedule.on.<platform>]`: any key of `[schedule]`, for one platform.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleOverride {
    #[serde(default)]
    pub every: Option<Dur>,
    #[serde(default)]
    pub jitter: Option<Dur>,
    #[serde(default)]
    pub slots: Option<Vec<String>>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub quiet_hours: Option<String>,
    #[serde(default)]
    pub max_per_day: Option<u32>,
}

/// A persona's schedule on one platform, parsed and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRule {
    pub every: Option<Duration>,
    pub jitter: Duration,
    /// Minutes after local midnight, sorted.
    pub slots: Vec<u32>,
    pub timezone: chrono_tz::Tz,
    /// Quiet minutes of the local day: `[start, end)`, wrapping midnight when `start > end`.
    pub quiet: Option<(u32, u32)>,
    pub max_per_day: Option<u32>,
}

impl ScheduleRule {
    /// Whether a local minute of the day is inside the quiet hours.
    pub fn is_quiet(&self, minute: u32) -> bool {
        match self.quiet {
            None => false,
            Some((start, end)) if start <= end => minute >= start && minute < end,
            Some((start, end)) => minute >= start || minute < end,
        }
    }
}

impl Schedule {
    /// One post per `every`, no jitter.
    pub fn every(every: Dur) -> Self {
        Self { every: Some(every), ..Self::default() }
    }

    /// The rule for one platform, or every problem found, as `(key, message)`.
    pub fn rule(&self, platform: PlatformKind) -> Result<ScheduleRule, Vec<(String, String)>> {
        let over = self.on.get(&platform).cloned().unwrap_or_default();
        let prefix = |field: &str, overridden: bool| {
            if overridden { format!("schedule.on.{platform}.{field}") } else { format!("schedule.{field}") }
        };
        let mut problems = Vec::new();
        let every = over.every.or(self.every).map(Dur::get);
        let jitter = over.jitter.unwrap_or(self.jitter).get();
        if let Some(every) = every {
            if every < Duration::from_secs(1) {
                problems.push((prefix("every", over.every.is_some()), "must be at least 1s".to_owned()));
            } else if !jitter.is_zero() && jitter >= every {
                problems
                    .push((prefix("jitter", over.jitter.is_some()), "must be shorter than schedule.every".to_owned()));
            }
        }
        let slot_texts = over.slots.as_ref().unwrap_or(&self.slots);
        let mut slots = Vec::new();
        for text in slot_texts {
            match parse_minute(text) {
                Some(minute) => slots.push(minute),
                None => problems.push((
                    prefix("slots", over.slots.is_some()),
                    format!("expected times like \"09:30\", got {text:?}"),
                )),
            }
        }
        slots.sort_unstable();
        slots.dedup();
        if every.is_none() && slot_texts.is_empty() {
            problems.push((prefix("every", false), "set schedule.every or schedule.slots".to_owned()));
        }
        let zone = over.timezone.as_ref().or(self.timezone.as_ref());
        let timezone = match zone {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                problems.push((
                    prefix("timezone", over.timezone.is_some()),
                    format!("unknown time zone {name:?} (expected an IANA name like \"Europe/Paris\")"),
                ));
                chrono_tz::UTC
            }),
        };
        let quiet = match over.quiet_hours.as_ref().or(self.quiet_hours.as_ref()) {
            None => None,
            Some(text) => {
                let parsed =
                    text.split_once('-').and_then(|(start, end)| Some((parse_minute(start)?, parse_minute(end)?)));
                if parsed.is_none() || parsed.is_some_and(|(start, end)| start == end) {
                    problems.push((
                        prefix("quiet_hours", over.quiet_hours.is_some()),
                        format!("expected a range like \"22:00-07:00\", got {text:?}"),
                    ));
                }
                parsed
            }
        };
        let max_per_day = over.max_per_day.or(self.max_per_day);
        if problems.is_empty() {
            Ok(ScheduleRule { every, jitter, slots, timezone, quiet, max_per_day })
        } else {
            Err(problems)
        }
    }
}

/// `"09:30"` as minutes after midnight.
fn parse_minute(text: &str) -> Option<u32> {
    let time = NaiveTime::parse_from_str(text.trim(), "%H:%M").ok()?;
    use chrono::Timelike;
    Some(time.hour() * 60 + time.minute())
}

/// What the airlock does with one kind of item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AirlockMode {
    /// Queued at once (review flags are recorded, not held).
    #[default]
    Auto,
    /// Every item waits for a human.
    Hold,
    /// Items the review flagged wait for a human; the rest go at once. For trades: those above
    /// `trading.limits.approval_above_usd`.
    HoldIfFlagged,
}

impl AirlockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AirlockMode::Auto => "auto",
            AirlockMode::Hold => "hold",
            AirlockMode::HoldIfFlagged => "hold-if-flagged",
        }
    }
}

/// `[airlock]` in `chorus.toml`: the defaults of every persona.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AirlockConfig {
    pub posts: AirlockMode,
    pub replies: AirlockMode,
    pub trades: AirlockMode,
    /// A held item not decided within this long expires and is never published.
    pub expire_after: Dur,
    /// Whoever submitted or last edited an item cannot approve it alone.
    pub two_person: bool,
}

impl Default for AirlockConfig {
    fn default() -> Self {
        Self {
            posts: AirlockMode::Auto,
            replies: AirlockMode::Auto,
            trades: AirlockMode::HoldIfFlagged,
            expire_after: Dur::secs(86_400),
            two_person: false,
        }
    }
}

/// `[airlock]` in a persona file: overrides of the service's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonaAirlock {
    pub posts: Option<AirlockMode>,
    pub replies: Option<AirlockMode>,
    pub trades: Option<AirlockMode>,
    pub expire_after: Option<Dur>,
    pub two_person: Option<bool>,
}

impl AirlockConfig {
    /// The service defaults with a persona's overrides applied.
    pub fn with(&self, persona: Option<&PersonaAirlock>) -> AirlockConfig {
        let Some(over) = persona else { return self.clone() };
        AirlockConfig {
            posts: over.posts.unwrap_or(self.posts),
            replies: over.replies.unwrap_or(self.replies),
            trades: over.trades.unwrap_or(self.trades),
            expire_after: over.expire_after.unwrap_or(self.expire_after),
            two_person: over.two_person.unwrap_or(self.two_person),
        }
    }

    /// The mode of one kind of item: `post`, `reply` or `trade`.
    pub fn mode(&self, kind: &str) -> AirlockMode {
        match kind {
            "reply" => self.replies,
            "trade" => self.trades,
            _ => self.posts,
        }
    }
}

/// The rules of the policy review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyRule {
    /// A configured secret value or a token-shaped string. Always blocks.
    Secret,
    BannedTerm,
    /// A link to a domain outside `allowed_links`.
    Link,
    /// An @-mention of an account outside the team, the person answered and `allowed_mentions`.
    Mention,
    /// Email addresses and phone numbers.
    Pii,
    /// Longer than the platform allows.
    Length,
    /// Formatting the platform does not render.
    Format,
    /// The optional LLM tone review.
    Tone,
}

impl PolicyRule {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyRule::Secret => "secret",
            PolicyRule::BannedTerm => "banned_term",
            PolicyRule::Link => "link",
            PolicyRule::Mention => "mention",
            PolicyRule::Pii => "pii",
            PolicyRule::Length => "length",
            PolicyRule::Format => "format",
            PolicyRule::Tone => "tone",
        }
    }
}

/// `[policy]`, in `chorus.toml` (every persona) and in a persona file (added to it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Words or phrases that must not appear (case-insensitive, whole words).
    pub banned_terms: Vec<String>,
    /// Domains links may point to (their subdomains included). No links at all when empty.
    pub allowed_links: Vec<String>,
    /// Accounts that may be @-mentioned besides the team and the person answered.
    pub allowed_mentions: Vec<String>,
    /// Check for email addresses and phone numbers (default on).
    pub pii: Option<bool>,
    /// Rules whose violations only flag an item (held under `hold-if-flagged`) instead of
    /// blocking it. Default `["mention", "tone"]`; `secret` cannot be listed.
    pub flag_only: Option<Vec<PolicyRule>>,
    /// Ask the LLM (the persona's `review` chain) whether the tone fits the persona and brand.
    pub tone_review: Option<bool>,
}

/// A persona's effective policy: the service's `[policy]` with the persona's added.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub banned_terms: Vec<String>,
    pub allowed_links: Vec<String>,
    pub allowed_mentions: Vec<String>,
    pub pii: bool,
    pub flag_only: Vec<PolicyRule>,
    pub tone_review: bool,
}

impl PolicyConfig {
    pub fn with(&self, persona: Option<&PolicyConfig>) -> EffectivePolicy {
        let empty = PolicyConfig::default();
        let over = persona.unwrap_or(&empty);
        let union = |a: &Vec<String>, b: &Vec<String>| {
            let mut all: Vec<String> = a.iter().chain(b).map(|item| item.trim().to_owned()).collect();
            all.retain(|item| !item.is_empty());
            all.sort();
            all.dedup();
            all
        };
        EffectivePolicy {
            banned_terms: union(&self.banned_terms, &over.banned_terms),
            allowed_links: union(&self.allowed_links, &over.allowed_links),
            allowed_mentions: union(&self.allowed_mentions, &over.allowed_mentions)
                .into_iter()
                .map(|handle| handle.trim_start_matches('@').to_ascii_lowercase())
                .collect(),
            pii: over.pii.or(self.pii).unwrap_or(true),
            flag_only: over
                .flag_only
                .clone()
                .or_else(|| self.flag_only.clone())
                .unwrap_or_else(|| vec![PolicyRule::Mention, PolicyRule::Tone]),
            tone_review: over.tone_review.or(self.tone_review).unwrap_or(false),
        }
    }

    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.flag_only.as_ref().is_some_and(|rules| rules.contains(&PolicyRule::Secret)) {
            problems.push((
                format!("{prefix}policy.flag_only"),
                "\"secret\" always blocks and cannot be flag-only".to_owned(),
            ));
        }
        for domain in &self.allowed_links {
            let domain = domain.trim();
            if domain.is_empty() || domain.contains('/') || domain.contains(' ') {
                problems.push((
                    format!("{prefix}policy.allowed_links"),
                    format!("expected a domain like \"example.com\", got {domain:?}"),
                ));
            }
        }
        problems
    }
}

impl Default for EffectivePolicy {
    fn default() -> Self {
        PolicyConfig::default().with(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_resolves_per_platform_with_overrides() {
        let schedule: Schedule = toml::from_str(
            "every = \"2h\"\njitter = \"10m\"\ntimezone = \"Europe/Paris\"\nquiet_hours = \"22:00-07:00\"\n\
             [on.x]\nslots = [\"18:30\", \"09:00\"]\nmax_per_day = 1\n",
        )
        .unwrap();
        let local = schedule.rule(PlatformKind::Local).unwrap();
        assert_eq!(local.every, Some(Duration::from_secs(7200)));
        assert!(local.slots.is_empty());
        assert_eq!(local.timezone, chrono_tz::Europe::Paris);
        assert!(local.is_quiet(23 * 60) && local.is_quiet(6 * 60 + 59) && !local.is_quiet(7 * 60));
        let x = schedule.rule(PlatformKind::X).unwrap();
        assert_eq!(x.slots, vec![9 * 60, 18 * 60 + 30]);
        assert_eq!(x.max_per_day, Some(1));
    }

    #[test]
    fn schedule_problems_name_their_keys() {
        let schedule: Schedule =
            toml::from_str("slots = [\"25:00\"]\ntimezone = \"Mars/Olympus\"\nquiet_hours = \"nine to five\"\n")
                .unwrap();
        let problems = schedule.rule(PlatformKind::Local).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, vec!["schedule.slots", "schedule.timezone", "schedule.quiet_hours"]);
        assert!(Schedule::default().rule(PlatformKind::Local).is_err());
    }

    #[test]
    fn policy_lists_are_added_and_secret_cannot_be_flag_only() {
        let service = PolicyConfig { banned_terms: vec!["moon".into()], ..PolicyConfig::default() };
        let persona = PolicyConfig {
            banned_terms: vec!["lambo".into()],
            allowed_mentions: vec!["@Rustlang".into()],
            pii: Some(false),
            ..PolicyConfig::default()
        };
        let effective = service.with(Some(&persona));
        assert_eq!(effective.banned_terms, vec!["lambo", "moon"]);
        assert_eq!(effective.allowed_mentions, vec!["rustlang"]);
        assert!(!effective.pii);
        assert_eq!(effective.flag_only, vec![PolicyRule::Mention, PolicyRule::Tone]);
        let bad = PolicyConfig { flag_only: Some(vec![PolicyRule::Secret]), ..PolicyConfig::default() };
        assert_eq!(bad.problems("").len(), 1);
    }
}
