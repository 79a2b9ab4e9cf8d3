//! What operators watch: `/metrics`, `/healthz`, `/readyz` (also while the
//! database is down), and request ids carried from a delivery to its event.

use std::time::Duration;

use helpline::storage::private_pg::PrivatePostgres;
use serde_json::Value;

use crate::helpers::{metric, spawn_app, spawn_app_on, TestApp, TestOptions, PATIENCE};

#[tokio::test]
async fn metrics_count_rejected_and_accepted_webhooks_and_request_ids_reach_the_event() {
    let app = spawn_app().await;
    // Each instance has its own recorder: these counts are this app's alone.
    let before = app.metrics().await;
    assert_eq!(
        metric(&before, "helpline_webhooks_received_total", &[]),
        0.0
    );
    assert!(
        before.contains("# TYPE helpline_handoffs_total counter"),
        "{before}"
    );

    // Unsigned: refused.
    let refused = app
        .http
        .post(&app.webhook_url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // A generated request id is echoed.
    let generated = refused.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    // Signed, carrying the proxy's request id; then delivered again.
    let body = TestApp::event_body("batch.completed", "batch_1");
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = app.secret.sign("wh_metrics", &timestamp, body.as_bytes());
    for _ in 0..2 {
        let accepted = app
            .http
            .post(&app.webhook_url)
            .header("x-request-id", "req-from-proxy-1")
            .header("webhook-id", "wh_metrics")
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", &signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 200);
        assert_eq!(accepted.headers()["x-request-id"], "req-from-proxy-1");
    }

    let after = app.metrics().await;
    assert_eq!(metric(&after, "helpline_webhooks_received_total", &[]), 3.0);
    assert_eq!(
        metric(
            &after,
            "helpline_webhooks_rejected_total",
            &[("reason", "missing_header")]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "helpline_webhooks_accepted_total",
            &[("duplicate", "false")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "helpline_webhooks_accepted_total",
            &[("duplicate", "true")]
        ),
        1.0
    );
    assert_eq!(metric(&after, "helpline_database_up", &[]), 1.0);

    let stored: Option<String> =
        sqlx::query_scalar("SELECT request_id FROM webhook_events WHERE webhook_id = 'wh_metrics'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some("req-from-proxy-1"));
}

#[tokio::test]
async fn metrics_follow_a_conversation_from_socket_to_reply() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.send_message("m-1", "Where is my order?").await;
    socket.next_from("assistant").await;
    socket.next_status("idle").await;

    // The turn's latency is recorded just after its reply is committed,
    // the event's processing just after it is marked processed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        let text = app.metrics().await;
        let turns = metric(
            &text,
            "helpline_turn_seconds_count",
            &[("status", "completed")],
        );
        let events = metric(
            &text,
            "helpline_event_processing_seconds_count",
            &[("outcome", "processed")],
        );
        if turns == 1.0 && events == 1.0 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no turn recorded:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (endpoint, count) in [
        ("POST /conversations", 1.0),
        ("POST /responses", 1.0),
        ("GET /responses/{id}", 1.0),
    ] {
        assert_eq!(
            metric(
                &text,
                "helpline_openai_request_seconds_count",
                &[("endpoint", endpoint), ("status", "200")]
            ),
            count,
            "{endpoint}\n{text}"
        );
    }
    assert_eq!(metric(&text, "helpline_openai_errors_total", &[]), 0.0);
    assert_eq!(
        metric(
            &text,
            "helpline_event_processing_seconds_count",
            &[("outcome", "processed")]
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "helpline_open_sockets", &[("kind", "customer")]),
        1.0
    );
    // welcome, status, the customer's message, thinking, the reply, idle.
    assert!(
        metric(&text, "helpline_frames_sent_total", &[("kind", "customer")]) >= 6.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "helpline_conversations", &[("state", "open")]),
        1.0
    );
    assert_eq!(
        metric(&text, "helpline_webhook_events", &[("status", "pending")]),
        0.0
    );
    assert_eq!(
        metric(&text, "helpline_webhook_events", &[("status", "dead")]),
        0.0
    );
    assert!(
        text.contains("# TYPE helpline_turn_seconds histogram"),
        "{text}"
    );

    drop(socket);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(
        &app.metrics().await,
        "helpline_open_sockets",
        &[("kind", "customer")],
    ) != 0.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}/readyz", app.base_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls `/readyz` until `done` holds for its answer.
async fn readyz_until(app: &TestApp, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readyz(app).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}; last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the cluster even when the test fails.
struct Cluster(Option<PrivatePostgres>);

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(pg) = self.0.take() {
            pg.stop();
            let _ = std::fs::remove_dir_all(pg.data_dir.parent().unwrap());
        }
    }
}

#[tokio::test]
async fn readyz_goes_not_ready_while_the_database_is_down_and_ready_when_it_returns() {
    // A cluster of its own: stopping it disturbs no other test.
    let dir =
        std::env::temp_dir().join(format!("helpline-readyz-{}", uuid::Uuid::new_v4().simple()));
    let pg = tokio::task::spawn_blocking(move || PrivatePostgres::ensure_running(&dir))
        .await
        .unwrap()
        .expect("a private cluster");
    let server = pg.url("postgres");
    let mut cluster = Cluster(Some(pg));
    let app = spawn_app_on(&server, TestOptions::default()).await;

    let health = app
        .http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let ready = readyz_until(&app, "ready", |status, _| status == 200).await;
    assert_eq!(ready["status"], "ready");
    for part in ["database", "migrations", "listener", "workers"] {
        assert_eq!(ready["checks"][part], "ok", "{ready}");
    }

    let pg = cluster.0.take().unwrap();
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // The probe fails at once; the listener notices its connection died.
    let down = readyz_until(&app, "database and listener not ready", |status, body| {
        let not_ready = body["not_ready"].as_array().unwrap();
        status == 503
            && not_ready.contains(&"database".into())
            && not_ready.contains(&"listener".into())
    })
    .await;
    let not_ready: Vec<&str> = down["not_ready"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(not_ready.contains(&"database"), "{down}");
    assert!(not_ready.contains(&"listener"), "{down}");
    assert_eq!(down["checks"]["workers"], "ok", "{down}");
    // The process itself lives on.
    let health = app
        .http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let mut pg = pg;
    let pg = tokio::task::spawn_blocking(move || {
        pg.start().expect("restart the cluster");
        pg
    })
    .await
    .unwrap();
    cluster.0 = Some(pg);
    let back = readyz_until(&app, "ready again", |status, _| status == 200).await;
    assert_eq!(back["not_ready"], serde_json::json!([]), "{back}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_of_each_request() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    // The binary against this test's database and simulator.
    let app = spawn_app().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpline"))
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HELPLINE_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", &app.db_url)
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_WEBHOOK_SECRET", &app.secret_text)
        .env("OPENAI_BASE_URL", app.sim_base_url())
        .env("HELPLINE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start helpline");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Logs go to stderr; stdout is the start-up report.
    let mut log_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base_url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Helpline is running at ") {
                return url.trim_end_matches('/').to_owned();
            }
        }
        panic!("helpline exited before its start-up report");
    })
    .await
    .expect("start-up report in time");

    let refused = app
        .http
        .post(format!("{base_url}/api/webhooks/openai"))
        .header("x-request-id", "log-test-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let logged = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = log_lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "webhook rejected" {
                return event;
            }
        }
        panic!("helpline exited before logging the rejection");
    })
    .await
    .expect("the rejection was logged");
    assert_eq!(logged["level"], "WARN", "{logged}");
    assert_eq!(logged["spans"][0]["request_id"], "log-test-1", "{logged}");
    assert_eq!(
        logged["spans"][0]["path"], "/api/webhooks/openai",
        "{logged}"
    );
    let _ = child.kill().await;
}

#[tokio::test]
async fn readyz_names_pending_migrations_and_tolerates_newer_ones() {
    let app = spawn_app().await;
    readyz_until(&app, "ready", |status, _| status == 200).await;

    // A migration applied by a newer Helpline: this one is still ready.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");

    // One of ours not applied (as if the database were restored from an
    // older backup): not ready, and it says which.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 4")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["not_ready"],
        serde_json::json!(["migrations"]),
        "{body}"
    );
    assert_eq!(body["checks"]["migrations"], "pending: 0004_ops", "{body}");
}
