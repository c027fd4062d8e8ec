//! The cluster catalog: collections, documents, jobs (with their parsed documents) and idempotency
//! keys as payload-only points of one Qdrant collection, `<collection_prefix>@catalog`, replicated
//! like the data (`replication_factor`, `write_consistency_factor`, writes with `wait = true`). So
//! the catalog survives what the vectors survive, and replicas keep nothing of their own.
//!
//! Each record is one point whose id is a `uuid5` of its kind and key (a rewrite overwrites) and whose
//! payload holds the record as JSON (`data`) beside the fields the catalog filters on (`kind`,
//! `coll`, `job`, `status`). Qdrant has no multi-point transactions, so writes are ordered to keep
//! the invariants: a job's payload is written before the job (a visible job has its documents), a
//! batch's documents before the job's progress (progress never claims a document that is not
//! recorded; a crash in between re-commits the same documents, which overwrite).
//!
//! Known costs: listing a collection's documents reads every document record of the collection
//! (Qdrant orders scrolls by point id, not by document id), and listing recent jobs reads every job.

use std::collections::HashMap;

use async_trait::async_trait;
use qdrant_client::Payload;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, FieldType,
    Filter, GetPointsBuilder, NamedVectors, PointId, PointStruct, ScrollPointsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Value as QValue, WriteOrdering,
    WriteOrderingType,
};
use ragd_core::catalog::{Catalog, IdempotencyKey, JobCreated, JobFilter};
use ragd_core::types::{CollectionRecord, DocumentRecord, JobRecord, JobStatus, PendingDocument};
use ragd_core::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::qdrant::QdrantStore;

/// Pending documents per payload point, and points per upsert request.
const DOCS_PER_POINT: usize = 64;
const POINTS_PER_WRITE: usize = 64;
const SCROLL_PAGE: u32 = 1_000;

#[derive(Clone)]
pub struct QdrantCatalog {
    store: QdrantStore,
    name: String,
}

fn id(kind: &str, a: &str, b: &str) -> String {
    let mut key = Vec::with_capacity(kind.len() + a.len() + b.len() + 2);
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    Uuid::new_v5(&Uuid::NAMESPACE_OID, &key).to_string()
}

fn enc<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("catalog: {e}")))
}

fn dec<T: DeserializeOwned>(payload: HashMap<String, QValue>) -> Result<T> {
    let json = Value::from(Payload::from(payload));
    let data = json.get("data").and_then(Value::as_str).ok_or_else(|| Error::internal("catalog: a record without data"))?;
    serde_json::from_str(data).map_err(|e| Error::internal(format!("catalog: {e}")))
}

fn point(id: String, fields: Value) -> Result<PointStruct> {
    let Value::Object(map) = fields else { return Err(Error::internal("catalog: fields are not an object")) };
    Ok(PointStruct::new(id, NamedVectors::default(), Payload::from(map)))
}

fn kind(k: &str) -> Condition {
    keyword("kind", k)
}

fn keyword(field: &str, v: &str) -> Condition {
    Condition::matches(field, qdrant_client::qdrant::r#match::MatchValue::Keyword(v.to_owned()))
}

fn strong() -> WriteOrdering {
    WriteOrdering { r#type: WriteOrderingType::Medium as i32 }
}

impl QdrantCatalog {
    /// Opens the catalog on the store's cluster, creating its collection and indexes when missing.
    pub async fn open(store: QdrantStore) -> Result<QdrantCatalog> {
        let name = store.qdrant_name("@catalog");
        let this = QdrantCatalog { store, name };
        this.ensure().await?;
        Ok(this)
    }

    async fn ensure(&self) -> Result<()> {
        // No dense vector: records are payloads. Qdrant wants some vector config, so an unused sparse one.
        let vectors = |b: CreateCollectionBuilder| {
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params("unused", SparseVectorParamsBuilder::default());
            b.sparse_vectors_config(sparse)
        };
        let indexes = ["kind", "coll", "job", "status"].map(|f| (f, FieldType::Keyword));
        self.store.ensure_collection(&self.name, 1, vectors, &indexes).await
    }

    async fn put(&self, points: Vec<PointStruct>) -> Result<()> {
        for part in points.chunks(POINTS_PER_WRITE) {
            let part = part.to_vec();
            let q = self.name.clone();
            self.store
                .call("catalog upsert", None, |c| Box::pin(c.upsert_points(UpsertPointsBuilder::new(q.clone(), part.clone()).wait(true).ordering(strong()))))
                .await?;
        }
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, id: String) -> Result<Option<T>> {
        let q = self.name.clone();
        let got = self
            .store
            .call("catalog get", None, |c| {
                Box::pin(c.get_points(GetPointsBuilder::new(q.clone(), vec![PointId::from(id.clone())]).with_payload(true)))
            })
            .await?;
        got.result.into_iter().next().map(|p| dec(p.payload)).transpose()
    }

    async fn delete(&self, filter: Filter) -> Result<()> {
        let q = self.name.clone();
        self.store
            .call("catalog delete", None, |c| Box::pin(c.delete_points(DeletePointsBuilder::new(q.clone()).points(filter.clone()).wait(true).ordering(strong()))))
            .await?;
        Ok(())
    }

    async fn delete_ids(&self, ids: Vec<String>) -> Result<()> {
        let q = self.name.clone();
        let ids: Vec<PointId> = ids.into_iter().map(PointId::from).collect();
        self.store
            .call("catalog delete", None, |c| {
                Box::pin(c.delete_points(
                    DeletePointsBuilder::new(q.clone())
                        .points(qdrant_client::qdrant::PointsIdsList { ids: ids.clone() })
                        .wait(true)
                        .ordering(strong()),
                ))
            })
            .await?;
        Ok(())
    }

    /// Every record matching `filter`, page by page.
    async fn scroll<T: DeserializeOwned>(&self, filter: Filter) -> Result<Vec<T>> {
        let q = self.name.clone();
        let mut out = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let page = self
                .store
                .call("catalog scroll", None, |c| {
                    let mut b = ScrollPointsBuilder::new(q.clone()).filter(filter.clone()).limit(SCROLL_PAGE).with_payload(true);
                    if let Some(o) = &offset {
                        b = b.offset(o.clone());
                    }
                    Box::pin(c.scroll(b))
                })
                .await?;
            for p in page.result {
                out.push(dec(p.payload)?);
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(out),
            }
        }
    }

    async fn count(&self, filter: Filter) -> Result<u64> {
        let q = self.name.clone();
        let r = self.store.call("catalog count", None, |c| Box::pin(c.count(CountPointsBuilder::new(q.clone()).filter(filter.clone()).exact(true)))).await?;
        Ok(r.result.map(|r| r.count).unwrap_or(0))
    }

    /// Records documents as ingested without a job (`ragd cluster import`).
    pub async fn put_documents(&self, collection: &str, documents: Vec<DocumentRecord>) -> Result<()> {
        let docs = documents.iter().map(|d| Self::doc_point(collection, d)).collect::<Result<Vec<_>>>()?;
        self.put(docs).await
    }

    /// Writes a collection's record, replacing an existing one (`ragd cluster import --replace`).
    pub async fn put_collection(&self, record: CollectionRecord) -> Result<()> {
        self.put(vec![point(id("coll", &record.name, ""), json!({"kind": "coll", "coll": record.name, "data": enc(&record)?}))?]).await
    }

    fn job_point(job: &JobRecord) -> Result<PointStruct> {
        point(
            id("job", &job.id, ""),
            json!({"kind": "job", "coll": job.collection, "job": job.id, "status": job.status.as_str(), "data": enc(job)?}),
        )
    }

    fn doc_point(collection: &str, d: &DocumentRecord) -> Result<PointStruct> {
        point(id("doc", collection, &d.id), json!({"kind": "doc", "coll": collection, "key": d.id, "data": enc(d)?}))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyEntry {
    job_id: String,
    request_hash: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PayloadPart {
    seq: usize,
    documents: Vec<PendingDocument>,
}

#[async_trait]
impl Catalog for QdrantCatalog {
    async fn create_collection(&self, record: CollectionRecord) -> Result<()> {
        // Two replicas creating the same name at once can both pass this check; the second write
        // overwrites the first with an equal record unless their settings differ. Rare, and named
        // in docs/cluster.md.
        if self.get_collection(&record.name).await?.is_some() {
            return Err(Error::conflict("collection_exists", format!("collection `{}` already exists", record.name)));
        }
        self.put_collection(record).await
    }

    async fn get_collection(&self, name: &str) -> Result<Option<CollectionRecord>> {
        self.get(id("coll", name, "")).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionRecord>> {
        let mut all: Vec<CollectionRecord> = self.scroll(Filter::must([kind("coll")])).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn delete_collection(&self, name: &str) -> Result<bool> {
        let existed = self.get_collection(name).await?.is_some();
        // The collection's record last, so a crash half-way leaves a collection that can be deleted again.
        self.delete(Filter::must([kind("doc"), keyword("coll", name)])).await?;
        self.delete(Filter::must([kind("idem"), keyword("coll", name)])).await?;
        self.delete_ids(vec![id("coll", name, "")]).await?;
        Ok(existed)
    }

    async fn get_document(&self, collection: &str, doc: &str) -> Result<Option<DocumentRecord>> {
        self.get(id("doc", collection, doc)).await
    }

    async fn list_documents(&self, collection: &str, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>> {
        let mut all: Vec<DocumentRecord> = self.scroll(Filter::must([kind("doc"), keyword("coll", collection)])).await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all.into_iter().filter(|d| after.is_none_or(|a| d.id.as_str() > a)).take(limit).collect())
    }

    async fn count_documents(&self, collection: &str) -> Result<u64> {
        self.count(Filter::must([kind("doc"), keyword("coll", collection)])).await
    }

    async fn commit_documents(&self, collection: &str, documents: Vec<DocumentRecord>, job: &JobRecord) -> Result<()> {
        let docs = documents.iter().map(|d| Self::doc_point(collection, d)).collect::<Result<Vec<_>>>()?;
        self.put(docs).await?;
        self.put(vec![Self::job_point(job)?]).await
    }

    async fn delete_document(&self, collection: &str, doc: &str) -> Result<bool> {
        let existed = self.get_document(collection, doc).await?.is_some();
        self.delete_ids(vec![id("doc", collection, doc)]).await?;
        Ok(existed)
    }

    async fn create_job(&self, job: JobRecord, payload: Vec<PendingDocument>, key: Option<IdempotencyKey>) -> Result<JobCreated> {
        if let Some(key) = &key {
            let seen: Option<KeyEntry> = self.get(id("idem", &job.collection, &key.key)).await?;
            if let Some(seen) = seen {
                if seen.request_hash != key.request_hash {
                    return Err(Error::conflict("idempotency_key_reused", "this Idempotency-Key was already used with a different request"));
                }
                if let Some(earlier) = self.get_job(&seen.job_id).await? {
                    return Ok(JobCreated::Replayed(earlier));
                }
            }
        }
        // The payload first: once the job is visible, its documents are there.
        let mut parts = Vec::new();
        for (seq, docs) in payload.chunks(DOCS_PER_POINT).enumerate() {
            let part = PayloadPart { seq, documents: docs.to_vec() };
            parts.push(point(id("payload", &job.id, &seq.to_string()), json!({"kind": "payload", "job": job.id, "data": enc(&part)?}))?);
        }
        self.put(parts).await?;
        self.put(vec![Self::job_point(&job)?]).await?;
        if let Some(key) = &key {
            let entry = KeyEntry { job_id: job.id.clone(), request_hash: key.request_hash.clone() };
            self.put(vec![point(
                id("idem", &job.collection, &key.key),
                json!({"kind": "idem", "coll": job.collection, "data": enc(&entry)?}),
            )?])
            .await?;
        }
        Ok(JobCreated::New(job))
    }

    async fn get_job(&self, job: &str) -> Result<Option<JobRecord>> {
        self.get(id("job", job, "")).await
    }

    async fn update_job(&self, job: &JobRecord) -> Result<()> {
        self.put(vec![Self::job_point(job)?]).await?;
        if job.status.is_finished() {
            self.delete(Filter::must([kind("payload"), keyword("job", &job.id)])).await?;
        }
        Ok(())
    }

    async fn job_payload(&self, job: &str) -> Result<Option<Vec<PendingDocument>>> {
        if self.get_job(job).await?.is_none() {
            return Ok(None);
        }
        let mut parts: Vec<PayloadPart> = self.scroll(Filter::must([kind("payload"), keyword("job", job)])).await?;
        if parts.is_empty() {
            return Ok(None);
        }
        parts.sort_by_key(|p| p.seq);
        Ok(Some(parts.into_iter().flat_map(|p| p.documents).collect()))
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let statuses = vec![JobStatus::Queued.as_str().to_owned(), JobStatus::Running.as_str().to_owned()];
        let mut jobs: Vec<JobRecord> = self
            .scroll(Filter::must([
                kind("job"),
                Condition::matches("status", qdrant_client::qdrant::r#match::MatchValue::Keywords(qdrant_client::qdrant::RepeatedStrings { strings: statuses })),
            ]))
            .await?;
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(jobs)
    }

    async fn recent_jobs(&self, limit: usize, keep: JobFilter) -> Result<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = self.scroll(Filter::must([kind("job")])).await?;
        jobs.retain(|j| keep(&j.collection));
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn backup(&self, _dest: &std::path::Path) -> Result<()> {
        Err(Error::invalid(
            "snapshot_unsupported",
            "the cluster catalog lives in Qdrant: back it up with Qdrant's snapshots (`ragd snapshot create` is for the embedded store)",
        ))
    }
}

/// Cluster mode keeps API keys and service tokens (digests only) in the catalog collection too, so
/// every replica verifies the same keys and a revocation is seen by every replica's next request.
#[async_trait]
impl ragd_core::auth::KeyStore for QdrantCatalog {
    async fn insert(&self, record: ragd_core::auth::KeyRecord) -> Result<()> {
        self.put(vec![point(id("key", &record.id, ""), json!({"kind": "key", "coll": record.tenant, "data": enc(&record)?}))?]).await
    }

    async fn get(&self, key_id: &str) -> Result<Option<ragd_core::auth::KeyRecord>> {
        QdrantCatalog::get(self, id("key", key_id, "")).await
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<ragd_core::auth::KeyRecord>> {
        let filter = match tenant {
            Some(t) => Filter::must([kind("key"), keyword("coll", t)]),
            None => Filter::must([kind("key")]),
        };
        let mut keys: Vec<ragd_core::auth::KeyRecord> = self.scroll(filter).await?;
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    async fn revoke(&self, key_id: &str, now: String) -> Result<bool> {
        let Some(mut record) = ragd_core::auth::KeyStore::get(self, key_id).await? else { return Ok(false) };
        if record.revoked_at.is_none() {
            record.revoked_at = Some(now);
            ragd_core::auth::KeyStore::insert(self, record).await?;
        }
        Ok(true)
    }
}
