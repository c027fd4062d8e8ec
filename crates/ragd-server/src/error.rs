//! The one table from library errors to HTTP: status per variant, the `{"error": {"code", "message"}}`
//! body, and no internals in a 5xx.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ragd_core::Error;
use serde::Serialize;

/// An error on its way to a client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: clients branch on it.
    pub code: String,
    /// For people; may change.
    pub message: String,
}

pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into() } };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        // No `_` arm: a new variant must be given a status here.
        let status = match &e {
            Error::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unparseable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Limit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = public_message(&e);
        let mut response = error_response(status, e.code(), message);
        if let Error::TooLarge(_) = &e {
            // The rest of the body was not read: the connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Error::Unauthorized { .. } = &e {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ragd\""));
        }
        if let Some(secs) = retry_after_secs(&e) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What a client is told about an error (as a response or inside a stream). Logs it once, with its
/// cause, when the cause must not reach the client.
pub(crate) fn public_message(e: &Error) -> String {
    match e {
        Error::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            "internal error; the server log has the details".to_owned()
        }
        Error::Unavailable { dependency, .. } => {
            tracing::warn!(error = %e, "dependency unavailable");
            format!("{dependency} is unavailable; retry later")
        }
        other => other.to_string(),
    }
}

/// Seconds a client should wait before retrying, for errors that have such a wait.
pub(crate) fn retry_after_secs(e: &Error) -> Option<u64> {
    match e {
        Error::Unavailable { retry_after, .. } => Some(retry_after.map(|d| d.as_secs().max(1)).unwrap_or(5)),
        _ => None,
    }
}
