//! How X counts a post's length (twitter-text v3 weighting) and how a long answer becomes a
//! numbered thread.
//!
//! Weighting, as twitter-text v3's default configuration: a code point weighs 200 (counts 2)
//! unless it falls in `0..=4351` (Latin, Greek, Cyrillic, Hebrew, Arabic, …), `8192..=8205`,
//! `8208..=8223` or `8242..=8247` (spaces, dashes, quotes, primes), which weigh 100 (count 1). Every
//! URL (`http://` or `https://` up to the next whitespace) counts 23, and every emoji — including a
//! whole sequence (skin tone, ZWJ family, flag, keycap) — counts 2.
//!
//! Not implemented: twitter-text's NFC normalisation before counting and its detection of URLs
//! without a scheme (`example.com`); both only ever make our count higher than X's, never lower,
//! except for a decomposed accent (`e` + U+0301 counts 2 here, 1 on X) — still on the safe side.

/// Length of a URL, whatever its text (t.co wrapping).
const URL_LENGTH: usize = 23;

/// One indivisible piece of text: a URL, an emoji sequence or a single code point.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    weight: usize,
}

fn is_light(c: char) -> bool {
    matches!(c as u32, 0..=4351 | 8192..=8205 | 8208..=8223 | 8242..=8247)
}

fn weight(c: char) -> usize {
    if is_light(c) { 1 } else { 2 }
}

/// A code point that starts an emoji presentation on its own.
fn is_emoji_base(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF   // mahjong … symbols & pictographs extended-A (includes regional indicators)
        | 0x2600..=0x27BF   // misc symbols, dingbats
        | 0x2300..=0x23FF   // misc technical (⌚, ⏰)
        | 0x2B00..=0x2BFF   // arrows, ⭐, ⬛
        | 0x2190..=0x21FF   // arrows (with VS16)
        | 0x3030 | 0x303D | 0x3297 | 0x3299 | 0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139
    )
}

/// Code points that extend an emoji: variation selector 16, skin tones, tags, keycap.
fn is_emoji_modifier(c: char) -> bool {
    matches!(c as u32, 0xFE0F | 0x1F3FB..=0x1F3FF | 0xE0020..=0xE007F | 0x20E3)
}

fn is_regional_indicator(c: char) -> bool {
    matches!(c as u32, 0x1F1E6..=0x1F1FF)
}

/// Where a URL starting at byte `at` ends (the next whitespace), if one starts there: `http://` or
/// `https://` not glued to a preceding letter or digit, with something after the scheme.
fn url_end(text: &str, at: usize) -> Option<usize> {
    let rest = &text[at..];
    let scheme = if rest.starts_with("https://") {
        8
    } else if rest.starts_with("http://") {
        7
    } else {
        return None;
    };
    if text[..at].chars().next_back().is_some_and(char::is_alphanumeric) {
        return None;
    }
    let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    (len > scheme).then_some(at + len)
}

/// The text as units, in order, covering every byte.
fn units(text: &str) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if (c == 'h' || c == 'H')
            && let Some(end) = url_end(text, start)
        {
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            units.push(Unit { start, end, weight: URL_LENGTH });
            continue;
        }
        // Keycap: [0-9#*] (VS16)? U+20E3.
        if c.is_ascii_digit() || c == '#' || c == '*' {
            let rest = &text[start + 1..];
            let keycap = rest.strip_prefix('\u{FE0F}').unwrap_or(rest);
            if keycap.starts_with('\u{20E3}') {
                let end = text.len() - keycap.len() + '\u{20E3}'.len_utf8();
                while chars.peek().is_some_and(|&(i, _)| i < end) {
                    chars.next();
                }
                units.push(Unit { start, end, weight: 2 });
                continue;
            }
        }
        if is_emoji_base(c) {
            let mut end = start + c.len_utf8();
            if is_regional_indicator(c)
                && let Some(&(i, next)) = chars.peek()
                && is_regional_indicator(next)
            {
                chars.next();
                end = i + next.len_utf8();
            }
            loop {
                match chars.peek().copied() {
                    Some((i, m)) if is_emoji_modifier(m) => {
                        chars.next();
                        end = i + m.len_utf8();
                    }
                    Some((i, '\u{200D}')) => {
                        // A ZWJ joins the next emoji into the same sequence.
                        let after = &text[i + 3..];
                        match after.chars().next() {
                            Some(next) if is_emoji_base(next) => {
                                chars.next();
                                chars.next();
                                end = i + 3 + next.len_utf8();
                            }
                            _ => break,
                        }
                    }
                    _ => break,
                }
            }
            units.push(Unit { start, end, weight: 2 });
            continue;
        }
        units.push(Unit { start, end: start + c.len_utf8(), weight: weight(c) });
    }
    units
}

/// The length X counts for `text` (limit 280 for a standard account).
pub fn weighted_length(text: &str) -> usize {
    units(text).iter().map(|unit| unit.weight).sum()
}

/// Splits `text` into posts of at most `max` weighted characters. Text that fits is returned as one
/// part, unchanged. Otherwise it is cut at sentence boundaries (`.`, `!`, `?`, `…` or a line break
/// followed by whitespace), an over-long sentence at word boundaries, and a single over-long word
/// between characters (never inside a URL or an emoji); whitespace between pieces becomes a single
/// space and every part ends with ` (i/n)`, suffix included in the limit.
///
/// `max` must leave room for a suffix and a URL (at least 40 or so); with a smaller `max` the parts
/// may exceed it.
pub fn split_thread(text: &str, max: usize) -> Vec<String> {
    if weighted_length(text) <= max {
        return vec![text.to_owned()];
    }
    let sentences = sentences(text);
    let mut digits = 1;
    loop {
        // " (" + i + "/" + n + ")", with i and n at most `digits` long.
        let budget = max.saturating_sub(4 + 2 * digits).max(1);
        let parts = pack(&sentences, budget);
        let n = parts.len();
        if n < 10usize.pow(digits as u32) || digits >= 6 {
            return parts.into_iter().enumerate().map(|(i, part)| format!("{part} ({}/{n})", i + 1)).collect();
        }
        digits += 1;
    }
}

/// Sentences of `text`, each a list of words (whitespace-free tokens).
fn sentences(text: &str) -> Vec<Vec<&str>> {
    let mut sentences = Vec::new();
    let mut current = Vec::new();
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        let newline_before = rest[..rest.len() - trimmed.len()].contains('\n');
        if newline_before && !current.is_empty() {
            sentences.push(std::mem::take(&mut current));
        }
        if trimmed.is_empty() {
            break;
        }
        let len = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let word = &trimmed[..len];
        current.push(word);
        let is_url = url_end(word, 0).is_some();
        if !is_url && word.ends_with(['.', '!', '?', '…']) {
            sentences.push(std::mem::take(&mut current));
        }
        rest = &trimmed[len..];
    }
    if !current.is_empty() {
        sentences.push(current);
    }
    sentences
}

/// Greedy packing into parts of weighted length ≤ `budget`.
fn pack(sentences: &[Vec<&str>], budget: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let append = |current: &mut String, piece: &str| -> bool {
        let candidate = if current.is_empty() { piece.to_owned() } else { format!("{current} {piece}") };
        if weighted_length(&candidate) <= budget {
            *current = candidate;
            true
        } else {
            false
        }
    };
    for sentence in sentences {
        let joined = sentence.join(" ");
        if append(&mut current, &joined) {
            continue;
        }
        if weighted_length(&joined) <= budget {
            parts.push(std::mem::take(&mut current));
            current = joined;
            continue;
        }
        // An over-long sentence: a fresh part, filled word by word.
        if !current.is_empty() {
            parts.push(std::mem::take(&mut current));
        }
        for word in sentence {
            if append(&mut current, word) {
                continue;
            }
            if !current.is_empty() {
                parts.push(std::mem::take(&mut current));
            }
            if append(&mut current, word) {
                continue;
            }
            // A single word longer than a part: cut between units.
            for unit in units(word) {
                let piece = &word[unit.start..unit.end];
                if weighted_length(&current) + unit.weight > budget && !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
                current.push_str(piece);
            }
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_counts_one_per_character() {
        assert_eq!(weighted_length(""), 0);
        assert_eq!(weighted_length("Hello, world!"), 13);
        assert_eq!(weighted_length(&"a".repeat(280)), 280);
        assert_eq!(weighted_length("café — “quoted” ‘x’ ′"), 21, "Latin-1, dashes, quotes, primes weigh 1");
    }

    #[test]
    fn cjk_counts_two() {
        assert_eq!(weighted_length("日本語"), 6);
        assert_eq!(weighted_length("한국어 text"), 11);
        assert_eq!(weighted_length(&"字".repeat(140)), 280);
    }

    #[test]
    fn emoji_count_two_whole_sequences_included() {
        assert_eq!(weighted_length("😀"), 2);
        assert_eq!(weighted_length("👍🏽"), 2, "skin tone");
        assert_eq!(weighted_length("👨‍👩‍👧‍👦"), 2, "ZWJ family");
        assert_eq!(weighted_length("🇫🇷"), 2, "flag");
        assert_eq!(weighted_length("❤️"), 2, "VS16");
        assert_eq!(weighted_length("1️⃣"), 2, "keycap");
        assert_eq!(weighted_length("hi 😀😀"), 7);
        assert_eq!(weighted_length("🏳️‍🌈 ok"), 5);
    }

    #[test]
    fn urls_count_twenty_three() {
        assert_eq!(weighted_length("https://example.com"), 23);
        assert_eq!(weighted_length("http://a.b/c?d=e#f"), 23);
        let long = format!("see https://example.com/{} now", "x".repeat(200));
        assert_eq!(weighted_length(&long), 4 + 23 + 4);
        assert_eq!(weighted_length("https:// x"), 10, "a bare scheme is no URL");
        assert_eq!(weighted_length("xhttps://a.b"), 12, "glued to a word: no URL");
        assert_eq!(weighted_length("(https://a.b)"), 24, "the URL runs up to whitespace, closing paren included");
    }

    #[test]
    fn short_text_is_one_unchanged_part() {
        assert_eq!(split_thread("Hello  world.", 280), vec!["Hello  world.".to_owned()]);
    }

    fn check_parts(parts: &[String], max: usize) {
        let n = parts.len();
        for (i, part) in parts.iter().enumerate() {
            assert!(weighted_length(part) <= max, "part {i} too long: {} {part:?}", weighted_length(part));
            assert!(part.ends_with(&format!(" ({}/{n})", i + 1)), "{part:?}");
        }
    }

    #[test]
    fn six_hundred_characters_become_numbered_parts_at_sentence_boundaries() {
        let sentence = "This sentence is exactly fifty characters long ok. ";
        assert_eq!(sentence.len(), 51);
        let text: String = sentence.repeat(12).trim_end().to_owned();
        assert!(text.len() >= 600);
        let parts = split_thread(&text, 280);
        assert_eq!(parts.len(), 3);
        check_parts(&parts, 280);
        for part in &parts {
            let body = part.rsplit_once(" (").unwrap().0;
            assert!(body.ends_with("ok."), "cut at a sentence boundary: {part:?}");
        }
        let rejoined: Vec<&str> = parts.iter().map(|p| p.rsplit_once(" (").unwrap().0).collect();
        assert_eq!(rejoined.join(" "), text);
    }

    #[test]
    fn long_sentence_is_cut_between_words_and_never_inside_a_url() {
        let url = format!("https://example.com/{}", "p".repeat(300));
        let text = format!("{} {url} {}", "word ".repeat(60).trim_end(), "tail ".repeat(40).trim_end());
        let parts = split_thread(&text, 100);
        check_parts(&parts, 100);
        assert!(parts.iter().any(|part| part.contains(&url)), "the URL stays whole");
        let words: usize = parts.iter().map(|p| p.rsplit_once(" (").unwrap().0.split(' ').count()).sum();
        assert_eq!(words, 101);
    }

    #[test]
    fn cjk_and_emoji_threads_respect_weights() {
        let text = "日本語の文章です。".repeat(40);
        let parts = split_thread(&text, 280);
        check_parts(&parts, 280);
        assert!(parts.len() >= 3);
        let emoji = "😀 ".repeat(300);
        let parts = split_thread(&emoji, 280);
        check_parts(&parts, 280);
        assert!(parts.iter().all(|part| !part.contains('\u{FFFD}')));
    }

    #[test]
    fn many_parts_get_wider_numbers() {
        let text = "Short one. ".repeat(400);
        let parts = split_thread(&text, 40);
        check_parts(&parts, 40);
        assert!(parts.len() >= 100);
    }
}
