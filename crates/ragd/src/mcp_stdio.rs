//! `ragd mcp`: the MCP tools of a running server over stdio, for desktop clients that launch a
//! command. Each newline-delimited JSON-RPC message read from stdin is POSTed to the server's `/mcp`
//! (with the API key, the session it opened and the negotiated protocol version); each answer is
//! written to stdout as one line. stdout carries only protocol messages; anything else goes to stderr.

use std::process::ExitCode;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::ServerArgs;

/// Longest message read from stdin.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// The next line of `input`, without its newline: `Some(None)` for a line over `MAX_LINE` bytes
/// (read through and dropped, never held whole), `None` at the end.
async fn read_line(input: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Option<String>>> {
    let mut buf = Vec::new();
    let n = (&mut *input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        // Drop the rest of the line in bounded steps.
        loop {
            buf.clear();
            let n = (&mut *input).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await?;
            if n == 0 || buf.last() == Some(&b'\n') {
                return Ok(Some(None));
            }
        }
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(Some(String::from_utf8_lossy(&buf).into_owned())))
}

pub async fn run(server: ServerArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)).build()?;
    let url = format!("{}/mcp", server.server.trim_end_matches('/'));
    let mut session: Option<String> = None;
    let mut version: Option<String> = None;
    let mut input = BufReader::new(tokio::io::stdin());
    let mut out = tokio::io::stdout();
    while let Some(line) = read_line(&mut input).await? {
        let Some(line) = line else {
            let e = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": format!("a message longer than {MAX_LINE} bytes")}});
            out.write_all(format!("{e}\n").as_bytes()).await?;
            out.flush().await?;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let msg: Option<Value> = serde_json::from_str(&line).ok();
        let id = msg.as_ref().and_then(|m| m.get("id")).cloned();
        let reply = {
            let mut req = http.post(&url).header("content-type", "application/json").header("accept", "application/json, text/event-stream").body(line);
            if let Some(k) = &server.api_key {
                req = req.bearer_auth(k);
            }
            if let Some(s) = &session {
                req = req.header("mcp-session-id", s);
            }
            if let Some(v) = &version {
                req = req.header("mcp-protocol-version", v);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if let Some(s) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
                        session = Some(s.to_owned());
                    }
                    let body: Option<Value> = resp.json().await.ok();
                    if let Some(v) = body.as_ref().and_then(|b| b.pointer("/result/protocolVersion")).and_then(Value::as_str) {
                        version = Some(v.to_owned());
                    }
                    match body {
                        // A JSON-RPC answer (a result, or an error the server phrased).
                        Some(b) if b.get("jsonrpc").is_some() => Some(b),
                        // A notification's 202.
                        _ if status.as_u16() == 202 => None,
                        // The gateway's own refusal (401, 429…), in ragd's error body.
                        b => id.clone().map(|id| {
                            let detail = b.as_ref().and_then(|b| b.pointer("/error/message")).and_then(Value::as_str).unwrap_or("").to_owned();
                            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": format!("ragd answered HTTP {status}: {detail}")}})
                        }),
                    }
                }
                Err(e) => id.clone().map(|id| json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": format!("cannot reach ragd at {url}: {e}")}})),
            }
        };
        if let Some(r) = reply {
            let mut text = serde_json::to_string(&r)?;
            text.push('\n');
            out.write_all(text.as_bytes()).await?;
            out.flush().await?;
        }
    }
    // stdin closed: the client is done; end the session on the server.
    if let Some(s) = session {
        let mut req = http.delete(&url).header("mcp-session-id", s);
        if let Some(k) = &server.api_key {
            req = req.bearer_auth(k);
        }
        let _ = req.send().await;
    }
    Ok(ExitCode::SUCCESS)
}
