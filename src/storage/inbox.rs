//! The webhook inbox: every verified delivery, stored once by its
//! `webhook-id`. Pending rows are the worker's queue.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{types::Json, PgConnection, PgPool};

use super::{on_kept_connection, KeptConnection, NO_FLUSH_WAIT};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub webhook_id: String,
    pub event_type: String,
    pub payload: Json<serde_json::Value>,
    pub attempts: i32,
    /// The x-request-id of the delivery that recorded it.
    pub request_id: Option<String>,
    /// When it fell due: claims take the oldest first.
    pub next_attempt_at: DateTime<Utc>,
}

/// A verified delivery, as it is stored.
#[derive(Debug, Clone)]
pub struct VerifiedDelivery {
    pub webhook_id: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub payload: serde_json::Value,
    /// Whether it is work for the workers (`pending`) or only kept
    /// (`ignored`: an event type Helpline does not act on).
    pub handled: bool,
    /// The x-request-id of the delivery.
    pub request_id: Option<String>,
}

/// What became of a receipt that was new.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    /// Work for the workers (`pending`), rather than only kept.
    pub pending: bool,
    /// Stored already leased to this instance's workers: when it fell due.
    pub leased: Option<DateTime<Utc>>,
}

/// Stores receipts in one statement and one commit. Returns, for each
/// receipt in order, `Some` if it was new, `None` for a redelivery of a
/// webhook-id we already have (or one earlier in the same batch).
///
/// The first `leasable` new pending receipts are stored leased for `lease`
/// with their first attempt counted, as a claim would leave them: the
/// recorder (`queue::Recorder`) hands them to this instance's workers in memory, so that
/// they need no claim.
///
/// It does not `pg_notify`: a notifying transaction holds PostgreSQL's one
/// notification-queue lock from its commit until the commit is flushed, so
/// notifying deliveries commit one at a time instead of sharing WAL flushes.
/// The recorder wakes its own instance's workers instead.
async fn record_all(
    conn: &mut PgConnection,
    receipts: &[&VerifiedDelivery],
    lease: Duration,
    leasable: usize,
) -> Result<Vec<Option<Stored>>, sqlx::Error> {
    // The first of several receipts with one webhook-id is the one stored.
    let mut seen = HashSet::with_capacity(receipts.len());
    let unique: Vec<&VerifiedDelivery> = receipts
        .iter()
        .copied()
        .filter(|r| seen.insert(r.webhook_id.as_str()))
        .collect();
    let mut leases_left = leasable;
    let leases: Vec<Option<f64>> = unique
        .iter()
        .map(|r| {
            let leased = r.handled && leases_left > 0;
            leases_left -= usize::from(leased);
            leased.then_some(lease.as_secs_f64())
        })
        .collect();
    let inserted: Vec<(String, bool, DateTime<Utc>, bool)> = sqlx::query_as(
        "INSERT INTO webhook_events
             (webhook_id, event_id, event_type, payload, status, request_id, locked_until, attempts)
         SELECT webhook_id, event_id, event_type, payload, status, request_id,
             now() + make_interval(secs => lease), CASE WHEN lease IS NULL THEN 0 ELSE 1 END
         FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], $7::float8[])
             AS r(webhook_id, event_id, event_type, payload, status, request_id, lease)
         ON CONFLICT (webhook_id) DO NOTHING
         RETURNING webhook_id, status = 'pending', next_attempt_at, locked_until IS NOT NULL",
    )
    .bind(unique.iter().map(|r| r.webhook_id.as_str()).collect::<Vec<_>>())
    .bind(unique.iter().map(|r| r.event_id.as_deref()).collect::<Vec<_>>())
    .bind(unique.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
    .bind(unique.iter().map(|r| Json(&r.payload)).collect::<Vec<_>>())
    .bind(
        unique
            .iter()
            .map(|r| if r.handled { "pending" } else { "ignored" })
            .collect::<Vec<_>>(),
    )
    .bind(unique.iter().map(|r| r.request_id.as_deref()).collect::<Vec<_>>())
    .bind(leases)
    .fetch_all(conn)
    .await?;
    let mut inserted: HashMap<String, Stored> = inserted
        .into_iter()
        .map(|(id, pending, due, leased)| {
            let leased = leased.then_some(due);
            (id, Stored { pending, leased })
        })
        .collect();
    Ok(receipts
        .iter()
        // `remove`: a later receipt with the same id is a duplicate.
        .map(|r| inserted.remove(&r.webhook_id))
        .collect())
}

/// [`record_all`] on the writer's kept connection. Safe to run twice (see
/// [`on_kept_connection`]): had the first run committed before its connection was
/// lost, the second finds the receipts stored and answers `duplicate`
/// (their workers are then woken by the poll, not by us, and events it had
/// leased wait for their lease to run out).
pub async fn record_kept(
    kept: &mut KeptConnection,
    receipts: &[&VerifiedDelivery],
    lease: Duration,
    leasable: usize,
) -> Result<Vec<Option<Stored>>, sqlx::Error> {
    on_kept_connection!(kept, |conn| record_all(conn, receipts, lease, leasable))
}

/// Gives the leases of `webhook_ids` back to the queue (their attempt
/// uncounted): events an instance had leased to its own workers and none
/// took, so that other instances take them at once.
pub async fn release_leases(pool: &PgPool, webhook_ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_events SET locked_until = NULL, attempts = attempts - 1
         WHERE webhook_id = ANY($1) AND status = 'pending'",
    )
    .bind(webhook_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims up to `limit` due pending events for `lease`, oldest first; only
/// among those due at or after `from`, when given (`worker`'s `ClaimFloor`
/// explains why and when that is safe).
pub async fn claim(
    kept: &mut KeptConnection,
    lease: Duration,
    limit: i64,
    from: Option<DateTime<Utc>>,
) -> Result<Vec<Event>, sqlx::Error> {
    on_kept_connection!(kept, |conn| claim_on(conn, lease, limit, from))
}

async fn claim_on(
    conn: &mut PgConnection,
    lease: Duration,
    limit: i64,
    from: Option<DateTime<Utc>>,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_events SET locked_until = now() + make_interval(secs => $1), attempts = attempts + 1
         WHERE webhook_id IN (
             SELECT webhook_id FROM webhook_events
             WHERE status = 'pending' AND next_attempt_at <= now()
               AND next_attempt_at >= COALESCE($3, '-infinity'::timestamptz)
               AND (locked_until IS NULL OR locked_until < now())
             ORDER BY next_attempt_at
             FOR UPDATE SKIP LOCKED
             LIMIT $2
         )
         RETURNING webhook_id, event_type, payload, attempts, request_id, next_attempt_at,
             {NO_FLUSH_WAIT}"
    ))
    .bind(lease.as_secs_f64())
    .bind(limit)
    .bind(from)
    .fetch_all(conn)
    .await
}

/// What became of a claimed event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Processed,
    /// Failed; due again after the delay.
    RetryIn(Duration, String),
    /// Failed for good: parked for an operator (`helpline webhooks dead`).
    Dead(String),
}

impl EventOutcome {
    /// The event's new status, retry delay (seconds) and error.
    fn columns(&self) -> (&'static str, Option<f64>, Option<&str>) {
        match self {
            EventOutcome::Processed => ("processed", None, None),
            EventOutcome::RetryIn(delay, error) => {
                ("pending", Some(delay.as_secs_f64()), Some(error.as_str()))
            }
            EventOutcome::Dead(error) => ("dead", None, Some(error.as_str())),
        }
    }
}

/// Records the outcomes of claimed events, all in one statement, and
/// releases their leases.
pub async fn settle(
    kept: &mut KeptConnection,
    outcomes: &[(String, EventOutcome)],
) -> Result<(), sqlx::Error> {
    on_kept_connection!(kept, |conn| settle_on(conn, outcomes))
}

async fn settle_on(
    conn: &mut PgConnection,
    outcomes: &[(String, EventOutcome)],
) -> Result<(), sqlx::Error> {
    if let [(webhook_id, outcome)] = outcomes {
        return settle_one(conn, webhook_id, outcome).await;
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut delays = Vec::with_capacity(outcomes.len());
    let mut errors = Vec::with_capacity(outcomes.len());
    for (webhook_id, outcome) in outcomes {
        let (status, delay, error) = outcome.columns();
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
    // Planned afresh each time, never from a cached generic plan: that plan
    // is made for an array of unknown length against the table as it was
    // when the connection first ran this statement, and while the table is
    // small it is a hash join over a sequential scan, which it then stays
    // while the table grows (until autovacuum's next ANALYZE invalidates
    // it): many times the work of a few index lookups.
    .persistent(false)
    .execute(conn)
    .await?;
    Ok(())
}

/// One outcome (most batches under a steady load hold one event): a
/// statement on the unique key, prepared once per connection. Its generic
/// plan is an index lookup whatever the table's size, so it is not planned
/// afresh each time like the batch's.
async fn settle_one(
    conn: &mut PgConnection,
    webhook_id: &str,
    outcome: &EventOutcome,
) -> Result<(), sqlx::Error> {
    let (status, delay, error) = outcome.columns();
    sqlx::query(&format!(
        "UPDATE webhook_events SET
             status = $2,
             processed_at = CASE WHEN $2 = 'processed' THEN now() ELSE processed_at END,
             next_attempt_at = CASE WHEN $2 = 'pending'
                 THEN now() + make_interval(secs => $3) ELSE next_attempt_at END,
             locked_until = NULL,
             last_error = COALESCE($4, last_error)
         WHERE webhook_id = $1
         RETURNING {NO_FLUSH_WAIT}"
    ))
    .bind(webhook_id)
    .bind(status)
    .bind(delay)
    .bind(error)
    .execute(conn)
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
