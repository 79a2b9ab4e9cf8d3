//! Starting an AI turn (one background Response) and finishing it, once,
//! whichever way it ends.

use std::time::Duration;

use uuid::Uuid;

use super::{backoff, wake};
use crate::{
    ai::{AiError, Reply},
    chat::frames::AssistantStatus,
    hub,
    state::AppState,
    storage::{
        conversations::{self, NewMessage, Role},
        turns::{self, Turn, TurnStatus},
    },
};

/// Attempts to start a turn before the customer is told it failed.
const MAX_START_ATTEMPTS: i32 = 5;

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Ai(#[from] AiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StartError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Ai(e) => e.is_transient(),
            Self::Database(_) => true,
        }
    }
}

/// How a turn ended.
pub struct TurnEnd<'a> {
    pub status: TurnStatus,
    pub response_id: Option<&'a str>,
    pub replies: &'a [Reply],
    pub problem: Option<&'a str>,
}

/// Creates the OpenAI Conversation if needed and starts the background
/// response with the customer messages the turn answers.
#[tracing::instrument(skip_all, fields(turn_id = %turn.id, conversation_id = %turn.conversation_id))]
pub(super) async fn start(state: &AppState, turn: Turn) {
    match try_start(state, &turn).await {
        Ok(()) => {}
        Err(e) if e.is_transient() && turn.attempts < MAX_START_ATTEMPTS => {
            let delay = backoff(
                turn.attempts,
                Duration::from_millis(500),
                Duration::from_secs(30),
            );
            tracing::warn!(error = %e, attempts = turn.attempts, retry_in = ?delay, "could not start the AI turn");
            if let Err(e) = turns::retry_later(&state.pool, turn.id, delay, &e.to_string()).await {
                tracing::error!(error = %e, "could not schedule the retry; the lease will expire");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, attempts = turn.attempts, "giving up on the AI turn");
            let problem = e.to_string();
            let end = TurnEnd {
                status: TurnStatus::Failed,
                response_id: None,
                replies: &[],
                problem: Some(&problem),
            };
            if let Err(e) = finish_turn(state, turn.id, end).await {
                tracing::error!(error = %e, "could not record the failed turn; the lease will expire");
            }
        }
    }
}

async fn try_start(state: &AppState, turn: &Turn) -> Result<(), StartError> {
    let conversation_id = turn.conversation_id;
    let openai_conversation =
        match conversations::openai_conversation_id(&state.pool, conversation_id).await? {
            Some(id) => id,
            None => {
                let created = state.ai.create_conversation(conversation_id).await?;
                conversations::set_openai_conversation_id(&state.pool, conversation_id, &created)
                    .await?
            }
        };
    let inputs =
        conversations::customer_texts(&state.pool, conversation_id, turn.first_seq, turn.last_seq)
            .await?;
    let response_id = state
        .ai
        .start_response(&openai_conversation, &inputs, conversation_id, turn.id)
        .await?;
    turns::mark_in_flight(&state.pool, turn.id, &response_id).await?;
    tracing::info!(response_id, "AI turn started");
    Ok(())
}

/// Ends a turn exactly once: stores the replies (or a notice to the
/// customer), announces them, and starts the next turn if customer messages
/// have been waiting. A turn that has already ended is left alone.
pub async fn finish_turn(
    state: &AppState,
    turn_id: Uuid,
    end: TurnEnd<'_>,
) -> Result<(), sqlx::Error> {
    let Some(turn) = turns::find(&state.pool, turn_id).await? else {
        return Ok(());
    };
    if turn.status.is_finished() {
        return Ok(());
    }
    let conversation_id = turn.conversation_id;
    let mut tx = state.pool.begin().await?;
    // Conversation first, then turn: the lock order every writer follows.
    conversations::lock(&mut tx, conversation_id).await?;
    if turns::lock(&mut tx, turn_id).await?.status.is_finished() {
        return Ok(());
    }
    turns::finish(&mut tx, turn_id, end.status, end.response_id, end.problem).await?;

    let mut stored = Vec::new();
    for reply in end.replies {
        let new = NewMessage {
            conversation_id,
            role: Role::Assistant,
            body: &reply.text,
            client_id: None,
            openai_item_id: Some(&reply.item_id),
            turn_id: Some(turn_id),
        };
        // The turn row lock makes this the only writer of these items; a
        // conflict means the data is inconsistent, so undo everything.
        stored.push(
            conversations::append(&mut tx, new)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?,
        );
    }
    if stored.is_empty() {
        let new = NewMessage {
            conversation_id,
            role: Role::System,
            body: notice(end.status),
            client_id: None,
            openai_item_id: None,
            turn_id: Some(turn_id),
        };
        stored.push(
            conversations::append(&mut tx, new)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?,
        );
    }
    for message in &stored {
        hub::publish_message(&mut tx, message).await?;
    }
    if turns::schedule(&mut tx, conversation_id).await? {
        hub::publish_status(&mut tx, conversation_id, AssistantStatus::Thinking).await?;
        wake(&mut tx).await?;
    } else {
        hub::publish_status(&mut tx, conversation_id, AssistantStatus::Idle).await?;
    }
    tx.commit().await?;
    tracing::info!(%turn_id, status = ?end.status, messages = stored.len(), "AI turn finished");
    crate::observe::turn_finished(state, turn_id, end.status).await;
    Ok(())
}

/// What the customer reads when a turn produced no answer.
fn notice(status: TurnStatus) -> &'static str {
    match status {
        TurnStatus::Cancelled => {
            "The assistant's answer was cancelled. Please send your message again."
        }
        TurnStatus::Incomplete => {
            "The assistant's answer was cut short. Please try asking again, perhaps more briefly."
        }
        _ => "Sorry, the assistant could not answer just now. Please try again in a moment.",
    }
}
