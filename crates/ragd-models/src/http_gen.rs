//! Generators served over HTTP, streamed: Ollama (`POST /api/chat`, NDJSON lines) and any
//! OpenAI-compatible server (`POST /v1/chat/completions`, server-sent events): OpenAI, vLLM,
//! llama.cpp's server, LM Studio...
//!
//! Every failure — connection refused, timeout, a non-2xx status (429/503 keep their `Retry-After`),
//! an error or a malformed line in the stream, a stream that ends before the answer is complete — is
//! `Error::Unavailable { dependency: "generator" }`, which the engine answers extractively. A `200`
//! stream that ends without a single event (llama.cpp's Python server did that on some FastAPI /
//! sse-starlette versions) is named as the server's protocol error, not as a broken body.
//! Stop sequences are applied here, not sent (OpenAI caps them at four): when one is reached the
//! response is dropped, which closes the connection and stops the server's generation.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ragd_core::error::{Error, Result};
use ragd_core::generate::{FinishReason, GenerationRequest, Generated, Generator, StopScanner, completion_prompt, completion_stops};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct HttpGeneratorConfig {
    /// Base URL, e.g. `http://localhost:11434` (Ollama) or `http://localhost:8000` (OpenAI-compatible);
    /// a trailing `/v1` is accepted for OpenAI-compatible servers.
    pub url: String,
    pub model: String,
    /// Bearer token (OpenAI-compatible servers only).
    pub api_key: Option<String>,
    /// Whole-request deadline, streaming included.
    pub timeout: Duration,
    /// The model's context, for the prompt budget.
    pub context_tokens: usize,
    /// OpenAI-compatible servers only: `true` sends a completion-style prompt to `/v1/completions`
    /// (for base models, e.g. llama.cpp's server with the built-in GGUF) instead of chat messages.
    pub completions: bool,
}

impl HttpGeneratorConfig {
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        HttpGeneratorConfig { url: url.into(), model: model.into(), api_key: None, timeout: Duration::from_secs(60), context_tokens: 4096, completions: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Ollama,
    OpenAi,
}

#[derive(Debug)]
struct HttpGenerator {
    flavor: Flavor,
    client: reqwest::Client,
    base: String,
    cfg: HttpGeneratorConfig,
    id: String,
    /// Set from a 429/503 `Retry-After`: until then, calls fail at once without reaching the server.
    not_before: std::sync::Mutex<Option<std::time::Instant>>,
}

fn unavailable(message: impl Into<String>) -> Error {
    Error::unavailable("generator", message)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from model servers and is ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

impl HttpGenerator {
    fn new(flavor: Flavor, cfg: HttpGeneratorConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        let mut base = cfg.url.trim_end_matches('/').to_owned();
        if flavor == Flavor::OpenAi && base.ends_with("/v1") {
            base.truncate(base.len() - 3);
        }
        let id = format!("{}:{}", if flavor == Flavor::Ollama { "ollama" } else { "openai" }, cfg.model);
        Ok(HttpGenerator { flavor, client, base, cfg, id, not_before: std::sync::Mutex::new(None) })
    }

    fn endpoint(&self) -> String {
        match self.flavor {
            Flavor::Ollama => format!("{}/api/chat", self.base),
            Flavor::OpenAi if self.cfg.completions => format!("{}/v1/completions", self.base),
            Flavor::OpenAi => format!("{}/v1/chat/completions", self.base),
        }
    }

    fn body(&self, req: &GenerationRequest) -> Value {
        if self.flavor == Flavor::OpenAi && self.cfg.completions {
            return json!({
                "model": self.cfg.model,
                "prompt": completion_prompt(req),
                "stream": true,
                "temperature": req.temperature,
                "max_tokens": req.max_tokens,
            });
        }
        let mut messages = vec![json!({"role": "system", "content": req.instructions})];
        for t in &req.history {
            messages.push(json!({"role": "user", "content": t.question}));
            messages.push(json!({"role": "assistant", "content": t.answer}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        match self.flavor {
            Flavor::Ollama => json!({
                "model": self.cfg.model,
                "messages": messages,
                "stream": true,
                "options": {"temperature": req.temperature, "num_predict": req.max_tokens, "num_ctx": self.cfg.context_tokens},
            }),
            Flavor::OpenAi => json!({
                "model": self.cfg.model,
                "messages": messages,
                "stream": true,
                "temperature": req.temperature,
                "max_tokens": req.max_tokens,
            }),
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        let what = if e.is_timeout() {
            format!("no complete answer within {:?}", self.cfg.timeout)
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else if e.is_body() || e.is_decode() {
            "the stream broke off".to_owned()
        } else {
            "request failed".to_owned()
        };
        unavailable(format!("{what} ({}): {e}", self.endpoint()))
    }

    /// A `200` response whose body ended (cleanly or not) before a single event: the server broke
    /// the protocol, whatever the transport said. `bytes` is what the body held; `cause`, how it ended.
    fn empty_stream(&self, bytes: usize, cause: Option<&reqwest::Error>) -> Error {
        let what = if bytes == 0 { "an empty stream".to_owned() } else { format!("{bytes} bytes, none of them an event") };
        let how = match cause {
            Some(e) => format!(" (the body broke off: {e})"),
            None => String::new(),
        };
        unavailable(format!(
            "the server ended its 200 response without a single event ({what}): a protocol error of the server at {}{how}",
            self.endpoint()
        ))
    }

    async fn generate(&self, req: GenerationRequest, pieces: mpsc::Sender<String>) -> Result<Generated> {
        let endpoint = self.endpoint();
        // Honour the server's last Retry-After: asking again sooner would only add to its load.
        let wait = self.not_before.lock().expect("not_before lock").and_then(|t| t.checked_duration_since(std::time::Instant::now()));
        if let Some(wait) = wait {
            return Err(Error::Unavailable {
                dependency: "generator",
                message: format!("{endpoint} asked to wait (Retry-After); {} ms left", wait.as_millis()),
                retry_after: Some(wait),
            });
        }
        let mut http = self.client.post(&endpoint).json(&self.body(&req));
        if self.flavor == Flavor::OpenAi {
            if let Some(key) = &self.cfg.api_key {
                http = http.bearer_auth(key);
            }
        }
        let resp = http.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = retry_after(resp.headers());
            if let (Some(wait), true) = (retry_after, matches!(status.as_u16(), 429 | 503)) {
                *self.not_before.lock().expect("not_before lock") = Some(std::time::Instant::now() + wait);
            }
            let text = resp.text().await.unwrap_or_default();
            let snippet: String = text.chars().take(300).collect();
            // A 4xx other than 408/429 says the request is wrong (model name, prompt too long), not
            // that the server is unwell: it must not count against the breaker. Both fall back.
            if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
                return Err(Error::invalid("generator_rejected", format!("{endpoint} answered {status}: {snippet}")));
            }
            return Err(Error::Unavailable { dependency: "generator", message: format!("{endpoint} answered {status}: {snippet}"), retry_after });
        }

        let stops = if self.cfg.completions { completion_stops(&req) } else { req.stop.clone() };
        let mut scanner = StopScanner::new(&stops);
        let mut usage: Option<(usize, usize)> = None;
        let mut finished = false;
        let mut finish = FinishReason::Stop;
        let mut line = Vec::<u8>::new();
        // Events parsed and bytes received: a body with no event at all is the server's fault.
        let (mut events, mut bytes) = (0usize, 0usize);
        let mut stream = resp.bytes_stream();
        'read: while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if events == 0 && !e.is_timeout() => return Err(self.empty_stream(bytes, Some(&e))),
                Err(e) => return Err(self.transport_error(&e)),
            };
            bytes += chunk.len();
            for &b in chunk.iter() {
                if b != b'\n' {
                    line.push(b);
                    continue;
                }
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                line.clear();
                let event = match self.flavor {
                    Flavor::Ollama => parse_ollama_line(&text),
                    Flavor::OpenAi => parse_sse_line(&text),
                }
                .map_err(|why| unavailable(format!("{endpoint} sent a malformed stream: {why}")))?;
                let Some(event) = event else { continue };
                events += 1;
                if let Some(u) = event.usage {
                    usage = Some(u);
                }
                if let Some(reason) = event.finish_reason.as_deref() {
                    if reason == "length" {
                        finish = FinishReason::Length;
                    }
                }
                if !event.content.is_empty() {
                    let (out, stopped) = scanner.push(&event.content);
                    if !out.is_empty() && pieces.send(out).await.is_err() {
                        finish = FinishReason::Cancelled;
                        break 'read;
                    }
                    if stopped {
                        finished = true;
                        finish = FinishReason::Stop;
                        break 'read;
                    }
                }
                if event.done {
                    finished = true;
                    if self.flavor == Flavor::Ollama {
                        break 'read;
                    }
                }
                if event.end_of_stream {
                    finished = true;
                    break 'read;
                }
            }
        }
        if finish == FinishReason::Cancelled {
            return Ok(Generated { text: String::new(), prompt_tokens: 0, completion_tokens: 0, finish });
        }
        if !finished && events == 0 {
            return Err(self.empty_stream(bytes, None));
        }
        if !finished {
            return Err(unavailable(format!("{endpoint}: the stream ended before the answer was complete")));
        }
        let (rest, text) = scanner.finish();
        if !rest.is_empty() {
            let _ = pieces.send(rest).await;
        }
        let (prompt_tokens, completion_tokens) = usage.unwrap_or_else(|| {
            (approx_tokens(&req.instructions) + approx_tokens(&req.prompt), approx_tokens(&text))
        });
        Ok(Generated { text, prompt_tokens, completion_tokens, finish })
    }

    async fn ready(&self) -> Result<()> {
        let url = match self.flavor {
            Flavor::Ollama => format!("{}/api/tags", self.base),
            Flavor::OpenAi => format!("{}/v1/models", self.base),
        };
        let mut http = self.client.get(&url).timeout(Duration::from_secs(2));
        if let (Flavor::OpenAi, Some(key)) = (self.flavor, &self.cfg.api_key) {
            http = http.bearer_auth(key);
        }
        let resp = http.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status().is_success() { Ok(()) } else { Err(unavailable(format!("{url} answered {}", resp.status()))) }
    }
}

fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

#[derive(Debug, Default, PartialEq)]
struct StreamEvent {
    content: String,
    /// The answer is complete (Ollama's `done`, OpenAI's `finish_reason`).
    done: bool,
    /// OpenAI's `data: [DONE]`.
    end_of_stream: bool,
    finish_reason: Option<String>,
    usage: Option<(usize, usize)>,
}

#[derive(Deserialize)]
struct OllamaLine {
    #[serde(default)]
    message: Option<OllamaMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<usize>,
    #[serde(default)]
    eval_count: Option<usize>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct OllamaMessage {
    #[serde(default)]
    content: String,
}

fn parse_ollama_line(line: &str) -> std::result::Result<Option<StreamEvent>, String> {
    if line.is_empty() {
        return Ok(None);
    }
    let l: OllamaLine = serde_json::from_str(line).map_err(|e| format!("{e} in `{}`", line.chars().take(120).collect::<String>()))?;
    if let Some(error) = l.error {
        return Err(format!("error from the server: {error}"));
    }
    let usage = match (l.prompt_eval_count, l.eval_count) {
        (Some(p), Some(c)) => Some((p, c)),
        _ => None,
    };
    Ok(Some(StreamEvent {
        content: l.message.map(|m| m.content).unwrap_or_default(),
        done: l.done,
        end_of_stream: false,
        finish_reason: l.done_reason,
        usage,
    }))
}

fn parse_sse_line(line: &str) -> std::result::Result<Option<StreamEvent>, String> {
    // Comments (`: ping`), `event:`/`id:` fields and blank separators carry no content.
    let Some(data) = line.strip_prefix("data:") else { return Ok(None) };
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Some(StreamEvent { end_of_stream: true, ..Default::default() }));
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("{e} in `{}`", data.chars().take(120).collect::<String>()))?;
    if let Some(error) = v.get("error") {
        let message = error.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| error.to_string());
        return Err(format!("error from the server: {message}"));
    }
    let choice = v.get("choices").and_then(|c| c.get(0));
    // Chat chunks carry `delta.content`; completion chunks carry `text`.
    let content = choice
        .and_then(|c| c.pointer("/delta/content").or_else(|| c.get("text")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let finish_reason = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str).map(str::to_owned);
    let usage = v.get("usage").filter(|u| !u.is_null()).and_then(|u| {
        Some((u.get("prompt_tokens")?.as_u64()? as usize, u.get("completion_tokens")?.as_u64()? as usize))
    });
    Ok(Some(StreamEvent { content, done: finish_reason.is_some(), end_of_stream: false, finish_reason, usage }))
}

/// Ollama's `/api/chat`, streamed. `id()` is `ollama:<model>`.
#[derive(Debug)]
pub struct OllamaGenerator(HttpGenerator);

impl OllamaGenerator {
    pub fn new(cfg: HttpGeneratorConfig) -> Result<Self> {
        HttpGenerator::new(Flavor::Ollama, cfg).map(Self)
    }
}

/// An OpenAI-compatible `/v1/chat/completions`, streamed. `id()` is `openai:<model>`.
#[derive(Debug)]
pub struct OpenAiGenerator(HttpGenerator);

impl OpenAiGenerator {
    pub fn new(cfg: HttpGeneratorConfig) -> Result<Self> {
        HttpGenerator::new(Flavor::OpenAi, cfg).map(Self)
    }
}

macro_rules! impl_generator {
    ($t:ty) => {
        #[async_trait]
        impl Generator for $t {
            fn id(&self) -> &str {
                &self.0.id
            }
            fn context_tokens(&self) -> usize {
                self.0.cfg.context_tokens
            }
            fn count_tokens(&self, text: &str) -> usize {
                // No tokenizer for a remote model: estimate on the high side so the prompt fits.
                text.chars().count().div_ceil(3)
            }
            async fn generate(&self, req: GenerationRequest, pieces: mpsc::Sender<String>) -> Result<Generated> {
                self.0.generate(req, pieces).await
            }
            async fn ready(&self) -> Result<()> {
                self.0.ready().await
            }
        }
    };
}

impl_generator!(OllamaGenerator);
impl_generator!(OpenAiGenerator);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_lines() {
        assert_eq!(parse_sse_line(": ping").unwrap(), None);
        assert_eq!(parse_sse_line("").unwrap(), None);
        let e = parse_sse_line(r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#).unwrap().unwrap();
        assert_eq!((e.content.as_str(), e.done), ("Hi", false));
        let e = parse_sse_line(r#"data: {"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#)
            .unwrap()
            .unwrap();
        assert_eq!((e.done, e.finish_reason.as_deref(), e.usage), (true, Some("length"), Some((5, 2))));
        assert!(parse_sse_line("data: [DONE]").unwrap().unwrap().end_of_stream);
        let e = parse_sse_line(r#"data: {"choices":[{"index":0,"text":" 1874","finish_reason":null}]}"#).unwrap().unwrap();
        assert_eq!(e.content, " 1874");
        assert!(parse_sse_line(r#"data: {"error":{"message":"overloaded"}}"#).unwrap_err().contains("overloaded"));
        assert!(parse_sse_line("data: {not json").is_err());
    }

    /// Serves one canned HTTP response (head and body as raw bytes) per connection, then closes it.
    async fn canned_server(response: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                // The request is small: its head and JSON body arrive before the answer is sent.
                let mut buf = [0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response).await;
                let _ = sock.flush().await;
            }
        });
        url
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            instructions: "Answer.".into(),
            history: vec![],
            prompt: "Question: why?\nAnswer:".into(),
            max_tokens: 8,
            temperature: 0.0,
            stop: vec![],
        }
    }

    #[tokio::test]
    async fn a_200_stream_without_a_single_event_is_named_a_protocol_error_of_the_server() {
        let cases: [(&str, &'static [u8], &str); 3] = [
            // What llama_cpp.server sent: a chunked 200 whose connection closed before any chunk.
            (
                "chunked, closed before a chunk",
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                "(an empty stream)",
            ),
            ("empty body, clean end", b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 0\r\n\r\n", "(an empty stream)"),
            ("only a ping", b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: ping\n\n", "(8 bytes, none of them an event)"),
        ];
        for (name, response, what) in cases {
            let url = canned_server(response).await;
            let mut cfg = HttpGeneratorConfig::new(&url, "m");
            cfg.completions = true;
            let g = OpenAiGenerator::new(cfg).unwrap();
            let (tx, _rx) = mpsc::channel(8);
            let err = g.generate(request(), tx).await.unwrap_err().to_string();
            assert!(err.contains("without a single event") && err.contains(what), "{name}: {err}");
            assert!(err.contains(&format!("a protocol error of the server at {url}/v1/completions")), "{name}: {err}");
        }
        // Events, then a body cut short: still "the stream broke off", not a protocol error.
        let url = canned_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {\"choices\":[{\"text\":\"Be\",\"finish_reason\":null}]}\n\n",
        )
        .await;
        let g = OpenAiGenerator::new(HttpGeneratorConfig::new(&url, "m")).unwrap();
        let (tx, _rx) = mpsc::channel(8);
        let err = g.generate(request(), tx).await.unwrap_err().to_string();
        assert!(err.contains("the stream ended before the answer was complete") && !err.contains("protocol error"), "{err}");
    }

    #[test]
    fn ollama_lines() {
        let e = parse_ollama_line(r#"{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}"#).unwrap().unwrap();
        assert_eq!((e.content.as_str(), e.done), ("Hel", false));
        let e = parse_ollama_line(r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":3}"#)
            .unwrap()
            .unwrap();
        assert_eq!((e.done, e.usage), (true, Some((26, 3))));
        assert!(parse_ollama_line(r#"{"error":"model not found"}"#).unwrap_err().contains("model not found"));
    }
}
