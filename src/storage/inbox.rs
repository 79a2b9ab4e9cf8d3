//! The webhook inbox: every verified delivery, stored once by its
//! `webhook-id`. Pending rows are the worker's queue.

use std::time::Duration;

use sqlx::{types::Json, PgPool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub webhook_id: String,
    pub event_type: String,
    pub payload: Json<serde_json::Value>,
    pub attempts: i32,
    /// The x-request-id of the delivery that recorded it.
    pub request_id: Option<String>,
}

/// Stores a delivery and wakes the workers, in one statement. Returns false
/// for a redelivery of a webhook-id we already have.
pub async fn record(
    pool: &PgPool,
    webhook_id: &str,
    event_id: Option<&str>,
    event_type: &str,
    payload: &serde_json::Value,
    handled: bool,
    request_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let status = if handled { "pending" } else { "ignored" };
    let inserted: Option<bool> = sqlx::query_scalar(
        "WITH stored AS (
             INSERT INTO webhook_events (webhook_id, event_id, event_type, payload, status, request_id)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (webhook_id) DO NOTHING
             RETURNING status
         )
         SELECT status = 'pending' AND pg_notify('helpline_work', '') IS NOT NULL FROM stored",
    )
    .bind(webhook_id)
    .bind(event_id)
    .bind(event_type)
    .bind(Json(payload))
    .bind(status)
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    Ok(inserted.is_some())
}

/// Claims one due pending event for `lease`.
pub async fn claim(pool: &PgPool, lease: Duration) -> Result<Option<Event>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE webhook_events SET locked_until = now() + make_interval(secs => $1), attempts = attempts + 1
         WHERE webhook_id = (
             SELECT webhook_id FROM webhook_events
             WHERE status = 'pending' AND next_attempt_at <= now()
               AND (locked_until IS NULL OR locked_until < now())
             ORDER BY next_attempt_at
             FOR UPDATE SKIP LOCKED
             LIMIT 1
         )
         RETURNING webhook_id, event_type, payload, attempts, request_id",
    )
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

pub async fn mark_processed(pool: &PgPool, webhook_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_events SET status = 'processed', processed_at = now(), locked_until = NULL
         WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Processing failed: try again after `delay`, or park the event as dead.
pub async fn retry_later(
    pool: &PgPool,
    webhook_id: &str,
    delay: Option<Duration>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_events SET
             status = CASE WHEN $2::float8 IS NULL THEN 'dead' ELSE 'pending' END,
             next_attempt_at = now() + make_interval(secs => COALESCE($2, 0)),
             locked_until = NULL, last_error = $3
         WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .bind(delay.map(|d| d.as_secs_f64()))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// An event as operators see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EventSummary {
    pub webhook_id: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub payload: Json<serde_json::Value>,
}

const SUMMARY_COLUMNS: &str =
    "webhook_id, event_id, event_type, status, attempts, last_error, received_at, payload";

/// Dead events, newest first.
pub async fn list_dead(pool: &PgPool, limit: i64) -> Result<Vec<EventSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM webhook_events WHERE status = 'dead'
         ORDER BY received_at DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn find(pool: &PgPool, webhook_id: &str) -> Result<Option<EventSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM webhook_events WHERE webhook_id = $1"
    ))
    .bind(webhook_id)
    .fetch_optional(pool)
    .await
}

/// Puts a dead event back in the queue with a fresh attempt budget and
/// wakes the workers. Returns false if there is no such dead event.
pub async fn replay(pool: &PgPool, webhook_id: &str) -> Result<bool, sqlx::Error> {
    let replayed: Option<bool> = sqlx::query_scalar(
        "WITH revived AS (
             UPDATE webhook_events
             SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_until = NULL
             WHERE webhook_id = $1 AND status = 'dead'
             RETURNING webhook_id
         )
         SELECT pg_notify('helpline_work', '') IS NOT NULL FROM revived",
    )
    .bind(webhook_id)
    .fetch_optional(pool)
    .await?;
    Ok(replayed.is_some())
}
