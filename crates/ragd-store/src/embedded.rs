//! The embedded vector store: one qdrant-edge shard per collection under `<data>/collections/<name>`,
//! with a dense vector (cosine) and a BM25 sparse vector (IDF applied by the engine at query time) per
//! chunk. Hybrid queries are fused by Qdrant's own reciprocal rank fusion.
//!
//! qdrant-edge 0.7 does not replay its WAL when a shard is loaded, and its `flush` panics if another
//! write holds the WAL. So every write to a shard takes the shard's write mutex and ends with a
//! flush: a write that returned is on disk, and a crash loses at most the write in flight, which the
//! job that issued it redoes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use qdrant_edge::external::uuid::Uuid as EdgeUuid;
use qdrant_edge::{
    CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder,
    FieldIndexOperations, Filter, Fusion, JsonPath, Modifier, NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStruct, Prefetch, QueryEnum, QueryRequest, ScoringQuery, ScrollRequest, UpdateOperation,
    Vector, VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface, WithVector,
};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use ragd_core::store::{ChunkPoint, StoreQuery, VectorStore};
use ragd_core::types::{ChunkHit, Offsets, SearchFilter};
use ragd_core::{Error, Result};
use serde_json::{Value, json};

pub(crate) const DENSE: &str = "dense";
pub(crate) const SPARSE: &str = "bm25";

struct Shard {
    edge: EdgeShard,
    /// Held for every update and flush (see the module docs).
    write: Mutex<()>,
}

/// The embedded store; cheap to clone (all clones share the loaded shards).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    shards: RwLock<HashMap<String, Arc<Shard>>>,
    bm25: Arc<EdgeBm25>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `root`. Shards are loaded lazily, on first use.
    pub fn open(root: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(root).map_err(|e| Error::internal(format!("cannot create {}: {e}", root.display())))?;
        let bm25 = EdgeBm25::new(EdgeBm25Config::default()).map_err(Error::internal)?;
        let inner = Inner { root: root.to_owned(), shards: RwLock::new(HashMap::new()), bm25: Arc::new(bm25) };
        Ok(EmbeddedStore { inner: Arc::new(inner) })
    }

}

impl Inner {

    fn shard_dir(&self, collection: &str) -> PathBuf {
        self.root.join(collection)
    }

    /// The loaded shard of a collection, loading it from disk when needed.
    fn shard(&self, collection: &str) -> Result<Arc<Shard>> {
        if let Some(s) = self.shards.read().get(collection) {
            return Ok(s.clone());
        }
        let mut shards = self.shards.write();
        if let Some(s) = shards.get(collection) {
            return Ok(s.clone());
        }
        let dir = self.shard_dir(collection);
        if !dir.join("segments").exists() {
            return Err(Error::collection_not_found(collection));
        }
        let edge = EdgeShard::load(&dir, None).map_err(|e| Error::internal(format!("loading shard {}: {e}", dir.display())))?;
        let shard = Arc::new(Shard { edge, write: Mutex::new(()) });
        shards.insert(collection.to_owned(), shard.clone());
        Ok(shard)
    }

    fn create_blocking(&self, collection: &str, dimensions: usize) -> Result<()> {
        let mut shards = self.shards.write();
        if shards.contains_key(collection) {
            return Ok(());
        }
        let dir = self.shard_dir(collection);
        let edge = if dir.join("segments").exists() {
            EdgeShard::load(&dir, None).map_err(|e| Error::internal(format!("loading shard {}: {e}", dir.display())))?
        } else {
            std::fs::create_dir_all(&dir).map_err(Error::internal)?;
            let config = EdgeConfigBuilder::new()
                .vector(DENSE, EdgeVectorParamsBuilder::new(dimensions, Distance::Cosine).build())
                .sparse_vector(SPARSE, EdgeSparseVectorParamsBuilder::new().modifier(Modifier::Idf).build())
                .build();
            let edge = EdgeShard::new(&dir, config).map_err(Error::internal)?;
            for (field, kind) in [("doc_id", PayloadSchemaType::Keyword), ("chunk_index", PayloadSchemaType::Integer)] {
                edge.update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: field.parse::<JsonPath>().map_err(|_| Error::internal(format!("bad payload path {field}")))?,
                    field_schema: Some(PayloadFieldSchema::FieldType(kind)),
                })))
                .map_err(Error::internal)?;
            }
            edge.flush();
            edge
        };
        shards.insert(collection.to_owned(), Arc::new(Shard { edge, write: Mutex::new(()) }));
        Ok(())
    }

    fn drop_blocking(&self, collection: &str) -> Result<()> {
        let removed = self.shards.write().remove(collection);
        if let Some(mut shard) = removed {
            // Wait for in-flight searches to let go, so the shard's final flush runs before its files go.
            for _ in 0..200 {
                match Arc::try_unwrap(shard) {
                    Ok(owned) => {
                        drop(owned);
                        break;
                    }
                    Err(still_shared) => {
                        shard = still_shared;
                        std::thread::sleep(Duration::from_millis(25));
                    }
                }
            }
        }
        let dir = self.shard_dir(collection);
        if dir.exists() {
            // Rename first so a collection re-created with the same name starts from an empty folder.
            let trash = self.root.join(format!(".trash-{collection}-{}", uuid::Uuid::new_v4()));
            std::fs::rename(&dir, &trash).map_err(Error::internal)?;
            std::fs::remove_dir_all(&trash).map_err(Error::internal)?;
        }
        Ok(())
    }

    fn optimize_blocking(&self, collection: &str) -> Result<bool> {
        let shard = self.shard(collection)?;
        let _guard = shard.write.lock();
        let changed = shard.edge.optimize().map_err(Error::internal)?;
        shard.edge.flush();
        Ok(changed)
    }

    /// Flushes the shard and copies its folder while holding its write mutex, so the copy is the
    /// state of the last flush; searches go on (they only read).
    fn snapshot_blocking(&self, collection: &str, dest: &Path) -> Result<()> {
        let shard = self.shard(collection)?;
        let _guard = shard.write.lock();
        shard.edge.flush();
        ragd_core::snapshot::copy_dir(&self.shard_dir(collection), dest)
    }

    fn write_blocking(&self, collection: &str, ops: Vec<UpdateOperation>) -> Result<()> {
        let shard = self.shard(collection)?;
        let _guard = shard.write.lock();
        for op in ops {
            shard.edge.update(op).map_err(Error::internal)?;
        }
        shard.edge.flush();
        Ok(())
    }

    fn point(&self, p: ChunkPoint) -> Result<PointStruct> {
        let sparse = self.bm25.embed_document(&p.lexical_text());
        let payload = chunk_payload(&p);
        let vectors = Vectors::new_named([(DENSE, Vector::new_dense(p.dense)), (SPARSE, Vector::from(sparse))]);
        Ok(PointStruct::new(PointId::Uuid(EdgeUuid::from_u128(p.id.as_u128())), vectors, payload))
    }

    fn search_blocking(&self, collection: &str, q: StoreQuery) -> Result<Vec<ChunkHit>> {
        let shard = self.shard(collection)?;
        let filter = q.filter.as_ref().map(to_qdrant_filter).transpose()?;
        let dense = q.dense.map(|v| {
            ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery { query: VectorInternal::Dense(v), using: Some(DENSE.into()) }))
        });
        let sparse = match q.text {
            Some(text) => {
                let v = self.bm25.embed_query(&text);
                if v.indices.is_empty() {
                    // Only stopwords: there is nothing to match lexically.
                    None
                } else {
                    Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                        query: VectorInternal::Sparse(v),
                        using: Some(SPARSE.into()),
                    })))
                }
            }
            None => None,
        };
        let (prefetches, query) = match (dense, sparse) {
            (Some(d), Some(s)) => {
                let prefetch = |query| Prefetch {
                    prefetches: vec![],
                    query: Some(query),
                    limit: q.candidates,
                    params: None,
                    filter: filter.clone(),
                    score_threshold: None,
                };
                (vec![prefetch(d), prefetch(s)], ScoringQuery::Fusion(Fusion::Rrf { k: q.rrf_k, weights: Some(vec![q.weights.0.into(), q.weights.1.into()]) }))
            }
            (Some(one), None) | (None, Some(one)) => (vec![], one),
            (None, None) => return Ok(vec![]),
        };
        let request = QueryRequest {
            prefetches,
            query: Some(query),
            filter,
            score_threshold: None,
            limit: q.limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        let points = shard.edge.query(request).map_err(Error::internal)?;
        points
            .into_iter()
            .map(|p| {
                let payload = p.payload.map(|pl| Value::Object(pl.0.into_iter().collect())).unwrap_or(Value::Null);
                hit_from_payload(&p.id.to_string(), p.score, payload)
            })
            .collect()
    }
}

/// A chunk's payload, the same in both backends.
pub(crate) fn chunk_payload(p: &ChunkPoint) -> Value {
    json!({
        "doc_id": p.doc_id,
        "title": p.title,
        "chunk_index": p.chunk.index,
        "heading_path": p.chunk.heading_path,
        "char_start": p.chunk.char_start,
        "char_end": p.chunk.char_end,
        "page": p.chunk.page,
        "slide": p.chunk.slide,
        "sheet": p.chunk.sheet,
        "ocr": p.chunk.ocr,
        "text": p.chunk.text,
        "metadata": Value::Object(p.metadata.clone()),
    })
}

pub(crate) fn hit_from_payload(chunk_id: &str, score: f32, payload: Value) -> Result<ChunkHit> {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| payload.get(k).and_then(Value::as_u64);
    Ok(ChunkHit {
        doc_id: s("doc_id").ok_or_else(|| Error::internal(format!("point {chunk_id} has no doc_id")))?,
        chunk_id: chunk_id.to_owned(),
        chunk_index: n("chunk_index").unwrap_or(0) as u32,
        score,
        title: s("title"),
        text: s("text").unwrap_or_default(),
        metadata: payload.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
        heading_path: payload
            .get("heading_path")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        offsets: Offsets {
            char_start: n("char_start").unwrap_or(0) as usize,
            char_end: n("char_end").unwrap_or(0) as usize,
            page: n("page").map(|p| p as u32),
            slide: n("slide").map(|p| p as u32),
            sheet: s("sheet"),
            ocr: payload.get("ocr").and_then(Value::as_bool).unwrap_or(false),
        },
    })
}

/// Translates ragd's filter (checked by `filter::conditions`) into qdrant-edge's.
pub(crate) fn to_qdrant_filter(f: &SearchFilter) -> Result<Filter> {
    let must: Vec<Value> = crate::filter::conditions(f)?
        .into_iter()
        .map(|(path, wanted)| match wanted {
            crate::filter::Wanted::One(v) => json!({"key": path, "match": {"value": v}}),
            crate::filter::Wanted::Any(items) => json!({"key": path, "match": {"any": items}}),
        })
        .collect();
    serde_json::from_value(json!({ "must": must })).map_err(|e| Error::invalid("invalid_filter", e.to_string()))
}

fn doc_filter(doc_id: &str, from_index: u32) -> Result<Filter> {
    let mut must = vec![json!({"key": "doc_id", "match": {"value": doc_id}})];
    if from_index > 0 {
        must.push(json!({"key": "chunk_index", "range": {"gte": from_index}}));
    }
    serde_json::from_value(json!({ "must": must })).map_err(Error::internal)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("storage task failed: {e}")))?
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    async fn create_collection(&self, collection: &str, dimensions: usize) -> Result<()> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || this.create_blocking(&c, dimensions)).await
    }

    async fn drop_collection(&self, collection: &str) -> Result<()> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || this.drop_blocking(&c)).await
    }

    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<()> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || {
            let points = points.into_iter().map(|p| this.point(p).map(Into::into)).collect::<Result<Vec<_>>>()?;
            let op = UpdateOperation::PointOperation(PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)));
            this.write_blocking(&c, vec![op])
        })
        .await
    }

    async fn delete_document_chunks(&self, collection: &str, doc_id: &str, from_index: u32) -> Result<()> {
        let filter = doc_filter(doc_id, from_index)?;
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || this.write_blocking(&c, vec![UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter))]))
            .await
    }

    async fn search(&self, collection: &str, query: StoreQuery) -> Result<Vec<ChunkHit>> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || this.search_blocking(&c, query)).await
    }

    async fn retrieve(&self, collection: &str, ids: Vec<uuid::Uuid>) -> Result<Vec<ChunkHit>> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || {
            let shard = this.shard(&c)?;
            let ids: Vec<PointId> = ids.iter().map(|id| PointId::Uuid(EdgeUuid::from_u128(id.as_u128()))).collect();
            let records = shard.edge.retrieve(&ids, Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(false))).map_err(Error::internal)?;
            records
                .into_iter()
                .map(|r| {
                    let payload = r.payload.map(|pl| Value::Object(pl.0.into_iter().collect())).unwrap_or(Value::Null);
                    hit_from_payload(&r.id.to_string(), 0.0, payload)
                })
                .collect()
        })
        .await
    }

    async fn vectors(&self, collection: &str, ids: Vec<uuid::Uuid>) -> Result<Vec<Option<Vec<f32>>>> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || {
            let shard = this.shard(&c)?;
            let asked: Vec<PointId> = ids.iter().map(|id| PointId::Uuid(EdgeUuid::from_u128(id.as_u128()))).collect();
            let records = shard.edge.retrieve(&asked, None, Some(WithVector::Selector(vec![DENSE.into()]))).map_err(Error::internal)?;
            let mut by_id: HashMap<String, Vec<f32>> = HashMap::with_capacity(records.len());
            for r in records {
                if let Some(VectorStructInternal::Named(named)) = &r.vector
                    && let Some(VectorInternal::Dense(v)) = named.get(DENSE)
                {
                    by_id.insert(r.id.to_string(), v.clone());
                }
            }
            Ok(ids.iter().map(|id| by_id.remove(&id.to_string())).collect())
        })
        .await
    }

    async fn count(&self, collection: &str, doc_id: Option<&str>) -> Result<u64> {
        let filter = doc_id.map(|d| doc_filter(d, 0)).transpose()?;
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || {
            let shard = this.shard(&c)?;
            let n = shard.edge.count(CountRequest { filter, exact: true }).map_err(Error::internal)?;
            Ok(n as u64)
        })
        .await
    }

    /// Runs qdrant-edge's optimizers until they have nothing left to do (merging segments, building
    /// the HNSW index once a segment passes the indexing threshold, vacuuming deleted points),
    /// holding the shard's write mutex, then flushes. Searches go on meanwhile.
    async fn optimize(&self, collection: &str) -> Result<bool> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || this.optimize_blocking(&c)).await
    }

    async fn export(&self, collection: &str, from: Option<uuid::Uuid>, limit: usize) -> Result<(Vec<ChunkPoint>, Option<uuid::Uuid>)> {
        let (this, c) = (self.inner.clone(), collection.to_owned());
        blocking(move || {
            let shard = this.shard(&c)?;
            let request = ScrollRequest {
                offset: from.map(|u| PointId::Uuid(EdgeUuid::from_u128(u.as_u128()))),
                limit: Some(limit.max(1)),
                filter: None,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Selector(vec![DENSE.into()]),
                order_by: None,
            };
            let (records, next) = shard.edge.scroll(request).map_err(Error::internal)?;
            let uuid_of = |id: &PointId| -> Result<uuid::Uuid> {
                uuid::Uuid::parse_str(&id.to_string()).map_err(|e| Error::internal(format!("point id {id}: {e}")))
            };
            let mut points = Vec::with_capacity(records.len());
            for r in records {
                let dense = match &r.vector {
                    Some(VectorStructInternal::Named(named)) => match named.get(DENSE) {
                        Some(VectorInternal::Dense(v)) => v.clone(),
                        _ => return Err(Error::internal(format!("point {} has no dense vector", r.id))),
                    },
                    _ => return Err(Error::internal(format!("point {} has no named vectors", r.id))),
                };
                let payload = r.payload.map(|pl| Value::Object(pl.0.into_iter().collect())).unwrap_or(Value::Null);
                let hit = hit_from_payload(&r.id.to_string(), 0.0, payload)?;
                points.push(ChunkPoint {
                    id: uuid_of(&r.id)?,
                    doc_id: hit.doc_id,
                    title: hit.title,
                    metadata: hit.metadata,
                    chunk: ragd_core::chunk::Chunk {
                        index: hit.chunk_index,
                        text: hit.text,
                        heading_path: hit.heading_path,
                        char_start: hit.offsets.char_start,
                        char_end: hit.offsets.char_end,
                        page: hit.offsets.page,
                        slide: hit.offsets.slide,
                        sheet: hit.offsets.sheet,
                        ocr: hit.offsets.ocr,
                    },
                    dense,
                });
            }
            Ok((points, next.as_ref().map(uuid_of).transpose()?))
        })
        .await
    }

    async fn snapshot(&self, collection: &str, dest: &Path) -> Result<()> {
        let (inner, collection, dest) = (self.inner.clone(), collection.to_owned(), dest.to_owned());
        blocking(move || inner.snapshot_blocking(&collection, &dest)).await
    }

    async fn ready(&self) -> Result<()> {
        let root = self.inner.root.clone();
        blocking(move || {
            std::fs::metadata(&root)
                .map(|_| ())
                .map_err(|e| Error::unavailable("vector_store", format!("data folder unavailable: {e}")))
        })
        .await
    }
}
