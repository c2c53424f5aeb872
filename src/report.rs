//! The weekly report: what each persona published on each platform, how it was received, what the
//! airlock and the review decided, what the LLMs cost, and how often rate limits and supervisors
//! stepped in — for one week, Monday 00:00 UTC to the next Monday (exclusive).
//!
//! [`build_week`] reads the aggregates from the store ([`Db::content_tally`] and friends, one
//! statement each); [`generate_and_store`] also saves the report as Markdown
//! ([`WeeklyReport::to_markdown`]) and JSON (serde) in `reports`, keyed by the week's Monday. The
//! `chorus report` command calls [`generate_and_store`]; the admin API and the TeamLeader are meant
//! to go through these two functions as well, so every copy of a week's report reads the same.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime};

use crate::store::{ChildTally, ContentTally, Db, LlmTally, Rank, RankedPost, RateLimitTally, StoreResult, now_ms};

/// How many posts the top and worst lists hold.
pub const RANKED_POSTS: i64 = 3;
/// How much of a ranked post's text the report keeps, in characters.
pub const TEXT_CHARS: usize = 100;
/// A week, in days.
const WEEK: Days = Days::new(7);

/// One week of activity. Serialized as the stored JSON; the field names are its schema.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeeklyReport {
    /// The Monday the week starts on, `YYYY-MM-DD` (UTC).
    pub week_start: String,
    /// The next Monday, `YYYY-MM-DD`: the week ends at its 00:00 UTC, exclusive.
    pub week_end: String,
    /// The window in epoch milliseconds, `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// When the report was built, epoch milliseconds.
    pub generated_at: i64,
    /// Per persona and platform, by persona then platform; a pair without activity is absent.
    pub content: Vec<ContentTally>,
    /// The best published posts by engagement score (likes + replies + reposts), highest first;
    /// ties go to the older item (lower id). Texts are cut to [`TEXT_CHARS`] characters.
    pub top_posts: Vec<RankedPost>,
    /// The weakest published posts, lowest score first (same ties and texts). With fewer than six
    /// posts in the week, a post can be in both lists.
    pub worst_posts: Vec<RankedPost>,
    /// LLM calls per persona, by persona.
    pub llm: Vec<LlmTally>,
    /// Rate-limit waits and refusals per (persona, platform, subject).
    pub rate_limits: Vec<RateLimitTally>,
    /// Restarts and circuit openings per supervised child, by child id.
    pub children: Vec<ChildTally>,
}

/// The Monday of the week `date` is in.
pub fn week_of(date: NaiveDate) -> NaiveDate {
    let since_monday = Days::new(u64::from(date.weekday().num_days_from_monday()));
    date.checked_sub_days(since_monday).unwrap_or(NaiveDate::MIN)
}

/// The Monday of the week `now_ms` is in (not complete yet).
pub fn current_week(now_ms: i64) -> NaiveDate {
    week_of(date_of(now_ms))
}

/// The Monday of the last week that has ended by `now_ms`.
pub fn last_complete_week(now_ms: i64) -> NaiveDate {
    current_week(now_ms).checked_sub_days(WEEK).unwrap_or(NaiveDate::MIN)
}

/// The week a command line or a request names: `last` (the last complete week), `current`, or
/// any day of the week as `YYYY-MM-DD`. Returns its Monday.
pub fn resolve_week(spec: &str, now_ms: i64) -> Result<NaiveDate, String> {
    match spec.trim() {
        "last" => Ok(last_complete_week(now_ms)),
        "current" => Ok(current_week(now_ms)),
        day => NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .map(week_of)
            .map_err(|err| format!("expected `last`, `current` or a date like 2026-11-30, got {day:?}: {err}")),
    }
}

/// The week starting on the Monday of `week_start` as `[from_ms, to_ms)`.
pub fn week_bounds(week_start: NaiveDate) -> (i64, i64) {
    let monday = week_of(week_start);
    (start_ms(monday), start_ms(next_week(monday)))
}

/// Builds the report of the week containing `week_start` (normally its Monday) from the store.
pub async fn build_week(db: &Db, week_start: NaiveDate) -> StoreResult<WeeklyReport> {
    let monday = week_of(week_start);
    let (from_ms, to_ms) = week_bounds(monday);
    let content = db.content_tally(from_ms, to_ms).await?;
    let top_posts = db.ranked_posts(from_ms, to_ms, Rank::Top, RANKED_POSTS).await?;
    let worst_posts = db.ranked_posts(from_ms, to_ms, Rank::Worst, RANKED_POSTS).await?;
    let llm = db.llm_tally(from_ms, to_ms).await?;
    let rate_limits = db.rate_limit_tally(from_ms, to_ms).await?;
    let children = db.child_tally(from_ms, to_ms).await?;
    Ok(WeeklyReport {
        week_start: monday.format("%Y-%m-%d").to_string(),
        week_end: next_week(monday).format("%Y-%m-%d").to_string(),
        from_ms,
        to_ms,
        generated_at: now_ms(),
        content,
        top_posts: top_posts.into_iter().map(shorten).collect(),
        worst_posts: worst_posts.into_iter().map(shorten).collect(),
        llm,
        rate_limits,
        children,
    })
}

/// Builds the report of the week and stores it (Markdown and JSON), replacing an earlier one.
pub async fn generate_and_store(db: &Db, week_start: NaiveDate) -> StoreResult<WeeklyReport> {
    let report = build_week(db, week_start).await?;
    db.save_report(&report.week_start, &report.to_markdown(), &report.to_json()).await?;
    Ok(report)
}

impl WeeklyReport {
    /// The stored JSON form.
    pub fn to_json(&self) -> String {
        // Strings, integers and floats only: serde_json cannot fail on them (a NaN becomes null).
        serde_json::to_string(self).expect("a weekly report always serializes")
    }

    /// The report as Markdown tables, for people.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let last_day = self.week_end_date().and_then(|end| end.checked_sub_days(Days::new(1)));
        let last_day = last_day.map_or_else(|| self.week_end.clone(), |day| day.format("%Y-%m-%d").to_string());
        let _ = writeln!(out, "# Weekly report: {} to {last_day}\n", self.week_start);
        let unfinished = if self.generated_at < self.to_ms { " The week is not over yet." } else { "" };
        let _ = writeln!(
            out,
            "Monday {} 00:00 UTC to Monday {} 00:00 UTC. Generated {}.{unfinished}\n",
            self.week_start,
            self.week_end,
            format_ms(self.generated_at)
        );
        self.content_markdown(&mut out);
        posts_markdown(&mut out, "Top posts", &self.top_posts);
        posts_markdown(&mut out, "Worst posts", &self.worst_posts);
        self.llm_markdown(&mut out);
        self.rate_limits_markdown(&mut out);
        self.children_markdown(&mut out);
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    }

    fn week_end_date(&self) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(&self.week_end, "%Y-%m-%d").ok()
    }

    fn content_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## Content by persona and platform\n");
        if self.content.is_empty() {
            let _ = writeln!(out, "Nothing published or decided this week.\n");
            return;
        }
        let _ = writeln!(
            out,
            "| Persona | Platform | Posts | Replies | Likes | Replies received | Reposts | Impressions \
             | Held | Approved | Rejected | Expired | Blocked |"
        );
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        let mut total = ContentTally::default();
        for row in &self.content {
            content_row(out, &cell(&row.persona), &cell(&row.platform), row);
            add_content(&mut total, row);
        }
        if self.content.len() > 1 {
            content_row(out, "**all**", "", &total);
        }
        let _ = writeln!(
            out,
            "\nPosts and replies count by publication time; their engagement is the latest fetch. \
             Airlock and review decisions count by decision time.\n"
        );
    }

    fn llm_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## LLM usage\n");
        if self.llm.is_empty() {
            let _ = writeln!(out, "No LLM calls this week.\n");
            return;
        }
        let _ = writeln!(out, "| Persona | Calls | Tokens in | Tokens out | Cost (USD) |");
        let _ = writeln!(out, "|---|--:|--:|--:|--:|");
        let mut total = LlmTally::default();
        for row in &self.llm {
            llm_row(out, &cell(&row.persona), row);
            total.calls += row.calls;
            total.tokens_in += row.tokens_in;
            total.tokens_out += row.tokens_out;
            total.cost_usd += row.cost_usd;
        }
        if self.llm.len() > 1 {
            llm_row(out, "**all**", &total);
        }
        out.push('\n');
    }

    fn rate_limits_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## Rate limits\n");
        if self.rate_limits.is_empty() {
            let _ = writeln!(out, "No rate-limit waits or refusals this week.\n");
            return;
        }
        let _ = writeln!(out, "| Persona | Platform | Subject | Waits | Waited | Refusals |");
        let _ = writeln!(out, "|---|---|---|--:|--:|--:|");
        for row in &self.rate_limits {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell(row.persona.as_deref().unwrap_or("")),
                cell(row.platform.as_deref().unwrap_or("")),
                cell(&row.subject),
                row.waits,
                humantime::format_duration(Duration::from_millis(u64::try_from(row.waited_ms).unwrap_or(0))),
                row.refusals
            );
        }
        out.push('\n');
    }

    fn children_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## Restarts and circuit openings\n");
        if self.children.is_empty() {
            let _ = writeln!(out, "No restarts or circuit openings this week.\n");
            return;
        }
        let _ = writeln!(out, "| Child | Restarts | Circuit opens |");
        let _ = writeln!(out, "|---|--:|--:|");
        for row in &self.children {
            let _ = writeln!(out, "| {} | {} | {} |", cell(&row.subject), row.restarts, row.circuit_opens);
        }
        out.push('\n');
    }
}

fn content_row(out: &mut String, persona: &str, platform: &str, row: &ContentTally) {
    let _ = writeln!(
        out,
        "| {persona} | {platform} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        row.posts_published,
        row.replies_published,
        row.engagement.likes,
        row.engagement.replies,
        row.engagement.reposts,
        row.engagement.impressions,
        row.held,
        row.approved,
        row.rejected,
        row.expired,
        row.blocked
    );
}

fn add_content(total: &mut ContentTally, row: &ContentTally) {
    total.posts_published += row.posts_published;
    total.replies_published += row.replies_published;
    total.engagement.likes += row.engagement.likes;
    total.engagement.replies += row.engagement.replies;
    total.engagement.reposts += row.engagement.reposts;
    total.engagement.impressions += row.engagement.impressions;
    total.held += row.held;
    total.approved += row.approved;
    total.rejected += row.rejected;
    total.expired += row.expired;
    total.blocked += row.blocked;
}

fn llm_row(out: &mut String, persona: &str, row: &LlmTally) {
    let _ =
        writeln!(out, "| {persona} | {} | {} | {} | {:.4} |", row.calls, row.tokens_in, row.tokens_out, row.cost_usd);
}

fn posts_markdown(out: &mut String, title: &str, posts: &[RankedPost]) {
    let _ = writeln!(out, "## {title}\n");
    if posts.is_empty() {
        let _ = writeln!(out, "No posts published this week.\n");
        return;
    }
    let _ = writeln!(out, "| # | Persona | Platform | Score | Item | Text |");
    let _ = writeln!(out, "|--:|---|---|--:|--:|---|");
    for (rank, post) in posts.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            rank + 1,
            cell(&post.persona),
            cell(&post.platform),
            post.score,
            post.id,
            cell(&post.text)
        );
    }
    out.push('\n');
}

/// Text made safe for one Markdown table cell: one line, no column breaks.
fn cell(text: &str) -> String {
    text.replace(['\r', '\n'], " ").replace('|', "\\|")
}

/// The post with its text cut to [`TEXT_CHARS`] characters.
fn shorten(mut post: RankedPost) -> RankedPost {
    if let Some((cut, _)) = post.text.char_indices().nth(TEXT_CHARS) {
        post.text.truncate(cut);
    }
    post
}

fn next_week(monday: NaiveDate) -> NaiveDate {
    monday.checked_add_days(WEEK).unwrap_or(NaiveDate::MAX)
}

/// Midnight UTC of `date`, epoch milliseconds.
fn start_ms(date: NaiveDate) -> i64 {
    date.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

/// The UTC date of an epoch-milliseconds time (out of range: 1970-01-01).
fn date_of(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().date_naive()
}

fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-11-30 is a Monday.
        for day in ["2026-11-30", "2026-12-02", "2026-12-06"] {
            assert_eq!(week_of(date(day)), date("2026-11-30"), "{day}");
        }
        assert_eq!(week_of(date("2026-12-07")), date("2026-12-07"));
        let (from, to) = week_bounds(date("2026-12-03"));
        assert_eq!(from, start_ms(date("2026-11-30")));
        assert_eq!(to - from, 7 * 24 * 3600 * 1000);
    }

    #[test]
    fn last_complete_week_is_the_one_before_the_current_week() {
        let monday = start_ms(date("2026-12-07"));
        assert_eq!(last_complete_week(monday), date("2026-11-30"), "Monday 00:00 ends the previous week");
        assert_eq!(last_complete_week(monday - 1), date("2026-11-23"), "Sunday 23:59:59.999 is not over yet");
        assert_eq!(current_week(monday - 1), date("2026-11-30"));
        assert_eq!(resolve_week("last", monday).unwrap(), date("2026-11-30"));
        assert_eq!(resolve_week("current", monday).unwrap(), date("2026-12-07"));
        assert_eq!(resolve_week("2026-12-09", monday).unwrap(), date("2026-12-07"));
        assert!(resolve_week("yesterday", monday).unwrap_err().contains("yesterday"));
        assert!(resolve_week("2026-13-01", monday).is_err());
    }

    #[test]
    fn ranked_texts_keep_their_first_hundred_characters() {
        let post = |text: &str| RankedPost {
            id: 1,
            persona: "ada".into(),
            platform: "x".into(),
            remote_id: None,
            published_at: 0,
            text: text.into(),
            score: 0,
        };
        let long = "é".repeat(150);
        assert_eq!(shorten(post(&long)).text.chars().count(), TEXT_CHARS);
        assert_eq!(shorten(post("short")).text, "short");
    }

    #[test]
    fn markdown_cells_stay_in_their_column() {
        assert_eq!(cell("a | b\nc"), "a \\| b c");
    }

    #[test]
    fn an_empty_week_says_so_in_every_section() {
        let (from_ms, to_ms) = week_bounds(date("2026-11-30"));
        let report = WeeklyReport {
            week_start: "2026-11-30".into(),
            week_end: "2026-12-07".into(),
            from_ms,
            to_ms,
            generated_at: to_ms,
            content: vec![],
            top_posts: vec![],
            worst_posts: vec![],
            llm: vec![],
            rate_limits: vec![],
            children: vec![],
        };
        let markdown = report.to_markdown();
        assert!(markdown.starts_with("# Weekly report: 2026-11-30 to 2026-12-06\n"), "{markdown}");
        for line in ["Nothing published", "No posts published", "No LLM calls", "No rate-limit", "No restarts"] {
            assert!(markdown.contains(line), "{line} missing in:\n{markdown}");
        }
    }
}
