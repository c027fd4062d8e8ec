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

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
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

    pub async fn search(&self, collection: &str, query: &str, top_k: usize, mode: &str) -> anyhow::Result<Value> {
        let r = self
            .req(reqwest::Method::POST, &format!("/api/v1/collections/{collection}/search"))
            .json(&json!({ "query": query, "top_k": top_k, "mode": mode }));
        Ok(self.send(r).await?.1)
    }
}

/// `ragd search`: ranked passages, one block each.
pub async fn search(server: ServerArgs, collection: &str, query: &str, top_k: usize, mode: &str, raw: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(&server)?;
    let body = client.search(collection, query, top_k, mode).await?;
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
