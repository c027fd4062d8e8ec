//! `StandInModelServer`: a stand-in for a model server, for fault injection. It speaks the documented
//! wire formats of Ollama (`POST /api/chat`, NDJSON) and OpenAI-compatible servers
//! (`POST /v1/chat/completions`, server-sent events) and does what the test tells it: answer in
//! pieces with a delay, fail with a status and `Retry-After`, hang, break off mid-stream, send
//! an error inside the stream, or end a `200` stream without a single event. It is not a model: the answer is whatever the test scripts. It also
//! answers embedding requests (`/v1/embeddings`, `/api/embed`) with fixed fake vectors, or hangs,
//! and rerank requests (`.../rerank`, Cohere's and TEI's formats, told apart by the body) with
//! scripted scores — each passage scores its position, so a rerank reverses the order it was sent
//! in — or with `Status`/`Hang` like the other routes.
//! (No Ollama binary can be installed here; the OpenAI wire is also tested against a real llama.cpp server.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Behavior {
    /// Streams these pieces, `delay` apart, then ends the answer properly.
    Answer { pieces: Vec<String>, delay: Duration },
    /// Answers with this status and `Retry-After` (seconds), no stream.
    Status { code: u16, retry_after: Option<u64> },
    /// Accepts the request and never answers.
    Hang,
    /// Streams `pieces` pieces, then closes the connection without ending the answer.
    BreakOff { pieces: Vec<String> },
    /// Streams `pieces`, then an error inside the stream.
    ErrorInStream { pieces: Vec<String> },
    /// Closes every connection at once, before any response: what a killed server looks like.
    Killed,
    /// Answers `200 text/event-stream` and ends the body without a single event. `chunked`: with
    /// `Transfer-Encoding: chunked` and the connection closed before any chunk, which is what
    /// llama.cpp's Python server did on some FastAPI/sse-starlette versions; otherwise a clean
    /// empty body (`Content-Length: 0`).
    EmptyStream { chunked: bool },
}

pub struct StandInModelServer {
    pub url: String,
    behavior: Arc<Mutex<Behavior>>,
    /// Bodies of the chat requests received.
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// Streams the client closed before they were complete.
    pub client_disconnects: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StandInModelServer {
    pub async fn start(behavior: Behavior) -> StandInModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let behavior = Arc::new(Mutex::new(behavior));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let client_disconnects = Arc::new(AtomicUsize::new(0));
        let (b, r, d) = (behavior.clone(), requests.clone(), client_disconnects.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (b, r, d) = (b.clone(), r.clone(), d.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, b, r, d).await;
                });
            }
        });
        StandInModelServer { url, behavior, requests, client_disconnects, task }
    }

    pub fn set(&self, behavior: Behavior) {
        *self.behavior.lock().unwrap() = behavior;
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for StandInModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default().to_owned();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok((method, path, body))
}

async fn handle(
    mut stream: TcpStream,
    behavior: Arc<Mutex<Behavior>>,
    requests: Arc<Mutex<Vec<Value>>>,
    disconnects: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    if matches!(*behavior.lock().unwrap(), Behavior::Killed) {
        return Ok(()); // dropping the socket unanswered
    }
    let (method, path, body) = read_request(&mut stream).await?;
    let ollama = path.starts_with("/api/");
    if method == "GET" {
        let body = if ollama { json!({"models": [{"name": "standin"}]}) } else { json!({"object": "list", "data": [{"id": "standin"}]}) };
        return respond(&mut stream, 200, "application/json", &[], body.to_string().as_bytes()).await;
    }
    let behavior = behavior.lock().unwrap().clone();
    if path.ends_with("/rerank") {
        requests.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        return rerank(&mut stream, &behavior, &body).await;
    }
    if path.ends_with("/embeddings") || path.ends_with("/api/embed") {
        // Embeddings: deterministic 384-dimensional vectors from the text's bytes, or a hang.
        if matches!(behavior, Behavior::Hang) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let texts: Vec<String> = req["input"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap_or("").to_owned()).collect()).unwrap_or_default();
        let vector = |t: &str| -> Vec<f32> { (0..384).map(|i| ((t.bytes().map(u32::from).sum::<u32>() + i) % 17) as f32 + 1.0).collect() };
        let body = if ollama {
            json!({"embeddings": texts.iter().map(|t| vector(t)).collect::<Vec<_>>()})
        } else {
            json!({"data": texts.iter().enumerate().map(|(i, t)| json!({"index": i, "embedding": vector(t)})).collect::<Vec<_>>()})
        };
        return respond(&mut stream, 200, "application/json", &[], body.to_string().as_bytes()).await;
    }
    requests.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    let content_type = if ollama { "application/x-ndjson" } else { "text/event-stream" };
    let piece = |text: &str| -> String {
        if ollama {
            format!("{}\n", json!({"model": "standin", "message": {"role": "assistant", "content": text}, "done": false}))
        } else {
            format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}))
        }
    };
    match behavior {
        Behavior::Killed => Ok(()),
        Behavior::EmptyStream { chunked } => {
            let framing = if chunked { "Transfer-Encoding: chunked" } else { "Content-Length: 0" };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n{framing}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.flush().await?;
            let _ = stream.shutdown().await;
            Ok(())
        }
        Behavior::Status { code, retry_after } => {
            let headers: Vec<(String, String)> = retry_after.map(|s| ("Retry-After".to_owned(), s.to_string())).into_iter().collect();
            let body = json!({"error": {"message": format!("stand-in says {code}")}}).to_string();
            respond(&mut stream, code, "application/json", &headers, body.as_bytes()).await
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Behavior::Answer { pieces, delay } => {
            start_stream(&mut stream, content_type).await?;
            let n = pieces.len();
            for p in &pieces {
                if stream.write_all(piece(p).as_bytes()).await.is_err() || stream.flush().await.is_err() {
                    disconnects.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                tokio::time::sleep(delay).await;
            }
            let end = if ollama {
                format!("{}\n", json!({"model": "standin", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", "prompt_eval_count": 42, "eval_count": n}))
            } else {
                format!(
                    "data: {}\n\ndata: [DONE]\n\n",
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 42, "completion_tokens": n}})
                )
            };
            if stream.write_all(end.as_bytes()).await.is_err() {
                disconnects.fetch_add(1, Ordering::SeqCst);
            }
            let _ = stream.shutdown().await;
            Ok(())
        }
        Behavior::BreakOff { pieces } => {
            start_stream(&mut stream, content_type).await?;
            for p in &pieces {
                stream.write_all(piece(p).as_bytes()).await?;
            }
            stream.flush().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Dropping the socket ends the body without the end of the answer.
            Ok(())
        }
        Behavior::ErrorInStream { pieces } => {
            start_stream(&mut stream, content_type).await?;
            for p in &pieces {
                stream.write_all(piece(p).as_bytes()).await?;
            }
            let error = if ollama {
                format!("{}\n", json!({"error": "stand-in: model crashed"}))
            } else {
                format!("data: {}\n\n", json!({"error": {"message": "stand-in: model crashed"}}))
            };
            stream.write_all(error.as_bytes()).await?;
            let _ = stream.shutdown().await;
            Ok(())
        }
    }
}

/// A rerank request: passage `i` scores `i` (the order sent, reversed), in the format the body is in.
async fn rerank(stream: &mut TcpStream, behavior: &Behavior, body: &[u8]) -> std::io::Result<()> {
    match behavior {
        Behavior::Status { code, retry_after } => {
            let headers: Vec<(String, String)> = retry_after.map(|s| ("Retry-After".to_owned(), s.to_string())).into_iter().collect();
            return respond(stream, *code, "application/json", &headers, br#"{"error":"stand-in failure"}"#).await;
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Behavior::Killed => return Ok(()),
        _ => {}
    }
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let body = if let Some(docs) = req["documents"].as_array() {
        json!({"id": "standin", "results": (0..docs.len()).rev().map(|i| json!({"index": i, "relevance_score": i as f64})).collect::<Vec<_>>()})
    } else {
        let n = req["texts"].as_array().map_or(0, Vec::len);
        json!((0..n).rev().map(|i| json!({"index": i, "score": i as f64})).collect::<Vec<_>>())
    };
    respond(stream, 200, "application/json", &[], body.to_string().as_bytes()).await
}

async fn start_stream(stream: &mut TcpStream, content_type: &str) -> std::io::Result<()> {
    // No Content-Length and `Connection: close`: the body ends when the connection does.
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

async fn respond(stream: &mut TcpStream, code: u16, content_type: &str, headers: &[(String, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} Stand-In\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let _ = stream.shutdown().await;
    Ok(())
}
