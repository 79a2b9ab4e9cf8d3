//! What operators and orchestrators look at: `GET /healthz` (the process
//! lives), `GET /readyz` (it can do its work: database reachable, migrations
//! current, notification listener connected, workers running) and
//! `GET /metrics` (Prometheus text format).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::{json, Map, Value};

use crate::{state::AppState, storage::ops};

/// How long a probe waits for the database before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 with every check `ok`, or 503 naming the parts that are not ready.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = Map::new();
    let mut check = |name: &str, result: Result<(), String>| {
        checks.insert(
            name.to_owned(),
            Value::String(result.err().unwrap_or_else(|| "ok".into())),
        );
    };

    match tokio::time::timeout(PROBE_TIMEOUT, ops::migration_status(&state.pool)).await {
        Ok(Ok(status)) => {
            check("database", Ok(()));
            let migrations = if status.is_current() {
                Ok(())
            } else if !status.pending.is_empty() {
                Err(format!("pending: {}", status.pending.join(", ")))
            } else {
                Err(format!(
                    "changed since applied: {}",
                    status.changed.join(", ")
                ))
            };
            check("migrations", migrations);
        }
        Ok(Err(e)) => {
            check("database", Err(format!("unreachable: {e}")));
            check("migrations", Err("unknown: database unreachable".into()));
        }
        Err(_) => {
            check(
                "database",
                Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            );
            check("migrations", Err("unknown: database unreachable".into()));
        }
    }
    check(
        "listener",
        if state.hub.is_listening() {
            Ok(())
        } else {
            Err("not connected: reconnecting to PostgreSQL".into())
        },
    );
    let (running, expected) = state.health.workers();
    check(
        "workers",
        if expected > 0 && running >= expected {
            Ok(())
        } else {
            Err(format!("{running} of {expected} running"))
        },
    );
    if state.shutdown.is_cancelled() {
        check("shutdown", Err("shutting down".into()));
    }

    let not_ready: Vec<&String> = checks
        .iter()
        .filter(|(_, v)| *v != "ok")
        .map(|(k, _)| k)
        .collect();
    let ready = not_ready.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "not_ready": not_ready,
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Samples the database-wide gauges, then renders everything.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(PROBE_TIMEOUT, ops::samples(&state.pool)).await {
        Ok(Ok(samples)) => {
            state.metrics.set_sampled(&samples);
            state.metrics.set_database_up(true);
        }
        _ => state.metrics.set_database_up(false),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
