//! The built-in local platform: a small social timeline served by Chorus itself and persisted in
//! the database. Anyone can post through the admin server's `/local/*` routes; `@handle` in a
//! post's text mentions that persona. Agents read their mentions and post through [`Platform`].
//! Engagement is the number of posts replying to a post (the timeline has no likes or reposts).
//!
//! A post mentions the handles it names with `@`, but never its own author's: nobody is notified
//! of their own post.
//!
//! An agent connected to its account ([`Platform::connect`]) is woken the moment a post mentions
//! it ([`LiveEvent::Wake`]) and reads its mentions at once, instead of waiting for its next poll;
//! the poll timer keeps running as the backstop (and to catch up after a restart).
//!
//! Posts made at the same time are stored together: while one group is written, the posts that
//! arrive wait, then go in the next group, in one transaction (up to [`MAX_GROUP`] posts; on
//! SQLite one call). The local platform shares the service's one writing connection, so under
//! load its posts (mentions from outside, the agents' replies) take it once a group instead of
//! once a post. A post whose caller gave up waiting may still be stored by the group it joined,
//! as a request to a remote platform may land after its caller timed out.
//!
//! Fault injection (for game days and tests): an account can be made unavailable or have its
//! credentials "revoked", which exercises the same error paths as a real platform.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Engagement, LiveConnection, LiveEvent, LiveSink, Mention, MentionBatch, Outgoing, Platform, PlatformError,
};
use crate::config::PlatformKind;
use crate::metrics as m;
use crate::store::{Db, LocalPost, NewLocalPost, StoreResult};

/// Longest post the local platform accepts, in characters.
pub const MAX_POST_CHARS: usize = 2000;
/// Mentions read per poll.
const MENTIONS_PER_POLL: i64 = 50;
/// Most posts stored in one group; a group this size is one call on SQLite.
const MAX_GROUP: usize = crate::store::LOCAL_POSTS_IN_ONE_CALL;
/// Posts kept for observers that fall behind ([`LocalPlatform::subscribe`]; a lagging receiver
/// is told how many it lost). The buffer is allocated whole, so only once somebody subscribes.
const POSTED_CAPACITY: usize = 65_536;

/// A fault injected into one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Every call fails as if the platform were down.
    Unavailable,
    /// Every call fails with an authentication error.
    AuthRevoked,
    /// Reading works; publishing fails as if the platform were down.
    PublishUnavailable,
}

/// Posts by source, counted for each post: registered once per source ([`m::Kept`]).
static POSTS: m::Kept<metrics::Counter, 1> = m::Kept::new(m::LOCAL_POSTS, ["source"]);

#[derive(Clone)]
pub struct LocalPlatform {
    db: Db,
    faults: Arc<RwLock<HashMap<String, Fault>>>,
    /// The connected agents' wake-ups, by account, each with its registration number (an old
    /// incarnation closing late must not remove its successor's).
    wakers: Arc<RwLock<HashMap<String, (u64, LiveSink)>>>,
    /// Every stored post, for observers (the benchmark); nothing is kept when nobody listens, and
    /// the channel exists only from the first subscription (its buffer is 5 MB).
    posted: Arc<OnceLock<tokio::sync::broadcast::Sender<Posted>>>,
    group: Arc<PostGroup>,
}

/// Where the outcome of a post stored in a group goes.
type Answer = tokio::sync::oneshot::Sender<StoreResult<Option<LocalPost>>>;

/// Posts waiting to be stored together, each with where its outcome goes.
#[derive(Default)]
struct PostGroup {
    waiting: Mutex<Vec<(NewLocalPost, Answer)>>,
    /// Held by the caller storing a group, until every post of it has its answer.
    storing: tokio::sync::Mutex<()>,
}

/// A post just stored, with when.
#[derive(Debug, Clone)]
pub struct Posted {
    pub id: i64,
    pub author: String,
    pub reply_to: Option<i64>,
    pub at: Instant,
}

impl LocalPlatform {
    pub fn new(db: Db) -> Self {
        Self { db, faults: Arc::default(), wakers: Arc::default(), posted: Arc::default(), group: Arc::default() }
    }

    /// Every post stored from now on (a receiver that lags loses the oldest, and is told).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Posted> {
        self.posted.get_or_init(|| tokio::sync::broadcast::channel(POSTED_CAPACITY).0).subscribe()
    }

    /// Sets (or with `None` clears) the fault of `account`.
    pub fn set_fault(&self, account: &str, fault: Option<Fault>) {
        let mut faults = self.faults.write().expect("faults lock");
        match fault {
            Some(fault) => faults.insert(account.to_owned(), fault),
            None => faults.remove(account),
        };
    }

    fn check(&self, account: &str, publishing: bool) -> Result<(), PlatformError> {
        match self.faults.read().expect("faults lock").get(account) {
            None => Ok(()),
            Some(Fault::Unavailable) => Err(PlatformError::Transient("local platform: injected outage".into())),
            Some(Fault::PublishUnavailable) if publishing => {
                Err(PlatformError::Transient("local platform: injected publish outage".into()))
            }
            Some(Fault::PublishUnavailable) => Ok(()),
            Some(Fault::AuthRevoked) => Err(PlatformError::Auth("local platform: injected revoked credentials".into())),
        }
    }

    /// Posts to the timeline on behalf of anyone; `source` labels the metric (persona, crowd, api).
    pub async fn post(
        &self,
        author: &str,
        text: &str,
        reply_to: Option<i64>,
        client_key: Option<&str>,
        source: &'static str,
    ) -> Result<LocalPost, PlatformError> {
        validate_post(author, text)?;
        // Nobody is notified of their own post (a reply quoting the mention it answers).
        let own = author.to_ascii_lowercase();
        let mentions: Vec<String> = extract_mentions(text).into_iter().filter(|handle| *handle != own).collect();
        let new = NewLocalPost {
            author: author.to_owned(),
            text: text.to_owned(),
            reply_to,
            client_key: client_key.map(str::to_owned),
            mentions: mentions.clone(),
        };
        let post = self
            .store(new)
            .await?
            .ok_or_else(|| PlatformError::Permanent(format!("reply_to: no post {}", reply_to.unwrap_or_default())))?;
        POSTS.get([source]).increment(1);
        if !mentions.is_empty() {
            let wakers = crate::sync::read(&self.wakers);
            for handle in &mentions {
                if let Some((_, wake)) = wakers.get(handle) {
                    wake(LiveEvent::Wake);
                }
            }
        }
        Ok(post)
    }

    /// Stores `post` with the posts waiting beside it: the caller that takes the group lock first
    /// stores up to [`MAX_GROUP`] waiting posts, its own among them or not, and answers each; the
    /// others find their answer when the lock comes to them, or store the next group.
    async fn store(&self, post: NewLocalPost) -> Result<Option<LocalPost>, PlatformError> {
        use tokio::sync::oneshot::error::TryRecvError;
        let (done, mut answer) = tokio::sync::oneshot::channel();
        crate::sync::lock(&self.group.waiting).push((post, done));
        loop {
            let _storing = self.group.storing.lock().await;
            match answer.try_recv() {
                Ok(stored) => return stored.map_err(|err| PlatformError::Transient(err.to_string())),
                Err(TryRecvError::Closed) => {
                    return Err(PlatformError::Transient(
                        "local platform: the group this post was stored with was cancelled; it may have been stored"
                            .into(),
                    ));
                }
                Err(TryRecvError::Empty) => {}
            }
            let group: Vec<_> = {
                let mut waiting = crate::sync::lock(&self.group.waiting);
                let count = waiting.len().min(MAX_GROUP);
                waiting.drain(..count).collect()
            };
            let (posts, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let outcomes = self.db.local_posts(&posts).await;
            self.tell_observers(&outcomes);
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                // A caller that gave up waiting does not need its answer.
                let _ = answer.send(outcome);
            }
        }
    }

    /// Tells the observers of the posts a group stored, in order, as soon as it committed and before
    /// any poster hears back: the next group (a reply to one of these, say) waits for the group
    /// lock this caller holds, so observers see the posts in the order they were stored. Told
    /// from each poster's task instead, a mention stored in another poster's group could be seen
    /// after its reply (the bench's observer counted such a reply as missing).
    fn tell_observers(&self, outcomes: &[StoreResult<Option<LocalPost>>]) {
        let Some(observers) = self.posted.get().filter(|observers| observers.receiver_count() > 0) else { return };
        let at = Instant::now();
        for post in outcomes.iter().filter_map(|outcome| outcome.as_ref().ok().and_then(Option::as_ref)) {
            let _ = observers.send(Posted { id: post.id, author: post.author.clone(), reply_to: post.reply_to, at });
        }
    }

    /// The root of the thread `post` belongs to (walks up at most 64 replies).
    async fn conversation_of(&self, post: &LocalPost) -> Result<i64, PlatformError> {
        let mut current = post.clone();
        for _ in 0..64 {
            let Some(parent) = current.reply_to else { break };
            match self.db.local_post_by_id(parent).await.map_err(|err| PlatformError::Transient(err.to_string()))? {
                Some(parent) => current = parent,
                None => break,
            }
        }
        Ok(current.id)
    }
}

fn validate_post(author: &str, text: &str) -> Result<(), PlatformError> {
    if author.trim().is_empty() || author.chars().count() > 64 {
        return Err(PlatformError::Permanent("author: expected 1 to 64 characters".into()));
    }
    let length = text.chars().count();
    if text.trim().is_empty() || length > MAX_POST_CHARS {
        return Err(PlatformError::Permanent(format!("text: expected 1 to {MAX_POST_CHARS} characters, got {length}")));
    }
    Ok(())
}

/// `@handle` mentions in `text`, lowercased, without duplicates, in order.
pub fn extract_mentions(text: &str) -> Vec<String> {
    let mut handles: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let after = &rest[at + 1..];
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let handle = after[..end].to_ascii_lowercase();
        let preceded_by_word = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric());
        if !handle.is_empty() && handle.len() <= 32 && !preceded_by_word && !handles.contains(&handle) {
            handles.push(handle);
        }
        rest = &after[end..];
    }
    handles
}

#[async_trait]
impl Platform for LocalPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Local
    }

    /// Registers the account's wake-up; mentions are still read with [`Platform::mentions`].
    async fn connect(&self, account: &str, sink: LiveSink) -> Result<Option<Box<dyn LiveConnection>>, PlatformError> {
        static REGISTRATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let number = REGISTRATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sync::write(&self.wakers).insert(account.to_owned(), (number, sink));
        Ok(Some(Box::new(Wakeup { account: account.to_owned(), number, wakers: self.wakers.clone() })))
    }

    fn polls_while_connected(&self) -> bool {
        true
    }

    async fn mentions(&self, account: &str, cursor: Option<&str>) -> Result<MentionBatch, PlatformError> {
        self.check(account, false)?;
        let after = cursor.and_then(|cursor| cursor.parse::<i64>().ok()).unwrap_or(0);
        let posts = self
            .db
            .local_mentions(account, after, MENTIONS_PER_POLL)
            .await
            .map_err(|err| PlatformError::Transient(err.to_string()))?;
        let cursor = posts.last().map(|post| post.id.to_string());
        let more = posts.len() as i64 == MENTIONS_PER_POLL;
        let mut mentions = Vec::with_capacity(posts.len());
        for post in posts {
            let conversation = self.conversation_of(&post).await?;
            mentions.push(Mention {
                remote_id: post.id.to_string(),
                author: post.author,
                text: post.text,
                conversation: conversation.to_string(),
                from_bot: false,
            });
        }
        Ok(MentionBatch { mentions, cursor, more })
    }

    async fn publish(&self, account: &str, item: Outgoing<'_>) -> Result<String, PlatformError> {
        self.check(account, true)?;
        let reply_to = match item.reply_to {
            Some(id) => {
                Some(id.parse::<i64>().map_err(|_| PlatformError::Permanent(format!("reply_to: bad id {id:?}")))?)
            }
            None => None,
        };
        let post = self.post(account, item.text, reply_to, Some(item.idempotency_key), "persona").await?;
        Ok(post.id.to_string())
    }

    fn measures_engagement(&self) -> bool {
        true
    }

    /// Replies to each post; ids that are no post (any more) are left out.
    async fn engagement(
        &self,
        account: &str,
        remote_ids: &[String],
    ) -> Result<Vec<(String, Engagement)>, PlatformError> {
        self.check(account, false)?;
        let mut measured = Vec::with_capacity(remote_ids.len());
        for remote_id in remote_ids {
            let Ok(id) = remote_id.parse::<i64>() else { continue };
            let post = self.db.local_post_by_id(id).await.map_err(|err| PlatformError::Transient(err.to_string()))?;
            if post.is_none() {
                continue;
            }
            let replies = self.db.local_replies(id).await.map_err(|err| PlatformError::Transient(err.to_string()))?;
            measured.push((remote_id.clone(), Engagement { replies: replies.len() as i64, ..Engagement::default() }));
        }
        Ok(measured)
    }

    async fn find_published(&self, account: &str, item: Outgoing<'_>) -> Result<Option<String>, PlatformError> {
        self.check(account, false)?;
        let post = self
            .db
            .local_post_by_key(item.idempotency_key)
            .await
            .map_err(|err| PlatformError::Transient(err.to_string()))?;
        Ok(post.map(|post| post.id.to_string()))
    }
}

/// An agent's registration for wake-ups, removed when it closes.
struct Wakeup {
    account: String,
    number: u64,
    wakers: Arc<RwLock<HashMap<String, (u64, LiveSink)>>>,
}

#[async_trait]
impl LiveConnection for Wakeup {
    async fn close(self: Box<Self>) {
        let mut wakers = crate::sync::write(&self.wakers);
        if wakers.get(&self.account).is_some_and(|(number, _)| *number == self.number) {
            wakers.remove(&self.account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_lowercased_once_and_not_inside_emails() {
        assert_eq!(extract_mentions("hi @Ada and @bob_2, @ada again"), vec!["ada", "bob_2"]);
        assert_eq!(extract_mentions("mail me at sam@example.com"), Vec::<String>::new());
        assert_eq!(extract_mentions("@ @!"), Vec::<String>::new());
    }

    /// Posts made at once are stored together: each is stored once, answered with its own post,
    /// and its mentions indexed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn posts_made_at_once_are_each_stored_once_and_answered_with_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::connect(&format!("sqlite://{}/chorus.db", dir.path().display()), 1).await.expect("database");
        db.migrate().await.expect("migrations");
        let local = LocalPlatform::new(db.clone());
        let parent = local.post("sam", "the thread", None, None, "api").await.expect("post");
        let posts = (0..40).map(|n| {
            let local = local.clone();
            tokio::spawn(async move {
                let key = (n % 10 == 0).then(|| format!("key-{n}"));
                let text = format!("post {n} for @ada");
                local.post(&format!("user{n}"), &text, Some(parent.id), key.as_deref(), "api").await
            })
        });
        let stored: Vec<LocalPost> =
            futures::future::join_all(posts).await.into_iter().map(|post| post.unwrap().expect("stored")).collect();
        for (n, post) in stored.iter().enumerate() {
            assert_eq!((post.author.clone(), post.text.clone()), (format!("user{n}"), format!("post {n} for @ada")));
        }
        let ids: std::collections::HashSet<i64> = stored.iter().map(|post| post.id).collect();
        assert_eq!(ids.len(), 40, "forty posts, forty ids");
        assert_eq!(db.local_replies(parent.id).await.expect("replies").len(), 40, "each stored once");
        assert_eq!(db.local_mentions("ada", 0, 100).await.expect("mentions").len(), 40);
        let again = local.post("user10", "changed", Some(parent.id), Some("key-10"), "api").await.expect("post");
        assert_eq!(again, stored[10], "a key stored in a group is idempotent");
        db.close().await;
    }

    #[tokio::test]
    async fn observers_get_every_post_from_their_subscription_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::connect(&format!("sqlite://{}/chorus.db", dir.path().display()), 1).await.expect("database");
        db.migrate().await.expect("migrations");
        let local = LocalPlatform::new(db);
        local.post("sam", "before anyone listens", None, None, "api").await.expect("post");
        assert!(local.posted.get().is_none(), "no buffer before the first subscription");
        let mut first = local.subscribe();
        let post = local.post("sam", "hello @ada", None, None, "api").await.expect("post");
        let mut second = local.subscribe();
        let reply = local.post("ada", "hi", Some(post.id), None, "api").await.expect("reply");
        let seen = first.recv().await.expect("first post");
        assert_eq!((seen.id, seen.author.as_str(), seen.reply_to), (post.id, "sam", None));
        assert_eq!(first.recv().await.expect("reply").id, reply.id);
        assert_eq!(second.recv().await.expect("reply").reply_to, Some(post.id));
        assert!(first.try_recv().is_err() && second.try_recv().is_err());

        // A reply to no post is refused for good, and nothing is stored or observed.
        let orphan = local.post("ada", "hi again", Some(reply.id + 100), None, "api").await;
        assert!(matches!(&orphan, Err(PlatformError::Permanent(message)) if message.contains("no post")), "{orphan:?}");
        assert!(first.try_recv().is_err(), "an orphan is not posted");

        // Posts stored in one group are told by the caller that stored them, together and in
        // order, as the group commits: not each by its own poster when it next runs, when a
        // reply to one of them may already have been stored and told.
        let storing = local.group.storing.lock().await;
        let posters: Vec<_> = ["one", "two", "three"]
            .into_iter()
            .map(|text| {
                let local = local.clone();
                tokio::spawn(async move { local.post("kim", text, None, None, "api").await })
            })
            .collect();
        while crate::sync::lock(&local.group.waiting).len() < posters.len() {
            tokio::task::yield_now().await;
        }
        drop(storing);
        let mut ids = Vec::new();
        for poster in posters {
            ids.push(poster.await.expect("poster").expect("post").id);
        }
        let told: Vec<Posted> = (0..3).map(|_| first.try_recv().expect("told")).collect();
        assert_eq!(told.iter().map(|posted| posted.id).collect::<Vec<_>>(), ids, "in the order stored");
        assert!(told.iter().all(|posted| posted.at == told[0].at), "told together, at the commit: {told:?}");
    }

    #[test]
    fn posts_are_validated() {
        assert!(validate_post("sam", "hello").is_ok());
        assert!(matches!(validate_post("", "hello"), Err(PlatformError::Permanent(_))));
        assert!(matches!(validate_post("sam", "  "), Err(PlatformError::Permanent(_))));
        assert!(validate_post("sam", &"x".repeat(MAX_POST_CHARS + 1)).is_err());
    }
}
