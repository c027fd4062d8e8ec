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
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn probe<F: std::future::Future<Output = ragd_core::Result<()>>>(f: F) -> Check {
    let t = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, f).await;
    let latency_ms = (t.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    match result {
        Ok(Ok(())) => Check { status: "ok", latency_ms, error: None },
        Ok(Err(e)) => Check { status: "down", latency_ms, error: Some(e.to_string()) },
        Err(_) => Check { status: "down", latency_ms, error: Some("probe timed out".into()) },
    }
}

pub async fn ready(State(st): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    checks.insert("vector_store", probe(st.engine.store().ready()).await);
    checks.insert("embedder", probe(st.engine.embedder().ready()).await);
    let all_ok = checks.values().all(|c| c.status == "ok");
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({"status": if all_ok { "ok" } else { "unavailable" }, "checks": checks}))).into_response()
}
