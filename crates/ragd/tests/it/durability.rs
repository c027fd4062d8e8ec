//! Acknowledged documents survive `kill -9`: jobs resume after a restart and every acknowledged
//! document ends up searchable exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, dataset};

#[tokio::test]
async fn an_acknowledged_job_survives_sigkill_and_completes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    s.create("kb").await;
    let docs: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("doc-{i}"), "text": format!("Document number {i} is about subject {} and holds a few sentences of text.", i % 17)}))
        .collect();
    let (st, accepted) = s.post("/api/v1/collections/kb/documents", json!({ "documents": docs })).await;
    assert_eq!(st, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    s.kill9(); // right after the acknowledgement, before the job can finish

    s.restart();
    let job = s.wait_job(&job_id).await;
    assert_eq!(job["status"], "done", "{job}");
    let (_, info) = s.get("/api/v1/collections/kb").await;
    assert_eq!((info["documents"].as_u64(), info["chunks"].as_u64()), (Some(200), Some(200)), "each document exactly once: {info}");
}

/// The acceptance check: a server killed with SIGKILL during a CLI ingest of msmarco-5k
/// restarts, and every document whose ingest was acknowledged is searchable exactly once.
#[tokio::test]
async fn sigkill_during_cli_ingest_of_msmarco_loses_nothing_acknowledged() {
    let Some(dir) = dataset() else {
        eprintln!("SKIPPED: sigkill_during_cli_ingest_of_msmarco: the msmarco-5k dataset was not found (set RAGD_TEST_DATASET to its folder)");
        return;
    };
    let corpus = dir.join("corpus.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());

    let mut cli = Command::new(env!("CARGO_BIN_EXE_ragd"))
        .args(["ingest", "--collection", "msmarco", "--verbose", "--batch-documents", "200", "--server", &s.base])
        .arg(&corpus)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ragd ingest");
    // indicatif prints acknowledgements above the bar, on stderr.
    let stderr = cli.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for part in line.split('\r') {
                if let Some(rest) = part.trim().strip_prefix("acknowledged job ") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let mut acked = Vec::new();
    let t = Instant::now();
    while acked.len() < 3 {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(job) => acked.push(job),
            Err(_) => panic!("the CLI acknowledged only {} uploads in {:?}", acked.len(), t.elapsed()),
        }
    }
    s.kill9();
    let _ = cli.wait();
    while let Ok(job) = rx.try_recv() {
        acked.push(job);
    }

    s.restart();
    let mut checked = 0;
    for job_id in &acked {
        let job = s.wait_job(job_id).await;
        assert_eq!(job["status"], "done", "{job}");
        for d in job["documents"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap();
            let (st, doc) = s.get(&format!("/api/v1/collections/msmarco/documents/{id}")).await;
            assert_eq!(st, 200, "acknowledged document {id} is missing: {doc}");
            assert!(doc["chunks"].as_u64().unwrap() >= 1);
            assert_eq!(doc["indexed_chunks"], doc["chunks"], "document {id} must be stored exactly once: {doc}");
            checked += 1;
        }
    }
    assert!(checked >= 600, "checked {checked} acknowledged documents");
    // And they are searchable: a passage's own words find it.
    let (_, first) = s.get("/api/v1/collections/msmarco/documents?limit=1").await;
    let id = first["documents"][0]["id"].as_str().unwrap().to_owned();
    let r = s.search("msmarco", json!({"query": "anything", "mode": "dense", "top_k": 5, "filter": {"doc_id": id}})).await;
    let hits = r["results"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["doc_id"] == id.as_str()), "{r}");
}

/// Issue 5: no job stays `running` forever. A job whose embedder hangs past every timeout makes no
/// progress; the reaper stops it after `ingest.job_stale_secs`, it is retried, and after
/// `ingest.max_stalled_attempts` attempts without progress it fails with a reason.
// Multi-threaded: the stand-in must answer the embedder's start-up probe while this thread waits
// for the server to print its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_makes_no_progress_is_retried_then_failed_with_a_reason() {
    use crate::standin::{Behavior, StandInModelServer};
    let standin = StandInModelServer::start(Behavior::Answer { pieces: vec![], delay: Duration::ZERO }).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("RAGD_EMBEDDER__KIND", "openai"),
            ("RAGD_EMBEDDER__URL", &standin.url),
            ("RAGD_EMBEDDER__MODEL", "standin-embed"),
            // Longer than the test: only the reaper can end the hang.
            ("RAGD_EMBEDDER__TIMEOUT_MS", "600000"),
            ("RAGD_INGEST__JOB_STALE_SECS", "1"),
            ("RAGD_INGEST__MAX_STALLED_ATTEMPTS", "2"),
            ("RAGD_GENERATOR__KIND", "none"),
        ],
    );
    server.create("stuck").await;
    standin.set(Behavior::Hang);
    let (s, b) = server.post("/api/v1/collections/stuck/documents", json!({"id": "d", "text": "never embedded"})).await;
    assert_eq!(s, 202, "{b}");
    let job = server.wait_job(b["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "job_attempts_exhausted", "{job}");
    assert!(job["error"]["message"].as_str().unwrap().contains("without making progress"), "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(job["documents"][0]["status"], "failed", "{job}");
}

/// `ragd_stage_duration_seconds_count{stage="optimize"}` from the admin listener.
async fn optimizations(s: &Server) -> f64 {
    let text = crate::observability::metrics_text(s).await;
    crate::observability::sample(&text, "ragd_stage_duration_seconds_count{stage=\"optimize\"}").unwrap_or(0.0)
}

async fn wait_optimizations(s: &Server, at_least: f64) {
    let t = Instant::now();
    while optimizations(s).await < at_least {
        assert!(t.elapsed() < Duration::from_secs(30), "the store was not optimised {at_least} time(s) within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once writes settle, the store's optimizers run on the collection (off the request path); what they
/// rewrite keeps every chunk exactly once, deletions included, across a SIGKILL and restart.
#[tokio::test]
async fn the_store_is_optimised_after_writes_settle_and_keeps_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RAGD_GENERATOR__KIND", "none"), ("RAGD_INGEST__OPTIMIZE_AFTER_MS", "300")];
    let mut s = Server::start_with(dir.path(), &env);
    s.create("kb").await;
    assert_eq!(optimizations(&s).await, 0.0, "nothing written yet, nothing to optimise");
    for round in 0..3 {
        let docs: Vec<Value> = (0..40)
            .map(|i| json!({"id": format!("doc-{round}-{i}"), "text": format!("Round {round}, note {i}: the {} lighthouse keeper logs the weather.", ["north", "south", "east", "west"][i % 4])}))
            .collect();
        let (st, b) = s.post("/api/v1/collections/kb/documents?wait=true", json!({ "documents": docs })).await;
        assert_eq!(st, 200, "{b}");
    }
    wait_optimizations(&s, 1.0).await;
    let (st, _) = s.delete("/api/v1/collections/kb/documents/doc-0-7").await;
    assert_eq!(st, 204);
    wait_optimizations(&s, 2.0).await;

    every_chunk_once(&s).await;
    s.kill9();
    s.restart();
    every_chunk_once(&s).await;
}

/// 120 documents were ingested and `doc-0-7` deleted: 119 left, none twice, the deleted one gone.
async fn every_chunk_once(s: &Server) {
    let (_, info) = s.get("/api/v1/collections/kb").await;
    assert_eq!((info["documents"].as_u64(), info["chunks"].as_u64()), (Some(119), Some(119)), "{info}");
    let hits = s.search("kb", json!({"query": "Round 2, note 7: the west lighthouse keeper logs the weather.", "top_k": 100, "mode": "dense"})).await;
    let ids: Vec<&str> = hits["results"].as_array().unwrap().iter().map(|h| h["doc_id"].as_str().unwrap()).collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (100, 100), "a chunk came back twice: {ids:?}");
    assert!(!ids.contains(&"doc-0-7"), "a deleted document came back");
    assert_eq!(ids[0], "doc-2-7", "{ids:?}");
}
