//! Embedding requests joined while the embedder is busy.
//!
//! Every `LlmMsg::Embed` becomes a job in the pool's [`EmbedQueue`]. At most `max_in_flight`
//! drivers (`llm.embedding.max_in_flight`) run at once; a driver takes the jobs waiting (whole
//! jobs, up to [`MAX_TEXTS`] texts), sends their texts as one request and answers each job with
//! its own vectors, until none wait. While the embedder keeps up, each job is a request of its
//! own, as before (but for jobs queued before a new driver first looks, which it takes
//! together); when it does not, the texts that wait go together. Requests then stay near
//! `max_in_flight` a round trip whatever the load (an embedding API's request limit is not the
//! bound), and a text waits at most for the requests ahead of it, never for a timer.

use std::collections::VecDeque;
use std::sync::Mutex;

use ractor::RpcReplyPort;

use super::{Embeddings, LlmError};

/// Texts one request carries at most (OpenAI's `/embeddings` takes up to 2,048 inputs). A job
/// with more goes alone.
pub const MAX_TEXTS: usize = 256;

/// Texts that may wait at most; a job that would pass this is refused at once
/// ([`LlmError::QueueFull`]), as a full provider queue refuses a completion. 32 full requests.
pub const MAX_WAITING_TEXTS: usize = 32 * MAX_TEXTS;

/// Where a job's vectors go.
pub type EmbedReply = RpcReplyPort<Result<Embeddings, LlmError>>;

/// One caller's texts, embedded together or with other callers'.
pub struct Job {
    pub texts: Vec<String>,
    pub reply: EmbedReply,
}

/// The jobs that wait for a request, and how many drivers send them.
pub struct EmbedQueue {
    max_in_flight: usize,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// The texts of `jobs`.
    texts: usize,
    drivers: usize,
}

/// What [`EmbedQueue::push`] did with a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; the caller is to start a driver: it calls [`EmbedQueue::next`] and answers each
    /// batch until `next` answers `None`.
    StartDriver,
    /// Queued for a driver that runs.
    Queued,
    /// Refused: [`MAX_WAITING_TEXTS`] wait already. The job's caller has been answered.
    Refused,
}

impl EmbedQueue {
    pub fn new(max_in_flight: usize) -> Self {
        Self { max_in_flight: max_in_flight.max(1), waiting: Mutex::default() }
    }

    /// Queues a job, or refuses it when [`MAX_WAITING_TEXTS`] would be passed (a job never
    /// waits behind a full queue; one alone is always queued), answering it with
    /// [`LlmError::QueueFull`] for `provider`.
    pub fn push(&self, job: Job, provider: &str) -> Pushed {
        let mut waiting = crate::sync::lock(&self.waiting);
        if !waiting.jobs.is_empty() && waiting.texts + job.texts.len() > MAX_WAITING_TEXTS {
            drop(waiting);
            let _ = job.reply.send(Err(super::queue_full(provider)));
            return Pushed::Refused;
        }
        waiting.texts += job.texts.len();
        waiting.jobs.push_back(job);
        if waiting.drivers < self.max_in_flight {
            waiting.drivers += 1;
            return Pushed::StartDriver;
        }
        Pushed::Queued
    }

    /// A driver's next batch: the waiting jobs in order, whole, up to [`MAX_TEXTS`] texts (at
    /// least one job). Jobs whose callers stopped waiting (a timeout) are dropped, not sent.
    /// `None` when no job waits; the driver is then counted out, under the same lock as `push`
    /// counts in, so a job queued after it is never left without a driver.
    pub fn next(&self) -> Option<Batch> {
        let mut waiting = crate::sync::lock(&self.waiting);
        let mut batch = Batch { texts: Vec::new(), jobs: Vec::new() };
        while let Some(job) = waiting.jobs.front() {
            if job.reply.is_closed() {
                waiting.texts -= job.texts.len();
                waiting.jobs.pop_front();
                tracing::debug!("an embedding request's caller stopped waiting; its texts are not sent");
                continue;
            }
            if !batch.jobs.is_empty() && batch.texts.len() + job.texts.len() > MAX_TEXTS {
                break;
            }
            let Some(job) = waiting.jobs.pop_front() else { break };
            waiting.texts -= job.texts.len();
            batch.jobs.push((job.texts.len(), job.reply));
            batch.texts.extend(job.texts);
        }
        if batch.jobs.is_empty() {
            waiting.drivers -= 1;
            return None;
        }
        Some(batch)
    }
}

/// Held by a driver while it runs: a driver that ends by a panic is counted out here (one that
/// ends normally is counted out by [`EmbedQueue::next`]), so a panic never leaves the queue
/// believing drivers run that do not; the next job starts one.
pub struct Driving<'a>(&'a EmbedQueue);

impl<'a> Driving<'a> {
    pub fn new(queue: &'a EmbedQueue) -> Self {
        Self(queue)
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::sync::lock(&self.0.waiting).drivers -= 1;
        }
    }
}

/// Jobs sent as one request.
pub struct Batch {
    texts: Vec<String>,
    /// Each job's number of texts, in order, and its reply.
    jobs: Vec<(usize, EmbedReply)>,
}

impl Batch {
    /// Every job's texts, in job order.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The jobs in this batch.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Answers every job with its own vectors from `result`, and a share of its tokens; an
    /// error, or an answer with the wrong number of vectors, goes to every job.
    pub fn answer(self, result: Result<Embeddings, LlmError>, provider: &str) {
        let embeddings = match result {
            Ok(embeddings) if embeddings.vectors.len() == self.texts.len() => embeddings,
            Ok(embeddings) => {
                let err = LlmError::Malformed {
                    provider: provider.to_owned(),
                    detail: format!("{} vectors for {} texts", embeddings.vectors.len(), self.texts.len()),
                };
                return self.fail(err);
            }
            Err(err) => return self.fail(err),
        };
        let total = self.texts.len().max(1) as u64;
        let Embeddings { vectors, model, tokens } = embeddings;
        let mut vectors = vectors.into_iter();
        for (count, reply) in self.jobs {
            let share = (u64::from(tokens) * count as u64 / total) as u32;
            let own =
                Embeddings { vectors: vectors.by_ref().take(count).collect(), model: model.clone(), tokens: share };
            let _ = reply.send(Ok(own));
        }
    }

    fn fail(self, err: LlmError) {
        for (_, reply) in self.jobs {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn job(texts: &[&str]) -> (Job, oneshot::Receiver<Result<Embeddings, LlmError>>) {
        let (tx, rx) = oneshot::channel();
        (Job { texts: texts.iter().map(|t| (*t).to_owned()).collect(), reply: tx.into() }, rx)
    }

    fn vectors_of(texts: &[String]) -> Embeddings {
        let vectors = texts.iter().map(|t| vec![t.len() as f32]).collect();
        Embeddings { vectors, model: "m".to_owned(), tokens: texts.len() as u32 * 10 }
    }

    #[test]
    fn jobs_past_the_drivers_wait_and_go_together_each_answered_with_its_own_vectors() {
        let queue = EmbedQueue::new(1);
        let (first, mut first_rx) = job(&["a"]);
        assert_eq!(queue.push(first, "p"), Pushed::StartDriver, "the first job starts a driver");
        let batch = queue.next().unwrap();
        assert_eq!(batch.texts(), ["a"]);
        // While the driver's request is out, two more jobs wait; neither starts a driver.
        let (second, mut second_rx) = job(&["bb", "ccc"]);
        let (third, mut third_rx) = job(&["dddd"]);
        assert_eq!(queue.push(second, "p"), Pushed::Queued);
        assert_eq!(queue.push(third, "p"), Pushed::Queued);
        let texts = batch.texts().to_vec();
        batch.answer(Ok(vectors_of(&texts)), "p");
        assert_eq!(first_rx.try_recv().unwrap().unwrap().vectors, vec![vec![1.0]]);

        let batch = queue.next().unwrap();
        assert_eq!(batch.texts(), ["bb", "ccc", "dddd"], "one request for both waiting jobs");
        assert_eq!(batch.jobs(), 2);
        let texts = batch.texts().to_vec();
        batch.answer(Ok(vectors_of(&texts)), "p");
        let second = second_rx.try_recv().unwrap().unwrap();
        assert_eq!(second.vectors, vec![vec![2.0], vec![3.0]]);
        assert_eq!(second.tokens, 20);
        assert_eq!(third_rx.try_recv().unwrap().unwrap().vectors, vec![vec![4.0]]);

        assert!(queue.next().is_none(), "the driver stops when none wait");
        let (fourth, _rx) = job(&["e"]);
        assert_eq!(queue.push(fourth, "p"), Pushed::StartDriver, "and the next job starts one again");
    }

    #[test]
    fn a_batch_stops_at_the_text_limit_and_skips_callers_that_left() {
        let queue = EmbedQueue::new(1);
        let big: Vec<String> = (0..MAX_TEXTS - 1).map(|n| n.to_string()).collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        let (gone, gone_rx) = job(&["gone"]);
        let (first, _first_rx) = job(&big);
        let (second, _second_rx) = job(&["x", "y"]);
        queue.push(gone, "p");
        queue.push(first, "p");
        queue.push(second, "p");
        drop(gone_rx);
        let batch = queue.next().unwrap();
        assert_eq!(
            batch.texts().len(),
            MAX_TEXTS - 1,
            "the caller that left is not sent, the next job would pass the limit"
        );
        assert_eq!(queue.next().unwrap().texts(), ["x", "y"]);
        assert!(queue.next().is_none());
    }

    #[test]
    fn a_failure_or_a_short_answer_reaches_every_job() {
        let queue = EmbedQueue::new(2);
        let (first, mut first_rx) = job(&["a"]);
        let (second, mut second_rx) = job(&["b"]);
        queue.push(first, "p");
        queue.push(second, "p");
        let batch = queue.next().unwrap();
        batch.answer(Ok(vectors_of(&["a".to_owned()])), "p");
        for rx in [&mut first_rx, &mut second_rx] {
            assert!(matches!(rx.try_recv().unwrap(), Err(LlmError::Malformed { .. })));
        }
        assert!(queue.next().is_none(), "one driver of two finds none waiting");
        let (third, mut third_rx) = job(&["c"]);
        assert_eq!(queue.push(third, "p"), Pushed::StartDriver, "so the next job starts a driver");
        let batch = queue.next().unwrap();
        batch.answer(Err(LlmError::Timeout { provider: "p".to_owned() }), "p");
        assert_eq!(third_rx.try_recv().unwrap(), Err(LlmError::Timeout { provider: "p".to_owned() }));
    }

    #[test]
    fn a_driver_that_panics_is_counted_out() {
        let queue = EmbedQueue::new(1);
        let (first, _first_rx) = job(&["a"]);
        assert_eq!(queue.push(first, "p"), Pushed::StartDriver);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _driving = Driving::new(&queue);
            let _batch = queue.next().unwrap();
            panic!("the embedder panicked");
        }));
        assert!(panicked.is_err());
        let (second, _second_rx) = job(&["b"]);
        assert_eq!(queue.push(second, "p"), Pushed::StartDriver, "the driver's place is free again");
    }

    #[test]
    fn a_job_past_the_waiting_limit_is_refused_at_once() {
        let queue = EmbedQueue::new(1);
        let texts: Vec<String> = (0..MAX_TEXTS).map(|n| n.to_string()).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut receivers = Vec::new();
        for _ in 0..MAX_WAITING_TEXTS / MAX_TEXTS {
            let (full, rx) = job(&texts);
            assert_ne!(queue.push(full, "p"), Pushed::Refused);
            receivers.push(rx);
        }
        let (one_more, mut refused) = job(&["x"]);
        assert_eq!(queue.push(one_more, "p"), Pushed::Refused);
        assert_eq!(refused.try_recv().unwrap(), Err(LlmError::QueueFull { provider: "p".to_owned() }));
        // A batch sent makes room again.
        queue.next().unwrap();
        let (after, _rx) = job(&["y"]);
        assert_eq!(queue.push(after, "p"), Pushed::Queued);
    }
}
