//! The TeamLeader's own work besides supervising, each on its own timer and in a task (one
//! round of each kind at a time), never in the TeamLeader's mailbox:
//!
//! - **Plan** (every `team.plan_every`): the day's plan ([`plan::plan_day`]) is stored as
//!   `planned` items an hour ahead; due ones go to their agents (`dispatched`, then
//!   `AgentMsg::PostDue`); one whose agent is not running past its grace is `dropped`. Holds that
//!   ran out are expired here too.
//! - **Measure** (every minute, or `team.measure_every` if shorter): engagement of published
//!   items, fetched from their platforms and stored.
//! - **Report** (hourly, with `team.weekly_report`): last week's report, once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use ractor::ActorRef;

use super::plan::{self, PlanInput, PlannedPost};
use crate::agent::AgentMsg;
use crate::config::{CalendarConfig, Config, PlatformKind};
use crate::metrics as m;
use crate::platform::Platforms;
use crate::store::{ContentItem, Db, NewPlanned, StoreResult, now_ms};

/// How far ahead planned posts are stored (visible to operators before they are due).
const PLAN_AHEAD: Duration = Duration::from_secs(3600);
/// Due posts handed over per round.
const DISPATCH_BATCH: i64 = 256;
/// Published items measured per round.
const MEASURE_BATCH: i64 = 200;

/// The team's plan, computed per date and kept until the date is past.
pub struct Planner {
    inputs: Vec<PlanInput>,
    /// Positions in `inputs` sorted by persona and platform, to find an agent's input (and its
    /// grace) by binary search: a map by (persona, platform) held a second copy of every name.
    by_agent: Vec<u32>,
    calendar: CalendarConfig,
    min_gap: Duration,
    days: BTreeMap<NaiveDate, Vec<PlannedPost>>,
    /// Keys already stored (the insert is idempotent anyway; this keeps rounds quiet).
    stored: HashSet<String>,
    /// When this plan was made: posts overdue then (missed while Chorus was down, or the current
    /// slot) go out a few seconds apart instead of all at once.
    started_at: i64,
}

/// Posts overdue at start go out within this long, each at its own deterministic offset.
const START_SPREAD_MS: u64 = 10_000;

impl Planner {
    /// Every agent that posts on its own: its persona's schedule on that platform.
    pub fn new(config: &Config, platforms: &Platforms) -> Planner {
        let mut inputs = Vec::new();
        for key in config.agent_keys() {
            let Some(persona) = config.personas.get(&key.persona) else { continue };
            let posts = platforms.get(key.platform).is_some_and(|platform| platform.posts_enabled(&persona.name));
            // Validated at load; a rule that does not resolve plans nothing.
            let Ok(rule) = persona.schedule.rule(key.platform) else { continue };
            if !posts {
                continue;
            }
            inputs.push(PlanInput {
                persona: persona.name.clone(),
                platform: key.platform,
                rule,
                topics: persona.topics.clone(),
            });
        }
        inputs.shrink_to_fit();
        let by_agent = sorted_by_agent(&inputs);
        Planner {
            inputs,
            by_agent,
            calendar: config.service.calendar.clone(),
            min_gap: config.service.team.min_gap.get(),
            days: BTreeMap::new(),
            stored: HashSet::new(),
            started_at: now_ms(),
        }
    }

    /// How late a post of this persona on this platform may still go out.
    pub fn grace(&self, persona: &str, platform: &str) -> Duration {
        input_of(&self.inputs, &self.by_agent, persona, platform)
            .map(|input| plan::grace(&input.rule))
            .unwrap_or(Duration::from_secs(900))
    }

    /// Posts due between `now - grace` and `now + PLAN_AHEAD` that were not stored yet.
    pub fn upcoming(&mut self, now: i64) -> Vec<NewPlanned> {
        let Some(today) = chrono::DateTime::from_timestamp_millis(now).map(|at| at.date_naive()) else {
            return Vec::new();
        };
        // Local dates run up to 14 hours either side of UTC.
        let dates: Vec<NaiveDate> =
            [today.checked_sub_days(Days::new(1)), Some(today), today.checked_add_days(Days::new(1))]
                .into_iter()
                .flatten()
                .collect();
        self.days.retain(|date, _| dates.contains(date));
        let horizon = now + PLAN_AHEAD.as_millis() as i64;
        let mut upcoming = Vec::new();
        for date in dates {
            let posts = self
                .days
                .entry(date)
                .or_insert_with(|| plan::plan_day(&self.inputs, &self.calendar, self.min_gap, date));
            for post in posts.iter() {
                let grace = input_of(&self.inputs, &self.by_agent, &post.persona, post.platform.as_str())
                    .map(|input| plan::grace(&input.rule))
                    .unwrap_or_default();
                let earliest = now - grace.as_millis() as i64;
                if post.due_at > earliest && post.due_at <= horizon && !self.stored.contains(&post.key) {
                    let due_at = if post.due_at < self.started_at {
                        let spread = 1_000 + crate::hash::fnv1a(post.key.as_bytes()) % (START_SPREAD_MS - 1_000);
                        self.started_at + spread as i64
                    } else {
                        post.due_at
                    };
                    upcoming.push(NewPlanned {
                        idempotency_key: post.key.clone(),
                        persona: post.persona.clone(),
                        platform: post.platform.as_str().to_owned(),
                        due_at,
                        topic: post.topic.clone(),
                        campaign: post.campaign.clone(),
                    });
                }
            }
        }
        upcoming
    }

    pub fn mark_stored(&mut self, posts: &[NewPlanned]) {
        self.stored.extend(posts.iter().map(|post| post.idempotency_key.clone()));
        // Keys of dates no longer planned are dropped with them.
        let live: HashSet<&str> =
            self.days.values().flat_map(|posts| posts.iter().map(|post| post.key.as_str())).collect();
        self.stored.retain(|key| live.contains(key.as_str()));
    }
}

/// The agent an input plans for.
fn agent_of(input: &PlanInput) -> (&str, &str) {
    (input.persona.as_str(), input.platform.as_str())
}

/// Positions of `inputs` sorted by persona and platform.
fn sorted_by_agent(inputs: &[PlanInput]) -> Vec<u32> {
    let mut by_agent: Vec<u32> = (0..inputs.len() as u32).collect();
    by_agent.sort_by(|a, b| agent_of(&inputs[*a as usize]).cmp(&agent_of(&inputs[*b as usize])));
    by_agent
}

/// The input of `persona` on `platform`, if it plans anything.
fn input_of<'a>(inputs: &'a [PlanInput], by_agent: &[u32], persona: &str, platform: &str) -> Option<&'a PlanInput> {
    let found = by_agent.binary_search_by(|at| agent_of(&inputs[*at as usize]).cmp(&(persona, platform))).ok()?;
    Some(&inputs[by_agent[found] as usize])
}

/// One planning round: store what is coming, expire holds, hand due posts to running agents.
pub async fn plan_round(
    db: &Db,
    planner: &tokio::sync::Mutex<Planner>,
    agents: &HashMap<String, ActorRef<AgentMsg>>,
) -> StoreResult<()> {
    let now = now_ms();
    let mut planner = planner.lock().await;
    let upcoming = planner.upcoming(now);
    let created = db.plan_posts(&upcoming).await?;
    planner.mark_stored(&upcoming);
    if created > 0 {
        for post in &upcoming {
            metrics::counter!(m::CONTENT_PLANNED, "platform" => platform_label(&post.platform)).increment(1);
        }
        tracing::debug!(created, "posts planned");
    }
    for id in db.expire_holds(now).await? {
        metrics::counter!(m::AIRLOCK_DECISIONS, "decision" => "expired").increment(1);
        tracing::info!(item = id, "held item expired without a decision; it will not be published");
    }
    for item in db.due_planned(now, DISPATCH_BATCH).await? {
        let agent_id = format!("{}@{}", item.persona, item.platform);
        match agents.get(&agent_id) {
            Some(agent) => {
                if db.dispatch_planned(item.id).await? {
                    let item = ContentItem { stage: "dispatched".to_owned(), ..item };
                    // A dead agent leaves the item dispatched: it is resumed when the agent starts.
                    let _ = agent.send_message(AgentMsg::PostDue(Box::new(item)));
                }
            }
            None => {
                let grace = planner.grace(&item.persona, &item.platform).as_millis() as i64;
                if item.due_at.unwrap_or(now) < now - grace {
                    db.drop_missed(item.id, "missed: the agent was not running in time").await?;
                }
            }
        }
    }
    Ok(())
}

fn platform_label(platform: &str) -> &'static str {
    PlatformKind::ALL.into_iter().find(|kind| kind.as_str() == platform).map(PlatformKind::as_str).unwrap_or("other")
}

/// What the measuring round needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct MeasureSettings {
    pub after: Duration,
    pub every: Duration,
    pub for_: Duration,
}

impl MeasureSettings {
    pub fn from_config(config: &Config) -> Self {
        let team = &config.service.team;
        MeasureSettings {
            after: team.measure_after.get(),
            every: team.measure_every.get(),
            for_: team.measure_for.get(),
        }
    }

    /// How often the measuring round runs.
    pub fn tick(&self) -> Duration {
        self.every.min(Duration::from_secs(60)).max(Duration::from_millis(50))
    }
}

/// One measuring round: published items due for a fetch, by account, through their platforms.
/// A platform that fails is tried again next round; an item it no longer has is recorded as
/// missing and not fetched again until its next turn.
pub async fn measure_round(db: &Db, platforms: &Platforms, settings: MeasureSettings) -> StoreResult<()> {
    let now = now_ms();
    let items = db
        .items_to_measure(now, settings.after.as_millis() as i64, settings.for_.as_millis() as i64, MEASURE_BATCH)
        .await?;
    let mut by_account: BTreeMap<(String, String), Vec<ContentItem>> = BTreeMap::new();
    for item in items {
        by_account.entry((item.platform.clone(), item.persona.clone())).or_default().push(item);
    }
    let next_at = now + settings.every.as_millis() as i64;
    for ((platform_name, persona), items) in by_account {
        let label = platform_label(&platform_name);
        let Some(platform) = platforms.by_name(&platform_name).filter(|platform| platform.measures_engagement()) else {
            // Nothing to fetch there: look again only at the end of the measuring period.
            for item in &items {
                db.record_engagement(item.id, None, now + settings.for_.as_millis() as i64).await?;
            }
            continue;
        };
        let remote_ids: Vec<String> = items.iter().filter_map(|item| item.remote_id.clone()).collect();
        match platform.engagement(&persona, &remote_ids).await {
            Ok(found) => {
                let found: HashMap<String, crate::platform::Engagement> = found.into_iter().collect();
                for item in &items {
                    let engagement = item.remote_id.as_ref().and_then(|id| found.get(id));
                    db.record_engagement(item.id, engagement, next_at).await?;
                }
                metrics::counter!(m::ENGAGEMENT_FETCHES, "platform" => label, "outcome" => "ok").increment(1);
            }
            Err(err) => {
                metrics::counter!(m::ENGAGEMENT_FETCHES, "platform" => label, "outcome" => "failed").increment(1);
                tracing::warn!(platform = %platform_name, persona, error = %err, "engagement fetch failed; trying again next round");
            }
        }
    }
    Ok(())
}

/// Writes last week's report unless it is stored already.
pub async fn report_round(db: &Db) -> StoreResult<()> {
    let week = crate::report::last_complete_week(now_ms());
    if db.report(&week.format("%Y-%m-%d").to_string()).await?.is_some() {
        return Ok(());
    }
    crate::report::generate_and_store(db, week).await?;
    metrics::counter!(m::REPORTS, "trigger" => "schedule").increment(1);
    tracing::info!(week = %week, "weekly report written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleRule;

    #[test]
    fn an_agents_input_is_found_whatever_the_order_of_the_inputs() {
        let rule = |minutes: u64| ScheduleRule {
            every: Some(Duration::from_secs(minutes * 60)),
            jitter: Duration::ZERO,
            slots: Vec::new(),
            timezone: chrono_tz::UTC,
            quiet: None,
            max_per_day: None,
        };
        let input = |persona: &str, platform, minutes| PlanInput {
            persona: persona.to_owned(),
            platform,
            rule: rule(minutes),
            topics: Vec::new(),
        };
        let inputs = vec![
            input("zoe", PlatformKind::Local, 10),
            input("ada", PlatformKind::X, 20),
            input("zoe", PlatformKind::Reddit, 30),
            input("ada", PlatformKind::Local, 40),
        ];
        let by_agent = sorted_by_agent(&inputs);
        let every = |persona: &str, platform: &str| {
            input_of(&inputs, &by_agent, persona, platform).and_then(|input| input.rule.every).map(|d| d.as_secs() / 60)
        };
        assert_eq!(every("zoe", "local"), Some(10));
        assert_eq!(every("ada", "x"), Some(20));
        assert_eq!(every("zoe", "reddit"), Some(30));
        assert_eq!(every("ada", "local"), Some(40));
        assert_eq!(every("ada", "reddit"), None);
        assert_eq!(every("bob", "local"), None);
        assert_eq!(input_of(&[], &[], "ada", "local"), None);
    }
}
