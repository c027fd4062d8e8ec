//! The Model Context Protocol at `/mcp`: its Streamable HTTP transport (JSON-RPC 2.0 in a POST, the
//! answer as one JSON body), so an agent or an AI desktop client can search and ask ragd's
//! collections with no glue code.
//!
//! `/mcp` sits behind the same gateway as `/api/v1` (authentication, the query class's rate limit,
//! metrics by route template), and every tool and resource goes through the same handlers and the
//! same access check (`routes::visible`) as the HTTP routes: another tenant's collection is as absent
//! here as there. What is MCP's own: the version negotiation of `initialize`, sessions
//! (`Mcp-Session-Id`, bound to the caller that opened them), the `Origin` check against DNS
//! rebinding, and JSON-RPC errors for what is not a valid call. docs/mcp.md is the user's page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ragd_core::Error;
use ragd_core::answer::QueryRequest;
use ragd_core::auth::Principal;
use ragd_core::engine::SearchRequest;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, public_message};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::{self, ChunksQuery, ListQuery};

/// Protocol revisions this server speaks, newest first. A client asking for another gets the newest.
const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// Sessions kept at most (the least recently used is dropped first), and how long an idle one lives.
const MAX_SESSIONS: usize = 10_000;
const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// Most resources one `resources/list` page holds.
const RESOURCES_PAGE: usize = 500;

// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// MCP's "resource not found".
const RESOURCE_NOT_FOUND: i64 = -32002;

struct Session {
    /// `Principal::id` of the caller that opened it: a session id is not a credential.
    owner: String,
    last_used: Instant,
}

/// Open sessions, in memory (a client that loses its session initializes again, as the spec says).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn open(&self, owner: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone()) {
                open.remove(&oldest);
            }
        }
        open.insert(id.clone(), Session { owner: owner.to_owned(), last_used: Instant::now() });
        id
    }

    /// Whether `id` is an open session of `owner` (and marks it used).
    fn touch(&self, id: &str, owner: &str) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get_mut(id) {
            Some(s) if s.owner == owner && s.last_used.elapsed() < SESSION_IDLE => {
                s.last_used = Instant::now();
                true
            }
            _ => false,
        }
    }

    fn close(&self, id: &str, owner: &str) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.get(id).is_some_and(|s| s.owner == owner) {
            open.remove(id);
            return true;
        }
        false
    }
}

fn rpc_error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn rpc_result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `Origin`, when a browser sent one, must be on the CORS allow-list: a page on another site must
/// not reach a local ragd through DNS rebinding.
fn origin_allowed(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let allowed = &st.engine.settings().cors.allowed_origins;
    origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a == "*" || a == o))
}

/// `GET /mcp`: this server sends nothing unasked, so it offers no event stream (the spec's 405).
pub async fn get() -> Response {
    let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

/// `DELETE /mcp`: the client ends its session.
pub async fn delete(State(st): State<AppState>, Extension(p): Extension<Principal>, headers: HeaderMap) -> Response {
    match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) if st.mcp.close(id, &p.id) => StatusCode::NO_CONTENT.into_response(),
        Some(_) => StatusCode::NOT_FOUND.into_response(),
        None => json_response(StatusCode::BAD_REQUEST, rpc_error(Value::Null, INVALID_REQUEST, "the Mcp-Session-Id header is missing")),
    }
}

/// `POST /mcp`: one JSON-RPC message.
pub async fn post(State(st): State<AppState>, Extension(p): Extension<Principal>, headers: HeaderMap, body: Bytes) -> Response {
    if !origin_allowed(&st, &headers) {
        return json_response(StatusCode::FORBIDDEN, rpc_error(Value::Null, INVALID_REQUEST, "this Origin is not allowed (cors.allowed_origins)"));
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, rpc_error(Value::Null, PARSE_ERROR, format!("the body is not JSON: {e}"))),
    };
    let Some(obj) = msg.as_object() else {
        // Batches were removed from the protocol in 2025-06-18.
        return json_response(StatusCode::BAD_REQUEST, rpc_error(Value::Null, INVALID_REQUEST, "one JSON-RPC message object per request"));
    };
    let id = obj.get("id").cloned();
    let method = obj.get("method").and_then(Value::as_str);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || (method.is_none() && id.is_none()) {
        return json_response(StatusCode::BAD_REQUEST, rpc_error(id.unwrap_or(Value::Null), INVALID_REQUEST, "not a JSON-RPC 2.0 message"));
    }
    if let Some(v) = headers.get(VERSION_HEADER) {
        if !v.to_str().is_ok_and(|v| VERSIONS.contains(&v)) {
            return json_response(StatusCode::BAD_REQUEST, rpc_error(id.unwrap_or(Value::Null), INVALID_REQUEST, format!("unsupported MCP-Protocol-Version; this server speaks {}", VERSIONS.join(", "))));
        }
    }
    let params = obj.get("params").cloned().unwrap_or(Value::Null);

    if method == Some("initialize") {
        let Some(id) = id else { return json_response(StatusCode::BAD_REQUEST, rpc_error(Value::Null, INVALID_REQUEST, "initialize is a request")) };
        let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
        let version = VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(VERSIONS[0]);
        let session = st.mcp.open(&p.id);
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}, "resources": {"listChanged": false, "subscribe": false}},
            "serverInfo": {"name": "ragd", "title": "ragd", "version": env!("CARGO_PKG_VERSION")},
            "instructions": "ragd searches and answers from document collections. Call list_collections first; search returns passages, \
ask returns a short answer with the passages it cites (or says the documents do not cover it); get_chunks reads around a passage.",
        });
        let mut r = json_response(StatusCode::OK, rpc_result(id, result));
        if let Ok(v) = HeaderValue::from_str(&session) {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        return r;
    }
    // Every other message belongs to a session this caller opened.
    match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        None => return json_response(StatusCode::BAD_REQUEST, rpc_error(id.unwrap_or(Value::Null), INVALID_REQUEST, "the Mcp-Session-Id header is missing: initialize first")),
        Some(s) if !st.mcp.touch(s, &p.id) => {
            return json_response(StatusCode::NOT_FOUND, rpc_error(id.unwrap_or(Value::Null), INVALID_REQUEST, "no such session: initialize again"));
        }
        Some(_) => {}
    }
    let (Some(id), Some(method)) = (id, method) else {
        // A notification (initialized, cancelled, progress) or a response: accepted, nothing to say.
        return StatusCode::ACCEPTED.into_response();
    };
    let out = match method {
        "ping" => rpc_result(id, json!({})),
        "tools/list" => rpc_result(id, json!({"tools": tools()})),
        "tools/call" => {
            let token = params.pointer("/_meta/progressToken").cloned();
            match (params.get("name").and_then(Value::as_str), token) {
                (Some("ask"), Some(token)) => return ask_with_progress(&st, &p, id, &params, token).await,
                _ => call_tool(&st, &p, id, &params).await,
            }
        }
        "resources/list" => list_resources(&st, &p, id, &params).await,
        "resources/templates/list" => rpc_result(
            id,
            json!({"resourceTemplates": [{"uriTemplate": "ragd://{collection}/{document}", "name": "document",
                "description": "A document's extracted text (its id percent-encoded)", "mimeType": "text/plain"}]}),
        ),
        "resources/read" => read_resource(&st, &p, id, &params).await,
        other => rpc_error(id, METHOD_NOT_FOUND, format!("unknown method `{other}`")),
    };
    json_response(StatusCode::OK, out)
}

fn tools() -> Value {
    let collection = json!({"type": "string", "description": "Collection name (see list_collections)"});
    let filter = json!({"type": "object", "description": "Metadata filter, as in POST /api/v1/collections/{name}/search"});
    let hit = json!({"type": "object", "properties": {
        "doc_id": {"type": "string"}, "chunk_index": {"type": "integer"}, "score": {"type": "number"},
        "title": {"type": ["string", "null"]}, "text": {"type": "string"}}});
    json!([
        {
            "name": "list_collections",
            "title": "List collections",
            "description": "The collections this caller can search, with their document and chunk counts.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"collections": {"type": "array", "items": {"type": "object"}}}, "required": ["collections"]},
            "annotations": {"readOnlyHint": true},
        },
        {
            "name": "search",
            "title": "Search a collection",
            "description": "The passages that best match a query (hybrid dense + keyword search by default).",
            "inputSchema": {"type": "object", "properties": {
                "collection": collection, "query": {"type": "string"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
                "mode": {"type": "string", "enum": ["hybrid", "dense", "lexical"]}, "filter": filter},
                "required": ["collection", "query"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"results": {"type": "array", "items": hit}, "degraded": {"type": "array"}}, "required": ["results"]},
            "annotations": {"readOnlyHint": true},
        },
        {
            "name": "ask",
            "title": "Ask a question",
            "description": "A short answer from the collection's documents with the passages it cites, or an answer saying the documents do not cover it.",
            "inputSchema": {"type": "object", "properties": {
                "collection": collection, "question": {"type": "string"},
                "conversation_id": {"type": "string", "description": "Ask follow-ups in one conversation"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 50}, "filter": filter},
                "required": ["collection", "question"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {
                "answer": {"type": "string"}, "answer_kind": {"type": "string", "enum": ["generated", "extractive", "not_found"]},
                "grounded": {"type": "boolean"}, "citations": {"type": "array", "items": {"type": "object"}}, "degraded": {"type": "array"}},
                "required": ["answer", "citations"]},
            "annotations": {"readOnlyHint": true},
        },
        {
            "name": "get_document",
            "title": "Get a document",
            "description": "A document's record: id, title, metadata, number of chunks.",
            "inputSchema": {"type": "object", "properties": {"collection": collection, "document": {"type": "string"}},
                "required": ["collection", "document"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"id": {"type": "string"}, "chunks": {"type": "integer"}}, "required": ["id"]},
            "annotations": {"readOnlyHint": true},
        },
        {
            "name": "get_chunks",
            "title": "Read a document's chunks",
            "description": "A document's chunks in order, to read around a passage a search returned (its chunk_index).",
            "inputSchema": {"type": "object", "properties": {
                "collection": collection, "document": {"type": "string"},
                "from": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1, "maximum": 200}},
                "required": ["collection", "document"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"chunks": {"type": "array", "items": hit}, "total": {"type": "integer"}}, "required": ["chunks", "total"]},
            "annotations": {"readOnlyHint": true},
        },
    ])
}

/// A tool's arguments, checked against the names its schema allows; `Err` is a JSON-RPC
/// invalid-params message.
fn args<'a>(params: &'a Value, allowed: &[&str], required: &[&str]) -> Result<&'a serde_json::Map<String, Value>, String> {
    static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> = std::sync::LazyLock::new(serde_json::Map::new);
    let a = match params.get("arguments") {
        None | Some(Value::Null) => &*EMPTY,
        Some(Value::Object(a)) => a,
        Some(_) => return Err("`arguments` must be an object".into()),
    };
    if let Some(k) = a.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown argument `{k}`"));
    }
    if let Some(r) = required.iter().find(|r| !a.contains_key(**r)) {
        return Err(format!("missing argument `{r}`"));
    }
    Ok(a)
}

fn string_arg(a: &serde_json::Map<String, Value>, k: &str) -> Result<String, String> {
    a.get(k).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("`{k}` must be a string"))
}

fn opt_u32(a: &serde_json::Map<String, Value>, k: &str) -> Result<Option<u32>, String> {
    match a.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| format!("`{k}` must be a non-negative integer")),
    }
}

/// A ragd error as an MCP tool error: the model sees the stable code and the message.
fn tool_error(e: &Error) -> Value {
    let text = format!("{}: {}", e.code(), public_message(e));
    json!({"content": [{"type": "text", "text": text}], "structuredContent": {"error": {"code": e.code(), "message": public_message(e)}}, "isError": true})
}

fn tool_ok(structured: Value, text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false})
}

async fn call_tool(st: &AppState, p: &Principal, id: Value, params: &Value) -> Value {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return rpc_error(id, INVALID_PARAMS, "tools/call needs the tool's `name`");
    };
    let started = Instant::now();
    let out = match name {
        "list_collections" => list_collections(st, p, params).await,
        "search" => search(st, p, params).await,
        "ask" => ask(st, p, params).await,
        "get_document" => get_document(st, p, params).await,
        "get_chunks" => get_chunks(st, p, params).await,
        other => Err(Invalid(format!("unknown tool `{other}`"))),
    };
    tracing::info!(tool = name, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, ok = matches!(out, Ok(Ok(_))), "mcp tool call");
    let outcome = match &out {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "tool_error",
        Err(_) => "invalid",
    };
    st.engine.metrics().count_mcp_tool(tool_label(name), outcome);
    match out {
        Ok(Ok(v)) => rpc_result(id, v),
        Ok(Err(e)) => rpc_result(id, tool_error(&e.0)),
        Err(Invalid(m)) => rpc_error(id, INVALID_PARAMS, m),
    }
}

/// The tools this server offers (`tools()` describes them, `call_tool` runs them).
const TOOLS: [&str; 5] = ["list_collections", "search", "ask", "get_document", "get_chunks"];

/// The metric label of a tool name: one of ours, else `unknown` (a caller cannot grow the series).
fn tool_label(name: &str) -> &'static str {
    TOOLS.iter().find(|t| **t == name).copied().unwrap_or("unknown")
}

/// `ask` for a client that sent a `progressToken`: a `text/event-stream` response carrying progress
/// notifications (passages found, answer being written, done) and then the call's result, as the
/// Streamable HTTP transport allows for any request.
async fn ask_with_progress(st: &AppState, p: &Principal, id: Value, params: &Value, token: Value) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let started = Instant::now();
    let (collection, req) = match ask_request(params) {
        Ok(x) => x,
        Err(Invalid(m)) => {
            st.engine.metrics().count_mcp_tool("ask", "invalid");
            return json_response(StatusCode::OK, rpc_error(id, INVALID_PARAMS, m));
        }
    };
    let rx = match routes::visible(st, p, &collection, ragd_core::auth::Role::Read).await {
        Ok(c) => st.engine.query(&c.name, req).await.map_err(ApiError),
        Err(e) => Err(e),
    };
    let rx = match rx {
        Ok(rx) => rx,
        Err(e) => {
            st.engine.metrics().count_mcp_tool("ask", "tool_error");
            return json_response(StatusCode::OK, rpc_result(id, tool_error(&e.0)));
        }
    };
    let progress = move |n: u32, message: &str| {
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": n, "total": 3, "message": message}})
    };
    let metrics = st.engine.metrics().clone();
    let mut writing = false;
    let events = crate::answers::events(rx).flat_map(move |event| {
        let msgs: Vec<Value> = match event {
            ragd_core::answer::AnswerEvent::Retrieval { citations, .. } => vec![progress(1, &format!("{} passages found", citations.len()))],
            ragd_core::answer::AnswerEvent::Token(_) if !writing => {
                writing = true;
                vec![progress(2, "writing the answer")]
            }
            ragd_core::answer::AnswerEvent::Token(_) => vec![],
            ragd_core::answer::AnswerEvent::Done(r) => {
                metrics.count_mcp_tool("ask", "ok");
                tracing::info!(tool = "ask", elapsed_ms = started.elapsed().as_secs_f64() * 1e3, ok = true, "mcp tool call");
                let text = r.answer.clone();
                vec![progress(3, "done"), rpc_result(id.clone(), tool_ok(serde_json::to_value(&*r).unwrap_or(Value::Null), text))]
            }
            ragd_core::answer::AnswerEvent::Error(e) => {
                metrics.count_mcp_tool("ask", "tool_error");
                vec![rpc_result(id.clone(), tool_error(&e))]
            }
        };
        futures::stream::iter(msgs.into_iter().map(|m| Ok::<Event, std::convert::Infallible>(Event::default().event("message").data(m.to_string()))))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Arguments that do not fit the tool's schema (a JSON-RPC error, not a tool error).
struct Invalid(String);

impl From<String> for Invalid {
    fn from(m: String) -> Self {
        Invalid(m)
    }
}

type ToolResult = Result<Result<Value, ApiError>, Invalid>;

async fn list_collections(st: &AppState, p: &Principal, params: &Value) -> ToolResult {
    args(params, &[], &[])?;
    Ok(routes::list_collections(State(st.clone()), Extension(p.clone())).await.map(|axum::Json(list)| {
        let text = list.collections.iter().map(|c| format!("{} ({} documents)", c.record.name, c.documents)).collect::<Vec<_>>().join("\n");
        let text = if text.is_empty() { "No collections.".to_owned() } else { text };
        tool_ok(serde_json::to_value(&list).unwrap_or(Value::Null), text)
    }))
}

async fn search(st: &AppState, p: &Principal, params: &Value) -> ToolResult {
    let a = args(params, &["collection", "query", "top_k", "mode", "filter"], &["collection", "query"])?;
    let collection = string_arg(a, "collection")?;
    let mut body = a.clone();
    body.remove("collection");
    let req: SearchRequest = serde_json::from_value(Value::Object(body)).map_err(|e| Invalid(format!("search arguments: {e}")))?;
    Ok(routes::search(State(st.clone()), Extension(p.clone()), ApiPath(collection), ApiJson(req)).await.map(|axum::Json(r)| {
        let text = r
            .results
            .iter()
            .enumerate()
            .map(|(i, h)| format!("[{}] {} (chunk {}, score {:.3})\n{}", i + 1, h.doc_id, h.chunk_index, h.score, h.text))
            .collect::<Vec<_>>()
            .join("\n\n");
        tool_ok(serde_json::to_value(&r).unwrap_or(Value::Null), if text.is_empty() { "No passage matches.".into() } else { text })
    }))
}

/// `ask`'s arguments: the collection, and the rest as the query route's body.
fn ask_request(params: &Value) -> Result<(String, QueryRequest), Invalid> {
    let a = args(params, &["collection", "question", "conversation_id", "top_k", "filter"], &["collection", "question"])?;
    let collection = string_arg(a, "collection")?;
    let mut body = a.clone();
    body.remove("collection");
    let req: QueryRequest = serde_json::from_value(Value::Object(body)).map_err(|e| Invalid(format!("ask arguments: {e}")))?;
    Ok((collection, req))
}

async fn ask(st: &AppState, p: &Principal, params: &Value) -> ToolResult {
    let (collection, req) = ask_request(params)?;
    Ok(crate::answers::answer(st, p, &collection, req).await.map(|r| {
        let sources = r
            .citations
            .iter()
            .map(|c| format!("[{}] {}{}", c.n, c.doc_id, if c.closest { " (closest passage, not an answer)" } else { "" }))
            .collect::<Vec<_>>()
            .join("\n");
        let text = if sources.is_empty() { r.answer.clone() } else { format!("{}\n\nSources:\n{sources}", r.answer) };
        tool_ok(serde_json::to_value(&r).unwrap_or(Value::Null), text)
    }))
}

async fn get_document(st: &AppState, p: &Principal, params: &Value) -> ToolResult {
    let a = args(params, &["collection", "document"], &["collection", "document"])?;
    let (collection, document) = (string_arg(a, "collection")?, string_arg(a, "document")?);
    Ok(routes::get_document(State(st.clone()), Extension(p.clone()), ApiPath((collection, document))).await.map(|axum::Json(d)| {
        let v = serde_json::to_value(&d).unwrap_or(Value::Null);
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        tool_ok(v, text)
    }))
}

async fn get_chunks(st: &AppState, p: &Principal, params: &Value) -> ToolResult {
    let a = args(params, &["collection", "document", "from", "limit"], &["collection", "document"])?;
    let (collection, document) = (string_arg(a, "collection")?, string_arg(a, "document")?);
    let q = ChunksQuery { from: opt_u32(a, "from")?, limit: opt_u32(a, "limit")? };
    Ok(routes::document_chunks(State(st.clone()), Extension(p.clone()), ApiPath((collection, document)), ApiQuery(q)).await.map(|axum::Json(list)| {
        let text = list.chunks.iter().map(|c| format!("--- chunk {} ---\n{}", c.chunk_index, c.text)).collect::<Vec<_>>().join("\n");
        tool_ok(serde_json::to_value(&list).unwrap_or(Value::Null), text)
    }))
}

fn resource_uri(collection: &str, document: &str) -> String {
    format!("ragd://{collection}/{}", percent_encode(document))
}

/// A document id in a resource URI: everything but unreserved characters escaped (`/` too).
const IN_URI: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, IN_URI).to_string()
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

/// Every document of every collection the caller can read, `RESOURCES_PAGE` at a time; the cursor
/// is the collection and the last document id of the previous page.
async fn list_resources(st: &AppState, p: &Principal, id: Value, params: &Value) -> Value {
    let cursor: Option<(String, String)> = params
        .get("cursor")
        .and_then(Value::as_str)
        .and_then(|c| c.split_once('/'))
        .and_then(|(c, d)| Some((c.to_owned(), percent_decode(d)?)));
    let collections = match routes::list_collections(State(st.clone()), Extension(p.clone())).await {
        Ok(axum::Json(l)) => l.collections,
        Err(e) => return rpc_result(id, json!({"resources": [], "_meta": {"error": e.0.code()}})),
    };
    let mut resources: Vec<Value> = Vec::new();
    let mut next: Option<String> = None;
    let start = cursor.as_ref().and_then(|(c, _)| collections.iter().position(|x| &x.record.name == c)).unwrap_or(0);
    'outer: for c in &collections[start..] {
        let mut after = cursor.as_ref().filter(|(cc, _)| cc == &c.record.name).map(|(_, d)| d.clone());
        loop {
            let q = ListQuery { cursor: after.clone(), limit: Some(RESOURCES_PAGE.min(1000)) };
            let Ok(axum::Json(page)) = routes::list_documents(State(st.clone()), Extension(p.clone()), ApiPath(c.record.name.clone()), ApiQuery(q)).await else {
                break;
            };
            for d in &page.documents {
                if resources.len() == RESOURCES_PAGE {
                    next = after.as_ref().map(|a| format!("{}/{}", c.record.name, percent_encode(a)));
                    break 'outer;
                }
                resources.push(json!({
                    "uri": resource_uri(&c.record.name, &d.id),
                    "name": d.id,
                    "title": d.title,
                    "mimeType": "text/plain",
                    "description": format!("{} in collection {}", d.title.as_deref().unwrap_or(&d.id), c.record.name),
                }));
                after = Some(d.id.clone());
            }
            if page.next_cursor.is_none() {
                break;
            }
        }
    }
    let mut result = json!({"resources": resources});
    if let Some(n) = next {
        result["nextCursor"] = json!(n);
    }
    rpc_result(id, result)
}

/// A document's text: its chunks in order (at most `MAX_READ_CHUNKS`).
async fn read_resource(st: &AppState, p: &Principal, id: Value, params: &Value) -> Value {
    const MAX_READ_CHUNKS: u32 = 2_000;
    let Some(uri) = params.get("uri").and_then(Value::as_str) else { return rpc_error(id, INVALID_PARAMS, "resources/read needs a `uri`") };
    let Some((collection, document)) = uri.strip_prefix("ragd://").and_then(|r| r.split_once('/')).and_then(|(c, d)| Some((c.to_owned(), percent_decode(d)?)))
    else {
        return rpc_error(id, INVALID_PARAMS, format!("`{uri}` is not a ragd://{{collection}}/{{document}} URI"));
    };
    let mut text = String::new();
    let mut from = 0u32;
    loop {
        let q = ChunksQuery { from: Some(from), limit: Some(200) };
        match routes::document_chunks(State(st.clone()), Extension(p.clone()), ApiPath((collection.clone(), document.clone())), ApiQuery(q)).await {
            Ok(axum::Json(list)) => {
                for c in &list.chunks {
                    // Chunks overlap; their offsets say where each starts in the document's text.
                    let skip = text.chars().count().saturating_sub(c.offsets.char_start);
                    text.extend(c.text.chars().skip(skip));
                }
                from += list.chunks.len() as u32;
                if list.chunks.is_empty() || from >= list.total || from >= MAX_READ_CHUNKS {
                    break;
                }
            }
            Err(e) if from == 0 => {
                return match e.0 {
                    Error::NotFound { .. } => rpc_error(id, RESOURCE_NOT_FOUND, format!("no resource `{uri}`")),
                    other => rpc_error(id, INVALID_PARAMS, format!("{}: {}", other.code(), public_message(&other))),
                };
            }
            Err(_) => break,
        }
    }
    rpc_result(id, json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}))
}
