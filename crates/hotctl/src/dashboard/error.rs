//! The one error type of every route: a status and a message, answered as
//! `{"error": "…"}`. Messages never hold a secret: the errors they come from redact URLs,
//! and the token is never part of one.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hotkeys::zk::ZkError;

use super::history::HistoryError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A dependency (ZooKeeper, Redis, MySQL) failed or is not configured.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({"error": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ZkError> for ApiError {
    fn from(e: ZkError) -> ApiError {
        ApiError::unavailable(format!("ZooKeeper: {e}"))
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> ApiError {
        ApiError::unavailable(e.to_string())
    }
}

/// Errors of the hotctl functions the routes reuse (bans, cache diff): a dependency failed.
impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> ApiError {
        ApiError::unavailable(format!("{e:#}"))
    }
}
