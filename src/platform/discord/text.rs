//! Splitting a long chat reply into Discord messages ([`split_message`]).
//!
//! Lengths are counted in Unicode scalar values (`char`s), as Discord counts them. Each message is as
//! full as possible and ends at the best boundary that fits, in this order of preference:
//! 1. a paragraph break (blank line) outside code blocks;
//! 2. a line break outside code blocks;
//! 3. a sentence end (`.`, `!` or `?` followed by whitespace; also `。`, `！`, `？`);
//! 4. the whitespace between two words;
//! 5. a hard cut between two characters, avoiding the middle of a grapheme where a cheap check can
//!    tell (emoji + variation selector or skin tone, ZWJ sequences, flags, combining marks).
//!
//! The latest boundary of the most preferred kind wins, provided the message stays at least half
//! full; when no boundary leaves it half full, the latest boundary of any kind wins.
//!
//! Fenced code blocks — from a line starting with ```` ``` ```` (plus an optional language tag) to
//! the next line starting with ```` ``` ```` — are never split if they fit in one message: the cut
//! goes before the block and the block moves whole to the next message. A block longer than a
//! message is cut at line breaks (inside a line only if no line break fits); each part is closed
//! with ```` ``` ```` and the next one reopened with the block's opening fence, language tag
//! included, so every message has balanced fences. A fence left open at the end of the text is
//! closed in the last message. Details: fences may be indented; text after a closing fence on its
//! line is ordinary text; a line with more backticks after the fence (such as a one-line
//! ```` ```code``` ````) opens no block; a fence of more backticks than a quarter of the limit is
//! no fence, and a language tag that long is kept as code rather than repeated.
//!
//! Every message is trimmed and non-empty. Apart from the fence lines added at cuts and the
//! whitespace at the cut points, the messages concatenate back to the original text.

/// Smallest supported limit: lower values are raised to it, so that a reopened fence, some content
/// and a closing fence always fit in one message.
const MIN_MAX_CHARS: usize = 100;

/// Appended to a message that ends inside a code block.
const CLOSING_FENCE: &str = "\n```";

/// Characters in [`CLOSING_FENCE`] (ASCII, so its length in bytes).
const CLOSING_FENCE_CHARS: usize = CLOSING_FENCE.len();

const ZERO_WIDTH_JOINER: char = '\u{200D}';

/// Splits `text` into messages of at most `max_chars` characters (Unicode scalar values, as Discord
/// counts), in order.
///
/// Text that fits is returned as one trimmed message; empty or whitespace-only text gives no
/// message. Longer text is cut at paragraph breaks, then line breaks, then sentence ends, then
/// between words, and only as a last resort anywhere; fenced code blocks are kept whole when they
/// fit in a message, and otherwise split between lines with their fences closed and reopened. See
/// the [module documentation](self) for the exact rules.
///
/// `max_chars` below 100 is treated as 100.
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(MIN_MAX_CHARS);
    let blocks = find_code_blocks(text, max_chars);
    let cuts = find_cuts(text, &blocks);
    Splitter { text, max_chars, blocks, cuts }.split()
}

/// Kinds of boundary, from least to most preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    /// Any other position: inside a grapheme, inside whitespace in code, or a code cut that would
    /// leave one part without content. Used only when nothing else fits.
    Any,
    /// Between two non-whitespace characters.
    Hard,
    /// Whitespace between words.
    Word,
    /// After a sentence end.
    Sentence,
    /// A line break inside a code block too long for one message.
    CodeLine,
    /// A line break outside code blocks.
    Line,
    /// A blank line outside code blocks.
    Paragraph,
}

impl Boundary {
    const COUNT: usize = 7;
    const BY_PREFERENCE: [Self; Self::COUNT] =
        [Self::Paragraph, Self::Line, Self::CodeLine, Self::Sentence, Self::Word, Self::Hard, Self::Any];
}

/// A fenced code block; offsets are bytes into the text.
#[derive(Debug)]
struct CodeBlock<'a> {
    /// Start of the opening fence line.
    start: usize,
    /// Just past the opening fence's backticks and language tag (usually the end of its line).
    body_start: usize,
    /// Start of the closing fence (end of the text if the block is unterminated).
    body_end: usize,
    /// Just past the closing fence (end of the text if the block is unterminated).
    end: usize,
    /// Just past the body's last non-whitespace character (`body_start` if there is none).
    content_end: usize,
    /// The opening fence (e.g. ```` ```rust ````), which reopens the block after a cut.
    fence: &'a str,
    closed: bool,
    /// Longer than one message (with the closing fence it needs), so it may be cut inside.
    oversized: bool,
}

/// An opening fence whose closing fence has not been seen yet.
struct OpenFence<'a> {
    start: usize,
    body_start: usize,
    fence: &'a str,
}

impl<'a> OpenFence<'a> {
    /// Completes the block; `closing` is where the closing fence starts and ends, `None` if the
    /// block runs to the end of the text.
    fn finish(self, text: &str, closing: Option<(usize, usize)>, max_chars: usize) -> CodeBlock<'a> {
        let (body_end, end) = closing.unwrap_or((text.len(), text.len()));
        let body = text.get(self.body_start..body_end).unwrap_or_default();
        let whole = text.get(self.start..end).unwrap_or_default().trim();
        let added_close = if closing.is_some() { 0 } else { CLOSING_FENCE_CHARS };
        CodeBlock {
            start: self.start,
            body_start: self.body_start,
            body_end,
            end,
            content_end: self.body_start + body.trim_end().len(),
            fence: self.fence,
            closed: closing.is_some(),
            oversized: whole.chars().count() + added_close > max_chars,
        }
    }
}

/// Length of the run of backticks a (trimmed) line starts with, if the line is a fence: at least
/// three backticks, and not so many that a message could not hold them.
fn fence_ticks(line: &str, max_chars: usize) -> Option<usize> {
    let ticks = line.len() - line.trim_start_matches('`').len();
    (3..=max_chars / 4).contains(&ticks).then_some(ticks)
}

/// The fence at the start of a (trimmed) line: its backticks and the language tag attached to them,
/// unless that is too long to repeat when reopening a block (then just the backticks). Anything
/// after it on the line is ordinary text, or code after an opening fence.
fn fence(line: &str, max_chars: usize) -> Option<&str> {
    let ticks = fence_ticks(line, max_chars)?;
    let with_tag = line.split(char::is_whitespace).next().unwrap_or_default();
    if with_tag.chars().count() <= max_chars / 4 { Some(with_tag) } else { line.get(..ticks) }
}

/// The fence opening a code block at the start of a (trimmed) line; a line holding more backticks
/// than the fence's own (such as a one-line ```` ```code``` ````) opens none.
fn opening_fence(line: &str, max_chars: usize) -> Option<&str> {
    if line.trim_start_matches('`').contains('`') { None } else { fence(line, max_chars) }
}

/// Finds the fenced code blocks, in order; an unterminated one runs to the end of the text.
fn find_code_blocks(text: &str, max_chars: usize) -> Vec<CodeBlock<'_>> {
    let mut blocks = Vec::new();
    let mut open: Option<OpenFence<'_>> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        match open.take() {
            None => {
                open = opening_fence(trimmed, max_chars).map(|fence| OpenFence {
                    start: line_start,
                    body_start: line_start + indent + fence.len(),
                    fence,
                });
            }
            Some(open_fence) => match fence(trimmed, max_chars) {
                Some(closing) => {
                    let closing = (line_start + indent, line_start + indent + closing.len());
                    blocks.push(open_fence.finish(text, Some(closing), max_chars));
                }
                None => open = Some(open_fence),
            },
        }
        line_start = line_end;
    }
    if let Some(fence) = open {
        blocks.push(fence.finish(text, None, max_chars));
    }
    blocks
}

/// A place where a message may end.
#[derive(Debug)]
struct Cut {
    /// Byte offset where the message ends (before trimming).
    at: usize,
    /// Byte offset where the next message starts (before skipping whitespace).
    resume: usize,
    /// Byte offset just past the last non-whitespace character before `at`.
    content_end: usize,
    /// Number of characters in `text[..content_end]`.
    content_chars: usize,
    kind: Boundary,
    /// The code block this cut falls inside, which must then be closed and reopened.
    block: Option<usize>,
}

/// Where a position falls relative to the code blocks.
enum Region {
    Prose,
    /// Inside or at the edge of a fence line, or inside a block that must not be cut.
    Closed,
    /// Inside the body of the oversized block with this index.
    Body(usize),
}

fn region(blocks: &[CodeBlock<'_>], index: usize, at: usize) -> Region {
    match blocks.get(index) {
        Some(block) if at > block.start => {
            if block.oversized && at > block.body_start && at < block.body_end {
                Region::Body(index)
            } else {
                Region::Closed
            }
        }
        _ => Region::Prose,
    }
}

/// Lists every place where a message may end, in text order.
fn find_cuts(text: &str, blocks: &[CodeBlock<'_>]) -> Vec<Cut> {
    let mut cuts = Vec::new();
    // The first block that does not end before the current position.
    let mut block_index = 0;
    let mut prev: Option<char> = None;
    let mut regional_run = 0;
    let mut chars = 0;
    let mut content_end = 0;
    let mut content_chars = 0;
    for (at, next) in text.char_indices() {
        while blocks.get(block_index).is_some_and(|block| block.closed && block.end <= at) {
            block_index += 1;
        }
        if let Some(prev) = prev {
            let rest = text.get(at..).unwrap_or_default();
            let gap = Gap { rest, at, prev, next, regional_run, content_end };
            let boundary = match region(blocks, block_index, at) {
                Region::Prose => gap.prose_boundary().map(|boundary| (boundary, None)),
                Region::Body(index) => blocks.get(index).map(|block| (gap.code_boundary(block), Some(index))),
                Region::Closed => None,
            };
            if let Some(((kind, resume), block)) = boundary {
                cuts.push(Cut { at, resume, content_end, content_chars, kind, block });
            }
        }
        chars += 1;
        if !next.is_whitespace() {
            content_end = at + next.len_utf8();
            content_chars = chars;
        }
        regional_run = if is_regional_indicator(next) { regional_run + 1 } else { 0 };
        prev = Some(next);
    }
    cuts
}

/// The position between two characters, as [`find_cuts`] sees it.
struct Gap<'a> {
    /// The text from this position on.
    rest: &'a str,
    /// Byte offset into the text.
    at: usize,
    prev: char,
    next: char,
    /// Number of regional indicators (flag halves) in a row ending at `prev`.
    regional_run: usize,
    /// Byte offset just past the last non-whitespace character before `at`.
    content_end: usize,
}

impl Gap<'_> {
    /// The boundary here outside code blocks, with the byte offset where the next message would
    /// start; `None` inside or at the end of a whitespace run, whose start is the better cut.
    fn prose_boundary(&self) -> Option<(Boundary, usize)> {
        if self.prev.is_whitespace() {
            return None;
        }
        if self.next.is_whitespace() {
            let run = self.whitespace_len(|_| true);
            let newlines = self.rest.get(..run).unwrap_or_default().matches('\n').count();
            let kind = match newlines {
                0 if matches!(self.prev, '.' | '!' | '?') => Boundary::Sentence,
                0 => Boundary::Word,
                1 => Boundary::Line,
                _ => Boundary::Paragraph,
            };
            return Some((kind, self.at + run));
        }
        let kind = if matches!(self.prev, '。' | '！' | '？') {
            Boundary::Sentence
        } else if self.splits_grapheme() {
            Boundary::Any
        } else {
            Boundary::Hard
        };
        Some((kind, self.at))
    }

    /// The boundary here inside an oversized code block, with the byte offset where the next
    /// message would start. Besides line breaks, only a cut inside an overlong line is possible.
    fn code_boundary(&self, block: &CodeBlock<'_>) -> (Boundary, usize) {
        let (kind, resume) = if self.next == '\n' {
            (Boundary::CodeLine, self.at + 1)
        } else if self.prev.is_whitespace() || self.splits_grapheme() {
            (Boundary::Any, self.at)
        } else if self.next.is_whitespace() {
            // Between words of a line: the rest of the line goes on without its leading spaces.
            (Boundary::Word, self.at + self.whitespace_len(|c| c != '\n'))
        } else {
            (Boundary::Hard, self.at)
        };
        // Both parts of the block must keep some code, or one message would hold an empty block.
        let content_before = self.content_end > block.body_start;
        let content_after = resume < block.content_end;
        if content_before && content_after { (kind, resume) } else { (Boundary::Any, resume) }
    }

    /// Length in bytes of the whitespace characters accepted by `accept` at the start of `rest`.
    fn whitespace_len(&self, accept: impl Fn(char) -> bool) -> usize {
        let after = self.rest.trim_start_matches(|c: char| c.is_whitespace() && accept(c));
        self.rest.len() - after.len()
    }

    /// Whether a cut here would split a grapheme, as far as a cheap check can tell.
    fn splits_grapheme(&self) -> bool {
        is_grapheme_extender(self.next)
            || self.prev == ZERO_WIDTH_JOINER
            || (is_regional_indicator(self.next) && self.regional_run % 2 == 1)
    }
}

/// Characters that attach to the one before: combining marks, variation selectors, the zero
/// width joiner, skin tone modifiers and emoji tag characters.
fn is_grapheme_extender(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'       // combining diacritical marks
        | '\u{1AB0}'..='\u{1AFF}'     // combining diacritical marks extended
        | '\u{1DC0}'..='\u{1DFF}'     // combining diacritical marks supplement
        | ZERO_WIDTH_JOINER
        | '\u{20D0}'..='\u{20FF}'     // combining marks for symbols (keycap)
        | '\u{FE00}'..='\u{FE0F}'     // variation selectors
        | '\u{FE20}'..='\u{FE2F}'     // combining half marks
        | '\u{1F3FB}'..='\u{1F3FF}'   // skin tone modifiers
        | '\u{E0020}'..='\u{E007F}'   // tags (subdivision flags)
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

fn is_regional_indicator(c: char) -> bool {
    matches!(c, '\u{1F1E6}'..='\u{1F1FF}')
}

/// Where the next message starts.
struct Cursor {
    /// Byte offset into the text.
    byte: usize,
    /// Number of characters in `text[..byte]`.
    chars: usize,
    /// The code block the message starts inside, to be reopened with its fence line.
    reopen: Option<usize>,
}

struct Splitter<'a> {
    text: &'a str,
    max_chars: usize,
    blocks: Vec<CodeBlock<'a>>,
    cuts: Vec<Cut>,
}

impl Splitter<'_> {
    fn split(&self) -> Vec<String> {
        let content = self.text.trim_end();
        let content_chars = content.chars().count();
        // An unterminated block runs to the end of the text, so the last message must close it.
        let close_at_end = self.blocks.last().is_some_and(|block| !block.closed);
        let mut chunks = Vec::new();
        let mut cursor = self.start_after(0, 0, None);
        while cursor.byte < content.len() {
            let fence = cursor.reopen.and_then(|index| self.blocks.get(index)).map(|block| block.fence);
            let prefix_chars = fence.map_or(0, |fence| fence.chars().count() + 1);
            let rest_chars = prefix_chars + content_chars.saturating_sub(cursor.chars) + closing_chars(close_at_end);
            if rest_chars <= self.max_chars {
                chunks.push(self.render(fence, cursor.byte, content.len(), close_at_end));
                break;
            }
            let Some(cut) = self.choose(&cursor, prefix_chars) else {
                // Not reached: the position after the cursor's first character is a cut, and it fits
                // (a reopened fence takes at most a quarter of the limit). Stay within it anyway.
                let rest = self.text.get(cursor.byte..).unwrap_or_default();
                chunks.extend(hard_wrap(rest, self.max_chars));
                break;
            };
            chunks.push(self.render(fence, cursor.byte, cut.content_end, cut.block.is_some()));
            cursor = self.start_after(cut.resume, cut.content_end, cut.block);
            // `text[..content_end]` holds `content_chars` characters; count the rest up to the cursor.
            cursor.chars += cut.content_chars;
        }
        chunks
    }

    /// The cursor for a message starting at `resume`, after blank lines inside a code block or
    /// whitespace elsewhere; its `chars` counts only those from `counted_from` on.
    fn start_after(&self, resume: usize, counted_from: usize, reopen: Option<usize>) -> Cursor {
        let limit = reopen.and_then(|index| self.blocks.get(index)).map_or(self.text.len(), |block| block.body_end);
        let rest = self.text.get(resume..limit).unwrap_or_default();
        let skipped = match reopen {
            Some(_) => blank_lines_len(rest),
            None => rest.len() - rest.trim_start().len(),
        };
        let byte = resume + skipped;
        let chars = self.text.get(counted_from..byte).map_or(0, |counted| counted.chars().count());
        Cursor { byte, chars, reopen }
    }

    /// The cut for a message starting at `cursor`, among those that fit: the latest one of the most
    /// preferred kind that keeps the message at least half full, else the latest one. A cut inside
    /// a line of code is considered only when there is no other.
    fn choose(&self, cursor: &Cursor, prefix_chars: usize) -> Option<&Cut> {
        let first = self.cuts.partition_point(|cut| cut.at <= cursor.byte);
        let mut preferred = Candidates::default();
        let mut inside_code_lines = Candidates::default();
        for cut in self.cuts.get(first..).unwrap_or_default() {
            let chars = prefix_chars + cut.content_chars.saturating_sub(cursor.chars);
            if chars > self.max_chars {
                break; // Cuts are in text order, so every later one is longer still.
            }
            let chars = chars + closing_chars(cut.block.is_some());
            if chars > self.max_chars {
                continue;
            }
            // A cut before any content (only possible inside a code block) is a last resort.
            let kind = if cut.content_end > cursor.byte { cut.kind } else { Boundary::Any };
            let candidates = match (cut.block, kind) {
                (Some(_), kind) if kind != Boundary::CodeLine => &mut inside_code_lines,
                _ => &mut preferred,
            };
            candidates.add(cut, kind, chars);
        }
        preferred.best(self.max_chars).or_else(|| inside_code_lines.best(self.max_chars))
    }

    /// One message: the reopened fence, `text[start..end]` and, if needed, a closing fence.
    fn render(&self, fence: Option<&str>, start: usize, end: usize, close: bool) -> String {
        let body = self.text.get(start..end.max(start)).unwrap_or_default();
        let mut message = String::with_capacity(body.len() + 16);
        if let Some(fence) = fence {
            message.push_str(fence);
            message.push('\n');
        }
        message.push_str(body);
        if close {
            message.push_str(CLOSING_FENCE);
        }
        message
    }
}

/// The latest cut of each kind found so far, with the length of the message it makes, and the
/// latest cut of all.
#[derive(Default)]
struct Candidates<'a> {
    by_kind: [Option<(&'a Cut, usize)>; Boundary::COUNT],
    latest: Option<&'a Cut>,
}

impl<'a> Candidates<'a> {
    fn add(&mut self, cut: &'a Cut, kind: Boundary, chars: usize) {
        self.by_kind[kind as usize] = Some((cut, chars));
        self.latest = Some(cut);
    }

    /// The latest cut of the most preferred kind that makes a message at least half full, else the
    /// latest cut.
    fn best(&self, max_chars: usize) -> Option<&'a Cut> {
        Boundary::BY_PREFERENCE
            .iter()
            .filter_map(|&kind| self.by_kind[kind as usize])
            .find(|&(_, chars)| chars * 2 >= max_chars)
            .map(|(cut, _)| cut)
            .or(self.latest)
    }
}

fn closing_chars(close: bool) -> usize {
    if close { CLOSING_FENCE_CHARS } else { 0 }
}

/// Length in bytes of the whitespace-only lines at the start of `text`.
fn blank_lines_len(text: &str) -> usize {
    text.split_inclusive('\n').take_while(|line| line.trim().is_empty()).map(str::len).sum()
}

/// Cuts `text` every `max_chars` characters, as a last-ditch fallback.
fn hard_wrap(text: &str, max_chars: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max_chars.max(1))
        .map(|piece| piece.iter().collect::<String>().trim().to_owned())
        .filter(|piece| !piece.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 2000;

    fn char_len(text: &str) -> usize {
        text.chars().count()
    }

    fn is_fence(line: &str) -> bool {
        line.trim_start().starts_with("```")
    }

    /// Checks what every split must satisfy: non-empty trimmed messages within the limit, each with
    /// balanced fences.
    fn assert_well_formed(chunks: &[String], max_chars: usize) {
        for chunk in chunks {
            assert!(!chunk.is_empty(), "empty message");
            assert_eq!(chunk, chunk.trim(), "untrimmed message");
            assert!(char_len(chunk) <= max_chars.max(MIN_MAX_CHARS), "{} chars: {chunk:?}", char_len(chunk));
            let fences = chunk.lines().filter(|line| is_fence(line)).count();
            assert_eq!(fences % 2, 0, "unbalanced fences in {chunk:?}");
        }
    }

    /// A piece of content: a fence (backticks and language tag), or one non-whitespace character.
    #[derive(Debug, PartialEq)]
    enum Item {
        Fence(String),
        Char(char),
    }

    /// A fence line's backticks and language tag make one item, its other words (after a closing
    /// fence) and every other line give one item per non-whitespace character.
    fn items(text: &str) -> Vec<Item> {
        let mut items = Vec::new();
        for line in text.lines() {
            let mut rest = line.trim();
            if is_fence(line) {
                let fence = rest.split_whitespace().next().unwrap_or_default();
                items.push(Item::Fence(fence.to_owned()));
                rest = rest.strip_prefix(fence).unwrap_or(rest);
            }
            items.extend(rest.chars().filter(|c| !c.is_whitespace()).map(Item::Char));
        }
        items
    }

    /// Checks that the messages give back the original's content in order, nothing lost or
    /// duplicated. Whitespace is ignored; a fence line that does not match the original is taken
    /// as added at a cut, which is only allowed as the first or last line of a message.
    fn assert_round_trip(original: &str, chunks: &[String]) {
        let expected = items(original);
        let mut next = 0;
        for chunk in chunks {
            let got = items(chunk);
            for (index, item) in got.iter().enumerate() {
                if expected.get(next) == Some(item) {
                    next += 1;
                } else {
                    let at_edge = index == 0 || index + 1 == got.len();
                    assert!(matches!(item, Item::Fence(_)) && at_edge, "unexpected {item:?} in {chunk:?}");
                }
            }
        }
        assert_eq!(next, expected.len(), "content lost after {:?}", expected.get(next));
    }

    fn split_checked(text: &str, max_chars: usize) -> Vec<String> {
        let chunks = split_message(text, max_chars);
        assert_well_formed(&chunks, max_chars);
        assert_round_trip(text, &chunks);
        chunks
    }

    /// Deterministic pseudo-random numbers (64-bit LCG, Knuth's MMIX constants).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // The high bits are the random ones; the result is below `n`, so it fits in a usize.
            ((self.0 >> 33) % n as u64) as usize
        }

        fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
            options[self.below(options.len())]
        }
    }

    /// Words for generated text, multibyte ones included.
    const WORDS: &str = "the reply splits messages Discord limit café naïve 日本語 テキスト 🎉 ❤️ 👍🏽 🇫🇷 e\u{301} x \
                         characters boundary paragraph";

    fn random_word(rng: &mut Lcg) -> &'static str {
        let words: Vec<&'static str> = WORDS.split_whitespace().collect();
        rng.pick(&words)
    }

    /// A paragraph of about `chars` characters: sentences of random words.
    fn paragraph(rng: &mut Lcg, chars: usize) -> String {
        let mut text = String::new();
        while char_len(&text) < chars {
            let words = 4 + rng.below(10);
            let sentence: Vec<&str> = (0..words).map(|_| random_word(rng)).collect();
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&sentence.join(" "));
            text.push_str(rng.pick(&[".", "!", "?", ","]));
        }
        text
    }

    /// A fenced code block with a language tag and about `chars` characters of numbered lines.
    fn code_block(lang: &str, chars: usize) -> String {
        let mut block = format!("```{lang}\n");
        let mut line = 0;
        while char_len(&block) < chars {
            block.push_str(&format!("    let value_{line} = compute({line}); // step {line}\n"));
            line += 1;
        }
        block.push_str("```");
        block
    }

    #[test]
    fn empty_or_blank_text_gives_no_message() {
        assert!(split_message("", LIMIT).is_empty());
        assert!(split_message(" \n\t \n ", LIMIT).is_empty());
    }

    #[test]
    fn short_text_is_one_trimmed_message() {
        assert_eq!(
            split_message("  Hello, world!\n\nSecond paragraph.\n", LIMIT),
            ["Hello, world!\n\nSecond paragraph."]
        );
        let exact = "a".repeat(LIMIT);
        assert_eq!(split_message(&exact, LIMIT), [exact]);
    }

    #[test]
    fn long_text_with_code_block_keeps_the_block_whole() {
        let mut rng = Lcg(1);
        let block = code_block("python", 600);
        let mut text = String::new();
        for _ in 0..6 {
            text.push_str(&paragraph(&mut rng, 350));
            text.push_str("\n\n");
        }
        text.push_str(&block);
        while char_len(&text) < 5000 {
            text.push_str("\n\n");
            text.push_str(&paragraph(&mut rng, 350));
        }
        assert!((5000..5400).contains(&char_len(&text)));

        let chunks = split_checked(&text, LIMIT);
        assert!(chunks.len() >= 3);
        assert_eq!(chunks.iter().filter(|chunk| chunk.contains(&block)).count(), 1, "block split or duplicated");
        // No message is cut inside the block.
        assert_eq!(chunks.concat().matches("```").count(), 2);
    }

    #[test]
    fn code_block_that_fits_moves_whole_to_the_next_message() {
        let mut rng = Lcg(2);
        let prose = paragraph(&mut rng, 1500);
        let block = code_block("rust", 800);
        let text = format!("{prose}\n\n{block}\n\nAfter the block.");
        let chunks = split_checked(&text, LIMIT);
        assert_eq!(chunks, [prose, format!("{block}\n\nAfter the block.")]);

        // Even when that leaves the message before it far from full.
        let block = code_block("rust", 1950);
        let intro = "A short introduction, before the code itself.";
        let text = format!("{intro}\n{block}");
        assert!(char_len(&block) <= LIMIT && char_len(&text) > LIMIT);
        assert_eq!(split_checked(&text, LIMIT), [intro, block.as_str()]);
    }

    #[test]
    fn oversized_block_is_cut_at_line_breaks_rather_than_inside_lines() {
        let long_line = "y".repeat(150);
        let text = format!("```\nshort line\n{long_line}\nend\n```");
        let chunks = split_checked(&text, 100);
        assert_eq!(chunks[0], "```\nshort line\n```");
        assert!(chunks[1].starts_with("```\nyyy") && chunks[1].ends_with("yyy\n```"));
        assert!(chunks[chunks.len() - 1].ends_with("yyy\nend\n```"));
    }

    #[test]
    fn oversized_code_block_is_split_with_balanced_reopened_fences() {
        let block = code_block("rust", 4500);
        let text = format!("Here is the code:\n\n{block}\n\nThat's all.");
        let chunks = split_checked(&text, LIMIT);
        assert!(chunks.len() >= 3, "{} messages", chunks.len());
        for (index, chunk) in chunks.iter().enumerate() {
            if index > 0 {
                assert!(chunk.starts_with("```rust\n    let value_"), "not reopened: {chunk:?}");
            }
            if index + 1 < chunks.len() {
                assert!(chunk.ends_with("\n```"), "not closed: {chunk:?}");
            }
            // Cut between lines only.
            for line in chunk.lines().filter(|line| line.starts_with("    ")) {
                assert!(line.starts_with("    let value_") && line.contains("// step "), "cut line {line:?}");
            }
        }
        assert!(chunks[0].starts_with("Here is the code:\n\n```rust\n"));
        assert!(chunks[chunks.len() - 1].ends_with("```\n\nThat's all."));
    }

    #[test]
    fn oversized_block_in_a_half_full_message_starts_a_new_one() {
        let mut rng = Lcg(3);
        let prose = paragraph(&mut rng, 1200);
        let text = format!("{prose}\n{}", code_block("", 3000));
        let chunks = split_checked(&text, LIMIT);
        assert_eq!(chunks[0], prose);
        assert!(chunks[1..].iter().all(|chunk| chunk.starts_with("```\n")));
    }

    #[test]
    fn unterminated_fence_is_closed_in_the_last_message() {
        assert_eq!(split_message("Look:\n```sh\nls -la\n", LIMIT), ["Look:\n```sh\nls -la\n```"]);

        let mut text = String::from("Start\n```js\n");
        for line in 0..200 {
            text.push_str(&format!("console.log({line});\n"));
        }
        let chunks = split_checked(&text, 500);
        assert!(chunks.len() > 2);
        assert!(chunks.iter().all(|chunk| chunk.ends_with("\n```")));
        assert!(chunks[1..].iter().all(|chunk| chunk.starts_with("```js\nconsole.log(")));
    }

    #[test]
    fn overlong_code_line_is_cut_inside_with_fences() {
        let line = "x".repeat(450);
        let text = format!("```\n{line}\n```");
        let chunks = split_checked(&text, 200);
        assert!(chunks.len() >= 3);
        assert!(chunks.iter().all(|chunk| chunk.starts_with("```\nx") && chunk.ends_with("x\n```")));
    }

    #[test]
    fn single_long_word_is_hard_cut() {
        let word = "abcdefghij".repeat(300);
        let chunks = split_checked(&word, LIMIT);
        assert_eq!(chunks.iter().map(|chunk| char_len(chunk)).collect::<Vec<_>>(), [2000, 1000]);
        assert_eq!(chunks.concat(), word);
    }

    #[test]
    fn splits_at_sentence_ends_without_newlines() {
        let text: String = (0..80).map(|n| format!("Sentence {n} says something fairly unremarkable here. ")).collect();
        let chunks = split_checked(&text, LIMIT);
        assert!(chunks.len() >= 3);
        for chunk in &chunks {
            assert!(chunk.starts_with("Sentence ") && chunk.ends_with("here."), "{chunk:?}");
        }
        for chunk in &chunks[..chunks.len() - 1] {
            assert!(char_len(chunk) > LIMIT - 60, "not full: {} chars", char_len(chunk));
        }
    }

    #[test]
    fn splits_between_words_without_sentence_ends() {
        let text = "lorem ipsum dolor sit amet ".repeat(20);
        let chunks = split_checked(&text, 100);
        assert!(
            chunks.iter().all(|chunk| ["lorem", "ipsum", "dolor", "sit", "amet"].iter().any(|w| chunk.ends_with(w)))
        );
    }

    #[test]
    fn paragraph_break_in_second_half_beats_later_sentence_end() {
        let mut rng = Lcg(4);
        let first = paragraph(&mut rng, 1100);
        let second = paragraph(&mut rng, 1500);
        let chunks = split_checked(&format!("{first}\n\n{second}"), LIMIT);
        assert_eq!(chunks[0], first);
    }

    #[test]
    fn sentence_end_beats_paragraph_break_in_first_half() {
        let first = "Short opening paragraph.";
        let second: String = (0..60).map(|n| format!("Sentence {n} of the long paragraph. ")).collect();
        let chunks = split_checked(&format!("{first}\n\n{second}"), LIMIT);
        assert!(char_len(&chunks[0]) > LIMIT / 2);
        assert!(chunks[0].ends_with("paragraph."));
    }

    #[test]
    fn line_break_beats_later_sentence_end() {
        let mut rng = Lcg(5);
        let first = paragraph(&mut rng, 1300);
        let second = paragraph(&mut rng, 1300);
        let chunks = split_checked(&format!("{first}\n{second}"), LIMIT);
        assert_eq!(chunks[0], first);
    }

    #[test]
    fn multibyte_text_is_counted_in_chars_and_never_cut_inside_a_grapheme() {
        let accents = "é".repeat(150);
        assert_eq!(split_checked(&accents, 100).iter().map(|c| char_len(c)).collect::<Vec<_>>(), [100, 50]);

        let cjk = "日本語のテキスト".repeat(30);
        assert_eq!(split_checked(&cjk, 100).iter().map(|c| char_len(c)).collect::<Vec<_>>(), [100, 100, 40]);

        // Two-char graphemes with an odd limit: a plain char cut would split one.
        for grapheme in ["❤️", "👍🏽", "🇫🇷", "e\u{301}", "👩\u{200D}💻"] {
            let text = grapheme.repeat(120);
            let chunks = split_checked(&text, 101);
            assert!(chunks.len() >= 3, "{grapheme}");
            for chunk in &chunks {
                assert!(chunk.starts_with(grapheme) && chunk.ends_with(grapheme), "{grapheme} cut: {chunk:?}");
            }
        }

        let mut rng = Lcg(6);
        let mixed = paragraph(&mut rng, 3000);
        assert!(mixed.len() > char_len(&mixed));
        let chunks = split_checked(&mixed, 150);
        assert!(chunks.iter().all(|chunk| char_len(chunk) > 75), "message less than half full");
    }

    #[test]
    fn limit_below_minimum_is_raised() {
        let text = "word ".repeat(100);
        let chunks = split_checked(&text, 3);
        assert!(chunks.iter().all(|chunk| (95..=100).contains(&char_len(chunk))), "{chunks:?}");
        assert_eq!(split_checked("```\ncode\n```", 0), ["```\ncode\n```"]);
    }

    #[test]
    fn round_trip_on_varied_inputs() {
        let mut rng = Lcg(7);
        let inputs = [
            format!("{}\r\n\r\n{}\r\n{}", paragraph(&mut rng, 300), paragraph(&mut rng, 200), paragraph(&mut rng, 250)),
            format!("- item one\n- item two\n  ```toml\n  key = 1\n  ```\n{}", paragraph(&mut rng, 400)),
            format!("{}\n{}\n{}", code_block("", 150), code_block("c", 300), code_block("go", 90)),
            format!("Inline ```not a fence``` here. {}", "a-very-long-token".repeat(30)),
            format!("{}\n\n```diff\n- old\n+ new\n\n\n\n{}", paragraph(&mut rng, 150), "   \n".repeat(100)),
        ];
        for input in &inputs {
            for max_chars in [100, 137, 256, 1000] {
                split_checked(input, max_chars);
            }
        }
    }

    #[test]
    fn random_inputs_respect_limit_and_fences() {
        let mut rng = Lcg(2024);
        for _ in 0..400 {
            let mut text = String::new();
            for _ in 0..rng.below(12) {
                let size = rng.below(600);
                let piece = match rng.below(8) {
                    // Fences start and end their lines.
                    0 => format!("\n{}\n", code_block(rng.pick(&["", "rust", "py"]), 20 + size)),
                    1 => random_word(&mut rng).repeat(1 + size / 4),
                    2 => format!("\n```{}\n{}", rng.pick(&["", "js"]), paragraph(&mut rng, size / 2)),
                    _ => paragraph(&mut rng, size),
                };
                text.push_str(&piece);
                text.push_str(rng.pick(&["\n\n", "\n", " ", "\n \n\n", "\r\n"]));
            }
            let max_chars = rng.below(400);
            split_checked(&text, max_chars);
        }
    }
}
