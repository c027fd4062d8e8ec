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
    let in_flight = InFlight::new(metrics.clone());
    let t = Instant::now();
    let response = next.run(req).await;
    drop(in_flight);
    metrics.observe_http(&route, &method, response.status().as_u16(), t.elapsed().as_secs_f64());
    response
}

/// Counts a request in flight until dropped — also when the client goes away and the handler's
/// future is dropped mid-way.
struct InFlight(std::sync::Arc<ragd_core::metrics::Metrics>);

impl InFlight {
    fn new(m: std::sync::Arc<ragd_core::metrics::Metrics>) -> Self {
        m.http_in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.http_in_flight.dec();
    }
}
