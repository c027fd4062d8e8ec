//! ragd-server: the HTTP edge. `router` builds the axum app over an `Engine`; `serve` runs it on
//! listeners it is given (port 0 in tests) until a shutdown future resolves. Only this crate knows HTTP.

mod answers;
mod conn;
mod error;
mod extract;
mod fetch;
pub mod gateway;
mod health;
mod jwt;
mod keys;
mod mcp;
mod metrics;
mod openapi;
mod routes;
mod snapshots;
mod tls;
mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::middleware;
use axum::routing::{get, post};
use ragd_core::engine::Engine;
use tokio::net::TcpListener;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_http::catch_panic::CatchPanicLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tower_http::trace::TraceLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use error::{ApiError, ErrorBody, error_response};
pub use gateway::Gateway;
pub use openapi::openapi_json;
pub use tls::{TlsFiles, check as check_tls};

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub gateway: Arc<Gateway>,
    pub started: std::time::Instant,
    /// Open MCP sessions (`/mcp`).
    pub mcp: Arc<mcp::Sessions>,
    /// URL ingest (`fetch.rs`); `None` on the admin listener, which ingests nothing.
    pub fetcher: Option<Arc<fetch::Fetcher>>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application.
pub fn router(engine: Arc<Engine>, gateway: Arc<Gateway>) -> Router {
    // Multipart bodies are bounded by this layer; JSON bodies by the handler (same limit), and an
    // announced Content-Length over it is refused before reading (gateway.rs).
    let upload_limit = usize::try_from(engine.settings().ingest.max_upload_bytes).unwrap_or(usize::MAX);
    let json_limit = usize::try_from(engine.settings().limits.json_body_bytes).unwrap_or(usize::MAX);
    let cors = gateway::cors(&engine.settings().cors);
    let tls = engine.settings().tls.cert_file.is_some();
    let fetcher = Arc::new(fetch::Fetcher::new(engine.settings(), engine.metrics().clone()));
    let state = AppState { engine, gateway, started: std::time::Instant::now(), mcp: Arc::default(), fetcher: Some(fetcher) };
    let api = Router::new()
        .route("/status", get(health::status))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/snapshots", post(snapshots::create).get(snapshots::list))
        .route("/snapshots/{name}", get(snapshots::download).delete(snapshots::delete))
        .route("/collections", post(routes::create_collection).get(routes::list_collections))
        .route("/collections/{name}", get(routes::get_collection).delete(routes::delete_collection))
        .route(
            "/collections/{name}/documents",
            post(routes::add_documents).get(routes::list_documents).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/collections/{name}/documents/{id}", get(routes::get_document).delete(routes::delete_document))
        .route("/collections/{name}/documents/{id}/chunks", get(routes::document_chunks))
        .route("/collections/{name}/search", post(routes::search))
        .route("/collections/{name}/query", post(answers::query))
        .route("/jobs", get(routes::list_jobs))
        .route("/jobs/{id}", get(routes::get_job))
        .route("/me", get(routes::me))
        .route("/openapi.json", get(openapi::serve_openapi))
        .method_not_allowed_fallback(routes::method_not_allowed);
    let router = Router::new()
        .nest("/api/v1", api)
        .route("/v1/chat/completions", post(answers::chat_completions))
        .route("/v1/models", get(answers::list_models))
        .route("/mcp", post(mcp::post).get(mcp::get).delete(mcp::delete))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready_public))
        .route("/", get(ui::index))
        .route("/ui/{*file}", get(ui::asset));
    // `/metrics` lives on the admin listener unless that is turned off (`admin_listen = ""`).
    let router = if state.engine.settings().admin_listen.as_deref().is_none_or(str::is_empty) {
        router.route("/metrics", get(health::metrics))
    } else {
        router
    };
    let router = router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), gateway::gate))
        .layer(DefaultBodyLimit::max(json_limit));
    let app = edge(router, state, tls);
    match cors {
        // CORS sits just inside the request id (outside the panic guard and the security headers it
        // does not need), so a preflight is answered before authentication.
        Some(cors) => outer(app.layer(cors)),
        None => outer(app),
    }
}

/// The admin application: `/metrics` and the health routes, for the admin listener.
pub fn admin_router(engine: Arc<Engine>, gateway: Arc<Gateway>) -> Router {
    let state = AppState { engine, gateway, started: std::time::Instant::now(), mcp: Arc::default(), fetcher: None };
    let router = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(routes::not_found);
    outer(edge(router, state, false))
}

/// Inside the routing, outermost first: security headers → panic guard → metrics (matched routes
/// only, by their template; so a 401 or 429 from the gate is counted) → the gate (body limit →
/// authentication → rate limit → shedding → timeout, `gateway.rs`) → handler.
fn edge(router: Router<AppState>, state: AppState, tls: bool) -> Router {
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(move |mut r: Response| async move {
            gateway::secure(&mut r, tls);
            r
        }))
}

/// The outermost layers: request id (generated or accepted, and returned) → trace span, so the id is
/// on every log line of the request.
fn outer(app: Router) -> Router {
    app.layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<axum::body::Body>| {
                    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    // At ERROR level so the span (and the id) is on every line whatever the log filter.
                    let span = tracing::error_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
                    // A caller's W3C `traceparent` makes this span part of its trace (when traces are exported).
                    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
                    let _ = span.set_parent(parent);
                    span
                })
                // Errors are logged once, where their cause is known (error.rs), not again here.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Request headers as an OpenTelemetry extractor.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error; the server log has the details").into_response()
}

/// Serves the API on `listener` (HTTPS when `tls` is given; and the admin routes on `admin`, when
/// given) until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    engine: Arc<Engine>,
    gateway: Arc<Gateway>,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = conn::ConnLimits::from_settings(engine.settings());
    let admin_task = admin.map(|l| {
        let app = admin_router(engine.clone(), gateway.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            conn::serve_http(l, app, limits, stop).await
        })
    });
    let app = router(engine, gateway);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let result = match tls {
        Some(files) => tls::serve(listener, app, files, limits, shutdown).await,
        None => conn::serve_http(listener, app, limits, shutdown).await,
    };
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    result
}
