//! Two ragd replicas sharing a real Redis (a private `redis-server` started for the test, so it can
//! be stopped): one rate-limit budget per key across both, a query cache one replica fills and the
//! other hits, a conversation continued on the other replica, and with Redis stopped queries still answered, readiness `degraded` with `redis`
//! down, limits per replica (counted in `ragd_ratelimit_fallback_decisions_total`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::gateway::{Auth, call, create_key};
use crate::support::Server;

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn metric(s: &Server, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", s.admin)).await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_limits_and_cache_through_redis_and_keep_serving_without_it() {
    let Some(mut redis) = RedisServer::start(free_port()) else {
        eprintln!("skipped: redis-server is not installed or did not start (the machine's Redis packages provide it)");
        return;
    };
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One key for both replicas (in cluster mode keys live in Qdrant; here the file is copied).
    let key = create_key(dir_a.path(), "admin", "default");
    std::fs::copy(dir_a.path().join("keys.json"), dir_b.path().join("keys.json")).unwrap();
    let env = [
        ("RAGD_AUTH__ENABLED", "true"),
        ("RAGD_GENERATOR__KIND", "none"),
        ("RAGD_REDIS__URL", url.as_str()),
        ("RAGD_RATE_LIMIT__QUERY__REQUESTS", "10"),
    ];
    let a = Server::start_with(dir_a.path(), &env);
    let b = Server::start_with(dir_b.path(), &env);
    let h = reqwest::Client::new();
    for s in [&a, &b] {
        let (st, body, _) = call(&h, Method::POST, &s.url("/api/v1/collections"), &Auth::Bearer(&key), Some(json!({"name": "docs"}))).await;
        assert_eq!(st, 201, "{body}");
        let doc = json!({"id": "d1", "text": "Lighthouses guide ships along rocky coasts at night."});
        let (st, body, _) =
            call(&h, Method::POST, &s.url("/api/v1/collections/docs/documents?wait=true"), &Auth::Bearer(&key), Some(doc)).await;
        assert_eq!(st, 200, "{body}");
        let (st, ready, _) = call(&h, Method::GET, &s.url("/health/ready"), &Auth::None, None).await;
        assert_eq!((st, ready["checks"]["redis"]["status"].as_str()), (200, Some("ok")), "{ready}");
    }

    // The cache: a query embedded by A is a hit on B.
    let hits = "ragd_cache_requests_total{cache=\"query_embedding\",result=\"hit\"}";
    let before = metric(&b, hits).await;
    let q = json!({"query": "what guides ships at night", "top_k": 1});
    let (st, _, _) = call(&h, Method::POST, &a.url("/api/v1/collections/docs/search"), &Auth::Bearer(&key), Some(q.clone())).await;
    assert_eq!(st, 200);
    let (st, found, _) = call(&h, Method::POST, &b.url("/api/v1/collections/docs/search"), &Auth::Bearer(&key), Some(q)).await;
    assert_eq!(st, 200);
    assert_eq!(found["results"][0]["doc_id"], "d1");
    assert_eq!(metric(&b, hits).await, before + 1.0, "B found A's query vector in Redis");

    // A conversation started on A goes on on B: its history is in Redis, so B's follow-up is
    // searched together with A's question.
    let first = json!({"question": "What guides ships along rocky coasts?", "conversation_id": "c-1"});
    let (st, a1, _) = call(&h, Method::POST, &a.url("/api/v1/collections/docs/query"), &Auth::Bearer(&key), Some(first)).await;
    assert_eq!(st, 200, "{a1}");
    let follow = json!({"question": "And at night?", "conversation_id": "c-1"});
    let (st, b1, _) = call(&h, Method::POST, &b.url("/api/v1/collections/docs/query"), &Auth::Bearer(&key), Some(follow)).await;
    assert_eq!(st, 200, "{b1}");
    let rq = b1["retrieval_query"].as_str().unwrap_or_default();
    assert!(rq.contains("rocky coasts") && rq.contains("And at night?"), "B knew A's turn: {b1}");

    // The limit: 10 queries a minute for the key, across both replicas (2 are spent above; questions
    // are limited as queries too).
    let mut allowed = 0;
    let t = Instant::now();
    for n in 0..20 {
        let s = if n % 2 == 0 { &a } else { &b };
        let (st, _, headers) =
            call(&h, Method::POST, &s.url("/api/v1/collections/docs/search"), &Auth::Bearer(&key), Some(json!({"query": format!("probe {n}")}))).await;
        if st == 200 {
            allowed += 1;
        } else {
            assert_eq!(st, 429);
            assert!(headers.contains_key("retry-after"));
        }
    }
    let refilled = (t.elapsed().as_secs_f64() / 6.0) as usize;
    assert!((6..=6 + refilled).contains(&allowed), "{allowed} of 20 allowed across two replicas (6 left of 10, {refilled} refilled)");

    // Redis stops: answers go on, without the cache, and readiness says why.
    redis.stop();
    let before_fallback = metric(&a, "ragd_ratelimit_fallback_decisions_total").await;
    let (st, body, _) = call(&h, Method::POST, &a.url("/api/v1/collections/docs/search"), &Auth::Bearer(&key), Some(json!({"query": "rocky coasts"}))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["results"][0]["doc_id"], "d1");
    assert!(body["degraded"].as_array().unwrap().iter().any(|d| d == "cache"), "{body}");
    let (st, ready, _) = call(&h, Method::GET, &a.url("/health/ready"), &Auth::None, None).await;
    assert_eq!(st, 200, "Redis is not critical: {ready}");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["redis"]["status"], "down", "{ready}");
    assert!(metric(&a, "ragd_ratelimit_fallback_decisions_total").await > before_fallback);
}
