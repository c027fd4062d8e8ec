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
    /// How long the probe took (absent for checks that report a past outcome instead of probing).
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The dependency's circuit breaker, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker: Option<ragd_core::breaker::BreakerStatus>,
}

async fn probe<F: std::future::Future<Output = ragd_core::Result<()>>>(f: F) -> Check {
    let t = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, f).await;
    let latency_ms = Some((t.elapsed().as_secs_f64() * 1e4).round() / 10.0);
    match result {
        Ok(Ok(())) => Check { status: "ok", critical: true, latency_ms, error: None, breaker: None },
        Ok(Err(e)) => Check { status: "down", critical: true, latency_ms, error: Some(e.to_string()), breaker: None },
        Err(_) => Check { status: "down", critical: true, latency_ms, error: Some("probe timed out".into()), breaker: None },
    }
}

/// Probes every dependency: ready when every critical one answers. A generator that is down makes
/// the status `degraded` (answers are extractive) but keeps the replica in its load balancer.
pub async fn readiness(st: &AppState) -> (bool, serde_json::Value) {
    let engine = &st.engine;
    let mut checks = BTreeMap::new();
    // Every probe at once: readiness answers within one probe timeout, whatever the number of checks.
    let generators = engine.generators().all();
    let shared_limiter = async {
        let t = Instant::now();
        let r = tokio::time::timeout(PROBE_TIMEOUT, st.gateway.limiter_ready()).await;
        (r, t.elapsed())
    };
    let (mut store, mut embedder, generator_checks, (limiter, limiter_took)) = tokio::join!(
        probe(engine.store().ready()),
        probe(engine.embedder().ready()),
        futures::future::join_all(generators.iter().map(|(_, g)| probe(g.ready()))),
        shared_limiter,
    );
    // Redis (cluster mode): not critical. Without it the replica serves with its own rate limits and
    // no shared cache, and says so here.
    let redis = match limiter {
        Ok(None) => None,
        Ok(Some(Ok(()))) => Some(("ok", None)),
        Ok(Some(Err(e))) => Some(("down", Some(format!("{e}; rate limits are per replica and the query cache is bypassed until it answers")))),
        Err(_) => Some(("down", Some("probe timed out; rate limits are per replica and the query cache is bypassed".to_owned()))),
    };
    if let Some((status, error)) = redis {
        let latency_ms = Some((limiter_took.as_secs_f64() * 1e4).round() / 10.0);
        checks.insert("redis".to_owned(), Check { status, critical: false, latency_ms, error, breaker: None });
    }
    store.breaker = Some(engine.store_breaker_status());
    checks.insert("vector_store".to_owned(), store);
    embedder.breaker = engine.embedder().breaker_status();
    checks.insert("embedder".to_owned(), embedder);
    for ((name, g), mut check) in generators.iter().zip(generator_checks) {
        check.critical = false;
        check.breaker = g.breaker_status();
        let key = if name == "default" { "generator".to_owned() } else { format!("generator:{name}") };
        checks.insert(key, check);
    }
    // The JWKS is not probed here (that would make every probe a request to the identity provider):
    // its check is the last fetch's outcome. Tokens verify with the keys fetched before meanwhile.
    if let Some((last, breaker)) = st.gateway.jwks_health().await {
        let (status, error) = match last {
            Ok(()) => ("ok", None),
            Err(e) => ("down", Some(e)),
        };
        checks.insert("jwks".to_owned(), Check { status, critical: false, latency_ms: None, error, breaker: Some(breaker) });
    }
    let ready = checks.values().all(|c| c.status == "ok" || !c.critical);
    let all_ok = checks.values().all(|c| c.status == "ok");
    engine.metrics().ready.set(i64::from(ready));
    let status = if !ready { "unavailable" } else if all_ok { "ok" } else { "degraded" };
    (ready, json!({"status": status, "checks": checks}))
}

/// `/health/ready` on the admin listener: every check with its details (latency, error text,
/// breaker counts), for the operator.
pub async fn ready(State(st): State<AppState>) -> Response {
    let (ready, body) = readiness(&st).await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// `/health/ready` on the API listener, which anyone can reach: the overall status and each
/// dependency's `ok`/`down`, nothing more (no upstream error text, breaker counts or latencies; those
/// are on the admin listener and in the admin-only `/api/v1/status`).
pub async fn ready_public(State(st): State<AppState>) -> Response {
    let (ready, body) = readiness(&st).await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(redacted(&body))).into_response()
}

fn redacted(body: &serde_json::Value) -> serde_json::Value {
    let checks: serde_json::Map<String, serde_json::Value> = body["checks"]
        .as_object()
        .map(|c| c.iter().map(|(name, check)| (name.clone(), json!({"status": check["status"]}))).collect())
        .unwrap_or_default();
    json!({"status": body["status"], "checks": checks})
}

/// `GET /api/v1/status` (admin): version, uptime, readiness with every check, the circuit breakers;
/// for the operator (the default tenant's admins) also unfinished jobs and service-wide totals.
pub async fn status(State(st): State<AppState>, axum::Extension(p): axum::Extension<ragd_core::auth::Principal>) -> Response {
    if let Err(e) = p.require(ragd_core::auth::Role::Admin) {
        return crate::error::ApiError(e).into_response();
    }
    let (ready, readiness) = readiness(&st).await;
    let mut breakers: BTreeMap<String, ragd_core::breaker::BreakerStatus> = st.engine.breakers().into_iter().collect();
    if let Some((_, jwks)) = st.gateway.jwks_health().await {
        breakers.insert("jwks".to_owned(), jwks);
    }
    // Service-wide counts are the operator's (admins of the default tenant): another tenant's admin
    // would learn other tenants' volume from them.
    let operator = p.tenant == ragd_core::auth::DEFAULT_TENANT;
    let mut body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(),
        "ready": ready,
        "readiness": readiness,
        "breakers": breakers,
        "auth": {"enabled": st.gateway.auth_enabled()},
    });
    if operator {
        let unfinished = st.engine.unfinished_jobs().await.unwrap_or_default();
        let count = |s: &str| unfinished.iter().filter(|j| j.status.as_str() == s).count();
        body["jobs"] = json!({"queued": count("queued"), "running": count("running")});
        body["totals"] = json!(st.engine.metrics().summary());
    }
    axum::Json(body).into_response()
}

/// `/metrics` (admin listener): refreshes the gauges read from storage and readiness, then encodes.
pub async fn metrics(State(st): State<AppState>) -> Response {
    if let Err(e) = st.engine.refresh_metrics().await {
        tracing::warn!(error = %e, "could not refresh storage gauges for /metrics");
    }
    readiness(&st).await;
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        st.engine.metrics().encode(),
    )
        .into_response()
}
