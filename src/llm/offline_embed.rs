//! The offline embedder: no network, no key, deterministic. A text becomes a fixed-size vector by
//! feature hashing — its words (stop words left out), word pairs and character trigrams (within
//! words, with boundary markers) are hashed into [`DIMENSION`] signed buckets, then the vector is
//! L2-normalised. It is lexical: texts that share most of their wording (a light rewording, the
//! same sentence with a word changed) land close together; texts on the same topic in other words
//! share only the topic words and stay apart; a paraphrase in entirely new words needs a real
//! embedding model. It is what the sandbox and the tests embed with, and the default when no
//! `llm.embedding` is configured. Its model name is [`MODEL`].

use std::borrow::Cow;

use async_trait::async_trait;

use super::provider::{Embedder, Embeddings, LlmError};
use crate::hash::Fnv1a;

pub const MODEL: &str = "chorus-hashed-ngrams-384";
pub const DIMENSION: usize = 384;

/// Weights of the feature kinds: whole words carry the meaning, trigrams survive inflections and
/// typos, word pairs reward the same phrasing.
const WORD: f32 = 1.0;
const PAIR: f32 = 0.7;
const TRIGRAM: f32 = 0.35;

/// Words that carry no meaning of their own: left out, so a rewording that only changes them is
/// the same text, and unrelated texts do not look alike for sharing them. Sorted, for the binary
/// search of [`is_stop_word`].
const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "any", "are", "as", "at", "be", "but", "by", "do", "does", "for", "from", "how", "i",
    "in", "is", "it", "its", "just", "like", "me", "my", "of", "on", "only", "or", "our", "should", "so", "some",
    "that", "the", "this", "to", "very", "was", "we", "were", "what", "when", "with", "you", "your",
];

pub struct OfflineEmbedder {
    name: String,
}

impl OfflineEmbedder {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// The vector of one text (all zeros for a text without letters or digits). Each feature is hashed
/// as the text `w:word`, `t:<ab` or `p:one two` would be, piece by piece, with no string made for
/// it; a word already in lower case is not copied.
pub fn embed_text(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0f32; DIMENSION];
    let words: Vec<Cow<str>> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|word| lowercase(word.trim_matches('\'')))
        .filter(|word| !word.is_empty() && !is_stop_word(word))
        .collect();
    let mut add = |feature: Fnv1a, weight: f32| {
        let hash = feature.finish();
        let bucket = (hash % DIMENSION as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[bucket] += sign * weight;
    };
    let mut marked: Vec<char> = Vec::new();
    for word in &words {
        add(Fnv1a::new().write(b"w:").write(word.as_bytes()), WORD);
        marked.clear();
        marked.push('<');
        marked.extend(word.chars());
        marked.push('>');
        for trigram in marked.windows(3) {
            let mut utf8 = [0u8; 4];
            let feature = trigram
                .iter()
                .fold(Fnv1a::new().write(b"t:"), |feature, c| feature.write(c.encode_utf8(&mut utf8).as_bytes()));
            add(feature, TRIGRAM);
        }
    }
    for pair in words.windows(2) {
        add(Fnv1a::new().write(b"p:").write(pair[0].as_bytes()).write(b" ").write(pair[1].as_bytes()), PAIR);
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// Whether `word` is one of [`STOP_WORDS`]: a binary search, where a scan compared every word of
/// every text with most of the list (the embedder's word filter: 25.4k → 19.6k instructions a
/// reply in the bench, callgrind).
fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// `word` in lower case, borrowed when it is ASCII with no capital.
fn lowercase(word: &str) -> Cow<'_, str> {
    if word.bytes().all(|byte| byte.is_ascii() && !byte.is_ascii_uppercase()) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(word.to_lowercase())
    }
}

#[async_trait]
impl Embedder for OfflineEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        MODEL
    }

    async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
        let tokens = texts.iter().map(|text| super::approximate_tokens(text)).sum::<usize>();
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        Ok(Embeddings { vectors: texts.iter().map(|text| embed_text(text)).collect(), model: MODEL.to_owned(), tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &str, b: &str) -> f32 {
        embed_text(a).iter().zip(embed_text(b)).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn the_stop_words_are_sorted_for_their_binary_search() {
        assert!(STOP_WORDS.is_sorted(), "STOP_WORDS must stay sorted: is_stop_word searches it");
        assert!(STOP_WORDS.iter().all(|word| is_stop_word(word)));
        assert!(!is_stop_word("garlic") && !is_stop_word("") && !is_stop_word("yours"));
    }

    #[test]
    fn rewordings_are_close_and_other_posts_on_the_topic_are_not() {
        let post = "Planted garlic today. Like a good refactor, the payoff comes months later.";
        let reworded = "Planted some garlic this morning: like any good refactor, the payoff comes months later!";
        let same_topic = "My tomatoes finally ripened; gardening rewards whoever waters every single morning.";
        let unrelated = "The incident review found a missing alert on the database replica.";
        let (near, topic, far) = (cosine(post, reworded), cosine(post, same_topic), cosine(post, unrelated));
        assert!(near > 0.8, "a rewording is a near-duplicate: {near}");
        assert!(topic < 0.5, "another post on the topic is not: {topic}");
        assert!(far < 0.3, "unrelated text is far: {far}");
        assert!((cosine(post, post) - 1.0).abs() < 1e-5);
    }

    /// The vector as first written: a string made for every feature and hashed whole. Vectors
    /// stored by earlier versions must stay comparable with new ones, so the two agree bit for bit.
    fn embed_text_as_first_written(text: &str) -> Vec<f32> {
        let mut vector = vec![0.0f32; DIMENSION];
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .map(|word| word.trim_matches('\'').to_lowercase())
            .filter(|word| !word.is_empty() && !STOP_WORDS.contains(&word.as_str()))
            .collect();
        let mut add = |feature: &str, weight: f32| {
            let hash = crate::hash::fnv1a(feature.as_bytes());
            let bucket = (hash % DIMENSION as u64) as usize;
            let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
            vector[bucket] += sign * weight;
        };
        for word in &words {
            add(&format!("w:{word}"), WORD);
            let marked: Vec<char> = format!("<{word}>").chars().collect();
            for trigram in marked.windows(3) {
                add(&format!("t:{}", trigram.iter().collect::<String>()), TRIGRAM);
            }
        }
        for pair in words.windows(2) {
            add(&format!("p:{} {}", pair[0], pair[1]), PAIR);
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        vector
    }

    #[test]
    fn vectors_are_the_ones_first_written_bit_for_bit() {
        let texts = [
            "Planted garlic today. Like a good refactor, the payoff comes months later.",
            "What's the BEST way to ship it?! Don't 'quote' me; it's O'Brien's call.",
            "ΟΔΥΣΣΕΥΣ and Σίσυφος — İstanbul, straße, ÉCOLE, naïve café 🙂 x2 v1.2.3",
            "a an the",
            "'''",
            "@ada what do you think about #rustlang and https://example.com/a-b?c=d",
            "",
        ];
        for text in texts {
            let new: Vec<u32> = embed_text(text).iter().map(|x| x.to_bits()).collect();
            let first: Vec<u32> = embed_text_as_first_written(text).iter().map(|x| x.to_bits()).collect();
            assert_eq!(new, first, "{text}");
        }
    }

    #[test]
    fn deterministic_normalised_and_safe_on_empty_text() {
        assert_eq!(embed_text("Same text."), embed_text("Same text."));
        let norm: f32 = embed_text("Any words at all").iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(embed_text("🙂 ... !!").iter().all(|x| *x == 0.0), "nothing to embed");
        assert_eq!(embed_text("").len(), DIMENSION);
    }
}
