//! Coordination of replies: who answers a message that mentions several personas.
//!
//! Without it, every mentioned persona's agent would answer the same message on its own, and the
//! team would talk over itself. This is the TeamLeader's coordination rule; the first agent to see
//! such a message applies it and stores the [`Assignment`] for the thread, so every agent follows
//! the same decision. [`mentioned`] finds the team's personas the message names; [`assign`] ranks
//! them by how well the message fits their topics and how many mentions they already have waiting.
//! The first answers at once, at most `team.max_joiners` joiners answer after the first answer is
//! published, the rest stay silent ([`Role`]). The assignment's `detail` explains the choice in
//! the logs.
//!
//! This module is pure: no I/O, no clock. The same message and candidates always give the same
//! assignment.

use std::collections::BTreeSet;

/// A mentioned persona that could answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub persona: String,
    pub topics: Vec<String>,
    /// Mentions waiting for this persona's answer.
    pub load: i64,
}

/// Who answers a message, and in what order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Answers first. Empty only when there were no candidates.
    pub first: String,
    /// May answer after the first, best first.
    pub joiners: Vec<String>,
    /// Do not answer, best first.
    pub skipped: Vec<String>,
    /// Why, every candidate in rank order: `"ada: fit 2, load 0; bruno: fit 0, load 3"`.
    pub detail: String,
}

/// What one persona does about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    First,
    Joiner,
    Skipped,
}

impl Assignment {
    /// The role of a persona; one that was not a candidate is skipped.
    pub fn role(&self, persona: &str) -> Role {
        if !self.first.is_empty() && self.first == persona {
            Role::First
        } else if self.joiners.iter().any(|joiner| joiner == persona) {
            Role::Joiner
        } else {
            Role::Skipped
        }
    }
}

/// A team's handles made ready for [`mentioned`] once (lowercase, without their `@`, longest
/// first), not at every mention: with 10,000 personas that was 20,000 strings and a sort a mention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handles(Vec<(String, String)>);

impl Handles {
    /// From (handle, persona) pairs; a handle may be given with or without its `@`, in any case.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Handles {
        let mut handles: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(handle, persona)| (handle.trim().trim_start_matches('@').to_lowercase(), persona.to_owned()))
            .filter(|(handle, _)| !handle.is_empty())
            .collect();
        handles.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        handles.shrink_to_fit();
        Handles(handles)
    }
}

/// The personas @-mentioned in `text`, in order of first appearance, each once.
///
/// `handles` maps a handle to its persona ([`Handles`]); a persona may have several handles. A
/// mention counts only as a whole @-mention, ignoring case: `"@ada,"` and `"(@Ada)"` mention
/// `ada`; `"@adam"`, `"@ada_bot"`, `"@ada.com"`, `"email@ada.com"` and
/// `"https://example.social/@ada"` do not. The longest matching handle wins.
pub fn mentioned(text: &str, handles: &Handles) -> Vec<String> {
    let text = text.to_lowercase();
    let mut personas: Vec<String> = Vec::new();
    for (at, _) in text.match_indices('@') {
        if text[..at].chars().next_back().is_some_and(continues_address) {
            continue;
        }
        let rest = &text[at + 1..];
        let found = handles
            .0
            .iter()
            .find(|(handle, _)| rest.starts_with(handle.as_str()) && ends_handle(&rest[handle.len()..]));
        if let Some((_, persona)) = found
            && !personas.iter().any(|known| known == persona)
        {
            personas.push(persona.clone());
        }
    }
    personas
}

/// Ranks the candidates and splits them into the first, up to `max_joiners` joiners, and the
/// skipped.
///
/// A candidate's fit is how many of its topics the text contains: a topic counts once when each
/// of its words appears in the text as a whole word, ignoring case. Higher fit ranks first, then
/// lower load, then the persona's name. A persona listed twice is ranked once, at its best.
pub fn assign(text: &str, candidates: &[Candidate], max_joiners: usize) -> Assignment {
    let words: BTreeSet<String> = words(text).collect();
    let mut ranked: Vec<(&str, usize, i64)> = candidates
        .iter()
        .map(|candidate| (candidate.persona.as_str(), fit(&words, &candidate.topics), candidate.load))
        .collect();
    ranked.sort_by(|(a_name, a_fit, a_load), (b_name, b_fit, b_load)| {
        b_fit.cmp(a_fit).then(a_load.cmp(b_load)).then(a_name.cmp(b_name))
    });
    let mut seen = BTreeSet::new();
    ranked.retain(|(persona, _, _)| seen.insert(*persona));

    let detail = ranked
        .iter()
        .map(|(persona, fit, load)| format!("{persona}: fit {fit}, load {load}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut order = ranked.into_iter().map(|(persona, _, _)| persona.to_owned());
    let first = order.next().unwrap_or_default();
    let joiners: Vec<String> = order.by_ref().take(max_joiners).collect();
    let skipped: Vec<String> = order.collect();
    Assignment { first, joiners, skipped, detail }
}

/// How many of `topics` appear in a text of `words`.
fn fit(text_words: &BTreeSet<String>, topics: &[String]) -> usize {
    let topics: BTreeSet<Vec<String>> = topics
        .iter()
        .map(|topic| words(topic).collect::<Vec<_>>())
        .filter(|topic_words| !topic_words.is_empty())
        .collect();
    topics.iter().filter(|topic_words| topic_words.iter().all(|word| text_words.contains(word))).count()
}

/// The lowercase words of a text: runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase)
}

/// Whether a character before an `@` makes it part of an address or a word rather than a mention.
fn continues_address(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | '@' | '/')
}

/// Whether the text after a handle ends it: nothing, or a character that cannot continue a handle.
/// A `.` or `-` continues it only when a letter, digit or `_` follows (`"@ada."` ends a sentence,
/// `"@ada.com"` is another name).
fn ends_handle(after: &str) -> bool {
    let mut chars = after.chars();
    match chars.next() {
        None => true,
        Some(c) if c.is_alphanumeric() || c == '_' => false,
        Some('.' | '-') => !chars.next().is_some_and(|c| c.is_alphanumeric() || c == '_'),
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handles() -> Handles {
        Handles::new([
            ("ada", "ada"),
            ("@Bruno", "bruno"),
            ("bruno_x", "bruno"),
            ("ada.bot", "adabot"),
            (" @ ", "nobody"),
        ])
    }

    fn candidate(persona: &str, topics: &[&str], load: i64) -> Candidate {
        Candidate {
            persona: persona.to_owned(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            load,
        }
    }

    #[test]
    fn whole_mentions_count_in_order_of_first_appearance() {
        let handles = handles();
        assert_eq!(mentioned("@bruno and @ada, what do you think? @Ada again", &handles), vec!["bruno", "ada"]);
        assert_eq!(mentioned("(@ADA) @bruno_x!", &handles), vec!["ada", "bruno"]);
        assert_eq!(mentioned("thanks @ada.", &handles), vec!["ada"]);
        assert_eq!(mentioned("@ada: hi", &handles), vec!["ada"]);
        assert_eq!(mentioned("@ada\n", &handles), vec!["ada"]);
        assert_eq!(mentioned("ask @ada.bot please", &handles), vec!["adabot"]);
    }

    #[test]
    fn look_alikes_are_not_mentions() {
        let handles = handles();
        for text in [
            "@adam hello",
            "@ada_fan hello",
            "@ada2",
            "mail email@ada.com",
            "visit @ada.com",
            "@ada-bot",
            "https://example.social/@ada",
            "ada without an at",
            "@ @ @@ada",
            "",
        ] {
            assert!(mentioned(text, &handles).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn several_handles_of_one_persona_count_once() {
        assert_eq!(mentioned("@bruno_x @ada @bruno", &handles()), vec!["bruno", "ada"]);
    }

    #[test]
    fn non_ascii_text_does_not_confuse_positions() {
        assert_eq!(mentioned("İstanbul’da @ada ile ☕ @bruno", &handles()), vec!["ada", "bruno"]);
        assert!(mentioned("é@ada", &handles()).is_empty());
    }

    #[test]
    fn the_best_fit_answers_first() {
        let candidates = [
            candidate("ada", &["rust"], 0),
            candidate("bruno", &["solana", "defi", "jupiter swap"], 5),
            candidate("chen", &["swap"], 0),
        ];
        let assignment = assign("Is a Jupiter swap on Solana safe?", &candidates, 1);
        assert_eq!(assignment.first, "bruno");
        assert_eq!(assignment.joiners, vec!["chen"]);
        assert_eq!(assignment.skipped, vec!["ada"]);
        assert_eq!(assignment.detail, "bruno: fit 2, load 5; chen: fit 1, load 0; ada: fit 0, load 0");
        assert_eq!(assignment.role("bruno"), Role::First);
        assert_eq!(assignment.role("chen"), Role::Joiner);
        assert_eq!(assignment.role("ada"), Role::Skipped);
        assert_eq!(assignment.role("dan"), Role::Skipped);
    }

    #[test]
    fn topics_match_whole_words_and_multi_word_topics_need_every_word() {
        let candidates = [candidate("ada", &["rust", "async rust", "go"], 0)];
        assert_eq!(assign("trusting async code", &candidates, 0).detail, "ada: fit 0, load 0");
        assert_eq!(assign("Rust, but ASYNC.", &candidates, 0).detail, "ada: fit 2, load 0");
        assert_eq!(assign("going to rust", &candidates, 0).detail, "ada: fit 1, load 0");
    }

    #[test]
    fn equal_fit_goes_to_the_least_loaded_then_by_name() {
        let candidates =
            [candidate("dan", &["rust"], 1), candidate("chen", &["rust"], 3), candidate("bruno", &["rust"], 1)];
        let assignment = assign("rust?", &candidates, 5);
        assert_eq!(assignment.first, "bruno");
        assert_eq!(assignment.joiners, vec!["dan", "chen"]);
        assert!(assignment.skipped.is_empty());
    }

    #[test]
    fn joiners_are_capped() {
        let candidates: Vec<Candidate> =
            ["a", "b", "c", "d"].iter().map(|persona| candidate(persona, &[], 0)).collect();
        let none = assign("hi", &candidates, 0);
        assert_eq!((none.first.as_str(), none.joiners.len(), none.skipped.len()), ("a", 0, 3));
        let two = assign("hi", &candidates, 2);
        assert_eq!(two.joiners, vec!["b", "c"]);
        assert_eq!(two.skipped, vec!["d"]);
    }

    #[test]
    fn a_persona_listed_twice_is_ranked_once_and_no_candidates_assign_nobody() {
        let candidates = [candidate("ada", &[], 4), candidate("ada", &[], 0), candidate("bruno", &[], 1)];
        let assignment = assign("hi", &candidates, 1);
        assert_eq!(assignment.detail, "ada: fit 0, load 0; bruno: fit 0, load 1");
        let empty = assign("hi", &[], 1);
        assert_eq!(empty.first, "");
        assert_eq!(empty.role(""), Role::Skipped);
    }
}
