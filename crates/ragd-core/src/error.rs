//! The library's error type: one variant per cause a caller can act on, each with a stable code.

use std::time::Duration;

/// Every failure ragd's library code reports. The HTTP layer maps each variant to a status with a
/// `match` that has no catch-all arm, so a new variant forces a decision there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something impossible (`code`, e.g. `invalid_request`).
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    /// A named thing does not exist (`code`: `collection_not_found`, `document_not_found`, `job_not_found`).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The request conflicts with current state (`collection_exists`, `idempotency_key_reused`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// No credentials, or credentials that prove nothing (`missing_credentials`, `invalid_api_key`,
    /// `token_expired`, ...).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Authenticated, but the role does not allow it (`insufficient_role`).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// The uploaded media type is not one ragd can parse.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The bytes claim a supported type but cannot be parsed (corrupt or encrypted PDF, bad docx).
    #[error("{0}")]
    Unparseable(String),
    /// The body is larger than `ingest.max_upload_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// The content is within the upload size but exceeds a limit on the work it would cause
    /// (`document_too_complex`, `document_too_large`, `too_many_documents`, `too_many_chunks`,
    /// `request_too_large`, `parse_timeout`): refused before that work is done, never retried.
    #[error("{message}")]
    Limit { code: &'static str, message: String },
    /// A remote server ragd was asked to fetch from (URL ingest) failed: unreachable, an error
    /// status, a broken redirect (`fetch_failed`).
    #[error("{message}")]
    Upstream { code: &'static str, message: String },
    /// A remote server ragd was asked to fetch from did not answer in time (`fetch_timeout`).
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A dependency (embedder, vector store) cannot serve right now; retry after the given delay.
    #[error("{dependency} is unavailable: {message}")]
    Unavailable {
        dependency: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A bug or an environment failure (disk full, corrupted catalog). Logged, never shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput { code, message: message.into() }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Error::NotFound { code, message: message.into() }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict { code, message: message.into() }
    }
    pub fn limit(code: &'static str, message: impl Into<String>) -> Self {
        Error::Limit { code, message: message.into() }
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Error::Unauthorized { code, message: message.into() }
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Error::Internal(message.to_string())
    }
    pub fn unavailable(dependency: &'static str, message: impl Into<String>) -> Self {
        Error::Unavailable { dependency, message: message.into(), retry_after: None }
    }

    /// The stable, snake_case code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput { code, .. }
            | Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unauthorized { code, .. }
            | Error::Forbidden { code, .. }
            | Error::Limit { code, .. }
            | Error::Upstream { code, .. } => code,
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::Unparseable(_) => "unparseable_document",
            Error::TooLarge(_) => "payload_too_large",
            Error::UpstreamTimeout(_) => "fetch_timeout",
            Error::Unavailable { .. } => "service_unavailable",
            Error::Internal(_) => "internal_error",
        }
    }

    pub fn collection_not_found(name: &str) -> Self {
        let name = crate::auth::shown_name(name);
        Error::not_found("collection_not_found", format!("collection `{name}` does not exist"))
    }
    pub fn document_not_found(collection: &str, id: &str) -> Self {
        let collection = crate::auth::shown_name(collection);
        Error::not_found("document_not_found", format!("document `{id}` does not exist in collection `{collection}`"))
    }
    pub fn job_not_found(id: &str) -> Self {
        Error::not_found("job_not_found", format!("job `{id}` does not exist"))
    }
}
