//! Observability: `/metrics` on the admin listener, scraped by a real Prometheus; request ids on
//! responses and log lines; the shipped dashboard and alert rules name only metrics ragd exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) async fn metrics_text(server: &Server) -> String {
    let r = server.http.get(format!("{}/metrics", server.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of one sample line (`name{labels} value`), matched by its exact name and label text.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

async fn seed(server: &Server) {
    server.create("obs").await;
    let docs = json!({"documents": [
        {"id": "a", "text": "Prometheus scrapes metrics over HTTP every few seconds."},
        {"id": "b", "text": "Grafana draws dashboards from Prometheus queries."},
        {"id": "c", "text": "Alertmanager routes alerts to people who can act on them."},
    ]});
    let (s, b) = server.post("/api/v1/collections/obs/documents?wait=true", docs).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn metrics_count_requests_and_stages_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    seed(&server).await;
    // Not on the API listener: metrics are for operators.
    let (s, _) = server.get("/metrics").await;
    assert_eq!(s, 404);

    let before = metrics_text(&server).await;
    let searches = sample(&before, "ragd_stage_duration_seconds_count{stage=\"search\"}").unwrap();
    for q in ["metrics", "dashboards", "alerts", "scrapes"] {
        server.search("obs", json!({"query": q})).await;
    }
    let (s, _) = server.post("/api/v1/collections/obs/query", json!({"question": "What draws dashboards?"})).await;
    assert_eq!(s, 200);
    let (s, _) = server.get("/api/v1/collections/nope").await;
    assert_eq!(s, 404);

    let text = metrics_text(&server).await;
    // 4 searches + the query's retrieval.
    assert_eq!(sample(&text, "ragd_stage_duration_seconds_count{stage=\"search\"}"), Some(searches + 5.0), "{text}");
    assert_eq!(
        sample(&text, "ragd_http_requests_total{route=\"/api/v1/collections/{name}/search\",method=\"POST\",status=\"2xx\"}"),
        Some(4.0)
    );
    assert_eq!(sample(&text, "ragd_http_requests_total{route=\"/api/v1/collections/{name}\",method=\"GET\",status=\"4xx\"}"), Some(1.0));
    assert!(!text.contains("route=\"/api/v1/collections/nope\""), "labels are route templates, not raw paths");
    assert_eq!(sample(&text, "ragd_degraded_total{dependency=\"generator\"}"), Some(1.0), "the extractive answer is counted");
    assert_eq!(sample(&text, "ragd_collection_documents{collection=\"obs\"}"), Some(3.0));
    assert_eq!(sample(&text, "ragd_collection_chunks{collection=\"obs\"}"), Some(3.0));
    assert_eq!(sample(&text, "ragd_job_duration_seconds_count{state=\"done\"}"), Some(1.0));
    for stage in ["parse", "chunk", "embed", "upsert", "ttft"] {
        assert!(sample(&text, &format!("ragd_stage_duration_seconds_count{{stage=\"{stage}\"}}")).unwrap() >= 1.0, "{stage}");
    }
    assert_eq!(sample(&text, "ragd_ready"), Some(1.0));
    // The query-embedding cache: four distinct searches and the question missed; a repeat hits.
    let hits = "ragd_cache_requests_total{cache=\"query_embedding\",result=\"hit\"}";
    let misses = "ragd_cache_requests_total{cache=\"query_embedding\",result=\"miss\"}";
    assert_eq!(sample(&text, hits), Some(0.0), "{text}");
    assert_eq!(sample(&text, misses), Some(5.0), "{text}");
    server.search("obs", json!({"query": "metrics"})).await;
    let after = metrics_text(&server).await;
    assert_eq!(sample(&after, hits), Some(1.0));
    assert_eq!(sample(&after, misses), Some(5.0));
    assert!(text.contains("ragd_build_info{version=\""));
    assert!(sample(&text, "ragd_http_requests_in_flight").is_some());

    // Request ids: generated when absent, echoed when given.
    let r = server.http.get(server.url("/health/live")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 36, "a UUID is generated");
    let r = server.http.get(server.url("/health/live")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_prometheus(target: &str) -> Prometheus {
    let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].into_iter().find(|p| Path::new(p).exists());
    let bin = bin.expect("Prometheus is not installed: scripts/test.sh installs Debian's `prometheus` package");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ragd\n    static_configs:\n      - targets: ['{target}']\n"))
        .unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while !reqwest::get(format!("{url}/-/ready")).await.is_ok_and(|r| r.status().is_success()) {
        assert!(t.elapsed() < Duration::from_secs(30), "Prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Prometheus { child, url, _dir: dir }
}

/// One instant-vector value from Prometheus' HTTP API (`None` while the series is absent).
async fn prom_value(prom: &Prometheus, query: &str) -> Option<f64> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_plausible_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    let target = server.admin.trim_start_matches("http://").to_owned();
    let prom = start_prometheus(&target).await;
    seed(&server).await;
    let searches = 7;
    for i in 0..searches {
        server.search("obs", json!({"query": format!("metrics {i}")})).await;
    }
    // Wait for a scrape that has seen every search.
    let search_count = r#"ragd_stage_duration_seconds_count{job="ragd",stage="search"}"#;
    let t = Instant::now();
    loop {
        if prom_value(&prom, search_count).await == Some(searches as f64) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "Prometheus never saw {searches} searches: {:?}", prom_value(&prom, search_count).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(prom_value(&prom, r#"up{job="ragd"}"#).await, Some(1.0));
    assert_eq!(
        prom_value(&prom, r#"sum(ragd_http_requests_total{route="/api/v1/collections/{name}/search",status="2xx"})"#).await,
        Some(searches as f64)
    );
    assert_eq!(prom_value(&prom, r#"ragd_collection_documents{collection="obs"}"#).await, Some(3.0));
    assert_eq!(prom_value(&prom, "ragd_ready").await, Some(1.0));
    assert_eq!(prom_value(&prom, "count(ragd_build_info)").await, Some(1.0));
    // Latency quantiles come out as plausible numbers (a search here takes well under 10 s).
    let p95 = prom_value(&prom, r#"histogram_quantile(0.95, sum by (le) (ragd_stage_duration_seconds_bucket{stage="search"}))"#).await.unwrap();
    assert!(p95 > 0.0 && p95 < 10.0, "search p95 {p95}");
}

/// Metric names in PromQL expressions, with histogram/counter suffixes kept as written.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ragd_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// Sample names a live `/metrics` can carry, from its `# TYPE` lines.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        out.insert(name.to_owned());
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {}
        }
    }
    out
}

/// Metrics the dashboard and alerts already show whose producers land with later issues. Each must
/// NOT be exported yet: when one is, this list must shrink (the test fails until it does).
const PENDING: &[(&str, &str)] = &[
];

#[tokio::test]
async fn the_dashboard_and_alert_rules_name_only_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // The built-in generator, and some traffic: labelled series appear once they have happened.
    let server = Server::start(dir.path());
    seed(&server).await;
    server.search("obs", json!({"query": "alerts"})).await;
    let (s, b) = server.post("/api/v1/collections/obs/query", json!({"question": "What routes alerts?"})).await;
    assert_eq!(s, 200, "{b}");
    let exported = exported_names(&metrics_text(&server).await);
    let dashboard = std::fs::read_to_string(repo().join("deploy/grafana/ragd-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = String::new();
    fn collect(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" {
                        out.push_str(v.as_str().unwrap_or_default());
                        out.push('\n');
                    } else {
                        collect(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(exprs.lines().count() > 20, "the dashboard has queries");
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/ragd-alerts.yml")).unwrap();
    let used: BTreeSet<String> = names_in(&exprs).into_iter().chain(names_in(&rules)).collect();
    let mut missing = Vec::new();
    for name in &used {
        if let Some((_, why)) = PENDING.iter().find(|(p, _)| p == name) {
            eprintln!("NOTE: {name} is shown by the dashboard but not exported yet ({why})");
            assert!(!exported.contains(name), "{name} is exported now: remove it from PENDING");
            continue;
        }
        if !exported.contains(name) {
            missing.push(name.clone());
        }
    }
    assert!(missing.is_empty(), "the dashboard or rules use metrics ragd does not export: {missing:?}\nexported: {exported:?}");
}

#[test]
fn promtool_accepts_the_shipped_configuration_and_rules() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].into_iter().find(|p| Path::new(p).exists());
    let promtool = promtool.expect("promtool is not installed: scripts/test.sh installs Debian's `prometheus` package");
    let deploy = repo().join("deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "ragd-alerts.yml"],
        vec!["test", "rules", "ragd-alerts.test.yml"],
    ] {
        let out = Command::new(promtool).args(&args).current_dir(&deploy).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ragd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--models")
        .arg(crate::support::models_dir())
        .env("RAGD_ADMIN_LISTEN", "")
        .env("RAGD_GENERATOR__KIND", "none")
        .env("RAGD_LOG_FORMAT", "json")
        .env("RAGD_LOG", "warn,tower_http=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let base = loop {
        let line = lines.next().expect("ragd exited").unwrap();
        if let Some(url) = line.strip_prefix("ragd listening on ") {
            break url.trim().to_owned();
        }
    };
    let r = reqwest::Client::new().get(format!("{base}/api/v1/collections/missing")).header("x-request-id", "req-json-7").send().await.unwrap();
    assert_eq!(r.status(), 404);
    // With admin_listen empty, /metrics is served on the API listener.
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "no JSON log lines:\n{text}");
    let tagged = lines.iter().filter(|l| l.to_string().contains("req-json-7")).count();
    assert!(tagged >= 1, "no log line carries the request id:\n{text}");
}

/// OpenTelemetry, off by default: with `otel.endpoint` set, each request's span (carrying its request
/// id, and joined to the caller's trace by `traceparent`) is exported over OTLP/HTTP. No collector can
/// be installed on this machine, so the receiver is a stand-in that only records what it is sent.
/// The payload is OTLP protobuf, which stores strings as plain UTF-8 and ids as raw bytes, so both can
/// be found in it without decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let sink = sink.clone();
            tokio::spawn(async move {
                while let Ok((_, path, body)) = crate::standin::read_request(&mut stream).await {
                    sink.lock().unwrap().push((path, body));
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[("RAGD_OTEL__ENDPOINT", &endpoint), ("RAGD_OTEL__SERVICE_NAME", "ragd-otel-test"), ("OTEL_BSP_SCHEDULE_DELAY", "200"), ("RAGD_GENERATOR__KIND", "none")],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = server
        .http
        .get(server.url("/api/v1/collections"))
        .header("x-request-id", "otel-probe-7f3a")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let trace_bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let t = Instant::now();
    loop {
        let found = received.lock().unwrap().iter().find(|(_, body)| contains(body, b"otel-probe-7f3a")).cloned();
        if let Some((path, body)) = found {
            assert_eq!(path, "/v1/traces");
            assert!(contains(&body, b"ragd-otel-test"), "the service name is in the resource");
            assert!(contains(&body, &trace_bytes), "the span joined the caller's trace (traceparent)");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no span with the request id reached the OTLP receiver: {} exports", received.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
