//! The outbound resilience stack every dependency call goes through (`Outbound`):
//! metrics → circuit breaker → retry (idempotent calls only) → concurrency cap → per-attempt timeout.
//!
//! - Generators make single attempts (an answer may already be streaming); their failures fall back
//!   to extractive answers upstream.
//! - Embeddings, vector-store searches, JWKS fetches and a shared cache go through `Outbound::call`:
//!   `Unavailable` is retried up to `max_attempts` with jittered exponential backoff, honouring a
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
    /// Attempts per call (1 = no retry; generators always make one).
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

/// Whether an outcome says the dependency is unwell (it counts against its breaker). Bad input does not.
fn failed<T>(r: &Result<T>) -> bool {
    matches!(r, Err(Error::Unavailable { .. } | Error::Internal(_)))
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

/// A generator behind the outbound stack, without the retry (an answer may already be streaming).
pub struct ResilientGenerator {
    inner: Arc<dyn Generator>,
    outbound: Outbound,
}

impl ResilientGenerator {
    pub fn new(inner: Arc<dyn Generator>, name: &str, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Self {
        ResilientGenerator { inner, outbound: Outbound::new("generator", name, s, timeout, observer) }
    }
    pub fn breaker(&self) -> &Arc<Breaker> {
        self.outbound.breaker()
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
        self.outbound
            .attempt(self.inner.generate(req, pieces), |r| match r {
                // A client that went away says nothing about the generator's health.
                Ok(g) if g.finish == FinishReason::Cancelled => None,
                other => Some(failed(other)),
            })
            .await
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }
    fn breaker_status(&self) -> Option<BreakerStatus> {
        Some(self.outbound.breaker.status())
    }
}

/// The stack for any outbound dependency: breaker → retry (jittered exponential backoff, honouring a
/// `Retry-After`, within a retry budget) → concurrency cap → per-attempt timeout. Only idempotent
/// calls go through `call`; the metrics layer is the breaker's observer.
pub struct Outbound {
    dependency: &'static str,
    breaker: Arc<Breaker>,
    sem: Arc<Semaphore>,
    settings: ResilienceSettings,
    timeout: Duration,
    calls: AtomicU64,
    retries: AtomicU64,
}

impl Outbound {
    /// `dependency` is the fixed word errors and `degraded` use; `name` the breaker's (and its metrics label).
    pub fn new(dependency: &'static str, name: &str, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Outbound {
        Outbound {
            dependency,
            breaker: Breaker::with_observer(name, s.breaker.clone(), observer),
            sem: Arc::new(Semaphore::new(s.max_concurrent)),
            settings: s.clone(),
            timeout,
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Retries may add at most 20% to the calls made, plus 10: a failing dependency is not hammered.
    fn may_retry(&self) -> bool {
        let calls = self.calls.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        retries < calls / 5 + 10
    }

    /// One attempt through breaker, cap and timeout. `verdict` says whether its outcome counts as a
    /// failure for the breaker (`None`: it says nothing about the dependency, and is not recorded).
    pub async fn attempt<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
        verdict: impl FnOnce(&Result<T>) -> Option<bool>,
    ) -> Result<T> {
        let permit = self.breaker.try_acquire().map_err(|r| open_error(self.dependency, &self.breaker, r.retry_after))?;
        let _slot = slot(&self.sem, self.dependency, Duration::from_millis(self.settings.queue_timeout_ms)).await?;
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable(self.dependency, format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        match verdict(&result) {
            Some(failed) => self.breaker.record(permit, failed),
            None => drop(permit),
        }
        result
    }

    /// Makes an idempotent call (`f` makes one attempt), retrying `Unavailable` failures.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            match self.attempt(f(), |r| Some(failed(r))).await {
                Err(Error::Unavailable { retry_after, message, dependency })
                    if attempt + 1 < self.settings.max_attempts && self.breaker.state() != crate::breaker::State::Open && self.may_retry() =>
                {
                    let wait = retry_after.unwrap_or_else(|| backoff(Duration::from_millis(self.settings.backoff_ms), attempt));
                    if wait > Duration::from_secs(5) {
                        return Err(Error::Unavailable { dependency, message, retry_after });
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tracing::debug!(dependency = self.dependency, attempt, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// An embedder behind the outbound stack.
pub struct ResilientEmbedder {
    inner: Arc<dyn Embedder>,
    outbound: Outbound,
}

impl ResilientEmbedder {
    pub fn new(inner: Arc<dyn Embedder>, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Self {
        ResilientEmbedder { inner, outbound: Outbound::new("embedder", "embedder", s, timeout, observer) }
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
            out.extend(self.outbound.call(|| self.inner.embed(part.to_vec(), kind)).await?);
        }
        Ok(out)
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }
    fn breaker_status(&self) -> Option<BreakerStatus> {
        Some(self.outbound.breaker.status())
    }
}

/// Texts per embedder call (about 5 s of the built-in model on 2 cores).
const TEXTS_PER_CALL: usize = 256;


/// A shared cache (cluster mode's Redis) behind the outbound stack: a cache that fails, hangs or
/// has its breaker open answers `Err` at once, and the caller bypasses it (the response says
/// `cache`). The in-process cache cannot fail and is not wrapped.
pub struct ResilientCache {
    inner: Arc<dyn crate::cache::VectorCache>,
    outbound: Outbound,
}

impl ResilientCache {
    pub fn new(inner: Arc<dyn crate::cache::VectorCache>, s: &ResilienceSettings, timeout: Duration, observer: Arc<dyn BreakerObserver>) -> Self {
        ResilientCache { inner, outbound: Outbound::new("cache", "cache", s, timeout, observer) }
    }
    pub fn breaker_status(&self) -> BreakerStatus {
        self.outbound.breaker.status()
    }
}

fn cache_call<T>(r: std::result::Result<T, String>) -> Result<T> {
    r.map_err(|e| Error::unavailable("cache", e))
}

#[async_trait]
impl crate::cache::VectorCache for ResilientCache {
    async fn get(&self, key: &str) -> std::result::Result<Option<Vec<f32>>, String> {
        self.outbound.call(|| async { cache_call(self.inner.get(key).await) }).await.map_err(|e| e.to_string())
    }
    async fn put(&self, key: &str, vector: Vec<f32>) -> std::result::Result<(), String> {
        self.outbound.call(|| async { cache_call(self.inner.put(key, vector.clone()).await) }).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::breaker::{NoObserver, State};
    use crate::cache::VectorCache;

    /// A fault-injecting cache (a fake, for tests only): fails, or hangs, when told to.
    #[derive(Default)]
    struct FaultInjectingCache {
        failing: AtomicBool,
        hanging: AtomicBool,
        calls: AtomicU64,
    }

    #[async_trait]
    impl VectorCache for FaultInjectingCache {
        async fn get(&self, _key: &str) -> std::result::Result<Option<Vec<f32>>, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hanging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.failing.load(Ordering::SeqCst) { Err("connection refused".into()) } else { Ok(Some(vec![1.0])) }
        }
        async fn put(&self, _key: &str, _v: Vec<f32>) -> std::result::Result<(), String> {
            self.get("").await.map(|_| ())
        }
    }

    fn settings() -> ResilienceSettings {
        let mut s = ResilienceSettings { max_attempts: 1, ..ResilienceSettings::default() };
        s.breaker.window_size = 4;
        s.breaker.minimum_calls = 4;
        s.breaker.wait_in_open_ms = 1_000;
        s.breaker.half_open_calls = 1;
        s
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_cache_is_bypassed_then_its_breaker_opens_and_it_is_not_called() {
        let fake = Arc::new(FaultInjectingCache::default());
        let cache = ResilientCache::new(fake.clone(), &settings(), Duration::from_millis(50), Arc::new(NoObserver));
        assert_eq!(cache.get("q").await, Ok(Some(vec![1.0])));
        fake.failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(cache.get("q").await.is_err());
        }
        assert_eq!(cache.breaker_status().state, State::Open);
        let before = fake.calls.load(Ordering::SeqCst);
        let e = cache.get("q").await.unwrap_err();
        assert!(e.contains("circuit breaker"), "{e}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), before, "an open breaker does not call the cache");
        // The cache recovers: after the wait in open, a probe closes the breaker.
        fake.failing.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert_eq!(cache.get("q").await, Ok(Some(vec![1.0])));
        assert_eq!(cache.breaker_status().state, State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_cache_is_given_up_on_at_its_timeout() {
        let fake = Arc::new(FaultInjectingCache::default());
        fake.hanging.store(true, Ordering::SeqCst);
        let cache = ResilientCache::new(fake.clone(), &settings(), Duration::from_millis(50), Arc::new(NoObserver));
        let t = tokio::time::Instant::now();
        let e = cache.put("q", vec![1.0]).await.unwrap_err();
        assert_eq!(t.elapsed(), Duration::from_millis(50));
        assert!(e.contains("no answer within 50 ms"), "{e}");
    }
}
