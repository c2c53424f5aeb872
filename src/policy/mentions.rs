//! The mention rule: `@handle`s (and `u/name`s on Reddit) of accounts outside the team, the
//! author answered and `allowed_mentions`.
//!
//! An `@` that follows a letter, digit or `._%+-/` belongs to an email address or a URL path,
//! not a mention; neither does anything inside a link.

use std::sync::LazyLock;

use regex::Regex;

use super::{ReviewContext, links};
use crate::config::PlatformKind;

static AT_HANDLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"@([A-Za-z0-9_]+)").expect("the mention pattern is valid"));

/// Reddit's `u/name` or `/u/name`, not inside a path (`reddit.com/u/name` is a link).
static REDDIT_USER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^A-Za-z0-9_/.])/?u/([A-Za-z0-9_-]+)").expect("the Reddit user pattern is valid")
});

/// Mentions in `text` nobody allowed, as written (`@someone`, `u/someone`), each once, in order.
pub(super) fn disallowed(text: &str, ctx: &ReviewContext<'_>, allowed: &[String]) -> Vec<String> {
    let in_link: Vec<_> = links::find(text).into_iter().map(|link| link.span).collect();
    let outside_links = |at: usize| !in_link.iter().any(|span| span.contains(&at));

    let mut found: Vec<(&str, String)> = Vec::new();
    for captures in AT_HANDLE.captures_iter(text) {
        let (Some(whole), Some(handle)) = (captures.get(0), captures.get(1)) else { continue };
        let before = text[..whole.start()].chars().next_back();
        let in_address = before.is_some_and(|c| c.is_alphanumeric() || "._%+-/".contains(c));
        if !in_address && outside_links(whole.start()) {
            found.push(("@", handle.as_str().to_owned()));
        }
    }
    if ctx.platform == PlatformKind::Reddit {
        for captures in REDDIT_USER.captures_iter(text) {
            let Some(handle) = captures.get(1) else { continue };
            if outside_links(handle.start()) {
                found.push(("u/", handle.as_str().to_owned()));
            }
        }
    }

    let replying_to = ctx.replying_to.map(normalize);
    let allowed: Vec<String> = allowed.iter().map(|handle| normalize(handle)).collect();
    let mut seen: Vec<String> = Vec::new();
    let mut mentions = Vec::new();
    for (prefix, handle) in found {
        let key = handle.to_lowercase();
        let on_team = ctx.team.iter().any(|member| normalize(member) == key);
        if on_team || replying_to.as_deref() == Some(key.as_str()) || allowed.contains(&key) || seen.contains(&key) {
            continue;
        }
        seen.push(key);
        mentions.push(format!("{prefix}{handle}"));
    }
    mentions
}

/// A handle as compared: trimmed, without `@`, `u/` or `/u/`, lowercase.
fn normalize(handle: &str) -> String {
    let handle = handle.trim().trim_start_matches('@');
    let handle = handle.strip_prefix("/u/").or_else(|| handle.strip_prefix("u/")).unwrap_or(handle);
    handle.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use crate::config::{PlatformKind, PolicyRule};
    use crate::policy::Action;

    fn mentions(fixture: &Fixture, text: &str) -> Vec<String> {
        fixture.review(text).violations.into_iter().map(|violation| violation.reason).collect()
    }

    #[test]
    fn the_team_the_author_answered_and_the_allowlist_may_be_mentioned() {
        let mut fixture = Fixture::on(PlatformKind::X);
        fixture.replying_to = Some("@Linus".into());
        fixture.policy.allowed_mentions = vec!["rustlang".into()];
        assert_eq!(fixture.rules("@ADA and @grace agree with @linus, says @RustLang"), Vec::<PolicyRule>::new());

        let review = fixture.review("cc @elon and @Elon, @ada");
        assert_eq!(review.reasons(), "mention: mentions @elon, who is not on the allowlist");
        assert_eq!(review.violations[0].action, Action::Flag, "mentions flag by default");
    }

    #[test]
    fn emails_and_url_paths_are_not_mentions() {
        let mut fixture = Fixture::on(PlatformKind::X);
        fixture.policy.pii = false;
        fixture.policy.allowed_links = vec!["medium.com".into(), "example.com".into()];
        let text =
            "write to bob.smith+news@mail.example.com or see medium.com/@someone and https://example.com/?ref=@x";
        assert_eq!(fixture.rules(text), Vec::<PolicyRule>::new());
    }

    #[test]
    fn reddit_user_names_are_mentions_on_reddit_only() {
        let mut fixture = Fixture::on(PlatformKind::Reddit);
        fixture.replying_to = Some("u/OP_person".into());
        fixture.policy.allowed_links = vec!["reddit.com".into()];
        let text = "thanks u/op_person and /u/ada, ping u/some-mod; menu/item and reddit.com/u/skip";
        assert_eq!(mentions(&fixture, text), vec!["mentions u/some-mod, who is not on the allowlist"]);
        let fixture = Fixture::on(PlatformKind::X);
        assert_eq!(fixture.rules("ping u/some-mod"), Vec::<PolicyRule>::new());
    }
}
