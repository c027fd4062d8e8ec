//! Issue 8: `ragd bench` against a real server: the open and closed models, JSON output, thresholds
//! (exit code 1 when one fails), distinct queries from a file, and an ingest run that waits for
//! every job.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::Server;

fn bench(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ragd")).arg("bench").args(args).arg("--json").output().expect("run ragd bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), value)
}

#[tokio::test]
async fn ragd_bench_measures_searches_and_ingests_and_fails_on_a_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    s.create("bench").await;
    let docs: Vec<Value> = (0..12).map(|i| json!({"id": format!("d{i}"), "text": format!("Passage {i} is about lighthouse number {i} and its keepers.")})).collect();
    let (st, b) = s.post("/api/v1/collections/bench/documents?wait=true", json!({"documents": docs})).await;
    assert_eq!(st, 200, "{b}");
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, "lighthouse keepers\npassage seven\nwho kept the light\n").unwrap();
    let q = queries.to_str().unwrap();

    // Open model: 40 requests/s for 2 s.
    let (code, r) = bench(&[
        "search", "--server", &s.base, "--collection", "bench", "--queries", q, "--rate", "40", "--duration", "2s",
        "--threshold", "errors<1%", "--threshold", "p99<5s",
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["model"], "open");
    let n = r["requests"].as_u64().unwrap();
    assert!((70..=81).contains(&n), "about 80 requests in 2 s at 40/s: {r:#}");
    assert_eq!(r["status"]["200"].as_u64(), Some(n), "{r:#}");
    let lat = &r["latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() > 0.0 && lat["p50"].as_f64() <= lat["p99"].as_f64() && lat["p99"].as_f64() <= lat["max"].as_f64(), "{r:#}");
    assert!(r["thresholds"].as_array().unwrap().iter().all(|t| t["ok"] == true), "{r:#}");

    // Closed model with a pace; an impossible threshold fails the run with exit code 1.
    let (code, r) = bench(&["search", "--server", &s.base, "-c", "bench", "--vus", "3", "--pace", "100ms", "--duration", "1s", "--threshold", "p50<1us"]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!((r["model"].as_str(), r["vus"].as_u64()), (Some("closed"), Some(3)));
    assert_eq!(r["thresholds"][0]["ok"], false);
    // A missing collection is counted by status, not hidden.
    let (code, r) = bench(&["search", "--server", &s.base, "-c", "missing", "--rate", "10", "--duration", "1s", "--threshold", "errors<50%"]);
    assert_eq!(code, 1, "{r:#}");
    assert!(r["status"]["404"].as_u64().unwrap() >= 9, "{r:#}");
    assert_eq!(r["errors"], 1.0);

    // Ingest: a BEIR-style corpus in batches of 5; every acknowledged document ends up stored.
    let corpus = dir.path().join("corpus.jsonl");
    let lines: Vec<String> = (0..23).map(|i| json!({"_id": format!("c{i}"), "title": "", "text": format!("Corpus passage {i} on tides.")}).to_string()).collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let (code, r) = bench(&["ingest", "--server", &s.base, "-c", "tides", "--corpus", corpus.to_str().unwrap(), "--batch", "5", "--vus", "2", "--duration", "60s"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["ingest"]["documents_acknowledged"], 23, "{r:#}");
    assert_eq!((r["ingest"]["jobs"].as_u64(), r["ingest"]["jobs_failed"].as_u64()), (Some(5), Some(0)), "{r:#}");
    assert_eq!(r["requests"], 5, "{r:#}");
    let (_, c) = s.get("/api/v1/collections/tides").await;
    assert_eq!(c["documents"], 23, "{c}");
}

/// `ragd bench store`: synthetic chunks straight into an embedded store, searched in every mode at
/// each size, optionally after the store's optimizers ran.
#[test]
fn ragd_bench_store_reports_each_size_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ragd"))
        .args(["bench", "store", "--sizes", "300,600", "--queries", "5", "--optimize", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["chunks"].as_u64().unwrap()).collect::<Vec<_>>(), [300, 600]);
    for r in rows {
        assert!(r["optimize_s"].is_number(), "{r}");
        for mode in ["dense", "lexical", "hybrid"] {
            let p50 = r[mode]["p50_ms"].as_f64().unwrap();
            assert!(p50 > 0.0 && p50 <= r[mode]["p99_ms"].as_f64().unwrap(), "{r}");
        }
    }
}
