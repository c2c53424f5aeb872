//! Reddit as a [`Platform`]: one [`RedditClient`] per persona account. Mentions are the unread
//! inbox (username mentions, replies to the persona, messages), acknowledged by marking them read
//! once stored. Replies are comments under the item; scheduled posts are self posts in the
//! account's subreddit. Engagement is `/api/info` on the fullnames published: the score, and the
//! comments of a self post (a comment's replies are not listed there). Every response's
//! `x-ratelimit-*` headers feed the account's gate (reads and writes share Reddit's per-account
//! budget) and its RateLimiter.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{MAX_TITLE_CHARS, RedditClient};
use crate::config::PlatformKind;
use crate::directory::Directory;
use crate::metrics as m;
use crate::platform::gate::RateGate;
use crate::platform::{Engagement, Mention, MentionBatch, Outgoing, Platform, PlatformError};
use crate::rate_limit::RateLimiterMsg;
use crate::rate_limit::headers::RateLimitSnapshot;

/// Inbox items read per poll.
const INBOX_LIMIT: u32 = 100;
/// Own comments searched when reconciling.
const RECONCILE_LIMIT: u32 = 50;

/// One persona's Reddit account.
pub struct RedditAccount {
    pub client: RedditClient,
    /// Where scheduled posts go.
    pub subreddit: String,
}

pub struct RedditPlatform {
    accounts: HashMap<String, RedditAccount>,
    gate: RateGate,
    directory: Arc<Directory>,
}

impl RedditPlatform {
    /// `accounts` by persona name.
    pub fn new(accounts: HashMap<String, RedditAccount>, directory: Arc<Directory>) -> Self {
        Self { accounts, gate: RateGate::default(), directory }
    }

    fn account(&self, persona: &str) -> Result<&RedditAccount, PlatformError> {
        self.gate.check(persona)?;
        self.accounts.get(persona).ok_or_else(|| PlatformError::Auth(format!("no reddit account for {persona}")))
    }

    /// Feeds the gate and the account's RateLimiter from a call's outcome: the response's headers
    /// when it answered, the reset of a 429, nothing when no response came (the client's last
    /// snapshot would be stale then).
    fn observed<T>(&self, persona: &str, client: &RedditClient, result: &Result<T, PlatformError>) {
        match result {
            Ok(_) => self.observe(persona, client.last_rate()),
            Err(PlatformError::RateLimited { retry_after }) => {
                self.observe(persona, Some(RateLimitSnapshot { limit: None, remaining: 0, reset_after: *retry_after }))
            }
            Err(_) => {}
        }
    }

    fn observe(&self, persona: &str, snapshot: Option<RateLimitSnapshot>) {
        self.gate.observe(persona, snapshot);
        if let Some(snapshot) = snapshot
            && let Some(limiter) = self.directory.rate_limiter("reddit")
        {
            let _ = limiter.send_message(RateLimiterMsg::Observe { persona: persona.to_owned(), snapshot });
        }
    }
}

/// A title for a self post: its first sentence, at most [`MAX_TITLE_CHARS`].
fn title_of(text: &str) -> String {
    let first = text.split_inclusive(['.', '!', '?', '\n']).next().unwrap_or(text).trim();
    let title: String = first.chars().take(MAX_TITLE_CHARS).collect();
    if title.is_empty() { "…".to_owned() } else { title }
}

#[async_trait]
impl Platform for RedditPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Reddit
    }

    async fn mentions(&self, account: &str, _cursor: Option<&str>) -> Result<MentionBatch, PlatformError> {
        let reddit = self.account(account)?;
        let result = reddit.client.unread(INBOX_LIMIT).await;
        self.observed(account, &reddit.client, &result);
        let inbox = result?.value;
        if inbox.malformed > 0 {
            metrics::counter!(m::MALFORMED_PAYLOADS, "platform" => "reddit").increment(inbox.malformed as u64);
        }
        let mentions = inbox
            .items
            .into_iter()
            .map(|item| Mention {
                conversation: item.link_fullname.clone().unwrap_or_else(|| item.fullname.clone()),
                remote_id: item.fullname,
                author: item.author,
                text: item.body,
                from_bot: false,
            })
            .collect();
        // The unread inbox is its own cursor: stored items are marked read (`acknowledge`).
        Ok(MentionBatch { mentions, cursor: None, more: false })
    }

    fn acknowledges(&self) -> bool {
        true
    }

    async fn acknowledge(&self, account: &str, remote_ids: &[String]) -> Result<(), PlatformError> {
        let reddit = self.account(account)?;
        let result = reddit.client.mark_read(remote_ids).await;
        self.observed(account, &reddit.client, &result);
        result.map(|_| ())
    }

    async fn publish(&self, account: &str, item: Outgoing<'_>) -> Result<String, PlatformError> {
        let reddit = self.account(account)?;
        let result = match item.reply_to {
            Some(parent) => reddit.client.comment(parent, item.text).await,
            None => reddit.client.submit_text(&reddit.subreddit, &title_of(item.text), item.text).await,
        };
        self.observed(account, &reddit.client, &result);
        Ok(result?.value)
    }

    fn measures_engagement(&self) -> bool {
        true
    }

    /// Likes are the score; replies a self post's comments, or a comment's replies when listed.
    async fn engagement(
        &self,
        account: &str,
        remote_ids: &[String],
    ) -> Result<Vec<(String, Engagement)>, PlatformError> {
        if remote_ids.is_empty() {
            return Ok(Vec::new());
        }
        let reddit = self.account(account)?;
        let result = reddit.client.info(remote_ids).await;
        self.observed(account, &reddit.client, &result);
        let measured = result?
            .value
            .into_iter()
            .map(|stats| {
                let engagement =
                    Engagement { likes: stats.score, replies: stats.comments, reposts: 0, impressions: None };
                (stats.fullname, engagement)
            })
            .collect();
        Ok(measured)
    }

    async fn find_published(&self, account: &str, item: Outgoing<'_>) -> Result<Option<String>, PlatformError> {
        // Reddit keeps no idempotency key: look for the same text under the same parent among
        // the account's recent comments, or for the same title and text among its self posts.
        let reddit = self.account(account)?;
        let Some(parent) = item.reply_to else {
            let result = reddit.client.recent_submissions(RECONCILE_LIMIT).await;
            self.observed(account, &reddit.client, &result);
            let title = title_of(item.text);
            let found = result?
                .value
                .into_iter()
                .find(|post| post.subject.as_deref() == Some(title.as_str()) && post.body.trim() == item.text.trim());
            return Ok(found.map(|post| post.fullname));
        };
        let result = reddit.client.recent_comments(RECONCILE_LIMIT).await;
        self.observed(account, &reddit.client, &result);
        let found = result?.value.into_iter().find(|comment| {
            comment.parent_fullname.as_deref() == Some(parent) && comment.body.trim() == item.text.trim()
        });
        Ok(found.map(|comment| comment.fullname))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_sentence_within_the_limit() {
        assert_eq!(title_of("Compilers are fun. Here is why."), "Compilers are fun.");
        assert_eq!(title_of(&"x".repeat(400)).chars().count(), MAX_TITLE_CHARS);
        assert_eq!(title_of("   "), "…");
    }
}
