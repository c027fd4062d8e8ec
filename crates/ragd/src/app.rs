//! Assembles an `Engine` from `Settings` (catalog, store, embedder) and runs the server.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ragd_core::embed::{ApproxTokenCounter, Embedder, TokenCounter};
use ragd_core::engine::{Engine, Parts};
use ragd_core::answer::{GeneratorSlot, Generators};
use ragd_core::breaker::BreakerObserver;
use ragd_core::generate::Generator;
use ragd_core::metrics::Metrics;
use ragd_core::resilience::{ResilientEmbedder, ResilientGenerator};
use ragd_core::settings::{EmbedderKind, GeneratorKind, OpenAiApi, ProviderSettings, Settings, Sources};
use ragd_models::builtin::{BuiltinEmbedder, BuiltinOptions};
use ragd_models::http::{HttpEmbedderConfig, OllamaEmbedder, OpenAiEmbedder};
use ragd_models::{BuiltinGenerator, BuiltinGeneratorOptions, HttpGeneratorConfig, OllamaGenerator, OpenAiGenerator};
use ragd_core::auth::KeyStore;
use ragd_core::answer::ConversationStore;
use ragd_core::cache::VectorCache;
use ragd_core::ratelimit::{LocalGcra, RateLimiter};
use ragd_core::resilience::ResilientCache;
use ragd_core::settings::StoreBackend;
use ragd_core::catalog::Catalog;
use ragd_core::queue::JobQueue;
use ragd_core::store::VectorStore;
use ragd_core::rerank::{BuiltinReranker, RerankKind, Reranker, ResilientReranker};
use ragd_models::rerank_http::{HttpReranker, HttpRerankerConfig};
use ragd_server::Gateway;
use ragd_store::{EmbeddedStore, KeyFile, QdrantCatalog, QdrantStore, RedbCatalog, RedisCache, RedisConversations, RedisGcra, RedisLink, RedisQueue};

/// Builds the embedder the settings ask for, with the token counter chunking should use.
pub async fn embedder(settings: &Settings) -> anyhow::Result<(Arc<dyn Embedder>, Arc<dyn TokenCounter>)> {
    let timeout = Duration::from_millis(settings.embedder.timeout_ms);
    let e = &settings.embedder;
    Ok(match e.kind {
        EmbedderKind::Builtin => {
            let dir = settings.models_dir.join("all-MiniLM-L6-v2");
            let opts = BuiltinOptions { max_batch: e.max_batch, ..BuiltinOptions::default() };
            let builtin = tokio::task::spawn_blocking(move || BuiltinEmbedder::load(&dir, opts)).await??;
            let tokens = builtin.token_counter();
            (Arc::new(builtin), tokens)
        }
        EmbedderKind::Ollama | EmbedderKind::Openai => {
            let mut cfg = HttpEmbedderConfig::new(e.url.clone().unwrap_or_default(), e.model.clone().unwrap_or_default());
            cfg.api_key = e.api_key.as_ref().map(|k| k.expose().to_owned());
            cfg.timeout = timeout;
            let emb: Arc<dyn Embedder> = if e.kind == EmbedderKind::Ollama {
                Arc::new(OllamaEmbedder::connect(cfg).await?)
            } else {
                Arc::new(OpenAiEmbedder::connect(cfg).await?)
            };
            (emb, Arc::new(ApproxTokenCounter))
        }
    })
}

/// Builds one generator from its settings, behind its circuit breaker (`name` is the breaker's and
/// the metrics' dependency label); `None` for `kind = "none"`. The built-in model is loaded once and
/// shared by every entry that names it.
async fn generator(
    settings: &Settings,
    name: &str,
    p: &ProviderSettings<GeneratorKind>,
    builtin: &mut Option<Arc<dyn Generator>>,
    observer: &Arc<dyn BreakerObserver>,
) -> anyhow::Result<Option<GeneratorSlot>> {
    let timeout = Duration::from_millis(p.timeout_ms);
    let generator: Arc<dyn Generator> = match p.kind {
        GeneratorKind::None => return Ok(None),
        GeneratorKind::Builtin => match builtin {
            Some(g) => g.clone(),
            None => {
                let path = ragd_models::gemma_path(&settings.models_dir);
                let opts = BuiltinGeneratorOptions { context_tokens: p.context_tokens, ..BuiltinGeneratorOptions::default() };
                let g: Arc<dyn Generator> = Arc::new(tokio::task::spawn_blocking(move || BuiltinGenerator::load(&path, opts)).await??);
                *builtin = Some(g.clone());
                g
            }
        },
        GeneratorKind::Ollama | GeneratorKind::Openai => {
            let mut cfg = HttpGeneratorConfig::new(p.url.clone().unwrap_or_default(), p.model.clone().unwrap_or_default());
            cfg.api_key = p.api_key.as_ref().map(|k| k.expose().to_owned());
            cfg.timeout = timeout;
            cfg.context_tokens = p.context_tokens;
            cfg.completions = p.api == OpenAiApi::Completions;
            if p.kind == GeneratorKind::Ollama {
                Arc::new(OllamaGenerator::new(cfg)?)
            } else {
                Arc::new(OpenAiGenerator::new(cfg)?)
            }
        }
    };
    let r = &settings.resilience.generator;
    let generator: Arc<dyn Generator> = Arc::new(ResilientGenerator::new(generator, name, r, timeout, observer.clone()));
    // The engine's own deadline leaves room for the wait for a slot, so the generator's timeout (which
    // the breaker counts) fires first.
    let deadline = timeout + Duration::from_millis(r.queue_timeout_ms) + Duration::from_secs(1);
    Ok(Some(GeneratorSlot { generator, timeout: deadline }))
}

/// The default generator and the named ones of `generators.*`.
pub async fn generators(settings: &Settings, observer: Arc<dyn BreakerObserver>) -> anyhow::Result<Generators> {
    let mut builtin = None;
    let default = generator(settings, "generator", &settings.generator, &mut builtin, &observer).await.context("generator")?;
    let mut named = std::collections::HashMap::new();
    for (name, p) in &settings.generators {
        let slot = generator(settings, &format!("generator:{name}"), p, &mut builtin, &observer).await.with_context(|| format!("generators.{name}"))?;
        named.insert(name.clone(), slot);
    }
    Ok(Generators { default, named })
}

/// Where API keys and service tokens live: `keys.json` in the data folder (embedded), or the
/// catalog collection in Qdrant (cluster: every replica sees the same keys).
pub async fn key_store(settings: &Settings) -> anyhow::Result<Arc<dyn KeyStore>> {
    Ok(match settings.store.backend {
        StoreBackend::Embedded => Arc::new(KeyFile::open(&settings.data_dir)?),
        StoreBackend::Qdrant => {
            let store = QdrantStore::connect(&settings.store.qdrant)?;
            Arc::new(QdrantCatalog::open(store).await.context("opening the key store in Qdrant (store.qdrant.urls)")?)
        }
    })
}

/// This machine's name, for naming the replica among the shared queue's consumers.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "ragd".into())
}

/// The connection to Redis when `redis.url` is set (nothing is contacted until first use).
fn redis_link(settings: &Settings) -> anyhow::Result<Option<Arc<RedisLink>>> {
    match settings.redis.url {
        Some(_) => Ok(Some(RedisLink::new(&settings.redis)?)),
        None => Ok(None),
    }
}

/// Opens the data folder and builds a started engine; `answers: false` skips loading generators
/// (for commands that only ingest or search).
pub async fn engine(settings: Settings, answers: bool) -> anyhow::Result<Arc<Engine>> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("creating data folder {}", settings.data_dir.display()))?;
    // Embedded: catalog and vectors in the data folder. Cluster: both in Qdrant (the catalog as a
    // replicated collection of its own) and jobs shared through Redis, so replicas keep nothing.
    let (catalog, store, job_queue): (Arc<dyn Catalog>, Arc<dyn VectorStore>, Option<Arc<dyn JobQueue>>) = match settings.store.backend {
        StoreBackend::Embedded => {
            let catalog = RedbCatalog::open(&settings.catalog_path()).map_err(|e| {
                anyhow::anyhow!("{e} (is another ragd using the data folder {}?)", settings.data_dir.display())
            })?;
            (Arc::new(catalog), Arc::new(EmbeddedStore::open(&settings.collections_path())?), None)
        }
        StoreBackend::Qdrant => {
            let store = QdrantStore::connect(&settings.store.qdrant)?;
            let catalog = QdrantCatalog::open(store.clone()).await.context("opening the catalog in Qdrant (store.qdrant.urls)")?;
            let queue = match &settings.redis.url {
                Some(_) => {
                    let replica = format!("{}-{}", hostname(), std::process::id());
                    let stale = Duration::from_secs(settings.ingest.job_stale_secs);
                    Some(Arc::new(RedisQueue::new(&settings.redis, &replica, stale)?) as Arc<dyn JobQueue>)
                }
                None => None,
            };
            (Arc::new(catalog), Arc::new(store), queue)
        }
    };
    let metrics = Metrics::new();
    let observer: Arc<dyn BreakerObserver> = metrics.clone();
    let (embedder, tokens) = embedder(&settings).await?;
    // Cluster mode: replicas share query vectors through Redis (keyed by the embedder's model).
    let link = redis_link(&settings)?;
    let query_cache = match &link {
        Some(link) if settings.search.query_cache_entries > 0 => {
            let cache = Arc::new(RedisCache::new(link.clone(), embedder.model_id(), settings.redis.cache_ttl_secs));
            let timeout = Duration::from_millis(settings.redis.timeout_ms);
            Some(Arc::new(ResilientCache::new(cache, &settings.resilience.cache, timeout, observer.clone())) as Arc<dyn VectorCache>)
        }
        _ => None,
    };
    // Follow-up questions may reach any replica: their histories live in Redis too.
    let conversations = link.map(|link| {
        let a = &settings.answer;
        Arc::new(RedisConversations::new(link, a.conversation_turns, Duration::from_secs(a.conversation_ttl_secs))) as Arc<dyn ConversationStore>
    });
    let timeout = Duration::from_millis(settings.embedder.timeout_ms);
    let embedder: Arc<dyn Embedder> = Arc::new(ResilientEmbedder::new(embedder, &settings.resilience.embedder, timeout, observer.clone()));
    let reranker = reranker(&settings, observer.clone())?;
    let generators = if answers { generators(&settings, observer).await? } else { Generators::default() };
    let engine = Engine::new(Parts {
        metrics,
        generators,
        reranker,
        settings: Arc::new(settings),
        catalog,
        store,
        embedder,
        tokens,
        query_cache,
        job_queue,
        conversations,
    });
    engine.start().await?;
    Ok(engine)
}

/// The rerank stage of `rerank.kind`, behind the outbound stack (`None` for `none`).
fn reranker(settings: &Settings, observer: Arc<dyn BreakerObserver>) -> anyhow::Result<Option<Arc<dyn Reranker>>> {
    let r = &settings.rerank;
    let inner: Arc<dyn Reranker> = match r.kind {
        RerankKind::None => return Ok(None),
        RerankKind::Builtin => Arc::new(BuiltinReranker),
        RerankKind::Http => Arc::new(HttpReranker::new(HttpRerankerConfig {
            url: r.url.clone().context("rerank.url is required for an http reranker")?,
            format: r.format,
            model: r.model.clone(),
            api_key: r.api_key.as_ref().map(|k| k.expose().to_owned()),
            timeout: Duration::from_millis(r.timeout_ms),
            max_chars: r.max_chars,
        })?),
    };
    let timeout = Duration::from_millis(r.timeout_ms);
    Ok(Some(Arc::new(ResilientReranker::new(inner, &settings.resilience.reranker, timeout, observer))))
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.listen.clone();
    let admin_listen = settings.admin_listen.clone();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    if !settings.auth.enabled {
        tracing::warn!("AUTHENTICATION IS OFF: anyone who can reach {listen} can read and change every collection (set auth.enabled = true)");
        eprintln!("WARNING: authentication is off: anyone who can reach {listen} can read and change every collection (set auth.enabled = true and create a key with `ragd keys create`)");
    }
    let tls = match (&settings.tls.cert_file, &settings.tls.key_file) {
        (Some(cert), Some(key)) => Some(ragd_server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            reload_check: Duration::from_millis(settings.tls.reload_check_ms),
        }),
        _ => None,
    };
    if let Some(files) = &tls {
        ragd_server::check_tls(files).await?;
    }
    let data = settings.data_dir.clone();
    let keys = key_store(&settings).await?;
    let gateway_settings = settings.clone();
    let engine = engine(settings, true).await?;
    // Cluster mode: one budget per key across every replica, through Redis.
    let limiter: Arc<dyn RateLimiter> = match redis_link(&gateway_settings)? {
        Some(link) => Arc::new(RedisGcra::new(link, engine.metrics().clone())),
        None => Arc::new(LocalGcra::new()),
    };
    let gateway = Gateway::new(&gateway_settings, keys.clone(), limiter, engine.metrics().clone())
        .map_err(|e| anyhow::anyhow!("the configuration has a problem:\n  - {e}"))?;
    if gateway_settings.auth.enabled && keys.list(None).await?.iter().all(|k| k.revoked_at.is_some()) && gateway_settings.auth.jwt.is_none() {
        tracing::warn!("authentication is on but there is no active key: create one with `ragd keys create --role admin --tenant <tenant>`");
    }
    let gateway = Arc::new(gateway);
    gateway.warm().await;
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let admin = match admin_listen.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding the admin listener {a}"))?),
        None => None,
    };
    let generator = engine.generators().default.as_ref().map(|g| g.generator.id().to_owned()).unwrap_or_else(|| "none (extractive answers)".into());
    tracing::info!(%addr, data = %data.display(), embedder = engine.embedder().model_id(), %generator, "ragd is serving");
    // Plain lines on stdout, for scripts and tests that start ragd on port 0.
    if let Some(a) = &admin {
        let admin_addr = a.local_addr()?;
        tracing::info!(%admin_addr, "admin listener: /metrics, /health");
        println!("ragd admin listening on http://{admin_addr}");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("ragd listening on {scheme}://{addr}");
    // In-flight requests and streams get `shutdown_grace_secs` to finish after the signal; then the
    // process exits anyway (jobs are durable: an interrupted one resumes from its last batch).
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    };
    let server = ragd_server::serve(listener, admin, engine, gateway, tls, shutdown);
    tokio::pin!(server);
    let deadline = async {
        let _ = stopping_rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = &mut server => r?,
        _ = deadline => tracing::warn!(grace_s = grace.as_secs(), "shutdown grace period over: closing the connections still open"),
    }
    tracing::info!("ragd stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// `ragd config check`: the effective configuration, then every problem (exit code 1 if any).
pub fn config_check(sources: &Sources) -> ExitCode {
    match Settings::load(sources) {
        Ok(settings) => {
            println!("{}", settings.to_toml());
            let mut problems = Vec::new();
            let builtin_generator = settings.generator.kind == GeneratorKind::Builtin
                || settings.generators.values().any(|g| g.kind == GeneratorKind::Builtin);
            if settings.embedder.kind == EmbedderKind::Builtin || builtin_generator {
                for missing in ragd_models::fetch::check_models(&settings.models_dir) {
                    problems.push(format!("models_dir: {missing} (run `ragd models fetch`)"));
                }
            }
            if problems.is_empty() {
                println!("# configuration OK");
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    println!("# problem: {p}");
                }
                ExitCode::FAILURE
            }
        }
        Err(problems) => {
            for p in &problems {
                println!("# problem: {p}");
            }
            ExitCode::FAILURE
        }
    }
}
