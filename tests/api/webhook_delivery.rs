//! Webhooks arrive at least once, late, early or twice: each reply is still
//! stored and shown exactly once.

use futures::future::join_all;

use crate::helpers::{
    app_behaving, next_created, spawn_app_with, webhooks_by_hand, TestApp, TestOptions,
};
use helpline::simulator::Behaviour;

#[tokio::test]
async fn the_same_webhook_delivered_ten_times_at_once_stores_one_reply() {
    let (app, mut created, visitor, mut socket) = webhooks_by_hand().await;
    socket
        .send_message("d-1", "What does the premium plan cost?")
        .await;
    let response_id = next_created(&mut created).await;

    let body = TestApp::event_body("response.completed", &response_id);
    let deliveries = (0..10).map(|_| app.post_webhook("wh_same_every_time", &body));
    let statuses: Vec<u16> = join_all(deliveries)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses, [200; 10]);

    socket.next_from("assistant").await;
    socket.next_status("idle").await;
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1);
    let roles: Vec<String> = app
        .customer_view(&visitor)
        .await
        .into_iter()
        .map(|(role, _)| role)
        .collect();
    assert_eq!(roles, ["customer", "assistant"]);
}

#[tokio::test]
async fn two_webhook_ids_for_one_response_store_one_reply() {
    let (app, mut created, visitor, mut socket) = webhooks_by_hand().await;
    socket
        .send_message("t-1", "How do I reset my password?")
        .await;
    let response_id = next_created(&mut created).await;

    for webhook_id in ["wh_one", "wh_two"] {
        let response = app
            .post_webhook(
                webhook_id,
                &TestApp::event_body("response.completed", &response_id),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    socket.next_from("assistant").await;
    // Both events are processed (not just stored) before we look.
    let processed = "SELECT count(*) FROM webhook_events WHERE status = 'processed'";
    while app.count(processed).await < 2 {
        socket.send(serde_json::json!({ "type": "ping" })).await;
        socket.next_where("pong", |f| f["type"] == "pong").await;
    }
    let roles: Vec<String> = app
        .customer_view(&visitor)
        .await
        .into_iter()
        .map(|(role, _)| role)
        .collect();
    assert_eq!(roles, ["customer", "assistant"]);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_webhook_that_overtakes_the_create_call_is_still_delivered() {
    let (app, mut socket) = app_behaving(Behaviour {
        webhook_before_create_returns: true,
        ..Behaviour::default()
    })
    .await;
    socket
        .send_message("e-1", "Are you open on Saturday? What are the hours?")
        .await;
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"].as_str().unwrap().contains("Monday to Friday"),
        "{reply}"
    );
    socket.next_status("idle").await;
    assert_eq!(
        app.count("SELECT count(*) FROM turns WHERE status = 'completed'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_cancelled_response_ends_the_turn_with_a_notice_to_the_customer() {
    let behaviour = Behaviour {
        reply_delay_ms: 60_000,
        ..Behaviour::default()
    };
    let app = spawn_app_with(TestOptions {
        behaviour,
        ..TestOptions::default()
    })
    .await;
    let mut created = app.sim.watch_created();
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket
        .send_message("k-1", "a question that takes forever")
        .await;
    let response_id = next_created(&mut created).await;

    // Cancelled on OpenAI's side: the simulator sends response.cancelled.
    let cancel = format!("{}/responses/{response_id}/cancel", app.sim_base_url());
    let cancelled = app
        .http
        .post(cancel)
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);

    let notice = socket.next_from("system").await;
    assert!(
        notice["text"].as_str().unwrap().contains("cancelled"),
        "{notice}"
    );
    socket.next_status("idle").await;

    // The conversation goes on.
    app.sim.set_behaviour(Behaviour::default());
    socket.send_message("k-2", "hello again").await;
    socket.next_from("assistant").await;
}

#[tokio::test]
async fn an_event_for_a_response_openai_does_not_know_is_parked_as_dead_at_once() {
    let app = spawn_app_with(TestOptions::default()).await;
    let body = TestApp::event_body("response.completed", "resp_nobody_knows");
    assert_eq!(app.post_webhook("wh_unknown", &body).await.status(), 200);
    app.wait_until(
        "the event is dead",
        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE status = 'dead')",
    )
    .await;
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM webhook_events WHERE webhook_id = 'wh_unknown'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.contains("404"), "{error}");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn an_event_older_than_where_the_workers_claims_start_is_still_processed() {
    // A worker's claims start, for a second, at the oldest event its last
    // claim from the start of the queue found. An older pending event (one
    // whose lease ran out, say) must not be passed over for good. One
    // worker, so that no other worker without a floor finds it instead.
    // The events are queued in the database and announced, as another
    // instance's are: those this instance records itself are handed to its
    // workers without a claim.
    let app = one_worker(0).await;
    queue_in_database(&app, "wh_first", "resp_first_unknown", "now(), NULL", true).await;
    wait_parked(&app, "the first event is processed", "wh_first").await;
    // As if a worker had claimed it an hour ago and died: still pending,
    // its lease long over, due long before the first event.
    queue_in_database(
        &app,
        "wh_old",
        "resp_old_unknown",
        "now() - interval '1 hour', now() - interval '59 minutes'",
        true,
    )
    .await;
    // A new event wakes a worker whose claims start after the old event.
    queue_in_database(&app, "wh_next", "resp_next_unknown", "now(), NULL", true).await;
    wait_parked(&app, "the old event is processed too", "wh_old").await;
}

#[tokio::test]
async fn an_event_stamped_before_one_already_claimed_is_taken_at_its_own_wake_up() {
    // An event falls due at its transaction's `now()`: when the transaction
    // began, not when it committed. Two writers (this instance's two, or
    // two instances') can commit out of that order, so a worker may claim
    // the later-stamped event first and then be woken for the earlier
    // one. That wake-up must find it: with the poll an hour away, nothing
    // else would. One worker, so that no other worker without a floor
    // finds it instead.
    let app = spawn_app_with(TestOptions {
        env: vec![
            ("HELPLINE_WORKERS", "1".to_owned()),
            ("HELPLINE_WORKER_POLL_MS", "3600000".to_owned()),
        ],
        ..TestOptions::default()
    })
    .await;
    // A slow writer has stored its receipt and not committed yet.
    let mut slow = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_events (webhook_id, event_type, payload, status)
         VALUES ('wh_slow', 'response.completed', $1::jsonb, 'pending')",
    )
    .bind(TestApp::event_body(
        "response.completed",
        "resp_slow_unknown",
    ))
    .execute(&mut *slow)
    .await
    .unwrap();
    // Meanwhile a later one commits and wakes the worker, which claims it.
    queue_in_database(&app, "wh_quick", "resp_quick_unknown", "now(), NULL", true).await;
    wait_parked(&app, "the later event is processed", "wh_quick").await;
    // The slow writer commits and wakes the worker.
    sqlx::query("SELECT pg_notify('helpline_work', '')")
        .execute(&mut *slow)
        .await
        .unwrap();
    slow.commit().await.unwrap();
    wait_parked(&app, "the earlier-stamped event is processed", "wh_slow").await;
}

#[tokio::test]
async fn events_handed_to_a_busy_worker_go_back_to_the_queue_when_the_instance_stops() {
    // One worker, kept busy by a slow fetch while more deliveries arrive:
    // they are stored leased to this instance's workers and wait in memory.
    let app = one_worker(1500).await;
    deliver(&app, "wh_busy", "resp_busy_unknown").await;
    app.wait_for_sim_request("GET", "/v1/responses/resp_busy_unknown")
        .await;
    for i in 0..4 {
        deliver(
            &app,
            &format!("wh_waiting_{i}"),
            &format!("resp_waiting_{i}"),
        )
        .await;
    }

    // A graceful stop lets the busy worker finish, then gives the waiting
    // events back: unleased, no attempt counted, for any instance at once
    // (not after their 60 s leases).
    app.stop();
    app.wait_until(
        "the waiting events are back in the queue",
        "SELECT bool_and(status = 'pending' AND locked_until IS NULL AND attempts = 0)
         FROM webhook_events WHERE webhook_id LIKE 'wh_waiting_%'",
    )
    .await;
    app.sim.set_behaviour(Behaviour::default());
    let peer = app.spawn_peer(&[]).await;
    peer.wait_until(
        "another instance has processed them, once each",
        "SELECT bool_and(status = 'dead' AND attempts = 1) FROM webhook_events",
    )
    .await;
}

#[tokio::test]
async fn a_burst_larger_than_the_workers_handoff_is_processed_once_each() {
    // 150 deliveries at once to an instance with one slow worker: 64 wait
    // in memory for it, the rest go to the database queue unleased.
    // Every one is fetched once and ends with its first attempt.
    let app = one_worker(200).await;
    let statuses = join_all((0..150).map(|i| {
        let app = &app;
        async move {
            let body = TestApp::event_body("response.completed", &format!("resp_burst_{i}"));
            app.post_webhook(&format!("wh_burst_{i}"), &body)
                .await
                .status()
        }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    app.wait_until(
        "every event is processed",
        "SELECT count(*) = 150 AND bool_and(status = 'dead' AND attempts = 1) FROM webhook_events",
    )
    .await;
    for i in 0..150 {
        let path = format!("/v1/responses/resp_burst_{i}");
        assert_eq!(app.sim_requests("GET", &path).await.len(), 1, "{path}");
    }
}

#[tokio::test]
async fn a_steady_stream_of_deliveries_does_not_keep_the_workers_from_the_database_queue() {
    // Deliveries this instance records wake its worker for them alone. An
    // event queued in the database without a wake-up (as a retry falls
    // due) is still found while they keep coming.
    let app = one_worker(0).await;
    // The worker has looked everywhere once and is idle.
    deliver(&app, "wh_first", "resp_first_unknown").await;
    wait_parked(&app, "the first event is processed", "wh_first").await;
    queue_in_database(
        &app,
        "wh_queued",
        "resp_queued_unknown",
        "now(), NULL",
        false,
    )
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let stream = {
        let (stop, app) = (stop.clone(), &app);
        async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                deliver(app, &format!("wh_stream_{i}"), &format!("resp_stream_{i}")).await;
                i += 1;
            }
            i
        }
    };
    let queued = async {
        wait_parked(&app, "the queued event is processed", "wh_queued").await;
        stop.cancel();
    };
    let (streamed, ()) = tokio::join!(stream, queued);
    assert!(streamed > 0);
}

/// An instance with one worker loop (so that no other worker takes what a
/// test watches this one do), fetching from a simulator that answers each
/// `GET /v1/responses/{id}` after `retrieve_delay_ms`.
async fn one_worker(retrieve_delay_ms: u64) -> TestApp {
    spawn_app_with(TestOptions {
        env: vec![("HELPLINE_WORKERS", "1".to_owned())],
        behaviour: Behaviour {
            retrieve_delay_ms,
            ..Behaviour::default()
        },
        ..TestOptions::default()
    })
    .await
}

/// Delivers a signed `response.completed` for a response OpenAI does not
/// know (its event is parked as dead once processed); answered 200.
async fn deliver(app: &TestApp, webhook_id: &str, response_id: &str) {
    let body = TestApp::event_body("response.completed", response_id);
    assert_eq!(app.post_webhook(webhook_id, &body).await.status(), 200);
}

/// Waits until the event is processed (parked as dead: its response is
/// unknown).
async fn wait_parked(app: &TestApp, what: &str, webhook_id: &str) {
    app.wait_until(
        what,
        &format!("SELECT status = 'dead' FROM webhook_events WHERE webhook_id = '{webhook_id}'"),
    )
    .await;
}

/// Queues an event in the database as another instance would, pending
/// with `due` as its `next_attempt_at, locked_until`; `announce` sends the
/// `helpline_work` notification that wakes the workers.
async fn queue_in_database(
    app: &TestApp,
    webhook_id: &str,
    response_id: &str,
    due: &str,
    announce: bool,
) {
    let notify = if announce {
        "pg_notify('helpline_work', '')"
    } else {
        "1"
    };
    sqlx::query(&format!(
        "WITH queued AS (
             INSERT INTO webhook_events (webhook_id, event_type, payload, status, next_attempt_at, locked_until)
             VALUES ($1, 'response.completed', $2::jsonb, 'pending', {due})
             RETURNING 1
         )
         SELECT {notify} FROM queued"
    ))
    .bind(webhook_id)
    .bind(TestApp::event_body("response.completed", response_id))
    .execute(&app.pool)
    .await
    .unwrap();
}
