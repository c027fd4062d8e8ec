//! The `/api/v1` routes, success and error paths, against a real server.

use serde_json::{Value, json};

use crate::support::{Server, fixture};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn collections_lifecycle_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());

    let (st, body) = s.get("/health/live").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
    let (st, body) = s.get("/health/ready").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["checks"]["vector_store"]["status"], "ok");

    let (st, body) = s.post("/api/v1/collections", json!({"name": "kb"})).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["dimensions"], 384);
    let (st, body) = s.post("/api/v1/collections", json!({"name": "kb"})).await;
    assert_eq!((st, code(&body)), (409, "collection_exists"));
    let (st, body) = s.post("/api/v1/collections", json!({"name": "../etc"})).await;
    assert_eq!((st, code(&body)), (400, "invalid_collection_name"));
    let (st, body) = s.post_raw("/api/v1/collections", "application/json", b"{\"name\": ".to_vec()).await;
    assert_eq!((st, code(&body)), (400, "invalid_json"));
    let (st, body) = s.post("/api/v1/collections", json!({"name": "x", "colour": "red"})).await;
    assert_eq!((st, code(&body)), (400, "invalid_request"));
    let (st, body) = s.post_raw("/api/v1/collections", "text/plain", b"name=x".to_vec()).await;
    assert_eq!((st, code(&body)), (415, "unsupported_media_type"));

    let (st, body) = s.get("/api/v1/collections").await;
    assert_eq!(st, 200);
    assert_eq!(body["collections"].as_array().unwrap().len(), 1);
    let (st, body) = s.get("/api/v1/collections/nope").await;
    assert_eq!((st, code(&body)), (404, "collection_not_found"));
    let (st, body) = s.post("/api/v1/collections/nope/search", json!({"query": "x"})).await;
    assert_eq!((st, code(&body)), (404, "collection_not_found"));
    let (st, body) = s.get("/api/v1/jobs/no-such-job").await;
    assert_eq!((st, code(&body)), (404, "job_not_found"));
    let (st, body) = s.get("/api/v1/nowhere").await;
    assert_eq!((st, code(&body)), (404, "route_not_found"));

    let (st, _) = s.delete("/api/v1/collections/kb").await;
    assert_eq!(st, 204);
    let (st, body) = s.get("/api/v1/collections/kb").await;
    assert_eq!((st, code(&body)), (404, "collection_not_found"));
    let (st, body) = s.delete("/api/v1/collections/kb").await;
    assert_eq!((st, code(&body)), (404, "collection_not_found"));

    let (st, body) = s.get("/api/v1/openapi.json").await;
    assert_eq!(st, 200);
    assert!(body["openapi"].as_str().unwrap_or("").starts_with("3."), "{body}");
    for path in ["/api/v1/collections", "/api/v1/collections/{name}/documents", "/api/v1/collections/{name}/search", "/api/v1/jobs/{id}"] {
        assert!(body["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

#[tokio::test]
async fn json_documents_search_dedup_replace_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.create("kb").await;
    let docs = json!({"documents": [
        {"id": "thermo", "title": "Fahrenheit", "text": "Daniel Gabriel Fahrenheit invented the mercury thermometer in 1714.", "metadata": {"topic": "science"}},
        {"id": "paris", "text": "Paris is the capital and largest city of France.", "metadata": {"topic": "geography"}},
        {"id": "rust", "text": "Rust is a systems programming language focused on safety and speed.", "metadata": {"topic": "computing"}}
    ]});
    let (st, job) = s.post("/api/v1/collections/kb/documents?wait=true", docs.clone()).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["status"], "done");
    assert!(job["documents"].as_array().unwrap().iter().all(|d| d["status"] == "ingested"), "{job}");

    // Dense finds meaning, lexical finds words, hybrid both; filters restrict.
    let dense = s.search("kb", json!({"query": "who created the thermometer?", "mode": "dense", "top_k": 1})).await;
    assert_eq!(dense["results"][0]["doc_id"], "thermo", "{dense}");
    assert_eq!(dense["results"][0]["title"], "Fahrenheit");
    assert_eq!(dense["results"][0]["offsets"]["char_start"], 0);
    let lexical = s.search("kb", json!({"query": "France", "mode": "lexical"})).await;
    assert_eq!(lexical["results"].as_array().unwrap().len(), 1, "{lexical}");
    assert_eq!(lexical["results"][0]["doc_id"], "paris");
    let hybrid = s.search("kb", json!({"query": "programming language safety"})).await;
    assert_eq!(hybrid["results"][0]["doc_id"], "rust", "{hybrid}");
    assert_eq!(hybrid["degraded"], json!([]));
    let filtered = s.search("kb", json!({"query": "thermometer", "filter": {"metadata": {"topic": "geography"}}})).await;
    let ids: Vec<&str> = filtered["results"].as_array().unwrap().iter().map(|r| r["doc_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["paris"], "{filtered}");

    // Bad search input.
    let (st, b) = s.post("/api/v1/collections/kb/search", json!({"query": "  "})).await;
    assert_eq!((st, code(&b)), (400, "invalid_query"));
    let (st, b) = s.post("/api/v1/collections/kb/search", json!({"query": "x", "top_k": 100000})).await;
    assert_eq!((st, code(&b)), (400, "invalid_top_k"));
    let (st, b) = s.post("/api/v1/collections/kb/search", json!({"query": "x", "mode": "psychic"})).await;
    assert_eq!((st, code(&b)), (400, "invalid_request"));
    let (st, b) = s.post("/api/v1/collections/kb/search", json!({"query": "x", "filter": {"metadata": {"a.b": "c"}}})).await;
    assert_eq!((st, code(&b)), (400, "invalid_filter"));

    // The same documents again: nothing changes.
    let (st, job) = s.post("/api/v1/collections/kb/documents?wait=true", docs).await;
    assert_eq!(st, 200);
    assert!(job["documents"].as_array().unwrap().iter().all(|d| d["status"] == "unchanged"), "{job}");
    let (_, info) = s.get("/api/v1/collections/kb").await;
    assert_eq!((info["documents"].as_u64(), info["chunks"].as_u64()), (Some(3), Some(3)), "{info}");

    // New content under the same id replaces the old chunks.
    let long: String = (0..120).map(|i| format!("Paragraph {i} talks about orbital mechanics and rockets. ")).collect();
    let (_, job) = s.post("/api/v1/collections/kb/documents?wait=true", json!({"id": "paris", "text": long})).await;
    let n = job["documents"][0]["chunks"].as_u64().unwrap();
    assert!(n > 1, "a long text makes several chunks: {job}");
    let (_, doc) = s.get("/api/v1/collections/kb/documents/paris").await;
    assert_eq!(doc["indexed_chunks"].as_u64(), Some(n), "{doc}");
    let (_, job) = s.post("/api/v1/collections/kb/documents?wait=true", json!({"id": "paris", "text": "Lyon is a city in France."})).await;
    assert_eq!(job["documents"][0]["chunks"], 1);
    let (_, doc) = s.get("/api/v1/collections/kb/documents/paris").await;
    assert_eq!(doc["indexed_chunks"], 1, "the old tail is gone: {doc}");
    let orbital = s.search("kb", json!({"query": "orbital mechanics rockets", "mode": "lexical"})).await;
    assert_eq!(orbital["results"], json!([]), "{orbital}");

    // Paging through documents.
    let (_, page1) = s.get("/api/v1/collections/kb/documents?limit=2").await;
    assert_eq!(page1["documents"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().expect("a next page").to_owned();
    let (_, page2) = s.get(&format!("/api/v1/collections/kb/documents?limit=2&cursor={cursor}")).await;
    assert_eq!(page2["documents"].as_array().unwrap().len(), 1);
    assert_eq!(page2["next_cursor"], Value::Null);

    // Delete removes every chunk from every search.
    let (st, _) = s.delete("/api/v1/collections/kb/documents/thermo").await;
    assert_eq!(st, 204);
    for mode in ["dense", "lexical", "hybrid"] {
        let r = s.search("kb", json!({"query": "Fahrenheit thermometer", "mode": mode, "top_k": 10})).await;
        assert!(r["results"].as_array().unwrap().iter().all(|h| h["doc_id"] != "thermo"), "{mode}: {r}");
    }
    let (st, b) = s.get("/api/v1/collections/kb/documents/thermo").await;
    assert_eq!((st, code(&b)), (404, "document_not_found"));
    let (st, b) = s.delete("/api/v1/collections/kb/documents/thermo").await;
    assert_eq!((st, code(&b)), (404, "document_not_found"));
    let (_, info) = s.get("/api/v1/collections/kb").await;
    assert_eq!(info["documents"], 2, "{info}");

    // Bad document input.
    let (st, b) = s.post("/api/v1/collections/kb/documents", json!({"documents": []})).await;
    assert_eq!((st, code(&b)), (400, "empty_request"));
    let (st, b) = s.post("/api/v1/collections/kb/documents", json!({"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]})).await;
    assert_eq!((st, code(&b)), (400, "duplicate_document_id"));
    let (st, b) = s.post("/api/v1/collections/kb/documents", json!({"text": 42})).await;
    assert_eq!((st, code(&b)), (400, "invalid_request"));
    let (st, b) = s.post("/api/v1/collections/kb/documents", json!({"text": "   "})).await;
    assert_eq!((st, code(&b)), (422, "unparseable_document"));
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.create("kb").await;
    let post = |body: Value| {
        s.http.post(s.url("/api/v1/collections/kb/documents")).header("Idempotency-Key", "k-1").json(&body).send()
    };
    let a = post(json!({"id": "d", "text": "first"})).await.unwrap();
    assert_eq!(a.status(), 202);
    let a: Value = a.json().await.unwrap();
    let b: Value = post(json!({"id": "d", "text": "first"})).await.unwrap().json().await.unwrap();
    assert_eq!(a["job_id"], b["job_id"], "a replay returns the first job");
    let c = post(json!({"id": "d", "text": "second"})).await.unwrap();
    assert_eq!(c.status(), 409);
    let c: Value = c.json().await.unwrap();
    assert_eq!(code(&c), "idempotency_key_reused");
}

#[tokio::test]
async fn files_are_parsed_and_bad_files_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[("RAGD_INGEST__MAX_UPLOAD_BYTES", "200000")]);
    // Small chunks, so each markdown section gets its own chunk and heading path.
    let (st, b) = s.post("/api/v1/collections", json!({"name": "files", "chunking": {"max_tokens": 16, "overlap_tokens": 0}})).await;
    assert_eq!(st, 201, "{b}");

    let md = b"# Install\n\nSome intro.\n\n## Linux\n\nRun the installer with apt on Debian.\n".to_vec();
    let (st, job) = s.upload("files", "guide.md", md).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["documents"][0]["id"], "guide.md");
    let r = s.search("files", json!({"query": "apt installer Debian", "mode": "lexical", "top_k": 1})).await;
    assert_eq!(r["results"][0]["heading_path"], json!(["Install", "Linux"]), "{r}");

    for name in ["two_pages.pdf", "sample.docx", "sample.html"] {
        let (st, job) = s.upload("files", name, fixture(name)).await;
        assert_eq!(st, 200, "{name}: {job}");
        assert_eq!(job["status"], "done", "{name}: {job}");
        assert!(job["documents"][0]["chunks"].as_u64().unwrap() >= 1, "{name}: {job}");
    }
    let r = s.search("files", json!({"query": "quarterly report", "filter": {"doc_id": "two_pages.pdf"}, "top_k": 10})).await;
    let pages: Vec<u64> = r["results"].as_array().unwrap().iter().filter_map(|h| h["offsets"]["page"].as_u64()).collect();
    assert!(!pages.is_empty() && pages.iter().all(|p| *p >= 1), "pdf chunks carry pages: {r}");

    let (st, b) = s.upload("files", "corrupt.pdf", fixture("corrupt.pdf")).await;
    assert_eq!((st, code(&b)), (422, "unparseable_document"), "{b}");
    let (st, b) = s.upload("files", "encrypted.pdf", fixture("encrypted.pdf")).await;
    assert_eq!((st, code(&b)), (422, "unparseable_document"), "{b}");
    let (st, b) = s.upload("files", "picture.gif", b"GIF89a\x01\0\x01\0\0\0\0\xff\xfe".to_vec()).await;
    assert_eq!((st, code(&b)), (415, "unsupported_media_type"), "{b}");
    // A declared picture that is none is a broken file, not an unknown type.
    let (st, b) = s.upload("files", "picture.png", vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3, 255, 254]).await;
    assert_eq!((st, code(&b)), (422, "unparseable_document"), "{b}");

    // An announced oversized body is refused before it is read.
    let big = vec![b'a'; 300_000];
    let (st, b) = s.upload("files", "big.txt", big).await;
    assert_eq!((st, code(&b)), (413, "payload_too_large"), "{b}");
    let (_, info) = s.get("/api/v1/collections/files").await;
    assert_eq!(info["documents"], 4, "refused files left nothing behind: {info}");
}

/// Issue 5: vector-store searches go through the outbound stack (its failure behaviour — breaker
/// opening, calls refused at once, hung calls cut at the timeout — is unit-tested on `Outbound` in
/// ragd-core with a fault-injecting dependency): each search is a call in the `vector_store`
/// breaker's window, shown by readiness and `/api/v1/status`.
#[tokio::test]
async fn vector_store_searches_go_through_their_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    s.create("kb").await;
    let (st, b) = s.post("/api/v1/collections/kb/documents?wait=true", json!({"text": "Tides follow the moon."})).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("done")), "{b}");
    for mode in ["lexical", "dense", "hybrid"] {
        let r = s.search("kb", json!({"query": "tides", "mode": mode})).await;
        assert_eq!(r["results"][0]["text"], "Tides follow the moon.", "{r}");
    }
    let (_, status) = s.get("/api/v1/status").await;
    let breaker = &status["breakers"]["vector_store"];
    assert_eq!((breaker["state"].as_str(), breaker["calls_in_window"].as_u64()), (Some("closed"), Some(3)), "{status}");
    let ready: Value = s.http.get(format!("{}/health/ready", s.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["vector_store"]["breaker"]["calls_in_window"], 3, "{ready}");
}
