//! `/health/live` (the process answers) and `/health/ready` (every dependency answers).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::AppState;

/// A probe slower than this counts as down: readiness must answer fast for load balancers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn live() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

#[derive(Serialize)]
struct Check {
    status: &'static str,
    /// `false` for dependencies ragd answers without (a generator: answers become extractive).
    critical: bool,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn probe<F: std::future::Future<Output = ragd_core::Result<()>>>(f: F) -> Check {
    let t = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, f).await;
    let latency_ms = (t.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    match result {
        Ok(Ok(())) => Check { status: "ok", critical: true, latency_ms, error: None },
        Ok(Err(e)) => Check { status: "down", critical: true, latency_ms, error: Some(e.to_string()) },
        Err(_) => Check { status: "down", critical: true, latency_ms, error: Some("probe timed out".into()) },
    }
}

/// Probes every dependency: ready when every critical one answers. A generator that is down makes
/// the status `degraded` (answers are extractive) but keeps the replica in its load balancer.
pub async fn readiness(engine: &ragd_core::engine::Engine) -> (bool, serde_json::Value) {
    let mut checks = BTreeMap::new();
    checks.insert("vector_store".to_owned(), probe(engine.store().ready()).await);
    checks.insert("embedder".to_owned(), probe(engine.embedder().ready()).await);
    for (name, g) in engine.generators().all() {
        let mut check = probe(g.ready()).await;
        check.critical = false;
        let key = if name == "default" { "generator".to_owned() } else { format!("generator:{name}") };
        checks.insert(key, check);
    }
    let ready = checks.values().all(|c| c.status == "ok" || !c.critical);
    let all_ok = checks.values().all(|c| c.status == "ok");
    engine.metrics().ready.set(i64::from(ready));
    let status = if !ready { "unavailable" } else if all_ok { "ok" } else { "degraded" };
    (ready, json!({"status": status, "checks": checks}))
}

pub async fn ready(State(st): State<AppState>) -> Response {
    let (ready, body) = readiness(&st.engine).await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// `/metrics` (admin listener): refreshes the gauges read from storage and readiness, then encodes.
pub async fn metrics(State(st): State<AppState>) -> Response {
    if let Err(e) = st.engine.refresh_metrics().await {
        tracing::warn!(error = %e, "could not refresh storage gauges for /metrics");
    }
    readiness(&st.engine).await;
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        st.engine.metrics().encode(),
    )
        .into_response()
}
