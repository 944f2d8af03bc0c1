//! The JSON error every HTTP path answers with: `{"error":{"code":…,"message":…}}`.

use app::event::ErrorBody;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds to send as `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// Send `WWW-Authenticate: Bearer realm="marquee"` (401).
    pub www_authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
            retry_after: None,
            www_authenticate: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The status each store error is reported with.
pub fn status_of(e: &StoreError) -> StatusCode {
    match e {
        StoreError::NoSuchTable(_) | StoreError::NotFound(_) | StoreError::NoSuchAccount(_) => {
            StatusCode::NOT_FOUND
        }
        StoreError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
        StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::BadName(_) => StatusCode::BAD_REQUEST,
        StoreError::TableExists(_)
        | StoreError::TableNotEmpty(_)
        | StoreError::AccountExists(_) => StatusCode::CONFLICT,
        StoreError::BuiltIn(_) => StatusCode::FORBIDDEN,
        StoreError::ResumeGap { .. } => StatusCode::GONE,
        StoreError::ShuttingDown | StoreError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Storage(_) | StoreError::InUse => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::Storage(_) | StoreError::Failed(_)) {
            tracing::error!("{e}");
        }
        Self::new(status_of(&e), e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.body });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.www_authenticate {
            headers.insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"marquee\""),
            );
        }
        response
    }
}
