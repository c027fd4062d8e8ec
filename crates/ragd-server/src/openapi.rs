//! The OpenAPI 3 document, generated from the handlers' annotations and the types' schemas.

use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::{answers, keys, routes, snapshots};

#[derive(OpenApi)]
#[openapi(
    info(title = "ragd", description = "Retrieval-augmented generation in one binary. Errors are `{\"error\": {\"code\", \"message\"}}`. With authentication on, every /api/v1 and /v1 route but this document needs `Authorization: Bearer <API key or JWT>` or `X-Service-Token`; limited routes answer with `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`."),
    paths(
        routes::create_collection, routes::list_collections, routes::get_collection, routes::delete_collection,
        routes::add_documents, routes::list_documents, routes::get_document, routes::delete_document,
        routes::get_job, routes::list_jobs, routes::document_chunks, routes::me, routes::search, answers::query, answers::chat_completions, answers::list_models,
        keys::create, keys::list, keys::revoke,
        snapshots::create, snapshots::list, snapshots::download, snapshots::delete,
    ),
    components(schemas(ragd_core::answer::Citation, ragd_core::answer::EvidenceSpan, ragd_core::answer::AnswerKind, ragd_core::types::CollectionRecord, ragd_core::types::ChunkHit, ragd_core::types::SearchFilter)),
    tags((name = "collections"), (name = "documents"), (name = "jobs"), (name = "search"), (name = "answers"), (name = "openai"), (name = "keys"), (name = "snapshots"))
)]
struct ApiDoc;

pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".into())
}

pub async fn serve_openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
