//! Where acknowledged jobs wait for a worker. By default the queue is this process's channel; in
//! cluster mode replicas share one (Redis Streams with a consumer group, in ragd-store), so any
//! replica can accept a document, any can process it, and a job whose worker died is claimed by
//! another once it has been silent for `ingest.job_stale_secs`.
//!
//! The catalog stays the truth about a job; the queue only says who works on it. A queue that lost
//! its entries (a Redis restarted without persistence) is refilled from the catalog's unfinished
//! jobs by the replica that notices first.

use std::time::Duration;

use async_trait::async_trait;

/// A job handed to this replica, with what the queue needs to acknowledge it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub job_id: String,
    /// The queue's own id of the entry.
    pub token: String,
}

impl Delivery {
    /// How long ago the entry was queued, when its token says (Redis stream ids start with the
    /// milliseconds of their creation).
    pub fn age(&self) -> Option<Duration> {
        let ms: u64 = self.token.split('-').next()?.parse().ok()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(ms)))
    }
}

#[derive(Debug, PartialEq)]
pub enum Popped {
    Job(Delivery),
    /// Nothing within the wait.
    Nothing,
    /// The queue was empty of history (created just now): the caller re-offers the catalog's
    /// unfinished jobs.
    Reset,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Offers a job to every replica's workers. `Err`: the queue is unreachable (the caller then
    /// runs the job itself).
    async fn push(&self, job_id: &str) -> Result<(), String>;
    /// The next job for this replica, a silent replica's job first; waits up to `wait`.
    async fn pop(&self, wait: Duration) -> Result<Popped, String>;
    /// The job is finished (done or failed): no one runs it again.
    async fn ack(&self, delivery: &Delivery) -> Result<(), String>;
    /// The job's worker made progress: other replicas leave it alone.
    async fn touch(&self, delivery: &Delivery) -> Result<(), String>;
    /// The jobs the queue holds (waiting or taken), to find unfinished jobs it lost.
    async fn job_ids(&self) -> Result<std::collections::HashSet<String>, String>;
    /// Forgets consumers (replicas that are gone) holding no job and silent for `idle`; a replica
    /// that holds jobs is never forgotten (its jobs are claimed instead).
    async fn forget_idle_consumers(&self, _idle: Duration) -> Result<(), String> {
        Ok(())
    }
    /// At start-up: makes sure the queue exists; `true` when it had to be created, i.e. it holds
    /// none of the unfinished jobs and they must be offered again.
    async fn prepare(&self) -> Result<bool, String>;
}
