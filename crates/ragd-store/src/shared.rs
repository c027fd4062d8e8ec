//! Redis for what cluster replicas share: the query-vector cache, the rate limiter, conversation
//! histories and the job queue. The cache and the limiter are
//! optional comforts, never a reason to fail a request: when Redis does not answer within
//! `redis.timeout_ms`, the cache is bypassed (the response says `cache`) and each replica limits
//! on its own (readiness and `ragd_ratelimit_fallback_decisions_total` say so) until Redis is back.
//!
//! One connection per replica (`ConnectionManager` multiplexes and reconnects). If Redis is down
//! when ragd starts, the first connection is retried at most once a second, on use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ragd_core::answer::ConversationStore;
use ragd_core::cache::VectorCache;
use ragd_core::generate::Turn;
use ragd_core::metrics::Metrics;
use ragd_core::queue::{Delivery, JobQueue, Popped};
use ragd_core::ratelimit::{Decision, LocalGcra, Quota, RateLimiter, gcra};
use ragd_core::settings::RedisSettings;
use ragd_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

/// A Redis command's answer within `deadline`; an error or a late answer is a message for the log.
async fn within<T>(deadline: Duration, answer: impl std::future::Future<Output = redis::RedisResult<T>>) -> std::result::Result<T, String> {
    match tokio::time::timeout(deadline, answer).await {
        Ok(r) => r.map_err(|e| format!("redis: {e}")),
        Err(_) => Err(format!("redis: no answer within {} ms", deadline.as_millis())),
    }
}

/// The connection to Redis shared by the cache and the limiter of one replica.
pub struct RedisLink {
    client: redis::Client,
    conn: tokio::sync::RwLock<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<()>,
    /// When the last failed first-connection attempt started (so a dead Redis costs one attempt a second).
    last_attempt: parking_lot::Mutex<Option<Instant>>,
    timeout: Duration,
    prefix: String,
}

impl RedisLink {
    pub fn new(settings: &RedisSettings) -> Result<Arc<RedisLink>> {
        let url = settings.url.as_deref().ok_or_else(|| Error::invalid("invalid_settings", "redis.url is not set"))?;
        let client = redis::Client::open(url).map_err(|e| Error::invalid("invalid_settings", format!("redis.url: {e}")))?;
        Ok(Arc::new(RedisLink {
            client,
            conn: tokio::sync::RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            last_attempt: parking_lot::Mutex::new(None),
            timeout: Duration::from_millis(settings.timeout_ms),
            prefix: settings.key_prefix.clone(),
        }))
    }

    async fn connection(&self) -> std::result::Result<ConnectionManager, String> {
        if let Some(c) = self.conn.read().await.as_ref() {
            return Ok(c.clone());
        }
        // One connection attempt at a time, one a second at most, made without holding the slot.
        // Callers wait for an attempt in progress no longer than one command's deadline, then fail
        // (the cache is bypassed, the limiter decides locally) instead of queueing behind it.
        let Ok(_connecting) = tokio::time::timeout(self.timeout, self.connecting.lock()).await else {
            return Err("redis: still connecting".into());
        };
        if let Some(c) = self.conn.read().await.as_ref() {
            return Ok(c.clone());
        }
        {
            let mut last = self.last_attempt.lock();
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Err("redis unreachable (next connection attempt within a second)".into());
            }
            *last = Some(Instant::now());
        }
        // No response timeout here: each command has its own deadline (a blocking read waits longer).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1_000);
        let made = tokio::time::timeout(self.timeout * 4, ConnectionManager::new_with_config(self.client.clone(), config)).await;
        match made {
            Ok(Ok(c)) => {
                let mut slot = self.conn.write().await;
                Ok(slot.get_or_insert(c).clone())
            }
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis: no connection within {} ms", (self.timeout * 4).as_millis())),
        }
    }

    /// Runs one command with the deadline.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> std::result::Result<T, String> {
        let mut c = self.connection().await?;
        within(self.timeout, cmd.query_async::<T>(&mut c)).await
    }

    /// Several commands applied together (`MULTI`/`EXEC`), with the deadline.
    async fn atomic(&self, pipe: &redis::Pipeline) -> std::result::Result<(), String> {
        let mut c = self.connection().await?;
        within(self.timeout, pipe.query_async::<()>(&mut c)).await
    }

    async fn script<T: redis::FromRedisValue>(&self, script: &redis::Script, key: &str, args: &[u64]) -> std::result::Result<T, String> {
        let mut c = self.connection().await?;
        let mut inv = script.key(key);
        for a in args {
            inv.arg(*a);
        }
        within(self.timeout, inv.invoke_async::<T>(&mut c)).await
    }

    pub async fn ping(&self) -> std::result::Result<(), String> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" { Ok(()) } else { Err(format!("redis answered PING with {pong:?}")) }
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }
}

/// Query vectors in Redis, keyed by the embedder's model and the query text (hashed), so replicas
/// share them and a replica with another model never reads them. Entries expire after
/// `redis.cache_ttl_secs`; Redis's own `maxmemory` policy bounds the memory.
pub struct RedisCache {
    link: Arc<RedisLink>,
    model: String,
    ttl_secs: u64,
}

impl RedisCache {
    pub fn new(link: Arc<RedisLink>, model: &str, ttl_secs: u64) -> RedisCache {
        RedisCache { link, model: model.to_owned(), ttl_secs: ttl_secs.max(1) }
    }

    fn key(&self, query: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.model.as_bytes());
        h.update([0u8]);
        h.update(query.as_bytes());
        self.link.key("qv", &hex::encode(h.finalize()))
    }
}

#[async_trait]
impl VectorCache for RedisCache {
    async fn get(&self, key: &str) -> std::result::Result<Option<Vec<f32>>, String> {
        let bytes: Option<Vec<u8>> = self.link.query(redis::cmd("GET").arg(self.key(key))).await?;
        Ok(match bytes {
            Some(b) if b.len() % 4 == 0 && !b.is_empty() => {
                Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            // Not ours (or truncated): a miss, and the embedder's answer overwrites it.
            _ => None,
        })
    }

    async fn put(&self, key: &str, vector: Vec<f32>) -> std::result::Result<(), String> {
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        let _: () = self.link.query(redis::cmd("SET").arg(self.key(key)).arg(bytes).arg("EX").arg(self.ttl_secs)).await?;
        Ok(())
    }
}

/// GCRA with each key's theoretical arrival time in Redis, moved by one script so concurrent
/// requests on several replicas count exactly once each; time is Redis's clock (`TIME`), so
/// replicas' clocks need not agree. The script answers how far the key's TAT was ahead of now and
/// advances it when the request conforms; `ragd_core::ratelimit::gcra` turns that into the same
/// decision (and headers) as the in-process limiter.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat - now
local allowed = 0
if ahead <= tolerance then
  allowed = 1
  if count == 1 then
    local new_tat = tat + interval
    redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1000)
  end
end
return {ahead, allowed}
";

pub struct RedisGcra {
    link: Arc<RedisLink>,
    script: redis::Script,
    /// Decides while Redis does not answer: limits become per replica.
    local: LocalGcra,
    metrics: Arc<Metrics>,
    /// Unix seconds of the last fallback warning in the log (one a minute at most).
    warned_at: AtomicU64,
}

impl RedisGcra {
    pub fn new(link: Arc<RedisLink>, metrics: Arc<Metrics>) -> RedisGcra {
        RedisGcra { link, script: redis::Script::new(GCRA_SCRIPT), local: LocalGcra::new(), metrics, warned_at: AtomicU64::new(0) }
    }

    async fn decide(&self, key: &str, quota: &Quota, count: bool) -> Decision {
        let interval_us = quota.interval().as_micros() as u64;
        let tolerance_us = interval_us * u64::from(quota.burst.saturating_sub(1));
        let redis_key = self.link.key("rl", key);
        match self.link.script::<(i64, i64)>(&self.script, &redis_key, &[interval_us.max(1), tolerance_us, u64::from(count)]).await {
            Ok((ahead_us, allowed)) => {
                let mut d = gcra(quota, Duration::from_micros(ahead_us.max(0) as u64), count).0;
                // The script counted (or not) in whole microseconds; its word is what happened.
                if d.allowed != (allowed == 1) {
                    d.allowed = allowed == 1;
                    if !d.allowed {
                        d.remaining = 0;
                        d.retry_after = d.retry_after.max(Duration::from_micros(1));
                    }
                }
                d
            }
            Err(e) => {
                self.metrics.count_ratelimit_fallback();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let last = self.warned_at.load(Ordering::Relaxed);
                if now >= last + 60 && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    tracing::warn!(error = %e, "shared rate limiter unreachable: limiting per replica until Redis answers");
                }
                let mut d = if count { self.local.check(key, quota).await } else { self.local.peek(key, quota).await };
                d.shared = false;
                d
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisGcra {
    async fn check(&self, key: &str, quota: &Quota) -> Decision {
        self.decide(key, quota, true).await
    }
    async fn peek(&self, key: &str, quota: &Quota) -> Decision {
        self.decide(key, quota, false).await
    }
    async fn ready(&self) -> Option<std::result::Result<(), String>> {
        Some(self.link.ping().await)
    }
}

/// The replicas' job queue: a Redis stream (`<prefix>jobs`) read through one consumer group
/// (`workers`), each replica a consumer. A job is an entry `job=<id>`; the replica that takes it
/// holds it (pending) until the job ends (`XACK` + `XDEL`); each durable batch renews the claim
/// (`XCLAIM … JUSTID`, which resets its idle time). A replica looking for work first claims an entry
/// idle for `ingest.job_stale_secs` (`XAUTOCLAIM`): the job of a replica that died.
///
/// Its blocking `XREADGROUP` has a connection of its own: Redis answers a connection's commands in
/// order, so anything queued behind a blocked read (a push, the cache, the limiter) would wait for it.
pub struct RedisQueue {
    link: Arc<RedisLink>,
    reader: Arc<RedisLink>,
    stream: String,
    group: String,
    consumer: String,
    min_idle_ms: u64,
    /// Where the next `XAUTOCLAIM` scan starts.
    cursor: parking_lot::Mutex<String>,
}

const GROUP: &str = "workers";

fn bulk(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn items(v: &redis::Value) -> &[redis::Value] {
    match v {
        redis::Value::Array(a) => a,
        _ => &[],
    }
}

/// One stream entry `[id, [field, value, ...]]` as a delivery.
fn delivery(entry: &redis::Value) -> Option<Delivery> {
    let parts = items(entry);
    let token = bulk(parts.first()?)?;
    let fields = items(parts.get(1)?);
    let job_id = fields.chunks(2).find(|kv| kv.first().and_then(bulk).as_deref() == Some("job")).and_then(|kv| kv.get(1)).and_then(bulk)?;
    Some(Delivery { job_id, token })
}

impl RedisQueue {
    /// `replica` names this process among the consumers (host and pid make a readable one).
    pub fn new(settings: &RedisSettings, replica: &str, stale: Duration) -> Result<RedisQueue> {
        let link = RedisLink::new(settings)?;
        let reader = RedisLink::new(settings)?;
        let stream = link.key("jobs", "stream");
        Ok(RedisQueue { link, reader, stream, group: GROUP.into(), consumer: replica.to_owned(), min_idle_ms: stale.as_millis().max(1) as u64, cursor: parking_lot::Mutex::new("0-0".into()) })
    }

    /// A blocking read, on the reader's connection.
    async fn read_within<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, deadline: Duration) -> std::result::Result<T, String> {
        let mut c = self.reader.connection().await?;
        within(deadline, cmd.query_async::<T>(&mut c)).await
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn push(&self, job_id: &str) -> std::result::Result<(), String> {
        let _: String = self.link.query(redis::cmd("XADD").arg(&self.stream).arg("*").arg("job").arg(job_id)).await?;
        Ok(())
    }

    async fn pop(&self, wait: Duration) -> std::result::Result<Popped, String> {
        // A job whose worker went silent first.
        let from = self.cursor.lock().clone();
        let claimed: std::result::Result<redis::Value, String> = self
            .link
            .query(
                redis::cmd("XAUTOCLAIM").arg(&self.stream).arg(&self.group).arg(&self.consumer).arg(self.min_idle_ms).arg(from).arg("COUNT").arg(1),
            )
            .await;
        match claimed {
            Ok(v) => {
                // Redis looks at a few pending entries per call: resume where it stopped, so a
                // silent job behind live ones is reached too.
                *self.cursor.lock() = items(&v).first().and_then(bulk).unwrap_or_else(|| "0-0".into());
                if let Some(d) = items(&v).get(1).and_then(|entries| items(entries).first()).and_then(delivery) {
                    tracing::warn!(job = %d.job_id, "claimed a job whose replica went silent");
                    return Ok(Popped::Job(d));
                }
            }
            Err(e) if e.contains("NOGROUP") => return if self.prepare().await? { Ok(Popped::Reset) } else { Ok(Popped::Nothing) },
            Err(e) => return Err(e),
        }
        let read = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .clone();
        match self.read_within::<redis::Value>(&read, wait + self.link.timeout).await {
            Ok(v) => {
                // [[stream, [entry, ...]]] or nil
                let entry = items(&v).first().and_then(|s| items(s).get(1)).and_then(|entries| items(entries).first()).and_then(delivery);
                Ok(entry.map(Popped::Job).unwrap_or(Popped::Nothing))
            }
            Err(e) if e.contains("NOGROUP") => if self.prepare().await? { Ok(Popped::Reset) } else { Ok(Popped::Nothing) },
            Err(e) => Err(e),
        }
    }

    async fn ack(&self, d: &Delivery) -> std::result::Result<(), String> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK").arg(&self.stream).arg(&self.group).arg(&d.token).ignore()
            .cmd("XDEL").arg(&self.stream).arg(&d.token).ignore();
        self.link.atomic(&pipe).await
    }

    async fn touch(&self, d: &Delivery) -> std::result::Result<(), String> {
        let _: redis::Value = self
            .link
            .query(redis::cmd("XCLAIM").arg(&self.stream).arg(&self.group).arg(&self.consumer).arg(0).arg(&d.token).arg("JUSTID"))
            .await?;
        Ok(())
    }

    async fn job_ids(&self) -> std::result::Result<std::collections::HashSet<String>, String> {
        // Acknowledged entries are deleted, so the stream holds only waiting and taken jobs.
        let v: redis::Value = self.link.query(redis::cmd("XRANGE").arg(&self.stream).arg("-").arg("+")).await?;
        Ok(items(&v).iter().filter_map(delivery).map(|d| d.job_id).collect())
    }

    async fn forget_idle_consumers(&self, idle: Duration) -> std::result::Result<(), String> {
        // XINFO CONSUMERS: one map (RESP2: flat list) per consumer with name, pending, idle.
        let v: redis::Value = self.link.query(redis::cmd("XINFO").arg("CONSUMERS").arg(&self.stream).arg(&self.group)).await?;
        for consumer in items(&v) {
            let fields = items(consumer);
            let get = |k: &str| fields.chunks(2).find(|kv| kv.first().and_then(bulk).as_deref() == Some(k)).and_then(|kv| kv.get(1));
            let name = get("name").and_then(bulk);
            let pending = matches!(get("pending"), Some(redis::Value::Int(0)));
            let silent = matches!(get("idle"), Some(redis::Value::Int(ms)) if *ms as u128 > idle.as_millis());
            if let (Some(name), true, true) = (name, pending, silent) {
                if name != self.consumer {
                    let _: i64 = self.link.query(redis::cmd("XGROUP").arg("DELCONSUMER").arg(&self.stream).arg(&self.group).arg(&name)).await?;
                    tracing::info!(consumer = %name, "forgot a queue consumer gone for a day with no job");
                }
            }
        }
        Ok(())
    }

    async fn prepare(&self) -> std::result::Result<bool, String> {
        let made: std::result::Result<String, String> =
            self.link.query(redis::cmd("XGROUP").arg("CREATE").arg(&self.stream).arg(&self.group).arg("0").arg("MKSTREAM")).await;
        match made {
            Ok(_) => Ok(true),
            Err(e) if e.contains("BUSYGROUP") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Conversation histories in Redis (cluster mode), so a follow-up question may reach any replica:
/// one list of JSON turns per conversation (`<prefix>conv:<sha256(key)>`), trimmed to
/// `answer.conversation_turns` and expiring `answer.conversation_ttl_secs` after its last turn.
pub struct RedisConversations {
    link: Arc<RedisLink>,
    turns: usize,
    ttl_secs: u64,
}

impl RedisConversations {
    pub fn new(link: Arc<RedisLink>, turns: usize, ttl: Duration) -> RedisConversations {
        RedisConversations { link, turns, ttl_secs: ttl.as_secs().max(1) }
    }

    fn key(&self, conversation: &str) -> String {
        self.link.key("conv", &hex::encode(Sha256::digest(conversation.as_bytes())))
    }
}

#[async_trait]
impl ConversationStore for RedisConversations {
    async fn history(&self, key: &str) -> std::result::Result<Vec<Turn>, String> {
        let items: Vec<String> = self.link.query(redis::cmd("LRANGE").arg(self.key(key)).arg(0).arg(-1)).await?;
        Ok(items.iter().filter_map(|t| serde_json::from_str(t).ok()).collect())
    }

    async fn record(&self, key: &str, turn: Turn) -> std::result::Result<(), String> {
        if self.turns == 0 {
            return Ok(());
        }
        let k = self.key(key);
        let json = serde_json::to_string(&turn).map_err(|e| e.to_string())?;
        // One transaction, so the list never outlives its expiry.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH").arg(&k).arg(json).ignore()
            .cmd("LTRIM").arg(&k).arg(-(self.turns as i64)).arg(-1).ignore()
            .cmd("EXPIRE").arg(&k).arg(self.ttl_secs).ignore();
        self.link.atomic(&pipe).await
    }
}
