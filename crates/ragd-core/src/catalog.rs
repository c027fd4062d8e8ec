//! The `Catalog` trait: durable bookkeeping beside the vectors — collections, documents, jobs and
//! their payloads, idempotency keys. Embedded mode keeps it in a local redb file.

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{CollectionRecord, DocumentRecord, JobRecord, PendingDocument};

/// What `create_job` did with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCreated {
    /// A new job was stored (and must be queued).
    New(JobRecord),
    /// The key was seen before with the same request: the earlier job.
    Replayed(JobRecord),
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// Hash of the request body, so the same key with another body is refused.
    pub request_hash: String,
}

/// Which jobs a listing may show, by their (stored) collection name.
pub type JobFilter = Box<dyn Fn(&str) -> bool + Send + 'static>;

#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Stores a new collection; `Conflict(collection_exists)` if the name is taken.
    async fn create_collection(&self, record: CollectionRecord) -> Result<()>;
    async fn get_collection(&self, name: &str) -> Result<Option<CollectionRecord>>;
    async fn list_collections(&self) -> Result<Vec<CollectionRecord>>;
    /// Removes the collection with its documents and idempotency keys; false if it did not exist.
    async fn delete_collection(&self, name: &str) -> Result<bool>;

    async fn get_document(&self, collection: &str, id: &str) -> Result<Option<DocumentRecord>>;
    /// Documents ordered by id, starting strictly after `after`.
    async fn list_documents(&self, collection: &str, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>>;
    async fn count_documents(&self, collection: &str) -> Result<u64>;
    /// Records documents as ingested and saves the job's progress, in one transaction.
    async fn commit_documents(&self, collection: &str, documents: Vec<DocumentRecord>, job: &JobRecord) -> Result<()>;
    async fn delete_document(&self, collection: &str, id: &str) -> Result<bool>;

    /// Stores a job with its documents durably (this is the acknowledgement point), honouring an
    /// idempotency key: the same key and body return the first job; another body is a conflict.
    async fn create_job(&self, job: JobRecord, payload: Vec<PendingDocument>, key: Option<IdempotencyKey>) -> Result<JobCreated>;
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Saves a job's status; a finished job's payload is dropped.
    async fn update_job(&self, job: &JobRecord) -> Result<()>;
    async fn job_payload(&self, id: &str) -> Result<Option<Vec<PendingDocument>>>;
    /// Jobs that are queued or running (after a crash: to be resumed).
    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>>;
    /// The `limit` most recently created jobs whose collection `keep` accepts, newest first.
    async fn recent_jobs(&self, limit: usize, keep: JobFilter) -> Result<Vec<JobRecord>>;
    /// Writes a consistent copy of the whole catalog (as of one moment) to a new file `dest`, which
    /// opens as a catalog of its own (a snapshot's `catalog.redb`).
    async fn backup(&self, dest: &std::path::Path) -> Result<()>;
}
