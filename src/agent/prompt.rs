//! Prompts: the persona file and what Memory recalled, turned into chat messages. Only persona
//! text and platform messages go in — never configuration values, keys or tokens.

use crate::config::{Persona, PlatformKind};
use crate::llm::{ChatMessage, Role};
use crate::memory::Recollection;
use crate::store::MemoryKind;

/// The system prompt: who the persona is and how it writes.
pub fn system(persona: &Persona, platform: PlatformKind) -> String {
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
    prompt.push_str("\nWrite one message in your voice, complete sentences only, no hashtags unless asked.");
    prompt
}

fn recent_block(recollection: &Recollection) -> Option<ChatMessage> {
    if recollection.recent.is_empty() {
        return None;
    }
    let mut text = String::from("Things you said recently (do not repeat them):");
    for memory in recollection.recent.iter().rev() {
        text.push_str("\n- ");
        text.push_str(&memory.text);
    }
    Some(ChatMessage::new(Role::System, text))
}

/// Messages for a reply to `text` by `author`.
pub fn reply(
    persona: &Persona,
    platform: PlatformKind,
    recollection: &Recollection,
    author: &str,
    text: &str,
) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::new(Role::System, system(persona, platform))];
    messages.extend(recent_block(recollection));
    // The conversation so far, oldest first; the message being answered is the last user turn.
    for memory in recollection.conversation.iter().rev() {
        if memory.kind == MemoryKind::Inbound && memory.text == text && memory.author == author {
            continue;
        }
        let role = if memory.kind == MemoryKind::Inbound { Role::User } else { Role::Assistant };
        let content =
            if role == Role::User { format!("@{}: {}", memory.author, memory.text) } else { memory.text.clone() };
        messages.push(ChatMessage::new(role, content));
    }
    messages.push(ChatMessage::new(Role::User, format!("@{author}: {text}")));
    messages
}

/// Messages for an original post.
pub fn post(persona: &Persona, platform: PlatformKind, recollection: &Recollection) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::new(Role::System, system(persona, platform))];
    messages.extend(recent_block(recollection));
    messages.push(ChatMessage::new(
        Role::User,
        format!("Write a new post about one of your topics ({}).", persona.topics.join(", ")),
    ));
    messages
}

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
}
