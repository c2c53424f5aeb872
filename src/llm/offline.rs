//! The offline dry-run provider: no network, no key. It writes deterministic, persona-aware text
//! from the persona file (topics, voice, example posts) so the sandbox and the tests have
//! something meaningful to publish. Its model name is `dry-run`, on every usage row and metric.

use async_trait::async_trait;

use super::provider::{Completion, CompletionRequest, LlmError, Provider, Role, Task};

pub const MODEL: &str = "dry-run";

pub struct OfflineProvider {
    name: String,
}

impl OfflineProvider {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

const OPENERS: &[&str] =
    &["Good question", "Fair point", "Short answer", "Here is how I see it", "Glad you asked", "Honestly"];

const TAKES: &[&str] = &[
    "when it comes to {topic}, patience beats cleverness.",
    "with {topic}, the boring fix is usually the right one.",
    "I keep coming back to {topic}: measure first, then change one thing at a time.",
    "most trouble with {topic} starts with an assumption nobody wrote down.",
    "the best part of {topic} is how much a small experiment teaches you.",
    "in {topic}, drawing the whole picture first saves hours later.",
    "the people who are good at {topic} ask more questions than they answer.",
    "{topic} rewards the habit of writing down what you expected before you try it.",
    "half of {topic} is knowing which details you can safely ignore today.",
    "the quickest way to get better at {topic} is to explain it to someone new.",
    "every surprise in {topic} is a note for the next person, so keep the notes.",
    "in {topic}, the second attempt is where the real learning happens.",
];

/// A concrete aside between the take and the closer: more variety per answer.
const ASIDES: &[&str] = &[
    "Last month taught me that twice.",
    "A notebook helps more than any tool here.",
    "Most of the cost is in the first hour.",
    "The second look always finds something.",
    "Ask what the simplest version would be.",
    "Timing matters more than people expect.",
    "Small, reversible steps keep it calm.",
    "Write the question down before the answer.",
    "The edge cases are where the lessons hide.",
    "Sleep on it if the stakes are high.",
];

/// How the Agent starts the note it adds after a draft that repeated a recent output.
pub const REPEATED_NUDGE: &str = "Your last draft repeated something said recently";

/// A closing thought after the take, so two answers with the same take still read differently.
const CLOSERS: &[&str] = &[
    "Start small and see what changes.",
    "That has held up for me more often than not.",
    "Curious whether it matches what you have seen.",
    "It sounds slow, and it is the fast way.",
    "Try it once this week and compare.",
    "The details will differ, the pattern usually does not.",
    "Happy to dig into a concrete case.",
    "Worth a try before anything fancier.",
];

/// Picks from `items` by `seed`, salted so different picks from one seed differ.
fn pick<'a>(items: &'a [&'a str], seed: u64, salt: u64) -> &'a str {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ salt.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    items[(mixed % items.len() as u64) as usize]
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[async_trait]
impl Provider for OfflineProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        MODEL
    }

    async fn complete(&self, request: &CompletionRequest, _max_tokens: u32) -> Result<Completion, LlmError> {
        let persona = &request.persona;
        let prompt = request.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.as_str());
        let topics: Vec<&str> = persona.topics.iter().map(String::as_str).filter(|t| !t.trim().is_empty()).collect();
        // Answer about the topic the message names, if it names one of ours.
        let named = prompt.and_then(|prompt| {
            let lower = prompt.to_lowercase();
            topics.iter().copied().find(|topic| lower.contains(&topic.to_lowercase()))
        });
        // A planned post names its topic (it may be a theme of the day, not one of the persona's).
        let planned = match request.task {
            Task::Post => prompt
                .and_then(|prompt| prompt.strip_prefix(crate::agent::POST_ABOUT))
                .map(|rest| rest.trim_end_matches('.')),
            _ => None,
        };
        let topic = planned.or(named).unwrap_or_else(|| pick(&topics, request.seed, 1));
        let take = pick(TAKES, request.seed, 2).replace("{topic}", topic);
        let examples: Vec<&str> = persona.example_posts.iter().map(String::as_str).collect();
        let text = match request.task {
            Task::Reply => {
                let author = request.reply_to_author.as_deref().unwrap_or("friend");
                // Quoting the question keeps two answers to different questions from being the
                // same text (which X, for one, refuses as duplicate content).
                let opener = pick(OPENERS, request.seed, 3);
                let mut closer = format!("{} {}", pick(ASIDES, request.seed, 7), pick(CLOSERS, request.seed, 5));
                // Told that its last draft repeated something, it adds one of the persona's own
                // lines, as a model asked to "say something different" would change course.
                let retries = request.messages.iter().filter(|m| m.content.starts_with(REPEATED_NUDGE)).count();
                if retries > 0 && !examples.is_empty() {
                    closer = format!("{closer} {}", pick(&examples, request.seed, 6 + retries as u64));
                }
                match prompt.map(question_of).filter(|question| !question.is_empty()) {
                    Some(question) => format!("@{author} {opener}, on \"{question}\": {take} {closer}"),
                    None => format!("@{author} {opener}: {take} {closer}"),
                }
            }
            Task::Post if !examples.is_empty() && request.seed.is_multiple_of(3) => {
                format!("{} {}", capitalise(&take), pick(&examples, request.seed, 4))
            }
            Task::Post => capitalise(&take),
            Task::Trade => trade_decision(prompt.unwrap_or_default(), request.seed),
            // The dry run has no judgement of tone: it passes every draft.
            Task::Review => "OK".to_owned(),
        };
        let tokens_in: usize = request.messages.iter().map(|m| approximate_tokens(&m.content)).sum();
        Ok(Completion {
            tokens_out: approximate_tokens(&text) as u32,
            tokens_in: tokens_in as u32,
            text,
            provider: self.name.clone(),
            model: MODEL.to_owned(),
            truncated: false,
        })
    }
}

/// A deterministic trading decision from the market block of a trading prompt: by seed, hold; buy
/// a tradeable token with 1 % of the SOL balance; or sell half of the largest tradeable token
/// holding back into SOL. Without a market block (or anything to trade), hold.
fn trade_decision(prompt: &str, seed: u64) -> String {
    use crate::trader::SOL_MINT;
    use crate::trader::prompt::MarketView;
    let hold = |reason: &str| {
        serde_json::json!({"action": "hold", "input_mint": "", "output_mint": "", "amount": 0, "reason": reason})
            .to_string()
    };
    let Some(market) = MarketView::from_prompt(prompt) else { return hold("No market data to act on.") };
    let sol = market.tokens.iter().find(|token| token.mint == SOL_MINT && token.tradeable);
    let others: Vec<_> = market.tokens.iter().filter(|token| token.mint != SOL_MINT && token.tradeable).collect();
    let decision = |action: &str, input: &str, output: &str, amount: u64, reason: String| {
        serde_json::json!({"action": action, "input_mint": input, "output_mint": output, "amount": amount, "reason": reason})
            .to_string()
    };
    match (seed % 3, sol) {
        (1, Some(sol)) if !others.is_empty() && sol.balance >= 100 => {
            let target = others[(seed / 3) as usize % others.len()];
            let reason = format!("A small position in {} while it is quiet.", target.symbol);
            decision("buy", &sol.mint, &target.mint, sol.balance / 100, reason)
        }
        (2, Some(sol)) => match others.iter().filter(|token| token.balance >= 2).max_by_key(|token| token.balance) {
            Some(token) => {
                let reason = format!("Taking half of the {} position back into SOL.", token.symbol);
                decision("sell", &token.mint, &sol.mint, token.balance / 2, reason)
            }
            None => hold("Nothing to take profit on."),
        },
        _ => hold("Nothing compelling right now; holding."),
    }
}

/// The question in a reply prompt (`@author: text`), without leading `@handles`, at most 60
/// characters, cut at a word.
fn question_of(prompt: &str) -> String {
    let text = prompt.split_once(": ").map_or(prompt, |(_, text)| text);
    let mut rest = text.trim();
    while let Some(after) = rest.strip_prefix('@') {
        rest = after.split_once(char::is_whitespace).map_or("", |(_, tail)| tail).trim_start();
    }
    let question = rest.trim_end_matches(['?', '!', '.', ' ']);
    if question.chars().count() <= 60 {
        return question.to_owned();
    }
    let cut: String = question.chars().take(60).collect();
    match cut.rsplit_once(' ') {
        Some((head, _)) => format!("{head}…"),
        None => format!("{cut}…"),
    }
}

/// About four characters per token, as with English text and common tokenizers.
pub fn approximate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Dur, Persona, PlatformKind, Schedule};
    use crate::llm::provider::ChatMessage;

    fn persona() -> Arc<Persona> {
        Arc::new(Persona {
            name: "ada".into(),
            display_name: None,
            bio: "b".into(),
            voice: "v".into(),
            topics: vec!["compilers".into(), "gardening".into()],
            example_posts: vec!["Tomatoes need sun.".into()],
            platforms: vec![PlatformKind::Local],
            schedule: Schedule::every(Dur::secs(60)),
            llm_chain: vec![],
            llm_chains: Default::default(),
            budget: None,
            x: None,
            reddit: None,
            discord: None,
            trading: None,
            policy: None,
            airlock: None,
        })
    }

    fn request(task: Task, text: &str, seed: u64) -> CompletionRequest {
        CompletionRequest {
            persona: persona(),
            task,
            messages: vec![ChatMessage::new(Role::User, text)],
            reply_to_author: Some("sam".into()),
            seed,
        }
    }

    #[test]
    fn the_question_is_quoted_without_handles_and_clipped() {
        assert_eq!(question_of("@sam: @ada @bob what about gardening?"), "what about gardening");
        assert_eq!(question_of("plain"), "plain");
        let long = question_of(&format!("@sam: {}", "word ".repeat(30)));
        assert!(long.ends_with('…') && long.chars().count() <= 61, "{long}");
    }

    #[tokio::test]
    async fn replies_are_deterministic_addressed_and_on_the_named_topic() {
        let provider = OfflineProvider::new("offline");
        let first = provider.complete(&request(Task::Reply, "what about gardening?", 5), 256).await.unwrap();
        let again = provider.complete(&request(Task::Reply, "what about gardening?", 5), 256).await.unwrap();
        assert_eq!(first, again);
        assert!(first.text.starts_with("@sam "), "{}", first.text);
        assert!(first.text.contains("gardening"), "{}", first.text);
        assert_eq!(first.model, MODEL);
    }

    #[tokio::test]
    async fn posts_vary_with_the_seed_and_use_persona_topics() {
        let provider = OfflineProvider::new("offline");
        let texts: std::collections::BTreeSet<String> = futures::future::join_all((0..12).map(|seed| {
            let provider = &provider;
            async move { provider.complete(&request(Task::Post, "write a post", seed), 256).await.unwrap().text }
        }))
        .await
        .into_iter()
        .collect();
        assert!(texts.len() > 3, "{texts:?}");
        assert!(texts.iter().all(|t| t.contains("ompilers") || t.contains("ardening")), "{texts:?}");
    }

    #[tokio::test]
    async fn trade_decisions_parse_strictly_and_stay_within_the_wallet() {
        use crate::trader::prompt::{MarketView, TokenView, messages};
        use crate::trader::{Action, SOL_MINT, parse_decision};
        let token = |symbol: &str, mint: &str, balance: u64| TokenView {
            symbol: symbol.into(),
            mint: mint.into(),
            decimals: 6,
            usd_price: Some(1.0),
            balance,
            tradeable: true,
        };
        let market = MarketView {
            mode: "paper".into(),
            tokens: vec![token("SOL", SOL_MINT, 10_000_000_000), token("USDC", crate::config::USDC_MINT, 3_000_000)],
        };
        let provider = OfflineProvider::new("offline");
        let mut actions = std::collections::BTreeSet::new();
        for seed in 0..6 {
            let mut request = request(Task::Trade, "", seed);
            request.messages = messages(&persona(), "", &market);
            let text = provider.complete(&request, 256).await.unwrap().text;
            let decision = parse_decision(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
            match decision.action {
                Action::Buy => assert_eq!((decision.input_mint.as_str(), decision.amount), (SOL_MINT, 100_000_000)),
                Action::Sell => assert_eq!((decision.output_mint.as_str(), decision.amount), (SOL_MINT, 1_500_000)),
                Action::Hold => {}
            }
            actions.insert(decision.action.as_str());
        }
        assert_eq!(actions.len(), 3, "{actions:?}");
    }
}
