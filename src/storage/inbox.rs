//! The webhook inbox: every verified delivery, stored once by its
//! `webhook-id`. Pending rows are the worker's queue.

use std::time::Duration;

use sqlx::{types::Json, PgPool};

use super::NO_FLUSH_WAIT;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub webhook_id: String,
    pub event_type: String,
    pub payload: Json<serde_json::Value>,
    pub attempts: i32,
    /// The x-request-id of the delivery that recorded it.
    pub request_id: Option<String>,
}

/// Stores a delivery. Returns `Some(pending)` for a new webhook-id (whether
/// it is work for the workers), `None` for a redelivery of one we already
/// have.
///
/// It does not `pg_notify`: a notifying transaction holds PostgreSQL's one
/// notification-queue lock from its commit until the commit is flushed, so
/// notifying deliveries commit one at a time instead of sharing WAL flushes
/// (BENCHMARKS.md, scenario 1). The endpoint wakes its own instance's
/// workers instead.
pub async fn record(
    pool: &PgPool,
    webhook_id: &str,
    event_id: Option<&str>,
    event_type: &str,
    payload: &serde_json::Value,
    handled: bool,
    request_id: Option<&str>,
) -> Result<Option<bool>, sqlx::Error> {
    let status = if handled { "pending" } else { "ignored" };
    sqlx::query_scalar(
        "INSERT INTO webhook_events (webhook_id, event_id, event_type, payload, status, request_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (webhook_id) DO NOTHING
         RETURNING status = 'pending'",
    )
    .bind(webhook_id)
    .bind(event_id)
    .bind(event_type)
    .bind(Json(payload))
    .bind(status)
    .bind(request_id)
    .fetch_optional(pool)
    .await
}

/// Claims up to `limit` due pending events for `lease`, oldest first.
pub async fn claim(pool: &PgPool, lease: Duration, limit: i64) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_events SET locked_until = now() + make_interval(secs => $1), attempts = attempts + 1
         WHERE webhook_id IN (
             SELECT webhook_id FROM webhook_events
             WHERE status = 'pending' AND next_attempt_at <= now()
               AND (locked_until IS NULL OR locked_until < now())
             ORDER BY next_attempt_at
             FOR UPDATE SKIP LOCKED
             LIMIT $2
         )
         RETURNING webhook_id, event_type, payload, attempts, request_id, {NO_FLUSH_WAIT}"
    ))
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What became of a claimed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Processed,
    /// Failed; due again after the delay.
    RetryIn(Duration, String),
    /// Failed for good: parked for an operator (`helpline webhooks dead`).
    Dead(String),
}

/// Records the outcomes of claimed events, all in one statement, and
/// releases their leases.
pub async fn settle(pool: &PgPool, outcomes: &[(String, Verdict)]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut delays = Vec::with_capacity(outcomes.len());
    let mut errors = Vec::with_capacity(outcomes.len());
    for (webhook_id, outcome) in outcomes {
        let (status, delay, error) = match outcome {
            Verdict::Processed => ("processed", None, None),
            Verdict::RetryIn(delay, error) => {
                ("pending", Some(delay.as_secs_f64()), Some(error.as_str()))
            }
            Verdict::Dead(error) => ("dead", None, Some(error.as_str())),
        };
        ids.push(webhook_id.as_str());
        statuses.push(status);
        delays.push(delay);
        errors.push(error);
    }
    sqlx::query(&format!(
        "UPDATE webhook_events e SET
             status = o.status,
             processed_at = CASE WHEN o.status = 'processed' THEN now() ELSE e.processed_at END,
             next_attempt_at = CASE WHEN o.status = 'pending'
                 THEN now() + make_interval(secs => o.delay) ELSE e.next_attempt_at END,
             locked_until = NULL,
             last_error = COALESCE(o.error, e.last_error)
         FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[]) AS o(webhook_id, status, delay, error)
         WHERE e.webhook_id = o.webhook_id
         RETURNING {NO_FLUSH_WAIT}"
    ))
    .bind(ids)
    .bind(statuses)
    .bind(delays)
    .bind(errors)
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
