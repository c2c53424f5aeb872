//! The format rule and [`adapt`]: markdown that X and the local platform show literally.
//!
//! Reddit and Discord render markdown, so it is left alone there. Elsewhere bold (`**a**`,
//! `__a__`), headings (`# ` at a line start), code fences and links (`[text](url)`) are
//! violations, and [`adapt`] rewrites them to plain text. Both use the same patterns
//! ([`MARKUP`]), so an adapted text never breaks the rule.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use crate::config::PlatformKind;

/// One kind of markdown: its name in reasons, its pattern and its plain-text rewrite.
struct Markup {
    kind: &'static str,
    pattern: Regex,
    plain: fn(&Captures<'_>) -> String,
}

impl Markup {
    fn new(kind: &'static str, pattern: &str, plain: fn(&Captures<'_>) -> String) -> Self {
        Self { kind, pattern: Regex::new(pattern).expect("markdown patterns are valid"), plain }
    }
}

static MARKUP: LazyLock<Vec<Markup>> = LazyLock::new(|| {
    let markup = Markup::new;
    vec![
        // A fence line (with its language) goes whole; the code inside stays.
        markup("code fence", r"(?m)^[ \t]*```[A-Za-z0-9_+.#-]*[ \t]*$\n?", |_| String::new()),
        markup("code fence", r"```", |_| String::new()),
        markup("heading", r"(?m)^[ \t]*#{1,6}[ \t]+", |_| String::new()),
        markup("link", r"\[([^\[\]\n]+)\]\(([^()\s]+)\)", |captures| {
            let (text, url) = (captures[1].trim(), &captures[2]);
            if text == url { url.to_owned() } else { format!("{text} {url}") }
        }),
        markup("bold", r"\*\*([^*\n]+)\*\*", |captures| captures[1].to_owned()),
        markup("bold", r"__([^_\n]+)__", |captures| captures[1].to_owned()),
    ]
});

static BLANK_LINES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\n(?:[ \t]*\n){2,}").expect("the blank lines pattern is valid"));

/// Whether `platform` renders markdown (and so has no format rule).
fn renders_markdown(platform: PlatformKind) -> bool {
    matches!(platform, PlatformKind::Reddit | PlatformKind::Discord)
}

/// The format violation of `text` on `platform`, naming each kind of markdown found.
pub(super) fn literal_markdown(text: &str, platform: PlatformKind) -> Option<String> {
    if renders_markdown(platform) {
        return None;
    }
    let mut kinds: Vec<&str> = Vec::new();
    for markup in MARKUP.iter() {
        if markup.pattern.is_match(text) && !kinds.contains(&markup.kind) {
            kinds.push(markup.kind);
        }
    }
    if kinds.is_empty() {
        return None;
    }
    Some(format!("markdown {platform} shows literally ({})", kinds.join(", ")))
}

/// `text` as `platform` should get it. On X and the local platform markdown becomes plain text
/// (`**a**` → `a`, `[t](u)` → `t u`, fences and heading hashes dropped) and runs of blank lines
/// shrink to one; everywhere the text is trimmed. A clean text comes back unchanged.
pub fn adapt(text: &str, platform: PlatformKind) -> String {
    if renders_markdown(platform) {
        return text.trim().to_owned();
    }
    // Rewriting can expose new markup (`[[a](b)](c)`); every pass shortens the text, so this ends.
    let mut plain = text.to_owned();
    loop {
        let mut next = plain.clone();
        for markup in MARKUP.iter() {
            next = markup.pattern.replace_all(&next, markup.plain).into_owned();
        }
        if next == plain {
            break;
        }
        plain = next;
    }
    BLANK_LINES.replace_all(&plain, "\n\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::config::PolicyRule;

    const MARKDOWN: &str = "# Launch day\n\n**Big** news: __really__.\n\n\n\n```rust\nfn main() {}\n```\nRead [the post](https://example.com/post).";

    #[test]
    fn markdown_is_a_violation_where_it_shows_literally() {
        for platform in [PlatformKind::X, PlatformKind::Local] {
            let review = Fixture::on(platform).review("**Big** news, [read](https://x.test) it");
            let format = review.violations.iter().find(|violation| violation.rule == PolicyRule::Format).unwrap();
            assert_eq!(format.reason, format!("markdown {platform} shows literally (link, bold)"));
        }
        for platform in [PlatformKind::Reddit, PlatformKind::Discord] {
            assert_eq!(Fixture::on(platform).rules("# Title\n**Big** news\n```\ncode\n```"), Vec::<PolicyRule>::new());
        }
    }

    #[test]
    fn hashtags_single_stars_and_snake_case_are_not_markdown() {
        let fixture = Fixture::on(PlatformKind::X);
        assert_eq!(fixture.rules("#rustlang is *great*, 2 * 3 = 6, my_var_name [sic]"), Vec::<PolicyRule>::new());
    }

    #[test]
    fn adapt_strips_markdown_on_x_and_local_and_keeps_the_words() {
        let expected = "Launch day\n\nBig news: really.\n\nfn main() {}\nRead the post https://example.com/post.";
        for platform in [PlatformKind::X, PlatformKind::Local] {
            let adapted = adapt(MARKDOWN, platform);
            assert_eq!(adapted, expected);
            assert_eq!(literal_markdown(&adapted, platform), None);
        }
        assert_eq!(adapt("use ```x``` and [https://a.io](https://a.io)", PlatformKind::X), "use x and https://a.io");
    }

    #[test]
    fn adapt_leaves_rendered_markdown_and_clean_text_alone() {
        for platform in [PlatformKind::Reddit, PlatformKind::Discord] {
            assert_eq!(adapt(&format!("  {MARKDOWN}\n"), platform), MARKDOWN);
        }
        let clean = "Plain words, #hashtag and a list:\n- one\n- two\n\nthe end";
        for platform in PlatformKind::ALL {
            assert_eq!(adapt(clean, platform), clean);
        }
    }

    #[test]
    fn adapted_text_never_breaks_the_format_rule() {
        let tricky = [
            "[[a](b)](c)",
            "**[t](u)** and [**t**](u)",
            "***both*** __a__b__",
            "  ## indented heading\n###### six\n####### seven",
            "````\nfour\n````",
            "``` inline fence ``` text ```",
        ];
        for text in tricky {
            let adapted = adapt(text, PlatformKind::X);
            assert_eq!(literal_markdown(&adapted, PlatformKind::X), None, "{text:?} became {adapted:?}");
        }
    }
}
