//! The `Engine`: ragd's use cases (collections, documents, jobs, search) over the traits. The HTTP
//! layer and the CLI call it; it never sees a request or a socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::answer::{Conversations, Generators};
use crate::auth::KeyStore;
use crate::catalog::{Catalog, IdempotencyKey, JobCreated};
use crate::chunk::ChunkingConfig;
use crate::embed::{EmbedKind, Embedder, TokenCounter};
use crate::error::{Error, Result};
use crate::ids::content_hash;
use crate::metrics::{Metrics, Stage};
use crate::parse::{ParseLimits, SourceKind, parse_limited};
use crate::settings::Settings;
use crate::snapshot::{Manifest, SnapshotCollection, SnapshotStatus};
use crate::store::{StoreQuery, VectorStore};
use crate::types::*;

/// Longest document id accepted (ids end up in URLs and payloads).
const MAX_DOC_ID_LEN: usize = 512;
/// Longest query accepted, in bytes; longer ones are truncated by the embedder anyway.
const MAX_QUERY_BYTES: usize = 8 * 1024;

/// What a client sends to create a collection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewCollection {
    pub name: String,
    #[serde(default)]
    pub chunking: Option<ChunkingConfig>,
    /// Must name the server's embedder when given (one embedder per server for now).
    #[serde(default)]
    pub embedder: Option<String>,
    #[serde(default)]
    pub generator: Option<String>,
    /// Rerank choices of this collection: `{"search"?: bool, "answers"?: bool, "candidates"?: n}`.
    #[serde(default)]
    pub rerank: Option<crate::rerank::CollectionRerank>,
}

/// A collection with its live counts.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CollectionInfo {
    #[serde(flatten)]
    pub record: CollectionRecord,
    pub documents: u64,
    pub chunks: u64,
}

/// A document handed to `submit`, before parsing.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: Option<String>,
    pub title: Option<String>,
    pub metadata: Metadata,
    pub body: DocumentBody,
}

#[derive(Debug, Clone)]
pub enum DocumentBody {
    Text(String),
    File { filename: Option<String>, content_type: Option<String>, bytes: Vec<u8> },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchRequest {
    pub query: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub mode: SearchMode,
    #[serde(default)]
    pub filter: Option<SearchFilter>,
    /// Rerank the fused candidates before the top `top_k` are kept (default: the collection's
    /// `rerank.search` setting; needs a configured reranker, `rerank.kind`).
    #[serde(default)]
    pub rerank: Option<bool>,
    /// Fused candidates the reranker sees (default: the collection's, else `rerank.candidates`).
    #[serde(default)]
    pub rerank_candidates: Option<usize>,
    /// Set by the answer path (never by a client): this search gathers an answer's passages, so the
    /// collection's `rerank.answers` applies instead of `rerank.search`.
    #[serde(skip)]
    pub answers_rerank: bool,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResponse {
    pub results: Vec<ChunkHit>,
    /// What this response had to do without (`embedder`: lexical results only).
    pub degraded: Vec<String>,
    pub timings: SearchTimings,
    /// The query's vector, when the search embedded it (answers score their evidence against it).
    #[serde(skip)]
    pub query_vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchTimings {
    pub embed_ms: f64,
    pub search_ms: f64,
    /// Time in the rerank stage (0 when the search was not reranked).
    #[serde(skip_serializing_if = "is_zero")]
    pub rerank_ms: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The parts an engine is made of; the binary builds them from `Settings`, tests from fakes or real ones.
pub struct Parts {
    pub settings: Arc<Settings>,
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn VectorStore>,
    pub embedder: Arc<dyn Embedder>,
    pub tokens: Arc<dyn TokenCounter>,
    pub generators: Generators,
    /// The rerank stage (`rerank.kind`), already behind the outbound stack; `None` for `none`.
    pub reranker: Option<Arc<dyn crate::rerank::Reranker>>,
    /// The registry the parts' breakers already report to.
    pub metrics: Arc<Metrics>,
    /// A shared query cache (cluster mode: Redis); `None` keeps `search.query_cache_entries` in
    /// this process.
    pub query_cache: Option<Arc<dyn crate::cache::VectorCache>>,
    /// A job queue shared by replicas (cluster mode: Redis Streams); `None` keeps jobs in this process.
    pub job_queue: Option<Arc<dyn crate::queue::JobQueue>>,
    /// Conversation histories shared by replicas (cluster mode: Redis); `None` keeps them in this process.
    pub conversations: Option<Arc<dyn crate::answer::ConversationStore>>,
}

pub struct Engine {
    pub(crate) settings: Arc<Settings>,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) store: Arc<dyn VectorStore>,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) tokens: Arc<dyn TokenCounter>,
    pub(crate) generators: Generators,
    pub(crate) reranker: Option<Arc<dyn crate::rerank::Reranker>>,
    pub(crate) conversations: Arc<dyn crate::answer::ConversationStore>,
    /// Query vectors by query text (`search.query_cache_entries`; `None` when 0).
    query_cache: Option<Arc<dyn crate::cache::VectorCache>>,
    /// The outbound stack around vector-store searches (breaker, cap, `search.timeout_ms`; retried
    /// only if `resilience.vector_store.max_attempts` allows).
    store_calls: crate::resilience::Outbound,
    pub(crate) metrics: Arc<Metrics>,
    /// Jobs being worked on: last sign of progress and a handle to stop the task (the reaper's view).
    pub(crate) active_jobs: std::sync::Mutex<HashMap<String, (std::time::Instant, tokio::task::AbortHandle)>>,
    pub(crate) queue: mpsc::UnboundedSender<String>,
    /// The replicas' shared queue, and the jobs this replica took from it (acknowledged when they end).
    pub(crate) shared_queue: Option<Arc<dyn crate::queue::JobQueue>>,
    pub(crate) deliveries: std::sync::Mutex<HashMap<String, crate::queue::Delivery>>,
    /// One permit per idle worker: this replica takes a job from the shared queue only when it can start it.
    pub(crate) idle_workers: Arc<tokio::sync::Semaphore>,
    queue_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Finished job ids, for `wait=true` callers.
    pub(crate) finished: broadcast::Sender<String>,
    /// Serialises writes per collection: a job's upsert+commit, a document delete, a collection drop,
    /// the store's optimizers.
    write_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Every write holds it shared (before its collection's lock, see `lock_writes`); a snapshot holds
    /// it alone, so it sees no write half done.
    writes_gate: Arc<tokio::sync::RwLock<()>>,
    /// Snapshots being made or that failed since start-up (ready ones are files in `snapshots/`).
    snapshots: std::sync::Mutex<HashMap<String, crate::snapshot::SnapshotStatus>>,
    /// Collections whose store should be optimised, with when (`ingest.optimize_after_ms` after their
    /// last write; a write pushes it back).
    optimize_due: std::sync::Mutex<HashMap<String, Instant>>,
    /// Uploads parsed at once (one thread each, `PARSE_STACK_BYTES` of stack); a parse that
    /// overran its deadline keeps its permit until its thread ends, so runaway parses cannot pile up.
    parse_slots: Arc<tokio::sync::Semaphore>,
}

/// The right to write to one collection (see `Engine::lock_writes`); fields drop in order, the
/// collection's lock first.
pub(crate) struct WriteGuard {
    _collection: tokio::sync::OwnedMutexGuard<()>,
    _gate: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Engine {
    pub fn new(parts: Parts) -> Arc<Engine> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (finished, _) = broadcast::channel(1024);
        let a = &parts.settings.answer;
        let conversations: Arc<dyn crate::answer::ConversationStore> = match parts.conversations {
            Some(shared) => shared,
            None => Arc::new(Conversations::new(a.conversation_turns, a.max_conversations, Duration::from_secs(a.conversation_ttl_secs))),
        };
        let entries = parts.settings.search.query_cache_entries;
        let workers = parts.settings.ingest.workers.max(1);
        let query_cache = match parts.query_cache {
            Some(shared) => Some(shared),
            None => (entries > 0).then(|| Arc::new(crate::cache::LocalCache::new(entries)) as Arc<dyn crate::cache::VectorCache>),
        };
        let observer: Arc<dyn crate::breaker::BreakerObserver> = parts.metrics.clone();
        let store_calls = crate::resilience::Outbound::new(
            "vector_store",
            "vector_store",
            &parts.settings.resilience.vector_store,
            Duration::from_millis(parts.settings.search.timeout_ms),
            observer,
        );
        Arc::new(Engine {
            store_calls,
            generators: parts.generators,
            reranker: parts.reranker,
            conversations,
            query_cache,
            metrics: parts.metrics,
            active_jobs: Default::default(),
            settings: parts.settings,
            catalog: parts.catalog,
            store: parts.store,
            embedder: parts.embedder,
            tokens: parts.tokens,
            queue: tx,
            idle_workers: Arc::new(tokio::sync::Semaphore::new(workers)),
            shared_queue: parts.job_queue,
            deliveries: Default::default(),
            queue_rx: std::sync::Mutex::new(Some(rx)),
            finished,
            write_locks: Default::default(),
            writes_gate: Default::default(),
            snapshots: Default::default(),
            optimize_due: Default::default(),
            parse_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()).max(2),
            )),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }
    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }
    pub fn generators(&self) -> &Generators {
        &self.generators
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Jobs that are queued or running.
    pub async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        self.catalog.unfinished_jobs().await
    }

    /// The breaker around vector-store searches.
    pub fn store_breaker_status(&self) -> crate::breaker::BreakerStatus {
        self.store_calls.breaker().status()
    }

    /// Every circuit breaker, by dependency: the embedder's, the store's, the reranker's and each generator's.
    pub fn breakers(&self) -> Vec<(String, crate::breaker::BreakerStatus)> {
        let mut out = Vec::new();
        if let Some(s) = self.embedder.breaker_status() {
            out.push(("embedder".to_owned(), s));
        }
        out.push(("vector_store".to_owned(), self.store_breaker_status()));
        if let Some(s) = self.reranker.as_ref().and_then(|r| r.breaker_status()) {
            out.push(("reranker".to_owned(), s));
        }
        for (name, g) in self.generators.all() {
            if let Some(s) = g.breaker_status() {
                out.push((if name == "default" { "generator".to_owned() } else { format!("generator:{name}") }, s));
            }
        }
        out
    }

    /// Brings the gauges that are read from storage (jobs, documents and chunks per collection) up
    /// to date; called before each scrape.
    pub async fn refresh_metrics(&self) -> Result<()> {
        let mut by_state = std::collections::BTreeMap::new();
        for job in self.catalog.unfinished_jobs().await? {
            *by_state.entry(job.status.as_str()).or_insert(0) += 1;
        }
        self.metrics.set_jobs(&by_state);
        let mut counts = Vec::new();
        for c in self.catalog.list_collections().await? {
            let documents = self.catalog.count_documents(&c.name).await?;
            let chunks = self.store.count(&c.name, None).await?;
            counts.push((c.name, documents, chunks));
        }
        self.metrics.set_collections(&counts);
        Ok(())
    }

    /// Makes storage match the catalog after a crash and starts the job workers, resuming every
    /// job that was acknowledged but not finished. Call once, inside a tokio runtime.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        for c in self.catalog.list_collections().await? {
            self.store.create_collection(&c.name, c.dimensions).await?;
            // Written by an earlier run that may have stopped before optimising it.
            self.written(&c.name);
        }
        let rx = self.queue_rx.lock().expect("queue lock").take();
        let Some(rx) = rx else { return Ok(()) };
        crate::jobs::spawn_workers(self.clone(), rx);
        spawn_optimizer(self.clone());
        self.clear_unfinished_snapshots().await;
        // Cluster mode: the shared queue already holds the unfinished jobs, unless it was just
        // created (then this replica offers them again). Without a reachable queue, this replica
        // resumes them itself, as embedded mode does (writes are idempotent).
        let resume_here = match &self.shared_queue {
            None => true,
            Some(q) => match q.prepare().await {
                Ok(created) => {
                    if created {
                        self.offer_unfinished().await?;
                    }
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shared job queue unreachable at start-up: resuming unfinished jobs here");
                    true
                }
            },
        };
        if resume_here {
            for job in self.catalog.unfinished_jobs().await? {
                tracing::info!(job = %job.id, status = job.status.as_str(), "resuming job");
                let _ = self.queue.send(job.id);
            }
        }
        Ok(())
    }

    /// Hands an acknowledged job to a worker: through the shared queue when there is one (any
    /// replica may take it), else (or when it does not answer) to this replica's workers.
    pub(crate) async fn enqueue(&self, job_id: &str) {
        if let Some(q) = &self.shared_queue {
            match q.push(job_id).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(job = %job_id, error = %e, "shared job queue unreachable: running the job on this replica"),
            }
        }
        let _ = self.queue.send(job_id.to_owned());
    }

    /// Offers every unfinished job of the catalog to the shared queue again (it lost them).
    pub(crate) async fn offer_unfinished(&self) -> Result<()> {
        for job in self.catalog.unfinished_jobs().await? {
            tracing::info!(job = %job.id, status = job.status.as_str(), "offering unfinished job to the shared queue");
            self.enqueue(&job.id).await;
        }
        Ok(())
    }

    /// Waits for the right to write to a collection: the snapshot gate (shared), then the collection's
    /// lock. Always in this order, and a snapshot takes only the gate, so the two cannot deadlock.
    pub(crate) async fn lock_writes(&self, collection: &str) -> WriteGuard {
        let gate = self.writes_gate.clone().read_owned().await;
        let lock = self.write_locks.lock().expect("lock map").entry(collection.to_owned()).or_default().clone();
        WriteGuard { _collection: lock.lock_owned().await, _gate: gate }
    }

    /// Records a write to the collection's store: its optimizers run once writes have settled.
    pub(crate) fn written(&self, collection: &str) {
        let after = Duration::from_millis(self.settings.ingest.optimize_after_ms);
        if !after.is_zero() {
            self.optimize_due.lock().expect("optimize map").insert(collection.to_owned(), Instant::now() + after);
        }
    }

    /// After a failed optimisation: try again in a minute (a write meanwhile schedules it as writes do).
    fn retry_optimize(&self, collection: &str) {
        let at = Instant::now() + Duration::from_secs(60);
        self.optimize_due.lock().expect("optimize map").entry(collection.to_owned()).or_insert(at);
    }

    // ---- collections ---------------------------------------------------------------------------

    pub async fn create_collection(&self, req: NewCollection, tenant: &str) -> Result<CollectionInfo> {
        validate_collection_name(&req.name)?;
        let chunking = req.chunking.unwrap_or_else(|| self.settings.chunking.clone());
        chunking.validate().map_err(|e| Error::invalid("invalid_chunking", e))?;
        if let Some(e) = &req.embedder {
            if e != self.embedder.model_id() {
                return Err(Error::invalid(
                    "unknown_embedder",
                    format!("this server embeds with `{}`; `{e}` is not available", self.embedder.model_id()),
                ));
            }
        }
        if let Some(g) = &req.generator {
            self.generators.validate_name(g)?;
        }
        if let Some(r) = &req.rerank {
            r.validate()?;
        }
        crate::auth::validate_tenant(tenant)?;
        let record = CollectionRecord {
            name: crate::auth::storage_name(tenant, &req.name),
            tenant: tenant.to_owned(),
            embedder: self.embedder.model_id().to_owned(),
            dimensions: self.embedder.dimensions(),
            chunking,
            generator: req.generator,
            rerank: req.rerank,
            created_at: now_rfc3339(),
        };
        let _guard = self.lock_writes(&record.name).await;
        self.catalog.create_collection(record.clone()).await?;
        self.store.create_collection(&record.name, record.dimensions).await?;
        Ok(CollectionInfo { record, documents: 0, chunks: 0 })
    }

    pub async fn collection(&self, name: &str) -> Result<CollectionRecord> {
        self.catalog.get_collection(name).await?.ok_or_else(|| Error::collection_not_found(name))
    }

    pub async fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        let record = self.collection(name).await?;
        let documents = self.catalog.count_documents(name).await?;
        let chunks = self.store.count(name, None).await?;
        Ok(CollectionInfo { record, documents, chunks })
    }

    pub async fn list_collections(&self) -> Result<Vec<CollectionRecord>> {
        self.catalog.list_collections().await
    }

    pub async fn delete_collection(&self, name: &str) -> Result<()> {
        let _guard = self.lock_writes(name).await;
        if !self.catalog.delete_collection(name).await? {
            return Err(Error::collection_not_found(name));
        }
        self.store.drop_collection(name).await
    }

    // ---- snapshots -----------------------------------------------------------------------------

    fn snapshot_dir(&self) -> PathBuf {
        self.settings.data_dir.join("snapshots")
    }

    /// Starts a snapshot of the whole data folder (catalog, every collection's vectors, `keys`) in the
    /// background and returns at once with status `creating`; [`Engine::snapshots`] shows when it is
    /// ready. Writes wait while the vectors are copied; searches, questions and uploads go on.
    pub fn start_snapshot(self: &Arc<Self>, keys: Arc<dyn KeyStore>) -> Result<SnapshotStatus> {
        if self.settings.store.backend != crate::settings::StoreBackend::Embedded {
            return Err(Error::invalid(
                "snapshot_unsupported",
                "ragd snapshots copy the embedded data folder; in cluster mode use Qdrant's snapshots (docs/cluster.md)",
            ));
        }
        let now = chrono::Utc::now();
        let name = crate::snapshot::new_name(&now);
        let status = SnapshotStatus {
            name: name.clone(),
            status: "creating".into(),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            size_bytes: None,
            collections: Vec::new(),
            error: None,
        };
        self.snapshots.lock().expect("snapshots").insert(name.clone(), status.clone());
        let engine = self.clone();
        let created_at = status.created_at.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let outcome = engine.make_snapshot(&name, &created_at, keys.as_ref()).await;
            let secs = t.elapsed().as_secs_f64();
            let mut map = engine.snapshots.lock().expect("snapshots");
            match outcome {
                Ok(ready) => {
                    engine.metrics.observe_stage(Stage::Snapshot, secs);
                    tracing::info!(snapshot = %name, size_bytes = ready.size_bytes, elapsed_ms = (secs * 1e3) as u64, "snapshot ready");
                    map.remove(&name);
                }
                Err(e) => {
                    tracing::error!(snapshot = %name, error = %e, "snapshot failed");
                    if let Some(s) = map.get_mut(&name) {
                        s.status = "failed".into();
                        s.error = Some(e.to_string());
                    }
                }
            }
        });
        Ok(status)
    }

    async fn make_snapshot(&self, name: &str, created_at: &str, keys: &dyn KeyStore) -> Result<SnapshotStatus> {
        let dir = self.snapshot_dir();
        let staging = dir.join(format!(".staging-{name}"));
        let result = async {
            let manifest = self.fill_snapshot(&staging, name, created_at, keys).await?;
            let (from, out) = (staging.clone(), dir.join(format!("{name}.tar")));
            let size = tokio::task::spawn_blocking(move || crate::snapshot::pack(&from, &out))
                .await
                .map_err(|e| Error::internal(format!("packing the snapshot: {e}")))??;
            let ready = SnapshotStatus {
                name: name.to_owned(),
                status: "ready".into(),
                created_at: created_at.to_owned(),
                size_bytes: Some(size),
                collections: manifest.collections,
                error: None,
            };
            let sidecar = dir.join(format!("{name}.json"));
            let bytes = serde_json::to_vec_pretty(&ready).map_err(Error::internal)?;
            tokio::fs::write(&sidecar, bytes).await.map_err(|e| Error::internal(format!("writing {}: {e}", sidecar.display())))?;
            Ok(ready)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        if result.is_err() {
            // Whatever got written: a half archive, or a whole one whose record could not be written.
            for leftover in [format!("{name}.tar.partial"), format!("{name}.tar"), format!("{name}.json")] {
                let _ = tokio::fs::remove_file(dir.join(leftover)).await;
            }
        }
        result
    }

    /// Copies everything into `staging` while no write runs: the catalog first (one read transaction),
    /// then each collection's vectors, so a document the catalog lists has its chunks in the copy, and a
    /// job the catalog shows unfinished resumes from its last committed batch once restored.
    async fn fill_snapshot(&self, staging: &Path, name: &str, created_at: &str, keys: &dyn KeyStore) -> Result<Manifest> {
        let collections_dir = staging.join("collections");
        tokio::fs::create_dir_all(&collections_dir)
            .await
            .map_err(|e| Error::internal(format!("creating {}: {e}", collections_dir.display())))?;
        let mut collections = Vec::new();
        {
            let _no_writes = self.writes_gate.write().await;
            self.catalog.backup(&staging.join("catalog.redb")).await?;
            for c in self.catalog.list_collections().await? {
                self.store.snapshot(&c.name, &collections_dir.join(&c.name)).await?;
                let documents = self.catalog.count_documents(&c.name).await?;
                let chunks = self.store.count(&c.name, None).await?;
                collections.push(SnapshotCollection { name: c.name, documents, chunks });
            }
        }
        keys.backup(&staging.join("keys.json")).await?;
        let manifest = Manifest {
            format: crate::snapshot::FORMAT,
            name: name.to_owned(),
            created_at: created_at.to_owned(),
            ragd_version: env!("CARGO_PKG_VERSION").to_owned(),
            collections,
        };
        let path = staging.join(crate::snapshot::MANIFEST);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
        tokio::fs::write(&path, bytes).await.map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
        Ok(manifest)
    }

    /// Snapshots being made, failed since start-up, and ready (on disk), newest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotStatus>> {
        let mut all: Vec<SnapshotStatus> = self.snapshots.lock().expect("snapshots").values().cloned().collect();
        let dir = self.snapshot_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(all),
            Err(e) => return Err(Error::internal(format!("reading {}: {e}", dir.display()))),
        };
        while let Some(entry) = entries.next_entry().await.map_err(Error::internal)? {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".json").filter(|n| crate::snapshot::valid_name(n)) else { continue };
            if !dir.join(format!("{name}.tar")).exists() {
                continue;
            }
            match tokio::fs::read(entry.path()).await.map_err(Error::internal).and_then(|b| serde_json::from_slice(&b).map_err(Error::internal)) {
                Ok(status) => all.push(status),
                Err(e) => tracing::warn!(file = %entry.path().display(), error = %e, "unreadable snapshot record"),
            }
        }
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(all)
    }

    /// The archive of a ready snapshot.
    pub fn snapshot_file(&self, name: &str) -> Result<PathBuf> {
        let not_found = || Error::not_found("snapshot_not_found", format!("snapshot `{name}` does not exist"));
        if !crate::snapshot::valid_name(name) {
            return Err(not_found());
        }
        if let Some(s) = self.snapshots.lock().expect("snapshots").get(name) {
            return Err(Error::conflict("snapshot_not_ready", format!("snapshot `{name}` is {}", s.status)));
        }
        let path = self.snapshot_dir().join(format!("{name}.tar"));
        if path.exists() { Ok(path) } else { Err(not_found()) }
    }

    /// Removes a ready or failed snapshot.
    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        {
            let mut map = self.snapshots.lock().expect("snapshots");
            match map.get(name).map(|s| s.status.as_str()) {
                Some("creating") => return Err(Error::conflict("snapshot_not_ready", format!("snapshot `{name}` is still being made"))),
                Some(_) => {
                    map.remove(name);
                    return Ok(());
                }
                None => {}
            }
        }
        let path = self.snapshot_file(name)?;
        tokio::fs::remove_file(&path).await.map_err(Error::internal)?;
        let _ = tokio::fs::remove_file(path.with_extension("json")).await;
        Ok(())
    }

    /// Leftovers of snapshots interrupted by a crash: staging folders and half-written archives.
    async fn clear_unfinished_snapshots(&self) {
        let dir = self.snapshot_dir();
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { return };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let file = entry.file_name().to_string_lossy().into_owned();
            let removed = if file.starts_with(".staging-") {
                tokio::fs::remove_dir_all(entry.path()).await
            } else if file.ends_with(".tar.partial") {
                tokio::fs::remove_file(entry.path()).await
            } else {
                continue;
            };
            if let Err(e) = removed {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an unfinished snapshot");
            }
        }
    }

    // ---- documents -----------------------------------------------------------------------------

    /// Parses and stores the documents as one durable job, then queues it. When this returns `Ok`,
    /// the documents will be ingested even if the process dies right after.
    pub async fn submit(&self, collection: &str, docs: Vec<NewDocument>, idempotency_key: Option<String>) -> Result<JobRecord> {
        self.collection(collection).await?;
        if docs.is_empty() {
            return Err(Error::invalid("empty_request", "no documents were given"));
        }
        let ingest = &self.settings.ingest;
        check_document_count(docs.len(), ingest.max_documents_per_request)?;
        let timeout = Duration::from_millis(ingest.parse_timeout_ms);
        let deadline = Instant::now() + timeout;
        // One parse thread per upload, at most `parse_slots` at once; waiting for a slot counts
        // against the upload's parse time.
        let slot = match tokio::time::timeout(timeout, self.parse_slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(Error::internal("the parse slots are closed")),
            Err(_) => {
                return Err(Error::Unavailable {
                    dependency: "parser",
                    message: "every parse slot stayed busy for ingest.parse_timeout_ms".into(),
                    retry_after: Some(Duration::from_secs(5)),
                });
            }
        };
        let metrics = self.metrics.clone();
        let ingest = ingest.clone();
        let ocr = self.settings.ocr.enabled.then(|| self.settings.ocr.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ragd-parse".into())
            .stack_size(crate::parse::PARSE_STACK_BYTES)
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare_all(docs, &ingest, ocr, deadline, &metrics)))
                    .unwrap_or_else(|_| Err(Error::Unparseable("a document could not be parsed (the parser failed on it)".into())));
                let _ = tx.send(result);
                drop(slot);
            })
            .map_err(Error::internal)?;
        // The thread checks the deadline itself between steps; this bounds the wait when one step
        // (a single library call) overruns it.
        let pending = match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline) + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(Error::internal("the parse thread ended without an answer")),
            Err(_) => {
                tracing::warn!("an upload's parsing overran ingest.parse_timeout_ms; its thread is left to finish");
                return Err(crate::parse::parse_timeout());
            }
        };
        let mut seen = std::collections::HashSet::new();
        for d in &pending {
            if !seen.insert(d.id.as_str()) {
                return Err(Error::invalid("duplicate_document_id", format!("document id `{}` appears twice in one request", d.id)));
            }
        }
        let key = idempotency_key.map(|key| {
            let hashes: Vec<&[u8]> = pending.iter().flat_map(|d| [d.id.as_bytes(), d.content_hash.as_bytes()]).collect();
            IdempotencyKey { key, request_hash: content_hash(&hashes) }
        });
        let now = now_rfc3339();
        let job = JobRecord {
            id: uuid::Uuid::new_v4().to_string(),
            collection: collection.to_owned(),
            status: JobStatus::Queued,
            progress: JobProgress { done: 0, total: pending.len() as u32 },
            documents: pending
                .iter()
                .map(|d| JobDocument { id: d.id.clone(), status: DocOutcome::Pending, chunks: None, error: None })
                .collect(),
            error: None,
            created_at: now.clone(),
            updated_at: now,
            attempts: 0,
            stalled_attempts: 0,
        };
        match self.catalog.create_job(job, pending, key).await? {
            JobCreated::New(job) => {
                self.enqueue(&job.id).await;
                Ok(job)
            }
            JobCreated::Replayed(job) => Ok(job),
        }
    }

    pub async fn job(&self, id: &str) -> Result<JobRecord> {
        self.catalog.get_job(id).await?.ok_or_else(|| Error::job_not_found(id))
    }

    /// Waits until the job is done or failed, or the timeout passes (then returns it as it is).
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Result<JobRecord> {
        let mut rx = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id).await?;
            if job.status.is_finished() {
                return Ok(job);
            }
            // With a shared queue another replica may finish it: look again every second too.
            let next = if self.shared_queue.is_some() { deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)) } else { deadline };
            match tokio::time::timeout_at(next, rx.recv()).await {
                Err(_) if next < deadline => continue,
                Err(_) => return self.job(id).await,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return self.job(id).await,
            }
        }
    }

    pub async fn document(&self, collection: &str, id: &str) -> Result<DocumentRecord> {
        self.collection(collection).await?;
        self.catalog.get_document(collection, id).await?.ok_or_else(|| Error::document_not_found(collection, id))
    }

    pub async fn list_documents(&self, collection: &str, after: Option<&str>, limit: usize) -> Result<(Vec<DocumentRecord>, Option<String>)> {
        self.collection(collection).await?;
        let limit = limit.clamp(1, 1000);
        let mut docs = self.catalog.list_documents(collection, after, limit + 1).await?;
        let next = if docs.len() > limit {
            docs.truncate(limit);
            docs.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok((docs, next))
    }

    /// `limit` chunks of a document from index `from`, in document order, with the document's chunk
    /// count (to show a passage among its neighbours).
    pub async fn document_chunks(&self, collection: &str, id: &str, from: u32, limit: u32) -> Result<(Vec<ChunkHit>, u32)> {
        let document = self.document(collection, id).await?;
        let to = from.saturating_add(limit.clamp(1, 200)).min(document.chunks);
        // Point ids are a function of (collection, document, index): no search is needed.
        let ids = (from..to).map(|i| crate::ids::point_id(collection, id, i)).collect();
        Ok((self.store.retrieve(collection, ids).await?, document.chunks))
    }

    /// The most recent jobs whose collection `keep` accepts, newest first (at most 100).
    pub async fn recent_jobs(&self, limit: usize, keep: crate::catalog::JobFilter) -> Result<Vec<JobRecord>> {
        self.catalog.recent_jobs(limit.clamp(1, 100), keep).await
    }

    /// Removes a document and every one of its chunks; durable on return.
    pub async fn delete_document(&self, collection: &str, id: &str) -> Result<()> {
        self.collection(collection).await?;
        let _guard = self.lock_writes(collection).await;
        // Chunks first: if we crash in between, the document is still listed and a retried delete finishes the job.
        self.store.delete_document_chunks(collection, id, 0).await?;
        self.written(collection);
        if !self.catalog.delete_document(collection, id).await? {
            return Err(Error::document_not_found(collection, id));
        }
        Ok(())
    }

    // ---- search --------------------------------------------------------------------------------

    pub async fn search(&self, collection: &str, req: SearchRequest) -> Result<SearchResponse> {
        let record = self.collection(collection).await?;
        let query = req.query.trim();
        if query.is_empty() {
            return Err(Error::invalid("invalid_query", "`query` must not be empty"));
        }
        if query.len() > MAX_QUERY_BYTES {
            return Err(Error::invalid("invalid_query", format!("`query` is longer than {MAX_QUERY_BYTES} bytes")));
        }
        let top_k = req.top_k.unwrap_or(self.settings.search.default_top_k);
        if top_k == 0 || top_k > self.settings.search.max_top_k {
            return Err(Error::invalid("invalid_top_k", format!("`top_k` must be between 1 and {}", self.settings.search.max_top_k)));
        }
        let rerank = self.rerank_plan(&record, &req)?;
        self.check_embedder(&record)?;
        let mut degraded = Vec::new();
        let mut timings = SearchTimings::default();
        let dense = if req.mode == SearchMode::Lexical {
            None
        } else {
            let t = Instant::now();
            let result = self.embed_query(query, &mut degraded).await;
            timings.embed_ms = ms(t);
            match result {
                Ok(v) => Some(v),
                // Hybrid degrades to lexical when the embedder is down; dense has nothing to fall back to.
                Err(e @ Error::Unavailable { .. }) if req.mode == SearchMode::Hybrid => {
                    tracing::warn!(error = %e, "embedder unavailable; lexical results only");
                    degraded.push("embedder".to_owned());
                    None
                }
                Err(e) => return Err(e),
            }
        };
        let text = (req.mode != SearchMode::Dense).then(|| query.to_owned());
        let t = Instant::now();
        let query_vector = dense.clone();
        // With a rerank stage the reranker sees `candidates` fused passages and keeps `top_k`.
        let depth = rerank.map_or(top_k, |c| c.max(top_k));
        let s = &self.settings.search;
        let store_query = StoreQuery {
            dense,
            text,
            filter: req.filter,
            limit: depth,
            candidates: s.candidates.max(depth),
            rrf_k: s.rrf_k,
            weights: (s.dense_weight, s.lexical_weight),
        };
        // Within `search.timeout_ms` per attempt; a failing store opens its breaker and is then
        // answered with 503 + Retry-After at once. Hybrid: both rankings, fused here.
        let mut results = if req.mode == SearchMode::Hybrid {
            let rankings = self.store_calls.call(|| self.store.rankings(collection, store_query.clone())).await?;
            let fusion = crate::fusion::Fusion { method: s.fusion, dense_weight: s.dense_weight, lexical_weight: s.lexical_weight, rrf_k: s.rrf_k };
            crate::fusion::fuse(rankings, &fusion, depth)
        } else {
            self.store_calls.call(|| self.store.search(collection, store_query.clone())).await?
        };
        timings.search_ms = ms(t);
        self.metrics.observe_stage(Stage::Search, t.elapsed().as_secs_f64());
        if rerank.is_some() {
            let t = Instant::now();
            results = self.rerank(collection, query, query_vector.as_deref(), results, top_k, &mut degraded).await;
            timings.rerank_ms = ms(t);
            self.metrics.observe_stage(Stage::Rerank, t.elapsed().as_secs_f64());
        }
        results.truncate(top_k);
        self.metrics.count_degraded(&degraded);
        Ok(SearchResponse { results, degraded, timings, query_vector })
    }

    /// How many fused candidates this search reranks, or `None` when it does not: the request's
    /// `rerank` and `rerank_candidates`, else the collection's, else the server's `rerank.*`.
    fn rerank_plan(&self, record: &CollectionRecord, req: &SearchRequest) -> Result<Option<usize>> {
        if req.rerank_candidates.is_some_and(|c| c == 0 || c > crate::rerank::MAX_CANDIDATES) {
            return Err(Error::invalid("invalid_rerank", format!("`rerank_candidates` must be between 1 and {}", crate::rerank::MAX_CANDIDATES)));
        }
        let own = record.rerank.clone().unwrap_or_default();
        // A default applies to hybrid searches; a dense or lexical one is reranked only when asked.
        let wanted = match req.rerank {
            Some(asked) => asked,
            None if req.mode != SearchMode::Hybrid => false,
            None if req.answers_rerank => own.answers.unwrap_or(true),
            None => own.search.unwrap_or(self.settings.rerank.search),
        };
        if !wanted || self.reranker.is_none() {
            return Ok(None);
        }
        Ok(Some(req.rerank_candidates.or(own.candidates).unwrap_or(self.settings.rerank.candidates)))
    }

    /// The rerank stage: the reranker's order of `hits`, the best `top_k`; when it fails, the fused
    /// order and `degraded: ["reranker"]`.
    async fn rerank(
        &self,
        collection: &str,
        query: &str,
        query_vector: Option<&[f32]>,
        hits: Vec<ChunkHit>,
        top_k: usize,
        degraded: &mut Vec<String>,
    ) -> Vec<ChunkHit> {
        let Some(reranker) = &self.reranker else { return hits };
        if hits.len() < 2 {
            return hits;
        }
        // The candidates' stored vectors, for a reranker that compares them; without them it
        // reranks on what it has (a store that cannot give them is not a failure of the search).
        let vectors = if reranker.wants_vectors() && query_vector.is_some() {
            let ids: Vec<uuid::Uuid> = hits.iter().filter_map(|h| uuid::Uuid::parse_str(&h.chunk_id).ok()).collect();
            match self.store_calls.call(|| self.store.vectors(collection, ids.clone())).await {
                Ok(v) if v.len() == hits.len() => Some(v),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "no stored vectors for the reranker");
                    None
                }
            }
        } else {
            None
        };
        match reranker.scores(crate::rerank::RerankInput { query, query_vector, candidates: &hits, vectors: vectors.as_deref() }).await {
            Ok(scores) => crate::rerank::apply(hits, &scores, top_k),
            Err(e) => {
                tracing::warn!(error = %e, "reranker unavailable; the fused order stands");
                degraded.push("reranker".to_owned());
                hits
            }
        }
    }

    /// The query's vector: from the cache when it has it, else from the embedder (then cached). A
    /// cache that fails is bypassed and the response says `cache`.
    async fn embed_query(&self, query: &str, degraded: &mut Vec<String>) -> Result<Vec<f32>> {
        if let Some(cache) = &self.query_cache {
            match cache.get(query).await {
                Ok(Some(v)) => {
                    self.metrics.count_cache("query_embedding", "hit");
                    return Ok(v);
                }
                Ok(None) => self.metrics.count_cache("query_embedding", "miss"),
                Err(e) => {
                    self.metrics.count_cache("query_embedding", "error");
                    tracing::warn!(error = %e, "query cache unavailable; bypassing it");
                    degraded.push("cache".to_owned());
                }
            }
        }
        let t = Instant::now();
        let result = self.embedder.embed(vec![query.to_owned()], EmbedKind::Query).await;
        self.metrics.observe_stage(Stage::Embed, t.elapsed().as_secs_f64());
        let v = result?.pop().ok_or_else(|| Error::internal("the embedder returned no vector"))?;
        if let Some(cache) = &self.query_cache {
            if let Err(e) = cache.put(query, v.clone()).await {
                tracing::warn!(error = %e, "could not store a query vector in the cache");
            }
        }
        Ok(v)
    }

    pub(crate) fn check_embedder(&self, record: &CollectionRecord) -> Result<()> {
        if record.embedder != self.embedder.model_id() || record.dimensions != self.embedder.dimensions() {
            return Err(Error::conflict(
                "embedder_mismatch",
                format!(
                    "collection `{}` was embedded with `{}` ({} dims) but this server embeds with `{}` ({} dims)",
                    crate::auth::shown_name(&record.name),
                    record.embedder,
                    record.dimensions,
                    self.embedder.model_id(),
                    self.embedder.dimensions()
                ),
            ));
        }
        Ok(())
    }
}

/// Milliseconds since `t`, to the microsecond (the `timings` fields).
pub(crate) fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_collection_name",
            "collection names are 1-64 characters: letters, digits, `-` and `_`, starting with a letter or digit",
        ))
    }
}

fn validate_doc_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_DOC_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_document_id",
            format!("document ids are 1-{MAX_DOC_ID_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

/// 422 `too_many_documents` past `ingest.max_documents_per_request`.
pub fn check_document_count(n: usize, max: usize) -> Result<()> {
    if n > max {
        return Err(Error::limit(
            "too_many_documents",
            format!("one upload may hold at most {max} documents (ingest.max_documents_per_request); send them in several"),
        ));
    }
    Ok(())
}

/// How deep attachments are followed: an e-mail's attachments, and the attachments of a message
/// forwarded as an attachment; deeper ones are left out.
const MAX_ATTACHMENT_DEPTH: usize = 2;

/// Parses an upload's documents in order on the calling (parse) thread, within the per-document
/// limits and the upload's totals of inflated bytes and text. An e-mail's attachments follow as
/// documents of their own (id `<message id>/<file name>`, metadata `parent_doc_id` and
/// `attachment`), counted against `ingest.max_documents_per_request`; one that is not a readable
/// document is left out (logged), as the message is still worth having.
fn prepare_all(
    docs: Vec<NewDocument>,
    ingest: &crate::settings::IngestSettings,
    ocr: Option<crate::settings::OcrSettings>,
    deadline: Instant,
    metrics: &Metrics,
) -> Result<Vec<PendingDocument>> {
    let (mut inflated, mut text) = (0u64, 0u64);
    let mut pending = Vec::with_capacity(docs.len());
    let mut queue: std::collections::VecDeque<(NewDocument, usize)> = docs.into_iter().map(|d| (d, 0)).collect();
    while let Some((doc, depth)) = queue.pop_front() {
        if Instant::now() >= deadline {
            return Err(crate::parse::parse_timeout());
        }
        let mut limits = ParseLimits::for_document(ingest, Some(deadline));
        limits.ocr = ocr.clone();
        // What is left of the upload's totals, when that is less than a document may use.
        let inflated_left = ingest.max_request_inflated_bytes.saturating_sub(inflated);
        if inflated_left < limits.inflated_bytes {
            limits.inflated_bytes = inflated_left;
            limits.inflated_code = "request_too_large";
            limits.inflated_setting = "ingest.max_request_inflated_bytes";
        }
        let text_left = ingest.max_request_text_bytes.saturating_sub(text);
        if text_left < limits.text_bytes {
            limits.text_bytes = text_left;
            limits.text_code = "request_too_large";
            limits.text_setting = "ingest.max_request_text_bytes";
        }
        let t = Instant::now();
        let r = prepare(doc, &limits);
        metrics.observe_stage(Stage::Parse, t.elapsed().as_secs_f64());
        let (mut doc, used) = match r {
            Err(e @ (Error::Unparseable(_) | Error::UnsupportedMediaType(_))) if depth > 0 => {
                tracing::warn!(error = %e, "an attachment is not a readable document; left out");
                continue;
            }
            r => r?,
        };
        inflated += used;
        text += doc.parsed.text.len() as u64;
        let attachments = std::mem::take(&mut doc.parsed.attachments);
        if depth < MAX_ATTACHMENT_DEPTH {
            let mut names = std::collections::HashSet::new();
            for a in attachments {
                check_document_count(pending.len() + queue.len() + 2, ingest.max_documents_per_request)?;
                // Ids stay unique within the message: a repeated file name gets a number.
                let base: String = a.filename.chars().filter(|c| !c.is_control()).take(120).collect();
                let mut name = base.clone();
                let mut n = 1;
                while !names.insert(name.clone()) {
                    n += 1;
                    name = format!("{base} ({n})");
                }
                let mut metadata = doc.metadata.clone();
                metadata.insert("parent_doc_id".into(), serde_json::Value::String(doc.id.clone()));
                metadata.insert("attachment".into(), serde_json::Value::String(name.clone()));
                let child = NewDocument {
                    id: Some(format!("{}/{name}", doc.id)),
                    title: Some(name.clone()),
                    metadata,
                    body: DocumentBody::File { filename: Some(a.filename), content_type: a.content_type, bytes: a.bytes },
                };
                queue.push_back((child, depth + 1));
            }
        } else if !attachments.is_empty() {
            tracing::warn!(depth, "attachments nested deeper than {MAX_ATTACHMENT_DEPTH} levels are left out");
        }
        pending.push(doc);
    }
    Ok(pending)
}

/// Parses one document and computes its identity. Runs on a parse thread (see `Engine::submit`).
fn prepare(doc: NewDocument, limits: &ParseLimits) -> Result<(PendingDocument, u64)> {
    let meta_json = serde_json::to_vec(&doc.metadata).map_err(Error::internal)?;
    let title_bytes = doc.title.clone().unwrap_or_default();
    let (parsed, hash, default_id, source, inflated) = match doc.body {
        DocumentBody::Text(text) => {
            let hash = content_hash(&[b"text", text.as_bytes(), title_bytes.as_bytes(), &meta_json]);
            let (parsed, _) = parse_limited(SourceKind::Text, text.as_bytes(), limits)?;
            (parsed, hash, None, None, 0)
        }
        DocumentBody::File { filename, content_type, bytes } => {
            let kind = SourceKind::detect(filename.as_deref(), content_type.as_deref(), &bytes)?;
            let hash = content_hash(&[b"file", &bytes, title_bytes.as_bytes(), &meta_json]);
            let (parsed, inflated) = parse_limited(kind, &bytes, limits)?;
            let kind_name = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned));
            (parsed, hash, filename, kind_name, inflated)
        }
    };
    if parsed.text.trim().is_empty() {
        return Err(Error::Unparseable("the document contains no text".into()));
    }
    let id = doc.id.or(default_id).unwrap_or_else(|| hash[..16].to_owned());
    validate_doc_id(&id)?;
    let title = doc.title.or_else(|| parsed.title.clone());
    Ok((PendingDocument { id, title, metadata: doc.metadata, content_hash: hash, source, parsed }, inflated))
}

/// Runs the vector store's optimizers on each collection whose writes have settled
/// (`ingest.optimize_after_ms` without a write, and no job running), one collection at a time, holding that collection's write lock so no
/// write interleaves (writes wait; searches go on). Without this the embedded store never builds its
/// HNSW index and dense search stays exhaustive, linear in the number of chunks.
fn spawn_optimizer(engine: Arc<Engine>) {
    let after = Duration::from_millis(engine.settings.ingest.optimize_after_ms);
    if after.is_zero() {
        return;
    }
    let every = (after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            // While jobs run, more writes are coming: a pause between two of their batches is not the end.
            if !engine.active_jobs.lock().expect("active jobs").is_empty() {
                continue;
            }
            let due: Vec<String> = {
                let now = Instant::now();
                let map = engine.optimize_due.lock().expect("optimize map");
                map.iter().filter(|(_, at)| **at <= now).map(|(c, _)| c.clone()).collect()
            };
            for collection in due {
                let _guard = engine.lock_writes(&collection).await;
                {
                    // A write that landed while we waited for the lock pushed the time back.
                    let mut map = engine.optimize_due.lock().expect("optimize map");
                    match map.get(&collection) {
                        Some(at) if *at <= Instant::now() => map.remove(&collection),
                        _ => continue,
                    };
                }
                match engine.catalog.get_collection(&collection).await {
                    Ok(Some(_)) => {}
                    Ok(None) => continue, // dropped meanwhile
                    Err(e) => {
                        tracing::warn!(collection = %collection, error = %e, "cannot read the catalog; optimising later");
                        engine.retry_optimize(&collection);
                        continue;
                    }
                }
                let t = Instant::now();
                match engine.store.optimize(&collection).await {
                    Ok(changed) => {
                        let secs = t.elapsed().as_secs_f64();
                        engine.metrics.observe_stage(Stage::Optimize, secs);
                        tracing::info!(collection = %collection, changed, elapsed_ms = (secs * 1e3) as u64, "store optimised");
                    }
                    Err(e) => {
                        tracing::warn!(collection = %collection, error = %e, "the store's optimizers failed; trying again later");
                        engine.retry_optimize(&collection);
                    }
                }
            }
        }
    });
}
