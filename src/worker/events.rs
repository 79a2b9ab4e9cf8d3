//! Processing a recorded webhook event: fetch the response it names and
//! finish the turn it belongs to. Safe to run any number of times.

use std::time::Duration;

use super::{
    backoff,
    turns::{finish_from_response, TurnError},
};
use crate::{
    ai::{AiError, Outcome},
    state::AppState,
    storage::{inbox, inbox::Event, turns},
};

impl From<TurnError> for ProcessError {
    fn from(e: TurnError) -> Self {
        match e {
            TurnError::Ai(e) => Self::Ai(e),
            TurnError::Database(e) => Self::Database(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Ai(#[from] AiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("response {0} is still running")]
    StillRunning(String),
    #[error("event has no data.id")]
    NoResponseId,
}

#[tracing::instrument(skip_all, fields(
    webhook_id = %event.webhook_id,
    event_type = %event.event_type,
    request_id = event.request_id.as_deref().unwrap_or("-"),
))]
pub(super) async fn process(state: &AppState, event: Event) {
    let started = std::time::Instant::now();
    let result = handle(state, &event).await;
    let mut verdict = "processed";
    let outcome = match result {
        Ok(()) => inbox::mark_processed(&state.pool, &event.webhook_id).await,
        Err(e) => {
            let permanent = match &e {
                ProcessError::NoResponseId => true,
                ProcessError::Ai(ai) => !ai.is_transient(),
                ProcessError::Database(_) | ProcessError::StillRunning(_) => false,
            };
            let retry_after = match &e {
                ProcessError::Ai(ai) => ai.retry_after(),
                _ => None,
            };
            let budget_left = event.attempts < state.config.delivery.event_max_attempts;
            let delay = (!permanent && budget_left).then(|| {
                backoff(
                    event.attempts,
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                )
                .max(retry_after.unwrap_or_default())
            });
            verdict = if delay.is_some() { "retry" } else { "dead" };
            tracing::warn!(error = %e, attempts = event.attempts, retry_in = ?delay, "event processing failed");
            inbox::retry_later(&state.pool, &event.webhook_id, delay, &e.to_string()).await
        }
    };
    if let Err(e) = outcome {
        // The lease runs out and another worker retries it.
        tracing::error!(error = %e, "could not record the event's outcome");
    }
    state.metrics.event_processed(verdict, started.elapsed());
}

async fn handle(state: &AppState, event: &Event) -> Result<(), ProcessError> {
    let response_id = event.payload.0["data"]["id"]
        .as_str()
        .ok_or(ProcessError::NoResponseId)?;
    // The event only names the response; its state is whatever OpenAI says
    // now, which also makes late and reordered deliveries harmless.
    let response = state.ai.fetch_response(response_id).await?;
    if response.outcome == Outcome::Running {
        return Err(ProcessError::StillRunning(response.id));
    }
    let turn_id = match response.turn_id {
        Some(id) => Some(id),
        None => turns::find_by_response(&state.pool, response_id)
            .await?
            .map(|t| t.id),
    };
    let Some(turn_id) = turn_id else {
        tracing::info!(response_id, "response is not one of ours; ignored");
        return Ok(());
    };
    finish_from_response(state, turn_id, &response).await?;
    Ok(())
}
