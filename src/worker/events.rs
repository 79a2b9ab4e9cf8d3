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
    storage::{
        inbox::{self, Event, EventOutcome},
        turns, KeptConnection,
    },
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

/// Processes claimed events side by side, then records all their outcomes
/// in one statement. Their metrics follow, once the outcomes are stored.
/// The first event's writes go through the worker's kept connection, the
/// others' through connections of their own, each given back as soon as
/// its event is done: held until the whole batch was, two workers' batches
/// could each wait for a connection the other holds, until the pool's
/// acquire timeout failed them.
pub(super) async fn process_batch(state: &AppState, conn: &mut KeptConnection, events: Vec<Event>) {
    let started = std::time::Instant::now();
    let connections = std::iter::once(Some(&mut *conn)).chain(std::iter::repeat_with(|| None));
    let verdicts = futures::future::join_all(events.into_iter().zip(connections).map(
        |(event, kept)| async move {
            match kept {
                Some(kept) => process(state, kept, event).await,
                None => process(state, &mut KeptConnection::new(state.pool.clone()), event).await,
            }
        },
    ))
    .await;
    if let Err(e) = inbox::settle(conn, &verdicts).await {
        // The leases run out and other workers retry them.
        tracing::error!(error = %e, events = verdicts.len(), "could not record the events' outcomes");
    }
    let elapsed = started.elapsed();
    for (_, verdict) in &verdicts {
        let label = match verdict {
            EventOutcome::Processed => "processed",
            EventOutcome::RetryIn(..) => "retry",
            EventOutcome::Dead(_) => "dead",
        };
        state.metrics.event_processed(label, elapsed);
    }
}

#[tracing::instrument(skip_all, fields(
    webhook_id = %event.webhook_id,
    event_type = %event.event_type,
    request_id = event.request_id.as_deref().unwrap_or("-"),
))]
async fn process(
    state: &AppState,
    kept: &mut KeptConnection,
    event: Event,
) -> (String, EventOutcome) {
    let verdict = match handle(state, kept, &event).await {
        Ok(()) => EventOutcome::Processed,
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
            tracing::warn!(error = %e, attempts = event.attempts, retry_in = ?delay, "event processing failed");
            match delay {
                Some(delay) => EventOutcome::RetryIn(delay, e.to_string()),
                None => EventOutcome::Dead(e.to_string()),
            }
        }
    };
    (event.webhook_id, verdict)
}

async fn handle(
    state: &AppState,
    kept: &mut KeptConnection,
    event: &Event,
) -> Result<(), ProcessError> {
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
    finish_from_response(state, kept, turn_id, &response).await?;
    Ok(())
}
