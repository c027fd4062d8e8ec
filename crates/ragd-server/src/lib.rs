//! ragd-server: the HTTP edge. `router` builds the axum app over an `Engine`; `serve` runs it on
//! listeners it is given (port 0 in tests) until a shutdown future resolves. Only this crate knows HTTP.

mod answers;
mod error;
mod extract;
mod health;
mod openapi;
mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ragd_core::engine::Engine;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use error::{ApiError, ErrorBody, error_response};
pub use openapi::openapi_json;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application.
pub fn router(engine: Arc<Engine>) -> Router {
    // Multipart bodies are bounded by this layer; JSON bodies by the handler (same limit), and an
    // announced Content-Length over it is refused before reading.
    let upload_limit = usize::try_from(engine.settings().ingest.max_upload_bytes).unwrap_or(usize::MAX);
    let state = AppState { engine };
    let api = Router::new()
        .route("/collections", post(routes::create_collection).get(routes::list_collections))
        .route("/collections/{name}", get(routes::get_collection).delete(routes::delete_collection))
        .route(
            "/collections/{name}/documents",
            post(routes::add_documents).get(routes::list_documents).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/collections/{name}/documents/{id}", get(routes::get_document).delete(routes::delete_document))
        .route("/collections/{name}/search", post(routes::search))
        .route("/collections/{name}/query", post(answers::query))
        .route("/jobs/{id}", get(routes::get_job))
        .route("/openapi.json", get(openapi::serve_openapi))
        .method_not_allowed_fallback(routes::method_not_allowed);
    Router::new()
        .nest("/api/v1", api)
        .route("/v1/chat/completions", post(answers::chat_completions))
        .route("/v1/models", get(answers::list_models))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error; the server log has the details").into_response()
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(engine)).with_graceful_shutdown(shutdown).await
}
