//! Events whose processing keeps failing are parked as dead; operators list,
//! inspect and replay them (CLI and admin API), and the reply then arrives.

use helpline::simulator::Behaviour;
use serde_json::Value;

use crate::helpers::{
    app_behaving, metric, run_cli, spawn_app, spawn_app_with, ChatSocket, TestApp, TestOptions,
};

const TOKEN: &str = "admin-secret-for-tests";

/// An app where the first fetch of a response fails and one failure kills
/// an event; returns it with a socket whose message's event is now dead.
async fn app_with_a_dead_event() -> (TestApp, ChatSocket, String) {
    let env = vec![
        ("HELPLINE_EVENT_MAX_ATTEMPTS", "1".to_owned()),
        ("HELPLINE_ADMIN_TOKEN", TOKEN.to_owned()),
        ("HELPLINE_RECONCILE_AFTER_MS", "600000".to_owned()),
    ];
    let behaviour = Behaviour {
        retrieve_failures: 1,
        ..Behaviour::default()
    };
    let app = spawn_app_with(TestOptions {
        behaviour,
        env,
        ..TestOptions::default()
    })
    .await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket
        .send_message("d-1", "What are your opening hours?")
        .await;
    socket.next_from("customer").await;
    app.wait_until(
        "the event is dead",
        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE status = 'dead')",
    )
    .await;
    let webhook_id: String = sqlx::query_scalar("SELECT webhook_id FROM webhook_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (app, socket, webhook_id)
}

#[tokio::test]
async fn a_dead_event_is_listed_and_replayed_through_the_admin_api_and_the_reply_arrives() {
    let (app, mut socket, webhook_id) = app_with_a_dead_event().await;
    let dead_url = format!("{}/api/admin/webhooks/dead", app.base_url);

    let anonymous = app.http.get(&dead_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = app
        .http
        .get(&dead_url)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let dead: Vec<Value> = app
        .http
        .get(&dead_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["webhook_id"], webhook_id.as_str());
    assert_eq!(dead[0]["event_type"], "response.completed");
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("500"),
        "{}",
        dead[0]
    );

    let one: Value = app
        .http
        .get(format!("{}/api/admin/webhooks/{webhook_id}", app.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["payload"]["type"], "response.completed");

    let replay_url = format!("{}/api/admin/webhooks/{webhook_id}/replay", app.base_url);
    let replayed = app
        .http
        .post(&replay_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .starts_with("Our support team"),
        "{reply}"
    );

    // Only dead events can be replayed.
    let again = app
        .http
        .post(&replay_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"]["code"],
        "not_dead"
    );
}

#[tokio::test]
async fn dead_events_are_listed_and_replayed_from_the_command_line() {
    let (app, mut socket, webhook_id) = app_with_a_dead_event().await;
    let env = app.env(&[]);

    let (status, listing, _) = run_cli(&["webhooks", "dead"], &env).await;
    assert!(status.success());
    assert!(listing.contains(&webhook_id), "{listing}");
    assert!(listing.contains("response.completed"), "{listing}");

    let (status, _, stderr) = run_cli(&["webhooks", "replay", "wh_no_such_event"], &env).await;
    assert!(!status.success());
    assert!(stderr.contains("no dead webhook event"), "{stderr}");

    let (status, out, _) = run_cli(&["webhooks", "replay", &webhook_id], &env).await;
    assert!(status.success(), "{out}");
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .starts_with("Our support team"),
        "{reply}"
    );

    let (_, listing, _) = run_cli(&["webhooks", "dead"], &env).await;
    assert!(listing.contains("no dead webhook events"), "{listing}");
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_does_not_exist() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/api/admin/webhooks/dead", app.base_url))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn an_event_that_keeps_failing_shows_its_climbing_attempts_in_the_metrics() {
    let (app, mut socket) = app_behaving(Behaviour {
        retrieve_failures: 2,
        ..Behaviour::default()
    })
    .await;
    socket
        .send_message("m-1", "Do you have a store in Lyon?")
        .await;
    app.wait_until(
        "the event failed twice and waits for its third attempt",
        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE status = 'pending' AND attempts = 2)",
    )
    .await;
    let attempts = |text: &str| metric(text, "helpline_webhook_event_attempts_max", &[]);
    assert_eq!(attempts(&app.metrics().await), 2.0);

    socket.next_from("assistant").await;
    app.wait_until(
        "the event is processed",
        "SELECT NOT EXISTS (SELECT 1 FROM webhook_events WHERE status = 'pending')",
    )
    .await;
    assert_eq!(attempts(&app.metrics().await), 0.0);
}
