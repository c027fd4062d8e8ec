//! Hostile uploads and slow clients (issue 18): each attack gets a clear 4xx JSON error with a
//! stable code, and the server stays up (same process). Peak memory is printed for the record
//! (`--nocapture`), not asserted: it depends on the build.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Server;

/// A one-page PDF whose page content is one FlateDecode stream of `inflated` bytes of spaces
/// (about a thousandth of that once compressed), with a correct cross-reference table.
fn pdf_bomb(inflated: u64) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let block = vec![b' '; 1 << 20];
    for _ in 0..inflated >> 20 {
        z.write_all(&block).unwrap();
    }
    let data = z.finish().unwrap();
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
    ];
    let mut stream = format!("<< /Length {} /Filter /FlateDecode >>\nstream\n", data.len()).into_bytes();
    stream.extend_from_slice(&data);
    stream.extend_from_slice(b"\nendstream");
    objects.push(stream);
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(o);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes());
    pdf
}

/// A .docx whose document.xml holds `paragraphs` paragraphs of 1,000 characters of text.
fn docx_of(paragraphs: usize) -> Vec<u8> {
    let para = format!("<w:p><w:r><w:t>{}</w:t></w:r></w:p>", "lorem ipsum ".repeat(84)[..1000].to_owned());
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>"#,
    );
    for _ in 0..paragraphs {
        xml.push_str(&para);
    }
    xml.push_str("</w:body></w:document>");
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    w.start_file("word/document.xml", opts).unwrap();
    w.write_all(xml.as_bytes()).unwrap();
    w.finish().unwrap().into_inner()
}

async fn upload_files(s: &Server, collection: &str, files: Vec<(String, Vec<u8>)>) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
    }
    let r = s.http.post(s.url(&format!("/api/v1/collections/{collection}/documents?wait=true"))).multipart(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn code(b: &Value) -> &str {
    b["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_are_refused_with_a_limit_code_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let pid = s.pid();
    s.create("docs").await;
    let idle = s.peak_rss_mib();

    // Nesting that overflowed html2text's recursive renderer and aborted the process.
    let t = Instant::now();
    let (st, b) = s.upload("docs", "lists.html", "<ul><li>".repeat(50_000).into_bytes()).await;
    assert_eq!((st, code(&b)), (422, "document_too_complex"), "{b}");
    let (st, b) = s.upload("docs", "quotes.html", "<blockquote>".repeat(100_000).into_bytes()).await;
    assert_eq!((st, code(&b)), (422, "document_too_complex"), "{b}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(b["error"]["message"].as_str().unwrap().contains("ingest.max_nesting_depth"), "{b}");

    // A 1 MB PDF whose content stream inflates to 1 GiB.
    let pdf = pdf_bomb(1 << 30);
    assert!(pdf.len() < 2 << 20, "{}", pdf.len());
    let (st, b) = s.upload("docs", "bomb.pdf", pdf).await;
    assert_eq!((st, code(&b)), (422, "document_too_large"), "{b}");
    let after_pdf = s.peak_rss_mib();

    // Eight .docx files of 60 MiB of text each (about 200 KB each), in one upload.
    let docx = docx_of(60 * 1024);
    assert!(docx.len() < 1 << 20, "{}", docx.len());
    let files = (0..8).map(|i| (format!("big{i}.docx"), docx.clone())).collect();
    let (st, b) = upload_files(&s, "docs", files).await;
    assert_eq!((st, code(&b)), (422, "document_too_large"), "{b}");
    let after_docx = s.peak_rss_mib();

    // 200,000 tiny documents in one body.
    let docs: Vec<Value> = (0..200_000).map(|i| json!({"text": format!("d{i}")})).collect();
    let (st, b) = s.post("/api/v1/collections/docs/documents", json!({ "documents": docs })).await;
    assert_eq!((st, code(&b)), (422, "too_many_documents"), "{b}");

    // Same process, still serving, and ordinary documents still go in.
    assert!(s.alive());
    assert_eq!(s.pid(), pid);
    assert_eq!(s.get("/health/live").await.0, 200);
    let (st, b) = s.upload("docs", "fine.html", b"<h1>Fine</h1><ul><li>The hangar is in building 7.</li></ul>".to_vec()).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"], "done", "{b}");
    let hits = s.search("docs", json!({"query": "hangar building"})).await;
    assert!(hits["results"][0]["text"].as_str().unwrap().contains("building 7"), "{hits}");
    eprintln!(
        "peak RSS (VmHWM) MiB: idle {idle:?}, after the 1 GiB PDF {after_pdf:?}, after 8 x 60 MiB docx {after_docx:?}, end {:?}",
        s.peak_rss_mib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_totals_and_chunk_counts_are_capped_and_a_failed_job_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(
        dir.path(),
        &[
            ("RAGD_INGEST__MAX_DOCUMENT_INFLATED_BYTES", "4194304"),
            ("RAGD_INGEST__MAX_REQUEST_INFLATED_BYTES", "10485760"),
            ("RAGD_INGEST__MAX_CHUNKS_PER_DOCUMENT", "3"),
            ("RAGD_INGEST__MAX_DOCUMENTS_PER_REQUEST", "5"),
        ],
    );
    s.create("docs").await;
    // Three documents of 3.5 MiB each: each within its own limit, the third past the upload's.
    let docx = docx_of(3500);
    let files = (0..3).map(|i| (format!("part{i}.docx"), docx.clone())).collect();
    let (st, b) = upload_files(&s, "docs", files).await;
    assert_eq!((st, code(&b)), (422, "request_too_large"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("ingest.max_request_inflated_bytes"), "{b}");
    // More files than allowed: refused as they are counted.
    let files = (0..6).map(|i| (format!("n{i}.txt"), b"short".to_vec())).collect();
    let (st, b) = upload_files(&s, "docs", files).await;
    assert_eq!((st, code(&b)), (422, "too_many_documents"), "{b}");

    // A document cut into more than 3 chunks: its job fails with that code, after one attempt.
    let text = (0..40).map(|i| format!("Paragraph {i} talks about the hangar and the runway at length. {}", "More words follow here. ".repeat(20))).collect::<Vec<_>>().join("\n\n");
    let (st, job) = s.post("/api/v1/collections/docs/documents?wait=true", json!({"id": "long", "text": text})).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "too_many_chunks", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    // A restart does not run it again.
    s.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, again) = s.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!((again["status"].as_str(), again["attempts"].as_u64()), (Some("failed"), Some(1)), "{again}");
    assert_eq!(s.get("/api/v1/collections/docs/documents/long").await.0, 404);
}

/// Sends a request's head announcing a body of `len` bytes, and only one byte of it.
async fn slow_body(base: &str, path: &str, len: usize) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut c = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{{");
    c.write_all(head.as_bytes()).await.unwrap();
    c
}

async fn read_all(mut c: TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, c.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_hold_no_query_slot_and_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(
        dir.path(),
        &[
            ("RAGD_LIMITS__MAX_CONCURRENT_QUERIES", "2"),
            ("RAGD_LIMITS__BODY_READ_TIMEOUT_MS", "2000"),
            ("RAGD_LIMITS__HEADER_READ_TIMEOUT_MS", "1000"),
            ("RAGD_LIMITS__MAX_CONNECTIONS", "12"),
        ],
    );
    // No pooled connections: the test counts connections.
    s.http = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
    s.create("docs").await;
    let (st, b) = s.post("/api/v1/collections/docs/documents?wait=true", json!({"text": "The hangar is in building 7."})).await;
    assert_eq!(st, 200, "{b}");

    // Four searches whose bodies trickle in: more than the two query slots.
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(slow_body(&s.base, "/api/v1/collections/docs/search", 100).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another caller's search is served at once: the slow ones hold no slot.
    let t = Instant::now();
    let (st, b) = s.post("/api/v1/collections/docs/search", json!({"query": "hangar"})).await;
    assert_eq!(st, 200, "{b}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The slow ones are answered 408 once the body timeout passes.
    for c in slow {
        let (text, took) = read_all(c, Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout"), "{text}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    // A client that never finishes its headers is disconnected.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (text, took) = read_all(c, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "{took:?} {text}");

    // Twelve idle sockets fill the connection cap: the next request waits for a slot (freed by the
    // header timeout) instead of each socket costing the server a task for ever.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let (st, _) = s.get("/health/live").await;
    assert_eq!(st, 200);
    assert!(t.elapsed() > Duration::from_millis(500) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(idle);

    // Credential parameters are refused under their percent-encoded names too.
    let (st, b) = s.get("/api/v1/collections?access%5Ftoken=abc").await;
    assert_eq!((st, code(&b)), (400, "credentials_in_query"), "{b}");
    assert!(s.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_are_private_scoped_admins_stay_in_scope_and_messages_show_public_names() {
    use std::os::unix::fs::PermissionsExt;

    use reqwest::Method;

    use crate::gateway::{Auth, call, create_key};

    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin", "acme");
    let mode = std::fs::metadata(dir.path().join("keys.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keys.json is {mode:o}");
    let s = Server::start_with(dir.path(), &[("RAGD_AUTH__ENABLED", "true"), ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    let h = &s.http;
    let keys = s.url("/api/v1/keys");
    let (st, _, _) = call(h, Method::POST, &s.url("/api/v1/collections"), &Auth::Bearer(&admin), Some(json!({"name": "docs"}))).await;
    assert_eq!(st, 201);
    let new_key = |body: Value| {
        let (h, keys, admin) = (h.clone(), keys.clone(), admin.clone());
        async move {
            let (st, b, _) = call(&h, Method::POST, &keys, &Auth::Bearer(&admin), Some(body)).await;
            assert_eq!(st, 201, "{b}");
            (b["key"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned())
        }
    };
    let (scoped_admin, scoped_admin_id) = new_key(json!({"role": "admin", "collections": ["docs"]})).await;
    let (_, scoped_read_id) = new_key(json!({"role": "read", "collections": ["docs"]})).await;
    let (_, wide_read_id) = new_key(json!({"role": "read"})).await;

    // The scoped admin sees and revokes only keys within its scope.
    let (st, b, _) = call(h, Method::GET, &keys, &Auth::Bearer(&scoped_admin), None).await;
    assert_eq!(st, 200, "{b}");
    let mut seen: Vec<&str> = b["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    seen.sort();
    let mut expected = vec![scoped_admin_id.as_str(), scoped_read_id.as_str()];
    expected.sort();
    assert_eq!(seen, expected, "{b}");
    let (st, b, _) = call(h, Method::DELETE, &s.url(&format!("/api/v1/keys/{wide_read_id}")), &Auth::Bearer(&scoped_admin), None).await;
    assert_eq!((st, code(&b)), (404, "key_not_found"), "{b}");
    let (st, _, _) = call(h, Method::DELETE, &s.url(&format!("/api/v1/keys/{scoped_read_id}")), &Auth::Bearer(&scoped_admin), None).await;
    assert_eq!(st, 204);

    // Messages name collections as their tenant knows them.
    let (st, b, _) = call(h, Method::GET, &s.url("/api/v1/collections/docs/documents/nope"), &Auth::Bearer(&admin), None).await;
    assert_eq!((st, code(&b)), (404, "document_not_found"), "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("`docs`") && !message.contains("acme."), "{message}");

    // Anyone's readiness says ok/down and nothing more.
    let (st, ready, _) = call(h, Method::GET, &s.url("/health/ready"), &Auth::None, None).await;
    assert_eq!(st, 200, "{ready}");
    for (name, check) in ready["checks"].as_object().unwrap() {
        assert_eq!(check.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["status"], "{name}: {ready}");
    }
    let full: Value = h.get(format!("{}/health/ready", s.admin)).send().await.unwrap().json().await.unwrap();
    assert!(full["checks"]["vector_store"]["breaker"].is_object(), "{full}");
}
