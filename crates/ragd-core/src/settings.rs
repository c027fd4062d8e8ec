//! Settings: one struct tree, layered defaults < `ragd.toml` < `RAGD_*` environment < command-line flags.
//! The environment is read by the binary and handed in here, so tests build `Settings` directly.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkingConfig;

/// Environment variables with the `RAGD_` prefix that are not settings (read by CLI commands).
const NON_SETTING_ENV: &[&str] = &["RAGD_API_KEY", "RAGD_SERVER", "RAGD_CONFIG", "RAGD_LOG", "RAGD_LOG_FORMAT"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// API address.
    pub listen: String,
    /// Address of `/metrics` and admin-only routes (default `127.0.0.1:9464`); an empty string
    /// serves them on `listen` instead.
    pub admin_listen: Option<String>,
    /// Where the embedded store, the catalog (jobs, documents) and keys live.
    pub data_dir: PathBuf,
    /// The model cache filled by `ragd models fetch`.
    pub models_dir: PathBuf,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub limits: LimitsSettings,
    pub cors: CorsSettings,
    pub tls: TlsSettings,
    pub embedder: ProviderSettings<EmbedderKind>,
    pub generator: ProviderSettings<GeneratorKind>,
    /// More generators, by name, that a collection can pick with its `generator` field.
    pub generators: BTreeMap<String, ProviderSettings<GeneratorKind>>,
    pub answer: AnswerSettings,
    pub log: LogSettings,
    /// OpenTelemetry trace export (off unless `otel.endpoint` is set).
    pub otel: OtelSettings,
    /// After SIGTERM/Ctrl-C: how long in-flight requests and streams may take to finish.
    pub shutdown_grace_secs: u64,
    /// Breakers, retries, concurrency caps per dependency.
    pub resilience: ResilienceByDependency,
    /// Default chunking of new collections.
    pub chunking: ChunkingConfig,
    pub ingest: IngestSettings,
    /// OCR of scanned PDF pages and images, through Tesseract (docs/ingestion.md, "Formats").
    pub ocr: OcrSettings,
    /// URL ingest: what may be fetched, how much, how long (docs/ingestion.md, "URLs").
    pub fetch: FetchSettings,
    pub search: SearchSettings,
    /// The rerank stage between search and answers (`none`, `builtin`, `http`).
    pub rerank: crate::rerank::RerankSettings,
    /// Where vectors live: the embedded engine (default) or a Qdrant cluster.
    pub store: StoreSettings,
    /// Redis, for what cluster replicas share (query cache, rate limits). Unset: in-process only.
    pub redis: RedisSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `true` requires a key, JWT or service token on `/api` and `/v1`.
    pub enabled: bool,
    /// Bearer JWTs from an identity provider (off unless configured).
    pub jwt: Option<JwtSettings>,
}

/// JWT bearer tokens: algorithms pinned per key, `exp` always required, `iss`/`aud` when set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Keys given here (shared secrets for HS256, PEM public keys for RS256/ES256).
    pub keys: Vec<JwtKeySettings>,
    /// A JWKS endpoint of the identity provider.
    pub jwks_url: Option<String>,
    /// The algorithms JWKS keys may sign with (a key's own `alg`, if any, must be one of them).
    pub jwks_algorithms: Vec<JwtAlgorithm>,
    /// How long fetched keys are used before they are fetched again.
    pub jwks_cache_secs: u64,
    /// After a fetch, an unknown `kid` waits this long before it may cause another.
    pub jwks_cooldown_ms: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Claim holding the tenant; `default_tenant` applies when it is absent.
    pub tenant_claim: String,
    pub default_tenant: Option<String>,
    /// Claim holding the role (a string or a list of strings), mapped through `role_map` when given.
    pub role_claim: String,
    pub role_map: BTreeMap<String, crate::auth::Role>,
    pub default_role: Option<crate::auth::Role>,
    /// Claim holding the collections the token may use (absent: all of the tenant's).
    pub collections_claim: String,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            issuer: None,
            audience: None,
            keys: Vec::new(),
            jwks_url: None,
            jwks_algorithms: vec![JwtAlgorithm::RS256],
            jwks_cache_secs: 300,
            jwks_cooldown_ms: 30_000,
            leeway_secs: 5,
            tenant_claim: "tenant".into(),
            default_tenant: None,
            role_claim: "role".into(),
            role_map: BTreeMap::new(),
            default_role: None,
            collections_claim: "collections".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JwtKeySettings {
    /// Matched against the token's `kid`; a key without one is tried for tokens without a `kid`.
    pub kid: Option<String>,
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret.
    pub secret: Option<Secret>,
    /// RS256/ES256 public key, PEM text or a file.
    pub public_key_pem: Option<String>,
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

/// Requests per period for one route class, per principal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    pub requests: u32,
    pub period_secs: u64,
    /// Most requests at once (default: `requests`).
    pub burst: Option<u32>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings { requests: 100, period_secs: 60, burst: None }
    }
}

impl QuotaSettings {
    pub fn quota(&self) -> crate::ratelimit::Quota {
        crate::ratelimit::Quota {
            requests: self.requests,
            period: std::time::Duration::from_secs(self.period_secs),
            burst: self.burst.unwrap_or(self.requests),
        }
    }
}

/// Per-principal limits by route class (the seed's default: 100 per minute per key). They apply to
/// authenticated callers; with authentication off there is one local user and no limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// search, query, chat completions, and reading collections, documents and jobs.
    pub query: QuotaSettings,
    /// adding and deleting documents.
    pub ingest: QuotaSettings,
    /// collections, keys, status.
    pub admin: QuotaSettings,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings { enabled: true, query: QuotaSettings::default(), ingest: QuotaSettings::default(), admin: QuotaSettings::default() }
    }
}

/// Request limits at the edge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// Largest JSON body on every route but uploads (those take `ingest.max_upload_bytes`).
    pub json_body_bytes: u64,
    /// Searches and questions running at once; more are shed with 503 and `Retry-After`.
    pub max_concurrent_queries: usize,
    /// Longest a request may take before its response starts, by route class (a streamed answer
    /// is bounded by the generator's own timeout once it starts).
    pub query_timeout_ms: u64,
    pub ingest_timeout_ms: u64,
    pub admin_timeout_ms: u64,
    /// Connections open at once on each listener (lowered to stay under the process's open-files
    /// limit); at the cap, new ones wait in the kernel's backlog (plain HTTP) or are closed (HTTPS)
    /// until one ends.
    pub max_connections: usize,
    /// A new connection that has not sent its first request's headers within this long is closed
    /// (a later request gets as long from its first byte).
    pub header_read_timeout_ms: u64,
    /// Bodies of every route but uploads are read whole, within this long, before the handler
    /// runs and before a search or question takes one of `max_concurrent_queries`; slower: 408
    /// `body_timeout`. (Uploads are bounded by `ingest_timeout_ms`.)
    pub body_read_timeout_ms: u64,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            json_body_bytes: 1 << 20,
            max_concurrent_queries: 64,
            query_timeout_ms: 120_000,
            // `wait=true` uploads may be held up to 10 minutes.
            ingest_timeout_ms: 660_000,
            admin_timeout_ms: 30_000,
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        }
    }
}

/// Cross-origin requests from browsers: none unless origins are listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Exact origins such as `https://app.example.com`, or `*` (then never with credentials).
    pub allowed_origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

impl Default for CorsSettings {
    fn default() -> Self {
        CorsSettings { allowed_origins: Vec::new(), allow_credentials: false, max_age_secs: 600 }
    }
}

/// HTTPS on the API listener: with both files set, ragd speaks TLS itself (HTTP/1.1 and HTTP/2) and
/// reloads the files when they change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for a renewal.
    pub reload_check_ms: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings { cert_file: None, key_file: None, reload_check_ms: 10_000 }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    #[default]
    Builtin,
    Ollama,
    Openai,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorKind {
    #[default]
    Builtin,
    Ollama,
    Openai,
    None,
}

/// Where a model provider is and how long to wait for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings<K> {
    pub kind: K,
    pub url: Option<String>,
    pub model: Option<String>,
    pub api_key: Option<Secret>,
    pub timeout_ms: u64,
    /// Texts per forward pass (embedder) — ignored by generators.
    pub max_batch: usize,
    /// Generators: tokens of prompt plus answer the model may use (the built-in model's context size).
    pub context_tokens: usize,
    /// `openai` generators: `chat` (`/v1/chat/completions`, messages) or `completions`
    /// (`/v1/completions`, a completion-style prompt, for base models).
    pub api: OpenAiApi,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OpenAiApi {
    #[default]
    Chat,
    Completions,
}

impl<K: Default> Default for ProviderSettings<K> {
    fn default() -> Self {
        ProviderSettings {
            kind: K::default(),
            url: None,
            model: None,
            api_key: None,
            timeout_ms: 30_000,
            max_batch: 32,
            context_tokens: 4096,
            api: OpenAiApi::Chat,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Qdrant's engine in this process, under `data_dir/collections`.
    #[default]
    Embedded,
    /// A Qdrant server or cluster reached over gRPC (`store.qdrant`).
    Qdrant,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub qdrant: QdrantSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QdrantSettings {
    /// gRPC addresses of the cluster's nodes (`http://host:6334`); a call that fails on one node
    /// (unreachable, deadline passed) is tried on the next.
    pub urls: Vec<String>,
    pub api_key: Option<Secret>,
    /// Deadline of every call to a node (searches also keep `search.timeout_ms` overall).
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Copies of every shard. With 3 nodes, 3 copies and `write_consistency_factor` 2, a write is
    /// acknowledged only once two nodes hold it, so losing any one node loses no acknowledged write
    /// and the two left still accept writes.
    pub replication_factor: u32,
    /// Replicas that must confirm a write before it is acknowledged (at most `replication_factor`).
    pub write_consistency_factor: u32,
    pub shard_number: u32,
    /// Prepended to every collection name in Qdrant, so ragd can share a cluster.
    pub collection_prefix: String,
}

impl Default for QdrantSettings {
    fn default() -> Self {
        QdrantSettings {
            urls: Vec::new(),
            api_key: None,
            timeout_ms: 10_000,
            connect_timeout_ms: 2_000,
            replication_factor: 3,
            write_consistency_factor: 2,
            shard_number: 1,
            collection_prefix: "ragd_".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:6379/0`; unset keeps the query cache and rate limits in this process.
    pub url: Option<String>,
    /// Deadline of one Redis command; past it the cache is bypassed and limits fall back to local.
    pub timeout_ms: u64,
    /// Prepended to every key ragd writes.
    pub key_prefix: String,
    /// How long a cached query vector lives in Redis.
    pub cache_ttl_secs: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings { url: None, timeout_ms: 250, key_prefix: "ragd:".into(), cache_ttl_secs: 86_400 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Largest request body accepted on upload routes; larger ones get 413 before they are read.
    pub max_upload_bytes: u64,
    /// Jobs processed at once.
    pub workers: usize,
    /// Documents embedded and made durable together inside a job.
    pub batch_documents: usize,
    /// A running job whose worker has not reported progress for this long is stopped and retried.
    pub job_stale_secs: u64,
    /// Attempts in a row without progress before a job fails (instead of being retried forever).
    pub max_stalled_attempts: u32,
    /// Once a collection has had no write for this long and no job is running, the vector store's optimizers run on it
    /// (merging small segments, building the HNSW index of large ones, dropping deleted points),
    /// serialised with that collection's writes. 0 turns it off (dense search stays exhaustive).
    pub optimize_after_ms: u64,
    /// Documents in one upload (JSON `documents` or multipart `file` parts); more: 422
    /// `too_many_documents`, before any is parsed.
    pub max_documents_per_request: usize,
    /// Bytes one document may inflate to while it is parsed: PDF streams (Flate, LZW, ASCII85) and
    /// .docx zip parts, counted before the parser inflates them; more: 422 `document_too_large`.
    pub max_document_inflated_bytes: u64,
    /// The same, summed over every document of one upload; more: 422 `request_too_large`.
    pub max_request_inflated_bytes: u64,
    /// Text extracted from one document (UTF-8 bytes); more: 422 `document_too_large`.
    pub max_document_text_bytes: u64,
    /// Text extracted from all documents of one upload (what the job stores and chunks); more: 422
    /// `request_too_large`.
    pub max_request_text_bytes: u64,
    /// Element nesting of HTML and .docx XML; deeper: 422 `document_too_complex`, refused before
    /// any recursive code sees it.
    pub max_nesting_depth: usize,
    /// Chunks one document may be cut into; more: the job fails at once with `too_many_chunks`,
    /// before anything of that batch is embedded.
    pub max_chunks_per_document: u32,
    /// Longest the parsing of one upload may take; past it: 422 `parse_timeout`.
    pub parse_timeout_ms: u64,
}

/// OCR: PDF pages that have pictures and no text, and png/jpeg/tiff uploads, are read by Tesseract
/// (its command line, `tesseract`, with Poppler's `pdftoppm` to draw PDF pages), within the upload's
/// parse time (`ingest.parse_timeout_ms`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OcrSettings {
    /// Off: scanned pages stay without text (a PDF of scans only gets 422) and images are refused.
    pub enabled: bool,
    /// Tesseract's language codes (`eng`, `deu`, `fra`, ...); each needs its traineddata installed
    /// (Debian: `tesseract-ocr-<code>`).
    pub languages: Vec<String>,
    /// Pages OCR'd in one document at most; a document with more scanned pages: 422 `document_too_large`.
    pub max_pages: u32,
    /// Largest image (width × height) handed to Tesseract; larger: 422 `document_too_large`,
    /// refused from the image's header before it is decoded.
    pub max_image_pixels: u64,
}

impl Default for OcrSettings {
    fn default() -> Self {
        OcrSettings { enabled: true, languages: vec!["eng".into()], max_pages: 50, max_image_pixels: 40_000_000 }
    }
}

/// The largest `ingest.max_nesting_depth` accepted: the parse thread's stack is sized for it.
pub const MAX_NESTING_DEPTH_LIMIT: usize = 4096;

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_upload_bytes: 32 * 1024 * 1024,
            workers: 1,
            batch_documents: 64,
            job_stale_secs: 300,
            max_stalled_attempts: 5,
            optimize_after_ms: 2_000,
            max_documents_per_request: 1_000,
            max_document_inflated_bytes: 64 * 1024 * 1024,
            max_request_inflated_bytes: 256 * 1024 * 1024,
            max_document_text_bytes: 16 * 1024 * 1024,
            max_request_text_bytes: 64 * 1024 * 1024,
            max_nesting_depth: 256,
            max_chunks_per_document: 10_000,
            parse_timeout_ms: 60_000,
        }
    }
}

/// URL ingest (`{"url": ...}`, `{"sitemap": ...}`, crawls): every hop's address is checked against a
/// deny list of non-public addresses before ragd connects (`egress.rs`); `allow` exempts blocks from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FetchSettings {
    /// `false` refuses URL ingest (403 `url_ingest_disabled`).
    pub enabled: bool,
    /// CIDRs (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`) that may be fetched although the deny list
    /// (loopback, private, link-local, metadata, ...) holds them. Empty: public addresses only.
    pub allow: Vec<String>,
    /// Largest page (or sitemap) fetched; larger: 422 `page_too_large` (a crawl skips it).
    /// `ingest.max_upload_bytes` bounds it too, and everything one request fetches.
    pub max_bytes: u64,
    /// Longest one request to a remote server may take, from its DNS lookup to the last byte of its
    /// body; past it: 504 `fetch_timeout` (a crawl skips the page).
    pub timeout_ms: u64,
    /// Redirects followed per page (each target is checked like the first URL).
    pub max_redirects: u32,
    /// Most pages a crawl or a sitemap ingests (and the largest `max_pages` a request may ask for);
    /// `ingest.max_documents_per_request` bounds it too.
    pub max_pages: usize,
    /// Longest a crawl or a sitemap may fetch for (at most half of `limits.ingest_timeout_ms`, which
    /// bounds the whole request); when it is up, the pages fetched so far are ingested.
    pub crawl_timeout_ms: u64,
    /// Sent as `User-Agent` on every fetch.
    pub user_agent: String,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            enabled: true,
            allow: Vec::new(),
            max_bytes: 16 * 1024 * 1024,
            timeout_ms: 15_000,
            max_redirects: 5,
            max_pages: 50,
            crawl_timeout_ms: 120_000,
            user_agent: concat!("ragd/", env!("CARGO_PKG_VERSION"), " (URL ingest)").into(),
        }
    }
}

impl FetchSettings {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(bad) = crate::egress::EgressPolicy::new(&self.allow) {
            p.extend(bad.into_iter().map(|b| format!("fetch.allow: {b}")));
        }
        if self.max_bytes < 1024 {
            p.push("fetch.max_bytes must be at least 1024".into());
        }
        if self.max_pages == 0 || self.timeout_ms == 0 || self.crawl_timeout_ms == 0 {
            p.push("fetch.max_pages, fetch.timeout_ms and fetch.crawl_timeout_ms must be at least 1".into());
        }
        if self.user_agent.is_empty() || !self.user_agent.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            p.push("fetch.user_agent must be printable ASCII and not empty".into());
        }
        p
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    pub default_top_k: usize,
    pub max_top_k: usize,
    /// Candidates each retriever contributes to hybrid fusion.
    pub candidates: usize,
    /// How hybrid search fuses its dense and lexical candidates: `dbsf` (scores standardised per
    /// side), `relative` (scores scaled 0..1 per side) or `rrf` (ranks only). docs/retrieval.md.
    pub fusion: crate::fusion::FusionMethod,
    /// Reciprocal rank fusion constant (`fusion = "rrf"`).
    pub rrf_k: usize,
    /// Weight of the dense side in hybrid fusion.
    pub dense_weight: f32,
    /// Weight of the BM25 side in hybrid fusion. 0.6 : 0.4 leans on the dense side, the stronger
    /// retriever on most sets, without letting it drown an exact-word match; every weight from 0.5
    /// to 0.7 beat both single rankings on msmarco-5k and qa-dev (docs/retrieval.md).
    pub lexical_weight: f32,
    /// Deadline of one vector-store search: past it the answer is 503 with Retry-After, never a hang.
    pub timeout_ms: u64,
    /// Query vectors kept in memory so a repeated query skips the embedder (0 turns it off).
    pub query_cache_entries: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings { default_top_k: 10, max_top_k: 100, candidates: 100, fusion: Default::default(), rrf_k: 60, dense_weight: 0.6, lexical_weight: 0.4, timeout_ms: 5_000, query_cache_entries: 10_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceByDependency {
    pub embedder: crate::resilience::ResilienceSettings,
    /// Applies to every generator (each has its own breaker). Generators are never retried.
    pub generator: crate::resilience::ResilienceSettings,
    /// The JWKS fetch of `auth.jwt.jwks_url` (while its breaker is open, the keys fetched before are used).
    pub jwks: crate::resilience::ResilienceSettings,
    /// Vector-store searches (the per-attempt timeout is `search.timeout_ms`).
    pub vector_store: crate::resilience::ResilienceSettings,
    /// The shared query cache (Redis; the per-call timeout is `redis.timeout_ms`). Never retried: a
    /// miss costs one embedding.
    pub cache: crate::resilience::ResilienceSettings,
    /// The reranker (the per-call timeout is `rerank.timeout_ms`). Never retried: the fused order
    /// is the fallback.
    pub reranker: crate::resilience::ResilienceSettings,
    /// URL ingest's requests to remote servers (the per-request timeout is `fetch.timeout_ms`). One
    /// attempt each; only failures to get an answer (connect, timeout) count against the breaker.
    pub fetch: crate::resilience::ResilienceSettings,
}

impl Default for ResilienceByDependency {
    fn default() -> Self {
        use crate::breaker::BreakerConfig;
        use crate::resilience::ResilienceSettings;
        ResilienceByDependency {
            embedder: ResilienceSettings {
                breaker: BreakerConfig { slow_call_ms: 10_000, wait_in_open_ms: 5_000, ..BreakerConfig::default() },
                max_concurrent: 64,
                ..ResilienceSettings::default()
            },
            generator: ResilienceSettings {
                breaker: BreakerConfig { slow_call_ms: 60_000, wait_in_open_ms: 15_000, ..BreakerConfig::default() },
                max_concurrent: 8,
                max_attempts: 1,
                ..ResilienceSettings::default()
            },
            vector_store: ResilienceSettings {
                breaker: BreakerConfig { slow_call_ms: 2_000, wait_in_open_ms: 5_000, ..BreakerConfig::default() },
                max_concurrent: 256,
                queue_timeout_ms: 5_000,
                // An interactive search is not retried: a second attempt would double its deadline.
                max_attempts: 1,
                backoff_ms: 50,
            },
            reranker: ResilienceSettings {
                breaker: BreakerConfig { slow_call_ms: 2_000, wait_in_open_ms: 10_000, ..BreakerConfig::default() },
                max_concurrent: 32,
                queue_timeout_ms: 1_000,
                max_attempts: 1,
                backoff_ms: 50,
            },
            cache: ResilienceSettings {
                breaker: BreakerConfig { slow_call_ms: 250, wait_in_open_ms: 5_000, ..BreakerConfig::default() },
                max_concurrent: 256,
                queue_timeout_ms: 100,
                max_attempts: 1,
                backoff_ms: 10,
            },
            jwks: ResilienceSettings {
                breaker: BreakerConfig { window_size: 10, minimum_calls: 3, wait_in_open_ms: 30_000, ..BreakerConfig::default() },
                max_concurrent: 2,
                queue_timeout_ms: 5_000,
                max_attempts: 2,
                backoff_ms: 200,
            },
            // One breaker for every remote site: it opens when the way out is broken (most fetches
            // fail to connect), not because one site is down, hence the high failure rate. A
            // half-open probe may take the whole `fetch.timeout_ms`.
            fetch: ResilienceSettings {
                breaker: BreakerConfig { window_size: 50, minimum_calls: 20, failure_rate: 0.9, slow_call_ms: 60_000, wait_in_open_ms: 10_000, half_open_deadline_ms: 30_000, ..BreakerConfig::default() },
                max_concurrent: 16,
                queue_timeout_ms: 10_000,
                max_attempts: 1,
                backoff_ms: 100,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (human-readable) or `json` (one object per line). `RAGD_LOG_FORMAT` overrides it.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `warn,ragd_core=debug`. `RAGD_LOG` overrides it.
    pub filter: String,
}

/// Spans (each request, with its id and route) sent to an OpenTelemetry collector over OTLP/HTTP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSettings {
    /// The collector's OTLP/HTTP base URL, such as `http://otel-collector:4318` (traces go to
    /// `<endpoint>/v1/traces`). Unset: nothing is exported.
    pub endpoint: Option<String>,
    pub service_name: String,
    /// Share of new traces kept (a caller's sampled `traceparent` is always followed).
    pub sample_ratio: f64,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings { endpoint: None, service_name: "ragd".into(), sample_ratio: 1.0 }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { format: LogFormat::Text, filter: "info".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerSettings {
    /// Passages retrieved for a question when the request gives no `top_k`. Their sentences, list
    /// items and table rows are the candidate evidence; only the best units reach the generator, so
    /// more passages cost little prompt.
    pub default_top_k: usize,
    /// Longest answer, in tokens.
    pub max_tokens: usize,
    /// 0 = greedy decoding (the same question over the same passages gives the same answer).
    pub temperature: f32,
    /// Earlier exchanges kept per conversation (the oldest are forgotten first).
    pub conversation_turns: usize,
    /// Conversations kept at once; the least recently used is forgotten first.
    pub max_conversations: usize,
    /// A conversation idle this long is forgotten.
    pub conversation_ttl_secs: u64,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        AnswerSettings {
            default_top_k: 6,
            max_tokens: 256,
            temperature: 0.0,
            conversation_turns: 6,
            max_conversations: 10_000,
            conversation_ttl_secs: 3600,
        }
    }
}

/// A secret value: deserialised as a plain string, printed and serialised masked.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            admin_listen: Some("127.0.0.1:9464".into()),
            data_dir: PathBuf::from(".ragd/data"),
            models_dir: PathBuf::from(".ragd/models"),
            auth: AuthSettings::default(),
            rate_limit: RateLimitSettings::default(),
            limits: LimitsSettings::default(),
            cors: CorsSettings::default(),
            tls: TlsSettings::default(),
            embedder: ProviderSettings::default(),
            generator: ProviderSettings { timeout_ms: 60_000, ..ProviderSettings::default() },
            generators: BTreeMap::new(),
            answer: AnswerSettings::default(),
            log: LogSettings::default(),
            otel: OtelSettings::default(),
            resilience: ResilienceByDependency::default(),
            shutdown_grace_secs: 30,
            chunking: ChunkingConfig::default(),
            ingest: IngestSettings::default(),
            ocr: OcrSettings::default(),
            fetch: FetchSettings::default(),
            search: SearchSettings::default(),
            rerank: Default::default(),
            store: StoreSettings::default(),
            redis: RedisSettings::default(),
        }
    }
}

/// Where settings come from, besides the defaults.
#[derive(Debug, Default)]
pub struct Sources {
    /// `ragd.toml` (or `--config FILE`); a missing explicit file is an error.
    pub file: Option<PathBuf>,
    /// The process environment (only `RAGD_*` entries are looked at).
    pub env: Vec<(String, String)>,
    /// Command-line flags as dotted key paths (`listen`, `data_dir`, ...) with their values.
    pub overrides: Vec<(String, toml::Value)>,
}

impl Settings {
    /// Layers the sources over the defaults. Directory defaults are resolved against the user's
    /// folders (`XDG_DATA_HOME` / `XDG_CACHE_HOME` / `HOME` taken from `sources.env`).
    /// Returns every problem at once.
    pub fn load(sources: &Sources) -> Result<Settings, Vec<String>> {
        let mut problems = Vec::new();
        let mut root = toml::Table::new();
        if let Some(path) = &sources.file {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(t) => root = t,
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                },
                Err(e) => problems.push(format!("cannot read config file {}: {e}", path.display())),
            }
        }
        for (name, value) in &sources.env {
            let Some(rest) = name.strip_prefix("RAGD_") else { continue };
            if NON_SETTING_ENV.contains(&name.as_str()) || rest.is_empty() {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut root, &path, env_value(value));
        }
        for (key, value) in &sources.overrides {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut root, &path, value.clone());
        }
        let env = |k: &str| sources.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut settings: Settings = match toml::Value::Table(root.clone()).try_into() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("configuration: {e}"));
                return Err(problems);
            }
        };
        if !root.contains_key("data_dir") {
            settings.data_dir = user_dir(env("XDG_DATA_HOME"), env("HOME"), ".local/share").join("ragd");
        }
        if !root.contains_key("models_dir") {
            settings.models_dir = user_dir(env("XDG_CACHE_HOME"), env("HOME"), ".cache").join("ragd/models");
        }
        problems.extend(settings.problems());
        if problems.is_empty() { Ok(settings) } else { Err(problems) }
    }

    /// Problems in the gateway settings: auth, JWT, limits, CORS, TLS.
    fn edge_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(jwt) = &self.auth.jwt {
            if jwt.keys.is_empty() && jwt.jwks_url.is_none() {
                p.push("auth.jwt: give `keys` or a `jwks_url`".into());
            }
            for (i, k) in jwt.keys.iter().enumerate() {
                let has_public = k.public_key_pem.is_some() || k.public_key_file.is_some();
                match k.algorithm {
                    JwtAlgorithm::HS256 if k.secret.is_none() || has_public => {
                        p.push(format!("auth.jwt.keys[{i}]: HS256 takes a `secret` and no public key"));
                    }
                    JwtAlgorithm::HS256 if k.secret.as_ref().is_some_and(|s| s.expose().len() < 32) => {
                        p.push(format!("auth.jwt.keys[{i}]: an HS256 secret must be at least 32 bytes"));
                    }
                    JwtAlgorithm::RS256 | JwtAlgorithm::ES256 if k.secret.is_some() || !has_public => {
                        p.push(format!("auth.jwt.keys[{i}]: {:?} takes `public_key_pem` or `public_key_file` and no secret", k.algorithm));
                    }
                    _ => {}
                }
            }
            if jwt.jwks_url.is_some() && jwt.jwks_algorithms.iter().any(|a| *a == JwtAlgorithm::HS256) {
                p.push("auth.jwt.jwks_algorithms: JWKS keys are public keys; HS256 is not allowed".into());
            }
            if jwt.default_role.is_none() && jwt.role_claim.is_empty() {
                p.push("auth.jwt: set `role_claim` or `default_role`".into());
            }
            if let Some(t) = &jwt.default_tenant {
                if crate::auth::validate_tenant(t).is_err() {
                    p.push(format!("auth.jwt.default_tenant: `{t}` is not a valid tenant"));
                }
            }
        }
        for (class, q) in [("query", &self.rate_limit.query), ("ingest", &self.rate_limit.ingest), ("admin", &self.rate_limit.admin)] {
            if q.requests == 0 || q.period_secs == 0 || q.burst == Some(0) {
                p.push(format!("rate_limit.{class}: requests, period_secs and burst must be at least 1"));
            }
        }
        let l = &self.limits;
        if l.json_body_bytes < 1024
            || l.max_concurrent_queries == 0
            || l.query_timeout_ms == 0
            || l.ingest_timeout_ms == 0
            || l.admin_timeout_ms == 0
            || l.max_connections == 0
            || l.header_read_timeout_ms == 0
            || l.body_read_timeout_ms == 0
        {
            p.push("limits: json_body_bytes must be at least 1024, the others at least 1".into());
        }
        let any_origin = self.cors.allowed_origins.iter().any(|o| o == "*");
        if any_origin && self.cors.allow_credentials {
            p.push("cors: allow_credentials needs explicit origins, not `*`".into());
        }
        for o in self.cors.allowed_origins.iter().filter(|o| *o != "*") {
            // By prefix, never by byte index: an origin may hold any character (`http://éx`).
            let host = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            let ok = host.is_some_and(|h| !h.is_empty() && !h.contains('/'));
            if !ok {
                p.push(format!("cors.allowed_origins: `{o}` is not an origin like https://app.example.com"));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            p.push("tls: set both cert_file and key_file, or neither".into());
        }
        if let Some(e) = &self.otel.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                p.push(format!("otel.endpoint: `{e}` is not an http(s) URL"));
            }
        }
        if !(0.0..=1.0).contains(&self.otel.sample_ratio) {
            p.push("otel.sample_ratio must be between 0 and 1".into());
        }
        if self.tls.reload_check_ms == 0 {
            p.push("tls.reload_check_ms must be at least 1".into());
        }
        p
    }

    /// Everything wrong with these settings, each as a sentence naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("listen: `{}` is not an address like 127.0.0.1:8080", self.listen));
        }
        if let Some(a) = self.admin_listen.as_ref().filter(|a| !a.is_empty()) {
            if a.parse::<SocketAddr>().is_err() {
                p.push(format!("admin_listen: `{a}` is not an address like 127.0.0.1:9090"));
            }
        }
        p.extend(self.edge_problems());
        if self.store.backend == StoreBackend::Qdrant {
            let q = &self.store.qdrant;
            if q.urls.is_empty() {
                p.push("store.qdrant.urls: give the gRPC address of at least one node (http://host:6334) when store.backend is `qdrant`".into());
            }
            for u in &q.urls {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    p.push(format!("store.qdrant.urls: `{u}` is not an http(s) URL like http://host:6334"));
                }
            }
            if q.replication_factor == 0 || q.shard_number == 0 || q.write_consistency_factor == 0 {
                p.push("store.qdrant: replication_factor, write_consistency_factor and shard_number must be at least 1".into());
            }
            if q.write_consistency_factor > q.replication_factor {
                p.push("store.qdrant.write_consistency_factor cannot exceed replication_factor".into());
            }
            if q.timeout_ms == 0 || q.connect_timeout_ms == 0 {
                p.push("store.qdrant: timeout_ms and connect_timeout_ms must be at least 1".into());
            }
        }
        if let Some(u) = &self.redis.url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("redis+unix://") || u.starts_with("unix://")) {
                p.push(format!("redis.url: `{u}` is not a URL like redis://127.0.0.1:6379/0"));
            }
        }
        if self.redis.timeout_ms == 0 {
            p.push("redis.timeout_ms must be at least 1".into());
        }
        if let Err(e) = self.chunking.validate() {
            p.push(format!("chunking: {e}"));
        }
        if self.embedder.kind != EmbedderKind::Builtin {
            if self.embedder.url.is_none() {
                p.push("embedder.url is required when embedder.kind is not `builtin`".into());
            }
            if self.embedder.model.is_none() {
                p.push("embedder.model is required when embedder.kind is not `builtin`".into());
            }
        }
        let generators = std::iter::once(("generator".to_owned(), &self.generator))
            .chain(self.generators.iter().map(|(name, g)| (format!("generators.{name}"), g)));
        for (key, g) in generators {
            if matches!(g.kind, GeneratorKind::Ollama | GeneratorKind::Openai) {
                if g.url.is_none() {
                    p.push(format!("{key}.url is required when {key}.kind is `ollama` or `openai`"));
                }
                if g.model.is_none() {
                    p.push(format!("{key}.model is required when {key}.kind is `ollama` or `openai`"));
                }
            }
            if g.timeout_ms == 0 {
                p.push(format!("{key}.timeout_ms must be at least 1"));
            }
            if g.context_tokens < 512 {
                p.push(format!("{key}.context_tokens must be at least 512"));
            }
        }
        for name in self.generators.keys() {
            if matches!(name.as_str(), "default" | "none") || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                p.push(format!("generators.{name}: names are letters, digits, `-` and `_`, and not `default` or `none`"));
            }
        }
        if self.answer.default_top_k == 0 || self.answer.default_top_k > self.search.max_top_k {
            p.push("answer.default_top_k must be between 1 and search.max_top_k".into());
        }
        if self.answer.max_tokens == 0 || self.answer.max_tokens > 4096 {
            p.push("answer.max_tokens must be between 1 and 4096".into());
        }
        if !(0.0..=2.0).contains(&self.answer.temperature) {
            p.push("answer.temperature must be between 0 and 2".into());
        }
        p.extend(self.resilience.embedder.problems("resilience.embedder"));
        p.extend(self.resilience.generator.problems("resilience.generator"));
        p.extend(self.resilience.jwks.problems("resilience.jwks"));
        p.extend(self.resilience.vector_store.problems("resilience.vector_store"));
        p.extend(self.resilience.reranker.problems("resilience.reranker"));
        p.extend(self.resilience.fetch.problems("resilience.fetch"));
        p.extend(self.fetch.problems());
        p.extend(self.rerank.problems());
        if self.answer.max_conversations == 0 {
            p.push("answer.max_conversations must be at least 1".into());
        }
        if self.embedder.max_batch == 0 {
            p.push("embedder.max_batch must be at least 1".into());
        }
        if self.embedder.timeout_ms == 0 || self.generator.timeout_ms == 0 {
            p.push("timeout_ms values must be at least 1".into());
        }
        if self.ingest.max_upload_bytes < 1024 {
            p.push("ingest.max_upload_bytes must be at least 1024".into());
        }
        if self.ingest.job_stale_secs == 0 || self.ingest.max_stalled_attempts == 0 {
            p.push("ingest.job_stale_secs and ingest.max_stalled_attempts must be at least 1".into());
        }
        if self.ingest.workers == 0 || self.ingest.batch_documents == 0 {
            p.push("ingest.workers and ingest.batch_documents must be at least 1".into());
        }
        let i = &self.ingest;
        if i.max_documents_per_request == 0 || i.max_chunks_per_document == 0 || i.parse_timeout_ms == 0 {
            p.push("ingest.max_documents_per_request, ingest.max_chunks_per_document and ingest.parse_timeout_ms must be at least 1".into());
        }
        if i.max_document_inflated_bytes < 1024 || i.max_document_text_bytes < 1024 {
            p.push("ingest.max_document_inflated_bytes and ingest.max_document_text_bytes must be at least 1024".into());
        }
        if i.max_request_inflated_bytes < i.max_document_inflated_bytes || i.max_request_text_bytes < i.max_document_text_bytes {
            p.push("ingest.max_request_inflated_bytes and ingest.max_request_text_bytes must be at least their per-document limits".into());
        }
        let o = &self.ocr;
        if o.languages.is_empty()
            || o.languages.iter().any(|l| l.is_empty() || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            p.push("ocr.languages must list Tesseract language codes such as \"eng\" (letters, digits, `_`)".into());
        }
        if o.max_pages == 0 || o.max_pages > 10_000 {
            p.push("ocr.max_pages must be between 1 and 10000".into());
        }
        if o.max_image_pixels < 10_000 || o.max_image_pixels > 1_000_000_000 {
            p.push("ocr.max_image_pixels must be between 10000 and 1000000000".into());
        }
        if !(8..=MAX_NESTING_DEPTH_LIMIT).contains(&i.max_nesting_depth) {
            p.push(format!("ingest.max_nesting_depth must be between 8 and {MAX_NESTING_DEPTH_LIMIT}"));
        }
        if self.search.default_top_k == 0 || self.search.default_top_k > self.search.max_top_k {
            p.push("search.default_top_k must be between 1 and search.max_top_k".into());
        }
        if !(self.search.dense_weight > 0.0 && self.search.lexical_weight > 0.0) {
            p.push("search.dense_weight and search.lexical_weight must be positive".into());
        }
        if self.search.candidates == 0 || self.search.rrf_k == 0 {
            p.push("search.candidates and search.rrf_k must be at least 1".into());
        }
        p
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}"))
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.redb")
    }
    pub fn collections_path(&self) -> PathBuf {
        self.data_dir.join("collections")
    }
}

fn user_dir(xdg: Option<String>, home: Option<String>, fallback: &str) -> PathBuf {
    match (xdg.filter(|s| !s.is_empty()), home) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(h)) => Path::new(&h).join(fallback),
        (None, None) => PathBuf::from(".ragd"),
    }
}

/// An environment value is TOML when it parses as one (numbers, booleans, arrays), else a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut t = table;
    for key in parents {
        let entry = t.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("just made a table");
    }
    t.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ragd.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1000\"\n[search]\nrrf_k = 10\ncandidates = 7\n").unwrap();
        let s = Settings::load(&Sources {
            file: Some(file),
            env: env(&[("RAGD_SEARCH__RRF_K", "20"), ("RAGD_LISTEN", "127.0.0.1:2000"), ("HOME", "/home/u"), ("RAGD_API_KEY", "x")]),
            overrides: vec![("listen".into(), toml::Value::String("127.0.0.1:3000".into()))],
        })
        .unwrap();
        assert_eq!(s.listen, "127.0.0.1:3000");
        assert_eq!(s.search.rrf_k, 20);
        assert_eq!(s.search.candidates, 7);
        assert_eq!(s.models_dir, PathBuf::from("/home/u/.cache/ragd/models"));
        assert_eq!(s.data_dir, PathBuf::from("/home/u/.local/share/ragd"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_all_reported() {
        let bad = Settings::load(&Sources { env: env(&[("RAGD_SEARCH__RRFK", "3")]), ..Default::default() }).unwrap_err();
        assert!(bad[0].contains("rrfk"), "{bad:?}");
        let bad = Settings::load(&Sources {
            env: env(&[("RAGD_LISTEN", "nope"), ("RAGD_EMBEDDER__KIND", "ollama")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(bad.iter().any(|p| p.starts_with("listen")), "{bad:?}");
        assert!(bad.iter().any(|p| p.contains("embedder.url")), "{bad:?}");
    }

    #[test]
    fn origins_with_any_characters_are_checked_without_panicking() {
        for (origin, ok) in [("http://éx", true), ("https://app.example.com", true), ("http://é/", false), ("https://", false), ("ftp://x", false), ("é", false), ("http://a/b", false)] {
            let mut s = Settings::default();
            s.cors.allowed_origins = vec![origin.into()];
            let bad = s.problems().iter().any(|p| p.starts_with("cors.allowed_origins"));
            assert_eq!(bad, !ok, "{origin}");
        }
    }

    #[test]
    fn fetch_allow_lists_cidrs_from_the_file_or_the_environment() {
        let s = Settings::load(&Sources { env: env(&[("RAGD_FETCH__ALLOW", "[\"127.0.0.0/8\", \"fd00::/8\"]")]), ..Default::default() }).unwrap();
        assert_eq!(s.fetch.allow, vec!["127.0.0.0/8", "fd00::/8"]);
        assert!(Settings::default().fetch.allow.is_empty(), "nothing is allowed past the deny list by default");
        let bad = Settings::load(&Sources { env: env(&[("RAGD_FETCH__ALLOW", "[\"10.0.0.1/8\", \"intranet\"]")]), ..Default::default() }).unwrap_err();
        assert_eq!(bad.iter().filter(|p| p.starts_with("fetch.allow")).count(), 2, "{bad:?}");
    }

    #[test]
    fn secrets_are_masked() {
        let mut s = Settings::default();
        s.generator.api_key = Some(Secret("sk-very-secret".into()));
        assert!(!s.to_toml().contains("sk-very-secret"));
        assert!(!format!("{s:?}").contains("sk-very-secret"));
    }
}
