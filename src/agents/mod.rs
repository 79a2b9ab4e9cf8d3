//! The agents' side: accounts and sessions, the console's JSON API and live
//! socket, and the actions that change who speaks in a conversation.
//! Documented in docs/agent-api.md; the console itself is `static/agent/`.

mod api;
pub mod auth;
mod hashing;
mod socket;

use axum::{
    routing::{get, post},
    Router,
};
use tower_sessions::{cookie::SameSite, Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

use crate::state::AppState;

/// Sessions end after this long without a request.
pub const SESSION_IDLE: time::Duration = time::Duration::hours(8);

/// `secure`: cookies only over HTTPS (when the public URL is https).
pub fn router(store: PostgresStore, secure: bool) -> Router<AppState> {
    let sessions = SessionManagerLayer::new(store)
        .with_name("helpline_session")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(secure)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(SESSION_IDLE));
    Router::new()
        .route("/api/agent/login", post(auth::login))
        .route("/api/agent/logout", post(auth::logout))
        .route("/api/agent/me", get(auth::me))
        .route("/api/agent/conversations", get(api::list))
        .route("/api/agent/conversations/{id}", get(api::show))
        .route("/api/agent/conversations/{id}/messages", post(api::reply))
        .route("/api/agent/conversations/{id}/notes", post(api::note))
        .route("/api/agent/conversations/{id}/read", post(api::read))
        .route("/api/agent/conversations/{id}/{action}", post(api::act))
        .route("/api/agent/ws", get(socket::upgrade))
        .layer(sessions)
}
