//! AI turns: one background Response each, at most one active per
//! conversation. A `pending` turn is also the job that starts it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    conversations::{ConversationState, Message, MESSAGE_COLUMNS},
    notify::{self, Announcements},
    on_kept_connection, KeptConnection, NO_FLUSH_WAIT,
};

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

/// Starts a turn for the customer messages no turn has taken yet, unless one
/// is active or a person owns the conversation, and sends `announce` in the
/// same statement: those of its notifications that depend on whether a
/// turn was started as that says ([`Announcements::if_scheduled`]).
/// Call with the conversation locked. Returns whether it started one.
pub async fn schedule(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    announce: Announcements,
) -> Result<bool, sqlx::Error> {
    let (channels, payloads, when) = announce.into_parts();
    // pg_notify is volatile, so it is evaluated after the sort: in order.
    // (`sent` runs because the last line reads it.)
    sqlx::query_scalar(
        "WITH waiting AS (
             SELECT c.ai_cursor, max(m.seq) AS last
             FROM conversations c
             JOIN messages m ON m.conversation_id = c.id AND m.role = 'customer' AND m.seq > c.ai_cursor
             WHERE c.id = $1 AND c.state IN ('bot', 'needs_human')
             GROUP BY c.ai_cursor
         ), created AS (
             INSERT INTO turns (id, conversation_id, first_seq, last_seq)
             SELECT $2, $1, waiting.ai_cursor + 1, waiting.last FROM waiting
             WHERE NOT EXISTS (
                 SELECT 1 FROM turns WHERE conversation_id = $1 AND status IN ('pending', 'in_flight')
             )
             RETURNING last_seq
         ), scheduled AS (
             UPDATE conversations SET ai_cursor = created.last_seq FROM created
             WHERE conversations.id = $1 RETURNING ai_cursor
         ), outcome AS (
             SELECT EXISTS (SELECT 1 FROM scheduled) AS yes
         ), sent AS (
             SELECT pg_notify(n.channel, n.payload)
             FROM outcome,
                  unnest($3::text[], $4::text[], $5::int2[]) WITH ORDINALITY AS n(channel, payload, branch, i)
             WHERE n.branch = $6 OR (n.branch = $7) = outcome.yes
             ORDER BY n.i
         )
         SELECT outcome.yes FROM outcome WHERE (SELECT count(*) FROM sent) >= 0",
    )
    .bind(conversation_id)
    .bind(Uuid::now_v7())
    .bind(channels)
    .bind(payloads)
    .bind(when)
    .bind(notify::ALWAYS)
    .bind(notify::IF_SCHEDULED)
    .fetch_one(conn)
    .await
}

/// A customer's message, stored and answered in one statement (its own
/// transaction, one round trip): appends it with the next seqs and, unless
/// a turn is active or a person owns the conversation, starts a turn for
/// the customer messages no turn has taken yet. It announces the message
/// (the stored row itself, from which each instance's hub renders the
/// frames) and then `announce`, whose conditional notifications go out as
/// [`schedule`]'s do.
///
/// `None`, with nothing stored or sent, when the conversation is resolved
/// or `client_id` is stored already (a retried send): the caller takes the
/// long way, [`super::conversations::append`] then [`schedule`] in a
/// transaction of its own.
///
/// The first step locks the conversation, and reads it as the last writer
/// left it; every later step works from that. Whether a turn is active is
/// settled by the unique index of active turns (`ON CONFLICT DO NOTHING`),
/// which sees turns that started or ended after the statement's snapshot.
pub async fn append_and_schedule(
    pool: &PgPool,
    conversation_id: Uuid,
    client_id: &str,
    body: &str,
    announce: Announcements,
) -> Result<Option<Message>, sqlx::Error> {
    let (channels, payloads, when) = announce.into_parts();
    let appended = sqlx::query_as(&format!(
        "WITH latest AS (
             SELECT last_seq, ai_cursor, state FROM conversations
             WHERE id = $2 AND state <> 'resolved'
               AND NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = $2 AND client_id = $4)
             FOR UPDATE
         ), created AS (
             INSERT INTO turns (id, conversation_id, first_seq, last_seq)
             SELECT $5, $2, latest.ai_cursor + 1, latest.last_seq + 1 FROM latest
             WHERE latest.state IN ('bot', 'needs_human')
             ON CONFLICT (conversation_id) WHERE status IN ('pending', 'in_flight') DO NOTHING
             RETURNING last_seq
         ), next AS (
             UPDATE conversations c SET
                 last_seq = c.last_seq + 1,
                 last_agent_seq = c.last_agent_seq + 1,
                 ai_cursor = COALESCE((SELECT last_seq FROM created), c.ai_cursor),
                 updated_at = now()
             FROM latest
             WHERE c.id = $2
             RETURNING c.last_seq, c.last_agent_seq
         ), stored AS (
             INSERT INTO messages (id, conversation_id, seq, agent_seq, role, body, client_id, internal)
             SELECT $1, $2, next.last_seq, next.last_agent_seq, 'customer', $3, $4, false FROM next
             RETURNING {MESSAGE_COLUMNS}
         ), notes AS (
             -- The message to its customer's sockets, then to agents (`a`),
             -- each with the row, or by seq alone if that is too big.
             SELECT to_whom.i, $6 AS channel,
                    CASE WHEN octet_length(full_row::text) <= $7 THEN full_row::text
                         ELSE json_build_object('c', s.conversation_id, 'a', to_whom.agents,
                                                'seq', to_whom.seq)::text END AS payload
             FROM stored s
             CROSS JOIN LATERAL (VALUES (0::bigint, false, s.seq), (1, true, s.agent_seq))
                 AS to_whom(i, agents, seq)
             CROSS JOIN LATERAL json_build_object('c', s.conversation_id, 'a', to_whom.agents,
                                                  'seq', to_whom.seq, 'm', row_to_json(s)) AS full_row
             UNION ALL
             SELECT 1 + n.i, n.channel, n.payload
             FROM unnest($8::text[], $9::text[], $10::int2[]) WITH ORDINALITY AS n(channel, payload, branch, i)
             WHERE EXISTS (SELECT 1 FROM stored)
               AND (n.branch = $11 OR (n.branch = $12) = EXISTS (SELECT 1 FROM created))
         ), sent AS (
             -- pg_notify is volatile, so it is evaluated after the sort: in order.
             SELECT pg_notify(channel, payload) FROM notes ORDER BY i
         )
         SELECT * FROM stored WHERE (SELECT count(*) FROM sent) >= 0"
    ))
    .bind(Uuid::now_v7())
    .bind(conversation_id)
    .bind(body)
    .bind(client_id)
    .bind(Uuid::now_v7())
    .bind(notify::FRAMES_CHANNEL)
    .bind(notify::MAX_INLINE_PAYLOAD as i32)
    .bind(channels)
    .bind(payloads)
    .bind(when)
    .bind(notify::ALWAYS)
    .bind(notify::IF_SCHEDULED)
    .fetch_optional(pool)
    .await;
    match appended {
        // Sent twice at once: the other send stored it while this one
        // waited for the lock. The statement stored nothing.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        other => other,
    }
}

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
