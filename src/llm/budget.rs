//! Daily spend caps (UTC days), per persona and for the whole team, in tokens and in money.
//!
//! Checked before every provider call with an estimate of what the call may cost (the prompt plus
//! the full output budget, at that provider's prices): a call that could exceed a cap is refused
//! with [`LlmError::BudgetExceeded`] and never sent. Actual usage is added when the response
//! arrives. Counters start from the day's `llm_usage` rows, so caps survive restarts.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{BudgetConfig, Persona};
use crate::llm::LlmError;
use crate::metrics as m;

const DAY_MS: i64 = 86_400_000;

/// Tokens and money.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub tokens: u64,
    pub usd: f64,
}

impl Spend {
    fn plus(self, other: Spend) -> Spend {
        Spend { tokens: self.tokens + other.tokens, usd: self.usd + other.usd }
    }
}

#[derive(Debug, Default)]
struct Day {
    index: i64,
    global: Spend,
    personas: HashMap<String, Spend>,
}

#[derive(Debug)]
pub struct Budgets {
    config: Mutex<BudgetConfig>,
    day: Mutex<Day>,
}

/// Start of the UTC day containing `now_ms`.
pub fn day_start(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS) * DAY_MS
}

impl Budgets {
    pub fn new(config: BudgetConfig) -> Self {
        Self { config: Mutex::new(config), day: Mutex::new(Day::default()) }
    }

    /// Sets today's counters from stored usage: (persona, tokens, USD) since the day started.
    pub fn seed(&self, now_ms: i64, rows: &[(String, i64, f64)]) {
        let mut day = self.day.lock().expect("budget lock");
        *day = Day { index: now_ms.div_euclid(DAY_MS), ..Day::default() };
        for (persona, tokens, usd) in rows {
            let spend = Spend { tokens: u64::try_from(*tokens).unwrap_or(0), usd: *usd };
            day.global = day.global.plus(spend);
            day.personas.insert(persona.clone(), spend);
        }
    }

    pub fn reconfigure(&self, config: BudgetConfig) {
        *self.config.lock().expect("budget lock") = config;
    }

    /// Refuses a call whose `estimate` could push the persona or the team past a daily cap.
    pub fn check(&self, persona: &Persona, estimate: Spend, now_ms: i64) -> Result<(), LlmError> {
        let config = self.config.lock().expect("budget lock").clone();
        let mut day = self.day.lock().expect("budget lock");
        roll(&mut day, now_ms);
        let own = day.personas.get(&persona.name).copied().unwrap_or_default().plus(estimate);
        let global = day.global.plus(estimate);
        let persona_tokens = persona.budget.as_ref().and_then(|b| b.daily_tokens).or(config.persona_daily_tokens);
        let persona_usd = persona.budget.as_ref().and_then(|b| b.daily_usd).or(config.persona_daily_usd);
        let refusal = [
            ("persona", "tokens", persona_tokens.is_some_and(|cap| own.tokens > cap)),
            ("persona", "usd", persona_usd.is_some_and(|cap| own.usd > cap)),
            ("global", "tokens", config.global_daily_tokens.is_some_and(|cap| global.tokens > cap)),
            ("global", "usd", config.global_daily_usd.is_some_and(|cap| global.usd > cap)),
        ]
        .into_iter()
        .find(|(_, _, over)| *over);
        match refusal {
            None => Ok(()),
            Some((scope, unit, _)) => {
                metrics::counter!(m::LLM_BUDGET_REFUSALS, "persona" => persona.name.clone(), "scope" => scope, "unit" => unit)
                    .increment(1);
                Err(LlmError::BudgetExceeded {
                    detail: format!("the {scope} daily {unit} cap would be exceeded by this request"),
                })
            }
        }
    }

    /// Adds what a call actually cost.
    pub fn record(&self, persona: &str, spend: Spend, now_ms: i64) {
        let mut day = self.day.lock().expect("budget lock");
        roll(&mut day, now_ms);
        day.global = day.global.plus(spend);
        let own = day.personas.entry(persona.to_owned()).or_default();
        *own = own.plus(spend);
    }
}

/// Starts a new day's counters when the UTC day changed.
fn roll(day: &mut Day, now_ms: i64) {
    let index = now_ms.div_euclid(DAY_MS);
    if day.index != index {
        *day = Day { index, ..Day::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, PersonaBudget, PlatformKind, Schedule};

    fn persona(budget: Option<PersonaBudget>) -> Persona {
        Persona {
            name: "ada".into(),
            display_name: None,
            bio: "b".into(),
            voice: "v".into(),
            topics: vec!["t".into()],
            example_posts: vec![],
            platforms: vec![PlatformKind::Local],
            schedule: Schedule::every(Dur::secs(60)),
            llm_chain: vec![],
            llm_chains: Default::default(),
            budget: budget.map(Box::new),
            x: None,
            reddit: None,
            discord: None,
            trading: None,
            policy: None,
            airlock: None,
        }
    }

    #[test]
    fn persona_and_global_caps_refuse_before_sending_and_reset_each_day() {
        let config =
            BudgetConfig { persona_daily_tokens: Some(1000), global_daily_usd: Some(1.0), ..Default::default() };
        let budgets = Budgets::new(config);
        let now = 10 * DAY_MS + 5;
        budgets.seed(now, &[("ada".into(), 900, 0.1), ("bob".into(), 0, 0.85)]);
        let ada = persona(None);
        assert!(budgets.check(&ada, Spend { tokens: 100, usd: 0.0 }, now).is_ok());
        let refused = budgets.check(&ada, Spend { tokens: 101, usd: 0.0 }, now).unwrap_err();
        assert!(refused.to_string().contains("persona daily tokens"), "{refused}");
        let refused = budgets.check(&ada, Spend { tokens: 1, usd: 0.06 }, now).unwrap_err();
        assert!(refused.to_string().contains("global daily usd"), "{refused}");
        // A persona's own cap overrides the default.
        let generous = persona(Some(PersonaBudget { daily_tokens: Some(5000), daily_usd: None }));
        assert!(budgets.check(&generous, Spend { tokens: 1000, usd: 0.0 }, now).is_ok());
        budgets.record("ada", Spend { tokens: 100, usd: 0.0 }, now);
        assert!(budgets.check(&ada, Spend { tokens: 1, usd: 0.0 }, now).is_err());
        // The next UTC day starts from zero.
        assert!(budgets.check(&ada, Spend { tokens: 1000, usd: 0.5 }, now + DAY_MS).is_ok());
    }
}
