//! The edge: API keys, service tokens and JWTs; tenants and roles; rate limits; CORS; request limits;
//! security headers; HTTPS with a certificate renewal. Black-box against the real binary.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::standin::{Behavior, StandInModelServer};
use crate::support::Server;

pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Service(&'a str),
}

pub async fn call(http: &reqwest::Client, method: Method, url: &str, auth: &Auth<'_>, body: Option<Value>) -> (u16, Value, HeaderMap) {
    let mut r = http.request(method, url);
    r = match auth {
        Auth::None => r,
        Auth::Bearer(k) => r.bearer_auth(k),
        Auth::Service(k) => r.header("x-service-token", *k),
    };
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
}

/// One message (`body`, sent as it is: tests send broken ones too) to `/mcp` with `auth`, the
/// session after initialize, and `extra` headers.
pub async fn mcp_call(http: &reqwest::Client, url: &str, auth: &Auth<'_>, session: Option<&str>, extra: &[(&str, &str)], body: &str) -> (u16, Value, HeaderMap) {
    let mut r = http.post(url).header("content-type", "application/json").header("accept", "application/json, text/event-stream").body(body.to_owned());
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r = match auth {
        Auth::None => r,
        Auth::Bearer(k) => r.bearer_auth(k),
        Auth::Service(k) => r.header("x-service-token", *k),
    };
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
}

/// `ragd keys ...` on a data folder; returns stdout (a created key is its last line).
pub fn keys_cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ragd"))
        .arg("keys")
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("RAGD_CONFIG")
        .output()
        .expect("run ragd keys");
    assert!(out.status.success(), "ragd keys {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn create_key(data: &Path, role: &str, tenant: &str) -> String {
    let out = keys_cli(data, &["create", "--role", role, "--tenant", tenant]);
    let key = out.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("ragd_k_"), "{out}");
    key
}

fn key_id(key: &str) -> &str {
    key.split('_').nth(2).unwrap()
}

const AUTH_ON: (&str, &str) = ("RAGD_AUTH__ENABLED", "true");
const NO_GENERATOR: (&str, &str) = ("RAGD_GENERATOR__KIND", "none");

#[tokio::test]
async fn every_role_on_every_route_in_its_own_and_another_tenant_gets_the_documented_status() {
    let dir = tempfile::tempdir().unwrap();
    let admin_a = create_key(dir.path(), "admin", "acme");
    let s = Server::start_with(dir.path(), &[AUTH_ON, NO_GENERATOR, ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    // A key made by the CLI while the server runs is usable at once.
    let admin_b = create_key(dir.path(), "admin", "globex");
    let h = &s.http;
    let u = |p: &str| s.url(p);

    let new_key = async |admin: &str, body: Value| {
        let (st, b, _) = call(h, Method::POST, &u("/api/v1/keys"), &Auth::Bearer(admin), Some(body)).await;
        assert_eq!(st, 201, "{b}");
        assert!(b.get("digest").is_none(), "{b}");
        b["key"].as_str().unwrap().to_owned()
    };
    let write_a = new_key(&admin_a, json!({"role": "write"})).await;
    let read_a = new_key(&admin_a, json!({"role": "read", "name": "dashboards"})).await;
    let svc_a = new_key(&admin_a, json!({"role": "read", "kind": "service_token"})).await;
    assert!(svc_a.starts_with("ragd_s_"));
    // An admin makes keys for its own tenant only.
    let (st, b, _) = call(h, Method::POST, &u("/api/v1/keys"), &Auth::Bearer(&admin_a), Some(json!({"role": "read", "tenant": "globex"}))).await;
    assert_eq!((st, b["error"]["code"].as_str()), (403, Some("other_tenant")));

    // Both tenants may have a collection called `docs`: names are per tenant.
    for (admin, names) in [(&admin_a, vec!["docs"]), (&admin_b, vec!["docs", "secret"])] {
        for n in names {
            let (st, b, _) = call(h, Method::POST, &u("/api/v1/collections"), &Auth::Bearer(admin), Some(json!({"name": n}))).await;
            assert_eq!(st, 201, "{b}");
            assert_eq!(b["name"], n, "{b}");
        }
    }
    let add = async |admin: &str, c: &str, id: &str, text: &str| {
        let url = u(&format!("/api/v1/collections/{c}/documents?wait=true"));
        let (st, b, _) = call(h, Method::POST, &url, &Auth::Bearer(admin), Some(json!({"id": id, "text": text}))).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["status"], "done", "{b}");
        b["id"].as_str().unwrap().to_owned()
    };
    let own_job = add(&admin_a, "docs", "a1", "Acme's launch code is blue falcon.").await;
    add(&admin_b, "docs", "b1", "Globex's launch code is red tiger.").await;
    let other_job = add(&admin_b, "secret", "b1", "Globex's vault code is green owl.").await;

    // role, credentials
    let principals: Vec<(&str, u8, Auth)> = vec![
        ("read", 0, Auth::Bearer(&read_a)),
        ("service token (read)", 0, Auth::Service(&svc_a)),
        ("write", 1, Auth::Bearer(&write_a)),
        ("admin", 2, Auth::Bearer(&admin_a)),
    ];
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (who, level, auth) in &principals {
        let tag = who.split(' ').next().unwrap();
        for own in [true, false] {
            let (c, doc, job) = if own { ("docs", "a1", own_job.as_str()) } else { ("secret", "b1", other_job.as_str()) };
            // (method, path, body, needed role level, status when allowed)
            let routes: Vec<(Method, String, Option<Value>, u8, u16)> = vec![
                (Method::GET, format!("/api/v1/collections/{c}"), None, 0, 200),
                (Method::POST, format!("/api/v1/collections/{c}/search"), Some(json!({"query": "launch code"})), 0, 200),
                (Method::POST, format!("/api/v1/collections/{c}/query"), Some(json!({"question": "What is the launch code?"})), 0, 200),
                (Method::GET, format!("/api/v1/collections/{c}/documents"), None, 0, 200),
                (Method::GET, format!("/api/v1/collections/{c}/documents/{doc}"), None, 0, 200),
                (Method::GET, format!("/api/v1/jobs/{job}"), None, 0, 200),
                (
                    Method::POST,
                    "/v1/chat/completions".into(),
                    Some(json!({"model": format!("ragd:{c}"), "messages": [{"role": "user", "content": "What is the launch code?"}]})),
                    0,
                    200,
                ),
                (Method::POST, format!("/api/v1/collections/{c}/documents?wait=true"), Some(json!({"id": format!("new-{tag}"), "text": "A new note."})), 1, 200),
                (Method::DELETE, format!("/api/v1/collections/{c}/documents/new-{tag}"), None, 1, 204),
            ];
            for (method, path, body, needed, ok) in routes {
                let expected = if level < &needed {
                    403
                } else if !own {
                    404
                } else {
                    ok
                };
                let (st, b, _) = call(h, method.clone(), &u(&path), auth, body).await;
                table.push(format!("{who:<22} {:<5} {method:<6} {path:<60} {st}", if own { "own" } else { "other" }));
                if st != expected {
                    failures.push(format!("{who} {method} {path} ({}): {st}, expected {expected}: {b}", if own { "own" } else { "other" }));
                }
                if st == 404 && !own {
                    // Another tenant's things do not exist, whatever the route.
                    let code = b["error"]["code"].as_str().unwrap_or("");
                    assert!(["collection_not_found", "job_not_found"].contains(&code), "{b}");
                }
            }
        }
        // MCP: the same collections through its tools and resources, in a session of this principal.
        let (st, b, hd) = mcp_call(h, &u("/mcp"), auth, None, &[], &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "matrix", "version": "0"}}}).to_string()).await;
        assert_eq!(st, 200, "{who} initialize: {b}");
        let session = hd.get("mcp-session-id").unwrap().to_str().unwrap().to_owned();
        for own in [true, false] {
            let (c, doc) = if own { ("docs", "a1") } else { ("secret", "b1") };
            let calls = [
                json!({"name": "search", "arguments": {"collection": c, "query": "launch code"}}),
                json!({"name": "ask", "arguments": {"collection": c, "question": "What is the launch code?"}}),
                json!({"name": "get_chunks", "arguments": {"collection": c, "document": doc}}),
            ];
            for params in calls {
                let (st, b, _) = mcp_call(h, &u("/mcp"), auth, Some(&session), &[], &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}).to_string()).await;
                let error = b["result"]["structuredContent"]["error"]["code"].as_str();
                let expected = if own { None } else { Some("collection_not_found") };
                table.push(format!("{who:<22} {:<5} MCP    tools/call {:<49} {:?}", if own { "own" } else { "other" }, params["name"], error));
                if st != 200 || error != expected {
                    failures.push(format!("{who} MCP {params} ({}): {st} {b}", if own { "own" } else { "other" }));
                }
            }
            let uri = format!("ragd://{c}/{doc}");
            let (_, b, _) = mcp_call(h, &u("/mcp"), auth, Some(&session), &[], &json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": uri}}).to_string()).await;
            let read = b["result"]["contents"][0]["text"].as_str().is_some_and(|t| t.contains("launch code"));
            if read != own {
                failures.push(format!("{who} MCP resources/read {uri}: {b}"));
            }
        }
        let (_, b, _) = mcp_call(h, &u("/mcp"), auth, Some(&session), &[], &json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list"}).to_string()).await;
        let uris: Vec<&str> = b["result"]["resources"].as_array().map(|r| r.iter().filter_map(|x| x["uri"].as_str()).collect()).unwrap_or_default();
        if uris != ["ragd://docs/a1"] {
            failures.push(format!("{who} MCP resources/list: {b}"));
        }

        // Tenant-wide routes.
        let made = format!("made-by-{}", tag);
        let routes: Vec<(Method, String, Option<Value>, u8, u16)> = vec![
            (Method::GET, "/api/v1/collections".into(), None, 0, 200),
            (Method::GET, "/v1/models".into(), None, 0, 200),
            (Method::POST, "/api/v1/collections".into(), Some(json!({"name": made})), 2, 201),
            (Method::DELETE, format!("/api/v1/collections/{made}"), None, 2, 204),
            (Method::GET, "/api/v1/status".into(), None, 2, 200),
            (Method::GET, "/api/v1/keys".into(), None, 2, 200),
            (Method::POST, "/api/v1/keys".into(), Some(json!({"role": "read"})), 2, 201),
        ];
        for (method, path, body, needed, ok) in routes {
            let expected = if level < &needed { 403 } else { ok };
            let (st, b, _) = call(h, method.clone(), &u(&path), auth, body).await;
            table.push(format!("{who:<22} {:<5} {method:<6} {path:<60} {st}", "-"));
            if st != expected {
                failures.push(format!("{who} {method} {path}: {st}, expected {expected}: {b}"));
            }
            if path == "/api/v1/collections" && method == Method::GET {
                let names: Vec<&str> = b["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
                assert_eq!(names, ["docs"], "acme sees only its own collection");
            }
            if path == "/v1/models" {
                assert_eq!(b["data"].as_array().unwrap().len(), 1, "{b}");
                assert_eq!(b["data"][0]["id"], "ragd:docs");
            }
        }
    }
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));

    // Nothing of globex's reaches acme's searches or answers.
    let (_, b, _) = call(h, Method::POST, &u("/api/v1/collections/docs/search"), &Auth::Bearer(&read_a), Some(json!({"query": "launch code", "top_k": 10}))).await;
    let text = b.to_string();
    assert!(text.contains("blue falcon") && !text.contains("red tiger") && !text.contains("green owl"), "{b}");
    let (_, b, _) = call(h, Method::GET, &u("/api/v1/keys"), &Auth::Bearer(&admin_a), None).await;
    let keys = b["keys"].as_array().unwrap();
    assert!(keys.iter().all(|k| k["tenant"] == "acme" && k.get("digest").is_none() && k.get("key").is_none()), "{b}");

    // No credentials, wrong credentials, wrong kind of credential, credentials in the query string.
    let (st, b, headers) = call(h, Method::GET, &u("/api/v1/collections"), &Auth::None, None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("missing_credentials")));
    assert!(headers.get("www-authenticate").is_some());
    let forged = format!("ragd_k_{}_{}", key_id(&read_a), "0".repeat(64));
    let (st, b, _) = call(h, Method::GET, &u("/api/v1/collections"), &Auth::Bearer(&forged), None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let (st, b, _) = call(h, Method::GET, &u("/api/v1/collections"), &Auth::Bearer(&svc_a), None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("invalid_api_key")), "a service token is not an API key");
    let (st, b, _) = call(h, Method::GET, &u("/api/v1/collections"), &Auth::Service(&read_a), None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("invalid_service_token")));
    let (st, b, _) = call(h, Method::GET, &u(&format!("/api/v1/collections?api_key={read_a}")), &Auth::None, None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (400, Some("credentials_in_query")));
    // Open routes stay open.
    assert_eq!(call(h, Method::GET, &u("/health/live"), &Auth::None, None).await.0, 200);
    assert_eq!(call(h, Method::GET, &u("/api/v1/openapi.json"), &Auth::None, None).await.0, 200);

    // The client commands send the key (`--api-key` or RAGD_API_KEY).
    let out = Command::new(env!("CARGO_BIN_EXE_ragd"))
        .args(["search", "launch code", "--collection", "docs", "--server", &s.base])
        .env("RAGD_API_KEY", &read_a)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains("blue falcon") && !printed.contains("red tiger"), "{printed}{}", String::from_utf8_lossy(&out.stderr));

    // A revocation through the CLI, while the server runs, applies to the very next request.
    assert_eq!(call(h, Method::GET, &u("/api/v1/collections"), &Auth::Bearer(&read_a), None).await.0, 200);
    keys_cli(dir.path(), &["revoke", key_id(&read_a)]);
    let (st, b, _) = call(h, Method::GET, &u("/api/v1/collections"), &Auth::Bearer(&read_a), None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("api_key_revoked")));
    // And through the API; another tenant's key cannot be revoked (nor learned of).
    let (st, _, _) = call(h, Method::DELETE, &u(&format!("/api/v1/keys/{}", key_id(&admin_b))), &Auth::Bearer(&admin_a), None).await;
    assert_eq!(st, 404);
    let (st, _, _) = call(h, Method::DELETE, &u(&format!("/api/v1/keys/{}", key_id(&write_a))), &Auth::Bearer(&admin_a), None).await;
    assert_eq!(st, 204);
    assert_eq!(call(h, Method::GET, &u("/api/v1/collections"), &Auth::Bearer(&write_a), None).await.0, 401);
    let listing = keys_cli(dir.path(), &["list"]);
    assert!(listing.contains(key_id(&read_a)) && listing.contains("revoked"), "{listing}");
    assert!(!std::fs::read_to_string(dir.path().join("keys.json")).unwrap().contains(&admin_a), "only digests are stored");
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)).unwrap()
}

/// A JWKS endpoint for the test: serves whatever keys it holds, and counts its requests.
struct Jwks {
    url: String,
    keys: Arc<std::sync::Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    /// While set, the endpoint answers 503 (an identity provider that is down).
    failing: Arc<std::sync::atomic::AtomicBool>,
}

async fn jwks_server(keys: Vec<Value>) -> Jwks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let keys = Arc::new(std::sync::Mutex::new(keys));
    let hits = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (k, hi, f) = (keys.clone(), hits.clone(), failing.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (k, hi, f) = (k.clone(), hi.clone(), f.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if crate::standin::read_request(&mut stream).await.is_err() {
                    return;
                }
                hi.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                }
                let body = json!({"keys": *k.lock().unwrap()}).to_string();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    Jwks { url, keys, hits, failing }
}

/// Issue 5: the JWKS fetch goes through the outbound stack. With the identity provider down, each
/// refresh is retried once, the breaker opens after its minimum of failed calls and then no request
/// reaches the provider; tokens signed with keys fetched before keep working; readiness (still 200:
/// the JWKS is not critical), `/api/v1/status` and the metrics show the open breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_provider_that_is_down_opens_its_breaker_and_known_keys_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let jwk = |name: &str| serde_json::from_slice::<Value>(&fixture(name)).unwrap();
    let jwks = jwks_server(vec![jwk("rsa1.jwk.json")]).await;
    let config = dir.path().join("ragd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
enabled = true
[auth.jwt]
jwks_url = "{}"
jwks_cooldown_ms = 50
[resilience.jwks]
max_attempts = 2
backoff_ms = 5
[resilience.jwks.breaker]
window_size = 4
minimum_calls = 2
failure_rate = 0.9
wait_in_open_ms = 60000
"#,
            jwks.url
        ),
    )
    .unwrap();
    let s = Server::start_with(&dir.path().join("data"), &[("RAGD_CONFIG", config.to_str().unwrap()), NO_GENERATOR, ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    let h = &s.http;
    let u = s.url("/api/v1/collections");
    let rsa1 = EncodingKey::from_rsa_pem(&fixture("rsa1.pem")).unwrap();
    let token = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        let claims = json!({"sub": "ops", "exp": now() + 600, "tenant": "default", "role": "admin"});
        jsonwebtoken::encode(&header, &claims, &rsa1).unwrap()
    };
    let known = token("rsa1");
    let (st, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&known), None).await;
    assert_eq!(st, 200, "{b}");

    jwks.failing.store(true, Ordering::SeqCst);
    let before = jwks.hits.load(Ordering::SeqCst);
    let mut hits = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(80)).await; // past the refresh cooldown
        let (st, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&token(&format!("made-up-{i}"))), None).await;
        assert_eq!((st, b["error"]["code"].as_str()), (401, Some("token_key_unknown")), "{b}");
        hits.push(jwks.hits.load(Ordering::SeqCst) - before);
    }
    // The window holds the start-up fetch's success, so two refreshes of two attempts each (one retry
    // apiece) fill it with failures and open the breaker; the later refreshes reach nobody.
    assert_eq!(hits, vec![2, 4, 4, 4, 4, 4], "provider requests after each unknown kid");
    assert_eq!(call(h, Method::GET, &u, &Auth::Bearer(&known), None).await.0, 200, "a key fetched before still verifies");

    let (st, ready) = s.get("/health/ready").await;
    assert_eq!(st, 200, "{ready}");
    assert_eq!(ready["checks"]["jwks"], json!({"status": "down"}), "anyone sees only ok/down: {ready}");
    let ready: Value = s.http.get(format!("{}/health/ready", s.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["jwks"]["status"], "down", "{ready}");
    assert_eq!(ready["checks"]["jwks"]["breaker"]["state"], "open", "{ready}");
    let (st, status, _) = call(h, Method::GET, &s.url("/api/v1/status"), &Auth::Bearer(&known), None).await;
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["breakers"]["jwks"]["state"], "open", "{status}");
    assert!(status["breakers"]["jwks"]["rejections"].as_u64().unwrap() >= 4, "{status}");
    assert!(status["totals"]["requests"].as_u64().unwrap() >= 8, "the operator sees service-wide totals: {status}");
    let metrics = h.get(format!("{}/metrics", s.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == r#"ragd_breaker_state{dependency="jwks"} 1"#), "no open jwks breaker in /metrics");
}

// Multi-threaded: the JWKS endpoint must answer ragd's start-up fetch while this thread waits for
// the server to print its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_with_pinned_algorithms_and_a_rotating_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let jwk = |name: &str| serde_json::from_slice::<Value>(&fixture(name)).unwrap();
    let jwks = jwks_server(vec![jwk("rsa1.jwk.json")]).await;
    let hs_secret = "a-shared-secret-of-at-least-32-bytes!";
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let rs_pub = String::from_utf8(fixture("rsa1.pub.pem")).unwrap();
    let config = dir.path().join("ragd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
enabled = true
[auth.jwt]
issuer = "https://idp.test"
audience = "ragd"
jwks_url = "{}"
jwks_cooldown_ms = 300
leeway_secs = 0
[[auth.jwt.keys]]
kid = "hs"
algorithm = "HS256"
secret = "{hs_secret}"
[[auth.jwt.keys]]
kid = "es"
algorithm = "ES256"
public_key_pem = """{}"""
[[auth.jwt.keys]]
kid = "rs-static"
algorithm = "RS256"
public_key_pem = """{rs_pub}"""
"#,
            jwks.url,
            ec.public_key_pem()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with(&data, &[("RAGD_CONFIG", config.to_str().unwrap()), NO_GENERATOR, ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    let h = &s.http;
    let u = s.url("/api/v1/collections");
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"iss": "https://idp.test", "aud": "ragd", "sub": "alice", "exp": t + 600, "tenant": "acme", "role": "admin"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey, claims: Value| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let hs = EncodingKey::from_secret(hs_secret.as_bytes());
    let rsa1 = EncodingKey::from_rsa_pem(&fixture("rsa1.pem")).unwrap();
    let rsa2 = EncodingKey::from_rsa_pem(&fixture("rsa2.pem")).unwrap();
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();

    // Accepted: each pinned algorithm, configured keys and a JWKS key.
    for (what, token) in [
        ("HS256", sign(Algorithm::HS256, "hs", &hs, claims(json!({})))),
        ("ES256", sign(Algorithm::ES256, "es", &es, claims(json!({})))),
        ("RS256 configured", sign(Algorithm::RS256, "rs-static", &rsa1, claims(json!({})))),
        ("RS256 from the JWKS", sign(Algorithm::RS256, "rsa1", &rsa1, claims(json!({})))),
    ] {
        let (st, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&token), None).await;
        assert_eq!(st, 200, "{what}: {b}");
    }
    // The claims decide the tenant and the role.
    let admin = sign(Algorithm::HS256, "hs", &hs, claims(json!({})));
    let (st, b, _) = call(h, Method::POST, &u, &Auth::Bearer(&admin), Some(json!({"name": "handbook"}))).await;
    assert_eq!(st, 201, "{b}");
    let reader = sign(Algorithm::HS256, "hs", &hs, claims(json!({"role": ["read"]})));
    let (st, b, _) = call(h, Method::POST, &u, &Auth::Bearer(&reader), Some(json!({"name": "more"}))).await;
    assert_eq!((st, b["error"]["code"].as_str()), (403, Some("insufficient_role")));
    let other = sign(Algorithm::HS256, "hs", &hs, claims(json!({"tenant": "globex"})));
    let (_, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&other), None).await;
    assert_eq!(b["collections"].as_array().unwrap().len(), 0, "globex does not see acme's collection: {b}");

    // Refused, each with its own code.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT", "kid": "rs-static"})), b64(claims(json!({}))));
    let confused = sign(Algorithm::HS256, "rs-static", &EncodingKey::from_secret(rs_pub.as_bytes()), claims(json!({})));
    let vectors = [
        ("alg: none", unsigned, "token_algorithm_not_allowed"),
        ("HS256 signed with the RS256 public key", confused, "token_algorithm_not_allowed"),
        ("expired", sign(Algorithm::HS256, "hs", &hs, claims(json!({"exp": t - 60}))), "token_expired"),
        ("not yet valid", sign(Algorithm::HS256, "hs", &hs, claims(json!({"nbf": t + 3600}))), "token_not_yet_valid"),
        ("wrong aud", sign(Algorithm::HS256, "hs", &hs, claims(json!({"aud": "someone-else"}))), "token_audience_invalid"),
        ("wrong iss", sign(Algorithm::HS256, "hs", &hs, claims(json!({"iss": "https://evil.test"}))), "token_issuer_invalid"),
        ("no exp", sign(Algorithm::HS256, "hs", &hs, claims(json!({"exp": null}))), "token_claim_missing"),
        ("wrong secret", sign(Algorithm::HS256, "hs", &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"), claims(json!({}))), "token_signature_invalid"),
        ("no role", sign(Algorithm::HS256, "hs", &hs, claims(json!({"role": "superuser"}))), "token_claims_invalid"),
        ("not a JWT", "abc.def".to_owned(), "invalid_token"),
    ];
    for (what, token, code) in vectors {
        let (st, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&token), None).await;
        assert_eq!((st, b["error"]["code"].as_str()), (401, Some(code)), "{what}: {b}");
    }
    let (st, b, _) = call(h, Method::GET, &format!("{u}?access_token={admin}"), &Auth::None, None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (400, Some("credentials_in_query")));

    // An unknown kid: one refresh, still unknown → 401. A second one inside the cooldown fetches nothing.
    let rotated = sign(Algorithm::RS256, "rsa2", &rsa2, claims(json!({})));
    // (Past the cooldown of the fetch made at start-up.)
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = jwks.hits.load(Ordering::SeqCst);
    let (st, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&rotated), None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("token_key_unknown")), "{b}");
    assert_eq!(jwks.hits.load(Ordering::SeqCst), before + 1, "an unknown kid causes one JWKS fetch");
    let (st, _, _) = call(h, Method::GET, &u, &Auth::Bearer(&rotated), None).await;
    assert_eq!(st, 401);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), before + 1, "no second fetch within the cooldown");
    // The provider rotates: the new key is accepted after the cooldown; the old one is gone.
    *jwks.keys.lock().unwrap() = vec![jwk("rsa2.jwk.json")];
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (st, b, _) = call(h, Method::GET, &u, &Auth::Bearer(&rotated), None).await;
    assert_eq!(st, 200, "after rotation: {b}");
    assert_eq!(jwks.hits.load(Ordering::SeqCst), before + 2);
}

#[tokio::test]
async fn a_burst_of_150_gets_exactly_what_gcra_allows_and_401s_use_no_quota() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "read", "acme");
    let other = create_key(dir.path(), "read", "acme");
    let s = Server::start_with(dir.path(), &[AUTH_ON, NO_GENERATOR]);
    let h = &s.http;
    let u = s.url("/api/v1/collections");

    // Failed authentication first: 40 requests naming `other`'s id with a wrong secret.
    let forged = format!("ragd_k_{}_{}", key_id(&other), "f".repeat(64));
    for _ in 0..40 {
        assert_eq!(call(h, Method::GET, &u, &Auth::Bearer(&forged), None).await.0, 401);
    }
    let (st, _, headers) = call(h, Method::GET, &u, &Auth::Bearer(&other), None).await;
    assert_eq!(st, 200);
    assert_eq!(headers["ratelimit-remaining"], "99", "the 401s took nothing from the key's quota");

    // 150 back to back against 100 per minute (burst 100): 100 conform at once, then one more each
    // 0.6 s (the emission interval) — so 100 + floor(elapsed / 0.6 s) in all.
    let t = Instant::now();
    let mut results = Vec::new();
    for _ in 0..150 {
        let (st, b, headers) = call(h, Method::GET, &u, &Auth::Bearer(&key), None).await;
        results.push((st, b, headers));
    }
    let elapsed = t.elapsed();
    let allowed = results.iter().filter(|r| r.0 == 200).count();
    let expected = 100 + (elapsed.as_millis() / 600) as usize;
    assert_eq!(allowed, expected, "burst took {elapsed:?}");
    if elapsed < Duration::from_millis(600) {
        // The headers count down 99, 98, ..., 0 on the 100 allowed, then every refusal says 0.
        for (i, r) in results.iter().enumerate().take(100) {
            assert_eq!(r.0, 200);
            assert_eq!(r.2["ratelimit-limit"], "100");
            assert_eq!(r.2["ratelimit-remaining"].to_str().unwrap(), (99 - i).to_string(), "request {i}");
        }
    }
    let refused = results.iter().find(|r| r.0 == 429).expect("a refusal");
    assert_eq!(refused.1["error"]["code"], "rate_limited");
    assert_eq!(refused.2["retry-after"], "1", "the next request conforms 0.6 s later, rounded up");
    assert_eq!(refused.2["ratelimit-remaining"], "0");
    let reset: u64 = refused.2["ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&reset), "the allowance is whole again in a minute: {reset}");
    // Retry-After is right: after it, a request conforms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(call(h, Method::GET, &u, &Auth::Bearer(&key), None).await.0, 200);
    // Decisions are counted by route class.
    let metrics = s.http.get(format!("{}/metrics", s.admin)).send().await.unwrap().text().await.unwrap();
    let limited = metrics
        .lines()
        .find(|l| l.starts_with("ragd_ratelimit_decisions_total{") && l.contains("route_class=\"query\"") && l.contains("decision=\"limited\""))
        .expect("limited series");
    let n: f64 = limited.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n as usize, 150 - allowed, "{limited}");
}

#[tokio::test]
async fn cors_preflight_answers_allowed_origins_only_and_every_response_has_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ragd.toml");
    std::fs::write(&config, "[cors]\nallowed_origins = [\"https://app.example.com\"]\nallow_credentials = true\n").unwrap();
    let s = Server::start_with(&dir.path().join("data"), &[("RAGD_CONFIG", config.to_str().unwrap()), AUTH_ON, NO_GENERATOR]);
    let preflight = |origin: &'static str| {
        s.http
            .request(Method::OPTIONS, s.url("/api/v1/collections"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed_headers = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none(), "{:?}", refused.headers());
    // A real cross-origin request (here refused for lack of a key) carries the CORS headers too, so
    // the page can read the error; the rate-limit headers are exposed.
    let r = s.http.get(s.url("/api/v1/collections")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(r.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase().contains("ratelimit-remaining"));
    // Security headers: on errors, open routes and unknown routes alike.
    for path in ["/api/v1/collections", "/health/live", "/no/such/route"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
    }
}

#[tokio::test]
async fn request_limits_refuse_big_bodies_before_auth_shed_excess_queries_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin", "acme");
    let generator = StandInModelServer::start(Behavior::Hang).await;
    let s = Server::start_with(
        dir.path(),
        &[
            AUTH_ON,
            ("RAGD_RATE_LIMIT__ENABLED", "false"),
            ("RAGD_GENERATOR__KIND", "openai"),
            ("RAGD_GENERATOR__URL", &generator.url),
            ("RAGD_GENERATOR__MODEL", "stand-in"),
            ("RAGD_LIMITS__MAX_CONCURRENT_QUERIES", "1"),
            ("RAGD_LIMITS__QUERY_TIMEOUT_MS", "1500"),
            ("RAGD_LIMITS__JSON_BODY_BYTES", "4096"),
        ],
    );
    let h = &s.http;
    // An announced oversized body is refused before authentication looks at anything.
    let big = vec![b' '; 10_000];
    let r = h.post(s.url("/api/v1/collections/docs/search")).header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "payload_too_large");

    let (st, _, _) = call(h, Method::POST, &s.url("/api/v1/collections"), &Auth::Bearer(&admin), Some(json!({"name": "docs"}))).await;
    assert_eq!(st, 201);
    let url = s.url("/api/v1/collections/docs/documents?wait=true");
    assert_eq!(call(h, Method::POST, &url, &Auth::Bearer(&admin), Some(json!({"text": "The hangar is in building 7."}))).await.0, 200);
    // One question holds the only query slot (its generator hangs); a search meanwhile is shed.
    let q = s.url("/api/v1/collections/docs/query");
    let hanging = {
        let (h, q, admin) = (h.clone(), q.clone(), admin.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = call(&h, Method::POST, &q, &Auth::Bearer(&admin), Some(json!({"question": "Where is the hangar?"}))).await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, b, headers) = call(h, Method::POST, &s.url("/api/v1/collections/docs/search"), &Auth::Bearer(&admin), Some(json!({"query": "hangar"}))).await;
    assert_eq!((st, b["error"]["code"].as_str()), (503, Some("overloaded")), "{b}");
    assert_eq!(headers["retry-after"], "1");
    // The question itself ends at the query timeout (1.5 s), not the generator's 60 s.
    let ((st, b, headers), took) = hanging.await.unwrap();
    assert_eq!((st, b["error"]["code"].as_str()), (503, Some("request_timeout")), "{b}");
    assert!(headers.get("retry-after").is_some());
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The slot is free again.
    let (st, b, _) = call(h, Method::POST, &s.url("/api/v1/collections/docs/search"), &Auth::Bearer(&admin), Some(json!({"query": "hangar"}))).await;
    assert_eq!(st, 200, "{b}");
}

#[tokio::test]
async fn https_serves_http1_and_http2_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    let make = |cn: &str| {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert_a, key_a) = make("ragd test A");
    std::fs::write(&cert_file, &cert_a).unwrap();
    std::fs::write(&key_file, &key_a).unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        &[
            ("RAGD_TLS__CERT_FILE", cert_file.to_str().unwrap()),
            ("RAGD_TLS__KEY_FILE", key_file.to_str().unwrap()),
            ("RAGD_TLS__RELOAD_CHECK_MS", "200"),
            NO_GENERATOR,
        ],
    );
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let port = s.base.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/api/v1/collections");
    let trusting = |pem: &str| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let r = trusting(&cert_a).get(&url).send().await.expect("HTTPS with certificate A");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_some());
    // HTTP/2 by ALPN (curl negotiates it; reqwest here is built for HTTP/1.1 only).
    let ca = dir.path().join("ca-a.pem");
    std::fs::write(&ca, &cert_a).unwrap();
    let curl = |ca: &Path| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_version}", "--http2", "--cacert"])
            .arg(ca)
            .arg(&url)
            .output()
    };
    match curl(&ca) {
        Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("curl is needed for the HTTP/2 check: {e}"),
    }
    // Renewal: new files in place; new connections get the new certificate, no restart.
    let (cert_b, key_b) = make("ragd test B");
    std::fs::write(&key_file, &key_b).unwrap();
    std::fs::write(&cert_file, &cert_b).unwrap();
    let t = Instant::now();
    loop {
        let fresh = trusting(&cert_b).get(&url).send().await;
        if fresh.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the renewed certificate was not picked up: {fresh:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trusting(&cert_a).get(&url).send().await.is_err(), "the old certificate is no longer served");
    // Plain HTTP on the TLS port is refused.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health/live")).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
}

/// The dashboard's routes keep tenants apart like every other: `/api/v1/jobs` lists only the
/// caller's tenant's jobs (newest first, filterable by collection), the chunks of another tenant's
/// document are 404, and `/api/v1/me` reports the caller's allowance without using any of it.
#[tokio::test]
async fn jobs_listing_chunks_and_me_are_scoped_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let acme = create_key(dir.path(), "admin", "acme");
    let globex = create_key(dir.path(), "admin", "globex");
    // 100 query requests per 10 hours: no refill during the test, so the counts below are exact.
    let s = Server::start_with(dir.path(), &[AUTH_ON, NO_GENERATOR, ("RAGD_RATE_LIMIT__QUERY__PERIOD_SECS", "36000")]);
    let h = &s.http;
    let text = "First paragraph about granite lighthouses. ".repeat(60) + "\n\n" + &"Second paragraph about keepers and lamps. ".repeat(60);
    for (key, collection) in [(&acme, "docs"), (&acme, "notes"), (&globex, "docs")] {
        let (st, b, _) = call(h, Method::POST, &s.url("/api/v1/collections"), &Auth::Bearer(key), Some(json!({"name": collection}))).await;
        assert_eq!(st, 201, "{b}");
        let body = json!({"documents": [{"id": "guide", "title": "Guide", "text": text}]});
        let (st, b, _) = call(h, Method::POST, &s.url(&format!("/api/v1/collections/{collection}/documents?wait=true")), &Auth::Bearer(key), Some(body)).await;
        assert_eq!((st, b["status"].as_str()), (200, Some("done")), "{b}");
    }

    let (st, jobs, _) = call(h, Method::GET, &s.url("/api/v1/jobs"), &Auth::Bearer(&acme), None).await;
    assert_eq!(st, 200, "{jobs}");
    let listed: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().map(|j| j["collection"].as_str().unwrap()).collect();
    assert_eq!(listed, ["notes", "docs"], "acme's two jobs, newest first, with public names: {jobs}");
    let (_, only, _) = call(h, Method::GET, &s.url("/api/v1/jobs?collection=docs&limit=5"), &Auth::Bearer(&acme), None).await;
    assert_eq!(only["jobs"].as_array().unwrap().len(), 1, "{only}");
    let (_, theirs, _) = call(h, Method::GET, &s.url("/api/v1/jobs"), &Auth::Bearer(&globex), None).await;
    assert_eq!(theirs["jobs"].as_array().unwrap().len(), 1, "{theirs}");
    assert_ne!(theirs["jobs"][0]["id"], only["jobs"][0]["id"]);

    let (st, chunks, _) = call(h, Method::GET, &s.url("/api/v1/collections/docs/documents/guide/chunks?from=0&limit=50"), &Auth::Bearer(&acme), None).await;
    assert_eq!(st, 200, "{chunks}");
    let total = chunks["total"].as_u64().unwrap();
    let list = chunks["chunks"].as_array().unwrap();
    assert!(total >= 2, "the document has several chunks: {chunks}");
    assert_eq!(list.len() as u64, total);
    let indexes: Vec<u64> = list.iter().map(|c| c["chunk_index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..total).collect::<Vec<_>>(), "in document order");
    assert!(list[0]["text"].as_str().unwrap().contains("granite"));
    let (_, tail, _) = call(h, Method::GET, &s.url("/api/v1/collections/docs/documents/guide/chunks?from=1&limit=1"), &Auth::Bearer(&acme), None).await;
    assert_eq!(tail["chunks"].as_array().unwrap().len(), 1);
    assert_eq!(tail["chunks"][0]["chunk_index"], 1);
    // Globex has its own `docs` with a `guide`, but acme's is not reachable under any name.
    let (st, _, _) = call(h, Method::GET, &s.url("/api/v1/collections/notes/documents/guide/chunks"), &Auth::Bearer(&globex), None).await;
    assert_eq!(st, 404);
    let (st, b, _) = call(h, Method::GET, &s.url("/api/v1/collections/docs/documents/missing/chunks"), &Auth::Bearer(&acme), None).await;
    assert_eq!((st, b["error"]["code"].as_str()), (404, Some("document_not_found")), "{b}");

    // /me: identity and allowance; asking twice uses nothing, a search uses one query request.
    let (st, me, headers) = call(h, Method::GET, &s.url("/api/v1/me"), &Auth::Bearer(&acme), None).await;
    assert_eq!(st, 200, "{me}");
    assert!(headers.get("ratelimit-remaining").is_none(), "/me is not rate-limited");
    assert_eq!((me["tenant"].as_str(), me["role"].as_str(), me["credential"].as_str()), (Some("acme"), Some("admin"), Some("api_key")));
    assert_eq!(me["id"].as_str(), Some(format!("key:{}", key_id(&acme)).as_str()));
    let query_left = |me: &Value| me["rate_limits"]["query"]["remaining"].as_u64().unwrap();
    let before = query_left(&me);
    assert_eq!(me["rate_limits"]["query"]["limit"], 100);
    assert_eq!(query_left(&call(h, Method::GET, &s.url("/api/v1/me"), &Auth::Bearer(&acme), None).await.1), before);
    let (st, _, headers) = call(h, Method::POST, &s.url("/api/v1/collections/docs/search"), &Auth::Bearer(&acme), Some(json!({"query": "keepers"}))).await;
    assert_eq!(st, 200);
    let remaining: u64 = headers["ratelimit-remaining"].to_str().unwrap().parse().unwrap();
    let after = query_left(&call(h, Method::GET, &s.url("/api/v1/me"), &Auth::Bearer(&acme), None).await.1);
    assert_eq!((after, remaining), (before - 1, before - 1), "/me agrees with the search's RateLimit-Remaining");
    let (st, _, _) = call(h, Method::GET, &s.url("/api/v1/me"), &Auth::None, None).await;
    assert_eq!(st, 401);

    // Service-wide figures are the operator's: a tenant's admin sees readiness and breakers only.
    let (st, status, _) = call(h, Method::GET, &s.url("/api/v1/status"), &Auth::Bearer(&acme), None).await;
    assert_eq!(st, 200, "{status}");
    assert!(status.get("totals").is_none() && status.get("jobs").is_none(), "{status}");
    assert!(status["breakers"]["embedder"].is_object(), "{status}");
}

/// The default tenant is a tenant like any other: its keys cannot reach another tenant's
/// collection by the stored name (`acme.docs`) on any route that names a collection — reads,
/// answers, the OpenAI route, uploads (with an `Idempotency-Key` another tenant used) and deletes.
#[tokio::test]
async fn default_tenant_keys_cannot_reach_another_tenant_by_its_stored_name() {
    let dir = tempfile::tempdir().unwrap();
    let acme = create_key(dir.path(), "admin", "acme");
    let default_read = create_key(dir.path(), "read", "default");
    let default_admin = create_key(dir.path(), "admin", "default");
    let s = Server::start_with(dir.path(), &[AUTH_ON, NO_GENERATOR, ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    let h = &s.http;
    let u = |p: &str| s.url(p);
    let (st, b, _) = call(h, Method::POST, &u("/api/v1/collections"), &Auth::Bearer(&acme), Some(json!({"name": "docs"}))).await;
    assert_eq!(st, 201, "{b}");
    let url = u("/api/v1/collections/docs/documents?wait=true");
    let (st, b, _) = call(h, Method::POST, &url, &Auth::Bearer(&acme), Some(json!({"id": "a1", "text": "Acme's launch code is blue falcon."}))).await;
    assert_eq!(st, 200, "{b}");
    // The default tenant has its own `docs`, so a plain name resolves to it, never to acme's.
    let (st, b, _) = call(h, Method::POST, &u("/api/v1/collections"), &Auth::Bearer(&default_admin), Some(json!({"name": "docs"}))).await;
    assert_eq!(st, 201, "{b}");

    let stored = "acme.docs";
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/collections/{stored}"), None),
        (Method::POST, format!("/api/v1/collections/{stored}/search"), Some(json!({"query": "launch code"}))),
        (Method::POST, format!("/api/v1/collections/{stored}/query"), Some(json!({"question": "What is the launch code?"}))),
        (Method::GET, format!("/api/v1/collections/{stored}/documents"), None),
        (Method::GET, format!("/api/v1/collections/{stored}/documents/a1"), None),
        (Method::GET, format!("/api/v1/collections/{stored}/documents/a1/chunks"), None),
        (Method::POST, "/v1/chat/completions".into(), Some(json!({"model": format!("ragd:{stored}"), "messages": [{"role": "user", "content": "What is the launch code?"}]}))),
        (Method::POST, format!("/api/v1/collections/{stored}/documents?wait=true"), Some(json!({"id": "x", "text": "planted"}))),
        (Method::DELETE, format!("/api/v1/collections/{stored}/documents/a1"), None),
        (Method::DELETE, format!("/api/v1/collections/{stored}"), None),
    ];
    let mut failures = Vec::new();
    for key in [&default_read, &default_admin] {
        for (method, path, body) in &routes {
            let (st, b, _) = call(h, method.clone(), &u(path), &Auth::Bearer(key), body.clone()).await;
            let leaked = b.to_string().contains("blue falcon");
            // 403 (a read key on a write route), 400 (not a collection name) or 404; never acme's data.
            if ![400, 403, 404].contains(&st) || leaked {
                failures.push(format!("{method} {path}: {st} {b}"));
            }
        }
    }
    assert!(failures.is_empty(), "the default tenant reached acme's collection:\n{}", failures.join("\n"));
    // Acme's collection and document are intact.
    let (st, b, _) = call(h, Method::GET, &u("/api/v1/collections/docs/documents/a1"), &Auth::Bearer(&acme), None).await;
    assert_eq!(st, 200, "{b}");
}

/// The access matrix with JWTs beside keys, the default tenant as one tenant among others, and an
/// `Idempotency-Key` another tenant used: no principal of another tenant — key or JWT, read or
/// admin, default tenant or not — reaches globex's collection, document or job, by its public name or
/// its stored name, on any route; replaying globex's idempotency key never returns globex's job.
#[tokio::test]
async fn jwts_and_keys_of_other_tenants_never_reach_a_tenants_data() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "another-shared-secret-of-32-bytes-at-least";
    let config = dir.path().join("ragd.toml");
    std::fs::write(
        &config,
        format!("[auth]\nenabled = true\n[auth.jwt]\nissuer = \"https://idp.test\"\naudience = \"ragd\"\n[[auth.jwt.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let globex = create_key(&data, "admin", "globex");
    let keys: Vec<(String, String)> = [("read", "default"), ("admin", "default"), ("read", "acme"), ("admin", "acme")]
        .iter()
        .map(|(role, tenant)| (format!("key {role}@{tenant}"), create_key(&data, role, tenant)))
        .collect();
    let s = Server::start_with(&data, &[("RAGD_CONFIG", config.to_str().unwrap()), NO_GENERATOR, ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    let h = &s.http;
    let u = |p: &str| s.url(p);
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let jwt = |tenant: &str, role: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hs".into());
        let claims = json!({"iss": "https://idp.test", "aud": "ragd", "sub": "mallory", "exp": now() + 600, "tenant": tenant, "role": role});
        jsonwebtoken::encode(&header, &claims, &hs).unwrap()
    };
    let mut principals = keys;
    for (tenant, role) in [("default", "read"), ("default", "admin"), ("acme", "read"), ("acme", "admin")] {
        principals.push((format!("jwt {role}@{tenant}"), jwt(tenant, role)));
    }

    // Globex's collection, a document and the job that made it, under an idempotency key.
    let (st, b, _) = call(h, Method::POST, &u("/api/v1/collections"), &Auth::Bearer(&globex), Some(json!({"name": "secret"}))).await;
    assert_eq!(st, 201, "{b}");
    let upload = |auth: &str, c: &str| {
        h.post(u(&format!("/api/v1/collections/{c}/documents?wait=true")))
            .bearer_auth(auth.to_owned())
            .header("Idempotency-Key", "shared-key-1")
            .json(&json!({"id": "g1", "text": "Globex's vault code is green owl."}))
    };
    let r = upload(&globex, "secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let job: Value = r.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();

    let mut failures = Vec::new();
    for (who, token) in &principals {
        for name in ["secret", "globex.secret"] {
            let routes: Vec<(Method, String, Option<Value>)> = vec![
                (Method::GET, format!("/api/v1/collections/{name}"), None),
                (Method::POST, format!("/api/v1/collections/{name}/search"), Some(json!({"query": "vault code"}))),
                (Method::POST, format!("/api/v1/collections/{name}/query"), Some(json!({"question": "What is the vault code?"}))),
                (Method::GET, format!("/api/v1/collections/{name}/documents"), None),
                (Method::GET, format!("/api/v1/collections/{name}/documents/g1"), None),
                (Method::GET, format!("/api/v1/collections/{name}/documents/g1/chunks"), None),
                (Method::POST, "/v1/chat/completions".into(), Some(json!({"model": format!("ragd:{name}"), "messages": [{"role": "user", "content": "What is the vault code?"}]}))),
                (Method::DELETE, format!("/api/v1/collections/{name}/documents/g1"), None),
                (Method::DELETE, format!("/api/v1/collections/{name}"), None),
                (Method::GET, format!("/api/v1/jobs/{job_id}"), None),
            ];
            for (method, path, body) in routes {
                let (st, b, _) = call(h, method.clone(), &u(&path), &Auth::Bearer(token), body).await;
                let text = b.to_string();
                if ![400, 403, 404].contains(&st) || text.contains("green owl") || text.contains("globex") {
                    failures.push(format!("{who}: {method} {path}: {st} {b}"));
                }
            }
            // The idempotency key globex used, replayed at globex's collection: never globex's job.
            let r = upload(token, name).send().await.unwrap();
            let st = r.status().as_u16();
            let text = r.text().await.unwrap();
            if ![400, 403, 404].contains(&st) || text.contains(&job_id) {
                failures.push(format!("{who}: idempotent upload to {name}: {st} {text}"));
            }
        }
    }
    // An admin of another tenant replaying the key at its own collection gets a job of its own.
    let (_, acme_admin) = principals.iter().find(|(w, _)| w == "jwt admin@acme").unwrap();
    let (st, b, _) = call(h, Method::POST, &u("/api/v1/collections"), &Auth::Bearer(acme_admin), Some(json!({"name": "secret"}))).await;
    assert_eq!(st, 201, "{b}");
    let r = upload(acme_admin, "secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let own: Value = r.json().await.unwrap();
    assert_ne!(own["id"].as_str(), Some(job_id.as_str()), "{own}");
    assert!(failures.is_empty(), "{} cells reached globex's data:\n{}", failures.len(), failures.join("\n"));

    // Globex's data is intact, and the two `secret` collections hold their own documents.
    let (st, b, _) = call(h, Method::POST, &u("/api/v1/collections/secret/search"), &Auth::Bearer(&globex), Some(json!({"query": "vault code"}))).await;
    assert_eq!(st, 200, "{b}");
    assert!(b.to_string().contains("green owl"), "{b}");
    let (_, b, _) = call(h, Method::GET, &u("/api/v1/collections"), &Auth::Bearer(&globex), None).await;
    assert_eq!(b["collections"].as_array().map(Vec::len), Some(1), "{b}");
}

/// Issue 18: a JWKS key the identity provider removed stops verifying once the cached JWKS expires
/// and the provider answers without it; a key fetched before keeps verifying only while the
/// provider cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_provider_removed_stops_verifying_and_stale_keys_serve_only_while_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let jwk = |name: &str| serde_json::from_slice::<Value>(&fixture(name)).unwrap();
    let jwks = jwks_server(vec![jwk("rsa1.jwk.json")]).await;
    let config = dir.path().join("ragd.toml");
    std::fs::write(&config, format!("[auth]\nenabled = true\n[auth.jwt]\njwks_url = \"{}\"\njwks_cooldown_ms = 50\njwks_cache_secs = 1\n[resilience.jwks]\nmax_attempts = 1\n[resilience.jwks.breaker]\nminimum_calls = 100\n", jwks.url)).unwrap();
    // (The breaker stays closed here: an open one would rightly keep serving the stale key.)
    let s = Server::start_with(&dir.path().join("data"), &[("RAGD_CONFIG", config.to_str().unwrap()), NO_GENERATOR, ("RAGD_RATE_LIMIT__ENABLED", "false")]);
    let u = s.url("/api/v1/collections");
    let rsa1 = EncodingKey::from_rsa_pem(&fixture("rsa1.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa1".into());
    let token = jsonwebtoken::encode(&header, &json!({"sub": "ops", "exp": now() + 600, "tenant": "default", "role": "admin"}), &rsa1).unwrap();
    let status = async || call(&s.http, Method::GET, &u, &Auth::Bearer(&token), None).await;
    assert_eq!(status().await.0, 200);

    // The provider is down past the cache's lifetime: the key fetched before still verifies.
    jwks.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status().await.0, 200, "a stale key serves while the provider cannot be reached");

    // The provider is back and no longer lists the key: it is refused once the cache has expired.
    *jwks.keys.lock().unwrap() = vec![jwk("rsa2.jwk.json")];
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (st, b, _) = status().await;
    assert_eq!((st, b["error"]["code"].as_str()), (401, Some("token_key_unknown")), "{b}");
}
