//! The console's JSON API under `/api/agent/...` (docs/agent-api.md): the
//! conversation list, transcripts, and the actions that change who speaks.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::auth::{ActingAgent, CurrentAgent};
use crate::{
    conversation::{self, Action, Actor, TransitionError},
    error::ApiError,
    hub,
    protocol::{agent_frames::Item, customer_frames::check_text},
    state::AppState,
    storage::{
        self,
        agents::{self, Summary},
        conversations::{self, ConversationState, Message, NewMessage, Role},
        Ending,
    },
};

#[derive(Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    q: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/agent/conversations?state=&q=&limit=`
pub(super) async fn list(
    agent: CurrentAgent,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Summary>>, ApiError> {
    if let Some(s) = &query.state {
        if !["bot", "needs_human", "human", "resolved"].contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_state",
                "state is one of bot, needs_human, human, resolved",
            ));
        }
    }
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let found = agents::summaries(
        &state.pool,
        agent.id,
        query.state.as_deref(),
        search,
        None,
        limit,
    )
    .await?;
    Ok(Json(found))
}

#[derive(Deserialize)]
pub(super) struct ShowQuery {
    after_seq: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct Transcript {
    conversation: Summary,
    items: Vec<Value>,
}

/// `GET /api/agent/conversations/{id}?after_seq=N`: the summary and every
/// item after `after_seq` (all of them by default), in `seq` order.
pub(super) async fn show(
    agent: CurrentAgent,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(query): Query<ShowQuery>,
) -> Result<Json<Transcript>, ApiError> {
    let conversation = summary(&state, agent.id, id).await?;
    let items =
        conversations::items_after(&state.pool, id, query.after_seq.unwrap_or(0).max(0)).await?;
    let items = items
        .iter()
        .map(|m| serde_json::to_value(Item::from(m)).expect("items serialize"))
        .collect();
    Ok(Json(Transcript {
        conversation,
        items,
    }))
}

async fn summary(state: &AppState, agent_id: Uuid, id: Uuid) -> Result<Summary, ApiError> {
    agents::summaries(&state.pool, agent_id, None, None, Some(id), 1)
        .await?
        .pop()
        .ok_or(ApiError::NotFound)
}

#[derive(Deserialize)]
pub(super) struct Text {
    text: String,
}

fn checked(text: &str) -> Result<&str, ApiError> {
    check_text(text).map_err(|e| ApiError::bad_request(e.code, e.message))
}

/// `POST /api/agent/conversations/{id}/messages`: reply to the customer. An
/// agent replying while the AI has the conversation takes it over.
pub(super) async fn reply(
    ActingAgent(agent): ActingAgent,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<Text>,
) -> Result<Json<Value>, ApiError> {
    let text = checked(&body.text)?;
    let actor = Actor::Agent {
        id: agent.id,
        name: &agent.name,
    };
    let item = atomically(&state.pool, async |tx| {
        match lock_existing(&mut *tx, id).await? {
            ConversationState::Resolved => {
                return Err(ApiError::Conflict {
                    code: "conversation_resolved",
                    message: "the conversation is resolved; reopen it to reply".into(),
                })
            }
            ConversationState::Bot | ConversationState::NeedsHuman => {
                conversation::transition(&mut *tx, id, Action::AgentReplied, actor, None)
                    .await
                    .map_err(transition_error)?;
            }
            ConversationState::Human => {}
        }
        store(tx, NewMessage::public(id, Role::Agent, text), &agent).await
    })
    .await?;
    Ok(Json(item_json(&item)))
}

/// `POST /api/agent/conversations/{id}/notes`: an internal note.
pub(super) async fn note(
    ActingAgent(agent): ActingAgent,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<Text>,
) -> Result<Json<Value>, ApiError> {
    let text = checked(&body.text)?;
    let item = atomically(&state.pool, async |tx| {
        lock_existing(&mut *tx, id).await?;
        store(tx, NewMessage::internal(id, Role::Note, text), &agent).await
    })
    .await?;
    Ok(Json(item_json(&item)))
}

#[derive(Deserialize, Default)]
pub(super) struct Reason {
    reason: Option<String>,
}

/// `POST /api/agent/conversations/{id}/{takeover|handback|resolve|reopen}`
pub(super) async fn act(
    ActingAgent(agent): ActingAgent,
    State(state): State<AppState>,
    Path((id, action)): Path<(Uuid, String)>,
    body: Option<Json<Reason>>,
) -> Result<Json<Summary>, ApiError> {
    let action = match action.as_str() {
        "takeover" => Action::TakeOver,
        "handback" => Action::HandBack,
        "resolve" => Action::Resolve,
        "reopen" => Action::Reopen,
        _ => return Err(ApiError::NotFound),
    };
    let reason = body
        .and_then(|Json(b)| b.reason)
        .map(|r| r.trim().chars().take(500).collect::<String>());
    let reason = reason.as_deref().filter(|r| !r.is_empty());
    let actor = Actor::Agent {
        id: agent.id,
        name: &agent.name,
    };
    atomically(&state.pool, async |tx| {
        lock_existing(&mut *tx, id).await?;
        conversation::transition(&mut *tx, id, action, actor, reason)
            .await
            .map_err(transition_error)
    })
    .await?;
    Ok(Json(summary(&state, agent.id, id).await?))
}

#[derive(Deserialize)]
pub(super) struct Read {
    seq: i64,
}

/// `POST /api/agent/conversations/{id}/read`: read up to item `seq`.
pub(super) async fn read(
    ActingAgent(agent): ActingAgent,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<Read>,
) -> Result<Json<Summary>, ApiError> {
    match agents::mark_read(&state.pool, agent.id, id, body.seq).await {
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(ApiError::NotFound)
        }
        done => done?,
    }
    Ok(Json(summary(&state, agent.id, id).await?))
}

/// The conversation's state under its lock; 404 if there is none.
async fn lock_existing(conn: &mut PgConnection, id: Uuid) -> Result<ConversationState, ApiError> {
    match conversation::lock_state(conn, id).await {
        Ok(who) => Ok(who),
        Err(sqlx::Error::RowNotFound) => Err(ApiError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// Runs `work` in a transaction on a pooled connection: the whole of an
/// agent's action, committed if it succeeds.
async fn atomically<T>(
    pool: &PgPool,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut conn = pool.acquire().await?;
    storage::in_transaction(&mut conn, async |tx| work(tx).await.map(Ending::Commit)).await
}

/// Stores an item written by `agent` and announces it.
async fn store(
    tx: &mut PgConnection,
    mut new: NewMessage<'_>,
    agent: &CurrentAgent,
) -> Result<Message, ApiError> {
    new.author_id = Some(agent.id);
    new.author_name = Some(&agent.name);
    let item = conversations::append(tx, new)
        .await?
        .ok_or(ApiError::Internal(anyhow::anyhow!("item not stored")))?;
    hub::publish_message(tx, &item).await?;
    Ok(item)
}

fn item_json(item: &Message) -> Value {
    serde_json::to_value(Item::from(item)).expect("items serialize")
}

fn transition_error(e: TransitionError) -> ApiError {
    match e {
        TransitionError::NotAllowed { from, action } => ApiError::Conflict {
            code: "invalid_transition",
            message: format!(
                "cannot {} a conversation that is {}",
                verb(action),
                from.as_str()
            ),
        },
        TransitionError::Database(e) => e.into(),
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::TakeOver => "take over",
        Action::HandBack => "hand back",
        Action::Resolve => "resolve",
        Action::Reopen => "reopen",
        _ => "change",
    }
}
