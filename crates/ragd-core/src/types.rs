//! The records ragd keeps (collections, documents, jobs) and the shapes of search requests and results.
//! These are library types; the HTTP layer has its own DTOs where the wire shape differs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chunk::ChunkingConfig;
use crate::parse::ParsedDocument;

pub type Metadata = Map<String, Value>;

/// A collection as the catalog stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CollectionRecord {
    pub name: String,
    pub tenant: String,
    /// The embedder model id the vectors were made with; queries must use the same.
    pub embedder: String,
    pub dimensions: usize,
    pub chunking: ChunkingConfig,
    /// Generator override for this collection (issue: answers); `None` uses the server default.
    #[serde(default)]
    pub generator: Option<String>,
    /// This collection's rerank choices; `None` uses the server's `rerank.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<crate::rerank::CollectionRerank>,
    pub created_at: String,
}

/// A document as the catalog stores it once its chunks are durable in the vector store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentRecord {
    pub id: String,
    pub title: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    pub chunks: u32,
    pub content_hash: String,
    pub ingested_at: String,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// What happened to one document of a job.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DocOutcome {
    Pending,
    /// New or changed content: chunks written.
    Ingested,
    /// Same content hash as what is stored: nothing to do.
    Unchanged,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobDocument {
    pub id: String,
    pub status: DocOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobProgress {
    pub done: u32,
    pub total: u32,
}

/// An ingestion job. Once stored, it survives restarts until it is done or failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    pub id: String,
    pub collection: String,
    pub status: JobStatus,
    pub progress: JobProgress,
    pub documents: Vec<JobDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub created_at: String,
    pub updated_at: String,
    /// How many times a worker has started this job (a restart mid-job makes it 2).
    #[serde(default)]
    pub attempts: u32,
    /// Attempts in a row that ended without making a batch durable (the worker died, hung or
    /// crashed the process). Reset by every committed batch; at `ingest.max_stalled_attempts` the
    /// job fails with a reason instead of being retried forever.
    #[serde(default)]
    pub stalled_attempts: u32,
}

/// One document waiting to be ingested, already parsed (parsing happens before the job is
/// acknowledged, so a corrupt file is refused at upload instead of failing later).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingDocument {
    pub id: String,
    pub title: Option<String>,
    pub metadata: Metadata,
    pub content_hash: String,
    pub source: Option<String>,
    pub parsed: ParsedDocument,
}

/// Retrieval strategy of a search.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SearchMode {
    #[default]
    Hybrid,
    Dense,
    Lexical,
}

/// ragd's filter language: equality (or any-of) on the document id and on metadata fields, all ANDed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_id: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A stored chunk as returned by a search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkHit {
    pub doc_id: String,
    pub chunk_id: String,
    pub chunk_index: u32,
    pub score: f32,
    pub title: Option<String>,
    pub text: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    pub heading_path: Vec<String>,
    pub offsets: Offsets,
}

/// Where a chunk sits in its document: character (not byte) offsets into the extracted text, and the
/// page (PDF, 1-based), slide (pptx, 1-based) or sheet (xlsx, ods: its name) it starts on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Offsets {
    pub char_start: usize,
    pub char_end: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// The chunk's text was read from an image by OCR (a scanned page, a picture), not from text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A search hit for unit tests: `id` is both its document and its chunk id.
#[cfg(test)]
pub(crate) fn test_hit(id: &str, score: f32, text: &str) -> ChunkHit {
    ChunkHit {
        doc_id: id.into(),
        chunk_id: id.into(),
        chunk_index: 0,
        score,
        title: None,
        text: text.into(),
        metadata: Default::default(),
        heading_path: vec![],
        offsets: Offsets::default(),
    }
}
