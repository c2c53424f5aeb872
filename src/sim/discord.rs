//! The Discord simulator: the REST API (`/api/v10/...`, what serenity's `HttpBuilder::proxy`
//! sends) and the gateway websocket (`ws://ADDR/gateway`) on one 127.0.0.1 port.
//!
//! - REST routes:
//!   - `GET /gateway`, `GET /gateway/bot`, `GET /users/@me`;
//!   - `POST /users/@me/channels` (create or get the DM with `recipient_id`);
//!   - `POST /channels/{channel_id}/messages`: content at most 2000 characters (else 400 Invalid Form
//!     Body, 50035), not blank (50006); optional `message_reference` (a reply, type 19, pinging the
//!     referenced author; an unknown message is a 400 unless `fail_if_not_exists: false`); `nonce`
//!     (at most 25 characters) is echoed, and with `enforce_nonce: true` a message the same bot
//!     sent in that channel with that nonce in the last 5 minutes is returned again (200) instead
//!     of creating and dispatching a new one;
//!   - `GET /channels/{channel_id}/messages?limit=&before=&after=`: the channel's messages (users'
//!     and bots'), newest first; `limit` 1..=100 (default 50, else 400 Invalid Form Body);
//!     `before` / `after` keep smaller / greater ids (with `after`: the page right after it);
//!   - `GET /channels/{channel_id}/messages/{message_id}`: one message (404 `{"message": "Unknown
//!     Message", "code": 10008}` if the channel has no such message), with its `reactions`
//!     ([`DiscordSim::add_reaction`]; absent while there are none, as Discord sends it);
//!   - `POST /channels/{channel_id}/typing` (204).
//!
//!   Channel routes answer 404 `{"message": "Unknown Channel", "code": 10003}` for a channel the bot
//!   cannot see. Everything but `GET /gateway` needs `Authorization: Bot TOKEN` (else a 401
//!   `{"message": "401: Unauthorized", "code": 0}`); any other path is a 404.
//! - Rate limits per (token, route, major parameter: the channel id), so every channel has its own
//!   window, and reading messages (`GET /channels/{channel_id}/messages`) has a bucket apart from
//!   sending them. `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch seconds), `-Reset-After`
//!   (seconds) and `-Bucket` (one id per route) are on every routed, authenticated response; a 429
//!   (`retry_after` in the body, `Retry-After` header, `X-RateLimit-Scope: user`) while the window
//!   is exhausted ([`DiscordSim::set_route_limit`]; default 50 per second). An optional global
//!   limit per token across all routes ([`DiscordSim::set_global_limit`]) answers a 429 with
//!   `"global": true`, `X-RateLimit-Global: true` and `X-RateLimit-Scope: global`.
//! - Gateway: op 10 Hello on connect; op 2 Identify (unknown token: close 4004; intents outside
//!   [`DiscordSim::set_allowed_intents`]: close 4014; the intents are recorded,
//!   [`DiscordSim::identify_intents`]) → READY (s 1) and GUILD_CREATE for the simulated guild;
//!   op 1 Heartbeat → op 11; op 6 Resume replays the dispatches after `seq`, then RESUMED (unknown
//!   session: op 9 `false`). Sequence numbers increase per session. Every message (users' from
//!   [`DiscordSim::user_message`], [`DiscordSim::mention`], [`DiscordSim::user_reply`],
//!   [`DiscordSim::dm`]; bots' over REST or from [`DiscordSim::bot_message`]) is dispatched as
//!   MESSAGE_CREATE to every session that sees the channel, a bot's own messages included, as
//!   Discord does.
//! - Faults ([`DiscordFault`]) are queued with [`DiscordSim::script`] (every routed REST request
//!   pops one) or [`DiscordSim::script_on`] (only requests to that route pop them).
//! - Every REST request is recorded ([`DiscordRecordedRequest`]). Nothing in here panics on bad input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Discord's limit on a message's `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 2000;
/// The default op 10 Hello `heartbeat_interval`, in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 41_250;

/// The rate-limit keys of the routes ([`DiscordSim::set_route_limit`]): the route template, with
/// `GET ` in front for reading messages, which Discord limits apart from sending them.
const ROUTES: [&str; 8] = [
    "/gateway",
    "/gateway/bot",
    "/users/@me",
    "/users/@me/channels",
    "/channels/{channel_id}/messages",
    "GET /channels/{channel_id}/messages",
    "GET /channels/{channel_id}/messages/{message_id}",
    "/channels/{channel_id}/typing",
];
const DEFAULT_LIMIT: (u32, Duration) = (50, Duration::from_secs(1));
/// How long Discord remembers a nonce sent with `enforce_nonce`.
const NONCE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// `GET /channels/{channel_id}/messages`: the default and the allowed range of `limit`.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 100;

/// A fault injected into one REST response.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscordFault {
    /// This status with a Discord error body `{"message", "code": 0}`.
    Status { status: u16 },
    /// A 429 with this `retry_after` (body and `Retry-After` header) and `global` flag.
    RateLimited { retry_after_secs: f64, global: bool },
    /// Sleep this long, then answer normally.
    Slow(Duration),
}

/// One REST request as the simulator received it.
#[derive(Clone, Debug)]
pub struct DiscordRecordedRequest {
    pub at: Instant,
    pub method: String,
    /// The path, e.g. `/api/v10/channels/123/messages` (no query).
    pub path: String,
    /// Names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (anything else as a string, an empty body as `null`).
    pub body: Value,
}

struct SimUser {
    id: u64,
    username: String,
    bot: bool,
}

struct Channel {
    id: u64,
    name: String,
    /// `Some`: a text channel of the guild (type 0); `None`: a DM (type 1).
    guild_id: Option<u64>,
    recipients: Vec<u64>,
}

struct StoredMessage {
    id: u64,
    channel_id: u64,
    author_id: u64,
    /// When it was created (for `enforce_nonce`).
    at: Instant,
    /// As sent over REST / the gateway (without `guild_id`).
    json: Value,
}

/// A connected websocket.
struct Conn {
    tx: mpsc::UnboundedSender<Out>,
}

enum Out {
    Frame(Value),
    Close(u16, &'static str),
    /// Drop the socket without a close frame.
    Drop,
}

struct Session {
    id: String,
    bot_id: u64,
    seq: u64,
    /// Every dispatch of this session (op 0 frames), for resuming.
    log: Vec<Value>,
    conn: Option<u64>,
}

struct Window {
    remaining: u32,
    reset_at: Instant,
    reset_epoch: f64,
}

struct World {
    users: Vec<SimUser>,
    /// Bot token → bot user id.
    tokens: HashMap<String, u64>,
    guild_id: u64,
    channels: Vec<Channel>,
    messages: Vec<StoredMessage>,
    typing: Vec<(String, Instant)>,
    sessions: Vec<Session>,
    conns: HashMap<u64, Conn>,
    limits: HashMap<String, (u32, Duration)>,
    /// (token, rate-limit key, major parameter: the channel id or "") → window.
    windows: HashMap<(String, String, String), Window>,
    /// Requests per token across all routes, if set.
    global_limit: Option<(u32, Duration)>,
    /// Token → global window.
    global_windows: HashMap<String, Window>,
    heartbeat_interval_ms: u64,
    identify_count: usize,
    /// The `intents` of every op 2 Identify, in order.
    identify_intents: Vec<u64>,
    /// Intents a bot may ask for (`None`: any).
    allowed_intents: Option<u64>,
    resume_count: usize,
    next_id: u64,
}

/// A Discord-shaped timestamp: `2026-01-02T03:04:05.678000+00:00`.
fn timestamp(at: SystemTime) -> String {
    let (year, month, day, rem, micros) = super::utc_fields(at);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+00:00", rem / 3600, rem / 60 % 60, rem % 60)
}

fn epoch_secs(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn frame(op: u8, d: Value) -> Value {
    json!({"op": op, "d": d, "s": null, "t": null})
}

impl World {
    fn new() -> Self {
        let mut world = Self {
            users: Vec::new(),
            tokens: HashMap::new(),
            guild_id: 0,
            channels: Vec::new(),
            messages: Vec::new(),
            typing: Vec::new(),
            sessions: Vec::new(),
            conns: HashMap::new(),
            limits: HashMap::new(),
            windows: HashMap::new(),
            global_limit: None,
            global_windows: HashMap::new(),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            identify_count: 0,
            identify_intents: Vec::new(),
            allowed_intents: None,
            resume_count: 0,
            next_id: 0,
        };
        world.guild_id = world.snowflake();
        let channel = world.snowflake();
        let guild_id = world.guild_id;
        world.channels.push(Channel {
            id: channel,
            name: "general".into(),
            guild_id: Some(guild_id),
            recipients: vec![],
        });
        world
    }

    fn snowflake(&mut self) -> u64 {
        self.next_id += 1;
        // Discord snowflakes: milliseconds since 2015 in the high bits; increasing is what matters.
        let ms = (epoch_secs(SystemTime::now()) * 1000.0) as u64;
        (ms.saturating_sub(1_420_070_400_000) << 22) | (self.next_id & 0x3f_ffff)
    }

    fn user(&self, id: u64) -> Option<&SimUser> {
        self.users.iter().find(|u| u.id == id)
    }

    fn user_json(&self, id: u64) -> Value {
        let Some(user) = self.user(id) else {
            return json!({"id": id.to_string(), "username": "unknown", "discriminator": "0", "global_name": null,
                "avatar": null, "public_flags": 0, "flags": 0, "primary_guild": null});
        };
        let mut out = json!({
            "id": user.id.to_string(),
            "username": user.username,
            "discriminator": "0",
            "global_name": if user.bot { Value::Null } else { json!(user.username) },
            "avatar": null,
            "public_flags": 0,
            "flags": 0,
            "primary_guild": null,
        });
        if user.bot {
            out["bot"] = json!(true);
        }
        out
    }

    fn channel(&self, id: u64) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    fn can_see(&self, bot_id: u64, channel_id: u64) -> bool {
        self.channel(channel_id).is_some_and(|c| c.guild_id.is_some() || c.recipients.contains(&bot_id))
    }

    fn channel_json(&self, channel: &Channel) -> Value {
        match channel.guild_id {
            Some(guild_id) => json!({
                "id": channel.id.to_string(), "type": 0, "guild_id": guild_id.to_string(), "name": channel.name,
                "position": 0, "flags": 0, "permission_overwrites": [], "nsfw": false, "topic": null,
                "last_message_id": null, "rate_limit_per_user": 0, "parent_id": null,
            }),
            None => json!({
                "id": channel.id.to_string(), "type": 1, "flags": 0, "last_message_id": null,
                "recipients": channel.recipients.iter().filter(|id| !self.is_bot(**id)).map(|id| self.user_json(*id))
                    .collect::<Vec<_>>(),
            }),
        }
    }

    fn is_bot(&self, id: u64) -> bool {
        self.user(id).is_some_and(|u| u.bot)
    }

    fn guild_json(&self) -> Value {
        let guild_id = self.guild_id.to_string();
        let bots: Vec<Value> = self
            .users
            .iter()
            .filter(|u| u.bot)
            .map(|u| {
                json!({"user": self.user_json(u.id), "roles": [], "joined_at": timestamp(SystemTime::now()),
                    "deaf": false, "mute": false, "flags": 0, "nick": null, "avatar": null, "pending": false})
            })
            .collect();
        let owner = self.users.iter().find(|u| u.bot).map(|u| u.id.to_string()).unwrap_or_else(|| "0".into());
        let channels: Vec<Value> =
            self.channels.iter().filter(|c| c.guild_id.is_some()).map(|c| self.channel_json(c)).collect();
        let mut guild = json!({
            "id": guild_id, "name": "Chorus Simulated Guild", "icon": null, "description": null, "home_header": null,
            "splash": null, "discovery_splash": null, "features": [], "banner": null, "owner_id": owner,
            "application_id": null, "region": "deprecated", "afk_channel_id": null, "afk_timeout": 300,
            "system_channel_id": null, "system_channel_flags": 0, "widget_enabled": false, "widget_channel_id": null,
            "verification_level": 0, "default_message_notifications": 0, "mfa_level": 0,
            "explicit_content_filter": 0, "max_presences": null, "max_members": 500_000,
            "max_stage_video_channel_users": 50, "max_video_channel_users": 25, "vanity_url_code": null,
            "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "rules_channel_id": null, "safety_alerts_channel_id": null, "public_updates_channel_id": null,
            "premium_progress_bar_enabled": false, "nsfw": false, "nsfw_level": 0, "emojis": [], "stickers": [],
            "incidents_data": null,
        });
        let more = json!({
            "roles": [{
                "id": guild_id, "name": "@everyone", "permissions": "2248473465835073", "position": 0, "color": 0,
                "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null}, "hoist": false,
                "managed": false, "mentionable": false, "icon": null, "unicode_emoji": null, "flags": 0,
            }],
            // The gateway-only fields of GUILD_CREATE.
            "joined_at": timestamp(SystemTime::now()), "large": false, "unavailable": false,
            "member_count": bots.len(), "members": bots, "channels": channels, "threads": [], "presences": [],
            "voice_states": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        });
        if let (Some(out), Value::Object(more)) = (guild.as_object_mut(), more) {
            out.extend(more);
        }
        guild
    }

    /// Stores a message and dispatches MESSAGE_CREATE to every session that sees the channel.
    fn create_message(&mut self, author_id: u64, channel_id: u64, content: &str, extra: &MessageExtra) -> Value {
        let id = self.snowflake();
        let mut message = json!({
            "id": id.to_string(),
            "channel_id": channel_id.to_string(),
            "author": self.user_json(author_id),
            "content": content,
            "timestamp": timestamp(SystemTime::now()),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": extra.mentions.iter().map(|id| self.user_json(*id)).collect::<Vec<_>>(),
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
            "type": if extra.reference.is_some() { 19 } else { 0 },
            "flags": 0,
            "components": [],
        });
        let guild_id = self.channel(channel_id).and_then(|c| c.guild_id);
        if let Some(reference) = extra.reference.as_ref() {
            let mut reference_json = json!({"type": 0, "channel_id": channel_id.to_string(),
                "message_id": reference.get("id").cloned().unwrap_or(Value::Null)});
            if let Some(guild_id) = guild_id {
                reference_json["guild_id"] = json!(guild_id.to_string());
            }
            message["message_reference"] = reference_json;
            message["referenced_message"] = reference.clone();
        }
        if let Some(nonce) = &extra.nonce {
            message["nonce"] = nonce.clone();
        }
        self.messages.push(StoredMessage { id, channel_id, author_id, at: Instant::now(), json: message.clone() });
        let mut dispatched = message.clone();
        if let Some(guild_id) = guild_id {
            dispatched["guild_id"] = json!(guild_id.to_string());
            dispatched["member"] = json!({"roles": [], "joined_at": timestamp(SystemTime::now()), "deaf": false,
                "mute": false, "flags": 0, "pending": false});
        }
        let targets: Vec<usize> =
            (0..self.sessions.len()).filter(|i| self.can_see(self.sessions[*i].bot_id, channel_id)).collect();
        for i in targets {
            self.dispatch(i, "MESSAGE_CREATE", dispatched.clone());
        }
        message
    }

    /// Appends a dispatch to session `index` and sends it if connected.
    fn dispatch(&mut self, index: usize, event: &str, d: Value) {
        let session = &mut self.sessions[index];
        session.seq += 1;
        let payload = json!({"op": 0, "t": event, "s": session.seq, "d": d});
        session.log.push(payload.clone());
        if let Some(conn) = session.conn.and_then(|c| self.conns.get(&c)) {
            let _ = conn.tx.send(Out::Frame(payload));
        }
    }

    fn send(&self, conn: u64, out: Out) {
        if let Some(conn) = self.conns.get(&conn) {
            let _ = conn.tx.send(out);
        }
    }

    fn dm_channel(&mut self, user_id: u64, bot_id: u64) -> u64 {
        let existing = self
            .channels
            .iter()
            .find(|c| c.guild_id.is_none() && c.recipients.contains(&user_id) && c.recipients.contains(&bot_id));
        if let Some(channel) = existing {
            return channel.id;
        }
        let id = self.snowflake();
        self.channels.push(Channel { id, name: String::new(), guild_id: None, recipients: vec![user_id, bot_id] });
        id
    }

    /// Makes an unknown channel id a new text channel of the guild.
    fn ensure_guild_channel(&mut self, channel_id: u64) {
        if self.channel(channel_id).is_none() {
            let guild_id = self.guild_id;
            self.channels.push(Channel {
                id: channel_id,
                name: "channel".into(),
                guild_id: Some(guild_id),
                recipients: vec![],
            });
        }
    }

    /// The known users among `ids` (unparseable and unknown ids are skipped), without repeats.
    fn known_users(&self, ids: &[&str]) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for id in ids.iter().filter_map(|id| id.parse::<u64>().ok()) {
            if self.user(id).is_some() && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// A message of `channel_id` as a reply quotes it (without its own `referenced_message`),
    /// and its author.
    fn referenced(&self, channel_id: u64, message_id: &str) -> Option<(Value, u64)> {
        let found = self.messages.iter().find(|m| m.channel_id == channel_id && m.json["id"] == message_id)?;
        let mut referenced = found.json.clone();
        if let Some(obj) = referenced.as_object_mut() {
            obj.remove("referenced_message");
        }
        Some((referenced, found.author_id))
    }

    /// Counts a request of `token` against the global limit; `Some(retry_after)` when exhausted.
    fn take_global(&mut self, token: &str, now: Instant) -> Option<f64> {
        let (limit, window_len) = self.global_limit?;
        let window = self.global_windows.entry(token.to_owned()).or_insert_with(|| Window::fresh(limit, window_len));
        if now >= window.reset_at {
            *window = Window::fresh(limit, window_len);
        }
        if window.remaining == 0 {
            return Some(secs_until_reset(window, now));
        }
        window.remaining -= 1;
        None
    }
}

impl Window {
    /// A full window starting now.
    fn fresh(limit: u32, len: Duration) -> Self {
        Self { remaining: limit, reset_at: Instant::now() + len, reset_epoch: epoch_secs(SystemTime::now() + len) }
    }
}

/// Seconds until the window resets, rounded up to the millisecond.
fn secs_until_reset(window: &Window, now: Instant) -> f64 {
    (window.reset_at.saturating_duration_since(now).as_secs_f64() * 1000.0).ceil() / 1000.0
}

#[derive(Default)]
struct MessageExtra {
    mentions: Vec<u64>,
    /// The referenced message (full object).
    reference: Option<Value>,
    nonce: Option<Value>,
}

struct SimState {
    world: Mutex<World>,
    script: Mutex<VecDeque<DiscordFault>>,
    /// Faults for one route only, by rate-limit key (see ROUTES).
    route_script: Mutex<HashMap<String, VecDeque<DiscordFault>>>,
    requests: Mutex<Vec<DiscordRecordedRequest>>,
    next_conn: AtomicU64,
    addr: Mutex<Option<SocketAddr>>,
}

/// A running Discord simulator. Clones share the server and state; it lives as long as the runtime.
#[derive(Clone)]
pub struct DiscordSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
}

/// The HTTP side of the shared port: the connections that are not a gateway upgrade.
struct HttpConnections {
    rx: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for HttpConnections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Whether the connection starts with `GET /gateway` followed by ` `, `?` or `/`.
async fn is_gateway(stream: &TcpStream) -> bool {
    const PREFIX: &[u8] = b"GET /gateway";
    let mut buf = [0u8; 13];
    for _ in 0..400 {
        let Ok(n) = stream.peek(&mut buf).await else { return false };
        if n == 0 {
            return false;
        }
        let common = n.min(PREFIX.len());
        if buf[..common] != PREFIX[..common] {
            return false;
        }
        if n > PREFIX.len() {
            return matches!(buf[PREFIX.len()], b' ' | b'?' | b'/');
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

impl DiscordSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves REST and the gateway on `addr` (one port: `GET /gateway` upgrades go to the gateway).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let state = Arc::new(SimState {
            world: Mutex::new(World::new()),
            script: Mutex::new(VecDeque::new()),
            route_script: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            addr: Mutex::new(None),
        });
        {
            let mut world = lock(&state.world);
            for route in ROUTES {
                world.limits.insert(route.to_owned(), DEFAULT_LIMIT);
            }
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        *lock(&state.addr) = Some(addr);
        let (tx, rx) = mpsc::unbounded_channel();
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (state, tx) = (accept_state.clone(), tx.clone());
                tokio::spawn(async move {
                    if is_gateway(&stream).await {
                        gateway(state, stream).await;
                    } else {
                        let _ = tx.send((stream, peer));
                    }
                });
            }
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(HttpConnections { rx, addr }, app).await;
        });
        Ok(Self { addr, state })
    }

    /// `http://ADDR`, for serenity's `HttpBuilder::proxy`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR/gateway`, as `GET /api/v10/gateway[/bot]` reports it.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}/gateway", self.addr)
    }

    /// The simulated guild every bot is in.
    pub fn guild_id(&self) -> String {
        lock(&self.state.world).guild_id.to_string()
    }

    /// The guild's first text channel (`#general`).
    pub fn text_channel_id(&self) -> String {
        let world = lock(&self.state.world);
        world.channels.iter().find(|c| c.guild_id.is_some()).map(|c| c.id.to_string()).unwrap_or_default()
    }

    /// Adds a text channel to the guild (sent in later GUILD_CREATEs); returns its id.
    pub fn add_text_channel(&self, name: &str) -> String {
        let mut world = lock(&self.state.world);
        let id = world.snowflake();
        let guild_id = world.guild_id;
        world.channels.push(Channel { id, name: name.to_owned(), guild_id: Some(guild_id), recipients: vec![] });
        id.to_string()
    }

    /// Adds a bot (member of the guild) whose token is `token` (without `Bot `); returns its user id.
    pub fn add_bot(&self, token: &str, username: &str) -> String {
        let mut world = lock(&self.state.world);
        let id = world.snowflake();
        world.users.push(SimUser { id, username: username.to_owned(), bot: true });
        world.tokens.insert(token.to_owned(), id);
        id.to_string()
    }

    /// Adds a human user; returns their user id.
    pub fn add_user(&self, username: &str) -> String {
        let mut world = lock(&self.state.world);
        let id = world.snowflake();
        world.users.push(SimUser { id, username: username.to_owned(), bot: false });
        id.to_string()
    }

    /// A user posts in a guild channel (an unknown channel id becomes a new guild text channel);
    /// with `mentions_bot` every bot is in `mentions` (the content is left as given). Dispatches
    /// MESSAGE_CREATE (with `guild_id`) to every bot session. Returns the message id.
    pub fn user_message(&self, from_user_id: &str, channel_id: &str, content: &str, mentions_bot: bool) -> String {
        let mut world = lock(&self.state.world);
        let from = from_user_id.parse().unwrap_or_default();
        let channel = channel_id.parse().unwrap_or_default();
        world.ensure_guild_channel(channel);
        let mentions = if mentions_bot { world.users.iter().filter(|u| u.bot).map(|u| u.id).collect() } else { vec![] };
        let message = world.create_message(from, channel, content, &MessageExtra { mentions, ..Default::default() });
        message["id"].as_str().unwrap_or_default().to_owned()
    }

    /// A user writes to a bot in their DM channel (type 1, created if needed); MESSAGE_CREATE is
    /// dispatched without `guild_id` to that bot. Returns (channel id, message id).
    pub fn dm(&self, from_user_id: &str, bot_user_id: &str, content: &str) -> (String, String) {
        let mut world = lock(&self.state.world);
        let from = from_user_id.parse().unwrap_or_default();
        let bot = bot_user_id.parse().unwrap_or_default();
        let channel = world.dm_channel(from, bot);
        let message = world.create_message(from, channel, content, &MessageExtra::default());
        (channel.to_string(), message["id"].as_str().unwrap_or_default().to_owned())
    }

    /// A user posts in a guild channel (an unknown channel id becomes a new guild text channel)
    /// mentioning exactly `bot_user_ids` (unknown ids are skipped; the content is left as given).
    /// Dispatches MESSAGE_CREATE to every bot session. Returns the message id.
    pub fn mention(&self, from_user_id: &str, channel_id: &str, content: &str, bot_user_ids: &[&str]) -> String {
        let mut world = lock(&self.state.world);
        let from = from_user_id.parse().unwrap_or_default();
        let channel = channel_id.parse().unwrap_or_default();
        world.ensure_guild_channel(channel);
        let mentions = world.known_users(bot_user_ids);
        let message = world.create_message(from, channel, content, &MessageExtra { mentions, ..Default::default() });
        message["id"].as_str().unwrap_or_default().to_owned()
    }

    /// A user replies to message `referenced_message_id` of `channel_id` (a guild or DM channel):
    /// type 19 with `message_reference` and `referenced_message`, and the referenced message's
    /// author in `mentions` (a pinging reply; not when replying to oneself). Dispatches
    /// MESSAGE_CREATE to every session that sees the channel. Returns the message id, or an empty
    /// string (and creates nothing) when the referenced message is not in that channel.
    pub fn user_reply(
        &self,
        from_user_id: &str,
        channel_id: &str,
        referenced_message_id: &str,
        content: &str,
    ) -> String {
        let mut world = lock(&self.state.world);
        let from = from_user_id.parse().unwrap_or_default();
        let channel = channel_id.parse().unwrap_or_default();
        let Some((referenced, author)) = world.referenced(channel, referenced_message_id) else {
            return String::new();
        };
        let mentions = if author == from { vec![] } else { vec![author] };
        let extra = MessageExtra { mentions, reference: Some(referenced), nonce: None };
        let message = world.create_message(from, channel, content, &extra);
        message["id"].as_str().unwrap_or_default().to_owned()
    }

    /// A bot posts in a guild channel as if over REST (an unknown channel id becomes a new guild
    /// text channel), mentioning exactly `mention_bot_ids` (unknown ids are skipped). Dispatches
    /// MESSAGE_CREATE (`author.bot: true`) to every bot session. Returns the message id, or an
    /// empty string (and creates nothing) when `bot_user_id` is not a bot.
    pub fn bot_message(&self, bot_user_id: &str, channel_id: &str, content: &str, mention_bot_ids: &[&str]) -> String {
        let mut world = lock(&self.state.world);
        let Some(bot) = bot_user_id.parse().ok().filter(|id| world.is_bot(*id)) else {
            return String::new();
        };
        let channel = channel_id.parse().unwrap_or_default();
        world.ensure_guild_channel(channel);
        let mentions = world.known_users(mention_bot_ids);
        let message = world.create_message(bot, channel, content, &MessageExtra { mentions, ..Default::default() });
        message["id"].as_str().unwrap_or_default().to_owned()
    }

    /// `count` more people react to message `message_id` of `channel_id` with the unicode `emoji`
    /// (the message's `reactions` entry for it is created or grows). Returns `false` when the
    /// channel has no such message.
    pub fn add_reaction(&self, channel_id: &str, message_id: &str, emoji: &str, count: u32) -> bool {
        let mut world = lock(&self.state.world);
        let found = world
            .messages
            .iter_mut()
            .find(|m| m.channel_id.to_string() == channel_id && m.id.to_string() == message_id);
        let Some(message) = found else { return false };
        let Some(object) = message.json.as_object_mut() else { return false };
        let reactions = object.entry("reactions").or_insert_with(|| json!([]));
        let Some(reactions) = reactions.as_array_mut() else { return false };
        let existing = reactions.iter_mut().find(|r| r["emoji"]["name"] == emoji);
        match existing {
            Some(reaction) => {
                let total = reaction["count"].as_u64().unwrap_or_default() + u64::from(count);
                reaction["count"] = json!(total);
                reaction["count_details"]["normal"] = json!(total);
            }
            None => reactions.push(json!({
                "emoji": {"id": null, "name": emoji},
                "count": count,
                "count_details": {"burst": 0, "normal": count},
                "burst_colors": [],
                "me_burst": false,
                "me": false,
            })),
        }
        true
    }

    /// The id of the user or bot called `username`.
    pub fn user_id(&self, username: &str) -> Option<String> {
        lock(&self.state.world).users.iter().find(|u| u.username == username).map(|u| u.id.to_string())
    }

    /// The messages bots posted in `channel_id` (over REST or with [`DiscordSim::bot_message`]),
    /// oldest first (as returned to them).
    pub fn messages_in(&self, channel_id: &str) -> Vec<Value> {
        let world = lock(&self.state.world);
        world
            .messages
            .iter()
            .filter(|m| m.channel_id.to_string() == channel_id && world.is_bot(m.author_id))
            .map(|m| m.json.clone())
            .collect()
    }

    /// Every message of `channel_id`, users' and bots', oldest first.
    pub fn all_messages_in(&self, channel_id: &str) -> Vec<Value> {
        let world = lock(&self.state.world);
        world.messages.iter().filter(|m| m.channel_id.to_string() == channel_id).map(|m| m.json.clone()).collect()
    }

    /// Every accepted `POST /channels/{id}/typing`: (channel id, when).
    pub fn typing_events(&self) -> Vec<(String, Instant)> {
        lock(&self.state.world).typing.clone()
    }

    /// Sets the limit of a route per `window`, for every token and channel, starting fresh
    /// windows. The route is its template without `/api/v10`: `/gateway`, `/gateway/bot`,
    /// `/users/@me`, `/users/@me/channels`, `/channels/{channel_id}/messages` (sending),
    /// `GET /channels/{channel_id}/messages` (reading, a bucket of its own),
    /// `GET /channels/{channel_id}/messages/{message_id}` (reading one) or
    /// `/channels/{channel_id}/typing`. Each channel has its own window, as Discord limits per
    /// major parameter.
    pub fn set_route_limit(&self, route_template: &str, limit: u32, window: Duration) {
        let mut world = lock(&self.state.world);
        let template = match route_template.split_once(' ') {
            Some((method, path)) => format!("{method} {}", path.trim_start_matches("/api/v10")),
            None => route_template.trim_start_matches("/api/v10").to_owned(),
        };
        world.windows.retain(|(_, t, _), _| *t != template);
        world.limits.insert(template, (limit, window));
    }

    /// Limits every bot token to `limit` REST requests per `window` across all routes (default: no
    /// such limit), starting fresh windows. Beyond it: a 429 with `"global": true`, `Retry-After`,
    /// `X-RateLimit-Global: true` and `X-RateLimit-Scope: global`.
    pub fn set_global_limit(&self, limit: u32, window: Duration) {
        let mut world = lock(&self.state.world);
        world.global_windows.clear();
        world.global_limit = Some((limit, window));
    }

    /// The gateway intents bots may identify with (`None`, the default: any). An op 2 Identify
    /// asking for a bit outside `mask` is closed with 4014 "Disallowed intent(s).".
    pub fn set_allowed_intents(&self, mask: Option<u64>) {
        lock(&self.state.world).allowed_intents = mask;
    }

    /// The `heartbeat_interval` sent in later op 10 Hellos.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        lock(&self.state.world).heartbeat_interval_ms = interval.as_millis() as u64;
    }

    /// Queues faults; every REST request pops the next one.
    pub fn script(&self, faults: impl IntoIterator<Item = DiscordFault>) {
        lock(&self.state.script).extend(faults);
    }

    /// Queues faults for one route (its rate-limit key, e.g. `/channels/{channel_id}/messages`
    /// for sending messages): only requests to that route pop them, after the general script.
    pub fn script_on(&self, route_template: &str, faults: impl IntoIterator<Item = DiscordFault>) {
        let template = route_template.trim_start_matches("/api/v10").to_owned();
        lock(&self.state.route_script).entry(template).or_default().extend(faults);
    }

    /// All REST requests so far, oldest first.
    pub fn requests(&self) -> Vec<DiscordRecordedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Closes every gateway socket abruptly (no close frame); sessions stay resumable.
    pub fn drop_connections(&self) {
        let mut world = lock(&self.state.world);
        for (_, conn) in world.conns.drain() {
            let _ = conn.tx.send(Out::Drop);
        }
        for session in &mut world.sessions {
            session.conn = None;
        }
    }

    /// Sends op 9 Invalid Session (`d: false`) on every connected session and forgets all
    /// sessions: the clients must identify again.
    pub fn invalidate_sessions(&self) {
        let mut world = lock(&self.state.world);
        let sessions = std::mem::take(&mut world.sessions);
        for conn in sessions.iter().filter_map(|s| s.conn) {
            world.send(conn, Out::Frame(frame(9, json!(false))));
        }
    }

    /// Sessions with a connected socket.
    pub fn connected_sessions(&self) -> usize {
        lock(&self.state.world).sessions.iter().filter(|s| s.conn.is_some()).count()
    }

    /// Successful and failed op 2 Identify payloads received.
    pub fn identify_count(&self) -> usize {
        lock(&self.state.world).identify_count
    }

    /// The `intents` of every op 2 Identify received (0 when absent or not an integer), in order.
    pub fn identify_intents(&self) -> Vec<u64> {
        lock(&self.state.world).identify_intents.clone()
    }

    /// op 6 Resume payloads received.
    pub fn resume_count(&self) -> usize {
        lock(&self.state.world).resume_count
    }
}

async fn gateway(state: Arc<SimState>, stream: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    {
        let mut world = lock(&state.world);
        let hello = frame(10, json!({"heartbeat_interval": world.heartbeat_interval_ms, "_trace": ["chorus-sim"]}));
        let _ = tx.send(Out::Frame(hello));
        world.conns.insert(conn_id, Conn { tx });
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Frame(value)) => {
                    if sink.send(Message::Text(value.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    let close = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
                Some(Out::Drop) | None => break,
            },
            incoming = source.next() => match incoming {
                Some(Ok(Message::Text(text))) => on_payload(&state, conn_id, &text),
                Some(Ok(Message::Binary(bytes))) => on_payload(&state, conn_id, &String::from_utf8_lossy(&bytes)),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let mut world = lock(&state.world);
    world.conns.remove(&conn_id);
    for session in &mut world.sessions {
        if session.conn == Some(conn_id) {
            session.conn = None;
        }
    }
}

fn strip_bot(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}

fn on_payload(state: &SimState, conn: u64, text: &str) {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        lock(&state.world).send(conn, Out::Close(4002, "Error while decoding payload."));
        return;
    };
    let mut world = lock(&state.world);
    let d = &payload["d"];
    match payload["op"].as_u64() {
        Some(1) => world.send(conn, Out::Frame(frame(11, Value::Null))),
        Some(2) => {
            world.identify_count += 1;
            let intents = d["intents"].as_u64().unwrap_or_default();
            world.identify_intents.push(intents);
            let token = strip_bot(d["token"].as_str().unwrap_or_default());
            let Some(bot_id) = world.tokens.get(token).copied() else {
                world.send(conn, Out::Close(4004, "Authentication failed."));
                return;
            };
            if world.sessions.iter().any(|s| s.conn == Some(conn)) {
                world.send(conn, Out::Close(4005, "Already authenticated."));
                return;
            }
            if world.allowed_intents.is_some_and(|mask| intents & !mask != 0) {
                world.send(conn, Out::Close(4014, "Disallowed intent(s)."));
                return;
            }
            let session_id = format!("{:032x}", rand::random::<u128>());
            let addr = lock(&state.addr).map(|a| a.to_string()).unwrap_or_default();
            let mut user = world.user_json(bot_id);
            user["verified"] = json!(true);
            user["mfa_enabled"] = json!(false);
            let mut ready = json!({
                "v": 10,
                "user": user,
                "guilds": [{"id": world.guild_id.to_string(), "unavailable": true}],
                "session_id": session_id,
                "resume_gateway_url": format!("ws://{addr}/gateway"),
                "application": {"id": bot_id.to_string(), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "user_settings": {},
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "_trace": ["chorus-sim"],
            });
            if let Some(shard) = d.get("shard").filter(|s| s.is_array()) {
                ready["shard"] = shard.clone();
            }
            world.sessions.push(Session { id: session_id, bot_id, seq: 0, log: Vec::new(), conn: Some(conn) });
            let index = world.sessions.len() - 1;
            world.dispatch(index, "READY", ready);
            let guild = world.guild_json();
            world.dispatch(index, "GUILD_CREATE", guild);
        }
        Some(6) => {
            world.resume_count += 1;
            let token = strip_bot(d["token"].as_str().unwrap_or_default());
            let bot_id = world.tokens.get(token).copied();
            let session_id = d["session_id"].as_str().unwrap_or_default();
            let seq = d["seq"].as_u64().unwrap_or(0);
            let Some(index) = world.sessions.iter().position(|s| s.id == session_id && Some(s.bot_id) == bot_id) else {
                world.send(conn, Out::Frame(frame(9, json!(false))));
                return;
            };
            if let Some(old) = world.sessions[index].conn.filter(|c| *c != conn) {
                world.send(old, Out::Drop);
            }
            world.sessions[index].conn = Some(conn);
            let missed: Vec<Value> = world.sessions[index]
                .log
                .iter()
                .filter(|p| p["s"].as_u64().is_some_and(|s| s > seq))
                .cloned()
                .collect();
            for payload in missed {
                world.send(conn, Out::Frame(payload));
            }
            world.dispatch(index, "RESUMED", json!({"_trace": ["chorus-sim"]}));
        }
        // Presence and voice state updates, guild member requests: accepted and ignored.
        Some(3 | 4 | 8) => {}
        _ => world.send(conn, Out::Close(4001, "Unknown opcode.")),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Body::from(body.to_string()))
        .into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    json_response(status, &json!({"message": message, "code": code}))
}

fn status_error(status: StatusCode) -> Response {
    let message = format!("{}: {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
    error(status, 0, &message)
}

fn invalid_form_body(field: &str, code: &str, message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"message": "Invalid Form Body", "code": 50035,
            "errors": {field: {"_errors": [{"code": code, "message": message}]}}}),
    )
}

fn rate_limited(retry_after: f64, global: bool) -> Response {
    let body =
        json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": global, "code": 0});
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
    let headers = response.headers_mut();
    insert(headers, "retry-after", &format!("{retry_after}"));
    insert(headers, "x-ratelimit-scope", if global { "global" } else { "user" });
    if global {
        insert(headers, "x-ratelimit-global", "true");
    }
    response
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// A stable bucket id for a route template (FNV-1a, hex).
fn bucket(template: &str) -> String {
    format!("{:016x}", crate::hash::fnv1a(template.as_bytes()))
}

/// The rate-limit headers of a window.
fn limit_headers(headers: &mut HeaderMap, template: &str, limit: u32, window: &Window) {
    let reset_after = window.reset_at.saturating_duration_since(Instant::now()).as_secs_f64();
    insert(headers, "x-ratelimit-limit", &limit.to_string());
    insert(headers, "x-ratelimit-remaining", &window.remaining.to_string());
    insert(headers, "x-ratelimit-reset", &format!("{:.3}", window.reset_epoch));
    insert(headers, "x-ratelimit-reset-after", &format!("{reset_after:.3}"));
    insert(headers, "x-ratelimit-bucket", &bucket(template));
}

async fn handle(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded_body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let names = super::recorded_headers(&headers);
    lock(&state.requests).push(DiscordRecordedRequest {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: names,
        body: recorded_body.clone(),
    });

    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The rate-limit key (see ROUTES) and the major parameter.
    let (template, channel) = match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "v10", "gateway"]) => ("/gateway", None),
        (&Method::GET, ["api", "v10", "gateway", "bot"]) => ("/gateway/bot", None),
        (&Method::GET, ["api", "v10", "users", "@me"]) => ("/users/@me", None),
        (&Method::POST, ["api", "v10", "users", "@me", "channels"]) => ("/users/@me/channels", None),
        (&Method::POST, ["api", "v10", "channels", id, "messages"]) => ("/channels/{channel_id}/messages", Some(*id)),
        (&Method::GET, ["api", "v10", "channels", id, "messages"]) => {
            ("GET /channels/{channel_id}/messages", Some(*id))
        }
        (&Method::GET, ["api", "v10", "channels", id, "messages", _]) => {
            ("GET /channels/{channel_id}/messages/{message_id}", Some(*id))
        }
        (&Method::POST, ["api", "v10", "channels", id, "typing"]) => ("/channels/{channel_id}/typing", Some(*id)),
        _ => return error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    };
    let fault = lock(&state.script).pop_front().or_else(|| {
        let mut scripted = lock(&state.route_script);
        scripted.get_mut(template).and_then(VecDeque::pop_front)
    });
    if let Some(DiscordFault::Slow(delay)) = fault {
        tokio::time::sleep(delay).await;
    }

    let mut world = lock(&state.world);
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let token = authorization.strip_prefix("Bot ").unwrap_or_default().to_owned();
    let bot_id = world.tokens.get(&token).copied();
    if bot_id.is_none() && template != "/gateway" {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }

    let now = Instant::now();
    // The global limit counts bot tokens only; a scripted status or 429 still wins.
    let global = if bot_id.is_some() { world.take_global(&token, now) } else { None };
    if let (Some(retry_after), None | Some(DiscordFault::Slow(_))) = (global, &fault) {
        return rate_limited(retry_after, true);
    }

    let (limit, window_len) = world.limits.get(template).copied().unwrap_or(DEFAULT_LIMIT);
    let key = (token, template.to_owned(), channel.unwrap_or_default().to_owned());
    let window = world.windows.entry(key).or_insert_with(|| Window::fresh(limit, window_len));
    if now >= window.reset_at {
        *window = Window::fresh(limit, window_len);
    }
    let exhausted = window.remaining == 0;
    window.remaining = window.remaining.saturating_sub(1);
    let mut rate_headers = HeaderMap::new();
    limit_headers(&mut rate_headers, template, limit, window);
    let retry_after = secs_until_reset(window, now);

    let mut response = match fault {
        Some(DiscordFault::RateLimited { retry_after_secs, global }) => {
            let mut response = rate_limited(retry_after_secs, global);
            if global {
                rate_headers.clear();
            } else {
                insert(&mut rate_headers, "x-ratelimit-remaining", "0");
                insert(&mut rate_headers, "x-ratelimit-reset-after", &format!("{retry_after_secs:.3}"));
            }
            response.headers_mut().extend(rate_headers);
            return response;
        }
        Some(DiscordFault::Status { status }) => {
            status_error(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        _ if exhausted => rate_limited(retry_after, false),
        _ => {
            let addr = lock(&state.addr).map(|a| a.to_string()).unwrap_or_default();
            let message = segments.get(5).copied();
            let request = RouteRequest {
                bot_id: bot_id.unwrap_or_default(),
                channel,
                message,
                query: uri.query(),
                body: &recorded_body,
            };
            route(&mut world, template, &request, &addr)
        }
    };
    response.headers_mut().extend(rate_headers);
    response
}

/// What a routed request carries besides its route.
struct RouteRequest<'a> {
    bot_id: u64,
    /// The `{channel_id}` segment, if the route has one.
    channel: Option<&'a str>,
    /// The `{message_id}` segment, if the route has one.
    message: Option<&'a str>,
    query: Option<&'a str>,
    body: &'a Value,
}

fn route(world: &mut World, template: &str, request: &RouteRequest, addr: &str) -> Response {
    let RouteRequest { bot_id, channel, message, query, body } = *request;
    let gateway_url = format!("ws://{addr}/gateway");
    match template {
        "/gateway" => json_response(StatusCode::OK, &json!({"url": gateway_url})),
        "/gateway/bot" => json_response(
            StatusCode::OK,
            &json!({"url": gateway_url, "shards": 1, "session_start_limit":
                {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
        ),
        "/users/@me" => {
            let mut user = world.user_json(bot_id);
            user["mfa_enabled"] = json!(false);
            user["locale"] = json!("en-US");
            user["verified"] = json!(true);
            json_response(StatusCode::OK, &user)
        }
        "/users/@me/channels" => {
            let recipient = body["recipient_id"].as_str().and_then(|id| id.parse::<u64>().ok());
            let Some(recipient) = recipient.filter(|id| world.user(*id).is_some()) else {
                return invalid_form_body("recipient_id", "NUMBER_TYPE_COERCE", "Value is not snowflake.");
            };
            let channel = world.dm_channel(recipient, bot_id);
            let json = world.channel(channel).map(|c| world.channel_json(c)).unwrap_or_default();
            json_response(StatusCode::OK, &json)
        }
        _ => {
            let Some(channel) = channel.and_then(|c| c.parse::<u64>().ok()).filter(|c| world.can_see(bot_id, *c))
            else {
                return error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            };
            if template.ends_with("/typing") {
                world.typing.push((channel.to_string(), Instant::now()));
                return StatusCode::NO_CONTENT.into_response();
            }
            if template.ends_with("/{message_id}") {
                return get_message(world, channel, message.unwrap_or_default());
            }
            if template.starts_with("GET ") {
                return list_messages(world, channel, query.unwrap_or_default());
            }
            create_message(world, bot_id, channel, body)
        }
    }
}

/// `GET /channels/{channel_id}/messages/{message_id}`: the message as stored, or 404 10008.
fn get_message(world: &World, channel: u64, message_id: &str) -> Response {
    let found = world.messages.iter().find(|m| m.channel_id == channel && m.id.to_string() == message_id);
    match found {
        Some(message) => json_response(StatusCode::OK, &message.json),
        None => error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
    }
}

/// `GET /channels/{channel_id}/messages`: `limit` (1..=100, default 50) messages, newest first.
/// With `before` / `after` only messages with a smaller / greater id; with `after` the oldest
/// `limit` of them (the page right after it), else the newest.
fn list_messages(world: &World, channel: u64, query: &str) -> Response {
    let mut limit = DEFAULT_PAGE;
    let (mut before, mut after) = (None, None);
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        match name {
            "limit" => {
                let Ok(n) = value.parse::<i64>() else {
                    return invalid_form_body("limit", "NUMBER_TYPE_COERCE", &format!("Value \"{value}\" is not int."));
                };
                if n < 1 {
                    return invalid_form_body(
                        "limit",
                        "NUMBER_TYPE_MIN",
                        "int value should be greater than or equal to 1.",
                    );
                }
                if n > MAX_PAGE as i64 {
                    return invalid_form_body(
                        "limit",
                        "NUMBER_TYPE_MAX",
                        "int value should be less than or equal to 100.",
                    );
                }
                limit = n as u64;
            }
            "before" | "after" => {
                let Ok(id) = value.parse::<u64>() else {
                    return invalid_form_body(
                        name,
                        "NUMBER_TYPE_COERCE",
                        &format!("Value \"{value}\" is not snowflake."),
                    );
                };
                if name == "before" {
                    before = Some(id);
                } else {
                    after = Some(id);
                }
            }
            _ => {}
        }
    }
    let in_range: Vec<&StoredMessage> = world
        .messages
        .iter()
        .filter(|m| m.channel_id == channel)
        .filter(|m| before.is_none_or(|b| m.id < b) && after.is_none_or(|a| m.id > a))
        .collect();
    let take = limit as usize;
    let page: Vec<&StoredMessage> = if after.is_some() {
        in_range.into_iter().take(take).collect()
    } else {
        let skip = in_range.len().saturating_sub(take);
        in_range.into_iter().skip(skip).collect()
    };
    let newest_first: Vec<Value> = page.iter().rev().map(|m| m.json.clone()).collect();
    json_response(StatusCode::OK, &Value::Array(newest_first))
}

fn create_message(world: &mut World, bot_id: u64, channel: u64, body: &Value) -> Response {
    let content = body["content"].as_str().unwrap_or_default();
    if content.chars().count() > MAX_CONTENT_CHARS {
        return invalid_form_body("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.");
    }
    if content.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, 50006, "Cannot send an empty message");
    }
    let nonce = body.get("nonce").filter(|n| !n.is_null()).cloned();
    if nonce.as_ref().and_then(Value::as_str).is_some_and(|n| n.chars().count() > 25) {
        return invalid_form_body("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.");
    }
    if let Some(nonce) = nonce.as_ref().filter(|_| body["enforce_nonce"] == json!(true)) {
        let now = Instant::now();
        let earlier = world.messages.iter().find(|m| {
            m.channel_id == channel
                && m.author_id == bot_id
                && m.json.get("nonce") == Some(nonce)
                && now.saturating_duration_since(m.at) < NONCE_WINDOW
        });
        if let Some(earlier) = earlier {
            return json_response(StatusCode::OK, &earlier.json);
        }
    }
    let mut extra = MessageExtra { nonce, ..Default::default() };
    if let Some(reference) = body.get("message_reference").filter(|r| !r.is_null()) {
        let id = reference["message_id"].as_str().unwrap_or_default();
        match world.referenced(channel, id) {
            Some((referenced, author)) => {
                if author != bot_id {
                    extra.mentions.push(author);
                }
                extra.reference = Some(referenced);
            }
            None if reference["fail_if_not_exists"] == json!(false) => {}
            None => {
                return invalid_form_body("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message");
            }
        }
    }
    let message = world.create_message(bot_id, channel, content, &extra);
    json_response(StatusCode::OK, &message)
}
