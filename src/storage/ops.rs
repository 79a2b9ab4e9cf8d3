//! Queries for operators: migration status, the database-wide numbers
//! `/metrics` samples, the retention purge, and deleting one customer's data.

use std::time::Duration;

use sqlx::{migrate::Migrator, PgPool};
use uuid::Uuid;

use super::Ending;

/// The migrations embedded in this binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where the database stands against this binary's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Embedded migrations not applied yet (`0004_ops`), oldest first.
    pub pending: Vec<String>,
    /// Applied migrations whose file changed since (never edit one).
    pub changed: Vec<String>,
    /// Applied migrations this binary does not know (a newer Helpline ran).
    pub unknown: Vec<i64>,
}

impl MigrationStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.changed.is_empty()
    }
}

pub async fn migration_status(pool: &PgPool) -> Result<MigrationStatus, sqlx::Error> {
    let applied: Vec<(i64, Vec<u8>)> = match sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        // No bookkeeping table: nothing was ever applied.
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut status = MigrationStatus::default();
    for m in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        let name = format!("{:04}_{}", m.version, m.description.replace(' ', "_"));
        match applied.iter().find(|(v, _)| *v == m.version) {
            None => status.pending.push(name),
            Some((_, checksum)) if checksum.as_slice() != &*m.checksum => status.changed.push(name),
            Some(_) => {}
        }
    }
    status.unknown = applied
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| MIGRATOR.iter().all(|m| m.version != *v))
        .collect();
    Ok(status)
}

/// (kind, label, count) for the gauges: webhook events not finished, the
/// most attempts any pending event has had, conversations by state, turns
/// not finished.
pub async fn samples(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let mut rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT 'events', status, count(*) FROM webhook_events
           WHERE status NOT IN ('processed', 'ignored') GROUP BY status
         UNION ALL
         SELECT 'conversations', status, count(*) FROM conversations GROUP BY status
         UNION ALL
         SELECT 'turns', status, count(*) FROM turns
           WHERE status IN ('pending', 'in_flight') GROUP BY status
         UNION ALL
         SELECT 'event_attempts', 'max', COALESCE(max(attempts), 0)::int8 FROM webhook_events
           WHERE status = 'pending'",
    )
    .fetch_all(pool)
    .await?;
    // A state with no rows reads 0 rather than keeping its last value.
    for (kind, label) in [
        ("events", "pending"),
        ("events", "dead"),
        ("conversations", "open"),
        ("conversations", "closed"),
        ("turns", "pending"),
        ("turns", "in_flight"),
    ] {
        if !rows.iter().any(|(k, l, _)| k == kind && l == label) {
            rows.push((kind.into(), label.into(), 0));
        }
    }
    Ok(rows)
}

/// Rows deleted per statement, so a large purge never holds long locks.
const BATCH: i64 = 5000;

/// Deletes processed and ignored webhook events received more than `age`
/// ago, and dead ones received more than `dead_age` ago. Pending events are
/// never deleted. Returns how many rows went.
pub async fn purge_events(
    pool: &PgPool,
    age: Duration,
    dead_age: Duration,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM webhook_events WHERE webhook_id IN (
                 SELECT webhook_id FROM webhook_events
                 WHERE (status IN ('processed', 'ignored') AND received_at < now() - make_interval(secs => $1))
                    OR (status = 'dead' AND received_at < now() - make_interval(secs => $2))
                 LIMIT $3
             )",
        )
        .bind(age.as_secs_f64())
        .bind(dead_age.as_secs_f64())
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The agent console's session table (tower-sessions' PostgreSQL store).
/// It does not exist until the console lands; the purge skips it till then.
pub const SESSIONS_TABLE: &str = "tower_sessions.session";

/// Deletes sessions that expired more than `age` ago, if the table exists.
/// `None` when there is no session table yet.
pub async fn purge_sessions(pool: &PgPool, age: Duration) -> Result<Option<u64>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(SESSIONS_TABLE)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    let mut total = 0;
    loop {
        let deleted = sqlx::query(&format!(
            "DELETE FROM {SESSIONS_TABLE} WHERE id IN (
                 SELECT id FROM {SESSIONS_TABLE}
                 WHERE expiry_date < now() - make_interval(secs => $1) LIMIT $2
             )"
        ))
        .bind(age.as_secs_f64())
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(Some(total));
        }
    }
}

/// What is stored about one conversation, before it is deleted.
#[derive(Debug, Clone)]
pub struct ConversationRecord {
    pub id: Uuid,
    pub visitor_id: Uuid,
    pub openai_conversation_id: Option<String>,
    /// The OpenAI responses its turns created.
    pub response_ids: Vec<String>,
}

pub async fn conversation_record(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<ConversationRecord>, sqlx::Error> {
    let row: Option<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT visitor_id, openai_conversation_id FROM conversations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((visitor_id, openai_conversation_id)) = row else {
        return Ok(None);
    };
    let response_ids = sqlx::query_scalar(
        "SELECT response_id FROM turns WHERE conversation_id = $1 AND response_id IS NOT NULL
         ORDER BY created_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(ConversationRecord {
        id,
        visitor_id,
        openai_conversation_id,
        response_ids,
    }))
}

/// What `delete_conversation` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub messages: i64,
    pub turns: i64,
    /// Whether the visitor identity went too (it had no other conversation).
    pub visitor: bool,
}

/// Deletes a conversation with its messages and turns, and the visitor
/// identity when no other conversation of theirs is left. Locks the
/// conversation first, like every writer, so no message slips in.
pub async fn delete_conversation(pool: &PgPool, id: Uuid) -> Result<Option<Deleted>, sqlx::Error> {
    super::in_transaction(&mut *pool.acquire().await?, async |tx| {
        let visitor: Option<Uuid> =
            sqlx::query_scalar("SELECT visitor_id FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(visitor_id) = visitor else {
            return Ok(Ending::RollBack(None));
        };
        let messages: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE conversation_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let turns: i64 =
            sqlx::query_scalar("SELECT count(*) FROM turns WHERE conversation_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        // Messages and turns go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM conversations WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let visitor = sqlx::query(
            "DELETE FROM visitors WHERE id = $1
               AND NOT EXISTS (SELECT 1 FROM conversations WHERE visitor_id = $1)",
        )
        .bind(visitor_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        Ok::<_, sqlx::Error>(Ending::Commit(Some(Deleted {
            messages,
            turns,
            visitor,
        })))
    })
    .await
}
