//! HTTP metrics: requests, latency and in-flight requests by route template, method and status class.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Runs inside the router on matched routes only, so the route label is always a template
/// (`/api/v1/collections/{name}/search`), never a raw path.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    // Only standard methods are labels; anything else a client invents is `other`.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let metrics = st.engine.metrics().clone();
    metrics.http_in_flight.inc();
    let t = Instant::now();
    let response = next.run(req).await;
    metrics.http_in_flight.dec();
    metrics.observe_http(&route, &method, response.status().as_u16(), t.elapsed().as_secs_f64());
    response
}
