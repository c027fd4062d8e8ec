//! Snapshots of the embedded data folder: taken while an ingestion job runs, downloaded, restored
//! into a new folder with `ragd snapshot restore`, and served from there.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

fn docs(prefix: &str, n: usize) -> Vec<Value> {
    let topics = ["tidal energy", "glacier retreat", "bee colonies", "sourdough baking", "rail signalling", "coral reefs"];
    (0..n)
        .map(|i| {
            json!({
                "id": format!("{prefix}-{i}"),
                "text": format!("Field note {prefix} {i}: on {}, observation {} concerns site {}.", topics[i % topics.len()], i * 7 % 13, i)
            })
        })
        .collect()
}

async fn wait_ready(s: &Server, name: &str) -> Value {
    let t = Instant::now();
    loop {
        let (st, list) = s.get("/api/v1/snapshots").await;
        assert_eq!(st, 200, "{list}");
        let this = list["snapshots"].as_array().unwrap().iter().find(|x| x["name"] == name).cloned().expect("listed");
        match this["status"].as_str() {
            Some("ready") => return this,
            Some("creating") => {}
            other => panic!("snapshot {name}: {other:?} {this}"),
        }
        assert!(t.elapsed() < Duration::from_secs(300), "snapshot {name} not ready: {this}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The top 10 of both servers agree: the same scores in the same order, and the same documents behind
/// each score. Documents with equal scores may come in any order (the engine breaks ties by where it
/// stores a point, which differs between two servers that wrote in different orders), and a tie group cut
/// by the top 10 may differ in which of its members made it.
async fn same_results(a: &Server, b: &Server, query: &str, mode: &str) {
    let top = |hits: Value| -> Vec<(String, f64)> {
        hits["results"].as_array().unwrap().iter().map(|h| (h["doc_id"].as_str().unwrap().to_owned(), h["score"].as_f64().unwrap())).collect()
    };
    let body = json!({"query": query, "top_k": 10, "mode": mode});
    let (x, y) = (top(a.search("kb", body.clone()).await), top(b.search("kb", body).await));
    let scores = |v: &[(String, f64)]| v.iter().map(|(_, s)| (s * 1e4).round() as i64).collect::<Vec<_>>();
    assert_eq!(scores(&x), scores(&y), "{query} ({mode}): {x:?} vs {y:?}");
    let last = scores(&x).last().copied();
    let above = |v: &[(String, f64)]| {
        let mut ids: Vec<(i64, String)> = v.iter().map(|(id, s)| ((s * 1e4).round() as i64, id.clone())).filter(|(s, _)| Some(*s) != last).collect();
        ids.sort();
        ids
    };
    assert_eq!(above(&x), above(&y), "{query} ({mode}): {x:?} vs {y:?}");
}

#[tokio::test]
async fn a_snapshot_taken_while_ingesting_restores_into_a_new_folder_that_serves_the_same_results() {
    let root = tempfile::tempdir().unwrap();
    let (first, second) = (root.path().join("first"), root.path().join("second"));
    // Small batches: the second job commits many times, and the snapshot lands between two of them.
    let env = [("RAGD_GENERATOR__KIND", "none"), ("RAGD_INGEST__BATCH_DOCUMENTS", "16")];
    let s = Server::start_with(&first, &env);
    s.create("kb").await;
    let (st, b) = s.post("/api/v1/collections/kb/documents?wait=true", json!({ "documents": docs("early", 48) })).await;
    assert_eq!(st, 200, "{b}");
    let (st, job) = s.post("/api/v1/collections/kb/documents", json!({ "documents": docs("late", 480) })).await;
    assert_eq!(st, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    // Snapshot once the job has committed some batches but not all (a batch is 16 documents).
    let t = Instant::now();
    loop {
        let (_, j) = s.get(&format!("/api/v1/jobs/{job_id}")).await;
        if j["progress"]["done"].as_u64().unwrap_or(0) >= 16 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "the job makes no progress: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (st, started) = s.post("/api/v1/snapshots", json!({})).await;
    assert_eq!(st, 202, "{started}");
    assert_eq!(started["status"], "creating");
    let name = started["name"].as_str().unwrap().to_owned();
    let ready = wait_ready(&s, &name).await;
    let in_snapshot = ready["collections"][0]["documents"].as_u64().unwrap();
    assert_eq!(ready["collections"][0]["chunks"].as_u64(), Some(in_snapshot), "one chunk per note: {ready}");
    assert!((48..=528).contains(&in_snapshot), "{ready}");
    eprintln!("snapshot {name}: {in_snapshot} of 528 documents, {} bytes", ready["size_bytes"]);

    // Download it as a client would.
    let resp = s.http.get(s.url(&format!("/api/v1/snapshots/{name}"))).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(Some(bytes.len() as u64), ready["size_bytes"].as_u64());
    let archive = root.path().join("kb.tar");
    std::fs::write(&archive, &bytes).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_ragd")).args(["snapshot", "restore"]).arg(&archive).arg("--data").arg(&second).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "restore failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{in_snapshot} document(s)")), "{stdout}");
    // Never over an existing data folder.
    let again = Command::new(env!("CARGO_BIN_EXE_ragd")).args(["snapshot", "restore"]).arg(&archive).arg("--data").arg(&second).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a ragd data folder"), "{}", String::from_utf8_lossy(&again.stderr));

    // The restored folder serves what the snapshot held at once, and resumes the job the snapshot
    // caught half done, so both servers end with the same documents and rank them the same way.
    let r = Server::start_with(&second, &env);
    let (_, info) = r.get("/api/v1/collections/kb").await;
    assert!(info["documents"].as_u64().unwrap() >= in_snapshot, "{info}");
    assert_eq!(r.wait_job(&job_id).await["status"], "done");
    assert_eq!(s.wait_job(&job_id).await["status"], "done");
    for server in [&s, &r] {
        let (_, info) = server.get("/api/v1/collections/kb").await;
        assert_eq!((info["documents"].as_u64(), info["chunks"].as_u64()), (Some(528), Some(528)), "{info}");
    }
    for query in ["glacier retreat observation", "Field note late 301", "sourdough baking at site 17", "early coral reefs"] {
        for mode in ["dense", "lexical"] {
            same_results(&s, &r, query, mode).await;
        }
    }

    // Removing it.
    let (st, _) = s.delete(&format!("/api/v1/snapshots/{name}")).await;
    assert_eq!(st, 204);
    let (st, b) = s.get(&format!("/api/v1/snapshots/{name}")).await;
    assert_eq!((st, b["error"]["code"].as_str()), (404, Some("snapshot_not_found")));
    let (st, b) = s.get("/api/v1/snapshots/..%2Fcatalog.redb").await;
    assert_eq!(st, 404, "{b}");
}
