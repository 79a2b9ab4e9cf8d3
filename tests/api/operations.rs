//! What operators run: the retention purge, deleting a customer's data, and
//! `helpline doctor` (through the real binary) against a working and a
//! broken setup.

use std::{process::Output, time::Duration};

use helpline::{
    ai::AiClient,
    config::{AiSettings, RetentionConfig},
    retention,
    simulator::Behaviour,
};
use tokio::process::Command;
use uuid::Uuid;

use crate::helpers::{new_database, spawn_app, spawn_app_with, TestApp, TestOptions};

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

async fn insert_event(app: &TestApp, id: &str, status: &str, age_hours: i64) {
    // A pending one is waiting for its next attempt, tomorrow.
    sqlx::query(
        "INSERT INTO webhook_events (webhook_id, event_type, payload, status, received_at, next_attempt_at)
         VALUES ($1, 'response.completed', '{}', $2, now() - make_interval(hours => $3), now() + interval '1 day')",
    )
    .bind(id)
    .bind(status)
    .bind(age_hours as i32)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn remaining_events(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT webhook_id FROM webhook_events WHERE webhook_id LIKE 'wh_ret_%' ORDER BY webhook_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_retention_purge_deletes_only_what_has_outlived_its_age() {
    let app = spawn_app().await;
    let config = RetentionConfig {
        events: hours(72),
        dead_events: hours(720),
        sessions: hours(24),
        interval: Duration::from_secs(3600),
    };
    for (id, status, age) in [
        ("wh_ret_a_processed_old", "processed", 100),
        ("wh_ret_b_processed_recent", "processed", 71),
        ("wh_ret_c_ignored_old", "ignored", 100),
        ("wh_ret_d_pending_ancient", "pending", 5000),
        ("wh_ret_e_dead_old", "dead", 100),
        ("wh_ret_f_dead_ancient", "dead", 800),
    ] {
        insert_event(&app, id, status, age).await;
    }
    // A customer's old conversation: conversations are never purged.
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.send_message("r-1", "hello").await;
    socket.next_from("assistant").await;
    sqlx::query("UPDATE messages SET created_at = now() - interval '400 days'")
        .execute(&app.pool)
        .await
        .unwrap();

    // The session table exists (the agent console's), still empty.
    let purged = retention::purge_once(&app.pool, &config).await.unwrap();
    assert_eq!(purged.sessions, Some(0));
    assert_eq!(
        remaining_events(&app).await,
        [
            "wh_ret_b_processed_recent",
            "wh_ret_d_pending_ancient",
            "wh_ret_e_dead_old"
        ]
    );
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM conversations").await, 1);

    // Sessions expired for longer than the retention go; live and recently
    // expired ones stay.
    sqlx::raw_sql(
        "INSERT INTO tower_sessions.session VALUES
           ('live', '', now() + interval '1 hour'),
           ('expired_recently', '', now() - interval '2 hours'),
           ('expired_long_ago', '', now() - interval '3 days');",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let purged = retention::purge_once(&app.pool, &config).await.unwrap();
    assert_eq!(purged.sessions, Some(1));
    let sessions: Vec<String> =
        sqlx::query_scalar("SELECT id FROM tower_sessions.session ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(sessions, ["expired_recently", "live"]);
}

/// A visitor with one answered message; returns (token, conversation id).
async fn conversation_with_a_reply(app: &TestApp, client_id: &str) -> Uuid {
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket
        .send_message(client_id, "What is your refund policy?")
        .await;
    socket.next_from("assistant").await;
    socket.next_status("idle").await;
    socket.welcome["conversation_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn rows_of(app: &TestApp, conversation: Uuid) -> (i64, i64, i64) {
    let one = |sql: &str| {
        let sql = sql.to_owned();
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .bind(conversation)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    (
        one("SELECT count(*) FROM conversations WHERE id = $1").await,
        one("SELECT count(*) FROM messages WHERE conversation_id = $1").await,
        one("SELECT count(*) FROM turns WHERE conversation_id = $1").await,
    )
}

#[tokio::test]
async fn an_operator_deletes_a_customers_conversation_here_and_at_openai() {
    let app = spawn_app().await;
    let kept = conversation_with_a_reply(&app, "keep-1").await;
    let doomed = conversation_with_a_reply(&app, "gone-1").await;
    let (openai_conversation, response_id): (String, String) = sqlx::query_as(
        "SELECT c.openai_conversation_id, t.response_id FROM conversations c
         JOIN turns t ON t.conversation_id = c.id WHERE c.id = $1",
    )
    .bind(doomed)
    .fetch_one(&app.pool)
    .await
    .unwrap();

    let ai = AiClient::new(
        &app.sim_base_url(),
        "sk-test",
        AiSettings::default(),
        std::time::Duration::from_secs(5),
    );
    let report = retention::delete_conversation(&app.pool, Some(&ai), doomed)
        .await
        .unwrap();
    assert_eq!(report.deleted.messages, 2);
    assert_eq!(report.deleted.turns, 1);
    assert!(report.deleted.visitor);
    assert_eq!(report.openai_responses, 1);
    assert_eq!(
        report.openai_conversation.as_deref(),
        Some(openai_conversation.as_str())
    );

    assert_eq!(rows_of(&app, doomed).await, (0, 0, 0));
    assert_eq!(rows_of(&app, kept).await, (1, 2, 1), "others are untouched");
    assert_eq!(app.count("SELECT count(*) FROM visitors").await, 1);
    let deleted_there = app
        .sim_requests(
            "DELETE",
            &format!("/v1/conversations/{openai_conversation}"),
        )
        .await;
    assert_eq!(deleted_there.len(), 1);
    let deleted_there = app
        .sim_requests("DELETE", &format!("/v1/responses/{response_id}"))
        .await;
    assert_eq!(deleted_there.len(), 1);

    // Deleting it again says there is no such conversation.
    let again = retention::delete_conversation(&app.pool, Some(&ai), doomed).await;
    assert!(
        matches!(again, Err(retention::DeleteError::NotFound(_))),
        "{again:?}"
    );

    // The same through the command line, for the other conversation.
    let output = helpline(
        &["conversations", "delete", &kept.to_string()],
        &working_env(&app),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "deleted conversation {kept}: 2 messages, 1 AI turns, and the visitor identity"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("at OpenAI: 1 response(s) deleted"),
        "{stdout}"
    );
    assert_eq!(rows_of(&app, kept).await, (0, 0, 0));
    assert_eq!(app.count("SELECT count(*) FROM visitors").await, 0);
}

/// Runs the real binary with only PATH and `env`, in an empty directory
/// (so no stray helpline.toml is read).
async fn helpline(args: &[&str], env: &[(&str, String)]) -> Output {
    let dir = std::env::temp_dir().join(format!("helpline-cli-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_helpline"))
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("helpline finished in time")
    .expect("helpline ran");
    let _ = std::fs::remove_dir_all(&dir);
    output
}

fn working_env(app: &TestApp) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", app.db_url.clone()),
        ("OPENAI_API_KEY", "sk-test".into()),
        ("OPENAI_WEBHOOK_SECRET", app.secret_text.clone()),
        ("OPENAI_BASE_URL", app.sim_base_url()),
        ("HELPLINE_PUBLIC_URL", app.base_url.clone()),
    ]
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn doctor_passes_a_working_setup_and_prints_what_to_paste_into_openai() {
    let app = spawn_app_with(TestOptions {
        behaviour: Behaviour {
            api_key: Some("sk-test".into()),
            ..TestOptions::default().behaviour
        },
        ..TestOptions::default()
    })
    .await;
    let output = helpline(&["doctor"], &working_env(&app)).await;
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    for expected in [
        "ok    configuration: no problems",
        "ok    database: reachable, every migration applied",
        "ok    OpenAI: the API key works, and model gpt-4.1-mini is available",
        "ok    webhook secret: parses",
        &format!(
            "ok    public URL: {}/api/webhooks/openai reaches Helpline from outside",
            app.base_url
        ),
        &format!("webhook URL: {}/api/webhooks/openai", app.base_url),
        "events to select: response.completed, response.failed, response.cancelled, response.incomplete",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(!out.contains(&app.secret_text), "the secret is never shown");
    assert_eq!(app.sim_requests("GET", "/v1/models").await.len(), 1);
}

#[tokio::test]
async fn doctor_says_what_to_fix_in_a_broken_setup() {
    let app = spawn_app_with(TestOptions {
        behaviour: Behaviour {
            api_key: Some("sk-test".into()),
            ..TestOptions::default().behaviour
        },
        ..TestOptions::default()
    })
    .await;
    // A database nobody migrated, a revoked key (from helpline.toml), and a
    // public URL that reaches something other than Helpline.
    let empty_db = new_database(None).await;
    let config =
        std::env::temp_dir().join(format!("helpline-doctor-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(
        &config,
        format!(
            "public_url = \"http://{}\"\n[openai]\napi_key = \"sk-revoked\"\nwebhook_secret = \"{}\"\n",
            app.sim_addr, app.secret_text
        ),
    )
    .unwrap();
    let env = vec![
        ("HELPLINE_CONFIG", config.display().to_string()),
        ("DATABASE_URL", empty_db),
        ("OPENAI_BASE_URL", app.sim_base_url()),
    ];
    let output = helpline(&["doctor"], &env).await;
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    for expected in [
        "FAIL  database: reachable, but ",
        "migration(s) not applied yet (0001_core, ",
        "0006_queue_fillfactor, 0007_lighter_message_writes): start this version of Helpline once",
        "FAIL  OpenAI: OpenAI refused the API key (401",
        "check OPENAI_API_KEY",
        &format!(
            "FAIL  public URL: http://{}/api/webhooks/openai answered 404",
            app.sim_addr
        ),
        "Fix the FAIL lines above",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(
        !out.contains("sk-revoked"),
        "the key is never shown:\n{out}"
    );

    // A configuration that does not validate: every problem, one line each.
    std::fs::write(
        &config,
        "[openai]\napi_key = \"sk-x\"\nwebhook_secret = \"not-whsec\"\n[ai]\nmodel = \"\"\n",
    )
    .unwrap();
    let env = vec![
        ("HELPLINE_CONFIG", config.display().to_string()),
        ("HELPLINE_ALLOWED_ORIGINS", "shop.example.com".into()),
    ];
    let output = helpline(&["doctor"], &env).await;
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "helpline: invalid configuration:", "{err}");
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        err.contains(
            "OPENAI_WEBHOOK_SECRET (openai.webhook_secret) secret 1 does not start with whsec_"
        ),
        "{err}"
    );
    assert!(
        err.contains("HELPLINE_MODEL (ai.model) must name a model"),
        "{err}"
    );
    assert!(
        err.contains("HELPLINE_ALLOWED_ORIGINS (allowed_origins) not an origin like"),
        "{err}"
    );
    assert!(!err.contains("not-whsec"), "{err}");
    let _ = std::fs::remove_file(&config);
}
