//! The embedded catalog: collections, documents, jobs (with their parsed documents) and idempotency
//! keys in one redb file. Every write is one fsynced transaction, so a job stored here has been
//! acknowledged for good.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use ragd_core::catalog::{Catalog, IdempotencyKey, JobCreated, JobFilter};
use ragd_core::types::{CollectionRecord, DocumentRecord, JobRecord, JobStatus, PendingDocument};
use ragd_core::{Error, Result};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");
const DOCUMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("documents");
const DOC_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("document_counts");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const PAYLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_payloads");
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency_keys");

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    job_id: String,
    request_hash: String,
}

#[derive(Clone)]
pub struct RedbCatalog {
    db: Arc<Database>,
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("catalog: {e}"))
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(db_err)
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(db_err)
}

impl RedbCatalog {
    pub fn open(path: &Path) -> Result<RedbCatalog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| Error::internal(format!("cannot open catalog {}: {e}", path.display())))?;
        // Create every table up front so read transactions never meet a missing one.
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(COLLECTIONS).map_err(db_err)?;
        tx.open_table(DOCUMENTS).map_err(db_err)?;
        tx.open_table(DOC_COUNTS).map_err(db_err)?;
        tx.open_table(JOBS).map_err(db_err)?;
        tx.open_table(PAYLOADS).map_err(db_err)?;
        tx.open_table(IDEMPOTENCY).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(RedbCatalog { db: Arc::new(db) })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| Error::internal(format!("catalog task failed: {e}")))?
    }
}

#[async_trait]
impl Catalog for RedbCatalog {
    async fn create_collection(&self, record: CollectionRecord) -> Result<()> {
        self.run(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut t = tx.open_table(COLLECTIONS).map_err(db_err)?;
                if t.get(record.name.as_str()).map_err(db_err)?.is_some() {
                    return Err(Error::conflict("collection_exists", format!("collection `{}` already exists", record.name)));
                }
                t.insert(record.name.as_str(), enc(&record)?.as_slice()).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get_collection(&self, name: &str) -> Result<Option<CollectionRecord>> {
        let name = name.to_owned();
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(COLLECTIONS).map_err(db_err)?;
            t.get(name.as_str()).map_err(db_err)?.map(|v| dec(v.value())).transpose()
        })
        .await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionRecord>> {
        self.run(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(COLLECTIONS).map_err(db_err)?;
            t.iter().map_err(db_err)?.map(|e| dec(e.map_err(db_err)?.1.value())).collect()
        })
        .await
    }

    async fn delete_collection(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.run(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            let existed;
            {
                existed = tx.open_table(COLLECTIONS).map_err(db_err)?.remove(name.as_str()).map_err(db_err)?.is_some();
                tx.open_table(DOC_COUNTS).map_err(db_err)?.remove(name.as_str()).map_err(db_err)?;
                let mut docs = tx.open_table(DOCUMENTS).map_err(db_err)?;
                docs.retain_in((name.as_str(), "")..=(name.as_str(), "\u{10FFFF}\u{10FFFF}"), |k, _| k.0 != name.as_str())
                    .map_err(db_err)?;
                let mut keys = tx.open_table(IDEMPOTENCY).map_err(db_err)?;
                keys.retain_in((name.as_str(), "")..=(name.as_str(), "\u{10FFFF}\u{10FFFF}"), |k, _| k.0 != name.as_str())
                    .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(existed)
        })
        .await
    }

    async fn get_document(&self, collection: &str, id: &str) -> Result<Option<DocumentRecord>> {
        let (c, id) = (collection.to_owned(), id.to_owned());
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(DOCUMENTS).map_err(db_err)?;
            t.get((c.as_str(), id.as_str())).map_err(db_err)?.map(|v| dec(v.value())).transpose()
        })
        .await
    }

    async fn list_documents(&self, collection: &str, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>> {
        let (c, after) = (collection.to_owned(), after.map(str::to_owned));
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(DOCUMENTS).map_err(db_err)?;
            let start = after.as_deref().unwrap_or("");
            let mut out = Vec::new();
            for entry in t.range((c.as_str(), start)..).map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let (kc, kid) = k.value();
                if kc != c {
                    break;
                }
                if after.as_deref() == Some(kid) {
                    continue;
                }
                out.push(dec(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn count_documents(&self, collection: &str) -> Result<u64> {
        let c = collection.to_owned();
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(DOC_COUNTS).map_err(db_err)?;
            Ok(t.get(c.as_str()).map_err(db_err)?.map(|v| v.value()).unwrap_or(0))
        })
        .await
    }

    async fn commit_documents(&self, collection: &str, documents: Vec<DocumentRecord>, job: &JobRecord) -> Result<()> {
        let (c, job) = (collection.to_owned(), job.clone());
        self.run(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut docs = tx.open_table(DOCUMENTS).map_err(db_err)?;
                let mut added = 0u64;
                for d in &documents {
                    if docs.insert((c.as_str(), d.id.as_str()), enc(d)?.as_slice()).map_err(db_err)?.is_none() {
                        added += 1;
                    }
                }
                let mut counts = tx.open_table(DOC_COUNTS).map_err(db_err)?;
                let n = counts.get(c.as_str()).map_err(db_err)?.map(|v| v.value()).unwrap_or(0);
                counts.insert(c.as_str(), n + added).map_err(db_err)?;
                tx.open_table(JOBS).map_err(db_err)?.insert(job.id.as_str(), enc(&job)?.as_slice()).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn delete_document(&self, collection: &str, id: &str) -> Result<bool> {
        let (c, id) = (collection.to_owned(), id.to_owned());
        self.run(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            let existed;
            {
                existed = tx.open_table(DOCUMENTS).map_err(db_err)?.remove((c.as_str(), id.as_str())).map_err(db_err)?.is_some();
                if existed {
                    let mut counts = tx.open_table(DOC_COUNTS).map_err(db_err)?;
                    let n = counts.get(c.as_str()).map_err(db_err)?.map(|v| v.value()).unwrap_or(0);
                    counts.insert(c.as_str(), n.saturating_sub(1)).map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(existed)
        })
        .await
    }

    async fn create_job(&self, job: JobRecord, payload: Vec<PendingDocument>, key: Option<IdempotencyKey>) -> Result<JobCreated> {
        self.run(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                if let Some(key) = &key {
                    let mut keys = tx.open_table(IDEMPOTENCY).map_err(db_err)?;
                    let seen: Option<KeyEntry> =
                        keys.get((job.collection.as_str(), key.key.as_str())).map_err(db_err)?.map(|v| dec(v.value())).transpose()?;
                    if let Some(seen) = seen {
                        if seen.request_hash != key.request_hash {
                            return Err(Error::conflict(
                                "idempotency_key_reused",
                                "this Idempotency-Key was already used with a different request",
                            ));
                        }
                        let jobs = tx.open_table(JOBS).map_err(db_err)?;
                        if let Some(v) = jobs.get(seen.job_id.as_str()).map_err(db_err)? {
                            return Ok(JobCreated::Replayed(dec(v.value())?));
                        }
                    }
                    let entry = KeyEntry { job_id: job.id.clone(), request_hash: key.request_hash.clone() };
                    keys.insert((job.collection.as_str(), key.key.as_str()), enc(&entry)?.as_slice()).map_err(db_err)?;
                }
                tx.open_table(JOBS).map_err(db_err)?.insert(job.id.as_str(), enc(&job)?.as_slice()).map_err(db_err)?;
                tx.open_table(PAYLOADS).map_err(db_err)?.insert(job.id.as_str(), enc(&payload)?.as_slice()).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(JobCreated::New(job))
        })
        .await
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_owned();
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(JOBS).map_err(db_err)?;
            t.get(id.as_str()).map_err(db_err)?.map(|v| dec(v.value())).transpose()
        })
        .await
    }

    async fn update_job(&self, job: &JobRecord) -> Result<()> {
        let job = job.clone();
        self.run(move |db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                tx.open_table(JOBS).map_err(db_err)?.insert(job.id.as_str(), enc(&job)?.as_slice()).map_err(db_err)?;
                if job.status.is_finished() {
                    tx.open_table(PAYLOADS).map_err(db_err)?.remove(job.id.as_str()).map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn job_payload(&self, id: &str) -> Result<Option<Vec<PendingDocument>>> {
        let id = id.to_owned();
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(PAYLOADS).map_err(db_err)?;
            t.get(id.as_str()).map_err(db_err)?.map(|v| dec(v.value())).transpose()
        })
        .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        self.run(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let payloads = tx.open_table(PAYLOADS).map_err(db_err)?;
            let jobs = tx.open_table(JOBS).map_err(db_err)?;
            let mut out = Vec::new();
            // Only unfinished jobs keep a payload, so scanning payloads avoids reading every job ever run.
            for entry in payloads.iter().map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                if let Some(v) = jobs.get(k.value()).map_err(db_err)? {
                    let job: JobRecord = dec(v.value())?;
                    if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
                        out.push(job);
                    }
                }
            }
            out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
            Ok(out)
        })
        .await
    }

    async fn recent_jobs(&self, limit: usize, keep: JobFilter) -> Result<Vec<JobRecord>> {
        self.run(move |db| {
            let tx = db.begin_read().map_err(db_err)?;
            let jobs = tx.open_table(JOBS).map_err(db_err)?;
            // Job ids are random, so this reads every job; a dashboard's listing of a local catalog
            // is the only caller. Keeps at most `limit` in memory.
            let mut out: Vec<JobRecord> = Vec::with_capacity(limit + 1);
            for entry in jobs.iter().map_err(db_err)? {
                let (_, v) = entry.map_err(db_err)?;
                let job: JobRecord = dec(v.value())?;
                if !keep(&job.collection) {
                    continue;
                }
                let at = out.partition_point(|j| j.created_at > job.created_at);
                if at < limit {
                    out.insert(at, job);
                    out.truncate(limit);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn backup(&self, dest: &Path) -> Result<()> {
        let dest = dest.to_owned();
        self.run(move |db| {
            if dest.exists() {
                return Err(Error::internal(format!("{} exists already", dest.display())));
            }
            let copy = Database::create(&dest).map_err(|e| Error::internal(format!("cannot create {}: {e}", dest.display())))?;
            // One read transaction: every table as of the same moment.
            let from = db.begin_read().map_err(db_err)?;
            let to = copy.begin_write().map_err(db_err)?;
            copy_table(&from, &to, COLLECTIONS)?;
            copy_table(&from, &to, DOCUMENTS)?;
            copy_table(&from, &to, DOC_COUNTS)?;
            copy_table(&from, &to, JOBS)?;
            copy_table(&from, &to, PAYLOADS)?;
            copy_table(&from, &to, IDEMPOTENCY)?;
            to.commit().map_err(db_err)
        })
        .await
    }
}

/// Copies every row of one table (the copy's table is created, empty or not).
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<()> {
    let source = from.open_table(table).map_err(db_err)?;
    let mut target = to.open_table(table).map_err(db_err)?;
    for row in source.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        target.insert(k.value(), v.value()).map_err(db_err)?;
    }
    Ok(())
}
