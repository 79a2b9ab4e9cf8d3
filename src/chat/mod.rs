//! The customer side: the chat widget's script, visitor identities, the chat
//! socket, and what happens when a customer message arrives (store it,
//! announce it, queue an AI turn).

pub mod identity;
pub mod origins;
mod socket;

use std::{net::SocketAddr, time::Instant};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::map_response,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tower_http::services::ServeFile;
use uuid::Uuid;

use crate::protocol::customer_frames::AssistantStatus;
use crate::{
    conversation::{self, Action, Actor, TransitionError},
    error::ApiError,
    hub::Announce,
    limits,
    state::AppState,
    storage::{
        self,
        conversations::{self, ConversationState, Message, NewMessage, Role},
        notify::Announcements,
        turns, Ending,
    },
};

/// `widget.js` is embedded by URL on customers' sites, so it cannot carry a
/// version in its name: browsers keep it a few minutes, then revalidate.
const WIDGET_CACHE_CONTROL: &str = "public, max-age=300, stale-while-revalidate=3600";

pub fn router(static_dir: &std::path::Path) -> Router<AppState> {
    let widget = Router::new()
        .route_service("/widget.js", ServeFile::new(static_dir.join("widget.js")))
        .layer(map_response(widget_headers));
    Router::new()
        .route("/api/visitors", post(create_visitor).options(preflight))
        .route("/api/chat/ws", get(socket::upgrade))
        .merge(widget)
}

/// Any site may load the script (`crossorigin`/SRI need CORS); what it may
/// do afterwards is decided by the origin check of the API.
async fn widget_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(WIDGET_CACHE_CONTROL),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The optional body of `POST /api/visitors`.
#[derive(Deserialize, Default)]
struct VisitorRequest {
    user_id: Option<String>,
    user_hash: Option<String>,
}

#[derive(Serialize)]
struct NewVisitor {
    visitor_id: Uuid,
    token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

/// `OPTIONS /api/visitors`: the CORS preflight of a browser on another site.
async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match origins::check(&state.config.allowed_origins, &headers) {
        Ok(origin) => origins::preflight(origin),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/visitors`: a new identity, or a new device of a verified user.
/// Refused before anything is stored when the page's origin is not allowed.
async fn create_visitor(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match origins::check(&state.config.allowed_origins, &headers) {
        Ok(origin) => {
            // Throttled per IP before anything is parsed or stored.
            let response = match state.limits.visitors.take(peer.ip(), Instant::now()) {
                Ok(()) => register(&state, &body).await.into_response(),
                Err(wait) => {
                    state.metrics.rate_limited("visitors");
                    ApiError::TooManyRequests {
                        retry_after_secs: limits::retry_after_secs(wait),
                    }
                    .into_response()
                }
            };
            origins::with_cors(origin, response)
        }
        Err(e) => e.into_response(),
    }
}

/// The token is shown once and stored only as its SHA-256.
async fn register(
    state: &AppState,
    body: &[u8],
) -> Result<(StatusCode, Json<NewVisitor>), ApiError> {
    // No body at all is fine: an anonymous visitor.
    let request: VisitorRequest = if body.iter().all(u8::is_ascii_whitespace) {
        VisitorRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("body is not a visitor request: {e}"),
            )
        })?
    };
    let secret = state
        .config
        .identity_secret
        .as_ref()
        .map(|s| s.expose().as_bytes());
    let user_id = identity::verified_user(
        secret,
        request.user_id.as_deref(),
        request.user_hash.as_deref(),
    )?;

    let token = format!("hlv_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let visitor_id = match user_id {
        None => conversations::create_visitor(&state.pool, &token_hash(&token)).await?,
        Some(user_id) => {
            conversations::visitor_for_user(&state.pool, user_id, &token_hash(&token)).await?
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(NewVisitor {
            visitor_id,
            token,
            user_id: user_id.map(str::to_owned),
        }),
    ))
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
    let thinking = |a: Announcements| {
        a.status(conversation_id, AssistantStatus::Thinking)
            .wake_workers()
    };
    // Nearly always: one statement does it all.
    let announce = Announcements::default().if_scheduled(thinking);
    if let Some(message) =
        turns::append_and_schedule(pool, conversation_id, client_id, text, announce).await?
    {
        return Ok(Received::New(message));
    }
    // Resolved, or that client_id was stored before: the long way, which
    // first opens a resolved conversation again (the customer is back).
    let new = NewMessage {
        client_id: Some(client_id),
        ..NewMessage::public(conversation_id, Role::Customer, text)
    };
    let stored = storage::in_transaction(&mut *pool.acquire().await?, async |tx| {
        reopen_if_resolved(&mut *tx, conversation_id).await?;
        let Some(message) = conversations::append(&mut *tx, new).await? else {
            return Ok(Ending::RollBack(None));
        };
        let announce = Announcements::default()
            .message(&message)
            .if_scheduled(thinking);
        turns::schedule(&mut *tx, conversation_id, announce).await?;
        Ok::<_, sqlx::Error>(Ending::Commit(Some(message)))
    })
    .await?;
    match stored {
        Some(message) => Ok(Received::New(message)),
        None => {
            let original = conversations::find_by_client_id(pool, conversation_id, client_id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            Ok(Received::Duplicate(original))
        }
    }
}

/// Locks the conversation; if it is resolved, opens it again.
async fn reopen_if_resolved(
    conn: &mut sqlx::PgConnection,
    conversation_id: Uuid,
) -> Result<(), sqlx::Error> {
    if conversation::lock_state(&mut *conn, conversation_id).await? == ConversationState::Resolved {
        let reopened = conversation::transition(
            conn,
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
    Ok(())
}
