//! Every fault the simulator can inject, one test each, asserting what the
//! customer's socket receives: exactly one answer per turn, from the AI or a
//! notice that a person will take over.

use helpline::simulator::{Behaviour, Failure, SimOutcome};
use serde_json::Value;

use crate::helpers::{spawn_app_with, ChatSocket, TestApp, TestOptions};

/// Fast reconciliation and short budgets, so faults resolve in a test's time.
fn quick() -> Vec<(&'static str, String)> {
    vec![
        ("HELPLINE_RECONCILE_AFTER_MS", "300".into()),
        ("HELPLINE_RECONCILE_INTERVAL_MS", "100".into()),
        ("HELPLINE_OPENAI_TIMEOUT_MS", "1000".into()),
    ]
}

async fn app_with(behaviour: Behaviour, extra: &[(&'static str, String)]) -> TestApp {
    let mut env = quick();
    env.extend(extra.iter().cloned());
    spawn_app_with(TestOptions {
        behaviour,
        env,
        ..TestOptions::default()
    })
    .await
}

/// Sends one message and returns every frame up to the assistant going idle.
async fn ask(socket: &mut ChatSocket, client_id: &str, text: &str) -> Vec<Value> {
    socket.send_message(client_id, text).await;
    socket
        .frames_until(|f| f["type"] == "status" && f["assistant"] == "idle")
        .await
}

fn answers(frames: &[Value]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter(|f| f["type"] == "message" && f["role"] != "customer")
        .map(|f| {
            (
                f["role"].as_str().unwrap().to_owned(),
                f["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn connected(app: &TestApp) -> ChatSocket {
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.next_status("idle").await;
    socket
}

/// One assistant answer, and the conversation still with the bot.
async fn assert_one_reply(app: &TestApp, frames: &[Value], expected_start: &str) {
    let answers = answers(frames);
    assert_eq!(answers.len(), 1, "{frames:?}");
    assert_eq!(answers[0].0, "assistant");
    assert!(answers[0].1.starts_with(expected_start), "{answers:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        1
    );
}

/// One notice that a person will take over, and the conversation flagged.
async fn assert_handed_to_people(app: &TestApp, frames: &[Value]) {
    let answers = answers(frames);
    assert_eq!(answers.len(), 1, "{frames:?}");
    assert_eq!(answers[0].0, "system");
    assert!(
        answers[0]
            .1
            .contains("A person from our team will take over"),
        "{answers:?}"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM conversations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "needs_human");
}

#[tokio::test]
async fn a_dropped_webhook_is_made_up_for_by_the_reconciler() {
    let app = app_with(
        Behaviour {
            webhook_drop_rate: 1.0,
            ..Behaviour::default()
        },
        &[],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "Where is my delivery?").await;
    assert_one_reply(&app, &frames, "Orders ship").await;
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events").await,
        0,
        "no webhook ever came"
    );
}

#[tokio::test]
async fn a_webhook_delivered_twice_with_the_same_id_gives_one_reply() {
    let app = app_with(
        Behaviour {
            webhook_duplicate_rate: 1.0,
            ..Behaviour::default()
        },
        &[],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "What are your opening hours?").await;
    assert_one_reply(&app, &frames, "Our support team").await;
    // The second delivery may still be on its way; either way it is stored once.
    assert!(app.count("SELECT count(*) FROM webhook_events").await <= 1);
}

#[tokio::test]
async fn a_response_announced_under_two_webhook_ids_gives_one_reply() {
    let app = app_with(
        Behaviour {
            webhook_second_id_rate: 1.0,
            ..Behaviour::default()
        },
        &[],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "Can I return this?").await;
    assert_one_reply(&app, &frames, "You can return").await;
    app.wait_until(
        "both events are processed",
        "SELECT count(*) = 2 FROM webhook_events WHERE status = 'processed'",
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        1
    );
}

#[tokio::test]
async fn delayed_and_reordered_webhooks_still_give_each_conversation_one_reply_per_turn() {
    let behaviour = Behaviour {
        webhook_jitter_ms: 400,
        webhook_duplicate_rate: 0.5,
        webhook_second_id_rate: 0.5,
        ..Behaviour::default()
    };
    let app = app_with(behaviour, &[]).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push((connected(&app).await, Vec::new()));
    }
    for round in 0..2 {
        for (i, (socket, _)) in sockets.iter_mut().enumerate() {
            socket
                .send_message(
                    &format!("r{round}-{i}"),
                    &format!("question {round} from {i}"),
                )
                .await;
        }
        for (socket, seen) in &mut sockets {
            let frames = socket
                .frames_until(|f| f["type"] == "status" && f["assistant"] == "idle")
                .await;
            assert_eq!(answers(&frames).len(), 1, "{frames:?}");
            seen.extend(frames.into_iter().filter(|f| f["type"] == "message"));
        }
    }
    for (_, seen) in &sockets {
        let seqs: Vec<i64> = seen.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "each message once, in order");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        10
    );
}

#[tokio::test]
async fn a_rate_limited_create_is_retried_after_the_time_openai_asked_for() {
    let behaviour = Behaviour {
        create_failures: 1,
        create_failure: Failure::RateLimited {
            retry_after_secs: 1,
        },
        ..Behaviour::default()
    };
    let app = app_with(behaviour, &[]).await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "How do I reset my password?").await;
    assert_one_reply(&app, &frames, "To reset your password").await;
    let creates = app.sim_requests_timed("POST", "/v1/responses").await;
    assert_eq!(creates.len(), 2);
    assert!(
        creates[1].0 - creates[0].0 >= 1000,
        "Retry-After honoured: {creates:?}"
    );
}

#[tokio::test]
async fn a_create_that_fails_with_a_server_error_is_retried() {
    let behaviour = Behaviour {
        create_failures: 2,
        create_failure: Failure::ServerError,
        ..Behaviour::default()
    };
    let app = app_with(behaviour, &[]).await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "What does it cost?").await;
    assert_one_reply(&app, &frames, "Our plans start").await;
    assert_eq!(app.sim_requests("POST", "/v1/responses").await.len(), 3);
}

#[tokio::test]
async fn a_create_that_times_out_still_gives_exactly_one_reply() {
    // The first response is created but the answer comes too late: Helpline
    // retries and a second response runs too (the first one is still
    // running then). Both finish and are announced; the customer sees one
    // reply.
    let behaviour = Behaviour {
        reply_delay_ms: 3000,
        create_failures: 1,
        create_failure: Failure::Timeout { after_ms: 3000 },
        ..Behaviour::default()
    };
    let app = app_with(behaviour, &[]).await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "When will my order ship?").await;
    assert_one_reply(&app, &frames, "Orders ship").await;
    assert_eq!(app.sim_requests("POST", "/v1/responses").await.len(), 2);
    app.wait_until(
        "both responses' webhooks are processed",
        "SELECT count(*) = 2 FROM webhook_events WHERE status = 'processed'",
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        1
    );
    // And nothing more reached the socket: the next frame answers our ping.
    socket.send(serde_json::json!({ "type": "ping" })).await;
    assert_eq!(socket.next_frame().await["type"], "pong");
}

#[tokio::test]
async fn a_response_that_cannot_be_fetched_for_a_while_is_fetched_later() {
    // Only the webhook path fetches here: the reconciler is kept out of it.
    let env = [("HELPLINE_RECONCILE_AFTER_MS", "60000".to_owned())];
    let app = app_with(
        Behaviour {
            retrieve_failures: 2,
            ..Behaviour::default()
        },
        &env,
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "hello").await;
    assert_one_reply(&app, &frames, "Hello!").await;
    let response_id: String = sqlx::query_scalar("SELECT response_id FROM turns")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let fetches = app
        .sim_requests("GET", &format!("/v1/responses/{response_id}"))
        .await;
    assert_eq!(fetches.len(), 3, "two failures, then success");
}

/// A response that ends `outcome` gets the customer one notice, and agents
/// a flagged conversation.
async fn assert_outcome_hands_over(outcome: SimOutcome) {
    let app = app_with(
        Behaviour {
            outcome,
            ..Behaviour::default()
        },
        &[],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "hello").await;
    assert_handed_to_people(&app, &frames).await;
}

#[tokio::test]
async fn a_failed_response_tells_the_customer_a_person_will_take_over() {
    assert_outcome_hands_over(SimOutcome::Failed).await;
}

#[tokio::test]
async fn an_incomplete_response_tells_the_customer_a_person_will_take_over() {
    assert_outcome_hands_over(SimOutcome::Incomplete).await;
}

#[tokio::test]
async fn a_cancelled_response_tells_the_customer_a_person_will_take_over() {
    assert_outcome_hands_over(SimOutcome::Cancelled).await;
}

#[tokio::test]
async fn a_response_that_never_finishes_is_cancelled_at_its_deadline() {
    let behaviour = Behaviour {
        outcome: SimOutcome::Never,
        ..Behaviour::default()
    };
    let app = app_with(
        behaviour,
        &[("HELPLINE_RESPONSE_DEADLINE_SECS", "1".into())],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "hello").await;
    assert_handed_to_people(&app, &frames).await;
    let response_id: String = sqlx::query_scalar("SELECT response_id FROM turns")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let cancels = app
        .sim_requests("POST", &format!("/v1/responses/{response_id}/cancel"))
        .await;
    assert_eq!(cancels.len(), 1);
}

#[tokio::test]
async fn a_turn_that_cannot_be_started_within_its_budget_is_handed_to_people() {
    let behaviour = Behaviour {
        create_failures: 1000,
        create_failure: Failure::ServerError,
        ..Behaviour::default()
    };
    let app = app_with(
        behaviour,
        &[("HELPLINE_TURN_START_BUDGET_SECS", "2".into())],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "hello").await;
    assert_handed_to_people(&app, &frames).await;
    assert!(
        app.sim_requests("POST", "/v1/responses").await.len() >= 2,
        "it was retried first"
    );

    // Once OpenAI is back, the next message is answered by the AI again.
    app.sim.set_behaviour(Behaviour::default());
    let frames = ask(&mut socket, "f-2", "hello again").await;
    assert_eq!(answers(&frames)[0].0, "assistant", "{frames:?}");
}

#[tokio::test]
async fn a_response_that_cannot_be_looked_up_until_its_deadline_is_handed_to_people() {
    // No webhook, and OpenAI never answers a lookup: the customer is not left
    // waiting for ever.
    let behaviour = Behaviour {
        webhook_drop_rate: 1.0,
        retrieve_failures: u32::MAX,
        ..Behaviour::default()
    };
    let app = app_with(
        behaviour,
        &[("HELPLINE_RESPONSE_DEADLINE_SECS", "1".into())],
    )
    .await;
    let mut socket = connected(&app).await;
    let frames = ask(&mut socket, "f-1", "hello").await;
    assert_handed_to_people(&app, &frames).await;
}
