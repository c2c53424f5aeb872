//! How many rows each account has in the outbox, committed and not yet published: the Publisher
//! counts them, and an agent reads its account's count before it starts a reply
//! (`agents.max_unpublished`), so drafting never runs far ahead of what the platform takes.
//!
//! The counts live in the service's [`crate::directory::Directory`], so they outlive a restart
//! of the Publisher; its sweep sets them from the database ([`crate::store::Db::pending_accounts`]),
//! which also covers the rows a previous run left and any change made outside this process.
//! Rows written in this process outside the Publisher (an airlock approval) are counted in by
//! their writer ([`OutboxBacklog::outside_write`]); a sweep that overlapped such a write leaves
//! every count as it is, and the next one corrects them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

/// The outbox backlog of every account that has had one, by platform, then persona.
#[derive(Default)]
pub struct OutboxBacklog {
    platforms: RwLock<HashMap<String, HashMap<String, Arc<AccountBacklog>>>>,
    /// Outside writes in flight.
    outside: AtomicI64,
    /// Bumped when an outside write starts and when it ends.
    outside_changes: AtomicU64,
}

/// A write of outbox rows outside the Publisher, from before its transaction until its rows are
/// counted in ([`OutsideWrite::landed`]) or it is dropped (nothing written).
pub struct OutsideWrite<'a> {
    backlog: &'a OutboxBacklog,
}

impl OutsideWrite<'_> {
    /// The write committed `rows` new rows for the account: they count at once.
    pub fn landed(self, platform: &str, persona: &str, rows: i64) {
        self.backlog.add(platform, persona, rows);
    }
}

impl Drop for OutsideWrite<'_> {
    fn drop(&mut self) {
        self.backlog.outside.fetch_sub(1, Ordering::SeqCst);
        self.backlog.outside_changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Where a sweep stands with the outside writes: taken before it reads the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideMark(u64);

/// One account's unpublished rows. Signed: a worker may count a row out before its commit's
/// count comes in; the two meet at the right number.
#[derive(Default)]
pub struct AccountBacklog {
    rows: AtomicI64,
    fell: Notify,
}

impl AccountBacklog {
    pub fn rows(&self) -> i64 {
        self.rows.load(Ordering::Relaxed)
    }

    fn set(&self, rows: i64) {
        if self.rows.swap(rows, Ordering::Relaxed) > rows {
            self.fell.notify_waiters();
        }
    }

    /// Takes a sweep's count of the database, as far as `moving` lets it be trusted.
    fn settle(&self, rows: i64, moving: Moving) {
        match moving {
            Moving::Nothing => self.set(rows),
            Moving::Leaving => {
                self.rows.fetch_max(rows, Ordering::Relaxed);
            }
            Moving::Arriving => {}
        }
    }

    fn add(&self, rows: i64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        if rows < 0 {
            self.fell.notify_waiters();
        }
    }

    /// Returns once at most `rows` rows are waiting.
    pub async fn drained_to(&self, rows: i64) {
        loop {
            let fell = self.fell.notified();
            tokio::pin!(fell);
            // Registered before the check, so a fall between the two is not missed.
            fell.as_mut().enable();
            if self.rows() <= rows {
                return;
            }
            fell.await;
        }
    }
}

impl OutboxBacklog {
    /// The account's unpublished rows (0 for an account that never had any).
    pub fn rows(&self, platform: &str, persona: &str) -> i64 {
        let platforms = self.platforms.read().expect("backlog lock");
        platforms.get(platform).and_then(|accounts| accounts.get(persona)).map_or(0, |account| account.rows())
    }

    /// The account's counter, created at 0 if it has none.
    pub fn account(&self, platform: &str, persona: &str) -> Arc<AccountBacklog> {
        if let Some(account) =
            self.platforms.read().expect("backlog lock").get(platform).and_then(|accounts| accounts.get(persona))
        {
            return account.clone();
        }
        let mut platforms = self.platforms.write().expect("backlog lock");
        platforms.entry(platform.to_owned()).or_default().entry(persona.to_owned()).or_default().clone()
    }

    /// Starts a write of outbox rows outside the Publisher: hold it across the transaction and
    /// count its rows in with [`OutsideWrite::landed`] once it commits.
    pub fn outside_write(&self) -> OutsideWrite<'_> {
        self.outside.fetch_add(1, Ordering::SeqCst);
        self.outside_changes.fetch_add(1, Ordering::SeqCst);
        OutsideWrite { backlog: self }
    }

    /// Taken by a sweep before it reads the database, and given back to [`OutboxBacklog::reconcile`].
    pub fn outside_mark(&self) -> OutsideMark {
        OutsideMark(self.outside_changes.load(Ordering::SeqCst))
    }

    /// Whether an outside write ran at any time since `mark`: its rows may be in the database's
    /// count, in the accounts' counts, or both.
    fn outside_since(&self, mark: OutsideMark) -> bool {
        self.outside.load(Ordering::SeqCst) > 0 || self.outside_changes.load(Ordering::SeqCst) != mark.0
    }

    /// `rows` more (committed) or fewer (published or failed for good).
    pub fn add(&self, platform: &str, persona: &str, rows: i64) {
        if rows != 0 {
            self.account(platform, persona).add(rows);
        }
    }

    /// Sets every account's count to what the database holds: `pending` lists the accounts with
    /// pending rows; every other account has none. `moving` says what may change an account's
    /// rows while the database was read, and so how far its count there can be trusted. Nothing
    /// is set when an outside write ran since `mark` (taken before the read): which of its rows
    /// the read saw is not known, and the next sweep sets the counts.
    pub fn reconcile<'a>(
        &self,
        mark: OutsideMark,
        pending: impl IntoIterator<Item = (&'a str, &'a str, i64)>,
        moving: impl Fn(&str, &str) -> Moving,
    ) {
        if self.outside_since(mark) {
            return;
        }
        let mut listed: HashMap<(&str, &str), i64> = HashMap::new();
        for (platform, persona, rows) in pending {
            listed.insert((platform, persona), rows);
        }
        for (&(platform, persona), &rows) in &listed {
            self.account(platform, persona).settle(rows, moving(platform, persona));
        }
        let platforms = self.platforms.read().expect("backlog lock");
        for (platform, accounts) in platforms.iter() {
            for (persona, account) in accounts {
                if !listed.contains_key(&(platform.as_str(), persona.as_str())) {
                    account.settle(0, moving(platform, persona));
                }
            }
        }
    }
}

/// What may change an account's outbox rows while a sweep reads their count from the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moving {
    /// Nothing in this process: the database's count is the count.
    Nothing,
    /// A worker may mark rows sent before the read and count them out after it: the database's
    /// count only raises the account's (rows written elsewhere, such as an approval).
    Leaving,
    /// A group commit may land before the read and count its rows in after it: the count is
    /// left as it is, until a sweep finds the account still.
    Arriving,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_per_account_and_reconciles_to_the_database() {
        let backlog = OutboxBacklog::default();
        assert_eq!(backlog.rows("x", "ada"), 0, "an account never seen has none");
        backlog.add("x", "ada", 3);
        backlog.add("x", "bob", 1);
        backlog.add("reddit", "ada", 2);
        backlog.add("x", "ada", -1);
        assert_eq!((backlog.rows("x", "ada"), backlog.rows("x", "bob"), backlog.rows("reddit", "ada")), (2, 1, 2));
        // Counted out before counted in: the two meet at the right number.
        backlog.add("local", "cy", -1);
        backlog.add("local", "cy", 1);
        assert_eq!(backlog.rows("local", "cy"), 0);

        backlog.reconcile(backlog.outside_mark(), [("x", "ada", 5), ("local", "dee", 1)], |_, _| Moving::Nothing);
        assert_eq!(backlog.rows("x", "ada"), 5);
        assert_eq!(backlog.rows("local", "dee"), 1);
        assert_eq!(backlog.rows("x", "bob"), 0, "an account the database lists no rows for has none");
        assert_eq!(backlog.rows("reddit", "ada"), 0);
    }

    #[test]
    fn a_sweep_keeps_the_counts_of_accounts_whose_rows_move_while_it_reads() {
        let backlog = OutboxBacklog::default();
        for persona in ["ada", "bob", "cy", "dee"] {
            backlog.add("x", persona, 3);
        }
        // The database, read while ada's worker marked a row sent and bob's commit landed a row:
        // ada's count goes out after the read, bob's comes in after it.
        let moving = |_: &str, persona: &str| match persona {
            "ada" | "cy" => Moving::Leaving,
            "bob" => Moving::Arriving,
            _ => Moving::Nothing,
        };
        backlog.reconcile(backlog.outside_mark(), [("x", "ada", 2), ("x", "bob", 4), ("x", "cy", 5)], moving);
        backlog.add("x", "ada", -1);
        backlog.add("x", "bob", 1);
        assert_eq!((backlog.rows("x", "ada"), backlog.rows("x", "bob")), (2, 4), "each counted once");
        assert_eq!(backlog.rows("x", "cy"), 5, "rows written elsewhere still raise a moving account's count");
        assert_eq!(backlog.rows("x", "dee"), 0, "a still account takes the database's count");
    }

    #[test]
    fn an_approval_counts_at_once_and_a_sweep_it_overlaps_sets_nothing() {
        let backlog = OutboxBacklog::default();
        backlog.add("x", "ada", 2);

        // The approval lands while a sweep reads a database that does not hold its row yet.
        let mark = backlog.outside_mark();
        backlog.outside_write().landed("x", "ada", 1);
        backlog.reconcile(mark, [("x", "ada", 2)], |_, _| Moving::Nothing);
        assert_eq!(backlog.rows("x", "ada"), 3, "counted at once, and the sweep's stale read does not undo it");

        // An approval still in flight when a sweep reads a database that holds its row already.
        let write = backlog.outside_write();
        let mark = backlog.outside_mark();
        backlog.reconcile(mark, [("x", "ada", 4)], |_, _| Moving::Nothing);
        write.landed("x", "ada", 1);
        assert_eq!(backlog.rows("x", "ada"), 4, "counted once");

        // An approval that wrote nothing.
        drop(backlog.outside_write());
        // With no outside write since its mark, a sweep sets the counts again.
        backlog.reconcile(backlog.outside_mark(), [("x", "ada", 7)], |_, _| Moving::Nothing);
        assert_eq!(backlog.rows("x", "ada"), 7);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_its_account_drains_to_the_mark_and_not_before() {
        let backlog = Arc::new(OutboxBacklog::default());
        backlog.add("x", "ada", 10);
        let account = backlog.account("x", "ada");
        let waiter = tokio::spawn(async move { account.drained_to(4).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        backlog.add("x", "ada", -3);
        backlog.add("x", "bob", -5);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "7 rows are still more than 4");
        backlog.reconcile(backlog.outside_mark(), [("x", "ada", 4)], |_, _| Moving::Nothing);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken at 4").unwrap();

        // Already at the mark: no wait at all.
        backlog.account("x", "ada").drained_to(4).await;
    }
}
