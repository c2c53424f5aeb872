//! X as a [`Platform`]: one [`XClient`] per persona account. Mentions come from
//! `GET /2/users/{id}/mentions` after the saved `since_id`; replies and posts go to `POST /2/tweets`,
//! as a numbered thread when the text is over 280 weighted characters. Engagement is the posts'
//! `public_metrics` (`GET /2/tweets`, by the first post's id for a thread). Every response's
//! `x-rate-limit-*` headers feed a per-endpoint gate (nothing is sent after `remaining: 0` before
//! the reset) and, for posts, the account's RateLimiter.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::XClient;
use super::text::{split_thread, weighted_length};
use crate::config::PlatformKind;
use crate::directory::Directory;
use crate::metrics as m;
use crate::platform::gate::RateGate;
use crate::platform::{Engagement, Mention, MentionBatch, Outgoing, Platform, PlatformError};
use crate::rate_limit::RateLimiterMsg;
use crate::rate_limit::headers::RateLimitSnapshot;

/// X's limit for one post, in weighted characters.
pub const MAX_WEIGHTED: usize = 280;
/// Own posts searched when reconciling.
const RECONCILE_LIMIT: u32 = 20;

/// One persona's X account.
pub struct XAccount {
    pub client: XClient,
    /// The account's user id, looked up once (`GET /2/users/me`) unless known.
    user_id: OnceCell<String>,
}

impl XAccount {
    pub fn new(client: XClient, user_id: Option<String>) -> Self {
        let cell = OnceCell::new();
        if let Some(id) = user_id {
            let _ = cell.set(id);
        }
        Self { client, user_id: cell }
    }
}

pub struct XPlatform {
    accounts: HashMap<String, XAccount>,
    gate: RateGate,
    directory: Arc<Directory>,
    mentions_per_poll: u32,
}

impl XPlatform {
    /// `accounts` by persona name.
    pub fn new(accounts: HashMap<String, XAccount>, directory: Arc<Directory>, mentions_per_poll: u32) -> Self {
        Self { accounts, gate: RateGate::default(), directory, mentions_per_poll }
    }

    fn account(&self, persona: &str) -> Result<&XAccount, PlatformError> {
        self.accounts.get(persona).ok_or_else(|| PlatformError::Auth(format!("no x account for {persona}")))
    }

    async fn user_id(&self, persona: &str, account: &XAccount) -> Result<String, PlatformError> {
        let gate = format!("{persona}:me");
        let id = account
            .user_id
            .get_or_try_init(|| async {
                self.gate.check(&gate)?;
                let result = account.client.me().await;
                let me = self.observed(&gate, result)?;
                Ok::<_, PlatformError>(me.value.id)
            })
            .await?;
        Ok(id.clone())
    }

    /// Records what a call said about its endpoint's window (a 429 closes it until the reset).
    fn observed<T>(
        &self,
        gate: &str,
        result: Result<super::XResponse<T>, PlatformError>,
    ) -> Result<super::XResponse<T>, PlatformError> {
        match &result {
            Ok(response) => self.gate.observe(gate, response.rate),
            Err(PlatformError::RateLimited { retry_after }) => self
                .gate
                .observe(gate, Some(RateLimitSnapshot { limit: None, remaining: 0, reset_after: *retry_after })),
            Err(_) => {}
        }
        result
    }

    fn feed_limiter(&self, persona: &str, rate: Option<RateLimitSnapshot>) {
        if let Some(snapshot) = rate
            && let Some(limiter) = self.directory.rate_limiter("x")
        {
            let _ = limiter.send_message(RateLimiterMsg::Observe { persona: persona.to_owned(), snapshot });
        }
    }
}

/// Text without the `@handle ` prefixes X puts in front of replies, for comparing posts.
fn without_leading_mentions(text: &str) -> &str {
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix('@') {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        rest = after[end..].trim_start();
    }
    rest.trim_end()
}

#[async_trait]
impl Platform for XPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::X
    }

    async fn mentions(&self, account: &str, cursor: Option<&str>) -> Result<MentionBatch, PlatformError> {
        let x = self.account(account)?;
        let user_id = self.user_id(account, x).await?;
        let gate = format!("{account}:mentions");
        self.gate.check(&gate)?;
        let result = x.client.mentions(&user_id, cursor, self.mentions_per_poll).await;
        let page = self.observed(&gate, result)?.value;
        if page.malformed > 0 {
            metrics::counter!(m::MALFORMED_PAYLOADS, "platform" => "x").increment(page.malformed as u64);
        }
        let mentions = page
            .tweets
            .into_iter()
            .filter(|tweet| tweet.author_id.as_deref() != Some(user_id.as_str()))
            .map(|tweet| Mention {
                conversation: tweet.conversation_id.clone().unwrap_or_else(|| tweet.id.clone()),
                author: tweet.author_username.or(tweet.author_id).unwrap_or_default(),
                remote_id: tweet.id,
                text: tweet.text,
                from_bot: false,
            })
            .collect();
        // The client has read every page already.
        Ok(MentionBatch { mentions, cursor: page.newest_id, more: false })
    }

    async fn publish(&self, account: &str, item: Outgoing<'_>) -> Result<String, PlatformError> {
        let x = self.account(account)?;
        let gate = format!("{account}:tweets");
        self.gate.check(&gate)?;
        let id = if weighted_length(item.text) <= MAX_WEIGHTED {
            let result = x.client.post(item.text, item.reply_to).await;
            let response = self.observed(&gate, result)?;
            self.feed_limiter(account, response.rate);
            response.value
        } else {
            let parts = split_thread(item.text, MAX_WEIGHTED);
            let result = x.client.post_thread(&parts, item.reply_to).await;
            let response = self.observed(&gate, result)?;
            self.feed_limiter(account, response.rate);
            response.value.into_iter().next().ok_or_else(|| PlatformError::Transient("empty thread".into()))?
        };
        Ok(id)
    }

    fn measures_engagement(&self) -> bool {
        true
    }

    /// Likes, replies, retweets plus quotes and (for the author) impressions. X's reply count
    /// includes the author's own replies: the second part of a thread counts as one.
    async fn engagement(
        &self,
        account: &str,
        remote_ids: &[String],
    ) -> Result<Vec<(String, Engagement)>, PlatformError> {
        if remote_ids.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.account(account)?;
        let gate = format!("{account}:lookup");
        self.gate.check(&gate)?;
        let result = x.client.public_metrics(remote_ids).await;
        let lookup = self.observed(&gate, result)?.value;
        if lookup.malformed > 0 {
            metrics::counter!(m::MALFORMED_PAYLOADS, "platform" => "x").increment(lookup.malformed as u64);
        }
        let measured = lookup
            .metrics
            .into_iter()
            .map(|(id, counts)| {
                let engagement = Engagement {
                    likes: counts.like_count,
                    replies: counts.reply_count,
                    reposts: counts.retweet_count + counts.quote_count,
                    impressions: counts.impression_count,
                };
                (id, engagement)
            })
            .collect();
        Ok(measured)
    }

    async fn find_published(&self, account: &str, item: Outgoing<'_>) -> Result<Option<String>, PlatformError> {
        // X keeps no idempotency key: look for the same (first) text under the same parent among
        // the account's recent posts. A thread found cut short (an error or a crash between its
        // parts) is finished here, from the last part that landed, before it counts as published.
        let x = self.account(account)?;
        let user_id = self.user_id(account, x).await?;
        let gate = format!("{account}:timeline");
        self.gate.check(&gate)?;
        let parts = if weighted_length(item.text) <= MAX_WEIGHTED {
            vec![item.text.to_owned()]
        } else {
            split_thread(item.text, MAX_WEIGHTED)
        };
        let result = x.client.recent_tweets(&user_id, RECONCILE_LIMIT).await;
        let recent = self.observed(&gate, result)?.value;
        let same = |tweet: &super::XTweet, parent: Option<&str>, text: &str| {
            tweet.in_reply_to.as_deref() == parent
                && without_leading_mentions(&tweet.text) == without_leading_mentions(text)
        };
        let Some(first) = recent.iter().find(|tweet| same(tweet, item.reply_to, &parts[0])) else { return Ok(None) };
        let mut last = first.id.clone();
        let mut landed = 1;
        while let Some(next) =
            parts.get(landed).and_then(|part| recent.iter().find(|tweet| same(tweet, Some(&last), part)))
        {
            last = next.id.clone();
            landed += 1;
        }
        if landed < parts.len() {
            tracing::info!(account, landed, parts = parts.len(), "finishing a thread that was cut short");
            let gate = format!("{account}:tweets");
            self.gate.check(&gate)?;
            let result = x.client.post_thread(&parts[landed..], Some(&last)).await;
            let response = self.observed(&gate, result)?;
            self.feed_limiter(account, response.rate);
        }
        Ok(Some(first.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_prefixes_are_ignored_when_comparing() {
        assert_eq!(without_leading_mentions("@sam @ada  hello there "), "hello there");
        assert_eq!(without_leading_mentions("hello @sam"), "hello @sam");
    }
}
