//! The pii rule: email addresses and phone numbers.
//!
//! A phone number is an international `+` form or a national one with 9 to 15 digits, grouped
//! by spaces, `-`, `.` or parentheses (or ungrouped when it starts with a trunk `0`). Numbers
//! that only look like one are left alone: years, prices, decimals, thousands (`1.000.000.000`),
//! ISO dates, IP addresses, version numbers and ids glued to other characters.

use std::sync::LazyLock;

use regex::Regex;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b").expect("the email pattern is valid")
});

/// Digits with separators between them; [`is_phone`] decides.
static PHONE_CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d ().-]{6,}\d").expect("the phone pattern is valid"));

static ISO_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{4}-\d{2}-\d{2}").expect("the date pattern is valid"));

/// The kinds of personal data in `text` ("an email address", "a phone number"), each once.
pub(super) fn find(text: &str) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    if EMAIL.is_match(text) {
        kinds.push("an email address");
    }
    let has_phone = PHONE_CANDIDATE.find_iter(text).any(|candidate| {
        let before = text[..candidate.start()].chars().next_back();
        let after = text[candidate.end()..].chars().next();
        let priced = text[..candidate.start()].trim_end().ends_with(['$', '€', '£', '¥']);
        !priced && is_phone(candidate.as_str(), before, after)
    });
    if has_phone {
        kinds.push("a phone number");
    }
    kinds
}

/// Whether a run of digits and separators, with the characters around it, is a phone number.
fn is_phone(candidate: &str, before: Option<char>, after: Option<char>) -> bool {
    let glued = |c: Option<char>, extra: &str| c.is_some_and(|c| c.is_alphanumeric() || extra.contains(c));
    if glued(before, "_/.-#") || glued(after, "_%") {
        return false;
    }
    let digits = candidate.chars().filter(char::is_ascii_digit).count();
    if !(9..=15).contains(&digits) {
        return false;
    }
    let international = candidate.starts_with('+');
    let separators: Vec<char> = candidate.chars().filter(|c| !c.is_ascii_digit() && *c != '+').collect();
    let groups: Vec<&str> = candidate.split(|c: char| !c.is_ascii_digit()).filter(|group| !group.is_empty()).collect();
    if international {
        return true;
    }
    if separators.is_empty() {
        // An unbroken run is an id or an amount, unless it starts with a national trunk prefix.
        return candidate.starts_with('0');
    }
    if ISO_DATE.is_match(candidate) {
        return false;
    }
    let is_year = |group: &&str| group.len() == 4 && (group.starts_with("19") || group.starts_with("20"));
    if groups.iter().all(is_year) {
        return false;
    }
    if separators.iter().all(|c| *c == '.') {
        // Dotted numbers are phones only as groups of 2 to 4 digits (`555.123.4567`), not
        // decimals, thousands, IP addresses or versions (`10.0.19041.1234`).
        let thousands = groups[0].len() <= 3 && groups[1..].iter().all(|group| group.len() == 3);
        let ip = groups.len() == 4 && groups.iter().all(|group| group.parse::<u16>().is_ok_and(|part| part <= 255));
        let phone_groups = groups.len() >= 3 && groups.iter().all(|group| (2..=4).contains(&group.len()));
        return phone_groups && !thousands && !ip;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::config::{PlatformKind, PolicyRule};

    #[test]
    fn emails_are_found_and_named_by_kind_only() {
        let fixture = Fixture::on(PlatformKind::Local);
        let review = fixture.review("write to Jane.Doe+news@mail.example.co.uk today");
        assert_eq!(review.reasons(), "pii: an email address");
        assert!(!review.reasons().contains("Jane"));
        assert!(review.blocked());
    }

    #[test]
    fn phone_numbers_in_common_forms_are_found() {
        let phones = [
            "+1 (555) 010-0199",
            "+44 20 7946 0958",
            "+33612345678",
            "555-123-4567",
            "(555) 123-4567",
            "555.123.4567",
            "06 12 34 56 78",
            "06.12.34.56.78",
            "0612345678",
            "030 1234 5678",
        ];
        for phone in phones {
            assert_eq!(find(&format!("call me at {phone}, thanks")), vec!["a phone number"], "{phone}");
        }
    }

    #[test]
    fn years_prices_dates_versions_and_short_numbers_are_not_phones() {
        let texts = [
            "Founded in 1999, relaunched 2019 2020 2021 and again in 2024.",
            "Only $1,299.99, or $ 1 500 000 000 for the whole lot; €2.500.000.000 raised",
            "1.000.000.000 users and 3.14159265358979 digits of pi",
            "On 2024-05-12 10 people came; 2024-05-12T10:30:00Z",
            "Upgrade to 10.0.19041.1234 or v1.2.3.456789, served from 192.168.100.200",
            "Order #123456789, tweet 1790000000000000000, 1000000000 lamports, ts 1717171717",
            "We grew 123456789% and scored 3-2 in 90 minutes, call 911",
        ];
        for text in texts {
            assert_eq!(find(text), Vec::<&str>::new(), "{text}");
        }
    }

    #[test]
    fn the_rule_is_off_when_the_policy_says_so() {
        let mut fixture = Fixture::on(PlatformKind::Local);
        fixture.policy.pii = false;
        assert_eq!(fixture.rules("bob@example.org, +44 20 7946 0958"), Vec::<PolicyRule>::new());
    }
}
