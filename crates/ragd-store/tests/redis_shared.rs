//! Shared state of cluster replicas against a real Redis (`RAGD_TEST_REDIS_URL`, default the
//! machine's `redis://127.0.0.1:6379`). Each test uses its own key prefix. Without a Redis the
//! tests say "skipped: …" and return.

use std::sync::Arc;
use std::time::Duration;

use ragd_core::cache::VectorCache;
use ragd_core::metrics::Metrics;
use ragd_core::queue::{JobQueue, Popped};
use ragd_core::ratelimit::{Quota, RateLimiter};
use ragd_core::settings::RedisSettings;
use ragd_store::{RedisCache, RedisGcra, RedisLink, RedisQueue};

fn settings() -> RedisSettings {
    let url = std::env::var("RAGD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    RedisSettings { url: Some(url), key_prefix: format!("ragdtest:{}:", uuid::Uuid::new_v4().simple()), ..RedisSettings::default() }
}

async fn redis_or_skip() -> Option<RedisSettings> {
    let s = settings();
    match RedisLink::new(&s).unwrap().ping().await {
        Ok(()) => Some(s),
        Err(e) => {
            eprintln!("skipped: no Redis at {} ({e}); start one or set RAGD_TEST_REDIS_URL", s.url.as_deref().unwrap_or(""));
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget_per_key() {
    let Some(s) = redis_or_skip().await else { return };
    // Three replicas: three connections, three limiters, one Redis.
    let limiters: Vec<RedisGcra> = (0..3).map(|_| RedisGcra::new(RedisLink::new(&s).unwrap(), Metrics::new())).collect();
    let quota = Quota::per_period(100, Duration::from_secs(60));
    let mut allowed = 0;
    let mut tasks = Vec::new();
    let limiters = Arc::new(limiters);
    for n in 0..300usize {
        let limiters = limiters.clone();
        tasks.push(tokio::spawn(async move { limiters[n % 3].check("key-a", &quota).await }));
    }
    let mut shared = true;
    for t in tasks {
        let d = t.await.unwrap();
        allowed += usize::from(d.allowed);
        shared &= d.shared;
    }
    assert!(shared, "every decision came from Redis");
    // 300 at once: 100, plus at most what refilled while they ran (one per 0.6 s).
    assert!((100..=102).contains(&allowed), "allowed {allowed} of 300 across 3 replicas");
    // Another key has its own budget; peeking counts nothing.
    let d = limiters[1].peek("key-b", &quota).await;
    assert!(d.allowed && d.remaining == 100, "{d:?}");
    assert!(limiters[2].check("key-b", &quota).await.allowed);
    assert_eq!(limiters[0].peek("key-b", &quota).await.remaining, 99);
    let refused = limiters[0].check("key-a", &quota).await;
    assert!(!refused.allowed && refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(600), "{refused:?}");
    assert!(limiters[0].ready().await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_limits_fall_back_per_replica_and_say_so() {
    // Nothing listens on port 9: every call fails fast and the local GCRA decides.
    let s = RedisSettings { url: Some("redis://127.0.0.1:9/0".into()), timeout_ms: 200, ..RedisSettings::default() };
    let metrics = Metrics::new();
    let limiter = RedisGcra::new(RedisLink::new(&s).unwrap(), metrics.clone());
    let quota = Quota::per_period(5, Duration::from_secs(60));
    let started = std::time::Instant::now();
    let decisions: Vec<_> = futures_lite(&limiter, &quota, 8).await;
    assert!(started.elapsed() < Duration::from_secs(5), "a dead Redis costs little: {:?}", started.elapsed());
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 5, "the local limiter still limits");
    assert!(decisions.iter().all(|d| !d.shared));
    assert!(limiter.ready().await.unwrap().is_err());
    let text = metrics.encode();
    assert!(text.contains("ragd_ratelimit_fallback_decisions_total 8"), "{}", text.lines().filter(|l| l.contains("fallback")).collect::<Vec<_>>().join("\n"));
}

async fn futures_lite(l: &RedisGcra, q: &Quota, n: usize) -> Vec<ragd_core::ratelimit::Decision> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(l.check("k", q).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_shared_and_keyed_by_model() {
    let Some(s) = redis_or_skip().await else { return };
    let a = RedisCache::new(RedisLink::new(&s).unwrap(), "all-MiniLM-L6-v2", 60);
    let b = RedisCache::new(RedisLink::new(&s).unwrap(), "all-MiniLM-L6-v2", 60);
    let other_model = RedisCache::new(RedisLink::new(&s).unwrap(), "another-model", 60);
    let v = vec![0.25f32, -1.5, 3.0e-7, f32::MAX];
    assert_eq!(b.get("what is rust").await.unwrap(), None);
    a.put("what is rust", v.clone()).await.unwrap();
    assert_eq!(b.get("what is rust").await.unwrap(), Some(v), "written by one replica, read by another, bit for bit");
    assert_eq!(other_model.get("what is rust").await.unwrap(), None);
    let dead = RedisCache::new(RedisLink::new(&RedisSettings { url: Some("redis://127.0.0.1:9/0".into()), ..RedisSettings::default() }).unwrap(), "m", 60);
    assert!(dead.get("x").await.is_err(), "an unreachable cache is an error (the engine bypasses it), not a miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_by_a_dead_replica_is_claimed_by_another() {
    let Some(s) = redis_or_skip().await else { return };
    let stale = Duration::from_millis(1000);
    let a = RedisQueue::new(&s, "replica-a", stale).unwrap();
    let b = RedisQueue::new(&s, "replica-b", stale).unwrap();
    assert!(a.prepare().await.unwrap(), "the first replica creates the queue");
    assert!(!b.prepare().await.unwrap(), "the others find it");
    a.push("job-1").await.unwrap();
    a.push("job-2").await.unwrap();
    let held = b.job_ids().await.unwrap();
    assert!(held.contains("job-1") && held.contains("job-2") && held.len() == 2, "{held:?}");
    // Replica a takes job-1 and dies without acknowledging it.
    let Popped::Job(d1) = a.pop(Duration::from_millis(500)).await.unwrap() else { panic!("job-1 for a") };
    assert_eq!(d1.job_id, "job-1");
    // Replica b gets the next new job at once; job-1 is not yet stale.
    let Popped::Job(d2) = b.pop(Duration::from_millis(500)).await.unwrap() else { panic!("job-2 for b") };
    assert_eq!(d2.job_id, "job-2");
    // b keeps job-2 alive while a stays silent; after the stale time b claims job-1.
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.touch(&d2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let Popped::Job(claimed) = b.pop(Duration::from_millis(200)).await.unwrap() else { panic!("job-1 claimed by b") };
    assert_eq!(claimed.job_id, "job-1");
    // job-2 was touched, so nobody else takes it.
    let c = RedisQueue::new(&s, "replica-c", stale).unwrap();
    b.ack(&claimed).await.unwrap();
    assert_eq!(c.pop(Duration::from_millis(100)).await.unwrap(), Popped::Nothing);
    b.ack(&d2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.pop(Duration::from_millis(100)).await.unwrap(), Popped::Nothing, "acknowledged jobs are gone");
    assert!(c.job_ids().await.unwrap().is_empty());
    // Consumers holding nothing are forgotten once silent long enough (c, which only ever read an
    // empty stream, was never created by Redis).
    c.forget_idle_consumers(Duration::from_millis(50)).await.unwrap();
    let client = redis::Client::open(s.url.clone().unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: redis::Value = redis::cmd("XINFO").arg("CONSUMERS").arg(format!("{}jobs:stream", s.key_prefix)).arg("workers").query_async(&mut conn).await.unwrap();
    let names = format!("{left:?}");
    assert!(!names.contains("replica-a") && !names.contains("replica-b"), "{names}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_emptied_by_a_redis_restart_asks_for_the_unfinished_jobs_again() {
    let Some(s) = redis_or_skip().await else { return };
    let a = RedisQueue::new(&s, "replica-a", Duration::from_secs(60)).unwrap();
    assert!(a.prepare().await.unwrap());
    // What a Redis restart without persistence does to the queue.
    let client = redis::Client::open(s.url.clone().unwrap()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(format!("{}jobs:stream", s.key_prefix)).query_async(&mut c).await.unwrap();
    assert_eq!(a.pop(Duration::from_millis(100)).await.unwrap(), Popped::Reset);
    assert_eq!(a.pop(Duration::from_millis(100)).await.unwrap(), Popped::Nothing, "reset once");
}
