//! The reconciler: a webhook may never come. Turns in flight for longer than
//! `reconcile_after` are looked up at OpenAI and handled exactly as their
//! webhook would have been; responses still running past the deadline are
//! cancelled and handled as failed.

use super::turns::{finish_from_response, finish_turn, TurnEnd, TurnError};
use crate::{
    ai::Outcome,
    state::AppState,
    storage::{
        turns::{self, Turn},
        KeptConnection,
    },
};

/// Turns looked at per round, per instance.
const BATCH: i64 = 20;

pub(super) async fn run(state: AppState) {
    let delivery = state.config.delivery.clone();
    let mut tick = tokio::time::interval(delivery.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let overdue = turns::claim_overdue(
            &state.pool,
            delivery.reconcile_after,
            delivery.reconcile_interval,
            BATCH,
        )
        .await;
        match overdue {
            Ok(overdue) => {
                for turn in overdue {
                    reconcile(&state, turn).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciler could not look for overdue turns"),
        }
    }
}

#[tracing::instrument(skip_all, fields(turn_id = %turn.id, response_id = ?turn.response_id))]
async fn reconcile(state: &AppState, turn: Turn) {
    let Some(response_id) = turn.response_id.as_deref() else {
        return;
    };
    let started = turn.started_at.unwrap_or(turn.created_at);
    let running_for = (chrono::Utc::now() - started).to_std().unwrap_or_default();
    let past_deadline = running_for >= state.config.delivery.response_deadline;
    let result = match state.ai.fetch_response(response_id).await {
        Ok(response) if response.outcome != Outcome::Running => {
            tracing::info!(outcome = ?response.outcome, "webhook missing; finishing the turn from the response");
            finish_from_response(
                state,
                &mut KeptConnection::new(state.pool.clone()),
                turn.id,
                &response,
            )
            .await
        }
        Ok(_) if past_deadline => {
            tracing::warn!(?running_for, "response past its deadline; cancelling it");
            if let Err(e) = state.ai.cancel_response(response_id).await {
                tracing::warn!(error = %e, "cancel failed; the turn is ended all the same");
            }
            give_up(
                state,
                &turn,
                "no answer within the response deadline; cancelled",
            )
            .await
        }
        // OpenAI unreachable for the whole deadline: the customer is not
        // left waiting for ever.
        Err(e) if past_deadline => {
            tracing::warn!(error = %e, "response unreachable past its deadline; giving up");
            give_up(
                state,
                &turn,
                "OpenAI unreachable until the response deadline",
            )
            .await
        }
        Ok(_) => return,
        Err(e) => {
            // Looked at again after the next interval.
            tracing::warn!(error = %e, "reconciler could not fetch the response");
            return;
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "reconciler could not finish the turn");
    }
}

async fn give_up(state: &AppState, turn: &Turn, problem: &str) -> Result<(), TurnError> {
    Ok(finish_turn(
        state,
        &mut KeptConnection::new(state.pool.clone()),
        turn.id,
        TurnEnd::failed(turn.response_id.as_deref(), problem),
    )
    .await?)
}
