//! Request extractors that fail with ragd's JSON errors instead of axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::error_response;

/// `Json<T>` with ragd's errors: 400 `invalid_json` for malformed JSON, 400 `invalid_request` for JSON
/// of the wrong shape, 415 when the content type is not JSON, 413 when the body is too large.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

pub fn json_rejection(rejection: JsonRejection) -> Response {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => error_response(StatusCode::BAD_REQUEST, "invalid_json", format!("malformed JSON: {}", e.body_text())),
        JsonRejection::JsonDataError(e) => error_response(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send `Content-Type: application/json`")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        }
        other => error_response(StatusCode::BAD_REQUEST, "invalid_request", other.body_text()),
    }
}

/// `Path<T>` with ragd's errors.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(error_response(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

/// `Query<T>` with ragd's errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(error_response(StatusCode::BAD_REQUEST, "invalid_query_string", e.body_text()))
            }
            Err(e) => Err(e.into_response()),
        }
    }
}
