//! `/mcp`, the Model Context Protocol: the official MCP Python SDK as the client (tests/py/mcp_client.py)
//! against a real `ragd serve` with authentication on, and the transport's refusals checked by hand.

use std::process::{Command, Stdio};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::gateway::{Auth, create_key, mcp_call};
use crate::support::Server;

const LIGHTHOUSE: &str = "The Brisa lighthouse was built in 1874 on the northern cape of the island. \
Its lamp is visible for 22 nautical miles. The keeper's house is now a small museum.";
const BAKERY: &str = "The Corner Bakery opens at 6 am every day except Sunday. It sells rye bread baked in a wood oven.";

async fn seed(s: &Server, key: &str) {
    let r = s.http.post(s.url("/api/v1/collections")).bearer_auth(key).json(&json!({"name": "facts"})).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let docs = json!({"documents": [
        {"id": "lighthouse", "title": "Brisa lighthouse", "text": LIGHTHOUSE},
        {"id": "bakery", "title": "Corner Bakery", "text": BAKERY},
    ]});
    let r = s.http.post(s.url("/api/v1/collections/facts/documents?wait=true")).bearer_auth(key).json(&docs).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// One message to `/mcp` as `key` (none: no credentials).
async fn rpc(s: &Server, key: Option<&str>, session: Option<&str>, extra: &[(&str, &str)], body: &str) -> (u16, Value, HeaderMap) {
    let auth = key.map_or(Auth::None, Auth::Bearer);
    mcp_call(&s.http, &s.url("/mcp"), &auth, session, extra, body).await
}

const INITIALIZE: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#;

#[tokio::test]
async fn the_official_mcp_client_searches_asks_and_reads_within_its_tenant() {
    let python_has_mcp = Command::new("python3").args(["-c", "import mcp.client.streamable_http"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(python_has_mcp, "the `mcp` Python package (the official MCP SDK) is missing: scripts/test.sh installs it from tests/py/requirements.lock");
    let dir = tempfile::tempdir().unwrap();
    let key_a = create_key(dir.path(), "read", "acme");
    let admin_a = create_key(dir.path(), "admin", "acme");
    let key_b = create_key(dir.path(), "admin", "globex");
    let s = Server::start_with(dir.path(), &[("RAGD_AUTH__ENABLED", "true"), ("RAGD_GENERATOR__KIND", "none"), ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    seed(&s, &admin_a).await;

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/mcp_client.py");
    let out = Command::new("python3").arg(&script).args([&s.base, &key_a, &key_b, "facts", env!("CARGO_BIN_EXE_ragd")]).output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the MCP client script failed:\n{stdout}\n{stderr}");
    for line in ["initialize and tools/list: ok", "search: ok", "ask: ok", "ask with progress: ok", "resources: ok", "errors: ok", "another tenant: ok", "stdio: ok", "no key: ok"] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    // Tool calls are counted by tool and outcome.
    let metrics = s.http.get(format!("{}/metrics", s.admin)).send().await.unwrap().text().await.unwrap();
    for series in [
        r#"ragd_mcp_tool_calls_total{tool="search",outcome="ok"}"#,
        r#"ragd_mcp_tool_calls_total{tool="ask",outcome="ok"}"#,
        r#"ragd_mcp_tool_calls_total{tool="search",outcome="tool_error"}"#,
        r#"ragd_mcp_tool_calls_total{tool="unknown",outcome="invalid"}"#,
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(series) && !l.ends_with(" 0")), "{series} missing from /metrics");
    }
}

#[tokio::test]
async fn bad_messages_get_json_rpc_errors_and_sessions_belong_to_their_caller() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ragd.toml");
    std::fs::write(&config, "[cors]\nallowed_origins = [\"https://app.example\"]\n").unwrap();
    let data = dir.path().join("data");
    let key_a = create_key(&data, "read", "acme");
    let key_b = create_key(&data, "read", "acme");
    let s = Server::start_with(&data, &[("RAGD_CONFIG", config.to_str().unwrap()), ("RAGD_AUTH__ENABLED", "true"), ("RAGD_GENERATOR__KIND", "none")]);
    let a = Some(key_a.as_str());

    // No key: 401 from the gateway.
    let (st, b, _) = rpc(&s, None, None, &[], INITIALIZE).await;
    assert_eq!(st, 401, "{b}");

    // initialize negotiates the version and opens a session.
    let (st, b, h) = rpc(&s, a, None, &[], INITIALIZE).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["result"]["protocolVersion"], "2025-06-18", "{b}");
    assert!(b["result"]["capabilities"]["tools"].is_object(), "{b}");
    let session = h.get("mcp-session-id").expect("a session id").to_str().unwrap().to_owned();
    let (_, b, _) = rpc(&s, a, None, &[], &INITIALIZE.replace("2025-06-18", "1999-01-01")).await;
    assert_eq!(b["result"]["protocolVersion"], "2025-11-25", "an unknown version gets the newest: {b}");
    let sid = Some(session.as_str());

    // The initialized notification: 202, no body.
    let (st, _, _) = rpc(&s, a, sid, &[], r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    assert_eq!(st, 202);
    let (st, b, _) = rpc(&s, a, sid, &[], r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["result"]["tools"].as_array().unwrap().len(), 5, "{b}");

    // Malformed, batched, not JSON-RPC, unknown method, unknown tool, bad arguments: JSON-RPC errors, never a 5xx.
    let cases: &[(&str, u16, i64)] = &[
        ("{not json", 400, -32700),
        (r#"[{"jsonrpc":"2.0","id":3,"method":"ping"}]"#, 400, -32600),
        (r#"{"id":3,"method":"ping"}"#, 400, -32600),
        (r#"{"jsonrpc":"2.0","id":3,"method":"tools/frobnicate"}"#, 200, -32601),
        (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#, 200, -32602),
        (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"collection":"facts"}}}"#, 200, -32602),
        (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"collection":"facts","query":"x","top_k":"all"}}}"#, 200, -32602),
        (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"collection":"facts","query":"x","bogus":1}}}"#, 200, -32602),
        (r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"http://elsewhere/x"}}"#, 200, -32602),
    ];
    for (body, status, code) in cases {
        let (st, b, _) = rpc(&s, a, sid, &[], body).await;
        assert_eq!((st, b["error"]["code"].as_i64()), (*status, Some(*code)), "{body}: {b}");
    }
    // A ragd error inside a tool is a tool result with its stable code.
    let (st, b, _) = rpc(&s, a, sid, &[], r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"search","arguments":{"collection":"facts","query":"x"}}}"#).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!((b["result"]["isError"].as_bool(), b["result"]["structuredContent"]["error"]["code"].as_str()), (Some(true), Some("collection_not_found")), "{b}");

    // An Origin off the CORS allow-list (DNS rebinding) is refused; an allowed one is not.
    let (st, b, _) = rpc(&s, a, sid, &[("origin", "https://evil.example")], r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#).await;
    assert_eq!((st, b["error"]["code"].as_i64()), (403, Some(-32600)), "{b}");
    let (st, b, _) = rpc(&s, a, sid, &[("origin", "https://app.example")], r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#).await;
    assert_eq!(st, 200, "{b}");
    // An unsupported MCP-Protocol-Version header.
    let (st, _, _) = rpc(&s, a, sid, &[("mcp-protocol-version", "1999-01-01")], r#"{"jsonrpc":"2.0","id":6,"method":"ping"}"#).await;
    assert_eq!(st, 400);

    // Sessions: required after initialize, unknown ones are 404, and another key cannot use one.
    let (st, _, _) = rpc(&s, a, None, &[], r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).await;
    assert_eq!(st, 400);
    let (st, _, _) = rpc(&s, a, Some("0123456789abcdef"), &[], r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).await;
    assert_eq!(st, 404);
    let (st, _, _) = rpc(&s, Some(&key_b), sid, &[], r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).await;
    assert_eq!(st, 404, "a session id is not a credential");

    // GET offers no stream (405); DELETE ends the session.
    let r = s.http.get(s.url("/mcp")).bearer_auth(&key_a).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = s.http.delete(s.url("/mcp")).bearer_auth(&key_a).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (st, _, _) = rpc(&s, a, sid, &[], r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#).await;
    assert_eq!(st, 404);
}
