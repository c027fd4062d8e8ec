//! A rerank server over HTTP, in the two common wire formats:
//! - Cohere / Jina / llama.cpp's server (`/v1/rerank`): `{"model", "query", "documents", "top_n"}` →
//!   `{"results": [{"index", "relevance_score"}]}`;
//! - Hugging Face text-embeddings-inference (`/rerank`): `{"query", "texts"}` → `[{"index", "score"}]`.
//!
//! Every failure — refused, timed out, a non-2xx status, a body too large or not of the format, an
//! index out of range, a passage left without a score — is `Error::Unavailable { dependency:
//! "reranker" }`; the engine then keeps the fused order and says `degraded: ["reranker"]`.

use std::time::Duration;

use async_trait::async_trait;
use ragd_core::rerank::{RerankFormat, RerankInput, Reranker};
use ragd_core::{Error, Result};
use serde::Deserialize;
use serde_json::json;

/// Largest response body read from a rerank server.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct HttpRerankerConfig {
    /// The rerank endpoint itself, e.g. `http://127.0.0.1:8081/v1/rerank`.
    pub url: String,
    pub format: RerankFormat,
    pub model: Option<String>,
    pub api_key: Option<String>,
    /// Whole-request timeout (the outbound stack has its own deadline too).
    pub timeout: Duration,
    /// Longest passage sent, in characters.
    pub max_chars: usize,
}

pub struct HttpReranker {
    client: reqwest::Client,
    cfg: HttpRerankerConfig,
    id: String,
}

#[derive(Deserialize)]
struct CohereResponse {
    results: Vec<CohereItem>,
}

#[derive(Deserialize)]
struct CohereItem {
    index: usize,
    relevance_score: f32,
}

#[derive(Deserialize)]
struct TeiItem {
    index: usize,
    score: f32,
}

fn unavailable(message: impl Into<String>) -> Error {
    Error::unavailable("reranker", message)
}

impl HttpReranker {
    pub fn new(cfg: HttpRerankerConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        let id = format!("http:{}", cfg.model.as_deref().unwrap_or("reranker"));
        Ok(HttpReranker { client, cfg, id })
    }

    fn body(&self, query: &str, texts: &[String]) -> serde_json::Value {
        match self.cfg.format {
            RerankFormat::Cohere => {
                let mut b = json!({ "query": query, "documents": texts, "top_n": texts.len() });
                if let Some(m) = &self.cfg.model {
                    b["model"] = json!(m);
                }
                b
            }
            RerankFormat::Tei => json!({ "query": query, "texts": texts, "raw_scores": false }),
        }
    }

    /// Scores in the passages' order from a response body; every passage must get exactly one.
    fn parse(&self, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
        let malformed = |why: String| unavailable(format!("{} sent a malformed rerank response: {why}", self.cfg.url));
        let pairs: Vec<(usize, f32)> = match self.cfg.format {
            RerankFormat::Cohere => serde_json::from_slice::<CohereResponse>(bytes)
                .map_err(|e| malformed(format!("expected {{\"results\": [{{\"index\", \"relevance_score\"}}]}} ({e})")))?
                .results
                .into_iter()
                .map(|r| (r.index, r.relevance_score))
                .collect(),
            RerankFormat::Tei => serde_json::from_slice::<Vec<TeiItem>>(bytes)
                .map_err(|e| malformed(format!("expected [{{\"index\", \"score\"}}] ({e})")))?
                .into_iter()
                .map(|r| (r.index, r.score))
                .collect(),
        };
        let mut scores = vec![f32::NAN; n];
        for (i, s) in pairs {
            let slot = scores.get_mut(i).ok_or_else(|| malformed(format!("index {i} is out of range for {n} passages")))?;
            *slot = s;
        }
        if let Some(missing) = scores.iter().position(|s| !s.is_finite()) {
            return Err(malformed(format!("passage {missing} got no usable score")));
        }
        Ok(scores)
    }
}

#[async_trait]
impl Reranker for HttpReranker {
    fn id(&self) -> &str {
        &self.id
    }

    async fn scores(&self, input: RerankInput<'_>) -> Result<Vec<f32>> {
        let texts: Vec<String> = input.candidates.iter().map(|h| h.text.chars().take(self.cfg.max_chars).collect()).collect();
        let mut req = self.client.post(&self.cfg.url).json(&self.body(input.query, &texts));
        if let Some(key) = &self.cfg.api_key {
            req = req.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                unavailable(format!("{} did not answer within {} ms", self.cfg.url, self.cfg.timeout.as_millis()))
            } else {
                unavailable(format!("cannot reach the reranker at {}: {e}", self.cfg.url))
            }
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = crate::http_gen::retry_after(resp.headers());
            let text: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
            return Err(Error::Unavailable { dependency: "reranker", message: format!("{} answered {status}: {text}", self.cfg.url), retry_after });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(unavailable(format!("{} sent more than {MAX_RESPONSE_BYTES} bytes", self.cfg.url)));
            }
            body.extend_from_slice(&chunk);
        }
        self.parse(&body, texts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reranker(format: RerankFormat) -> HttpReranker {
        HttpReranker::new(HttpRerankerConfig {
            url: "http://127.0.0.1:9/rerank".into(),
            format,
            model: Some("m".into()),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_chars: 100,
        })
        .unwrap()
    }

    #[test]
    fn both_formats_parse_into_the_passages_order() {
        let c = reranker(RerankFormat::Cohere);
        let body = br#"{"id":"x","results":[{"index":1,"relevance_score":0.9},{"index":0,"relevance_score":0.1}]}"#;
        assert_eq!(c.parse(body, 2).unwrap(), vec![0.1, 0.9]);
        assert_eq!(c.body("q", &["a".into()])["top_n"], 1);
        let t = reranker(RerankFormat::Tei);
        assert_eq!(t.parse(br#"[{"index":0,"score":2.5},{"index":1,"score":-1.0}]"#, 2).unwrap(), vec![2.5, -1.0]);
        assert_eq!(t.body("q", &["a".into()])["texts"][0], "a");
    }

    #[test]
    fn a_missing_or_stray_index_is_the_servers_error() {
        let c = reranker(RerankFormat::Cohere);
        let missing = c.parse(br#"{"results":[{"index":0,"relevance_score":0.5}]}"#, 2).unwrap_err();
        assert!(matches!(missing, Error::Unavailable { dependency: "reranker", .. }), "{missing}");
        assert!(c.parse(br#"{"results":[{"index":5,"relevance_score":0.5}]}"#, 2).is_err());
        assert!(reranker(RerankFormat::Tei).parse(br#"{"results":[]}"#, 1).is_err());
    }
}
