//! The error type of the HTTP edge: a stable JSON body with a machine-readable
//! code, and the internal cause logged rather than shown.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// The request is understood and refused (origin, identity).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// No valid session, or the credentials are wrong.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// The request conflicts with the current state (e.g. a transition).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Too many attempts; try again after the given seconds.
    #[error("too many attempts")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::BadRequest { code, message } => (StatusCode::BAD_REQUEST, *code, message.clone()),
            Self::Forbidden { code, message } => (StatusCode::FORBIDDEN, *code, message.clone()),
            Self::Unauthorized { code, message } => {
                (StatusCode::UNAUTHORIZED, *code, message.clone())
            }
            Self::Conflict { code, message } => (StatusCode::CONFLICT, *code, message.clone()),
            Self::TooManyRequests { retry_after_secs } => {
                let body = json!({ "error": { "code": "too_many_attempts",
                    "message": format!("too many attempts; try again in {retry_after_secs} s") } });
                let retry_after = [(
                    axum::http::header::RETRY_AFTER,
                    retry_after_secs.to_string(),
                )];
                return (StatusCode::TOO_MANY_REQUESTS, retry_after, Json(body)).into_response();
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".to_owned()),
            Self::Database(e) => {
                tracing::error!(error = %e, "database error");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "database error, try again".to_owned(),
                )
            }
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_owned(),
                )
            }
        };
        (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}
