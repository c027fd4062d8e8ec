//! A small HTTP client for the commands that talk to a running server (`ingest`, `search`, `eval --server`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::ServerArgs;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Client { http, base: args.server.trim_end_matches('/').to_owned(), api_key: args.api_key.clone() })
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Sends and decodes; an error response becomes `code: message`.
    pub async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = r.send().await.with_context(|| format!("cannot reach the ragd server at {}", self.base))?;
        let status = resp.status().as_u16();
        let body: Value = if status == 204 { Value::Null } else { resp.json().await.unwrap_or(Value::Null) };
        if status >= 400 {
            let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("http_error");
            let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
            bail!("{code} (HTTP {status}): {message}");
        }
        Ok((status, body))
    }

    /// Creates the collection unless it exists.
    pub async fn ensure_collection(&self, name: &str) -> anyhow::Result<()> {
        let (status, _) = match self.send(self.req(reqwest::Method::GET, &format!("/api/v1/collections/{name}"))).await {
            Ok(ok) => ok,
            Err(e) if e.to_string().starts_with("collection_not_found") => (404, Value::Null),
            Err(e) => return Err(e),
        };
        if status == 404 {
            self.send(self.req(reqwest::Method::POST, "/api/v1/collections").json(&json!({ "name": name }))).await?;
        }
        Ok(())
    }

    pub async fn delete_collection(&self, name: &str) -> anyhow::Result<()> {
        self.send(self.req(reqwest::Method::DELETE, &format!("/api/v1/collections/{name}"))).await.map(|_| ())
    }

    pub async fn upload_json(&self, collection: &str, documents: Vec<Value>, key: &str) -> anyhow::Result<Value> {
        let r = self
            .req(reqwest::Method::POST, &format!("/api/v1/collections/{collection}/documents"))
            .header("Idempotency-Key", key)
            .json(&json!({ "documents": documents }));
        Ok(self.send(r).await?.1)
    }

    /// A URL ingest request (`{"url"}`, `{"url", "crawl"}`, `{"sitemap"}`): the server fetches the pages.
    pub async fn upload_url(&self, collection: &str, body: Value) -> anyhow::Result<Value> {
        let r = self.req(reqwest::Method::POST, &format!("/api/v1/collections/{collection}/documents")).json(&body);
        Ok(self.send(r).await?.1)
    }

    pub async fn upload_files(&self, collection: &str, files: Vec<(String, Vec<u8>)>, key: &str) -> anyhow::Result<Value> {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
        }
        let r = self
            .req(reqwest::Method::POST, &format!("/api/v1/collections/{collection}/documents"))
            .header("Idempotency-Key", key)
            .multipart(form);
        Ok(self.send(r).await?.1)
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.req(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"))).await?.1)
    }

    /// `rerank`: `None` leaves it to the collection's setting.
    pub async fn search(&self, collection: &str, query: &str, top_k: usize, mode: &str, rerank: Option<bool>) -> anyhow::Result<Value> {
        let mut body = json!({ "query": query, "top_k": top_k, "mode": mode });
        if let Some(r) = rerank {
            body["rerank"] = json!(r);
        }
        let r = self.req(reqwest::Method::POST, &format!("/api/v1/collections/{collection}/search")).json(&body);
        Ok(self.send(r).await?.1)
    }
}

/// `ragd search`: ranked passages, one block each.
pub async fn search(server: ServerArgs, collection: &str, query: &str, top_k: usize, mode: &str, rerank: Option<bool>, raw: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(&server)?;
    let body = client.search(collection, query, top_k, mode, rerank).await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let results = body["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("no passages match in `{collection}`");
    }
    for (i, r) in results.iter().enumerate() {
        let title = r["title"].as_str().filter(|t| !t.is_empty()).unwrap_or("");
        let doc = r["doc_id"].as_str().unwrap_or("?");
        let text: String = r["text"].as_str().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = text.chars().take(300).collect();
        let ellipsis = if text.chars().count() > 300 { "…" } else { "" };
        println!("{:>2}. [{:.4}] {doc}{}{title}", i + 1, r["score"].as_f64().unwrap_or(0.0), if title.is_empty() { "" } else { " — " });
        println!("    {short}{ellipsis}\n");
    }
    if let Some(d) = body["degraded"].as_array().filter(|d| !d.is_empty()) {
        println!("(degraded: {})", d.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// One server-sent event: its name and its JSON data.
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// Reads a `text/event-stream` response, calling `on_event` for each event until it returns `false`.
pub async fn read_sse(resp: reqwest::Response, mut on_event: impl FnMut(SseEvent) -> anyhow::Result<bool>) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut line = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        for &b in chunk.context("the answer stream broke off")?.iter() {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
            line.clear();
            if text.is_empty() {
                if !data.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                    let name = if event.is_empty() { "message".to_owned() } else { std::mem::take(&mut event) };
                    data.clear();
                    if !on_event(SseEvent { event: name, data: value })? {
                        return Ok(());
                    }
                }
                event.clear();
            } else if let Some(v) = text.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = text.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
    bail!("the answer stream ended before the answer was complete")
}

/// `ragd ask`: streams the answer to the terminal as it is written, then lists its sources.
pub async fn ask(server: ServerArgs, collection: &str, question: &str, top_k: Option<usize>, conversation: Option<String>, raw: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let client = Client::new(&server)?;
    let mut body = json!({ "question": question, "stream": true });
    if let Some(k) = top_k {
        body["top_k"] = json!(k);
    }
    if let Some(c) = conversation {
        body["conversation_id"] = json!(c);
    }
    let resp = client
        .req(reqwest::Method::POST, &format!("/api/v1/collections/{collection}/query"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the ragd server at {}", client.base))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("http_error");
        let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
        bail!("{code} (HTTP {status}): {message}");
    }
    let mut done: Option<Value> = None;
    let mut streamed = String::new();
    let stdout = std::io::stdout();
    read_sse(resp, |e| {
        match e.event.as_str() {
            "token" if !raw => {
                let text = e.data["text"].as_str().unwrap_or("");
                streamed.push_str(text);
                let mut out = stdout.lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            "done" => {
                done = Some(e.data);
                return Ok(false);
            }
            "error" => {
                let code = e.data.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
                let message = e.data.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                bail!("{code}: {message}");
            }
            _ => {}
        }
        Ok(true)
    })
    .await?;
    let done = done.context("no answer")?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(ExitCode::SUCCESS);
    }
    let answer = done["answer"].as_str().unwrap_or("");
    let degraded: Vec<&str> = done["degraded"].as_array().map(|d| d.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    // The final answer is authoritative. It replaces the streamed text when the generator failed
    // midway (an extractive answer was given instead); otherwise the stream already showed it.
    if streamed.trim().is_empty() {
        print!("{answer}");
    } else if degraded.contains(&"generator") && !streamed.trim().ends_with(answer.trim()) {
        print!("\n\n(the generator failed midway; this extractive answer replaces the text above)\n{answer}");
    } else if done["answer_kind"] != "generated" && streamed.trim() != answer.trim() {
        // The server streamed the generated text, then this answer set apart: say which one holds.
        if streamed.trim().ends_with(answer.trim()) {
            print!("\n(the evidence did not support the generated text above; the answer is the one from the evidence after it)");
        } else {
            print!("\n\n(the evidence does not support the text above; this answer from the evidence replaces it)\n{answer}");
        }
    }
    println!();
    let citations = done["citations"].as_array().cloned().unwrap_or_default();
    if !citations.is_empty() {
        println!("\nSources:");
    }
    for c in &citations {
        let title = c["title"].as_str().filter(|t| !t.is_empty());
        let doc = c["doc_id"].as_str().unwrap_or("?");
        let offsets = &c["offsets"];
        let place = match offsets["page"].as_u64() {
            Some(p) => format!("page {p}"),
            None => format!("chars {}–{}", offsets["char_start"], offsets["char_end"]),
        };
        let text: String = c["text"].as_str().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = text.chars().take(160).collect();
        let ellipsis = if text.chars().count() > 160 { "…" } else { "" };
        println!("  [{}] {doc}{} ({place})", c["n"], title.map(|t| format!(" — {t}")).unwrap_or_default());
        println!("      {short}{ellipsis}");
    }
    if let Some(d) = done["degraded"].as_array().filter(|d| !d.is_empty()) {
        let list = d.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ");
        eprintln!("(degraded: {list}{})", if list.contains("generator") { " — the answer is extractive: said from the best evidence of the passages" } else { "" });
    }
    Ok(ExitCode::SUCCESS)
}
