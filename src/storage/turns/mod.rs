//! AI turns: one background Response each, at most one active per
//! conversation. A `pending` turn is also the job that starts it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod scheduling;

use super::{conversations::ConversationState, on_kept_connection, KeptConnection, NO_FLUSH_WAIT};

pub use scheduling::{append_and_schedule, schedule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TurnStatus {
    Pending,
    InFlight,
    Completed,
    Failed,
    Cancelled,
    Incomplete,
}

impl TurnStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::InFlight)
    }

    /// How a finished turn ended, as metrics label it; `None` while it runs.
    pub fn finished_label(self) -> Option<&'static str> {
        match self {
            Self::Completed => Some("completed"),
            Self::Failed => Some("failed"),
            Self::Cancelled => Some("cancelled"),
            Self::Incomplete => Some("incomplete"),
            Self::Pending | Self::InFlight => None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Turn {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub status: TurnStatus,
    pub first_seq: i64,
    pub last_seq: i64,
    pub response_id: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
}

const TURN_COLUMNS: &str =
    "id, conversation_id, status, first_seq, last_seq, response_id, attempts, created_at, started_at";

pub async fn has_active(pool: &PgPool, conversation_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM turns WHERE conversation_id = $1 AND status IN ('pending', 'in_flight'))",
    )
    .bind(conversation_id)
    .fetch_one(pool)
    .await
}

/// A claimed turn, with what starting it needs.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(flatten)]
    pub turn: Turn,
    /// The OpenAI Conversation, once one has been created.
    pub openai_conversation_id: Option<String>,
    /// The customer messages the turn answers, oldest first.
    pub inputs: Vec<String>,
}

/// Claims one due pending turn for `lease`; no other worker sees it
/// meanwhile. The same statement reads its OpenAI Conversation and inputs.
pub async fn claim_pending(
    kept: &mut KeptConnection,
    lease: Duration,
) -> Result<Option<Claimed>, sqlx::Error> {
    on_kept_connection!(kept, |conn| claim_pending_on(conn, lease))
}

async fn claim_pending_on(
    conn: &mut PgConnection,
    lease: Duration,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE turns SET claimed_until = now() + make_interval(secs => $1), attempts = attempts + 1
         WHERE id = (
             SELECT id FROM turns
             WHERE status = 'pending' AND next_attempt_at <= now()
               AND (claimed_until IS NULL OR claimed_until < now())
             ORDER BY next_attempt_at
             FOR UPDATE SKIP LOCKED
             LIMIT 1
         )
         RETURNING {TURN_COLUMNS},
             (SELECT openai_conversation_id FROM conversations c WHERE c.id = turns.conversation_id)
                 AS openai_conversation_id,
             ARRAY(SELECT body FROM messages m
                   WHERE m.conversation_id = turns.conversation_id AND m.role = 'customer'
                     AND m.seq BETWEEN turns.first_seq AND turns.last_seq
                   ORDER BY m.seq) AS inputs,
             {NO_FLUSH_WAIT}"
    ))
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await
}

/// OpenAI accepted the turn's response. If a webhook already finished the
/// turn (it can overtake the create call), only the id is filled in. Safe
/// to run twice, so it goes through the worker's kept connection.
///
/// Its commit does not wait for the disk ([`NO_FLUSH_WAIT`]). Losing it
/// (PostgreSQL crashing within moments, before any later commit flushed
/// it) leaves what Helpline dying between the create call and this mark
/// leaves: a pending turn whose response runs at OpenAI all the same. Its
/// lease runs out, the turn is started again, and whichever response's
/// webhook comes first ends it (the event names the turn in the
/// response's metadata); the other is ignored. The customer sees one
/// answer.
pub async fn mark_in_flight(
    kept: &mut KeptConnection,
    turn_id: Uuid,
    response_id: &str,
) -> Result<(), sqlx::Error> {
    on_kept_connection!(kept, |conn| mark_in_flight_on(conn, turn_id, response_id))
}

async fn mark_in_flight_on(
    conn: &mut PgConnection,
    turn_id: Uuid,
    response_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE turns SET
             response_id = COALESCE(response_id, $2),
             status = CASE WHEN status = 'pending' THEN 'in_flight' ELSE status END,
             started_at = COALESCE(started_at, now()),
             claimed_until = NULL
         WHERE id = $1 RETURNING {NO_FLUSH_WAIT}"
    ))
    .bind(turn_id)
    .bind(response_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Starting the turn failed; try again after `delay`.
pub async fn retry_later(
    pool: &PgPool,
    turn_id: Uuid,
    delay: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE turns SET claimed_until = NULL, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $2)
         WHERE id = $1 AND status = 'pending' RETURNING {NO_FLUSH_WAIT}"
    ))
    .bind(turn_id)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn find(pool: &PgPool, turn_id: Uuid) -> Result<Option<Turn>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {TURN_COLUMNS} FROM turns WHERE id = $1"))
        .bind(turn_id)
        .fetch_optional(pool)
        .await
}

pub async fn find_by_response(
    pool: &PgPool,
    response_id: &str,
) -> Result<Option<Turn>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {TURN_COLUMNS} FROM turns WHERE response_id = $1"
    ))
    .bind(response_id)
    .fetch_optional(pool)
    .await
}

/// A turn [`finish`] ended.
#[derive(Debug, sqlx::FromRow)]
pub struct Finished {
    pub conversation_id: Uuid,
    /// The conversation's state, read under its row lock.
    pub state: ConversationState,
    /// How long the customer has waited, from the turn's first message.
    pub waited: Option<f64>,
}

/// Ends a turn that is still open (`None` if there is no such turn or it
/// has ended already). Locks its conversation first, then the turn, the
/// order every writer follows, both held until the transaction ends: in
/// one statement, since the update joins the locked conversation.
pub async fn finish(
    conn: &mut PgConnection,
    turn_id: Uuid,
    status: TurnStatus,
    response_id: Option<&str>,
    error: Option<&str>,
) -> Result<Option<Finished>, sqlx::Error> {
    sqlx::query_as(
        "WITH locked AS (
             SELECT c.id, c.state FROM conversations c JOIN turns t ON t.conversation_id = c.id
             WHERE t.id = $1 FOR UPDATE OF c
         ), ended AS (
             UPDATE turns SET status = $2, response_id = COALESCE(response_id, $3), last_error = $4,
                 finished_at = now(), claimed_until = NULL
             FROM locked
             WHERE turns.id = $1 AND turns.conversation_id = locked.id
               AND turns.status IN ('pending', 'in_flight')
             RETURNING (SELECT EXTRACT(EPOCH FROM clock_timestamp() - m.created_at)::float8
                        FROM messages m
                        WHERE m.conversation_id = turns.conversation_id AND m.seq = turns.first_seq)
                 AS waited
         )
         SELECT locked.id AS conversation_id, locked.state, ended.waited FROM locked, ended",
    )
    .bind(turn_id)
    .bind(status)
    .bind(response_id)
    .bind(error)
    .fetch_optional(conn)
    .await
}

/// Claims up to `limit` turns in flight for longer than `after` whose
/// webhook has not come, and that were not checked in the last `interval`.
pub async fn claim_overdue(
    pool: &PgPool,
    after: Duration,
    interval: Duration,
    limit: i64,
) -> Result<Vec<Turn>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE turns SET checked_at = now()
         WHERE id IN (
             SELECT id FROM turns
             WHERE status = 'in_flight' AND started_at < now() - make_interval(secs => $1)
               AND (checked_at IS NULL OR checked_at < now() - make_interval(secs => $2))
             ORDER BY started_at
             FOR UPDATE SKIP LOCKED
             LIMIT $3
         )
         RETURNING {TURN_COLUMNS}, {NO_FLUSH_WAIT}"
    ))
    .bind(after.as_secs_f64())
    .bind(interval.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}
