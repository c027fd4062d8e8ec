//! The rerank stage against a stand-in rerank server (`StandInModelServer`, fault injection): both
//! wire formats reorder results; a 5xx, a hang past the deadline and an open breaker leave the fused
//! order, `degraded: ["reranker"]`, and searches and answers keep working. The builtin reranker on
//! the real embedder is checked too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::standin::{Behavior, StandInModelServer};
use crate::support::Server;

const DOCS: [(&str, &str); 5] = [
    ("tides", "Tides in the Wadden Sea rise twice a day; the spring tide reaches 3.2 metres at Husum."),
    ("ferry", "The ferry to Amrum leaves Dagebuell at 08:10 and 14:30 in summer, once a day in winter."),
    ("mudflat", "Guided mudflat walks start two hours before low tide and last about three hours."),
    ("seals", "Grey seals pup in winter on the outer sandbanks; the colony counted 1,200 animals in 2023."),
    ("dikes", "The sea dikes are 8.5 metres high and are inspected every spring by the dike association."),
];

async fn seed(server: &Server) {
    server.create("coast").await;
    let docs: Vec<Value> = DOCS.iter().map(|(id, text)| json!({"id": id, "text": text})).collect();
    let (s, b) = server.post("/api/v1/collections/coast/documents?wait=true", json!({ "documents": docs })).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("done")), "{b}");
}

fn ids(b: &Value) -> Vec<String> {
    b["results"].as_array().unwrap().iter().map(|r| r["doc_id"].as_str().unwrap().to_owned()).collect()
}

fn env<'a>(url: &'a str, format: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("RAGD_RERANK__KIND", "http"),
        ("RAGD_RERANK__URL", url),
        ("RAGD_RERANK__FORMAT", format),
        ("RAGD_RERANK__MODEL", "standin-reranker"),
        ("RAGD_RERANK__TIMEOUT_MS", "400"),
        ("RAGD_RESILIENCE__RERANKER__BREAKER__MINIMUM_CALLS", "4"),
        ("RAGD_RESILIENCE__RERANKER__BREAKER__WINDOW_SIZE", "4"),
        ("RAGD_RESILIENCE__RERANKER__BREAKER__WAIT_IN_OPEN_MS", "60000"),
        ("RAGD_GENERATOR__KIND", "none"),
    ]
}

const QUERY: &str = "when does the ferry leave and how high are the tides";

#[tokio::test]
async fn an_http_reranker_in_either_format_reorders_the_fused_candidates() {
    for format in ["cohere", "tei"] {
        let standin = StandInModelServer::start(Behavior::Answer { pieces: vec![], delay: Duration::ZERO }).await;
        let url = format!("{}/v1/rerank", standin.url);
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(dir.path(), &env(&url, format));
        seed(&server).await;
        let fused = server.search("coast", json!({"query": QUERY, "top_k": 5, "rerank": false})).await;
        assert_eq!(standin.request_count(), 0, "{format}: rerank=false must not call the reranker");
        let reranked = server.search("coast", json!({"query": QUERY, "top_k": 5, "rerank": true, "rerank_candidates": 5})).await;
        assert_eq!(reranked["degraded"], json!([]), "{format}: {reranked}");
        // The stand-in scores each passage by its position: the reranked order is the fused one reversed.
        let mut reversed = ids(&fused);
        reversed.reverse();
        assert_eq!(ids(&reranked), reversed, "{format}");
        let sent = standin.requests.lock().unwrap().last().cloned().unwrap();
        assert_eq!(sent["query"], QUERY, "{format}: {sent}");
        let passages = if format == "cohere" { &sent["documents"] } else { &sent["texts"] };
        assert_eq!(passages.as_array().map(Vec::len), Some(5), "{format}: {sent}");
        if format == "cohere" {
            assert_eq!((sent["model"].as_str(), sent["top_n"].as_u64()), (Some("standin-reranker"), Some(5)), "{sent}");
        }
        // The reranker's timing is reported and recorded as the `rerank` stage.
        assert!(reranked["timings"]["rerank_ms"].as_f64().is_some_and(|t| t > 0.0), "{reranked}");
        let metrics = server.http.get(format!("{}/metrics", server.admin)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("ragd_stage_duration_seconds_count{stage=\"rerank\"}"), "no rerank stage in the metrics");
        // Answers rerank their passages by default: the reranker is asked again.
        let before = standin.request_count();
        let (s, b) = server.post("/api/v1/collections/coast/query", json!({"question": "When does the ferry to Amrum leave?"})).await;
        assert_eq!(s, 200, "{b}");
        // No generator is configured (`degraded: ["generator"]`); the reranker answered.
        assert!(!b["degraded"].as_array().unwrap().contains(&json!("reranker")), "{format}: {b}");
        assert!(standin.request_count() > before, "{format}: the answer path did not rerank");
    }
}

#[tokio::test]
async fn a_failing_reranker_leaves_the_fused_order_and_says_so() {
    let standin = StandInModelServer::start(Behavior::Status { code: 503, retry_after: None }).await;
    let url = format!("{}/rerank", standin.url);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &env(&url, "tei"));
    seed(&server).await;
    let fused = ids(&server.search("coast", json!({"query": QUERY, "top_k": 3, "rerank": false})).await);

    // A 5xx: the fused order, degraded.
    let b = server.search("coast", json!({"query": QUERY, "top_k": 3, "rerank": true})).await;
    assert_eq!(b["degraded"], json!(["reranker"]), "{b}");
    assert_eq!(ids(&b), fused);
    // An answer still comes, and says what it did without.
    let (s, a) = server.post("/api/v1/collections/coast/query", json!({"question": "When does the ferry to Amrum leave?"})).await;
    assert_eq!(s, 200, "{a}");
    assert!(a["degraded"].as_array().unwrap().contains(&json!("reranker")), "{a}");
    assert!(a["answer"].as_str().is_some_and(|t| !t.is_empty()), "{a}");

    // A hang: cut at rerank.timeout_ms (400 ms), not the client's patience.
    standin.set(Behavior::Hang);
    let t = std::time::Instant::now();
    let b = server.search("coast", json!({"query": QUERY, "top_k": 3, "rerank": true})).await;
    assert!(t.elapsed() < Duration::from_secs(5), "the hang was not cut: {:?}", t.elapsed());
    assert_eq!((b["degraded"].clone(), ids(&b)), (json!(["reranker"]), fused.clone()), "{b}");

    // Failures open the breaker (window of 4): then the reranker is not called at all.
    standin.set(Behavior::Status { code: 500, retry_after: None });
    for _ in 0..6 {
        let b = server.search("coast", json!({"query": QUERY, "top_k": 3, "rerank": true})).await;
        assert_eq!(b["degraded"], json!(["reranker"]), "{b}");
    }
    let calls = standin.request_count();
    for _ in 0..5 {
        let b = server.search("coast", json!({"query": QUERY, "top_k": 3, "rerank": true})).await;
        assert_eq!((b["degraded"].clone(), ids(&b)), (json!(["reranker"]), fused.clone()), "{b}");
    }
    assert_eq!(standin.request_count(), calls, "an open breaker must keep calls away from the reranker");
    let metrics = server.http.get(format!("{}/metrics", server.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ragd_breaker_state{dependency=\"reranker\"} 1"), "the reranker's breaker is not shown open");
}

#[tokio::test]
async fn rerank_settings_are_validated_per_request_and_per_collection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    let (s, b) = server.post("/api/v1/collections", json!({"name": "c", "rerank": {"candidates": 0}})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_rerank")), "{b}");
    let (s, b) = server.post("/api/v1/collections", json!({"name": "c", "rerank": {"search": false, "candidates": 12}})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["rerank"], json!({"search": false, "candidates": 12}), "{b}");
    let (s, b) = server.post("/api/v1/collections/c/search", json!({"query": "x", "rerank_candidates": 100000})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_rerank")), "{b}");
}

/// The builtin reranker (`rerank.kind = "builtin"`, the default) through the API: searches rerank
/// by default, a request can turn it off, and nothing degrades (the embedded store gives the
/// candidates' vectors). With `rerank.kind = "none"` no search reports a rerank stage.
#[tokio::test]
async fn the_builtin_reranker_runs_by_default_and_not_when_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("a"), &[("RAGD_GENERATOR__KIND", "none")]);
    seed(&server).await;
    let q = "How many grey seals were counted in the colony?";
    let b = server.search("coast", json!({"query": q, "top_k": 3})).await;
    assert_eq!(b["degraded"], json!([]), "{b}");
    assert_eq!(ids(&b)[0], "seals", "{b}");
    assert!(b["timings"]["rerank_ms"].as_f64().is_some_and(|t| t > 0.0), "the default reranker reranks searches: {b}");
    let off = server.search("coast", json!({"query": q, "top_k": 3, "rerank": false})).await;
    assert!(off["timings"].get("rerank_ms").is_none(), "{off}");
    assert_eq!(ids(&off)[0], "seals", "{off}");
    drop(server);
    let plain = Server::start_with(&dir.path().join("b"), &[("RAGD_GENERATOR__KIND", "none"), ("RAGD_RERANK__KIND", "none")]);
    seed(&plain).await;
    let b = plain.search("coast", json!({"query": q, "top_k": 3, "rerank": true})).await;
    assert!(b["timings"].get("rerank_ms").is_none(), "`rerank.kind = none` reranks nothing: {b}");
    assert_eq!(b["degraded"], json!([]), "{b}");
}
