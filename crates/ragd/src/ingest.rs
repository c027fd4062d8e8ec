//! `ragd ingest`: walks files and folders, uploads what the server can parse in batches, has the
//! server fetch http(s) URLs (a page, a crawl, a sitemap), follows the jobs to the end with a
//! progress bar, and summarises what was ingested, unchanged, skipped, failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::ServerArgs;
use crate::client::Client;

/// File extensions the server parses; `.jsonl` is read here, one JSON document per line.
const SUPPORTED: &[&str] = &[
    "txt", "text", "md", "markdown", "html", "htm", "pdf", "docx", "pptx", "xlsx", "xlsm", "odt", "ods", "epub", "eml", "csv", "tsv",
    "json", "png", "jpg", "jpeg", "tif", "tiff",
];

#[derive(Args)]
pub struct IngestArgs {
    /// Files and folders (folders are walked recursively; hidden entries are skipped), and http(s)
    /// URLs, which the server fetches (within its `fetch.*` settings; private addresses are refused).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(long, short)]
    collection: String,
    /// Files per upload request.
    #[arg(long, default_value_t = 16)]
    batch_files: usize,
    /// JSON documents (from .jsonl files) per upload request.
    #[arg(long, default_value_t = 250)]
    batch_documents: usize,
    /// Print a line per acknowledged upload (job id and document count).
    #[arg(long, short)]
    verbose: bool,
    /// URLs: crawl from each, following links breadth first, up to this many pages per URL (on the
    /// URL's host unless `--any-host`).
    #[arg(long, value_name = "PAGES")]
    crawl: Option<usize>,
    /// With `--crawl`: follow links to other hosts too.
    #[arg(long, requires = "crawl")]
    any_host: bool,
    /// URLs are sitemaps: ingest the pages they list (up to `--crawl` pages, or the server's `fetch.max_pages`).
    #[arg(long)]
    sitemap: bool,
    #[command(flatten)]
    server: ServerArgs,
}

enum Upload {
    Files(Vec<(String, Vec<u8>)>),
    Json(Vec<Value>),
    /// A URL ingest request's body (`{"url"}`, `{"url", "crawl"}` or `{"sitemap"}`), named by its URL.
    Url(String, Value),
}

/// An argument that names a URL rather than a file.
fn is_url(arg: &Path) -> bool {
    arg.to_str().is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

fn url_request(url: &str, args: &IngestArgs) -> Value {
    match (args.sitemap, args.crawl) {
        (true, Some(n)) => json!({ "sitemap": url, "max_pages": n }),
        (true, None) => json!({ "sitemap": url }),
        (false, Some(n)) => json!({ "url": url, "crawl": { "max_pages": n, "same_host": !args.any_host } }),
        (false, None) => json!({ "url": url }),
    }
}

pub async fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    client.ensure_collection(&args.collection).await?;

    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    // URLs are fetched by the server, one request each (a crawl or a sitemap makes many documents).
    let mut uploads = Vec::new();
    for root in &args.paths {
        if is_url(root) {
            let url = root.to_string_lossy().into_owned();
            uploads.push(Upload::Url(url.clone(), url_request(&url, &args)));
            continue;
        }
        collect(root, root, &mut files, &mut skipped).with_context(|| format!("reading {}", root.display()))?;
    }

    // Build the uploads: files in groups, .jsonl lines as JSON documents.
    let mut group = Vec::new();
    for (id, path) in files {
        if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("jsonl")) {
            let docs = read_jsonl(&path, &mut skipped)?;
            for chunk in docs.chunks(args.batch_documents.max(1)) {
                uploads.push(Upload::Json(chunk.to_vec()));
            }
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        group.push((id, bytes));
        if group.len() >= args.batch_files.max(1) {
            uploads.push(Upload::Files(std::mem::take(&mut group)));
        }
    }
    if !group.is_empty() {
        uploads.push(Upload::Files(group));
    }
    let total: usize = uploads.iter().map(|u| match u { Upload::Files(f) => f.len(), Upload::Json(d) => d.len(), Upload::Url(..) => 1 }).sum();

    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:10} [{bar:40}] {pos}/{len} documents ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let mut jobs = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for upload in uploads {
        let (result, names) = match upload {
            Upload::Files(files) => {
                let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
                let key = batch_key(files.iter().map(|(n, b)| (n.as_bytes(), b.as_slice())));
                let result = client.upload_files(&args.collection, files.clone(), &key).await;
                // One bad file must not sink its batch: retry the batch one file at a time.
                if result.as_ref().is_err_and(|e| is_document_error(e)) && files.len() > 1 {
                    for (name, bytes) in files {
                        let key = batch_key([(name.as_bytes(), bytes.as_slice())]);
                        match client.upload_files(&args.collection, vec![(name.clone(), bytes)], &key).await {
                            Ok(v) => acknowledge(&bar, &mut jobs, v, args.verbose),
                            Err(e) if is_document_error(&e) => {
                                failed.push((name, e.to_string()));
                                bar.inc(1);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    continue;
                }
                (result, names)
            }
            Upload::Json(docs) => {
                let names: Vec<String> = docs.iter().map(|d| d["id"].as_str().unwrap_or("?").to_owned()).collect();
                let body = serde_json::to_vec(&docs)?;
                let key = batch_key([(b"jsonl".as_slice(), body.as_slice())]);
                (client.upload_json(&args.collection, docs, &key).await, names)
            }
            Upload::Url(url, body) => {
                // No idempotency key: running the command again fetches the pages again.
                match client.upload_url(&args.collection, body).await {
                    Ok(v) => {
                        // A crawl or a sitemap counted as one document until the server said how many.
                        let n = v["documents"].as_array().map_or(1, Vec::len) as u64;
                        bar.inc_length(n.saturating_sub(1));
                        acknowledge(&bar, &mut jobs, v, args.verbose);
                    }
                    // A page that cannot be fetched (or is refused) is that URL's failure, not the run's.
                    Err(e) if is_document_error(&e) || is_fetch_error(&e) => {
                        failed.push((url, e.to_string()));
                        bar.inc(1);
                    }
                    Err(e) => {
                        bar.abandon();
                        return Err(e);
                    }
                }
                continue;
            }
        };
        match result {
            Ok(v) => acknowledge(&bar, &mut jobs, v, args.verbose),
            Err(e) if is_document_error(&e) => {
                for n in names {
                    failed.push((n, e.to_string()));
                }
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
    }

    // Follow the jobs to their end.
    bar.set_message("indexing");
    bar.set_position(0);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut done_docs = 0u64;
    for job_id in &jobs {
        loop {
            let job = client.job(job_id).await?;
            let status = job["status"].as_str().unwrap_or("");
            if status == "done" || status == "failed" {
                for d in job["documents"].as_array().into_iter().flatten() {
                    let s = d["status"].as_str().unwrap_or("?").to_owned();
                    if s == "failed" {
                        let why = d["error"].as_str().or(job.pointer("/error/message").and_then(Value::as_str)).unwrap_or("failed");
                        failed.push((d["id"].as_str().unwrap_or("?").to_owned(), why.to_owned()));
                    } else {
                        *outcomes.entry(s).or_default() += 1;
                    }
                }
                done_docs += job["progress"]["total"].as_u64().unwrap_or(0);
                bar.set_position(done_docs);
                break;
            }
            bar.set_position(done_docs + job["progress"]["done"].as_u64().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    bar.finish_and_clear();

    println!(
        "{} ingested, {} unchanged, {} skipped, {} failed (collection `{}`)",
        outcomes.get("ingested").copied().unwrap_or(0),
        outcomes.get("unchanged").copied().unwrap_or(0),
        skipped.len(),
        failed.len(),
        args.collection
    );
    for (path, why) in &skipped {
        println!("  skipped {path}: {why}");
    }
    for (id, why) in &failed {
        println!("  failed  {id}: {why}");
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn acknowledge(bar: &ProgressBar, jobs: &mut Vec<String>, accepted: Value, verbose: bool) {
    let id = accepted["job_id"].as_str().unwrap_or_default().to_owned();
    let n = accepted["documents"].as_array().map(Vec::len).unwrap_or(0);
    if verbose {
        // suspend, not println: a hidden bar (stderr not a terminal) would swallow the line.
        bar.suspend(|| eprintln!("acknowledged job {id} ({n} documents)"));
    }
    bar.inc(n as u64);
    jobs.push(id);
}

/// Errors about the documents themselves (the rest of the run can go on) as opposed to the server being gone.
fn is_document_error(e: &anyhow::Error) -> bool {
    let s = e.to_string();
    ["(HTTP 413)", "(HTTP 415)", "(HTTP 422)", "(HTTP 400)"].iter().any(|c| s.contains(c))
}

/// A URL the server could not or would not fetch (turned off, remote failure, remote timeout).
fn is_fetch_error(e: &anyhow::Error) -> bool {
    let s = e.to_string();
    ["(HTTP 403)", "(HTTP 502)", "(HTTP 504)"].iter().any(|c| s.contains(c))
}

fn batch_key<'a>(parts: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> String {
    let mut flat: Vec<&[u8]> = Vec::new();
    for (a, b) in parts {
        flat.push(a);
        flat.push(b);
    }
    format!("ingest-{}", &ragd_core::ids::content_hash(&flat)[..32])
}

/// Lists supported files under `path`, with ids relative to the root they were found under.
fn collect(root: &Path, path: &Path, out: &mut Vec<(String, PathBuf)>, skipped: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            collect(root, &e.path(), out, skipped)?;
        }
        return Ok(());
    }
    let id = if root == path {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        let base = root.file_name().map(PathBuf::from).unwrap_or_default();
        base.join(path.strip_prefix(root).unwrap_or(path)).to_string_lossy().into_owned()
    };
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    if ext == "jsonl" || SUPPORTED.contains(&ext.as_str()) {
        out.push((id, path.to_owned()));
    } else {
        let why = if ext.is_empty() { "no file extension".to_owned() } else { format!("unsupported type .{ext}") };
        skipped.push((id, why));
    }
    Ok(())
}

/// Reads BEIR-style or ragd-style JSON lines: `_id`/`id`, `title`, `text`, `metadata`.
fn read_jsonl(path: &Path, skipped: &mut Vec<(String, String)>) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("{}:{}", path.display(), n + 1);
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            skipped.push((where_, "not valid JSON".into()));
            continue;
        };
        let id = v.get("_id").or_else(|| v.get("id")).and_then(|i| i.as_str().map(str::to_owned).or_else(|| i.as_i64().map(|n| n.to_string())));
        let Some(text) = v.get("text").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) else {
            skipped.push((where_, "no `text`".into()));
            continue;
        };
        let mut doc = json!({ "text": text });
        if let Some(id) = id {
            doc["id"] = json!(id);
        }
        if let Some(t) = v.get("title").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            doc["title"] = json!(t);
        }
        if let Some(m) = v.get("metadata").filter(|m| m.as_object().is_some_and(|o| !o.is_empty())) {
            doc["metadata"] = m.clone();
        }
        docs.push(doc);
    }
    Ok(docs)
}
