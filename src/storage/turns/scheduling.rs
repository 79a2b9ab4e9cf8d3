//! Starting turns: the statements that store what a turn will answer and
//! start one unless one is active, sending the writer's notifications in
//! the same statement (some only if a turn was started).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::storage::{
    conversations::{Message, MESSAGE_COLUMNS},
    notify::{self, Announcements},
};

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
/// long way, [`crate::storage::conversations::append`] then [`schedule`] in a
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
