//! Agent accounts and sessions: Argon2id passwords, tower-sessions with the
//! PostgreSQL store (HttpOnly, SameSite=Strict, Secure over HTTPS, expiring
//! after inactivity), a CSRF token per session, a new session id at login,
//! and throttled logins that never say which part was wrong.

use std::{net::SocketAddr, time::Duration};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use axum::{
    extract::{ConnectInfo, FromRequestParts, State},
    http::{request::Parts, StatusCode},
    Json,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower_sessions::Session;
use uuid::Uuid;

use super::hashing;
use crate::{error::ApiError, state::AppState, storage::agents};

const SESSION_AGENT: &str = "agent_id";
const SESSION_CSRF: &str = "csrf";
/// State-changing requests carry the session's token in this header.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Failed logins are counted over this window, and refused beyond these
/// counts: per account from one address (a guesser), and per address for
/// any account (a sprayer). Limits per account alone would let anyone lock
/// a real agent out from wherever they work.
const LOGIN_LIMITS: agents::LoginLimits = agents::LoginLimits {
    window: Duration::from_secs(15 * 60),
    per_account_and_address: 5,
    per_address: 30,
};

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2id hashes any password")
        .to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of nothing in particular, so that an unknown email costs as much
/// time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches nothing"))
}

/// The agent behind the request's session. Answers 401 without one, and
/// logs out (and refuses) an agent who has been disabled.
pub struct CurrentAgent {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub session: Session,
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::Unauthorized {
        code,
        message: message.to_owned(),
    }
}

impl FromRequestParts<AppState> for CurrentAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|_| unauthorized("not_signed_in", "sign in first"))?;
        let id: Option<Uuid> = session.get(SESSION_AGENT).await.map_err(session_error)?;
        let Some(id) = id else {
            return Err(unauthorized("not_signed_in", "sign in first"));
        };
        match agents::find(&state.pool, id).await? {
            Some(agent) if agent.disabled_at.is_none() => Ok(CurrentAgent {
                id,
                name: agent.name,
                email: agent.email,
                session,
            }),
            _ => {
                session.flush().await.map_err(session_error)?;
                Err(unauthorized(
                    "account_disabled",
                    "this account is disabled; you were signed out",
                ))
            }
        }
    }
}

/// An agent making a change: also proves the request comes from the
/// console (the session's CSRF token in `x-csrf-token`).
pub struct ActingAgent(pub CurrentAgent);

impl FromRequestParts<AppState> for ActingAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let agent = CurrentAgent::from_request_parts(parts, state).await?;
        let expected: Option<String> = agent
            .session
            .get(SESSION_CSRF)
            .await
            .map_err(session_error)?;
        let offered = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match expected {
            Some(expected) if bool::from(expected.as_bytes().ct_eq(offered.as_bytes())) => {
                Ok(ActingAgent(agent))
            }
            _ => Err(ApiError::Forbidden {
                code: "csrf_failed",
                message: format!("missing or wrong {CSRF_HEADER} header"),
            }),
        }
    }
}

fn session_error(e: tower_sessions::session::Error) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("session store: {e}"))
}

#[derive(Deserialize)]
pub(super) struct Login {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub(super) struct SignedIn {
    agent: AgentInfo,
    csrf_token: String,
}

#[derive(Serialize)]
struct AgentInfo {
    id: Uuid,
    name: String,
    email: String,
}

/// `POST /api/agent/login`
pub(super) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    Json(login): Json<Login>,
) -> Result<Json<SignedIn>, ApiError> {
    if login.email.contains('\0') || login.password.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_credentials_format",
            "email and password must not contain the NUL character",
        ));
    }
    let ip = peer.ip().to_string();
    let refused = ApiError::TooManyRequests {
        retry_after_secs: LOGIN_LIMITS.window.as_secs(),
    };
    let Some(attempt) =
        agents::claim_login_attempt(&state.pool, &login.email, &ip, LOGIN_LIMITS).await?
    else {
        return Err(refused);
    };
    let agent = agents::find_by_email(&state.pool, &login.email).await?;
    let hash = agent
        .as_ref()
        .map_or(decoy_hash(), |a| a.password_hash.as_str());
    let password_ok = hashing::verify(login.password, hash.to_owned())
        .await
        .map_err(|hashing::Busy| ApiError::TooManyRequests {
            retry_after_secs: 1,
        })?;
    let agent = match agent {
        Some(agent) if password_ok && agent.disabled_at.is_none() => agent,
        _ => {
            tracing::info!(%ip, "failed agent login");
            return Err(unauthorized(
                "invalid_credentials",
                "wrong email or password",
            ));
        }
    };
    agents::forget_login_attempt(&state.pool, attempt).await?;
    // A fresh session id at login: a session fixed before sign-in is useless.
    session.cycle_id().await.map_err(session_error)?;
    let csrf_token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    session
        .insert(SESSION_AGENT, agent.id)
        .await
        .map_err(session_error)?;
    session
        .insert(SESSION_CSRF, &csrf_token)
        .await
        .map_err(session_error)?;
    tracing::info!(agent_id = %agent.id, "agent signed in");
    Ok(Json(SignedIn {
        agent: AgentInfo {
            id: agent.id,
            name: agent.name,
            email: agent.email,
        },
        csrf_token,
    }))
}

/// `POST /api/agent/logout`
pub(super) async fn logout(ActingAgent(agent): ActingAgent) -> Result<StatusCode, ApiError> {
    agent.session.flush().await.map_err(session_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/agent/me`: who is signed in, and the CSRF token to send.
pub(super) async fn me(agent: CurrentAgent) -> Result<Json<SignedIn>, ApiError> {
    let csrf_token: String = agent
        .session
        .get(SESSION_CSRF)
        .await
        .map_err(session_error)?
        .unwrap_or_default();
    Ok(Json(SignedIn {
        agent: AgentInfo {
            id: agent.id,
            name: agent.name,
            email: agent.email,
        },
        csrf_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_with_argon2id_and_verified() {
        let hash = hash_password("correct horse battery staple");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("correct horse battery stapl", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }
}
