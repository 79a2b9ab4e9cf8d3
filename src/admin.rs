//! The operators' API: `/api/admin/...`, behind `HELPLINE_ADMIN_TOKEN`
//! (`Authorization: Bearer <token>`). Without a token configured every admin
//! route answers 404, as if it did not exist.

use axum::{
    extract::{FromRequestParts, Path, State},
    http::{request::Parts, StatusCode},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::{error::ApiError, state::AppState, storage::inbox};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/webhooks/dead", get(list_dead))
        .route("/api/admin/webhooks/{id}", get(show_event))
        .route("/api/admin/webhooks/{id}/replay", post(replay))
}

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = (StatusCode, Json<Value>);

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let refuse = |status: StatusCode, code: &str, message: &str| {
            (
                status,
                Json(json!({ "error": { "code": code, "message": message } })),
            )
        };
        let Some(expected) = &state.config.admin_token else {
            return Err(refuse(StatusCode::NOT_FOUND, "not_found", "not found"));
        };
        let offered = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if bool::from(offered.as_bytes().ct_eq(expected.expose().as_bytes())) {
            Ok(Admin)
        } else {
            Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required",
            ))
        }
    }
}

async fn list_dead(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<inbox::EventSummary>>, ApiError> {
    Ok(Json(inbox::list_dead(&state.pool, 500).await?))
}

async fn show_event(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<inbox::EventSummary>, ApiError> {
    inbox::find(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

async fn replay(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if inbox::replay(&state.pool, &id).await? {
        Ok(Json(json!({ "replayed": id })))
    } else {
        Err(ApiError::bad_request(
            "not_dead",
            format!("no dead event with webhook-id {id:?}"),
        ))
    }
}

/// `helpline webhooks dead`: one line per dead event (or JSON).
pub async fn print_dead(pool: &sqlx::PgPool, as_json: bool) -> anyhow::Result<()> {
    let dead = inbox::list_dead(pool, 500).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&dead)?);
        return Ok(());
    }
    if dead.is_empty() {
        println!("no dead webhook events");
        return Ok(());
    }
    println!(
        "{:<36}  {:<22}  {:>8}  {:<20}  last error",
        "webhook-id", "type", "attempts", "received"
    );
    for event in dead {
        println!(
            "{:<36}  {:<22}  {:>8}  {:<20}  {}",
            event.webhook_id,
            event.event_type,
            event.attempts,
            event.received_at.format("%Y-%m-%d %H:%M:%S"),
            event.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// `helpline webhooks show ID`
pub async fn print_event(pool: &sqlx::PgPool, webhook_id: &str) -> anyhow::Result<()> {
    let event = inbox::find(pool, webhook_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no webhook event {webhook_id:?}"))?;
    println!("{}", serde_json::to_string_pretty(&event)?);
    Ok(())
}

/// `helpline webhooks replay ID`
pub async fn replay_dead(pool: &sqlx::PgPool, webhook_id: &str) -> anyhow::Result<()> {
    if !inbox::replay(pool, webhook_id).await? {
        anyhow::bail!("no dead webhook event {webhook_id:?} (see `helpline webhooks dead`)");
    }
    println!("{webhook_id} is queued again; a running Helpline instance will process it");
    Ok(())
}

/// `helpline agents add`: returns the password when it was generated (to be
/// shown once).
pub async fn add_agent(
    pool: &sqlx::PgPool,
    email: &str,
    name: &str,
    password: Option<String>,
) -> anyhow::Result<Option<String>> {
    let email = email.trim();
    if !email.contains('@') || email.len() > 254 {
        anyhow::bail!("{email:?} is not an email address");
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        anyhow::bail!("the name must be 1 to 100 characters");
    }
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                rand::random::<[u8; 18]>(),
            ),
            true,
        ),
    };
    if password.chars().count() < 12 {
        anyhow::bail!("the password must be at least 12 characters");
    }
    let hash = crate::agents::auth::hash_password(&password);
    if crate::storage::agents::create(pool, email, name, &hash)
        .await?
        .is_none()
    {
        anyhow::bail!("an agent with the email {email} exists already");
    }
    Ok(generated.then_some(password))
}

/// `helpline agents list`
pub async fn print_agents(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let agents = crate::storage::agents::list(pool).await?;
    if agents.is_empty() {
        println!("no agents yet: add one with `helpline agents add --email … --name …`");
        return Ok(());
    }
    println!("{:<36}  {:<30}  {:<9}  created", "email", "name", "status");
    for agent in agents {
        let status = if agent.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        };
        println!(
            "{:<36}  {:<30}  {:<9}  {}",
            agent.email,
            agent.name,
            status,
            agent.created_at.format("%Y-%m-%d")
        );
    }
    Ok(())
}

/// `helpline agents disable`: the agent is signed out at their next request.
pub async fn disable_agent(pool: &sqlx::PgPool, email: &str) -> anyhow::Result<()> {
    if !crate::storage::agents::disable(pool, email).await? {
        anyhow::bail!("no active agent with the email {email}");
    }
    println!("{email} is disabled and signed out");
    Ok(())
}
