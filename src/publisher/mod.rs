//! The Publisher actor: the durable outbox between "a persona decided to say this" and "the
//! platform has it".
//!
//! - `Enqueue` writes the outbox row (unique idempotency key) before anything is published, and
//!   in the same transaction marks the inbound event answered (group commit); then it starts that
//!   account's worker with the rows just committed, or, when one runs, marks the account dirty so
//!   the worker runs again when it is done (it may have read the outbox before the row was there).
//!   A worker that read the outbox while the commit was under way may already have published its
//!   rows: that account's next worker reads the outbox instead of taking them.
//! - `Kick` (every `publisher.sweep_every`) looks up the accounts with pending rows, sets each
//!   account's outbox backlog from it (the count agents hold drafting by, `agents.max_unpublished`;
//!   between sweeps commits count rows in, before their callers hear, and workers count them out;
//!   an account with a commit or a worker under way keeps its count, or has it only raised, as
//!   its rows may move during the read), and starts one worker task
//!   per idle account with due rows (retries come due this way). A worker publishes that account's due rows
//!   in order (at most `publisher.batch` per run), so one slow or rate-limited account never holds
//!   up another, and one account never has two workers. Each row takes a permit from its account's
//!   RateLimiter; the rows whose permits came at once have their attempts recorded together (one
//!   statement), then the platform is called for each, and each is marked sent (with the remote
//!   id), retried later (transient or rate-limited) or failed (refused for good). A row that is
//!   pending with `attempts > 0` may have landed before a crash: the platform is asked for it
//!   first (reconciliation), so it is never posted twice.
//! - `Drain` (graceful shutdown) keeps dispatching until no row is due and no worker runs, then
//!   answers with the outbox counts.

mod backlog;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::config::PublisherConfig;
use crate::directory::{Directory, rate_limiter_key};
use crate::memory::MemoryMsg;
use crate::metrics as m;
use crate::platform::{Outgoing, Platform, PlatformError, Platforms};
use crate::rate_limit::{Permit, RateLimiterMsg};
use crate::store::{
    ContentLog, Db, Enqueued, MemoryKind, NewMemory, NewOutbox, OutboxCounts, OutboxRow, PendingAccount, Sent,
    StoreError, ToEnqueue, now_ms,
};
use crate::task::AbortOnDrop;

pub use backlog::{AccountBacklog, Moving, OutboxBacklog};

pub struct Publisher;

pub struct PublisherArgs {
    pub db: Db,
    pub platforms: Platforms,
    pub directory: Arc<Directory>,
    pub config: PublisherConfig,
}

/// `(platform, persona)`: the unit of ordering and of rate limiting.
type Account = (String, String);

pub struct PublisherState {
    context: Arc<PassContext>,
    /// Accounts with a worker running; dropping the state (a stop or restart) aborts them, and
    /// an aborted row is reconciled by the next worker (`attempts > 0`).
    busy: HashMap<Account, AbortOnDrop>,
    /// Busy accounts that got a new row while their worker ran: it runs again when done (its
    /// query may have read the outbox before the row was there).
    dirty: HashSet<Account>,
    /// Accounts whose worker read the outbox while the commit in flight was under way: it may
    /// have seen (and published) the commit's rows, so they are not handed on, but read again.
    overlapped: HashSet<Account>,
    drain_waiters: Vec<RpcReplyPort<OutboxCounts>>,
    /// `Enqueue`s waiting for the next group commit.
    to_commit: Vec<ToCommit>,
    /// The group commit in flight (at most one: what arrives meanwhile goes in the next).
    committing: Option<AbortOnDrop>,
    /// The accounts the commit in flight writes rows for.
    arriving: HashSet<Account>,
    _sweep: AbortOnDrop,
}

/// Most items in one group commit (a bound on the statements' size).
const MAX_COMMIT_BATCH: usize = 64;

/// An `Enqueue` waiting for its group commit.
pub struct ToCommit {
    item: NewOutbox,
    inbound_id: Option<i64>,
    log: Box<ContentLog>,
    reply: RpcReplyPort<Result<Enqueued, String>>,
}

/// What a worker needs, shared with its task.
struct PassContext {
    db: Db,
    platforms: Platforms,
    directory: Arc<Directory>,
    config: PublisherConfig,
}

/// Rows the platform took in a worker's pass, each with its remote id and how (`sent`, or
/// `reconciled` when an earlier attempt had landed), waiting to be marked sent together.
type SentRows<'r> = Vec<(&'r OutboxRow, String, &'static str)>;

/// What [`PassContext::clear`] made of a row.
enum Clearance {
    /// Its permit came at once: publish it there.
    Now(Arc<dyn Platform>),
    /// Its permit comes after this wait.
    After(Duration, Arc<dyn Platform>),
    /// Nothing to publish now: found on the platform, failed, or put off for later.
    Settled,
}

/// How publishing one row went, for the rows cleared after it.
#[derive(PartialEq, Eq)]
enum Published {
    /// Sent, failed or to be retried alone.
    Done,
    /// The platform rate-limited the whole account: the rows after it wait for new permits.
    AccountRateLimited,
}

pub enum PublisherMsg {
    /// Write an item to the outbox (once per idempotency key), then publish it.
    /// `log` is what the content pipeline did with the item, written in the same transaction.
    Enqueue {
        item: NewOutbox,
        inbound_id: Option<i64>,
        log: Box<ContentLog>,
        reply: RpcReplyPort<Result<Enqueued, String>>,
    },
    /// A group commit finished: one result per item of the batch, in order.
    Committed { batch: Vec<ToCommit>, results: Vec<Result<Enqueued, StoreError>> },
    /// Start workers for accounts with due rows.
    Kick,
    /// An account's worker finished; `more` when it stopped at the batch size.
    WorkerDone { account: Account, more: bool },
    /// Publish everything due, then answer with the outbox counts (graceful shutdown).
    Drain { reply: RpcReplyPort<OutboxCounts> },
}

impl Actor for Publisher {
    type Msg = PublisherMsg;
    type State = PublisherState;
    type Arguments = PublisherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PublisherArgs,
    ) -> Result<PublisherState, ActorProcessingErr> {
        let sweep = myself.send_interval(args.config.sweep_every.get(), || PublisherMsg::Kick);
        // Rows left pending by a previous run are published (or reconciled) right away.
        myself.send_message(PublisherMsg::Kick)?;
        Ok(PublisherState {
            context: Arc::new(PassContext {
                db: args.db,
                platforms: args.platforms,
                directory: args.directory,
                config: args.config,
            }),
            busy: HashMap::new(),
            dirty: HashSet::new(),
            overlapped: HashSet::new(),
            drain_waiters: Vec::new(),
            to_commit: Vec::new(),
            committing: None,
            arriving: HashSet::new(),
            _sweep: sweep.into(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: PublisherMsg,
        state: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PublisherMsg::Enqueue { item, inbound_id, log, reply } => {
                state.to_commit.push(ToCommit { item, inbound_id, log, reply });
                if state.committing.is_none() {
                    self.start_commit(&myself, state);
                }
            }
            PublisherMsg::Committed { batch, results } => {
                state.committing = None;
                state.arriving.clear();
                let overlapped = std::mem::take(&mut state.overlapped);
                let mut failed_for_good = false;
                let mut accounts: HashMap<Account, Vec<OutboxRow>> = HashMap::new();
                let mut replies = Vec::with_capacity(batch.len());
                for (ToCommit { item, reply, .. }, result) in batch.into_iter().zip(results) {
                    failed_for_good |= result.as_ref().is_err_and(|err| !err.is_transient());
                    let created = match &result {
                        Ok(enqueued) if enqueued.created => Some(enqueued.id),
                        _ => None,
                    };
                    replies.push((reply, result));
                    let rows = accounts.entry((item.platform.clone(), item.persona.clone())).or_default();
                    if let Some(id) = created {
                        ENQUEUED.get([platform_label(&item.platform), kind_label(&item.kind)]).increment(1);
                        rows.push(OutboxRow::queued(id, item));
                    }
                }
                // Counted in before the callers hear: an agent that stops counting a reply as
                // being drafted finds it among its account's rows.
                for (account, rows) in &accounts {
                    state.context.directory.outbox.add(&account.0, &account.1, rows.len() as i64);
                }
                for (reply, result) in replies {
                    let _ = reply.send(result.map_err(|err| err.to_string()));
                }
                // Only these accounts have new rows: an idle one's worker gets the rows just
                // committed (no query); a running one goes again, and one that read the outbox
                // during the commit reads it again. Once per account, whatever the batch held.
                for (account, mut rows) in accounts {
                    if state.busy.contains_key(&account) {
                        state.dirty.insert(account);
                    } else if overlapped.contains(&account) || rows.is_empty() {
                        self.start_worker(&myself, state, account, None);
                    } else {
                        rows.sort_by_key(|row| row.id);
                        self.start_worker(&myself, state, account, Some(rows));
                    }
                }
                if failed_for_good {
                    return Err("outbox write failed permanently".into());
                }
                if !state.to_commit.is_empty() {
                    self.start_commit(&myself, state);
                } else if !state.drain_waiters.is_empty() {
                    self.dispatch(&myself, state).await;
                }
            }
            PublisherMsg::Kick => self.dispatch(&myself, state).await,
            PublisherMsg::WorkerDone { account, more } => {
                state.busy.remove(&account);
                let dirty = state.dirty.remove(&account);
                if (more || dirty) && state.drain_waiters.is_empty() {
                    self.start_worker(&myself, state, account, None);
                } else if !state.drain_waiters.is_empty() {
                    self.dispatch(&myself, state).await;
                }
            }
            PublisherMsg::Drain { reply } => {
                state.drain_waiters.push(reply);
                self.dispatch(&myself, state).await;
            }
        }
        Ok(())
    }
}

impl Publisher {
    /// Writes the waiting `Enqueue`s (up to [`MAX_COMMIT_BATCH`]) in one transaction and reports
    /// `Committed`. Those that arrive meanwhile wait for the next one, so under load a commit
    /// carries many replies, and alone a reply waits for nothing.
    fn start_commit(&self, myself: &ActorRef<PublisherMsg>, state: &mut PublisherState) {
        let take = state.to_commit.len().min(MAX_COMMIT_BATCH);
        let batch: Vec<ToCommit> = state.to_commit.drain(..take).collect();
        let db = state.context.db.clone();
        let myself = myself.clone();
        // A worker running now may read the outbox after this commit lands.
        state.overlapped.extend(state.busy.keys().cloned());
        state.arriving =
            batch.iter().map(|ToCommit { item, .. }| (item.platform.clone(), item.persona.clone())).collect();
        let commit = tokio::spawn(async move {
            let results = commit(&db, &batch).await;
            let _ = myself.send_message(PublisherMsg::Committed { batch, results });
        });
        state.committing = Some(commit.into());
    }

    /// Starts `account`'s worker, which publishes `handed` (rows just committed, in order) or else
    /// the account's due rows, and reports `WorkerDone`.
    fn start_worker(
        &self,
        myself: &ActorRef<PublisherMsg>,
        state: &mut PublisherState,
        account: Account,
        handed: Option<Vec<OutboxRow>>,
    ) {
        if handed.is_none() && state.committing.is_some() {
            state.overlapped.insert(account.clone());
        }
        let context = state.context.clone();
        let myself = myself.clone();
        let key = account.clone();
        let worker = tokio::spawn(async move {
            let more = match context.publish_account(&account, handed).await {
                Ok(more) => more,
                Err(err) => {
                    metrics::counter!(m::STORE_ERRORS, "operation" => "outbox").increment(1);
                    tracing::warn!(error = %err, "publish worker stopped early, will retry on the next sweep");
                    false
                }
            };
            let _ = myself.send_message(PublisherMsg::WorkerDone { account, more });
        });
        state.busy.insert(key, worker.into());
    }

    /// Starts a worker for every idle account with due rows; answers drain waiters once nothing
    /// is due and no worker runs.
    async fn dispatch(&self, myself: &ActorRef<PublisherMsg>, state: &mut PublisherState) {
        let mark = state.context.directory.outbox.outside_mark();
        let accounts = match state.context.db.pending_accounts().await {
            Ok(accounts) => accounts,
            Err(err) => {
                metrics::counter!(m::STORE_ERRORS, "operation" => "outbox").increment(1);
                tracing::warn!(error = %err, "cannot read the outbox, will retry on the next sweep");
                return;
            }
        };
        // The commit in flight and the running workers count their rows in and out after their
        // writes land, which may be before this read or after it: their accounts' counts are
        // kept (or only raised), and set the next time a sweep finds them still.
        let backlog = &state.context.directory.outbox;
        let moving = |platform: &str, persona: &str| {
            let account = (platform.to_owned(), persona.to_owned());
            if state.arriving.contains(&account) {
                Moving::Arriving
            } else if state.busy.contains_key(&account) {
                Moving::Leaving
            } else {
                Moving::Nothing
            }
        };
        backlog.reconcile(
            mark,
            accounts.iter().map(|account| (account.platform.as_str(), account.persona.as_str(), account.rows)),
            moving,
        );
        let pending: i64 = accounts.iter().map(|account| account.rows).sum();
        PENDING.get([]).set(pending as f64);
        for PendingAccount { platform, persona, due, .. } in accounts {
            let account = (platform, persona);
            if due && !state.busy.contains_key(&account) {
                self.start_worker(myself, state, account, None);
            }
        }
        let committing = state.committing.is_some() || !state.to_commit.is_empty();
        if state.busy.is_empty() && !committing && !state.drain_waiters.is_empty() {
            let counts = state.context.db.outbox_counts().await.unwrap_or_default();
            for waiter in state.drain_waiters.drain(..) {
                let _ = waiter.send(counts);
            }
        }
    }
}

/// The platform's view of a row.
fn outgoing(row: &OutboxRow) -> Outgoing<'_> {
    Outgoing { idempotency_key: &row.idempotency_key, text: &row.text, reply_to: row.reply_to.as_deref() }
}

impl PassContext {
    /// Publishes `handed` or else one account's due rows (read from the outbox), in order.
    /// Returns true when there may be more.
    async fn publish_account(
        &self,
        (platform, persona): &Account,
        handed: Option<Vec<OutboxRow>>,
    ) -> Result<bool, StoreError> {
        let batch = i64::from(self.config.batch.max(1));
        let (rows, read) = match handed {
            Some(rows) => (rows, false),
            None => (self.db.due_outbox(platform, persona, batch).await?, true),
        };
        let mut sent = Vec::new();
        let result = self.publish_rows(&rows, &mut sent).await;
        // The rows the platform took are marked sent together, in one transaction.
        self.mark_sent(&mut sent).await?;
        result?;
        Ok(read && rows.len() as i64 == batch)
    }

    /// Publishes `rows` in order; a row the platform took is added to `sent`. Each row is first
    /// cleared ([`PassContext::clear`]); the rows cleared at once are published together
    /// ([`PassContext::publish_cleared`]). A row whose permit means waiting has the rows cleared
    /// before it published first, then waits.
    async fn publish_rows<'r>(&self, rows: &'r [OutboxRow], sent: &mut SentRows<'r>) -> Result<(), StoreError> {
        let mut waiting: VecDeque<&OutboxRow> = rows.iter().collect();
        let mut cleared = Vec::new();
        loop {
            while let Some(row) = waiting.pop_front() {
                match self.clear(row, sent).await? {
                    Clearance::Now(platform) => cleared.push((row, platform)),
                    Clearance::Settled => {}
                    Clearance::After(wait, platform) => {
                        let before = waiting.len();
                        self.publish_cleared(&mut cleared, &mut waiting, sent).await?;
                        if waiting.len() > before {
                            // The platform rate-limited the account meanwhile: the permit is stale,
                            // and the row takes one again after the rows handed back.
                            waiting.insert(waiting.len() - before, row);
                            continue;
                        }
                        // What was sent is marked before the wait, not after it.
                        self.mark_sent(sent).await?;
                        self.record_wait("rate_limit_wait", row, wait).await;
                        tokio::time::sleep(wait).await;
                        cleared.push((row, platform));
                    }
                }
            }
            if cleared.is_empty() {
                return Ok(());
            }
            self.publish_cleared(&mut cleared, &mut waiting, sent).await?;
        }
    }

    /// Marks the rows the platform took sent, and remembers them. Until this commits, a row is
    /// pending with `attempts > 0`: after a crash it is reconciled, never posted twice.
    async fn mark_sent(&self, sent: &mut SentRows<'_>) -> Result<(), StoreError> {
        if sent.is_empty() {
            return Ok(());
        }
        let batch: Vec<Sent> = sent.iter().map(|(row, remote_id, how)| Sent { row, remote_id, how }).collect();
        self.db.mark_sent_batch(&batch).await?;
        // A worker's rows are all its account's.
        let (platform, persona) = (&batch[0].row.platform, &batch[0].row.persona);
        self.directory.outbox.add(platform, persona, -(batch.len() as i64));
        for (row, _, _) in sent.drain(..) {
            self.remember(row);
        }
        Ok(())
    }

    /// Readies one row for publishing: a row whose earlier attempt may have landed before a crash
    /// (`attempts > 0`) is looked for on the platform first (reconciliation), then the row takes a
    /// permit from its account's RateLimiter. A row found, failed or put off for later is
    /// `Settled` here.
    async fn clear<'r>(&self, row: &'r OutboxRow, sent: &mut SentRows<'r>) -> Result<Clearance, StoreError> {
        let platform_name = platform_label(&row.platform);
        let Some(platform) = self.platforms.by_name(&row.platform) else {
            self.fail(row, "no such platform is configured").await?;
            return Ok(Clearance::Settled);
        };
        if row.attempts > 0 {
            match platform.find_published(&row.persona, outgoing(row)).await {
                Ok(Some(remote_id)) => {
                    PUBLISHED.get([platform_name, "reconciled"]).increment(1);
                    tracing::info!(
                        outbox_id = row.id,
                        "earlier attempt had landed, marking sent without posting again"
                    );
                    sent.push((row, remote_id, "reconciled"));
                    return Ok(Clearance::Settled);
                }
                Ok(None) => {}
                Err(PlatformError::Permanent(reason)) => {
                    PUBLISHED.get([platform_name, "failed"]).increment(1);
                    tracing::warn!(outbox_id = row.id, reason = %reason, "cannot reconcile the item; it is not sent again");
                    self.fail(row, &reason).await?;
                    return Ok(Clearance::Settled);
                }
                Err(err) => {
                    self.retry(row, &err).await?;
                    return Ok(Clearance::Settled);
                }
            }
        }
        match self.permit(row).await {
            Permit::After(wait) if wait.is_zero() => Ok(Clearance::Now(platform)),
            Permit::After(wait) => Ok(Clearance::After(wait, platform)),
            Permit::Refused(retry_after) => {
                self.record_wait("rate_limit_refused", row, retry_after).await;
                // Our own budget is spent: come back when it has room (not a platform 429, so the
                // bucket is not emptied any further).
                PUBLISHED.get([platform_name, "budget_wait"]).increment(1);
                let next = now_ms() + retry_after.as_millis() as i64;
                self.db.mark_retry(row, "waiting for the account's publishing budget", next).await?;
                Ok(Clearance::Settled)
            }
        }
    }

    /// Publishes the `cleared` rows (emptied), in order: their attempts are recorded first, in
    /// one statement, then the platform is called for each. When the platform rate-limits the
    /// whole account, the rows after that one are not tried: their attempts are taken back and
    /// they go back to the front of `waiting`, to take permits again. After a store error the
    /// rows not tried keep their attempt, and are looked for on the platform before their next
    /// try.
    async fn publish_cleared<'r>(
        &self,
        cleared: &mut Vec<(&'r OutboxRow, Arc<dyn Platform>)>,
        waiting: &mut VecDeque<&'r OutboxRow>,
        sent: &mut SentRows<'r>,
    ) -> Result<(), StoreError> {
        if cleared.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = cleared.iter().map(|(row, _)| row.id).collect();
        self.db.begin_attempts(&ids).await?;
        let mut rows = std::mem::take(cleared).into_iter();
        while let Some((row, platform)) = rows.next() {
            if self.publish_one(row, platform.as_ref(), sent).await? == Published::AccountRateLimited {
                let untried: Vec<&OutboxRow> = rows.map(|(row, _)| row).collect();
                let ids: Vec<i64> = untried.iter().map(|row| row.id).collect();
                self.db.take_back_attempts(&ids).await?;
                for row in untried.into_iter().rev() {
                    waiting.push_front(row);
                }
                break;
            }
        }
        Ok(())
    }

    /// Publishes one cleared row whose attempt is recorded; a row the platform took is added to
    /// `sent` (marked by the caller).
    async fn publish_one<'r>(
        &self,
        row: &'r OutboxRow,
        platform: &dyn Platform,
        sent: &mut SentRows<'r>,
    ) -> Result<Published, StoreError> {
        let platform_name = platform_label(&row.platform);
        let started = Instant::now();
        let result = platform.publish(&row.persona, outgoing(row)).await;
        PUBLISH_SECONDS.get([platform_name]).record(started.elapsed().as_secs_f64());
        match result {
            Ok(remote_id) => {
                PUBLISHED.get([platform_name, "sent"]).increment(1);
                tracing::info!(persona = %row.persona, platform = platform_name, kind = %row.kind, remote_id = %remote_id, "published");
                sent.push((row, remote_id, "sent"));
                Ok(Published::Done)
            }
            Err(PlatformError::Permanent(reason)) => {
                PUBLISHED.get([platform_name, "failed"]).increment(1);
                tracing::warn!(outbox_id = row.id, reason = %reason, "platform refused the item for good");
                self.fail(row, &reason).await?;
                Ok(Published::Done)
            }
            Err(err) => {
                let account_wide =
                    matches!(err, PlatformError::RateLimited { .. }) && platform.account_wide_rate_limits();
                self.retry(row, &err).await?;
                Ok(if account_wide { Published::AccountRateLimited } else { Published::Done })
            }
        }
    }

    /// Marks a row failed for good: it leaves the account's backlog.
    async fn fail(&self, row: &OutboxRow, reason: &str) -> Result<(), StoreError> {
        self.db.mark_failed(row, reason).await?;
        self.directory.outbox.add(&row.platform, &row.persona, -1);
        Ok(())
    }

    /// Keeps a rate-limit wait for the weekly report (a failed write is only logged).
    async fn record_wait(&self, kind: &str, row: &OutboxRow, wait: Duration) {
        let subject = rate_limiter_key(&row.platform, &row.persona);
        let waited = wait.as_millis() as i64;
        if let Err(err) =
            self.db.record_ops_event(kind, Some(&row.persona), Some(&row.platform), &subject, waited).await
        {
            tracing::debug!(error = %err, "could not record a rate-limit wait");
        }
    }

    async fn permit(&self, row: &OutboxRow) -> Permit {
        let Some(limiter) = self.directory.rate_limiter(&row.platform) else {
            // The limiter is restarting: do not publish unmetered, come back shortly.
            return Permit::Refused(Duration::from_secs(1));
        };
        let persona = row.persona.clone();
        match ractor::call_t!(limiter, |reply| RateLimiterMsg::Acquire { persona, reply }, 5_000) {
            Ok(permit) => permit,
            Err(_) => Permit::Refused(Duration::from_secs(1)),
        }
    }

    async fn retry(&self, row: &OutboxRow, err: &PlatformError) -> Result<(), StoreError> {
        let attempt = u32::try_from(row.attempts.max(0)).unwrap_or(u32::MAX);
        let backoff = crate::backoff::delay(self.config.retry_initial.get(), self.config.retry_max.get(), attempt);
        let (delay, outcome) = match err {
            PlatformError::RateLimited { retry_after } => {
                let account_wide = self.platforms.by_name(&row.platform).is_none_or(|p| p.account_wide_rate_limits());
                if account_wide && let Some(limiter) = self.directory.rate_limiter(&row.platform) {
                    let persona = row.persona.clone();
                    let _ = limiter.send_message(RateLimiterMsg::BackOff { persona, until: *retry_after });
                }
                self.record_wait("rate_limit_wait", row, *retry_after).await;
                (*retry_after, "rate_limited")
            }
            PlatformError::Auth(_) => {
                tracing::error!(persona = %row.persona, platform = %row.platform, "platform refused the credentials; the row stays pending");
                (self.config.retry_max.get(), "auth")
            }
            _ => (backoff, "retry"),
        };
        PUBLISHED.get([platform_label(&row.platform), outcome]).increment(1);
        let next = now_ms() + delay.as_millis() as i64;
        self.db.mark_retry(row, &err.to_string(), next).await
    }

    fn remember(&self, row: &OutboxRow) {
        let Some(memory) = self.directory.memory() else { return };
        let kind = if row.kind == "reply" { MemoryKind::Reply } else { MemoryKind::Post };
        let _ = memory.send_message(MemoryMsg::Remember(NewMemory {
            persona: row.persona.clone(),
            platform: row.platform.clone(),
            kind,
            conversation: row.conversation.clone(),
            author: row.persona.clone(),
            text: row.text.clone(),
        }));
    }
}

/// One transaction for the batch; when it fails, each item alone, so one bad item does not fail
/// the others.
async fn commit(db: &Db, batch: &[ToCommit]) -> Vec<Result<Enqueued, StoreError>> {
    let items: Vec<ToEnqueue> = batch
        .iter()
        .map(|queued| ToEnqueue { item: &queued.item, inbound_id: queued.inbound_id, log: Some(&queued.log) })
        .collect();
    match db.enqueue_batch(&items).await {
        Ok(enqueued) => enqueued.into_iter().map(Ok).collect(),
        Err(err) if items.len() == 1 => vec![Err(err)],
        Err(err) => {
            tracing::debug!(error = %err, items = items.len(), "group commit failed, writing its items one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in &items {
                results.push(db.enqueue_batch(std::slice::from_ref(item)).await.map(|enqueued| enqueued[0]));
            }
            results
        }
    }
}

/// Metric label for a platform name from the database (a fixed set).
fn platform_label(name: &str) -> &'static str {
    crate::config::PlatformKind::ALL.iter().map(|kind| kind.as_str()).find(|kind| *kind == name).unwrap_or("other")
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "reply" => "reply",
        "post" => "post",
        _ => "other",
    }
}

// The metrics every reply updates, registered once each ([`m::Kept`]).
static ENQUEUED: m::Kept<Counter, 2> = m::Kept::new(m::OUTBOX_ENQUEUED, ["platform", "kind"]);
static PUBLISHED: m::Kept<Counter, 2> = m::Kept::new(m::OUTBOX_PUBLISHED, ["platform", "outcome"]);
static PUBLISH_SECONDS: m::Kept<Histogram, 1> = m::Kept::new(m::PUBLISH_SECONDS, ["platform"]);
static PENDING: m::Kept<Gauge, 0> = m::Kept::new(m::OUTBOX_PENDING, []);

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::config::{Dur, PlatformKind, RateLimitConfig};
    use crate::platform::MentionBatch;
    use crate::rate_limit::{RateLimiter, RateLimiterArgs};
    use crate::store::OutboxStatus;

    const KEYS: [&str; 3] = ["k1", "k2", "k3"];

    /// A platform that notes, at each publish, every row's attempts as the database has them,
    /// and answers a 429 to the publishes numbered in `rate_limited` (from 0).
    struct Recorder {
        db: Db,
        rate_limited: Vec<usize>,
        /// Each publish: the key published, when, and the attempts of `KEYS` at that moment.
        publishes: Mutex<Vec<(String, Instant, Vec<i64>)>>,
        searches: Mutex<usize>,
    }

    #[async_trait]
    impl Platform for Recorder {
        fn kind(&self) -> PlatformKind {
            PlatformKind::X
        }

        async fn mentions(&self, _account: &str, _cursor: Option<&str>) -> Result<MentionBatch, PlatformError> {
            Ok(MentionBatch::default())
        }

        async fn publish(&self, _account: &str, item: Outgoing<'_>) -> Result<String, PlatformError> {
            let mut attempts = Vec::new();
            for key in KEYS {
                attempts.push(self.db.outbox_row(key).await.unwrap().unwrap().attempts);
            }
            let mut publishes = self.publishes.lock().unwrap();
            let number = publishes.len();
            publishes.push((item.idempotency_key.to_owned(), Instant::now(), attempts));
            if self.rate_limited.contains(&number) {
                return Err(PlatformError::RateLimited { retry_after: Duration::from_millis(300) });
            }
            Ok(format!("remote-{}", item.idempotency_key))
        }

        async fn find_published(&self, _account: &str, _item: Outgoing<'_>) -> Result<Option<String>, PlatformError> {
            *self.searches.lock().unwrap() += 1;
            Ok(None)
        }
    }

    /// Three rows queued for ada on X, a worker's context whose platform is a [`Recorder`], and
    /// the RateLimiter (ten permits at once).
    async fn pass(rate_limited: Vec<usize>) -> (tempfile::TempDir, Arc<Recorder>, PassContext) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/chorus.db", dir.path().display()), 2).await.unwrap();
        db.migrate().await.unwrap();
        for key in KEYS {
            let item = NewOutbox {
                idempotency_key: key.to_owned(),
                persona: "ada".into(),
                platform: "x".into(),
                kind: "post".into(),
                text: format!("post {key}"),
                reply_to: None,
                conversation: None,
            };
            db.enqueue(&item, None).await.unwrap();
        }
        let recorder = Arc::new(Recorder {
            db: db.clone(),
            rate_limited,
            publishes: Mutex::default(),
            searches: Mutex::default(),
        });
        let mut platforms = Platforms::default();
        platforms.insert(recorder.clone());
        let directory = Arc::new(Directory::default());
        let config = RateLimitConfig { burst: 10, per: Dur::secs(10), max_wait: Dur::secs(60) };
        let (limiter, _) =
            Actor::spawn(None, RateLimiter, RateLimiterArgs { platform: "x", config, accounts: HashMap::new() })
                .await
                .unwrap();
        directory.set_rate_limiter("x", Some(limiter));
        let context = PassContext { db, platforms, directory, config: PublisherConfig::default() };
        (dir, recorder, context)
    }

    async fn row(context: &PassContext, key: &str) -> OutboxRow {
        context.db.outbox_row(key).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_pass_records_its_rows_attempts_together_before_the_first_publish() {
        let (_dir, recorder, context) = pass(Vec::new()).await;
        let more = context.publish_account(&("x".into(), "ada".into()), None).await.unwrap();
        assert!(!more, "three rows, fewer than a pass takes");
        let publishes = recorder.publishes.lock().unwrap().clone();
        let keys: Vec<&str> = publishes.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(keys, KEYS, "published once each, in order");
        assert_eq!(publishes[0].2, [1, 1, 1], "every row's attempt is recorded before the platform is called");
        for key in KEYS {
            assert_eq!(row(&context, key).await.status, OutboxStatus::Sent);
        }
        assert_eq!(*recorder.searches.lock().unwrap(), 0, "nothing to reconcile");
    }

    #[tokio::test]
    async fn after_a_429_the_rows_after_it_take_their_attempts_back_and_wait_for_new_permits() {
        let (_dir, recorder, context) = pass(vec![0]).await;
        context.publish_account(&("x".into(), "ada".into()), None).await.unwrap();
        let publishes = recorder.publishes.lock().unwrap().clone();
        let keys: Vec<&str> = publishes.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2", "k3"], "k1 refused, then k2 and k3 after the back-off");
        // k2 and k3 were recorded with k1 and taken back when k1 was refused; after the back-off
        // each takes a permit that means waiting, so each is recorded again alone.
        assert_eq!(publishes[1].2, [1, 1, 0], "k2 counted once, k3 not yet");
        assert_eq!(publishes[2].2, [1, 1, 1], "k3 counted once");
        let waited = publishes[1].1.duration_since(publishes[0].1);
        assert!(waited >= Duration::from_millis(250), "k2 waited out the account's back-off: {waited:?}");
        let k1 = row(&context, "k1").await;
        assert_eq!((k1.status, k1.attempts), (OutboxStatus::Pending, 1), "k1 is retried later");
        assert_eq!(row(&context, "k2").await.status, OutboxStatus::Sent);
        assert_eq!(row(&context, "k3").await.status, OutboxStatus::Sent);
        assert_eq!(*recorder.searches.lock().unwrap(), 0, "no search for posts never made");
    }
}
