//! The Ollama and OpenAI clients against `wire_format_peer`, a tiny HTTP server that speaks their wire formats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ragd_core::Error;
use ragd_core::embed::{EmbedKind, Embedder};
use ragd_models::{HttpEmbedderConfig, OllamaEmbedder, OpenAiEmbedder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the peer saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// Serves HTTP/1.1 on localhost, one request per connection, answering with `handler(request)`.
/// Returns the base URL and the log of requests.
async fn wire_format_peer(handler: Arc<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then exactly Content-Length bytes of body.
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let seen = Seen {
                    path: head.split_whitespace().nth(1).unwrap_or("").to_string(),
                    authorization: header("authorization"),
                    body: serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null),
                };
                let (status, body) = handler(&seen);
                log.lock().unwrap().push(seen);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, log)
}

/// A deterministic, un-normalised 4-dimensional "embedding" of a text.
fn fake_vector(text: &str) -> Vec<f32> {
    vec![text.len() as f32 + 1.0, 2.0, 0.0, -3.0]
}

fn inputs(seen: &Seen) -> Vec<String> {
    seen.body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn ollama_ok() -> Arc<Handler> {
    Arc::new(|seen: &Seen| {
        let embeddings: Vec<Vec<f32>> = inputs(seen).iter().map(|t| fake_vector(t)).collect();
        (
            200,
            json!({ "model": seen.body["model"], "embeddings": embeddings }).to_string(),
        )
    })
}

fn openai_ok() -> Arc<Handler> {
    Arc::new(|seen: &Seen| {
        // Reversed on purpose: clients must order by `index`.
        let data: Vec<Value> = inputs(seen)
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| json!({ "object": "embedding", "index": i, "embedding": fake_vector(t) }))
            .collect();
        (
            200,
            json!({ "object": "list", "data": data, "model": seen.body["model"] }).to_string(),
        )
    })
}

fn cfg(url: &str, model: &str) -> HttpEmbedderConfig {
    let mut c = HttpEmbedderConfig::new(url, model);
    c.timeout = Duration::from_secs(5);
    c
}

fn assert_normalised_fake(v: &[f32], text: &str) {
    let raw = fake_vector(text);
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (a, b) in v.iter().zip(&raw) {
        assert!((a - b / norm).abs() < 1e-6, "{v:?} vs {raw:?}");
    }
}

fn assert_unavailable(err: Error, needle: &str) {
    match &err {
        Error::Unavailable {
            dependency, message, ..
        } => {
            assert_eq!(*dependency, "embedder");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn ollama_success_probes_dimensions_and_normalises() {
    let (url, log) = wire_format_peer(ollama_ok()).await;
    let e = OllamaEmbedder::connect(cfg(&url, "nomic-embed-text")).await.unwrap();
    assert_eq!(e.dimensions(), 4);
    assert_eq!(e.model_id(), "ollama:nomic-embed-text");
    let texts = vec!["a".to_string(), "bbb".to_string(), "cc".to_string()];
    let v = e.embed(texts.clone(), EmbedKind::Passage).await.unwrap();
    for (v, t) in v.iter().zip(&texts) {
        assert_normalised_fake(v, t);
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "one probe, one embed");
    assert_eq!(log[1].path, "/api/embed");
    assert_eq!(
        log[1].body,
        json!({ "model": "nomic-embed-text", "input": ["a", "bbb", "cc"] })
    );
}

#[tokio::test]
async fn openai_success_orders_by_index_sends_key_and_splits_batches() {
    let (url, log) = wire_format_peer(openai_ok()).await;
    let mut c = cfg(&format!("{url}/"), "text-embedding-3-small");
    c.api_key = Some("sk-test".into());
    c.dimensions = Some(4);
    c.max_batch = 2;
    let e = OpenAiEmbedder::new(c).unwrap();
    assert_eq!(e.model_id(), "openai:text-embedding-3-small");
    let texts: Vec<String> = ["x", "yy", "zzz", "wwww", "v"].iter().map(|s| s.to_string()).collect();
    let v = e.embed(texts.clone(), EmbedKind::Query).await.unwrap();
    assert_eq!(v.len(), 5);
    for (v, t) in v.iter().zip(&texts) {
        assert_normalised_fake(v, t);
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3, "5 texts in batches of 2");
    assert!(log.iter().all(|s| s.path == "/v1/embeddings"));
    assert!(log.iter().all(|s| s.authorization.as_deref() == Some("Bearer sk-test")));
}

#[tokio::test]
async fn server_error_is_unavailable() {
    let (url, _) = wire_format_peer(Arc::new(|_: &Seen| (500, r#"{"error":"model crashed"}"#.to_string()))).await;
    let mut c = cfg(&url, "m");
    c.dimensions = Some(4);
    let err = OllamaEmbedder::new(c.clone())
        .unwrap()
        .embed(vec!["a".into()], EmbedKind::Passage)
        .await
        .unwrap_err();
    assert_unavailable(err, "500");
    let err = OpenAiEmbedder::new(c)
        .unwrap()
        .embed(vec!["a".into()], EmbedKind::Passage)
        .await
        .unwrap_err();
    assert_unavailable(err, "model crashed");
}

#[tokio::test]
async fn malformed_bodies_are_unavailable_with_a_clear_message() {
    let (url, _) = wire_format_peer(Arc::new(|seen: &Seen| match seen.path.as_str() {
        "/api/embed" => (200, r#"{"embedding": [1, 2]}"#.to_string()),
        _ => (200, "not json at all".to_string()),
    }))
    .await;
    let mut c = cfg(&url, "m");
    c.dimensions = Some(2);
    let err = OllamaEmbedder::new(c.clone())
        .unwrap()
        .embed(vec!["a".into()], EmbedKind::Passage)
        .await
        .unwrap_err();
    assert_unavailable(err, "malformed");
    let err = OpenAiEmbedder::new(c)
        .unwrap()
        .embed(vec!["a".into()], EmbedKind::Passage)
        .await
        .unwrap_err();
    assert_unavailable(err, "malformed");
}

#[tokio::test]
async fn wrong_count_or_length_is_unavailable() {
    let (url, _) = wire_format_peer(Arc::new(|_: &Seen| (200, r#"{"embeddings": [[1, 2, 3]]}"#.to_string()))).await;
    let mut c = cfg(&url, "m");
    c.dimensions = Some(4);
    let e = OllamaEmbedder::new(c).unwrap();
    let err = e.embed(vec!["a".into()], EmbedKind::Passage).await.unwrap_err();
    assert_unavailable(err, "length 3");
    let err = e
        .embed(vec!["a".into(), "b".into()], EmbedKind::Passage)
        .await
        .unwrap_err();
    assert_unavailable(err, "1 vectors for 2 texts");
}

#[tokio::test]
async fn connection_refused_and_timeout_are_unavailable() {
    // Bind then drop, so the port is very likely closed.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let err = OllamaEmbedder::connect(cfg(&format!("http://{addr}"), "m"))
        .await
        .unwrap_err();
    assert_unavailable(err, "cannot connect");

    // A peer that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut c = cfg(&url, "m");
    c.timeout = Duration::from_millis(300);
    c.dimensions = Some(4);
    let err = OpenAiEmbedder::new(c)
        .unwrap()
        .embed(vec!["a".into()], EmbedKind::Query)
        .await
        .unwrap_err();
    assert_unavailable(err, "no answer within");
}

#[tokio::test]
async fn connect_rejects_a_configured_dimension_the_server_does_not_have() {
    let (url, _) = wire_format_peer(ollama_ok()).await;
    let mut c = cfg(&url, "m");
    c.dimensions = Some(768);
    let err = OllamaEmbedder::connect(c).await.unwrap_err();
    assert!(err.to_string().contains("768"), "{err}");
}
