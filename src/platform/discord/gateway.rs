//! The bot's gateway connection, on serenity. The agent owns it ([`LiveConnection`]): it is
//! opened in the agent's `post_start` and closed when the agent drains or stops (or, if the agent
//! dies without stopping cleanly, when the connection is dropped).
//!
//! - The bot's id (`GET /users/@me`, unless known) and the gateway URL (`GET /gateway/bot`) come
//!   from our own client before anything connects, which also proves the token (a 401 parks the
//!   agent at once). serenity's HTTP client is only pointed at
//!   the same base URL (`HttpBuilder::proxy`, its rate limiter off) for its own bootstrap call.
//! - serenity reconnects by itself: a dropped socket is resumed (missed events replayed), an
//!   invalidated session identifies again. The agent hears `Ready` / `Resumed`.
//! - When serenity gives up for good — close 4004 (bad token), 4013/4014 (intents) — the client
//!   returns and the agent gets `Closed(Err(Auth))`: its circuit opens with that reason.
//! - Intents: guild messages and DMs; the privileged Message Content intent only when the persona
//!   watches channels (mentions, replies to the bot and DMs carry their content without it).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serenity::all::{
    Context, EventHandler, GatewayIntents, HttpBuilder, Message, Ready, ResumedEvent, ShardId, ShardManager,
    ShardMessenger, ShardRunnerMessage,
};
use serenity::gateway::GatewayError;

use super::platform::DiscordAccount;
use crate::metrics as m;
use crate::platform::{LiveConnection, LiveEvent, LiveSink, Mention, PlatformError};
use crate::sync::lock;
use tokio::task::JoinHandle;

/// How long closing waits for serenity to wind down before abandoning it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens `persona`'s gateway connection; events go to `sink` until it is closed.
pub(super) async fn connect(
    persona: &str,
    account: Arc<DiscordAccount>,
    sink: LiveSink,
) -> Result<Box<dyn LiveConnection>, PlatformError> {
    // The bot's id before any event: messages are dispatched concurrently with READY.
    account.bot_id().await?;
    let gateway_url = account.client.gateway_url().await?;
    let mut intents = GatewayIntents::GUILD_MESSAGES | GatewayIntents::DIRECT_MESSAGES;
    if !account.channels.is_empty() {
        intents |= GatewayIntents::MESSAGE_CONTENT;
    }
    let http = HttpBuilder::new(account.client.token().expose())
        .client(account.client.http().clone())
        .proxy(account.client.api_base_url())
        .ratelimiter_disabled(true)
        .build();
    let closing = Arc::new(AtomicBool::new(false));
    let session = Arc::new(Mutex::new(None));
    let handler =
        Handler { account: account.clone(), sink: sink.clone(), closing: closing.clone(), session: session.clone() };
    let mut client = serenity::client::ClientBuilder::new_with_http(http, intents)
        .event_handler(handler)
        .await
        .map_err(|err| PlatformError::Transient(format!("cannot build the discord client: {err}")))?;
    *client.ws_url.lock().await = gateway_url;
    let shards = client.shard_manager.clone();
    let closed_on_purpose = closing.clone();
    let persona = persona.to_owned();
    let task = tokio::spawn(async move {
        let result = client.start().await;
        let outcome = match result {
            Ok(()) if closed_on_purpose.load(Ordering::SeqCst) => Ok(()),
            Ok(()) => Err(PlatformError::Transient("the gateway connection ended".into())),
            Err(serenity::Error::Gateway(err)) => Err(gateway_error(&err)),
            Err(err) => Err(PlatformError::Transient(format!("discord gateway: {err}"))),
        };
        if let Err(err) = &outcome {
            tracing::warn!(persona, error = %err, "discord gateway connection ended");
        }
        sink(LiveEvent::Closed(outcome));
    });
    Ok(Box::new(GatewayConnection { shards, closing, session, task }))
}

/// Tells the current session's runner directly to shut down. After serenity has restarted a shard
/// (an invalidated session), the old runner's exit removes the new one from the shard manager's
/// map, and `shutdown_all` alone would leave its socket open.
fn stop_session(session: &Mutex<Option<ShardMessenger>>) {
    if let Some(runner) = lock(session).take() {
        runner.send_to_shard(ShardRunnerMessage::Shutdown(ShardId(0), 1000));
    }
}

/// What a fatal gateway error means for the operator.
fn gateway_error(err: &GatewayError) -> PlatformError {
    match err {
        GatewayError::InvalidAuthentication => {
            PlatformError::Auth("discord refused the bot token (gateway close 4004): check discord.token".into())
        }
        GatewayError::DisallowedGatewayIntents => PlatformError::Auth(
            "discord refused the intents (gateway close 4014): enable the Message Content intent in the \
             Developer Portal, or watch no channels"
                .into(),
        ),
        GatewayError::InvalidGatewayIntents => {
            PlatformError::Auth("discord refused the intents (gateway close 4013)".into())
        }
        other => PlatformError::Transient(format!("discord gateway: {other}")),
    }
}

struct GatewayConnection {
    shards: Arc<ShardManager>,
    closing: Arc<AtomicBool>,
    /// The runner of the current session (set on READY).
    session: Arc<Mutex<Option<ShardMessenger>>>,
    /// Runs the client; it reports `Closed` when serenity returns.
    task: JoinHandle<()>,
}

#[async_trait]
impl LiveConnection for GatewayConnection {
    /// Tells the runner to close its session (close code 1000) and ends the client. serenity may
    /// wait up to 5 s for a shard to confirm, then this waits up to [`CLOSE_TIMEOUT`] for the
    /// client; the socket itself closes on the runner's next turn (under a second here).
    async fn close(mut self: Box<Self>) {
        self.closing.store(true, Ordering::SeqCst);
        stop_session(&self.session);
        self.shards.shutdown_all().await;
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut self.task).await.is_err() {
            tracing::warn!("the discord client did not stop in time; abandoning it");
        }
    }
}

impl Drop for GatewayConnection {
    /// Dropped without `close` (the agent failed or panicked, and ractor ran no `post_stop`):
    /// the shard runners are tasks of their own, so shut them down rather than leave a bot online
    /// with nobody listening.
    fn drop(&mut self) {
        self.task.abort();
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        stop_session(&self.session);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shards = self.shards.clone();
            runtime.spawn(async move { shards.shutdown_all().await });
        }
    }
}

struct Handler {
    account: Arc<DiscordAccount>,
    sink: LiveSink,
    /// Set once the agent closed the connection: a runner still alive then shuts itself down.
    closing: Arc<AtomicBool>,
    session: Arc<Mutex<Option<ShardMessenger>>>,
}

impl Handler {
    /// Whether the connection was closed; if so, make sure this shard goes away too.
    fn closed(&self, ctx: &Context) -> bool {
        let closed = self.closing.load(Ordering::SeqCst);
        if closed {
            ctx.shard.send_to_shard(ShardRunnerMessage::Shutdown(ctx.shard_id, 1000));
        }
        closed
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        if self.closed(&ctx) {
            return;
        }
        *lock(&self.session) = Some(ctx.shard.clone());
        let _ = self.account.bot_id.set(ready.user.id.get());
        (self.sink)(LiveEvent::Ready { user: ready.user.name.clone() });
    }

    async fn resume(&self, ctx: Context, _event: ResumedEvent) {
        if self.closed(&ctx) {
            return;
        }
        (self.sink)(LiveEvent::Resumed);
    }

    async fn message(&self, ctx: Context, message: Message) {
        if self.closed(&ctx) {
            return;
        }
        let Some(bot_id) = self.account.bot_id.get().copied() else { return };
        match to_answer(&message, bot_id, &self.account.channels) {
            Some(mention) => {
                (self.sink)(LiveEvent::Mention(mention));
            }
            None => {
                metrics::counter!(m::INBOUND_EVENTS, "platform" => "discord", "outcome" => "not_for_us").increment(1)
            }
        }
    }
}

/// The mention to answer, if the persona should answer `message`: a DM, an @mention of the bot,
/// a reply to one of its messages, or any message in a watched channel — never its own.
fn to_answer(message: &Message, bot_id: u64, channels: &HashSet<u64>) -> Option<Mention> {
    if message.author.id.get() == bot_id {
        return None;
    }
    let direct = message.guild_id.is_none();
    let mentioned = message.mentions.iter().any(|user| user.id.get() == bot_id);
    let answers_us = message.referenced_message.as_ref().is_some_and(|replied| replied.author.id.get() == bot_id);
    let watched = channels.contains(&message.channel_id.get());
    if !(direct || mentioned || answers_us || watched) {
        return None;
    }
    let text = readable(message, bot_id);
    if text.is_empty() {
        return None;
    }
    Some(Mention {
        remote_id: format!("{}/{}", message.channel_id, message.id),
        author: message.author.name.clone(),
        text,
        conversation: format!("{}:{}", message.channel_id, message.author.id),
        from_bot: message.author.bot,
    })
}

/// The content with the bot's own `<@id>` removed and other user mentions shown as `@name`.
fn readable(message: &Message, bot_id: u64) -> String {
    let mut text = message.content.clone();
    for user in &message.mentions {
        let name = if user.id.get() == bot_id { String::new() } else { format!("@{}", user.name) };
        for form in [format!("<@{}>", user.id), format!("<@!{}>", user.id)] {
            text = text.replace(&form, &name);
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: u64 = 900;

    fn user(id: u64, name: &str, bot: bool) -> serde_json::Value {
        json!({"id": id.to_string(), "username": name, "discriminator": "0", "global_name": null,
            "avatar": null, "bot": bot})
    }

    fn message(
        author: serde_json::Value,
        guild: bool,
        content: &str,
        mentions: Vec<serde_json::Value>,
    ) -> serde_json::Value {
        let mut message = json!({
            "id": "5001", "channel_id": "77", "author": author, "content": content,
            "timestamp": "2026-11-23T10:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": mentions, "mention_roles": [], "attachments": [],
            "embeds": [], "pinned": false, "type": 0,
        });
        if guild {
            message["guild_id"] = json!("42");
        }
        message
    }

    fn parse(value: serde_json::Value) -> Message {
        serde_json::from_value(value).expect("a valid message")
    }

    #[test]
    fn dms_mentions_replies_and_watched_channels_are_answered() {
        let none = HashSet::new();
        let sam = user(1, "sam", false);
        let dm = parse(message(sam.clone(), false, "hello there", vec![]));
        let mention = to_answer(&dm, BOT, &none).expect("a DM is answered");
        assert_eq!(mention.remote_id, "77/5001");
        assert_eq!(mention.conversation, "77:1", "per channel and person");
        assert!(!mention.from_bot);

        let chatter = parse(message(sam.clone(), true, "just chatting", vec![]));
        assert_eq!(to_answer(&chatter, BOT, &none), None, "guild chatter is not for us");
        assert!(to_answer(&chatter, BOT, &HashSet::from([77])).is_some(), "unless the channel is watched");

        let at = parse(message(
            sam.clone(),
            true,
            "<@900> what about <@!2>?",
            vec![user(BOT, "ada", true), user(2, "kai", false)],
        ));
        assert_eq!(to_answer(&at, BOT, &none).map(|m| m.text).as_deref(), Some("what about @kai?"));

        let mut reply = message(sam, true, "and then?", vec![]);
        reply["referenced_message"] = message(user(BOT, "ada", true), true, "earlier answer", vec![]);
        reply["message_reference"] = json!({"message_id": "5000", "channel_id": "77"});
        reply["type"] = json!(19);
        assert!(to_answer(&parse(reply), BOT, &none).is_some(), "a reply to the bot is answered");
    }

    #[test]
    fn never_itself_and_other_bots_are_flagged() {
        let watched = HashSet::from([77]);
        let own = parse(message(user(BOT, "ada", true), false, "my own words", vec![]));
        assert_eq!(to_answer(&own, BOT, &watched), None);
        let other = parse(message(user(3, "otherbot", true), true, "<@900> ping", vec![user(BOT, "ada", true)]));
        assert!(to_answer(&other, BOT, &watched).is_some_and(|m| m.from_bot));
        let empty = parse(message(user(1, "sam", false), true, "<@900>", vec![user(BOT, "ada", true)]));
        assert_eq!(to_answer(&empty, BOT, &watched), None, "nothing left to answer");
    }
}
