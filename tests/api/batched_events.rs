//! A worker processes up to eight webhook events side by side. Events for a
//! turn that has ended already (a late or repeated webhook) must let go of
//! the conversation at once: the batch's other events, and the customer's
//! next message, wait for that lock.

use helpline::simulator::Behaviour;

use crate::helpers::{next_created, spawn_app_with, ChatSocket, TestApp, TestOptions, PATIENCE};

type Created = tokio::sync::broadcast::Receiver<String>;

/// One worker, so that events delivered together are taken together; the
/// test delivers every webhook itself.
async fn one_worker(extra: &[(&'static str, &str)]) -> (TestApp, Created, ChatSocket) {
    let mut env = vec![("HELPLINE_WORKERS", "1".to_owned())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let app = spawn_app_with(TestOptions {
        auto_webhooks: false,
        env,
        ..TestOptions::default()
    })
    .await;
    let created = app.sim.watch_created();
    let visitor = app.new_visitor().await;
    let socket = app.connect(&visitor, None).await;
    (app, created, socket)
}

/// Delivers `events` (webhook id, response id) so that the one worker takes
/// them as one batch: it is first kept busy with a delivery that `hold`
/// names, whose response OpenAI is slow to return, and the others are
/// recorded (and handed to it) meanwhile.
async fn deliver_as_one_batch(app: &TestApp, hold: &str, events: &[(&str, &str)]) {
    let slow = Behaviour {
        reply_delay_ms: 20,
        retrieve_delay_ms: 700,
        ..Behaviour::default()
    };
    app.sim.set_behaviour(slow);
    let path = format!("/v1/responses/{hold}");
    let fetched_before = fetches(app, &path);
    let body = TestApp::event_body("response.completed", hold);
    assert_eq!(app.post_webhook("wh_hold", &body).await.status(), 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while fetches(app, &path) == fetched_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker took the first delivery"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for (webhook_id, response_id) in events {
        let body = TestApp::event_body("response.completed", response_id);
        assert_eq!(app.post_webhook(webhook_id, &body).await.status(), 200);
    }
    app.sim.set_behaviour(TestOptions::default().behaviour);
}

fn fetches(app: &TestApp, path: &str) -> usize {
    let requests = app.sim.requests();
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

/// The customer writes again: the message is echoed, and answered once its
/// webhook comes.
async fn still_answered(app: &TestApp, created: &mut Created, socket: &mut ChatSocket, n: u32) {
    let client_id = format!("again-{n}");
    socket
        .send_message(&client_id, "One more question: do you ship abroad?")
        .await;
    let echo = socket.next_from("customer").await;
    assert_eq!(echo["client_id"], client_id.as_str());
    let response_id = next_created(created).await;
    let reply = app
        .complete(&format!("wh_again_{n}"), &response_id, socket)
        .await;
    assert!(!reply["text"].as_str().unwrap_or_default().is_empty());
}

#[tokio::test]
async fn a_finished_turn_delivered_again_in_one_batch_does_not_freeze_the_conversation() {
    let (app, mut created, mut socket) = one_worker(&[]).await;
    socket
        .send_message("f-1", "What does the premium plan cost?")
        .await;
    let first = next_created(&mut created).await;
    app.complete("wh_first", &first, &mut socket).await;
    socket.next_status("idle").await;

    let again: Vec<String> = (0..7).map(|i| format!("wh_again_first_{i}")).collect();
    let batch: Vec<(&str, &str)> = again
        .iter()
        .map(|id| (id.as_str(), first.as_str()))
        .collect();
    deliver_as_one_batch(&app, &first, &batch).await;

    still_answered(&app, &mut created, &mut socket, 1).await;
    app.wait_until(
        "every delivery is processed",
        "SELECT count(*) = 0 FROM webhook_events WHERE status = 'pending'",
    )
    .await;
}

#[tokio::test]
async fn a_turn_the_reconciler_finished_and_its_late_webhook_beside_the_next_turns() {
    let (app, mut created, mut socket) = one_worker(&[
        ("HELPLINE_RECONCILE_AFTER_MS", "100"),
        ("HELPLINE_RECONCILE_INTERVAL_MS", "50"),
    ])
    .await;
    socket.send_message("r-1", "Where is my order?").await;
    let first = next_created(&mut created).await;
    // No webhook: the reconciler finds the response done and answers.
    socket.next_from("assistant").await;
    socket.send_message("r-2", "And when will it arrive?").await;
    socket.next_from("customer").await;
    let second = next_created(&mut created).await;

    // The late webhook of the first turn comes first in the batch.
    deliver_as_one_batch(
        &app,
        &first,
        &[("wh_late_first", &first), ("wh_second", &second)],
    )
    .await;
    socket.next_from("assistant").await;

    still_answered(&app, &mut created, &mut socket, 2).await;
}

#[tokio::test]
async fn events_of_two_turns_of_one_conversation_in_one_batch() {
    let (app, mut created, mut socket) = one_worker(&[]).await;
    socket
        .send_message("t-1", "Can I change my delivery address?")
        .await;
    let first = next_created(&mut created).await;
    app.complete("wh_first", &first, &mut socket).await;
    socket.send_message("t-2", "It is 12 Baker Street.").await;
    socket.next_from("customer").await;
    let second = next_created(&mut created).await;

    let batch = [
        ("wh_first_again_1", first.as_str()),
        ("wh_first_again_2", &first),
        ("wh_second", &second),
        ("wh_first_again_3", &first),
    ];
    deliver_as_one_batch(&app, &first, &batch).await;
    socket.next_from("assistant").await;

    still_answered(&app, &mut created, &mut socket, 3).await;
}

#[tokio::test]
async fn a_lock_never_let_go_fails_a_message_in_seconds_and_its_retry_is_answered() {
    // The second line of defence: whatever holds a conversation's lock by
    // mistake, Helpline's statements stop waiting for it (`lock_timeout`),
    // and the customer is told to send again instead of waiting for ever.
    let (app, mut created, mut socket) = one_worker(&[]).await;
    let limits: (String, String) =
        sqlx::query_as("SELECT current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(limits, ("5s".to_owned(), "10s".to_owned()));

    let mut held = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(socket.conversation_id())
        .execute(&mut *held)
        .await
        .unwrap();
    socket.send_message("l-1", "Is anyone there?").await;
    let error = socket
        .next_where("an error frame", |f| f["type"] == "error")
        .await;
    assert_eq!(error["code"], "internal");
    held.rollback().await.unwrap();

    socket.send_message("l-1", "Is anyone there?").await;
    let echo = socket.next_from("customer").await;
    assert_eq!(echo["client_id"], "l-1");
    let response_id = next_created(&mut created).await;
    app.complete("wh_after_lock", &response_id, &mut socket)
        .await;
}
