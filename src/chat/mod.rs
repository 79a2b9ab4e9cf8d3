//! The customer side: visitor identities, the chat socket, and what happens
//! when a customer message arrives (store it, announce it, queue an AI turn).

pub mod frames;
mod socket;

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    conversation::{self, Action, Actor, TransitionError},
    error::ApiError,
    hub,
    state::AppState,
    storage::{
        conversations::{self, Message, NewMessage, Role},
        turns,
    },
    worker,
};
use frames::AssistantStatus;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/visitors", post(create_visitor))
        .route("/api/chat/ws", get(socket::upgrade))
}

#[derive(Serialize)]
struct NewVisitor {
    visitor_id: Uuid,
    token: String,
}

/// `POST /api/visitors`: a new identity. The token is shown once and stored
/// only as its SHA-256.
async fn create_visitor(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<NewVisitor>), ApiError> {
    let token = format!("hlv_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let visitor_id = conversations::create_visitor(&state.pool, &token_hash(&token)).await?;
    Ok((StatusCode::CREATED, Json(NewVisitor { visitor_id, token })))
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The outcome of a customer's send.
#[derive(Debug)]
pub enum Received {
    New(Message),
    /// That `client_id` was stored before: nothing new, here is the original.
    Duplicate(Message),
}

/// Stores a customer message and, in the same transaction, announces it and
/// queues an AI turn if none is in flight. Messages that arrive while a turn
/// is in flight wait; the turn's end starts the next one with all of them.
pub async fn receive_customer_message(
    pool: &PgPool,
    conversation_id: Uuid,
    client_id: &str,
    text: &str,
) -> Result<Received, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A resolved conversation opens again when the customer writes.
    if conversation::lock_state(&mut tx, conversation_id).await? == conversation::State::Resolved {
        let reopened = conversation::transition(
            &mut tx,
            conversation_id,
            Action::CustomerReturned,
            Actor::Customer,
            None,
        )
        .await;
        if let Err(TransitionError::Database(e)) = reopened {
            return Err(e);
        }
    }
    let new = NewMessage {
        client_id: Some(client_id),
        ..NewMessage::public(conversation_id, Role::Customer, text)
    };
    let Some(message) = conversations::append(&mut tx, new).await? else {
        tx.rollback().await?;
        let original = conversations::find_by_client_id(pool, conversation_id, client_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        return Ok(Received::Duplicate(original));
    };
    hub::publish_message(&mut tx, &message).await?;
    if turns::schedule(&mut tx, conversation_id).await? {
        hub::publish_status(&mut tx, conversation_id, AssistantStatus::Thinking).await?;
        worker::wake(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(Received::New(message))
}
