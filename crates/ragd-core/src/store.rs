//! The `VectorStore` trait: where chunks live and how they are found. The embedded backend
//! (qdrant-edge, in-process) and the cluster backend (a Qdrant server) implement it; callers never
//! know which one they talk to.

use async_trait::async_trait;
use uuid::Uuid;

use crate::chunk::Chunk;
use crate::error::Result;
use crate::types::{ChunkHit, Metadata, SearchFilter};

/// A chunk ready to be written: its text, where it came from, and its dense vector. The store
/// derives the BM25 sparse vector from `chunk.text` itself, so both backends index text the same way.
#[derive(Debug, Clone)]
pub struct ChunkPoint {
    pub id: Uuid,
    pub doc_id: String,
    pub title: Option<String>,
    pub metadata: Metadata,
    pub chunk: Chunk,
    pub dense: Vec<f32>,
}

impl ChunkPoint {
    /// The text BM25 indexes: the document title and the chunk's heading path (each once, and not
    /// when the chunk already starts with it), then the chunk. Titles and headings make a passage
    /// findable by what it is about without drowning its own words.
    pub fn lexical_text(&self) -> String {
        context_text(self.title.as_deref(), &self.chunk.heading_path, &self.chunk.text)
    }
}

/// A passage's text with its context before it: the title and the headings above it, each once and
/// only when the opening of the text does not already hold it (`# Install` at the top of a Markdown
/// chunk). The embedded text and the BM25 text are both made by this one function.
pub fn context_text(title: Option<&str>, headings: &[String], text: &str) -> String {
    let mut end = text.len().min(400);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let mut parts: Vec<&str> = Vec::new();
    for t in title.into_iter().chain(headings.iter().map(String::as_str)) {
        let t = t.trim();
        if !t.is_empty() && !head.contains(t) && !parts.iter().any(|p| p.eq_ignore_ascii_case(t)) {
            parts.push(t);
        }
    }
    if parts.is_empty() {
        return text.to_owned();
    }
    format!("{}\n{}", parts.join(" \u{2014} "), text)
}

/// The two rankings of a hybrid query before fusion, each with its own scores (cosine for dense,
/// BM25 for lexical), best first.
#[derive(Debug, Clone, Default)]
pub struct Rankings {
    pub dense: Vec<ChunkHit>,
    pub lexical: Vec<ChunkHit>,
}

/// A retrieval request. With `dense` and `text` both set the store runs both searches and fuses them
/// with reciprocal rank fusion; with one of them, only that search. (The engine fuses hybrid queries
/// itself, from `VectorStore::rankings`; the store's own fusion serves tools that compare stores.)
#[derive(Debug, Clone, Default)]
pub struct StoreQuery {
    pub dense: Option<Vec<f32>>,
    pub text: Option<String>,
    pub filter: Option<SearchFilter>,
    pub limit: usize,
    /// How many candidates each side contributes to the fusion.
    pub candidates: usize,
    /// The RRF constant `k` (60 in the original paper).
    pub rrf_k: usize,
    /// Weights of the dense and the lexical ranking in the fusion.
    pub weights: (f32, f32),
}

#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Creates the collection's storage if it does not exist (idempotent).
    async fn create_collection(&self, collection: &str, dimensions: usize) -> Result<()>;
    /// Removes the collection and every point in it (idempotent).
    async fn drop_collection(&self, collection: &str) -> Result<()>;
    /// Writes points (overwriting equal ids). Returns once they are durable: after `upsert` returns,
    /// a crash of the process does not lose them.
    async fn upsert(&self, collection: &str, points: Vec<ChunkPoint>) -> Result<()>;
    /// Deletes the document's chunks whose index is `>= from_index` (0 removes the whole document). Durable on return.
    async fn delete_document_chunks(&self, collection: &str, doc_id: &str, from_index: u32) -> Result<()>;
    async fn search(&self, collection: &str, query: StoreQuery) -> Result<Vec<ChunkHit>>;
    /// The dense and the lexical ranking of a query, unfused, each at most `query.candidates` long
    /// (a side whose input is absent — no vector, no text, only stopwords — is empty). Stores that can
    /// run both in one round trip override this.
    async fn rankings(&self, collection: &str, query: StoreQuery) -> Result<Rankings> {
        let dense_q = StoreQuery { text: None, limit: query.candidates, ..query.clone() };
        let text_q = StoreQuery { dense: None, limit: query.candidates, ..query };
        let dense = async {
            if dense_q.dense.is_some() { self.search(collection, dense_q).await } else { Ok(Vec::new()) }
        };
        let lexical = async {
            if text_q.text.is_some() { self.search(collection, text_q).await } else { Ok(Vec::new()) }
        };
        let (dense, lexical) = futures::future::try_join(dense, lexical).await?;
        Ok(Rankings { dense, lexical })
    }
    /// The chunks with these point ids, in the order asked, skipping ids that do not exist (score 0).
    async fn retrieve(&self, collection: &str, ids: Vec<Uuid>) -> Result<Vec<ChunkHit>>;
    /// The dense vectors of the chunks with these point ids, in the order asked (`None` for an id
    /// that does not exist). For the builtin reranker, which compares candidates with each other.
    async fn vectors(&self, collection: &str, _ids: Vec<Uuid>) -> Result<Vec<Option<Vec<f32>>>> {
        Err(crate::error::Error::invalid("vectors_unsupported", format!("this vector store cannot return the vectors of `{collection}`")))
    }
    /// Number of chunks, of the whole collection or of one document.
    async fn count(&self, collection: &str, doc_id: Option<&str>) -> Result<u64>;
    /// Probe for `/health/ready`.
    async fn ready(&self) -> Result<()>;
    /// Runs the store's own maintenance on a collection (segment merges, index building) until it has
    /// nothing left to do; true when something changed. The engine calls it once a collection's writes
    /// have settled, never concurrently with a write to that collection. Stores that maintain
    /// themselves keep this default.
    async fn optimize(&self, _collection: &str) -> Result<bool> {
        Ok(false)
    }
    /// Copies the collection's storage into the folder `dest`, in the layout the store loads (a
    /// snapshot's `collections/<name>`). The engine calls it while no write runs; searches may.
    /// Stores that keep their data elsewhere (a Qdrant cluster takes its own snapshots) refuse.
    /// A page of the collection's chunks with their dense vectors, in point-id order, starting at
    /// `from` (inclusive); the second value is where the next page starts. For moving a collection
    /// from one store to another (`ragd cluster import`).
    async fn export(&self, collection: &str, _from: Option<Uuid>, _limit: usize) -> Result<(Vec<ChunkPoint>, Option<Uuid>)> {
        Err(crate::error::Error::invalid("export_unsupported", format!("this vector store cannot export `{collection}`")))
    }
    async fn snapshot(&self, collection: &str, _dest: &std::path::Path) -> Result<()> {
        Err(crate::error::Error::invalid(
            "snapshot_unsupported",
            format!("this vector store cannot copy `{collection}` into a ragd snapshot; use its own snapshots"),
        ))
    }
}
