//! Prompts: the persona file and what Memory recalled, turned into chat messages. Only persona
//! text and platform messages go in — never configuration values, keys or tokens.

use crate::config::{Persona, PlatformKind};
use crate::llm::{ChatMessage, Role};
use crate::memory::Recollection;
use crate::store::MemoryKind;

/// The system prompt: who the persona is and how it writes, and the brand's shared voice rules.
pub fn system(persona: &Persona, platform: PlatformKind, brand: &str) -> String {
    let name = persona.display_name.as_deref().unwrap_or(&persona.name);
    let mut prompt = format!(
        "You are {name} (@{handle}) posting on {platform}.\nBio: {bio}\nVoice: {voice}\nTopics: {topics}.",
        handle = persona.handle_on(platform),
        bio = persona.bio.trim(),
        voice = persona.voice.trim(),
        topics = persona.topics.join(", "),
    );
    if !persona.example_posts.is_empty() {
        prompt.push_str("\nPosts in your voice:");
        for example in &persona.example_posts {
            prompt.push_str("\n- ");
            prompt.push_str(example.trim());
        }
    }
    if !brand.trim().is_empty() {
        prompt.push_str("\nTeam voice rules (every persona of the team follows them):\n");
        prompt.push_str(brand.trim());
    }
    prompt.push_str("\nWrite one message in your voice, complete sentences only, no hashtags unless asked.");
    prompt
}

fn recent_block(recollection: &Recollection) -> Option<ChatMessage> {
    if recollection.recent.is_empty() {
        return None;
    }
    let mut text = String::from("Things you posted recently (do not repeat them):");
    for memory in recollection.recent.iter().rev() {
        text.push_str("\n- ");
        text.push_str(&memory.text);
    }
    Some(ChatMessage::new(Role::System, text))
}

/// The memories most like the message answered, most similar first, within `budget` tokens.
fn relevant_block(recollection: &Recollection, budget: usize) -> Option<ChatMessage> {
    let mut text = String::from("Things you know or said before that may help (use them only if they fit):");
    let mut left = budget;
    let mut listed = 0;
    for memory in &recollection.relevant {
        let cost = estimate_tokens(&memory.text);
        if cost > left {
            break;
        }
        left -= cost;
        listed += 1;
        text.push_str("\n- ");
        text.push_str(&memory.text);
    }
    (listed > 0).then(|| ChatMessage::new(Role::System, text))
}

/// What a reply is written with: what Memory recalled, and how many (estimated) tokens of the
/// conversation may go in verbatim.
pub struct Context<'a> {
    pub recollection: &'a Recollection,
    pub budget_tokens: usize,
    /// The brand's shared voice rules.
    pub brand: &'a str,
}

/// Older turns listed (shortened) in the summary of a trimmed conversation, and their length.
const SUMMARY_LINES: usize = 8;
const SUMMARY_LINE_CHARS: usize = 100;

/// A rough token count: about four characters per token in English, plus the turn's overhead.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4) + 4
}

/// Messages for a reply to `text` by `author`: the persona, then the conversation so far — the
/// newest turns verbatim within the context budget, the older ones summarised in one system
/// message (a shortened line each, then a count) — then the message being answered.
pub fn reply(
    persona: &Persona,
    platform: PlatformKind,
    context: &Context<'_>,
    author: &str,
    text: &str,
) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::new(Role::System, system(persona, platform, context.brand))];
    messages.extend(recent_block(context.recollection));
    messages.extend(relevant_block(context.recollection, context.budget_tokens / 4));
    // Memory gives the conversation newest first; the message being answered is the last turn.
    let turns: Vec<ChatMessage> = context
        .recollection
        .conversation
        .iter()
        .rev()
        .filter(|memory| !(memory.kind == MemoryKind::Inbound && memory.text == text && memory.author == author))
        .map(|memory| match memory.kind {
            MemoryKind::Inbound => ChatMessage::new(Role::User, format!("@{}: {}", memory.author, memory.text)),
            _ => ChatMessage::new(Role::Assistant, memory.text.clone()),
        })
        .collect();
    let mut left = context.budget_tokens;
    let verbatim = turns
        .iter()
        .rev()
        .take_while(|turn| {
            let cost = estimate_tokens(&turn.content);
            let fits = cost <= left;
            left = left.saturating_sub(cost);
            fits
        })
        .count();
    let (older, newer) = turns.split_at(turns.len() - verbatim);
    if !older.is_empty() {
        metrics::counter!(crate::metrics::CONTEXT_SUMMARISED, "platform" => platform.as_str())
            .increment(older.len() as u64);
        messages.push(ChatMessage::new(Role::System, summary(older)));
    }
    messages.extend(newer.iter().cloned());
    messages.push(ChatMessage::new(Role::User, format!("@{author}: {text}")));
    messages
}

/// The turns that did not fit, oldest first, as one short note.
fn summary(older: &[ChatMessage]) -> String {
    let mut text = format!("Earlier in this conversation ({} messages, shortened):", older.len());
    let unlisted = older.len().saturating_sub(SUMMARY_LINES);
    if unlisted > 0 {
        text.push_str(&format!("\n- ({unlisted} earlier messages not listed)"));
    }
    for turn in &older[unlisted..] {
        text.push_str(if turn.role == Role::Assistant { "\n- you: " } else { "\n- " });
        let line: String = turn.content.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.chars().count() > SUMMARY_LINE_CHARS {
            text.extend(line.chars().take(SUMMARY_LINE_CHARS - 1));
            text.push('…');
        } else {
            text.push_str(&line);
        }
    }
    text
}

/// Messages for an original post, about the topic the plan gave it (else one of the persona's).
pub fn post(
    persona: &Persona,
    platform: PlatformKind,
    brand: &str,
    recollection: &Recollection,
    topic: Option<&str>,
) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::new(Role::System, system(persona, platform, brand))];
    messages.extend(recent_block(recollection));
    let ask = match topic {
        Some(topic) => format!("{POST_ABOUT}{topic}."),
        None => format!("Write a new post about one of your topics ({}).", persona.topics.join(", ")),
    };
    messages.push(ChatMessage::new(Role::User, ask));
    messages
}

/// How a post's topic is asked for (the offline provider reads the topic back from it).
pub const POST_ABOUT: &str = "Write a new post about ";

/// Cleans generated text for publishing: trims it, and when the model stopped for length cuts
/// it back to the last complete sentence (never a sentence cut in half). `None` when nothing
/// publishable is left.
pub fn finish(text: &str, truncated: bool, max_chars: usize) -> Option<String> {
    let mut text = text.trim().to_owned();
    if text.chars().count() > max_chars {
        text = text.chars().take(max_chars).collect();
        text = last_full_sentence(&text)?;
    } else if truncated {
        text = last_full_sentence(&text)?;
    }
    let has_words = text.chars().any(char::is_alphanumeric);
    has_words.then_some(text)
}

fn last_full_sentence(text: &str) -> Option<String> {
    let end = text.rfind(['.', '!', '?'])?;
    let sentence = text[..=end].trim();
    (!sentence.is_empty()).then(|| sentence.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_trims_cut_off_text_to_the_last_sentence() {
        assert_eq!(finish("  Hello there. ", false, 100).as_deref(), Some("Hello there."));
        assert_eq!(finish("One. Two is cut", true, 100).as_deref(), Some("One."));
        assert_eq!(finish("no sentence end", true, 100), None);
        assert_eq!(finish("🙂🙂", false, 100), None);
        assert_eq!(finish("", false, 100), None);
        assert_eq!(finish("Short. Much longer sentence here.", false, 12).as_deref(), Some("Short."));
    }

    fn memory(kind: MemoryKind, author: &str, text: &str) -> crate::store::MemoryRow {
        crate::store::MemoryRow {
            id: 0,
            persona: "ada".into(),
            kind,
            platform: "discord".into(),
            conversation: Some("c".into()),
            author: author.into(),
            text: text.into(),
            created_at: 0,
        }
    }

    fn persona() -> Persona {
        toml::from_str(
            "name = \"ada\"\nbio = \"b\"\nvoice = \"v\"\ntopics = [\"t\"]\nplatforms = [\"discord\"]\n\
             [schedule]\nevery = \"1h\"\n",
        )
        .unwrap()
    }

    #[test]
    fn old_turns_beyond_the_budget_are_summarised_not_dropped() {
        // Newest first, as Memory returns them: 30 turns of about 60 tokens each.
        let conversation: Vec<_> = (0..30)
            .rev()
            .map(|i| {
                let text = format!("turn {i} {}", "word ".repeat(45));
                if i % 2 == 0 {
                    memory(MemoryKind::Inbound, "sam", &text)
                } else {
                    memory(MemoryKind::Reply, "ada", &text)
                }
            })
            .collect();
        let recollection = Recollection { recent: vec![], conversation, relevant: vec![] };
        let context = Context { recollection: &recollection, budget_tokens: 400, brand: "" };
        let messages = reply(&persona(), PlatformKind::Discord, &context, "sam", "and now?");
        let verbatim: Vec<&ChatMessage> = messages.iter().filter(|m| m.role != Role::System).collect();
        let verbatim_tokens: usize = verbatim[..verbatim.len() - 1].iter().map(|m| estimate_tokens(&m.content)).sum();
        assert!(verbatim_tokens <= 400, "{verbatim_tokens}");
        assert!(verbatim.len() > 3, "the newest turns are kept verbatim");
        assert!(verbatim[verbatim.len() - 2].content.starts_with("turn 29 "), "newest turn kept last");
        let summary =
            messages.iter().find(|m| m.content.starts_with("Earlier in this conversation")).expect("a summary");
        let summarised = 30 - (verbatim.len() - 1);
        assert!(summary.content.contains(&format!("({summarised} messages")), "{}", summary.content);
        assert!(summary.content.contains("not listed"), "the oldest are counted");
        assert!(summary.content.contains("you: turn"), "both sides appear");
        assert_eq!(messages.last().unwrap().content, "@sam: and now?");
    }

    #[test]
    fn a_short_conversation_goes_in_whole() {
        let conversation =
            vec![memory(MemoryKind::Reply, "ada", "hi sam"), memory(MemoryKind::Inbound, "sam", "hello")];
        let recollection = Recollection { recent: vec![], conversation, relevant: vec![] };
        let context = Context { recollection: &recollection, budget_tokens: 400, brand: "" };
        let messages = reply(&persona(), PlatformKind::Discord, &context, "sam", "how are you?");
        let contents: Vec<&str> = messages.iter().skip(1).map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["@sam: hello", "hi sam", "@sam: how are you?"]);
    }

    #[test]
    fn the_brand_rules_and_the_planned_topic_are_in_the_prompt() {
        let recollection = Recollection::default();
        let messages =
            post(&persona(), PlatformKind::X, "Never promise returns.", &recollection, Some("winter pruning"));
        assert!(
            messages[0].content.contains("Team voice rules") && messages[0].content.contains("Never promise returns.")
        );
        assert_eq!(messages.last().unwrap().content, "Write a new post about winter pruning.");
        let context = Context { recollection: &recollection, budget_tokens: 400, brand: "Be kind." };
        let messages = reply(&persona(), PlatformKind::X, &context, "sam", "hi");
        assert!(messages[0].content.contains("Be kind."));
    }
}
