//! The cluster vector store: a Qdrant server or cluster reached over gRPC with `qdrant-client`.
//!
//! Same points as the embedded store: the id is the chunk's `uuid5`, the payload has the same
//! fields, the dense vector is named `dense` (cosine) and the BM25 sparse vector `bm25` (IDF applied
//! by Qdrant at query time), computed by the same tokenizer as the embedded store.
//!
//! - **Failover.** `qdrant-client` talks to one address. The store keeps one client per node and
//!   sends each call to the node that last answered; a call that fails for the node's sake
//!   (unreachable, deadline passed, aborted) goes to the next node. Every call is idempotent (point
//!   ids are derived, deletes are by filter), so a retry after a write of unknown outcome is safe.
//! - **Deadlines.** Each attempt has `store.qdrant.timeout_ms` (the client's own timeout, and a tokio
//!   timeout around it in case a connect hangs).
//! - **Durability.** Writes ask for `wait = true` and are acknowledged once
//!   `write_consistency_factor` replicas applied them (set when the collection is created).
//! - **Fusion.** Qdrant 1.14's server-side RRF has neither a `k` nor weights, so the store asks for
//!   both rankings in one batch and fuses them here with the same formula as qdrant-edge's weighted
//!   RRF, so both backends rank a hybrid query alike.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeleteCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, GetPointsBuilder, Modifier, NamedVectors, PointId, PointStruct,
    QueryBatchPointsBuilder, QueryPointsBuilder, Range, RepeatedIntegers, RepeatedStrings, ScoredPoint, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, Value as QValue, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder, WriteOrdering,
    WriteOrderingType, r#match::MatchValue,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use ragd_core::settings::QdrantSettings;
use ragd_core::store::{ChunkPoint, Rankings, StoreQuery, VectorStore};
use ragd_core::types::{ChunkHit, SearchFilter};
use ragd_core::{Error, Result};
use serde_json::Value;
use tonic::Code;

use crate::embedded::{DENSE, SPARSE, chunk_payload, hit_from_payload};
use crate::filter::Wanted;

/// One call to one node: a future borrowing that node's client.
pub(crate) type Call<'a, T> = Pin<Box<dyn Future<Output = std::result::Result<T, QdrantError>> + Send + 'a>>;

struct Node {
    url: String,
    client: Qdrant,
}

/// The cluster store; cheap to clone.
#[derive(Clone)]
pub struct QdrantStore {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    /// The node that answered last; calls start there.
    current: AtomicUsize,
    timeout: Duration,
    settings: QdrantSettings,
    bm25: EdgeBm25,
}

/// Why one attempt failed.
enum Failure {
    /// The node could not answer (down, partitioned, overloaded, too slow): try another.
    Node(String),
    /// The request itself failed; another node would say the same.
    Request(QdrantError),
}

impl QdrantStore {
    /// Builds one client per node. Nothing is contacted yet: nodes are reached on first use, so ragd
    /// starts while part of the cluster is down (readiness says whether any node answers).
    pub fn connect(settings: &QdrantSettings) -> Result<QdrantStore> {
        if settings.urls.is_empty() {
            return Err(Error::invalid("invalid_settings", "store.qdrant.urls is empty"));
        }
        let timeout = Duration::from_millis(settings.timeout_ms);
        let mut nodes = Vec::new();
        for url in &settings.urls {
            let mut b = Qdrant::from_url(url)
                .timeout(timeout)
                .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
                .keep_alive_while_idle()
                .skip_compatibility_check();
            if let Some(key) = &settings.api_key {
                b = b.api_key(key.expose());
            }
            let client = b.build().map_err(|e| Error::invalid("invalid_settings", format!("store.qdrant.urls: `{url}`: {e}")))?;
            nodes.push(Node { url: url.clone(), client });
        }
        let bm25 = EdgeBm25::new(EdgeBm25Config::default()).map_err(Error::internal)?;
        Ok(QdrantStore {
            inner: Arc::new(Inner { nodes, current: AtomicUsize::new(0), timeout, settings: settings.clone(), bm25 }),
        })
    }

    /// Qdrant's full snapshot on every node (all collections the node holds, the catalog included),
    /// one node after the other: `(node, Ok((name, bytes)))` or why that node failed. A node's
    /// snapshot is kept in its own snapshots folder; Qdrant's REST API downloads and recovers it.
    pub async fn snapshot_nodes(&self, deadline: Duration) -> Vec<(String, std::result::Result<(String, u64), String>)> {
        let mut out = Vec::new();
        for node in &self.inner.nodes {
            // A client of its own: snapshots take longer than `store.qdrant.timeout_ms`.
            let mut b = Qdrant::from_url(&node.url).timeout(deadline).connect_timeout(Duration::from_millis(self.inner.settings.connect_timeout_ms)).skip_compatibility_check();
            if let Some(key) = &self.inner.settings.api_key {
                b = b.api_key(key.expose());
            }
            let r = match b.build() {
                Ok(client) => match tokio::time::timeout(deadline, client.create_full_snapshot()).await {
                    Ok(Ok(resp)) => resp
                        .snapshot_description
                        .map(|d| (d.name, d.size.max(0) as u64))
                        .ok_or_else(|| "the node answered without a snapshot".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no snapshot within {} s", deadline.as_secs())),
                },
                Err(e) => Err(e.to_string()),
            };
            out.push((node.url.clone(), r));
        }
        out
    }

    /// The Qdrant collection that holds ragd collection `name`.
    pub fn qdrant_name(&self, name: &str) -> String {
        format!("{}{name}", self.inner.settings.collection_prefix)
    }

    /// Runs `call` on the node that answered last, then on each other node in turn while the failure
    /// is the node's. `what` names the call in logs and errors.
    pub(crate) async fn call<T, F>(&self, what: &str, collection: Option<&str>, call: F) -> Result<T>
    where
        F: for<'a> Fn(&'a Qdrant) -> Call<'a, T>,
    {
        let inner = &self.inner;
        let n = inner.nodes.len();
        let start = inner.current.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let node = &inner.nodes[idx];
            // The client's timeout covers the request; this one also covers a connect that hangs.
            let outcome = match tokio::time::timeout(inner.timeout + Duration::from_millis(500), call(&node.client)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(classify(e)),
                Err(_) => Err(Failure::Node(format!("no answer within {} ms", inner.timeout.as_millis()))),
            };
            match outcome {
                Ok(v) => {
                    if i > 0 {
                        inner.current.store(idx, Ordering::Relaxed);
                        tracing::info!(node = %node.url, call = what, "qdrant: switched to another node");
                    }
                    return Ok(v);
                }
                Err(Failure::Node(why)) => {
                    tracing::warn!(node = %node.url, call = what, %why, "qdrant node failed; trying the next");
                    failures.push(format!("{}: {why}", node.url));
                }
                Err(Failure::Request(e)) => return Err(request_error(e, collection, what)),
            }
        }
        Err(Error::unavailable("vector_store", format!("qdrant {what}: no node answered ({})", failures.join("; "))))
    }

    fn point(&self, p: ChunkPoint) -> Result<PointStruct> {
        let sparse = self.inner.bm25.embed_document(&p.lexical_text());
        let vectors = NamedVectors::default()
            .add_vector(SPARSE, Vector::new_sparse(sparse.indices, sparse.values))
            .add_vector(DENSE, Vector::new_dense(p.dense.clone()));
        let payload = match chunk_payload(&p) {
            Value::Object(map) => Payload::from(map),
            _ => return Err(Error::internal("chunk payload is not an object")),
        };
        Ok(PointStruct::new(p.id.to_string(), vectors, payload))
    }

    /// Creates the Qdrant collection `q` when it is missing — `shards` shards, the configured
    /// replication, vectors added by `vectors` — then its payload indexes (idempotent). Safe when
    /// replicas race to create it: the loser finds it there.
    pub(crate) async fn ensure_collection(
        &self,
        q: &str,
        shards: u32,
        vectors: impl Fn(CreateCollectionBuilder) -> CreateCollectionBuilder + Sync,
        indexes: &[(&str, FieldType)],
    ) -> Result<()> {
        let s = &self.inner.settings;
        let exists = || self.call("collection_exists", None, |c| Box::pin(c.collection_exists(q.to_owned())));
        if !exists().await? {
            let made = self
                .call("create_collection", None, |c| {
                    let b = vectors(CreateCollectionBuilder::new(q))
                        .shard_number(shards)
                        .replication_factor(s.replication_factor)
                        .write_consistency_factor(s.write_consistency_factor);
                    Box::pin(c.create_collection(b))
                })
                .await;
            if let Err(e) = made {
                if !exists().await? {
                    return Err(e);
                }
            }
        }
        for &(field, kind) in indexes {
            self.call("create_field_index", None, |c| {
                Box::pin(c.create_field_index(CreateFieldIndexCollectionBuilder::new(q, field, kind).wait(true)))
            })
            .await?;
        }
        Ok(())
    }

    async fn create(&self, name: &str, dimensions: usize) -> Result<()> {
        let vectors = |b: CreateCollectionBuilder| {
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(DENSE, VectorParamsBuilder::new(dimensions as u64, Distance::Cosine));
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf));
            b.vectors_config(dense).sparse_vectors_config(sparse)
        };
        let indexes = [("doc_id", FieldType::Keyword), ("chunk_index", FieldType::Integer)];
        self.ensure_collection(&self.qdrant_name(name), self.inner.settings.shard_number, vectors, &indexes).await
    }

    /// The dense and the lexical ranking in one round trip, fused here (see the module docs).
    async fn search_inner(&self, collection: &str, q: StoreQuery) -> Result<Vec<ChunkHit>> {
        let hybrid = q.dense.is_some() && q.text.is_some();
        let per_side = if hybrid { q.candidates.max(q.limit) } else { q.limit };
        let (dense, sparse) = self.both(collection, &q, per_side).await?;
        let points = match (dense, sparse) {
            (Some(d), Some(s)) => rrf(vec![d, s], q.rrf_k, &[q.weights.0, q.weights.1], q.limit),
            (Some(mut one), None) | (None, Some(mut one)) => {
                one.truncate(q.limit);
                one
            }
            (None, None) => Vec::new(),
        };
        points.into_iter().map(|p| hit(p.id.as_ref(), p.score, p.payload)).collect()
    }

    /// The dense and the sparse ranking of `q` (each `None` when it has no input), `per_side` long,
    /// in one `query_batch` round trip.
    async fn both(&self, collection: &str, q: &StoreQuery, per_side: usize) -> Result<(Option<Vec<ScoredPoint>>, Option<Vec<ScoredPoint>>)> {
        let name = self.qdrant_name(collection);
        let filter = q.filter.as_ref().map(to_filter).transpose()?;
        let sparse = q.text.as_deref().map(|t| self.inner.bm25.embed_query(t)).filter(|v| !v.indices.is_empty());
        let mut queries = Vec::new();
        let one = |input: VectorInput, using: &str| {
            let mut b = QueryPointsBuilder::new(name.clone()).query(input).using(using).limit(per_side as u64).with_payload(true);
            if let Some(f) = &filter {
                b = b.filter(f.clone());
            }
            b.build()
        };
        if let Some(dense) = &q.dense {
            queries.push(one(VectorInput::new_dense(dense.clone()), DENSE));
        }
        if let Some(s) = &sparse {
            queries.push(one(VectorInput::new_sparse(s.indices.clone(), s.values.clone()), SPARSE));
        }
        if queries.is_empty() {
            return Ok((None, None));
        }
        let response = self
            .call("query_batch", Some(collection), |c| Box::pin(c.query_batch(QueryBatchPointsBuilder::new(name.clone(), queries.clone()))))
            .await?;
        let mut rankings = response.result.into_iter().map(|r| r.result);
        let dense = if q.dense.is_some() { Some(rankings.next().unwrap_or_default()) } else { None };
        let sparse = if sparse.is_some() { Some(rankings.next().unwrap_or_default()) } else { None };
        Ok((dense, sparse))
    }
}

/// Weighted reciprocal rank fusion, as qdrant-edge computes it: a point at 0-based position `pos`
/// of a ranking with weight `w` scores `1 / ((pos + 1) / w + k - 1)`, summed over rankings.
/// Ties keep the order of first appearance (dense before lexical).
fn rrf(rankings: Vec<Vec<ScoredPoint>>, k: usize, weights: &[f32], limit: usize) -> Vec<ScoredPoint> {
    let mut fused: Vec<ScoredPoint> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (ranking, &w) in rankings.into_iter().zip(weights) {
        for (pos, mut p) in ranking.into_iter().enumerate() {
            let score = ragd_core::fusion::rrf_score(pos, w, k);
            let key = id_string(p.id.as_ref());
            match at.get(&key) {
                Some(&i) => fused[i].score += score,
                None => {
                    p.score = score;
                    at.insert(key, fused.len());
                    fused.push(p);
                }
            }
        }
    }
    fused.sort_by(|a, b| b.score.total_cmp(&a.score));
    fused.truncate(limit);
    fused
}

fn id_string(id: Option<&PointId>) -> String {
    match id.and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Uuid(u)) => u.clone(),
        Some(PointIdOptions::Num(n)) => n.to_string(),
        None => String::new(),
    }
}

fn hit(id: Option<&PointId>, score: f32, payload: HashMap<String, QValue>) -> Result<ChunkHit> {
    let json = Value::from(Payload::from(payload));
    hit_from_payload(&id_string(id), score, json)
}

/// A failure of the node (try another) or of the request (give up)?
fn classify(e: QdrantError) -> Failure {
    match &e {
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted | Code::Unknown | Code::Internal => {
                Failure::Node(format!("{:?}: {}", status.code(), status.message()))
            }
            _ => Failure::Request(e),
        },
        QdrantError::ResourceExhaustedError { status, .. } => Failure::Node(format!("resource exhausted: {}", status.message())),
        QdrantError::Io(io) => Failure::Node(io.to_string()),
        _ => Failure::Request(e),
    }
}

fn request_error(e: QdrantError, collection: Option<&str>, what: &str) -> Error {
    if let QdrantError::ResponseError { status } = &e {
        if status.code() == Code::NotFound {
            if let Some(c) = collection {
                return Error::collection_not_found(c);
            }
        }
    }
    Error::internal(format!("qdrant {what}: {e}"))
}

/// ragd's filter (checked by `filter::conditions`, as for the embedded store) as a Qdrant filter.
fn to_filter(f: &SearchFilter) -> Result<Filter> {
    let invalid = |path: &str| Error::invalid("invalid_filter", format!("`{path}`: an integer beyond the 64-bit signed range"));
    let mut must = Vec::new();
    for (path, wanted) in crate::filter::conditions(f)? {
        let m = match wanted {
            Wanted::One(Value::String(s)) => MatchValue::Keyword(s),
            Wanted::One(Value::Bool(b)) => MatchValue::Boolean(b),
            Wanted::One(v) => MatchValue::Integer(v.as_i64().ok_or_else(|| invalid(&path))?),
            Wanted::Any(items) if items.iter().all(Value::is_string) => {
                MatchValue::Keywords(RepeatedStrings { strings: items.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect() })
            }
            Wanted::Any(items) => MatchValue::Integers(RepeatedIntegers {
                integers: items.iter().map(|v| v.as_i64().ok_or_else(|| invalid(&path))).collect::<Result<_>>()?,
            }),
        };
        must.push(Condition::matches(path, m));
    }
    Ok(Filter::must(must))
}

fn doc_filter(doc_id: &str, from_index: u32) -> Filter {
    let mut must = vec![Condition::matches("doc_id", MatchValue::Keyword(doc_id.to_owned()))];
    if from_index > 0 {
        must.push(Condition::range("chunk_index", Range { gte: Some(from_index as f64), ..Default::default() }));
    }
    Filter::must(must)
}

fn medium() -> WriteOrdering {
    WriteOrdering { r#type: WriteOrderingType::Medium as i32 }
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn create_collection(&self, collection: &str, dimensions: usize) -> Result<()> {
        self.create(collection, dimensions).await
    }

    async fn drop_collection(&self, collection: &str) -> Result<()> {
        let q = self.qdrant_name(collection);
        self.call("delete_collection", None, |c| Box::pin(c.delete_collection(DeleteCollectionBuilder::new(q.clone())))).await?;
        Ok(())
    }

    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let q = self.qdrant_name(collection);
        let points = points.into_iter().map(|p| self.point(p)).collect::<Result<Vec<_>>>()?;
        self.call("upsert", Some(collection), |c| {
            Box::pin(c.upsert_points(UpsertPointsBuilder::new(q.clone(), points.clone()).wait(true).ordering(medium())))
        })
        .await?;
        Ok(())
    }

    async fn delete_document_chunks(&self, collection: &str, doc_id: &str, from_index: u32) -> Result<()> {
        let q = self.qdrant_name(collection);
        let filter = doc_filter(doc_id, from_index);
        self.call("delete_points", Some(collection), |c| {
            Box::pin(c.delete_points(DeletePointsBuilder::new(q.clone()).points(filter.clone()).wait(true).ordering(medium())))
        })
        .await?;
        Ok(())
    }

    async fn search(&self, collection: &str, query: StoreQuery) -> Result<Vec<ChunkHit>> {
        self.search_inner(collection, query).await
    }

    async fn rankings(&self, collection: &str, query: StoreQuery) -> Result<Rankings> {
        let (dense, sparse) = self.both(collection, &query, query.candidates).await?;
        let hits = |side: Option<Vec<ScoredPoint>>| -> Result<Vec<ChunkHit>> {
            side.unwrap_or_default().into_iter().map(|p| hit(p.id.as_ref(), p.score, p.payload)).collect()
        };
        Ok(Rankings { dense: hits(dense)?, lexical: hits(sparse)? })
    }

    async fn retrieve(&self, collection: &str, ids: Vec<uuid::Uuid>) -> Result<Vec<ChunkHit>> {
        let q = self.qdrant_name(collection);
        let asked: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        let got = self
            .call("get_points", Some(collection), |c| Box::pin(c.get_points(GetPointsBuilder::new(q.clone(), asked.clone()).with_payload(true))))
            .await?;
        let mut by_id: HashMap<String, ChunkHit> = HashMap::new();
        for p in got.result {
            let key = id_string(p.id.as_ref());
            by_id.insert(key.clone(), hit(p.id.as_ref(), 0.0, p.payload)?);
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(&id.to_string())).collect())
    }

    async fn vectors(&self, collection: &str, ids: Vec<uuid::Uuid>) -> Result<Vec<Option<Vec<f32>>>> {
        use qdrant_client::qdrant::{VectorsSelector, vector_output, vectors_output};
        let q = self.qdrant_name(collection);
        let asked: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        let got = self
            .call("get_points", Some(collection), |c| {
                let b = GetPointsBuilder::new(q.clone(), asked.clone()).with_payload(false).with_vectors(VectorsSelector::from(vec![DENSE.to_owned()]));
                Box::pin(c.get_points(b))
            })
            .await?;
        let mut by_id: HashMap<String, Vec<f32>> = HashMap::new();
        for p in got.result {
            let Some(vectors_output::VectorsOptions::Vectors(named)) = p.vectors.and_then(|v| v.vectors_options) else { continue };
            let Some(out) = named.vectors.get(DENSE) else { continue };
            #[allow(deprecated)]
            let data = match &out.vector {
                Some(vector_output::Vector::Dense(d)) => d.data.clone(),
                _ => out.data.clone(),
            };
            by_id.insert(id_string(p.id.as_ref()), data);
        }
        Ok(ids.iter().map(|id| by_id.remove(&id.to_string())).collect())
    }

    async fn count(&self, collection: &str, doc_id: Option<&str>) -> Result<u64> {
        let q = self.qdrant_name(collection);
        let filter = doc_id.map(|d| doc_filter(d, 0));
        let r = self
            .call("count", Some(collection), |c| {
                let mut b = CountPointsBuilder::new(q.clone()).exact(true);
                if let Some(f) = &filter {
                    b = b.filter(f.clone());
                }
                Box::pin(c.count(b))
            })
            .await?;
        Ok(r.result.map(|r| r.count).unwrap_or(0))
    }

    /// Ready when any node answers its health check (the cluster serves with a node down).
    async fn ready(&self) -> Result<()> {
        self.call("health_check", None, |c| Box::pin(c.health_check())).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(id: &str) -> ScoredPoint {
        ScoredPoint { id: Some(PointId::from(id.to_owned())), ..Default::default() }
    }

    #[test]
    fn fusion_matches_the_embedded_formula() {
        // dense: a, b, c; lexical: c, a. k = 60, weights 1 and 1.5.
        let fused = rrf(vec![vec![sp("a"), sp("b"), sp("c")], vec![sp("c"), sp("a")]], 60, &[1.0, 1.5], 10);
        let score = |pos: usize, w: f32| 1.0 / ((pos + 1) as f32 / w + 59.0);
        let ids: Vec<String> = fused.iter().map(|p| id_string(p.id.as_ref())).collect();
        // a: 1/60 + 1/(2/1.5 + 59) = 0.033241; c: 1/62 + 1/(1/1.5 + 59) = 0.032889.
        assert_eq!(ids, ["a", "c", "b"]);
        assert!((fused[0].score - (score(0, 1.0) + score(1, 1.5))).abs() < 1e-7);
        assert!((fused[1].score - (score(2, 1.0) + score(0, 1.5))).abs() < 1e-7);
        assert!((fused[2].score - score(1, 1.0)).abs() < 1e-7);
        // A zero weight silences its ranking; the limit cuts.
        let only_dense = rrf(vec![vec![sp("a")], vec![sp("z")]], 60, &[1.0, 0.0], 1);
        assert_eq!(id_string(only_dense[0].id.as_ref()), "a");
        assert_eq!(only_dense.len(), 1);
    }

    #[test]
    fn a_metadata_key_cannot_reach_other_payload_fields() {
        let mut f = SearchFilter::default();
        f.metadata.insert("a.b".into(), Value::String("x".into()));
        assert!(to_filter(&f).is_err());
    }
}
