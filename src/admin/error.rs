//! The one place that maps errors to HTTP status codes for the admin API.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::platform::PlatformError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::warn!(error = %err, "admin request hit a store error");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
    }
}

impl From<PlatformError> for ApiError {
    fn from(err: PlatformError) -> Self {
        let status = match &err {
            PlatformError::Permanent(_) => StatusCode::BAD_REQUEST,
            PlatformError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            PlatformError::Auth(_) => StatusCode::FORBIDDEN,
            PlatformError::Transient(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match err {
            PlatformError::Permanent(message) => message,
            other => other.to_string(),
        };
        ApiError::new(status, message)
    }
}
