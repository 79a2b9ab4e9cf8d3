//! Agents, their failed logins, and what each has read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Agent {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    #[serde(skip)]
    pub password_hash: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const AGENT_COLUMNS: &str = "id, email, name, password_hash, disabled_at, created_at";

/// Returns `None` if an agent with that email exists already.
pub async fn create(
    pool: &PgPool,
    email: &str,
    name: &str,
    password_hash: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO agents (id, email, name, password_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT (lower(email)) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .fetch_optional(pool)
    .await
}

pub async fn find_by_email(pool: &PgPool, email: &str) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE lower(email) = lower($1)"
    ))
    .bind(email)
    .fetch_optional(pool)
    .await
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Agent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await
}

/// Returns false if there is no such (enabled) agent.
pub async fn disable(pool: &PgPool, email: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE agents SET disabled_at = now() WHERE lower(email) = lower($1) AND disabled_at IS NULL",
    )
    .bind(email)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether a console's session is still live: not signed out, not expired,
/// and its agent not disabled. Reads tower-sessions' table directly, since
/// its store answers only for the session of a request.
pub async fn session_is_live(
    pool: &PgPool,
    session_id: &str,
    agent_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tower_sessions.session WHERE id = $1 AND expiry_date > now())
            AND EXISTS (SELECT 1 FROM agents WHERE id = $2 AND disabled_at IS NULL)",
    )
    .bind(session_id)
    .bind(agent_id)
    .fetch_one(pool)
    .await
}

/// How many failed logins are allowed within a window.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub window: Duration,
    /// For one account, from one address.
    pub per_account_and_address: i64,
    /// From one address, whatever the account.
    pub per_address: i64,
}

/// Claims a login attempt before its password is checked: `None` if the
/// limits refuse it, else the attempt's id. The attempt counts as a failure
/// until [`forget_login_attempt`] (after a success), so concurrent
/// attempts from one address each see those before them: the address's
/// lock makes the count and the claim one step.
pub async fn claim_login_attempt(
    pool: &PgPool,
    email: &str,
    ip: &str,
    limits: LoginLimits,
) -> Result<Option<i64>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    super::in_transaction(&mut conn, async |tx| {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('helpline-login:' || $1, 0))")
            .bind(ip)
            .execute(&mut *tx)
            .await?;
        let claimed: Option<i64> = sqlx::query_scalar(
            "WITH recent AS (
                 SELECT count(*) FILTER (WHERE lower(email) = lower($1)) AS by_account,
                        count(*) AS by_address
                 FROM login_failures
                 WHERE ip = $2 AND failed_at > now() - make_interval(secs => $3)
             )
             INSERT INTO login_failures (email, ip)
             SELECT $1, $2 FROM recent WHERE by_account < $4 AND by_address < $5
             RETURNING id",
        )
        .bind(email)
        .bind(ip)
        .bind(limits.window.as_secs_f64())
        .bind(limits.per_account_and_address)
        .bind(limits.per_address)
        .fetch_optional(&mut *tx)
        .await?;
        Ok::<_, sqlx::Error>(super::Ending::Commit(claimed))
    })
    .await
}

/// The attempt succeeded: it no longer counts as a failure.
pub async fn forget_login_attempt(pool: &PgPool, attempt: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE id = $1")
        .bind(attempt)
        .execute(pool)
        .await?;
    Ok(())
}

/// The agent has read the conversation up to `agent_seq`.
pub async fn mark_read(
    pool: &PgPool,
    agent_id: Uuid,
    conversation_id: Uuid,
    agent_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_reads (agent_id, conversation_id, read_agent_seq) VALUES ($1, $2, $3)
         ON CONFLICT (agent_id, conversation_id)
         DO UPDATE SET read_agent_seq = GREATEST(agent_reads.read_agent_seq, EXCLUDED.read_agent_seq)",
    )
    .bind(agent_id)
    .bind(conversation_id)
    .bind(agent_seq)
    .execute(pool)
    .await?;
    Ok(())
}

/// A conversation as the agents' list shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Summary {
    pub id: Uuid,
    pub visitor_id: Uuid,
    pub state: String,
    pub last_seq: i64,
    pub last_message: Option<String>,
    pub last_role: Option<String>,
    pub last_message_at: Option<DateTime<Utc>>,
    /// Customer messages this agent has not read.
    pub unread: i64,
    /// An AI turn is in flight.
    pub thinking: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Conversations for the list: `needs_human` first, then newest activity;
/// optionally one state, and only those with a message matching `search`.
pub async fn summaries(
    pool: &PgPool,
    agent_id: Uuid,
    state: Option<&str>,
    search: Option<&str>,
    only: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.visitor_id, c.state, c.last_agent_seq AS last_seq,
                last.body AS last_message, last.role AS last_role, last.created_at AS last_message_at,
                (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.role = 'customer'
                    AND m.agent_seq > COALESCE(r.read_agent_seq, 0)) AS unread,
                EXISTS (SELECT 1 FROM turns t WHERE t.conversation_id = c.id
                    AND t.status IN ('pending', 'in_flight')) AS thinking,
                c.created_at, c.updated_at
         FROM conversations c
         LEFT JOIN agent_reads r ON r.conversation_id = c.id AND r.agent_id = $1
         LEFT JOIN LATERAL (
             SELECT body, role, created_at FROM messages m
             WHERE m.conversation_id = c.id AND m.role IN ('customer', 'assistant', 'agent', 'system')
             ORDER BY m.agent_seq DESC LIMIT 1
         ) last ON true
         WHERE ($2::text IS NULL OR c.state = $2)
           AND ($3::uuid IS NULL OR c.id = $3)
           AND ($4::text IS NULL OR EXISTS (
               SELECT 1 FROM messages m WHERE m.conversation_id = c.id
               AND m.body ILIKE '%' || replace(replace(replace($4, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'))
           AND c.last_agent_seq > 0
         ORDER BY (c.state = 'needs_human') DESC, c.updated_at DESC
         LIMIT $5",
    )
    .bind(agent_id)
    .bind(state)
    .bind(only)
    .bind(search)
    .bind(limit)
    .fetch_all(pool)
    .await
}
