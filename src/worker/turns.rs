//! Starting an AI turn (one background Response) and finishing it, once,
//! whichever way it ends.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use uuid::Uuid;

use super::backoff;
use crate::{
    ai::{AiError, AssistantReply, FetchedResponse, Outcome},
    conversation::{self, Action, Actor, TransitionError},
    hub::Announce,
    protocol::customer_frames::AssistantStatus,
    state::AppState,
    storage::{
        self,
        conversations::{self, ConversationState, Message, NewMessage, Role},
        notify::Announcements,
        on_kept_connection,
        turns::{self, Claimed, TurnStatus},
        Ending, KeptConnection,
    },
};

#[derive(Debug, thiserror::Error)]
pub(super) enum TurnError {
    #[error(transparent)]
    Ai(#[from] AiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl TurnError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Ai(e) => e.is_transient(),
            Self::Database(_) => true,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Ai(e) => e.retry_after(),
            Self::Database(_) => None,
        }
    }
}

/// How a turn ended.
pub struct TurnEnd<'a> {
    pub status: TurnStatus,
    pub response_id: Option<&'a str>,
    pub replies: &'a [AssistantReply],
    pub problem: Option<&'a str>,
    /// The model called `handoff_to_human`, with this reason.
    pub handoff: Option<&'a str>,
}

impl<'a> TurnEnd<'a> {
    /// Ended without any answer from the AI.
    pub fn failed(response_id: Option<&'a str>, problem: &'a str) -> Self {
        Self {
            status: TurnStatus::Failed,
            response_id,
            replies: &[],
            problem: Some(problem),
            handoff: None,
        }
    }
}

/// Creates the OpenAI Conversation if needed and starts the background
/// response with the customer messages the turn answers. Failures that may
/// pass are retried with backoff and jitter (at least as long as a
/// `Retry-After` asks) until the start budget is spent; then the customer is
/// told a person will take over.
#[tracing::instrument(skip_all, fields(turn_id = %claimed.turn.id, conversation_id = %claimed.turn.conversation_id))]
pub(super) async fn start(state: &AppState, conn: &mut KeptConnection, claimed: Claimed) {
    let Err(e) = try_start(state, conn, &claimed).await else {
        return;
    };
    let turn = claimed.turn;
    let budget = state.config.delivery.turn_start_budget;
    let elapsed = (chrono::Utc::now() - turn.created_at)
        .to_std()
        .unwrap_or_default();
    let delay = backoff(
        turn.attempts,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .max(e.retry_after().unwrap_or_default());
    if e.is_transient() && elapsed + delay < budget {
        tracing::warn!(error = %e, attempts = turn.attempts, retry_in = ?delay, "could not start the AI turn");
        if let Err(e) = turns::retry_later(&state.pool, turn.id, delay, &e.to_string()).await {
            tracing::error!(error = %e, "could not schedule the retry; the lease will expire");
        }
        return;
    }
    tracing::error!(error = %e, attempts = turn.attempts, "giving up on the AI turn");
    let problem = e.to_string();
    if let Err(e) = finish_turn(state, conn, turn.id, TurnEnd::failed(None, &problem)).await {
        tracing::error!(error = %e, "could not record the failed turn; the lease will expire");
    }
}

async fn try_start(
    state: &AppState,
    conn: &mut KeptConnection,
    claimed: &Claimed,
) -> Result<(), TurnError> {
    let turn = &claimed.turn;
    let conversation_id = turn.conversation_id;
    let openai_conversation = match &claimed.openai_conversation_id {
        Some(id) => id.clone(),
        None => {
            let created = state.ai.create_conversation(conversation_id).await?;
            conversations::set_openai_conversation_id(&state.pool, conversation_id, &created)
                .await?
        }
    };
    let response_id = state
        .ai
        .start_response(
            &openai_conversation,
            &claimed.inputs,
            conversation_id,
            turn.id,
        )
        .await?;
    turns::mark_in_flight(conn, turn.id, &response_id).await?;
    tracing::info!(response_id, "AI turn started");
    Ok(())
}

/// Ends a turn exactly once: stores the replies (or a notice to the
/// customer), announces them, and starts the next turn if customer messages
/// have been waiting. A turn that has already ended is left alone, its
/// transaction rolled back at once (the conversation's lock, taken to find
/// that out, must not outlive it: other events of the same batch may wait
/// for it). If a person took the conversation over
/// meanwhile, the AI's output is kept as an internal item and the customer
/// sees nothing of it.
///
/// Runs on `kept` (a worker's kept connection: no pool pings), once more
/// on a fresh connection if the kept one turns out to be gone, which is
/// safe since a turn that has ended is left alone.
pub async fn finish_turn(
    state: &AppState,
    kept: &mut KeptConnection,
    turn_id: Uuid,
    end: TurnEnd<'_>,
) -> Result<(), sqlx::Error> {
    on_kept_connection!(kept, |conn| finish_on(state, conn, turn_id, &end))
}

async fn finish_on(
    state: &AppState,
    conn: &mut PgConnection,
    turn_id: Uuid,
    end: &TurnEnd<'_>,
) -> Result<(), sqlx::Error> {
    let ended = Instant::now();
    let recorded = storage::in_transaction(conn, async |tx| {
        Ok::<_, sqlx::Error>(match record_end(tx, turn_id, end).await? {
            Some(recorded) => Ending::Commit(Some(recorded)),
            None => Ending::RollBack(None),
        })
    });
    let Some(recorded) = recorded.await? else {
        return Ok(());
    };
    tracing::info!(%turn_id, status = ?end.status, messages = recorded.messages, "AI turn finished");
    let waited = recorded
        .waited
        .map(|secs| Duration::from_secs_f64(secs.max(0.0)) + ended.elapsed());
    if let (Some(label), Some(waited)) = (end.status.finished_label(), waited) {
        state.metrics.turn_finished(label, waited);
    }
    if recorded.handed_over {
        state.metrics.handoff();
    }
    Ok(())
}

/// What finishing a turn stored.
struct Recorded {
    /// Seconds from the first customer message the turn answers.
    waited: Option<f64>,
    messages: usize,
    handed_over: bool,
}

/// The writes of [`finish_turn`], inside its transaction: `None` if the turn
/// had ended already.
async fn record_end(
    tx: &mut PgConnection,
    turn_id: Uuid,
    end: &TurnEnd<'_>,
) -> Result<Option<Recorded>, sqlx::Error> {
    let Some(finished) =
        turns::finish(&mut *tx, turn_id, end.status, end.response_id, end.problem).await?
    else {
        return Ok(None);
    };
    let (conversation_id, who_speaks) = (finished.conversation_id, finished.state);

    // Notifications go out in `seq` order: the items stored, then whatever
    // follows them.
    let mut stored = Vec::new();
    let mut announce = Announcements::default();
    for reply in end.replies {
        let mut new = NewMessage::public(conversation_id, Role::Assistant, &reply.text);
        new.internal = !who_speaks.ai_speaks();
        new.openai_item_id = Some(&reply.item_id);
        new.turn_id = Some(turn_id);
        // The turn row lock makes this the only writer of these items; a
        // conflict means the data is inconsistent, so undo everything.
        let message = append(&mut *tx, new).await?;
        announce = announce.message(&message);
        stored.push(message);
    }
    let mut handed_over = false;
    if who_speaks.ai_speaks() {
        // The AI asked for a person, or gave no answer: the customer is told
        // a person will take over, and agents see the conversation flagged.
        let handover = match end.handoff {
            Some(reason) => Some((Action::AiHandoff, Actor::Ai, HANDOFF_NOTICE, Some(reason))),
            None if stored.is_empty() => Some((
                Action::TurnFailed,
                Actor::System,
                notice(end.status),
                end.problem,
            )),
            None => None,
        };
        if let Some((action, actor, text, reason)) = handover {
            let mut new = NewMessage::public(conversation_id, Role::System, text);
            new.turn_id = Some(turn_id);
            let message = append(&mut *tx, new).await?;
            announce = announce.message(&message);
            stored.push(message);
            if who_speaks == ConversationState::Bot {
                // The change of state announces its own item: after these.
                std::mem::take(&mut announce).send(&mut *tx).await?;
                conversation::transition(&mut *tx, conversation_id, action, actor, reason)
                    .await
                    .map_err(into_sqlx)?;
                handed_over = true;
            }
        }
    }
    let announce = announce
        .if_scheduled(|a| {
            a.status(conversation_id, AssistantStatus::Thinking)
                .wake_workers()
        })
        .unless_scheduled(|a| a.status(conversation_id, AssistantStatus::Idle));
    turns::schedule(&mut *tx, conversation_id, announce).await?;
    Ok(Some(Recorded {
        waited: finished.waited,
        messages: stored.len(),
        handed_over,
    }))
}

/// Stores an item; a conflict (it is stored already) undoes the transaction.
async fn append(conn: &mut PgConnection, new: NewMessage<'_>) -> Result<Message, sqlx::Error> {
    conversations::append(conn, new)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// The state was read under the same lock, so only the database can fail.
fn into_sqlx(e: TransitionError) -> sqlx::Error {
    match e {
        TransitionError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// What the customer reads when the AI hands the conversation to a person.
const HANDOFF_NOTICE: &str =
    "I'm passing you to a person from our team. They will join this conversation shortly.";

/// What a function call is answered with on the OpenAI conversation.
const HANDOFF_OUTPUT: &str =
    "The conversation was handed to the support team; a person will take over.";

/// Finishes a turn as the fetched (finished) response says. A handoff call
/// is answered on the OpenAI conversation first, so the next response there
/// finds its output.
pub(super) async fn finish_from_response(
    state: &AppState,
    kept: &mut KeptConnection,
    turn_id: Uuid,
    response: &FetchedResponse,
) -> Result<(), TurnError> {
    if let (Some(handoff), Some(conversation)) = (&response.handoff, &response.conversation) {
        let open = turns::find(&state.pool, turn_id)
            .await?
            .is_some_and(|t| !t.status.is_finished());
        if open {
            state
                .ai
                .answer_function_call(conversation, &handoff.call_id, HANDOFF_OUTPUT)
                .await?;
        }
    }
    let status = match response.outcome {
        Outcome::Completed => TurnStatus::Completed,
        Outcome::Failed => TurnStatus::Failed,
        Outcome::Cancelled => TurnStatus::Cancelled,
        Outcome::Incomplete | Outcome::Running => TurnStatus::Incomplete,
    };
    let end = TurnEnd {
        status,
        response_id: Some(&response.id),
        replies: &response.replies,
        problem: response.problem.as_deref(),
        handoff: response.handoff.as_ref().map(|h| h.reason.as_str()),
    };
    Ok(finish_turn(state, kept, turn_id, end).await?)
}

/// What the customer reads when a turn produced no answer.
fn notice(status: TurnStatus) -> &'static str {
    match status {
        TurnStatus::Cancelled => {
            "Our assistant's answer was cancelled. A person from our team will take over this conversation."
        }
        TurnStatus::Incomplete => {
            "Our assistant could not finish its answer. A person from our team will take over this conversation."
        }
        _ => "Sorry, our assistant could not answer this time. A person from our team will take over this conversation.",
    }
}
