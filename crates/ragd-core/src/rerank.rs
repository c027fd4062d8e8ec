//! The rerank stage: between the fused search and what a caller sees (search results with
//! `"rerank": true`, and the passages an answer is made from), a reranker reorders the best fused
//! candidates by their relevance to the query.
//!
//! - `builtin` (the default; offline, on the stored vectors): `BuiltinReranker`, see its docs.
//! - `http`: a rerank server (`ragd-models`' `HttpReranker`: Cohere/Jina/llama.cpp and TEI wire formats).
//!
//! Every reranker is called through the outbound stack (`ResilientReranker`: breaker, concurrency
//! cap, timeout; one attempt). When it fails the fused order stands and the response says
//! `degraded: ["reranker"]` — a reranker never fails a search or a question.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerObserver, BreakerStatus};
use crate::error::{Error, Result};
use crate::fusion::min_max;
use crate::resilience::{Outbound, ResilienceSettings};
use crate::types::ChunkHit;

/// What a reranker is given: the query, its vector when the search embedded it, and the fused
/// candidates best first (with their fused scores).
#[derive(Clone, Copy)]
pub struct RerankInput<'a> {
    pub query: &'a str,
    pub query_vector: Option<&'a [f32]>,
    pub candidates: &'a [ChunkHit],
    /// The candidates' stored dense vectors, in their order, when the reranker asked for them
    /// (`Reranker::wants_vectors`) and the store could give them.
    pub vectors: Option<&'a [Option<Vec<f32>>]>,
}

#[async_trait]
pub trait Reranker: Send + Sync + 'static {
    /// The reranker's name (`builtin`, or the http server's model).
    fn id(&self) -> &str;
    /// One relevance score per candidate, in the candidates' order; higher is more relevant.
    async fn scores(&self, input: RerankInput<'_>) -> Result<Vec<f32>>;
    /// Whether the reranker uses the candidates' stored vectors (the engine then fetches them).
    fn wants_vectors(&self) -> bool {
        false
    }
    fn breaker_status(&self) -> Option<BreakerStatus> {
        None
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RerankKind {
    None,
    #[default]
    Builtin,
    Http,
}

/// The wire format of an `http` reranker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RerankFormat {
    /// Cohere / Jina / llama.cpp's server: `{"model", "query", "documents", "top_n"}` →
    /// `{"results": [{"index", "relevance_score"}]}`.
    #[default]
    Cohere,
    /// Hugging Face text-embeddings-inference: `{"query", "texts"}` → `[{"index", "score"}]`.
    Tei,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RerankSettings {
    /// `none`, `builtin` (the default: offline, feedback from the best candidates' stored
    /// vectors) or `http` (a rerank server at `url`).
    pub kind: RerankKind,
    /// Fused candidates the reranker sees (a collection's `rerank.candidates` or a request's
    /// `rerank_candidates` override it); the best `top_k` of them are kept.
    pub candidates: usize,
    /// Whether `search` reranks when a request does not say (`"rerank": true|false`). Answers always
    /// rerank when a reranker is configured, unless the collection turns it off.
    pub search: bool,
    /// `http`: the rerank endpoint, e.g. `http://127.0.0.1:8081/v1/rerank` (llama.cpp) or
    /// `http://127.0.0.1:8082/rerank` (TEI).
    pub url: Option<String>,
    pub format: RerankFormat,
    /// `http`: the model name sent (Cohere format).
    pub model: Option<String>,
    pub api_key: Option<crate::settings::Secret>,
    /// Deadline of one rerank call; past it the fused order stands (`degraded: ["reranker"]`).
    pub timeout_ms: u64,
    /// Longest passage text sent to an `http` reranker, in characters.
    pub max_chars: usize,
}

impl Default for RerankSettings {
    fn default() -> Self {
        RerankSettings {
            kind: RerankKind::default(),
            candidates: 30,
            search: true,
            url: None,
            format: RerankFormat::default(),
            model: None,
            api_key: None,
            timeout_ms: 2_000,
            max_chars: 4_000,
        }
    }
}

/// Most candidates a request may ask the reranker to see.
pub const MAX_CANDIDATES: usize = 200;

impl RerankSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.candidates == 0 || self.candidates > MAX_CANDIDATES {
            p.push(format!("rerank.candidates must be between 1 and {MAX_CANDIDATES}"));
        }
        if self.timeout_ms == 0 || self.max_chars == 0 {
            p.push("rerank.timeout_ms and rerank.max_chars must be at least 1".into());
        }
        if self.kind == RerankKind::Http {
            match &self.url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
                Some(u) => p.push(format!("rerank.url: `{u}` is not an http(s) URL")),
                None => p.push("rerank.url: an `http` reranker needs the URL of its rerank endpoint".into()),
            }
        }
        p
    }
}

/// A collection's own rerank choices (all optional: unset uses the server's `rerank.*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CollectionRerank {
    /// Rerank searches that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<bool>,
    /// Rerank the passages of answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
}

impl CollectionRerank {
    pub fn validate(&self) -> Result<()> {
        if self.candidates.is_some_and(|c| c == 0 || c > MAX_CANDIDATES) {
            return Err(Error::invalid("invalid_rerank", format!("`rerank.candidates` must be between 1 and {MAX_CANDIDATES}")));
        }
        Ok(())
    }
}

/// A reranker behind the outbound stack: breaker, concurrency cap and timeout, one attempt (a
/// search waits for it; a retry would double the wait for a fused order that is already good).
pub struct ResilientReranker {
    inner: Arc<dyn Reranker>,
    outbound: Outbound,
}

impl ResilientReranker {
    pub fn new(inner: Arc<dyn Reranker>, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Self {
        let single = ResilienceSettings { max_attempts: 1, ..s.clone() };
        ResilientReranker { inner, outbound: Outbound::new("reranker", "reranker", &single, timeout, observer) }
    }
}

#[async_trait]
impl Reranker for ResilientReranker {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn wants_vectors(&self) -> bool {
        self.inner.wants_vectors()
    }
    async fn scores(&self, input: RerankInput<'_>) -> Result<Vec<f32>> {
        let n = input.candidates.len();
        let scores = self.outbound.call(|| self.inner.scores(input)).await?;
        if scores.len() != n || scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::unavailable("reranker", format!("the reranker returned {} usable scores for {n} passages", scores.len())));
        }
        Ok(scores)
    }
    fn breaker_status(&self) -> Option<BreakerStatus> {
        Some(self.outbound.breaker().status())
    }
}

/// Reorders `hits` by `scores` (stable: equal scores keep the fused order) and keeps `top_k`; each
/// hit's `score` becomes its rerank score.
pub fn apply(hits: Vec<ChunkHit>, scores: &[f32], top_k: usize) -> Vec<ChunkHit> {
    let mut scored: Vec<(f32, ChunkHit)> = scores.iter().copied().zip(hits).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(top_k)
        .map(|(s, mut h)| {
            h.score = s;
            h
        })
        .collect()
}

/// The builtin reranker: pseudo-relevance feedback in the embedding space (Rocchio's method on
/// the stored chunk vectors). The best fused candidates are taken as feedback: the query vector is
/// moved towards their centroid, and every candidate is scored by its cosine with the moved query,
/// interpolated with its fused score. A passage that says what the best candidates say rises
/// above one that only shares a word or two with the query; a stray high-scoring candidate that
/// the rest do not support sinks. It needs no model call: the vectors are stored at ingest and
/// fetched with the candidates (`Reranker::wants_vectors`), so it costs one store read and a few
/// thousand multiply-adds. Without a query vector or stored vectors the fused order stands.
/// docs/retrieval.md has what was tried and measured, and how the constants were chosen.
pub struct BuiltinReranker;

/// Fused candidates taken as feedback (the first `FEEDBACK`, best first).
const FEEDBACK: usize = 3;
/// Weight of the feedback centroid against the query vector (Rocchio's β with α = 1).
const FEEDBACK_WEIGHT: f32 = 1.0;
/// Share of the moved query's cosine in the final score; the fused score has the rest (both
/// scaled 0..1 over the candidates).
const FEEDBACK_SHARE: f32 = 0.5;

#[async_trait]
impl Reranker for BuiltinReranker {
    fn id(&self) -> &str {
        "builtin"
    }

    fn wants_vectors(&self) -> bool {
        true
    }

    async fn scores(&self, input: RerankInput<'_>) -> Result<Vec<f32>> {
        let fused = min_max(&input.candidates.iter().map(|h| h.score).collect::<Vec<_>>());
        let (Some(query), Some(vectors)) = (input.query_vector, input.vectors) else { return Ok(fused) };
        // Each vector scaled to length 1 once (stores need not keep them normalised).
        let Some(vectors) = vectors.iter().map(|v| v.as_deref().filter(|v| v.len() == query.len()).map(unit)).collect::<Option<Vec<Vec<f32>>>>()
        else {
            return Ok(fused);
        };
        // Feedback: the best fused candidates (ties keep the fused order).
        let mut order: Vec<usize> = (0..fused.len()).collect();
        order.sort_by(|&a, &b| fused[b].total_cmp(&fused[a]));
        let feedback = &order[..FEEDBACK.min(order.len())];
        let mut moved = unit(query);
        for &i in feedback {
            for (m, x) in moved.iter_mut().zip(&vectors[i]) {
                *m += FEEDBACK_WEIGHT * x / feedback.len() as f32;
            }
        }
        let moved = unit(&moved);
        let similar = min_max(&vectors.iter().map(|v| dot(&moved, v)).collect::<Vec<_>>());
        Ok(fused.iter().zip(similar).map(|(f, s)| (1.0 - FEEDBACK_SHARE) * f + FEEDBACK_SHARE * s).collect())
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v` scaled to length 1 (a zero vector stays zero).
fn unit(v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt();
    v.iter().map(|x| if n > 0.0 { x / n } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_hit as hit;

    #[test]
    fn apply_reorders_stably_and_keeps_top_k() {
        let hits = vec![hit("a", 0.9, ""), hit("b", 0.8, ""), hit("c", 0.7, "")];
        let out = apply(hits, &[0.1, 0.5, 0.5], 2);
        assert_eq!(out.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(out[0].score, 0.5);
    }

    fn scores_of(query: Option<&[f32]>, hits: &[ChunkHit], vectors: Option<&[Option<Vec<f32>>]>) -> Vec<f32> {
        let input = RerankInput { query: "q", query_vector: query, candidates: hits, vectors };
        futures::executor::block_on(BuiltinReranker.scores(input)).unwrap()
    }

    #[test]
    fn builtin_raises_the_passage_the_best_candidates_agree_with() {
        // The three best fused candidates point one way; `agrees` (fused 0.60) points the same
        // way, `stray` (fused 0.62) is closer to the bare query but not to what the best say.
        let hits = vec![hit("a", 1.0, ""), hit("b", 0.95, ""), hit("c", 0.9, ""), hit("agrees", 0.60, ""), hit("stray", 0.62, "")];
        let along = vec![0.6, 0.8, 0.0];
        let vectors: Vec<Option<Vec<f32>>> =
            vec![Some(along.clone()), Some(along.clone()), Some(along.clone()), Some(along), Some(vec![0.7, 0.0, 0.714])];
        let query = [1.0, 0.0, 0.0];
        let s = scores_of(Some(&query), &hits, Some(&vectors));
        assert!(s[3] > s[4], "{s:?}");
        assert!(s[0] > s[3], "the best fused candidate stays first: {s:?}");
        // Without the feedback (fused order alone) `stray` stays ahead.
        let fused = scores_of(Some(&query), &hits, None);
        assert!(fused[4] > fused[3], "{fused:?}");
    }

    #[test]
    fn builtin_keeps_the_fused_order_without_usable_vectors() {
        let hits = vec![hit("a", 0.9, ""), hit("b", 0.5, ""), hit("c", 0.1, "")];
        let want = [1.0, 0.5, 0.0];
        let fused = |s: Vec<f32>| s.len() == 3 && s.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(fused(scores_of(None, &hits, None)));
        // A missing vector, or one of another length, leaves the fused order as it is.
        let query = [1.0, 0.0];
        let missing = vec![Some(vec![1.0, 0.0]), None, Some(vec![0.0, 1.0])];
        assert!(fused(scores_of(Some(&query), &hits, Some(&missing))));
        let short = vec![Some(vec![1.0, 0.0]), Some(vec![1.0]), Some(vec![0.0, 1.0])];
        assert!(fused(scores_of(Some(&query), &hits, Some(&short))));
    }
}
