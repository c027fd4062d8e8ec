//! The rerank stage: between the fused search and what a caller sees (search results with
//! `"rerank": true`, and the passages an answer is made from), a reranker reorders the best fused
//! candidates by their relevance to the query.
//!
//! - `builtin` (offline, on the packaged embedder): `BuiltinReranker`, see its docs.
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
use crate::resilience::{Outbound, ResilienceSettings};
use crate::types::ChunkHit;

/// What a reranker is given: the query, its vector when the search embedded it, and the fused
/// candidates best first (with their fused scores).
#[derive(Clone, Copy)]
pub struct RerankInput<'a> {
    pub query: &'a str,
    pub query_vector: Option<&'a [f32]>,
    pub candidates: &'a [ChunkHit],
}

#[async_trait]
pub trait Reranker: Send + Sync + 'static {
    /// The reranker's name (`builtin`, or the http server's model).
    fn id(&self) -> &str;
    /// One relevance score per candidate, in the candidates' order; higher is more relevant.
    async fn scores(&self, input: RerankInput<'_>) -> Result<Vec<f32>>;
    fn breaker_status(&self) -> Option<BreakerStatus> {
        None
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RerankKind {
    #[default]
    None,
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
    /// `none`, `builtin` (offline, the packaged embedder) or `http` (a rerank server at `url`).
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

/// The builtin reranker: runs offline, on what the search already has. A passage's score is its
/// fused score (scaled 0..1 over the candidates) plus how well its best evidence unit (sentence,
/// list item or table row with its headers) covers the query's terms, weighted by their rarity
/// among the candidates: a passage whose one sentence holds the query's rare words rises above one
/// that mentions them far apart. docs/retrieval.md has what was tried and measured.
pub struct BuiltinReranker;

/// Weight of the best unit's term coverage against the fused score (both 0..1).
const UNIT_COVERAGE_WEIGHT: f32 = 0.5;

#[async_trait]
impl Reranker for BuiltinReranker {
    fn id(&self) -> &str {
        "builtin"
    }

    async fn scores(&self, input: RerankInput<'_>) -> Result<Vec<f32>> {
        let hits = input.candidates;
        let query = crate::answer::select::terms(input.query);
        let (lo, hi) = hits.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), h| (lo.min(h.score), hi.max(h.score)));
        let prior = |s: f32| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
        // Units of every candidate, as term sets; a term's weight is its rarity among the units.
        let units: Vec<Vec<std::collections::HashSet<String>>> = hits
            .iter()
            .map(|h| {
                crate::answer::evidence::units(0, &h.text, &h.heading_path)
                    .iter()
                    .map(|u| crate::answer::select::terms(&u.with_context()).into_iter().collect())
                    .collect()
            })
            .collect();
        let n_units = units.iter().map(Vec::len).sum::<usize>().max(1) as f32;
        let weight: Vec<f32> = query
            .iter()
            .map(|t| {
                let df = units.iter().flatten().filter(|u| u.contains(t)).count() as f32;
                ((n_units + 1.0) / (df + 0.5)).ln().max(0.0)
            })
            .collect();
        let total: f32 = weight.iter().sum();
        Ok(hits
            .iter()
            .zip(&units)
            .map(|(h, us)| {
                let best = us
                    .iter()
                    .map(|u| query.iter().zip(&weight).filter(|(t, _)| u.contains(*t)).map(|(_, w)| w).sum::<f32>())
                    .fold(0.0f32, f32::max);
                let coverage = if total > 0.0 { best / total } else { 0.0 };
                prior(h.score) + UNIT_COVERAGE_WEIGHT * coverage
            })
            .collect())
    }
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

    #[tokio::test]
    async fn builtin_prefers_the_passage_whose_one_unit_holds_the_rare_terms() {
        // Close fused scores; `scattered` has the query's words in different sentences, `together`
        // in one sentence.
        let hits = vec![
            hit("scattered", 0.52, "The colony is on the sandbank. Seals rest there. Counting happens in spring. Grey skies are common."),
            hit("together", 0.50, "Harbours are busy in summer. The grey seal colony counted 1,200 animals in 2023."),
            hit("other", 0.10, "Ferries leave twice a day."),
        ];
        let s = BuiltinReranker.scores(RerankInput { query: "how many grey seals were counted in the colony", query_vector: None, candidates: &hits }).await.unwrap();
        assert!(s[1] > s[0], "{s:?}");
        assert!(s[0] > s[2], "{s:?}");
    }
}
