//! Embedders served over HTTP: Ollama (`POST /api/embed`) and OpenAI-compatible servers (`POST /v1/embeddings`).
//!
//! Every failure to get good vectors — connection refused, timeout, a non-2xx status, a body that is not the
//! expected shape or holds vectors of the wrong length — is `Error::Unavailable { dependency: "embedder" }`:
//! the request may succeed once the provider is fixed, and the HTTP layer turns it into a 503.

use std::time::Duration;

use async_trait::async_trait;
use ragd_core::embed::{EmbedKind, Embedder};
use ragd_core::{Error, Result};
use serde::Deserialize;
use serde_json::json;

/// Settings shared by both providers.
#[derive(Debug, Clone)]
pub struct HttpEmbedderConfig {
    /// Base URL, e.g. `http://localhost:11434` (Ollama) or `https://api.openai.com` (OpenAI); no trailing path.
    pub url: String,
    /// Provider's model name, e.g. `nomic-embed-text` or `text-embedding-3-small`.
    pub model: String,
    /// Bearer token; only the OpenAI client sends it.
    pub api_key: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Vector length; `None` makes `connect` ask the provider.
    pub dimensions: Option<usize>,
    /// Most texts per HTTP request; longer inputs are split (OpenAI caps a request at 2048 inputs).
    pub max_batch: usize,
}

impl HttpEmbedderConfig {
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        HttpEmbedderConfig {
            url: url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            dimensions: None,
            max_batch: 256,
        }
    }
}

fn unavailable(message: impl Into<String>) -> Error {
    Error::unavailable("embedder", message)
}

/// The two wire formats differ only in path, body shape and auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Ollama,
    OpenAi,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Ollama => "ollama",
            Flavor::OpenAi => "openai",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Flavor::Ollama => "/api/embed",
            Flavor::OpenAi => "/v1/embeddings",
        }
    }
}

/// The common client under both public types.
#[derive(Debug)]
struct HttpEmbedder {
    flavor: Flavor,
    client: reqwest::Client,
    endpoint: String,
    cfg: HttpEmbedderConfig,
    model_id: String,
    dimensions: usize,
}

#[derive(Deserialize)]
struct OllamaResponse {
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct OpenAiResponse {
    data: Vec<OpenAiItem>,
}

#[derive(Deserialize)]
struct OpenAiItem {
    index: usize,
    embedding: Vec<f32>,
}

impl HttpEmbedder {
    fn build(flavor: Flavor, cfg: HttpEmbedderConfig, dimensions: usize) -> Result<Self> {
        if cfg.max_batch == 0 {
            return Err(Error::invalid(
                "invalid_config",
                "embedder max_batch must be at least 1",
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        let endpoint = format!("{}{}", cfg.url.trim_end_matches('/'), flavor.path());
        let model_id = format!("{}:{}", flavor.name(), cfg.model);
        Ok(HttpEmbedder {
            flavor,
            client,
            endpoint,
            cfg,
            model_id,
            dimensions,
        })
    }

    fn new(flavor: Flavor, cfg: HttpEmbedderConfig) -> Result<Self> {
        let dims = cfg.dimensions.ok_or_else(|| {
            Error::invalid(
                "invalid_config",
                "the embedder's dimensions must be set, or use connect() to probe them",
            )
        })?;
        Self::build(flavor, cfg, dims)
    }

    async fn connect(flavor: Flavor, cfg: HttpEmbedderConfig) -> Result<Self> {
        let expected = cfg.dimensions;
        // Dimension 0 means "not known yet": `request` skips the length check until the probe has answered.
        let mut this = Self::build(flavor, cfg, 0)?;
        let probe = this.request(&["dimension probe".to_string()]).await?;
        let got = probe.first().map_or(0, Vec::len);
        if got == 0 {
            return Err(unavailable(format!(
                "{} returned an empty vector for a probe text",
                this.endpoint
            )));
        }
        if let Some(want) = expected
            && want != got
        {
            return Err(Error::invalid(
                "invalid_config",
                format!(
                    "embedder {} returns {got}-dimensional vectors, but the configuration says {want}",
                    this.model_id
                ),
            ));
        }
        this.dimensions = got;
        Ok(this)
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.cfg.max_batch) {
            out.extend(self.request(chunk).await?);
        }
        Ok(out)
    }

    /// One HTTP round trip; returns validated, L2-normalised vectors in input order.
    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let body = json!({ "model": self.cfg.model, "input": texts });
        let mut req = self.client.post(&self.endpoint).json(&body);
        if self.flavor == Flavor::OpenAi
            && let Some(key) = &self.cfg.api_key
        {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = crate::http_gen::retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            let snippet: String = text.chars().take(300).collect();
            return Err(Error::Unavailable {
                dependency: "embedder",
                message: format!("{} answered {status}: {snippet}", self.endpoint),
                retry_after,
            });
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        let malformed =
            |why: String| unavailable(format!("{} sent a malformed embeddings response: {why}", self.endpoint));
        let vectors = match self.flavor {
            Flavor::Ollama => {
                serde_json::from_slice::<OllamaResponse>(&bytes)
                    .map_err(|e| malformed(format!("expected {{\"embeddings\": [[...]]}} ({e})")))?
                    .embeddings
            }
            Flavor::OpenAi => {
                let mut data = serde_json::from_slice::<OpenAiResponse>(&bytes)
                    .map_err(|e| malformed(format!("expected {{\"data\": [{{\"index\", \"embedding\"}}]}} ({e})")))?
                    .data;
                // The spec does not promise order; `index` does.
                data.sort_by_key(|d| d.index);
                if data.iter().enumerate().any(|(i, d)| d.index != i) {
                    return Err(malformed("indices are not 0..n".into()));
                }
                data.into_iter().map(|d| d.embedding).collect()
            }
        };
        if vectors.len() != texts.len() {
            return Err(malformed(format!(
                "{} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        let mut vectors = vectors;
        for v in &mut vectors {
            if self.dimensions != 0 && v.len() != self.dimensions {
                return Err(malformed(format!(
                    "a vector of length {}, expected {}",
                    v.len(),
                    self.dimensions
                )));
            }
            if v.is_empty() {
                return Err(malformed("an empty vector".into()));
            }
            if !v.iter().all(|x| x.is_finite()) {
                return Err(malformed("a vector with NaN or infinite values".into()));
            }
            l2_normalize(v);
        }
        Ok(vectors)
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        let what = if e.is_timeout() {
            format!("no answer within {:?}", self.cfg.timeout)
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        };
        unavailable(format!("{what} ({}): {e}", self.endpoint))
    }
}

/// Scales to unit length; a zero vector stays zero (same eps as torch's F.normalize).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Ollama's `/api/embed`. `model_id()` is `ollama:<model>`.
#[derive(Debug)]
pub struct OllamaEmbedder(HttpEmbedder);

impl OllamaEmbedder {
    /// No network traffic; `cfg.dimensions` must be set.
    pub fn new(cfg: HttpEmbedderConfig) -> Result<Self> {
        HttpEmbedder::new(Flavor::Ollama, cfg).map(Self)
    }
    /// Embeds one probe text to learn (or check) the vector length.
    pub async fn connect(cfg: HttpEmbedderConfig) -> Result<Self> {
        HttpEmbedder::connect(Flavor::Ollama, cfg).await.map(Self)
    }
}

/// An OpenAI-compatible `/v1/embeddings` (OpenAI, vLLM, llama.cpp server, LM Studio…). `model_id()` is `openai:<model>`.
#[derive(Debug)]
pub struct OpenAiEmbedder(HttpEmbedder);

impl OpenAiEmbedder {
    /// No network traffic; `cfg.dimensions` must be set.
    pub fn new(cfg: HttpEmbedderConfig) -> Result<Self> {
        HttpEmbedder::new(Flavor::OpenAi, cfg).map(Self)
    }
    /// Embeds one probe text to learn (or check) the vector length.
    pub async fn connect(cfg: HttpEmbedderConfig) -> Result<Self> {
        HttpEmbedder::connect(Flavor::OpenAi, cfg).await.map(Self)
    }
}

macro_rules! impl_embedder {
    ($t:ty) => {
        #[async_trait]
        impl Embedder for $t {
            fn model_id(&self) -> &str {
                &self.0.model_id
            }
            fn dimensions(&self) -> usize {
                self.0.dimensions
            }
            async fn embed(&self, texts: Vec<String>, _kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
                self.0.embed(texts).await
            }
        }
    };
}

impl_embedder!(OllamaEmbedder);
impl_embedder!(OpenAiEmbedder);
