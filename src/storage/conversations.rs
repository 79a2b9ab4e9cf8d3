//! Visitors, their conversations, and the numbered messages in them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Ending;

/// Who may speak in a conversation (the rules of changing it are in
/// [`crate::conversation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    Bot,
    NeedsHuman,
    Human,
    Resolved,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::NeedsHuman => "needs_human",
            Self::Human => "human",
            Self::Resolved => "resolved",
        }
    }

    /// Whether AI turns start (and AI replies reach the customer).
    pub fn ai_speaks(self) -> bool {
        matches!(self, Self::Bot | Self::NeedsHuman)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Assistant,
    Agent,
    System,
    /// An agent's internal note.
    Note,
    /// A change of state: who, why (in `event`).
    Event,
}

/// A stored transcript item. Agents see every item, numbered by
/// `agent_seq`; customers see the public ones, numbered by `seq`. Both
/// count 1, 2, 3… per conversation with no gaps.
///
/// Deserializable from the row as PostgreSQL's `row_to_json` writes it: a
/// statement that stores an item can announce the row itself
/// (`storage::turns::append_and_schedule`), and the hub renders its frames.
#[derive(Debug, Clone, sqlx::FromRow, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `None` for internal items.
    pub seq: Option<i64>,
    pub agent_seq: i64,
    pub role: Role,
    pub body: String,
    pub client_id: Option<String>,
    pub internal: bool,
    pub author_name: Option<String>,
    pub event: Option<sqlx::types::Json<serde_json::Value>>,
    pub created_at: DateTime<Utc>,
}

/// What to append to a conversation.
pub struct NewMessage<'a> {
    pub conversation_id: Uuid,
    pub role: Role,
    pub body: &'a str,
    pub client_id: Option<&'a str>,
    pub openai_item_id: Option<&'a str>,
    pub turn_id: Option<Uuid>,
    pub internal: bool,
    pub author_id: Option<Uuid>,
    /// The name the customer and agents see beside an agent's item.
    pub author_name: Option<&'a str>,
    pub event: Option<serde_json::Value>,
}

impl<'a> NewMessage<'a> {
    /// A message the customer sees.
    pub fn public(conversation_id: Uuid, role: Role, body: &'a str) -> Self {
        Self {
            conversation_id,
            role,
            body,
            client_id: None,
            openai_item_id: None,
            turn_id: None,
            internal: false,
            author_id: None,
            author_name: None,
            event: None,
        }
    }

    /// An item only agents see.
    pub fn internal(conversation_id: Uuid, role: Role, body: &'a str) -> Self {
        Self {
            internal: true,
            ..Self::public(conversation_id, role, body)
        }
    }
}

pub(super) const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, agent_seq, role, body, client_id, internal, author_name, event, created_at";

pub async fn create_visitor(pool: &PgPool, token_hash: &[u8]) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO visitors (id, token_hash) VALUES ($1, $2)")
        .bind(id)
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(id)
}

/// The visitor of a verified user, created on first use, and one more token
/// for it: each device of the user gets its own token for the same visitor.
pub async fn visitor_for_user(
    pool: &PgPool,
    user_id: &str,
    token_hash: &[u8],
) -> Result<Uuid, sqlx::Error> {
    super::in_transaction(&mut *pool.acquire().await?, async |tx| {
        // A concurrent first sign-in of the same user waits here for the
        // other insert to commit, then finds its row below.
        let created: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO visitors (id, token_hash, user_id) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO NOTHING
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(token_hash)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = created {
            return Ok(Ending::Commit(id));
        }
        let id: Uuid = sqlx::query_scalar("SELECT id FROM visitors WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO visitor_tokens (token_hash, visitor_id) VALUES ($1, $2)")
            .bind(token_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Ok::<_, sqlx::Error>(Ending::Commit(id))
    })
    .await
}

/// The visitor a token belongs to: the token it was created with, or one of
/// its further tokens (a verified user's other devices).
pub async fn find_visitor(pool: &PgPool, token_hash: &[u8]) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM visitors WHERE token_hash = $1
         UNION ALL
         SELECT visitor_id FROM visitor_tokens WHERE token_hash = $1
         LIMIT 1",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await
}

/// The visitor's open conversation, created on first use.
pub async fn open_conversation(pool: &PgPool, visitor_id: Uuid) -> Result<Uuid, sqlx::Error> {
    // Insert-or-read in one statement; the partial unique index settles races.
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO conversations (id, visitor_id) VALUES ($1, $2)
         ON CONFLICT (visitor_id) WHERE status = 'open' DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(visitor_id)
    .fetch_optional(pool)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => {
            sqlx::query_scalar(
                "SELECT id FROM conversations WHERE visitor_id = $1 AND status = 'open'",
            )
            .bind(visitor_id)
            .fetch_one(pool)
            .await
        }
    }
}

pub async fn last_seq(pool: &PgPool, conversation_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT last_seq FROM conversations WHERE id = $1")
        .bind(conversation_id)
        .fetch_one(pool)
        .await
}

/// Appends an item with the next seqs, in one statement. Returns `None`
/// when a unique key (client_id, OpenAI item id) says it is already stored;
/// the caller must then roll back, since the seqs were taken. Callers hold
/// the conversation's row lock (`conversation::lock_state`) or get it here.
pub async fn append(
    conn: &mut PgConnection,
    m: NewMessage<'_>,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH next AS (
             UPDATE conversations SET
                 last_seq = last_seq + CASE WHEN $9 THEN 0 ELSE 1 END,
                 last_agent_seq = last_agent_seq + 1,
                 updated_at = now()
             WHERE id = $2
             RETURNING last_seq, last_agent_seq
         )
         INSERT INTO messages (id, conversation_id, seq, agent_seq, role, body, client_id,
                               openai_item_id, turn_id, internal, author_agent_id, author_name, event)
         SELECT $1, $2, CASE WHEN $9 THEN NULL ELSE next.last_seq END, next.last_agent_seq,
                $3, $4, $5, $6, $7, $9, $8, $10, $11
         FROM next
         ON CONFLICT DO NOTHING
         RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(m.conversation_id)
    .bind(m.role)
    .bind(m.body)
    .bind(m.client_id)
    .bind(m.openai_item_id)
    .bind(m.turn_id)
    .bind(m.author_id)
    .bind(m.internal)
    .bind(m.author_name)
    .bind(m.event.map(sqlx::types::Json))
    .fetch_optional(conn)
    .await
}

pub async fn find_by_client_id(
    pool: &PgPool,
    conversation_id: Uuid,
    client_id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND client_id = $2"
    ))
    .bind(conversation_id)
    .bind(client_id)
    .fetch_optional(pool)
    .await
}

/// Messages after `after_seq`, in order.
pub async fn messages_after(
    pool: &PgPool,
    conversation_id: Uuid,
    after_seq: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation_id = $1 AND seq > $2 ORDER BY seq"
    ))
    .bind(conversation_id)
    .bind(after_seq)
    .fetch_all(pool)
    .await
}

pub async fn message_at(
    pool: &PgPool,
    conversation_id: Uuid,
    seq: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2"
    ))
    .bind(conversation_id)
    .bind(seq)
    .fetch_optional(pool)
    .await
}

/// The highest item seq of a conversation; `None` if there is none.
pub async fn last_agent_seq(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT last_agent_seq FROM conversations WHERE id = $1")
        .bind(conversation_id)
        .fetch_optional(pool)
        .await
}

/// The transcript item numbered `agent_seq`.
pub async fn item_at(
    pool: &PgPool,
    conversation_id: Uuid,
    agent_seq: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND agent_seq = $2"
    ))
    .bind(conversation_id)
    .bind(agent_seq)
    .fetch_optional(pool)
    .await
}

/// Every transcript item after `after_agent_seq`, in order (what agents see).
pub async fn items_after(
    pool: &PgPool,
    conversation_id: Uuid,
    after_agent_seq: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation_id = $1 AND agent_seq > $2 ORDER BY agent_seq"
    ))
    .bind(conversation_id)
    .bind(after_agent_seq)
    .fetch_all(pool)
    .await
}

/// Records the OpenAI Conversation unless one is recorded already; returns
/// the one that counts.
pub async fn set_openai_conversation_id(
    pool: &PgPool,
    conversation_id: Uuid,
    openai_id: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE conversations SET openai_conversation_id = COALESCE(openai_conversation_id, $2)
         WHERE id = $1 RETURNING openai_conversation_id",
    )
    .bind(conversation_id)
    .bind(openai_id)
    .fetch_one(pool)
    .await
}
