//! The embedding cache: the vectors of the texts Memory embedded last, so that a text is not
//! embedded twice.
//!
//! A reply embeds the same texts more than once: the mention is remembered (embedded) and is the
//! query of the recall, the draft is checked for duplicates (embedded) and remembered once
//! published. With the cache each is embedded once. A text asked for while its embedding is under
//! way waits for that call instead of making its own (the mention's `Remember` and the reply's
//! recall arrive moments apart).
//!
//! It holds the vectors of one model, Memory's ([`crate::config::Config::embedding_model`]); a
//! change of model restarts Memory with an empty cache. It is bounded by entries
//! ([`CAPACITY`]) and forgets the least recently used first. A plain map and an ordered index
//! rather than a crate: the only LRU in the tree (`hashlink`) comes with sqlx, not as a
//! dependency of ours, and waiting for a call in flight is not something those caches do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::oneshot;

/// Texts kept: about 6.5 MB of 384-dimension vectors when full (26 MB at 1,536 dimensions).
pub const CAPACITY: usize = 4_096;

/// Drafts kept until their reply is remembered (see [`EmbeddingCache::pin`]): about 6.5 MB of
/// 384-dimension vectors when full, which only a backlog of thousands of replies between the
/// dedup check and the platform fills.
pub const PINNED: usize = 4_096;

/// What a lookup found.
pub enum Lookup {
    /// The vector, embedded before.
    Hit(Vec<f32>),
    /// Its embedding is under way: the vector comes here (`None` if that call failed).
    Wait(oneshot::Receiver<Option<Vec<f32>>>),
    /// Nobody embeds it: the caller does, then reports with [`EmbeddingCache::finish`].
    Lead,
}

/// Recently embedded texts and their vectors, least recently used forgotten first.
pub struct EmbeddingCache {
    capacity: usize,
    /// Use counter: the stamp of the latest lookup or insert.
    tick: u64,
    entries: HashMap<Arc<str>, Entry>,
    /// Texts by the stamp of their latest use, oldest first.
    order: BTreeMap<u64, Arc<str>>,
    /// Texts being embedded, with who waits for them.
    flights: HashMap<Arc<str>, Vec<Waiter>>,
    /// Vectors of drafts that passed the dedup check, outside the LRU order, and the texts in
    /// the order pinned (the oldest go first past [`PINNED`]).
    pinned: HashMap<Arc<str>, Vec<f32>>,
    pin_order: VecDeque<Arc<str>>,
}

/// Someone waiting for a text being embedded.
type Waiter = oneshot::Sender<Option<Vec<f32>>>;

struct Entry {
    vector: Vec<f32>,
    stamp: u64,
}

impl EmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            flights: HashMap::new(),
            pinned: HashMap::new(),
            pin_order: VecDeque::new(),
        }
    }

    /// The vector of `text` if it is known, a wait if it is being embedded, else `Lead`: the
    /// caller embeds it, and must call [`finish`](Self::finish) (with `None` if it failed).
    pub fn lookup(&mut self, text: &str) -> Lookup {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.entries.get_mut(text) {
            let key = self.order.remove(&entry.stamp).unwrap_or_else(|| Arc::from(text));
            entry.stamp = tick;
            self.order.insert(tick, key);
            return Lookup::Hit(entry.vector.clone());
        }
        if let Some(waiters) = self.flights.get_mut(text) {
            let (sender, receiver) = oneshot::channel();
            waiters.push(sender);
            return Lookup::Wait(receiver);
        }
        self.flights.insert(Arc::from(text), Vec::new());
        Lookup::Lead
    }

    /// Keeps the vector of a draft that passed the dedup check until [`get`](Self::get) takes
    /// it, whatever the LRU forgets meanwhile: under load the reply is published seconds later,
    /// after thousands of other texts were embedded, and its memory needs this vector. At most
    /// [`PINNED`] are kept (a draft held in the airlock or never published goes first).
    pub fn pin(&mut self, text: &str, vector: Vec<f32>) {
        let key: Arc<str> = Arc::from(text);
        if self.pinned.insert(key.clone(), vector).is_none() {
            self.pin_order.push_back(key);
        }
        while self.pinned.len() > PINNED {
            let Some(oldest) = self.pin_order.pop_front() else { break };
            self.pinned.remove(&oldest);
        }
    }

    /// The vector of `text` if it is pinned (which unpins it) or known; unlike
    /// [`lookup`](Self::lookup) a miss registers nothing (the caller does not embed it now).
    pub fn get(&mut self, text: &str) -> Option<Vec<f32>> {
        if let Some(vector) = self.pinned.remove(text) {
            self.pin_order.retain(|pinned| &**pinned != text);
            return Some(vector);
        }
        if !self.entries.contains_key(text) {
            return None;
        }
        match self.lookup(text) {
            Lookup::Hit(vector) => Some(vector),
            Lookup::Wait(_) | Lookup::Lead => None,
        }
    }

    /// The embedding of `text` that `lookup` asked for is done: keeps the vector (if any) and
    /// hands it to whoever waits.
    pub fn finish(&mut self, text: &str, vector: Option<&[f32]>) {
        let waiters = self.flights.remove(text).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(vector.map(<[f32]>::to_vec));
        }
        if let Some(vector) = vector {
            self.insert(text, vector.to_vec());
        }
    }

    /// Keeps the vector of `text`, forgetting the least recently used beyond the capacity.
    pub fn insert(&mut self, text: &str, vector: Vec<f32>) {
        self.tick += 1;
        let key: Arc<str> = Arc::from(text);
        if let Some(old) = self.entries.insert(key.clone(), Entry { vector, stamp: self.tick }) {
            self.order.remove(&old.stamp);
        }
        self.order.insert(self.tick, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cache: &mut EmbeddingCache, text: &str) -> Option<Vec<f32>> {
        match cache.lookup(text) {
            Lookup::Hit(vector) => Some(vector),
            Lookup::Lead => {
                cache.finish(text, None);
                None
            }
            Lookup::Wait(_) => panic!("nothing is in flight"),
        }
    }

    #[test]
    fn the_least_recently_used_text_is_forgotten_first() {
        let mut cache = EmbeddingCache::new(2);
        cache.insert("a", vec![1.0]);
        cache.insert("b", vec![2.0]);
        assert_eq!(hit(&mut cache, "a"), Some(vec![1.0]));
        cache.insert("c", vec![3.0]);
        assert_eq!(cache.len(), 2);
        assert_eq!(hit(&mut cache, "b"), None, "b was used least recently");
        assert_eq!(hit(&mut cache, "a"), Some(vec![1.0]));
        assert_eq!(hit(&mut cache, "c"), Some(vec![3.0]));
        cache.insert("c", vec![4.0]);
        assert_eq!((cache.len(), hit(&mut cache, "c")), (2, Some(vec![4.0])), "replaced, not added");
    }

    #[tokio::test]
    async fn a_text_being_embedded_is_waited_for_not_embedded_again() {
        let mut cache = EmbeddingCache::new(8);
        assert!(matches!(cache.lookup("hello"), Lookup::Lead));
        let Lookup::Wait(waiter) = cache.lookup("hello") else { panic!("expected to wait") };
        cache.finish("hello", Some(&[0.5, 0.5]));
        assert_eq!(waiter.await.unwrap(), Some(vec![0.5, 0.5]));
        assert!(matches!(cache.lookup("hello"), Lookup::Hit(_)));

        // A failed embedding is not kept; whoever waited learns it failed; the next one leads.
        assert!(matches!(cache.lookup("bye"), Lookup::Lead));
        let Lookup::Wait(waiter) = cache.lookup("bye") else { panic!("expected to wait") };
        cache.finish("bye", None);
        assert_eq!(waiter.await.unwrap(), None);
        assert!(matches!(cache.lookup("bye"), Lookup::Lead));
    }

    #[test]
    fn get_answers_hits_only_and_never_starts_a_flight() {
        let mut cache = EmbeddingCache::new(8);
        assert_eq!(cache.get("new"), None);
        assert!(matches!(cache.lookup("new"), Lookup::Lead), "a miss of get is not a flight");
        assert_eq!(cache.get("new"), None, "in flight is not known");
        cache.finish("new", Some(&[1.0]));
        assert_eq!(cache.get("new"), Some(vec![1.0]));
    }

    #[test]
    fn a_pinned_draft_outlives_the_lru_until_get_takes_it() {
        let mut cache = EmbeddingCache::new(1);
        cache.pin("draft", vec![7.0]);
        for text in ["a", "b", "c"] {
            cache.insert(text, vec![0.0]);
        }
        assert_eq!(cache.get("draft"), Some(vec![7.0]), "kept while other texts came and went");
        assert_eq!(cache.get("draft"), None, "taken once");

        // Past PINNED, the oldest pin goes.
        for n in 0..=PINNED {
            cache.pin(&format!("draft {n}"), vec![n as f32]);
        }
        assert_eq!(cache.get("draft 0"), None);
        assert_eq!(cache.get("draft 1"), Some(vec![1.0]));
        assert_eq!(cache.get(&format!("draft {PINNED}")), Some(vec![PINNED as f32]));
        assert_eq!(cache.pinned.len(), PINNED - 2);
        assert_eq!(cache.pin_order.len(), PINNED - 2);
    }
}
