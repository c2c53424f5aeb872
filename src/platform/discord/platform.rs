//! Discord as a [`Platform`]: one bot per persona. Discord pushes: the agent opens the bot's
//! gateway connection with [`Platform::connect`] and messages arrive as [`LiveEvent`]s; nothing
//! is polled.
//!
//! Remote ids are `channel/message` (mentions and what is published alike), so a reply knows its
//! channel. Publishing splits the text
//! into messages of at most 2000 characters ([`split_message`]), sent in order, the first as a
//! reply to the triggering message. Each part carries a nonce derived from the outbox key and its
//! position, which Discord enforces for a few minutes (a retry right after a lost response returns
//! the message instead of posting it twice). A 429 between parts is waited out in place (up to
//! [`MAX_WAIT_BETWEEN_PARTS`]) so the parts stay in order; anything else fails the item and the
//! Publisher retries it: reconciliation then looks for each part among the channel's latest
//! messages and only the missing ones are sent.
//!
//! Engagement of a published item is read from its first message: likes are its reactions (every
//! emoji), replies the messages answering it among the next 100 of its channel (one page, so an
//! item with a busy channel after it counts only what that page holds).
//!
//! Discord's rate-limit buckets are per route and channel; the client's gates keep them. They are
//! not fed to the bot's RateLimiter (unlike X and Reddit), which holds the configured sending
//! budget only: one channel's exhausted bucket must not hold up the bot's other channels.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use super::text::split_message;
use super::{DiscordClient, DiscordMessage, MAX_MESSAGE_CHARS, NewMessage};
use crate::config::PlatformKind;
use crate::platform::{Engagement, LiveConnection, LiveSink, MentionBatch, Outgoing, Platform, PlatformError};

/// Longest 429 waited out between two parts of one item.
pub const MAX_WAIT_BETWEEN_PARTS: Duration = Duration::from_secs(10);
/// Latest messages of a channel searched when reconciling.
const RECONCILE_LIMIT: u8 = 100;
/// Messages after a published one searched for its replies (one page).
const REPLIES_PAGE: u8 = 100;

/// One persona's Discord bot.
pub struct DiscordAccount {
    pub client: DiscordClient,
    /// Channels where every message is answered, not only mentions, replies and DMs.
    pub channels: HashSet<u64>,
    /// Where scheduled posts go.
    pub post_channel: Option<String>,
    /// The bot's user id: from READY, or `GET /users/@me` when needed first.
    pub(super) bot_id: OnceLock<u64>,
}

impl DiscordAccount {
    pub fn new(client: DiscordClient, channels: HashSet<u64>, post_channel: Option<String>) -> Self {
        Self { client, channels, post_channel, bot_id: OnceLock::new() }
    }

    pub(super) async fn bot_id(&self) -> Result<u64, PlatformError> {
        if let Some(id) = self.bot_id.get() {
            return Ok(*id);
        }
        let me = self.client.me().await?.value;
        let id = me.parse().map_err(|_| PlatformError::Transient("discord user id is not a number".into()))?;
        Ok(*self.bot_id.get_or_init(|| id))
    }
}

pub struct DiscordPlatform {
    accounts: HashMap<String, Arc<DiscordAccount>>,
    max_reply_chars: usize,
    /// Parts of an interrupted item that reconciliation found already sent, by outbox key; the
    /// next publish of that item skips them.
    sent_parts: Mutex<HashMap<String, Vec<Option<String>>>>,
}

impl DiscordPlatform {
    /// `accounts` by persona name.
    pub fn new(accounts: HashMap<String, DiscordAccount>, max_reply_chars: usize) -> Self {
        let accounts = accounts.into_iter().map(|(name, account)| (name, Arc::new(account))).collect();
        Self { accounts, max_reply_chars, sent_parts: Mutex::new(HashMap::new()) }
    }

    fn account(&self, persona: &str) -> Result<&Arc<DiscordAccount>, PlatformError> {
        self.accounts.get(persona).ok_or_else(|| PlatformError::Auth(format!("no discord bot for {persona}")))
    }

    /// The channel an item goes to, and the message it answers.
    fn target<'a>(
        &self,
        account: &'a DiscordAccount,
        item: &Outgoing<'a>,
    ) -> Result<(&'a str, Option<&'a str>), PlatformError> {
        match item.reply_to {
            Some(remote_id) => {
                let (channel, message) = split_remote_id(remote_id)
                    .ok_or_else(|| PlatformError::Permanent(format!("not a discord message id: {remote_id:?}")))?;
                Ok((channel, Some(message)))
            }
            None => account
                .post_channel
                .as_deref()
                .map(|channel| (channel, None))
                .ok_or_else(|| PlatformError::Permanent("no discord.post_channel for scheduled posts".into())),
        }
    }

    fn sent_parts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Option<String>>>> {
        crate::sync::lock(&self.sent_parts)
    }
}

/// `channel/message` → its parts.
fn split_remote_id(remote_id: &str) -> Option<(&str, &str)> {
    let (channel, message) = remote_id.split_once('/')?;
    let numeric = |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    (numeric(channel) && numeric(message)).then_some((channel, message))
}

/// The nonce of part `index` of an outbox item (Discord allows 25 characters).
fn nonce(idempotency_key: &str, index: usize) -> String {
    format!("{:016x}{index:02}", crate::hash::fnv1a(idempotency_key.as_bytes()))
}

/// Which parts of an item are among `messages` (the bot's latest): the first must answer the
/// same message, the others follow it.
fn find_parts(
    parts: &[String],
    reply_to: Option<&str>,
    messages: &[DiscordMessage],
    bot_id: &str,
) -> Vec<Option<String>> {
    let mine: Vec<&DiscordMessage> = messages.iter().filter(|message| message.author_id == bot_id).collect();
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            mine.iter()
                .find(|message| {
                    message.content == *part
                        && (index > 0 || reply_to.is_none() || message.reference.as_deref() == reply_to)
                })
                .map(|message| message.id.clone())
        })
        .collect()
}

#[async_trait]
impl Platform for DiscordPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Discord
    }

    async fn connect(&self, account: &str, sink: LiveSink) -> Result<Option<Box<dyn LiveConnection>>, PlatformError> {
        let bot = self.account(account)?.clone();
        Ok(Some(super::gateway::connect(account, bot, sink).await?))
    }

    /// Never polled: messages arrive over the gateway.
    async fn mentions(&self, _account: &str, _cursor: Option<&str>) -> Result<MentionBatch, PlatformError> {
        Ok(MentionBatch::default())
    }

    fn shows_typing(&self) -> bool {
        true
    }

    async fn typing(&self, account: &str, reply_to: &str) -> Result<(), PlatformError> {
        let bot = self.account(account)?;
        let (channel, _) = split_remote_id(reply_to)
            .ok_or_else(|| PlatformError::Permanent(format!("not a discord message id: {reply_to:?}")))?;
        bot.client.trigger_typing(channel).await
    }

    fn max_text_chars(&self) -> usize {
        self.max_reply_chars
    }

    fn account_wide_rate_limits(&self) -> bool {
        false
    }

    fn posts_enabled(&self, account: &str) -> bool {
        self.accounts.get(account).is_some_and(|bot| bot.post_channel.is_some())
    }

    async fn publish(&self, account: &str, item: Outgoing<'_>) -> Result<String, PlatformError> {
        let bot = self.account(account)?;
        let (channel, reply_to) = self.target(bot, &item)?;
        let parts = split_message(item.text, MAX_MESSAGE_CHARS);
        if parts.is_empty() {
            return Err(PlatformError::Permanent("nothing to send".into()));
        }
        let known = self.sent_parts().remove(item.idempotency_key).unwrap_or_default();
        let mut first = None;
        for (index, part) in parts.iter().enumerate() {
            if let Some(Some(id)) = known.get(index) {
                first.get_or_insert_with(|| id.clone());
                continue;
            }
            let nonce = nonce(item.idempotency_key, index);
            let message =
                NewMessage { content: part, reply_to: if index == 0 { reply_to } else { None }, nonce: &nonce };
            let mut waited = Duration::ZERO;
            let sent = loop {
                match bot.client.send_message(channel, message).await {
                    // The first part goes back to the Publisher, which waits; later ones wait
                    // here so the parts stay in order.
                    Err(PlatformError::RateLimited { retry_after })
                        if first.is_some() && waited + retry_after <= MAX_WAIT_BETWEEN_PARTS =>
                    {
                        tokio::time::sleep(retry_after).await;
                        waited += retry_after;
                    }
                    other => break other?,
                }
            };
            first.get_or_insert(sent.value.id);
        }
        let first = first.ok_or_else(|| PlatformError::Permanent("nothing to send".into()))?;
        Ok(format!("{channel}/{first}"))
    }

    fn measures_engagement(&self) -> bool {
        true
    }

    /// Two reads per item: the message (its reactions; gone → left out) and the page after it
    /// (the replies). Stops at the first error, a rate limit included.
    async fn engagement(
        &self,
        account: &str,
        remote_ids: &[String],
    ) -> Result<Vec<(String, Engagement)>, PlatformError> {
        if remote_ids.is_empty() {
            return Ok(Vec::new());
        }
        let bot = self.account(account)?;
        let mut measured = Vec::with_capacity(remote_ids.len());
        for remote_id in remote_ids {
            let Some((channel, message_id)) = split_remote_id(remote_id) else {
                tracing::debug!(remote_id = %remote_id, "not a discord message id, not measured");
                continue;
            };
            let Some(message) = bot.client.message(channel, message_id).await?.value else { continue };
            let after = bot.client.messages_after(channel, message_id, REPLIES_PAGE).await?.value;
            let replies = after.iter().filter(|reply| reply.reference.as_deref() == Some(message_id)).count();
            let engagement =
                Engagement { likes: message.reactions, replies: replies as i64, reposts: 0, impressions: None };
            measured.push((remote_id.clone(), engagement));
        }
        Ok(measured)
    }

    async fn find_published(&self, account: &str, item: Outgoing<'_>) -> Result<Option<String>, PlatformError> {
        let bot = self.account(account)?;
        let (channel, reply_to) = self.target(bot, &item)?;
        let parts = split_message(item.text, MAX_MESSAGE_CHARS);
        let bot_id = bot.bot_id().await?.to_string();
        let messages = bot.client.recent_messages(channel, RECONCILE_LIMIT).await?.value;
        let found = find_parts(&parts, reply_to, &messages, &bot_id);
        if !found.is_empty() && found.iter().all(Option::is_some) {
            return Ok(found.into_iter().next().flatten().map(|first| format!("{channel}/{first}")));
        }
        if found.iter().any(Option::is_some) {
            self.sent_parts().insert(item.idempotency_key.to_owned(), found);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, author: &str, content: &str, reference: Option<&str>) -> DiscordMessage {
        DiscordMessage {
            id: id.into(),
            channel_id: "1".into(),
            author_id: author.into(),
            content: content.into(),
            reference: reference.map(str::to_owned),
            reactions: 0,
        }
    }

    #[test]
    fn remote_ids_carry_the_channel() {
        assert_eq!(split_remote_id("12/34"), Some(("12", "34")));
        assert_eq!(split_remote_id("12"), None);
        assert_eq!(split_remote_id("a/34"), None);
        assert_eq!(split_remote_id("/34"), None);
    }

    #[test]
    fn nonces_fit_discord_and_differ_by_part() {
        let (a, b) = (nonce("reply:discord:ada:1/2", 0), nonce("reply:discord:ada:1/2", 1));
        assert!(a.len() <= 25 && b.len() <= 25);
        assert_ne!(a, b);
        assert_eq!(a, nonce("reply:discord:ada:1/2", 0), "stable across attempts");
    }

    #[test]
    fn reconciliation_finds_only_the_bots_own_parts() {
        let parts = vec!["one".to_owned(), "two".to_owned(), "three".to_owned()];
        let messages = vec![
            message("13", "999", "two", None),
            message("12", "555", "three", None),
            message("11", "999", "one", Some("10")),
            message("9", "999", "one", Some("8")),
        ];
        assert_eq!(
            find_parts(&parts, Some("10"), &messages, "999"),
            vec![Some("11".to_owned()), Some("13".to_owned()), None],
            "the first part must answer the same message; another user's 'three' is not ours"
        );
    }
}
