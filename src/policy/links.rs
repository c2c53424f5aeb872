//! The link rule: URLs whose host is outside `allowed_links`.
//!
//! A link is an `http://` or `https://` URL, a `www.` host, or a bare domain whose top-level
//! domain is a common one ([`LINKED_TLDS`]), with or without a path. Other dotted words
//! (`Node.js`, `main.rs`, `e.g.`) are not links, and neither is the domain of an email address.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// Top-level domains that make a bare `name.tld` a link. Platforms link every real TLD, but
/// many collide with file names (`.rs`, `.py`, `.md`, `.sh`, `.zip`), so only common web ones
/// are listed, plus RFC 2606's `.example` and `.test`.
const LINKED_TLDS: &[&str] = &[
    "ai", "app", "au", "biz", "blog", "ca", "cloud", "co", "com", "de", "dev", "edu", "es", "eu", "example", "fm",
    "fr", "gg", "gov", "info", "io", "jp", "link", "ly", "me", "net", "news", "nl", "online", "org", "page", "shop",
    "site", "store", "tech", "test", "tv", "uk", "us", "xyz",
];

/// A URL with a scheme, or a dotted name with an optional path.
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)\bhttps?://[^\s<>"'`()\[\]{}]+"#,
        r#"|\b(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}\b(?:/[^\s<>"'`()\[\]{}]*)?"#,
    ))
    .expect("the URL pattern is valid")
});

/// A link found in a text: where it is and its host, lowercase.
pub(super) struct Link {
    pub span: Range<usize>,
    pub host: String,
}

/// Every link in `text`, in order.
pub(super) fn find(text: &str) -> Vec<Link> {
    URL.find_iter(text)
        .filter_map(|found| {
            let url = found.as_str();
            let host = match url.split_once("://") {
                Some((_, rest)) => host_of(rest),
                None => {
                    let after_at = text[..found.start()].ends_with('@');
                    let host = host_of(url);
                    let is_link = host.starts_with("www.")
                        || host.rsplit('.').next().is_some_and(|tld| LINKED_TLDS.contains(&tld));
                    if after_at || !is_link {
                        return None;
                    }
                    host
                }
            };
            (!host.is_empty()).then(|| Link { span: found.range(), host })
        })
        .collect()
}

/// The host of a URL without its scheme: before any path, query or fragment, after any user
/// info, without a port or trailing punctuation, lowercase.
fn host_of(rest: &str) -> String {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    host.trim_end_matches(|c: char| !c.is_alphanumeric()).to_lowercase()
}

/// Hosts of links in `text` that are neither an allowed domain nor a subdomain of one, each
/// once, in order.
pub(super) fn disallowed_hosts(text: &str, allowed: &[String]) -> Vec<String> {
    let allowed: Vec<String> = allowed
        .iter()
        .map(|domain| domain.trim().trim_start_matches("*.").trim_end_matches('.').to_lowercase())
        .filter(|domain| !domain.is_empty())
        .collect();
    let is_allowed = |host: &str| {
        allowed.iter().any(|domain| {
            host == domain || host.strip_suffix(domain.as_str()).is_some_and(|prefix| prefix.ends_with('.'))
        })
    };
    let mut hosts: Vec<String> = Vec::new();
    for link in find(text) {
        if !is_allowed(&link.host) && !hosts.contains(&link.host) {
            hosts.push(link.host);
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::config::{PlatformKind, PolicyRule};

    fn hosts(text: &str, allowed: &[&str]) -> Vec<String> {
        let allowed: Vec<String> = allowed.iter().map(|domain| domain.to_string()).collect();
        disallowed_hosts(text, &allowed)
    }

    #[test]
    fn allowed_domains_cover_their_subdomains_only() {
        let allowed = ["example.com", "rust-lang.org"];
        assert_eq!(
            hosts("https://example.com/a and http://docs.example.com:8080/b?x=1", &allowed),
            Vec::<String>::new()
        );
        assert_eq!(hosts("see www.rust-lang.org/learn.", &allowed), Vec::<String>::new());
        assert_eq!(
            hosts("https://notexample.com and https://example.com.evil.io/x", &allowed),
            vec!["notexample.com", "example.com.evil.io"]
        );
    }

    #[test]
    fn every_kind_of_link_is_found_with_its_host() {
        let text = "Go to HTTPS://user@Evil.Example:443/path, www.spam.net or Shady.XYZ/deal (https://a.io).";
        assert_eq!(hosts(text, &[]), vec!["evil.example", "www.spam.net", "shady.xyz", "a.io"]);
        assert_eq!(hosts("twice: https://a.io/1 https://a.io/2", &[]), vec!["a.io"]);
    }

    #[test]
    fn dotted_words_and_email_domains_are_not_links() {
        let text = "Node.js and main.rs, e.g. v1.2.3 at 3.14; mail bob@example.com. The end.Really";
        assert_eq!(hosts(text, &[]), Vec::<String>::new());
    }

    #[test]
    fn an_empty_allowlist_allows_no_link() {
        let fixture = Fixture::on(PlatformKind::X);
        let review = fixture.review("details at https://example.com");
        assert_eq!(review.reasons(), "link: link to example.com is not on the allowlist");
        assert!(review.blocked());
        let mut fixture = fixture;
        fixture.policy.allowed_links = vec!["example.com".into()];
        assert_eq!(fixture.rules("details at https://blog.example.com/post"), Vec::<PolicyRule>::new());
    }
}
