//! The outbound resilience stack every model dependency goes through:
//! metrics → circuit breaker → retry (idempotent calls only) → concurrency cap → per-attempt timeout.
//!
//! - Generators are not retried (an answer may already be streaming); their failures fall back to
//!   extractive answers upstream.
//! - Embedders are retried on `Unavailable` with jittered exponential backoff, honouring a
//!   `Retry-After`, within a retry budget (retries may add at most 20% to the calls, plus a few).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::breaker::{Breaker, BreakerConfig, BreakerObserver, BreakerStatus};
use crate::embed::{EmbedKind, Embedder};
use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerationRequest, Generated, Generator};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceSettings {
    pub breaker: BreakerConfig,
    /// Calls in flight at once; more wait for a slot up to `queue_timeout_ms`, then are refused.
    pub max_concurrent: usize,
    pub queue_timeout_ms: u64,
    /// Attempts per call (embedders only; 1 = no retry).
    pub max_attempts: u32,
    /// First backoff; doubles each attempt, with full jitter.
    pub backoff_ms: u64,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        ResilienceSettings { breaker: BreakerConfig::default(), max_concurrent: 16, queue_timeout_ms: 10_000, max_attempts: 3, backoff_ms: 100 }
    }
}

impl ResilienceSettings {
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = self.breaker.problems(&format!("{key}.breaker"));
        if self.max_concurrent == 0 || self.max_attempts == 0 {
            p.push(format!("{key}: max_concurrent and max_attempts must be at least 1"));
        }
        p
    }
}

/// Failures that say the dependency is unwell (they count against its breaker). Bad input does not.
fn is_dependency_failure(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Internal(_))
}

fn open_error(dependency: &'static str, breaker: &Breaker, retry_after: Duration) -> Error {
    Error::Unavailable {
        dependency,
        message: format!("circuit breaker `{}` is open: calls are refused for {} ms", breaker.name(), retry_after.as_millis()),
        retry_after: Some(retry_after),
    }
}

async fn slot(sem: &Arc<Semaphore>, dependency: &'static str, wait: Duration) -> Result<tokio::sync::OwnedSemaphorePermit> {
    match tokio::time::timeout(wait, sem.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(Error::Unavailable {
            dependency,
            message: format!("{dependency} is at its concurrency limit; no slot within {} ms", wait.as_millis()),
            retry_after: Some(Duration::from_secs(1)),
        }),
    }
}

/// A generator behind a breaker, a concurrency cap and a per-call timeout.
pub struct ResilientGenerator {
    inner: Arc<dyn Generator>,
    breaker: Arc<Breaker>,
    sem: Arc<Semaphore>,
    queue_timeout: Duration,
    timeout: Duration,
}

impl ResilientGenerator {
    pub fn new(inner: Arc<dyn Generator>, name: &str, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Self {
        ResilientGenerator {
            inner,
            breaker: Breaker::with_observer(name, s.breaker.clone(), observer),
            sem: Arc::new(Semaphore::new(s.max_concurrent)),
            queue_timeout: Duration::from_millis(s.queue_timeout_ms),
            timeout,
        }
    }
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

#[async_trait]
impl Generator for ResilientGenerator {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn context_tokens(&self) -> usize {
        self.inner.context_tokens()
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.inner.count_tokens(text)
    }
    async fn generate(&self, req: GenerationRequest, pieces: mpsc::Sender<String>) -> Result<Generated> {
        let permit = self.breaker.try_acquire().map_err(|r| open_error("generator", &self.breaker, r.retry_after))?;
        let _slot = slot(&self.sem, "generator", self.queue_timeout).await?;
        let result = match tokio::time::timeout(self.timeout, self.inner.generate(req, pieces)).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable("generator", format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        match &result {
            // A client that went away says nothing about the generator's health.
            Ok(g) if g.finish == FinishReason::Cancelled => drop(permit),
            Ok(_) => self.breaker.record(permit, false),
            Err(e) => self.breaker.record(permit, is_dependency_failure(e)),
        }
        result
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }
    fn breaker_status(&self) -> Option<BreakerStatus> {
        Some(self.breaker.status())
    }
}

/// An embedder behind a breaker, retries with backoff, a concurrency cap and a per-attempt timeout.
pub struct ResilientEmbedder {
    inner: Arc<dyn Embedder>,
    breaker: Arc<Breaker>,
    sem: Arc<Semaphore>,
    settings: ResilienceSettings,
    timeout: Duration,
    calls: AtomicU64,
    retries: AtomicU64,
}

impl ResilientEmbedder {
    pub fn new(inner: Arc<dyn Embedder>, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Self {
        ResilientEmbedder {
            inner,
            breaker: Breaker::with_observer("embedder", s.breaker.clone(), observer),
            sem: Arc::new(Semaphore::new(s.max_concurrent)),
            settings: s.clone(),
            timeout,
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Retries may add at most 20% to the calls made, plus 10: a failing dependency is not hammered.
    fn may_retry(&self) -> bool {
        let calls = self.calls.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        retries < calls / 5 + 10
    }

    async fn attempt(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
        let permit = self.breaker.try_acquire().map_err(|r| open_error("embedder", &self.breaker, r.retry_after))?;
        let _slot = slot(&self.sem, "embedder", Duration::from_millis(self.settings.queue_timeout_ms)).await?;
        let result = match tokio::time::timeout(self.timeout, self.inner.embed(texts, kind)).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable("embedder", format!("no vectors within {} ms", self.timeout.as_millis()))),
        };
        match &result {
            Ok(_) => self.breaker.record(permit, false),
            Err(e) => self.breaker.record(permit, is_dependency_failure(e)),
        }
        result
    }
}

/// Full jitter: a random wait in [0, base·2^attempt], at least 1 ms.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1 << attempt.min(10));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let frac = f64::from(nanos % 1000) / 1000.0;
    cap.mul_f64(frac).max(Duration::from_millis(1))
}

#[async_trait]
impl Embedder for ResilientEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn embed(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
        // A large document's chunks go in several calls, so the per-attempt timeout stays meaningful.
        let mut out = Vec::with_capacity(texts.len());
        for part in texts.chunks(TEXTS_PER_CALL) {
            out.extend(self.embed_part(part.to_vec(), kind).await?);
        }
        Ok(out)
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }
    fn breaker_status(&self) -> Option<BreakerStatus> {
        Some(self.breaker.status())
    }
}

/// Texts per embedder call (about 5 s of the built-in model on 2 cores).
const TEXTS_PER_CALL: usize = 256;

impl ResilientEmbedder {
    async fn embed_part(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            match self.attempt(texts.clone(), kind).await {
                Err(Error::Unavailable { retry_after, message, dependency })
                    if attempt + 1 < self.settings.max_attempts && self.breaker.state() != crate::breaker::State::Open && self.may_retry() =>
                {
                    let wait = retry_after.unwrap_or_else(|| backoff(Duration::from_millis(self.settings.backoff_ms), attempt));
                    if wait > Duration::from_secs(5) {
                        return Err(Error::Unavailable { dependency, message, retry_after });
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, "retrying the embedder");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}
