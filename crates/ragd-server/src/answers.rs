//! Answers over HTTP: `POST /api/v1/collections/{name}/query` (JSON or server-sent events) and the
//! OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`, where the model is
//! `ragd:<collection>`.
//!
//! A streamed answer ends when the client goes away: the event stream is dropped, which drops the
//! engine's receiver, which stops generation at the next token.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use ragd_core::Error;
use ragd_core::answer::{AnswerEvent, Citation, QueryRequest, QueryResponse};
use ragd_core::generate::Turn;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use axum::Extension;
use ragd_core::auth::{Principal, Role, public_name};

use crate::routes::visible;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody, public_message, retry_after_secs};
use crate::extract::{ApiJson, ApiPath};

/// Turns the engine's events into a stream that ends after `done` or `error`.
pub(crate) fn events(rx: mpsc::Receiver<AnswerEvent>) -> impl Stream<Item = AnswerEvent> + Send {
    futures::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        let event = rx.recv().await?;
        let last = matches!(event, AnswerEvent::Done(_) | AnswerEvent::Error(_));
        Some((event, (rx, last)))
    })
}

/// The whole answer to `req` on the collection the caller calls `name` (also the MCP `ask` tool's).
pub(crate) async fn answer(st: &AppState, p: &Principal, name: &str, req: QueryRequest) -> Result<QueryResponse, ApiError> {
    let name = visible(st, p, name, Role::Read).await?.name;
    let rx = st.engine.query(&name, req).await?;
    let mut events = Box::pin(events(rx));
    use futures::StreamExt;
    while let Some(event) = events.next().await {
        match event {
            AnswerEvent::Done(r) => return Ok(*r),
            AnswerEvent::Error(e) => return Err(ApiError(e)),
            AnswerEvent::Retrieval { .. } | AnswerEvent::Token(_) => {}
        }
    }
    Err(ApiError(Error::internal("the answer ended without a result")))
}

fn error_json(e: &Error) -> Value {
    // The same body and codes as an HTTP error, so clients share one error path.
    let mut body = json!({"error": {"code": e.code(), "message": public_message(e)}});
    if let Some(secs) = retry_after_secs(e) {
        body["error"]["retry_after_s"] = json!(secs);
    }
    body
}

#[utoipa::path(post, path = "/api/v1/collections/{name}/query", request_body = QueryRequest, tag = "answers",
    responses(
        (status = 200, body = QueryResponse, description = "the answer; with `stream: true`, `text/event-stream` with events `retrieval`, `token`, `done`, `error`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn query(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<QueryRequest>,
) -> ApiResult<Response> {
    if !req.stream {
        return Ok(axum::Json(answer(&st, &p, &name, req).await?).into_response());
    }
    let name = visible(&st, &p, &name, Role::Read).await?.name;
    let rx = st.engine.query(&name, req).await?;
    use futures::StreamExt;
    let sse = events(rx).map(|event| {
        let e = match event {
            AnswerEvent::Retrieval { citations, degraded, retrieval_query } => Event::default()
                .event("retrieval")
                .json_data(json!({"citations": citations, "degraded": degraded, "retrieval_query": retrieval_query})),
            AnswerEvent::Token(text) => Event::default().event("token").json_data(json!({"text": text})),
            AnswerEvent::Done(r) => Event::default().event("done").json_data(&*r),
            AnswerEvent::Error(e) => Event::default().event("error").json_data(error_json(&e)),
        };
        Ok::<Event, Infallible>(e.unwrap_or_else(|_| Event::default().event("error").data(r#"{"error":{"code":"internal_error","message":"unserialisable event"}}"#)))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}

// ---- OpenAI-compatible ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    /// `ragd:<collection>`.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    // Other OpenAI fields (temperature, max_tokens, user, ...) are accepted and ignored: the answer's
    // length and sampling are the server's configuration.
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or OpenAI's list of content parts (only `text` parts are read).
    #[schema(value_type = Object)]
    pub content: Value,
}

fn message_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The question (last user message) and the earlier user/assistant exchanges.
fn split_conversation(messages: &[ChatMessage]) -> Result<(String, Vec<Turn>), Error> {
    let last_user = messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| Error::invalid("invalid_messages", "`messages` must contain a message with role `user`"))?;
    let question = message_text(&messages[last_user].content);
    // The history only helps rewrite a follow-up: its recent end, each message bounded.
    let bounded = |t: String| if t.len() > 2000 { t.chars().take(2000).collect() } else { t };
    let mut history = Vec::new();
    let mut pending: Option<String> = None;
    for m in &messages[..last_user] {
        match m.role.as_str() {
            "user" => pending = Some(bounded(message_text(&m.content))),
            "assistant" => {
                if let Some(q) = pending.take() {
                    history.push(Turn { question: q, answer: bounded(message_text(&m.content)) });
                }
            }
            // System and tool messages do not change ragd's instructions: retrieved-data answers only.
            _ => {}
        }
    }
    let keep = history.len().saturating_sub(MAX_HISTORY_TURNS);
    Ok((question, history.split_off(keep)))
}

/// Earlier exchanges of an OpenAI-style conversation that ragd looks at.
const MAX_HISTORY_TURNS: usize = 8;

fn collection_of(model: &str) -> Result<&str, Error> {
    model.strip_prefix("ragd:").filter(|c| !c.is_empty()).ok_or_else(|| {
        Error::not_found("model_not_found", format!("model `{model}` does not exist; models are `ragd:<collection>` (GET /v1/models)"))
    })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    citations: Option<&'a [Citation]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<&'a [String]>,
    /// ragd's extras, as in `/query`: `generated`, `extractive` or `not_found`; evidence checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_kind: Option<ragd_core::answer::AnswerKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grounded: Option<bool>,
}

fn usage_json(r: &QueryResponse) -> Value {
    json!({
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens,
    })
}

#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatCompletionRequest, tag = "openai",
    responses((status = 200, description = "OpenAI `chat.completion` (or `chat.completion.chunk` events) with extra `citations` and `degraded` fields"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn chat_completions(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> ApiResult<Response> {
    let collection = collection_of(&req.model)?;
    let collection = visible(&st, &p, collection, Role::Read).await?.name;
    let (question, history) = split_conversation(&req.messages)?;
    let query = QueryRequest { question, ..QueryRequest::default() };
    let rx = st.engine.query_with_history(&collection, query, Some(history)).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    let model = req.model.clone();
    use futures::StreamExt;
    if !req.stream {
        let mut events = Box::pin(events(rx));
        while let Some(event) = events.next().await {
            match event {
                AnswerEvent::Done(r) => {
                    let body = Completion {
                        id,
                        object: "chat.completion",
                        created,
                        model: &model,
                        choices: vec![json!({"index": 0, "message": {"role": "assistant", "content": r.answer}, "finish_reason": "stop"})],
                        usage: Some(usage_json(&r)),
                        citations: Some(&r.citations),
                        degraded: Some(&r.degraded),
                        answer_kind: Some(r.answer_kind),
                        grounded: Some(r.grounded),
                    };
                    return Ok(axum::Json(body).into_response());
                }
                AnswerEvent::Error(e) => return Err(ApiError(e)),
                _ => {}
            }
        }
        return Err(ApiError(Error::internal("the answer ended without a result")));
    }
    let chunk = move |choices: Vec<Value>, r: Option<&QueryResponse>| -> Event {
        let body = Completion {
            id: id.clone(),
            object: "chat.completion.chunk",
            created,
            model: &model,
            choices,
            usage: r.map(usage_json),
            citations: r.map(|r| r.citations.as_slice()),
            degraded: r.map(|r| r.degraded.as_slice()),
            answer_kind: r.map(|r| r.answer_kind),
            grounded: r.map(|r| r.grounded),
        };
        Event::default().json_data(body).unwrap_or_else(|_| Event::default().data("{}"))
    };
    let stream = events(rx).flat_map(move |event| {
        let out: Vec<Event> = match event {
            AnswerEvent::Retrieval { .. } => {
                vec![chunk(vec![json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null})], None)]
            }
            AnswerEvent::Token(text) => vec![chunk(vec![json!({"index": 0, "delta": {"content": text}, "finish_reason": null})], None)],
            AnswerEvent::Done(r) => vec![
                chunk(vec![json!({"index": 0, "delta": {}, "finish_reason": "stop"})], Some(&r)),
                Event::default().data("[DONE]"),
            ],
            AnswerEvent::Error(e) => vec![Event::default().json_data(error_json(&e)).unwrap_or_default(), Event::default().data("[DONE]")],
        };
        futures::stream::iter(out.into_iter().map(Ok::<Event, Infallible>))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "OpenAI model list: one `ragd:<collection>` per collection")))]
pub async fn list_models(State(st): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<Response> {
    p.require(Role::Read)?;
    let data: Vec<Value> = st
        .engine
        .list_collections()
        .await?
        .into_iter()
        .filter(|c| c.tenant == p.tenant && p.allows(public_name(&c.tenant, &c.name)))
        .map(|c| json!({"id": format!("ragd:{}", public_name(&c.tenant, &c.name)), "object": "model", "created": 0, "owned_by": "ragd"}))
        .collect();
    Ok((StatusCode::OK, axum::Json(json!({"object": "list", "data": data}))).into_response())
}
