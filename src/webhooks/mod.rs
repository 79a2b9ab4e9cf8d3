//! `POST /api/webhooks/openai`: verify, record once, answer 200 at once.
//! The recorded event is the worker's queue; nothing else happens here.

pub mod event;
pub mod signature;

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Serialize;
use serde_json::json;

use crate::{state::AppState, storage::inbox, telemetry::REQUEST_ID_HEADER};
use event::DecodeError;
pub use event::HANDLED_EVENTS;
use signature::VerifyError;

/// OpenAI's event bodies are thin (ids only); anything bigger is refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks/openai", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

#[derive(Serialize)]
struct Acknowledgement {
    received: bool,
    duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// Signed, so OpenAI would deliver it again and again: logged with its
    /// webhook-id, refused with a 400 (OpenAI does not retry a 4xx forever).
    #[error("{error} (webhook-id {webhook_id})")]
    Malformed {
        webhook_id: String,
        error: DecodeError,
    },
    #[error(transparent)]
    Database(#[from] Arc<sqlx::Error>),
}

impl WebhookError {
    /// The machine-readable reason, as the 4xx/5xx body and the
    /// `helpline_webhooks_rejected_total` label name it.
    fn code(&self) -> &'static str {
        match self {
            Self::Signature(e) => e.code(),
            Self::Malformed { error, .. } => error.code(),
            Self::Database(_) => "database_unavailable",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Signature(_) | Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            // 5xx makes OpenAI deliver again later: nothing is lost.
            Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = self.code();
        match &self {
            Self::Database(e) => tracing::error!(error = %e, "webhook not recorded"),
            other => tracing::warn!(reason = %other, "webhook rejected"),
        }
        (
            status,
            Json(json!({ "error": { "code": code, "message": self.to_string() } })),
        )
            .into_response()
    }
}

/// Counts every delivery (received, then accepted or rejected by reason)
/// around the actual work in `record`.
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.metrics.webhook_received();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let reason = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "unreadable_body"
            };
            state.metrics.webhook_rejected(reason);
            return rejection.into_response();
        }
    };
    match record(&state, &headers, &body).await {
        Ok(receipt) => {
            state.metrics.webhook_accepted(receipt.duplicate);
            Json(receipt).into_response()
        }
        Err(e) => {
            state.metrics.webhook_rejected(e.code());
            e.into_response()
        }
    }
}

async fn record(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Acknowledgement, WebhookError> {
    let secrets = &state.webhook_secrets;
    let verified = signature::verify(secrets, headers, body, chrono::Utc::now().timestamp())?;

    let event = event::decode(body).map_err(|error| WebhookError::Malformed {
        webhook_id: verified.webhook_id.clone(),
        error,
    })?;
    // Set by the request-id layer: the worker logs it with the event.
    let request_id = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());

    let recorded = state
        .recorder
        .record(inbox::VerifiedDelivery {
            webhook_id: verified.webhook_id.clone(),
            event_id: event.id,
            event_type: event.kind.clone(),
            payload: event.payload,
            handled: event.handled,
            request_id: request_id.map(str::to_owned),
        })
        .await?;
    let inserted = recorded.is_some();
    tracing::info!(webhook_id = %verified.webhook_id, event_type = %event.kind, duplicate = !inserted, "webhook recorded");
    Ok(Acknowledgement {
        received: true,
        duplicate: !inserted,
    })
}
