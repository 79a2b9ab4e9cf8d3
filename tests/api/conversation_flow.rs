//! A customer message goes to OpenAI as a background response and the reply
//! comes back to every socket of the conversation.

use serde_json::Value;

use crate::helpers::{
    next_created, spawn_app, spawn_app_with, webhooks_by_hand, TestApp, TestOptions,
};

#[tokio::test]
async fn a_customer_message_gets_the_assistant_reply_through_openai() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    assert_eq!(socket.welcome["last_seq"], 0);
    let conversation_id = socket.welcome["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    socket.send_message("c-1", "When will my order ship?").await;
    let mine = socket.next_from("customer").await;
    assert_eq!(mine["seq"], 1);
    assert_eq!(mine["client_id"], "c-1");
    assert_eq!(mine["text"], "When will my order ship?");
    assert!(chrono::DateTime::parse_from_rfc3339(mine["created_at"].as_str().unwrap()).is_ok());

    socket.next_status("thinking").await;
    let reply = socket.next_from("assistant").await;
    assert_eq!(reply["seq"], 2);
    assert!(
        reply["text"].as_str().unwrap().starts_with("Orders ship"),
        "{reply}"
    );
    assert_eq!(reply["client_id"], Value::Null);
    socket.next_status("idle").await;

    // What OpenAI was asked: one Conversation, then one background response on it.
    let conversations = app.sim_requests("POST", "/v1/conversations").await;
    assert_eq!(conversations.len(), 1);
    assert_eq!(
        conversations[0]["metadata"]["helpline_conversation"],
        conversation_id.as_str()
    );
    let responses = app.sim_requests("POST", "/v1/responses").await;
    assert_eq!(responses.len(), 1);
    let request = &responses[0];
    assert_eq!(request["background"], true);
    assert_eq!(request["store"], true);
    assert_eq!(request["model"], "gpt-4.1-mini");
    assert!(request["instructions"]
        .as_str()
        .is_some_and(|i| !i.is_empty()));
    assert!(request["conversation"]
        .as_str()
        .unwrap()
        .starts_with("conv_"));
    assert_eq!(request["input"][0]["role"], "user");
    assert_eq!(request["input"][0]["content"], "When will my order ship?");
    assert_eq!(request["input"].as_array().unwrap().len(), 1);
    assert_eq!(
        request["metadata"]["helpline_conversation"],
        conversation_id.as_str()
    );
    assert!(request["metadata"]["helpline_turn"].is_string());

    // A second turn reuses the same OpenAI Conversation.
    socket.send_message("c-2", "And can I get a refund?").await;
    let reply = socket.next_from("assistant").await;
    assert_eq!(reply["seq"], 4);
    assert!(
        reply["text"].as_str().unwrap().contains("30 days"),
        "{reply}"
    );
    assert_eq!(app.sim_requests("POST", "/v1/conversations").await.len(), 1);
    let responses = app.sim_requests("POST", "/v1/responses").await;
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[1]["conversation"], responses[0]["conversation"]);
}

#[tokio::test]
async fn messages_sent_while_a_response_is_in_flight_go_together_in_the_next_turn() {
    // The test delivers the webhooks, so the first response stays in flight
    // for as long as it needs.
    let (app, mut created, _, mut socket) = webhooks_by_hand().await;

    socket.send_message("m-1", "first question").await;
    let first_response = next_created(&mut created).await;
    socket.next_status("thinking").await;
    for (id, text) in [("m-2", "second"), ("m-3", "third"), ("m-4", "fourth")] {
        socket.send_message(id, text).await;
        let frames = socket
            .frames_until(|f| f["type"] == "message" && f["client_id"] == id)
            .await;
        assert_eq!(frames.last().unwrap()["text"], text);
        // No turn started, so no change of the assistant's status either.
        assert!(frames.iter().all(|f| f["type"] != "status"), "{frames:?}");
    }
    assert_eq!(
        app.sim_requests("POST", "/v1/responses").await.len(),
        1,
        "one response in flight at a time"
    );

    let reply = app.complete("wh_first", &first_response, &mut socket).await;
    assert!(
        reply["text"].as_str().unwrap().contains("first question"),
        "{reply}"
    );
    // The turn that ends starts the next: still thinking, never idle between.
    let status = socket
        .next_where("a status", |f| f["type"] == "status")
        .await;
    assert_eq!(status["assistant"], "thinking", "{status}");

    // The end of the first turn starts the next, carrying all three.
    let second_response = next_created(&mut created).await;
    let requests = app.sim_requests("POST", "/v1/responses").await;
    assert_eq!(requests.len(), 2);
    let inputs: Vec<&str> = requests[1]["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["second", "third", "fourth"]);

    let reply = app
        .complete("wh_second", &second_response, &mut socket)
        .await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("“second”, “third”, “fourth”"),
        "{reply}"
    );
    socket.next_status("idle").await;
    assert_eq!(app.sim_requests("POST", "/v1/responses").await.len(), 2);
}

#[tokio::test]
async fn every_socket_of_the_conversation_gets_each_message_once() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut tab_a = app.connect(&visitor, None).await;
    let mut tab_b = app.connect(&visitor, None).await;
    assert_eq!(
        tab_a.welcome["conversation_id"],
        tab_b.welcome["conversation_id"]
    );
    // Each welcome ends with the assistant's current state.
    tab_a.next_status("idle").await;
    tab_b.next_status("idle").await;

    tab_a
        .send_message("x-1", "What are your opening hours?")
        .await;
    for tab in [&mut tab_a, &mut tab_b] {
        let frames = tab
            .frames_until(|f| f["type"] == "status" && f["assistant"] == "idle")
            .await;
        let seqs: Vec<i64> = frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| f["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2], "{frames:?}");
    }
}

#[tokio::test]
async fn a_socket_must_start_with_hello_and_a_known_token() {
    let app = spawn_app().await;
    let mut socket = app.open_socket().await;
    socket.send(serde_json::json!({ "type": "ping" })).await;
    let error = socket.next_frame().await;
    assert_eq!(error["code"], "not_authenticated");

    let mut socket = app.open_socket().await;
    socket
        .send(serde_json::json!({ "type": "hello", "token": "hlv_guessed" }))
        .await;
    let error = socket.next_frame().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "invalid_token");
    assert_eq!(app.count("SELECT count(*) FROM conversations").await, 0);
}

#[tokio::test]
async fn bad_frames_get_an_error_frame_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.next_status("idle").await;

    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let cases = [
        ("not json", "invalid_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (
            r#"{"type":"message","text":"no client id"}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"message","client_id":"c","text":"   "}"#,
            "empty_message",
        ),
        (
            r#"{"type":"hello","token":"again"}"#,
            "already_authenticated",
        ),
    ];
    for (frame, code) in cases {
        socket.ws.send(WsMessage::text(frame)).await.unwrap();
        let error = socket.next_frame().await;
        assert_eq!(error["type"], "error", "{frame}");
        assert_eq!(error["code"], code, "{frame}");
    }
    let long = "x".repeat(4001);
    socket.send_message("c-long", &long).await;
    assert_eq!(socket.next_frame().await["code"], "message_too_long");

    // Still open and working.
    socket.send(serde_json::json!({ "type": "ping" })).await;
    assert_eq!(socket.next_frame().await["type"], "pong");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn a_burst_of_turns_larger_than_the_workers_is_all_answered_without_the_poll() {
    // The wake-ups that land while both workers are busy must each still
    // start a turn (they are counted, not merged into one).
    twelve_customers_at_once_on_two_workers_without_the_poll(&[]).await;
}

#[tokio::test]
async fn two_workers_batches_of_events_do_not_wait_on_each_other_for_connections() {
    // Each worker processes a batch of events side by side, the extra ones
    // on connections of their own. With the pool as small as allowed, two
    // batches must not each hold connections the other waits for: the
    // pool's acquire timeout would fail those events, and only the poll
    // would retry them.
    twelve_customers_at_once_on_two_workers_without_the_poll(&[(
        "HELPLINE_DB_MAX_CONNECTIONS",
        "6",
    )])
    .await;
}

/// Twelve customers write at once to two workers, with the poll an hour
/// away (and `env` besides): each is answered.
async fn twelve_customers_at_once_on_two_workers_without_the_poll(env: &[(&'static str, &str)]) {
    let mut options = TestOptions {
        env: vec![
            ("HELPLINE_WORKER_POLL_MS", "3600000".to_owned()),
            ("HELPLINE_WORKERS", "2".to_owned()),
        ],
        ..TestOptions::default()
    };
    options
        .env
        .extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let app = spawn_app_with(options).await;
    let mut sockets = Vec::new();
    for _ in 0..12 {
        let visitor = app.new_visitor().await;
        sockets.push(app.connect(&visitor, None).await);
    }
    for socket in &mut sockets {
        socket.send_message("b-1", "Where is my parcel?").await;
    }
    for socket in &mut sockets {
        let reply = socket.next_from("assistant").await;
        assert_eq!(reply["seq"], 2);
    }
}

#[tokio::test]
async fn wake_ups_alone_carry_each_turn_without_the_workers_poll() {
    // The poll is a fallback for lost wake-ups; with it an hour away, every
    // step must be woken: the customer's message wakes a worker for its
    // turn, the webhook wakes one for its event. Three turns in a row, so
    // that a worker that has just finished one is the one woken.
    let app = spawn_app_with(TestOptions {
        env: vec![("HELPLINE_WORKER_POLL_MS", "3600000".to_owned())],
        ..TestOptions::default()
    })
    .await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    for i in 1..=3 {
        socket
            .send_message(&format!("w-{i}"), "When will my order ship?")
            .await;
        let reply = socket.next_from("assistant").await;
        assert_eq!(reply["seq"], i * 2);
    }
}

/// Holds a conversation's row lock, as a writer in the middle of its
/// transaction does, until the returned transaction ends.
async fn lock_conversation(
    app: &TestApp,
    conversation_id: uuid::Uuid,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(conversation_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until `n` statements of this database wait for a row lock.
async fn wait_for_lock_waiters(app: &TestApp, n: i64) {
    app.wait_until(
        &format!("{n} statement(s) wait for the conversation's lock"),
        &format!(
            "SELECT count(*) >= {n} FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ),
    )
    .await;
}

#[tokio::test]
async fn a_message_that_waits_while_the_turn_ends_starts_the_next_turn() {
    // The turn ends (as the worker finishing it does: under the
    // conversation's lock) while the customer's message waits for that
    // lock. The message must see the turn ended and start one of its own,
    // though the turn was active when its statement began.
    let (app, mut created, _, mut socket) = webhooks_by_hand().await;
    let conversation_id = socket.conversation_id();
    socket.send_message("m-1", "first question").await;
    next_created(&mut created).await;
    socket.next_status("thinking").await;
    // Marked in flight, so that the only statement left to wait for a lock
    // below is the customer's.
    app.wait_until(
        "the first turn is in flight",
        "SELECT EXISTS (SELECT 1 FROM turns WHERE status = 'in_flight')",
    )
    .await;

    let mut finisher = lock_conversation(&app, conversation_id).await;
    sqlx::query(
        "UPDATE turns SET status = 'completed', finished_at = now()
         WHERE conversation_id = $1 AND status IN ('pending', 'in_flight')",
    )
    .bind(conversation_id)
    .execute(&mut *finisher)
    .await
    .unwrap();
    socket.send_message("m-2", "second question").await;
    wait_for_lock_waiters(&app, 1).await;
    finisher.commit().await.unwrap();

    let second = next_created(&mut created).await;
    let requests = app.sim_requests("POST", "/v1/responses").await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["input"][0]["content"], "second question");
    let reply = app.complete("wh_second", &second, &mut socket).await;
    assert!(
        reply["text"].as_str().unwrap().contains("second question"),
        "{reply}"
    );
}

#[tokio::test]
async fn the_same_message_sent_from_two_tabs_at_once_is_stored_once() {
    // Both sends wait for the conversation's lock, so the second looks for
    // the client_id before the first has stored it, and learns of it only
    // from the unique key.
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut tab_a = app.connect(&visitor, None).await;
    let mut tab_b = app.connect(&visitor, None).await;
    let conversation_id = tab_a.conversation_id();
    tab_a.next_status("idle").await;
    tab_b.next_status("idle").await;

    let writer = lock_conversation(&app, conversation_id).await;
    tab_a.send_message("same-id", "Where is my parcel?").await;
    tab_b.send_message("same-id", "Where is my parcel?").await;
    wait_for_lock_waiters(&app, 2).await;
    writer.commit().await.unwrap();

    // Each tab sees the one message and the reply, and no error (which
    // would come at once, long before the reply).
    for tab in [&mut tab_a, &mut tab_b] {
        let frames = tab
            .frames_until(|f| f["type"] == "message" && f["role"] == "assistant")
            .await;
        assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
        let ids: Vec<&Value> = frames
            .iter()
            .filter(|f| f["client_id"] == "same-id")
            .map(|f| &f["id"])
            .collect();
        assert!(
            !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
            "{frames:?}"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'customer'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM turns").await, 1);

    // seq stays gap-free.
    tab_a.send_message("next-id", "thanks").await;
    let next = tab_a.next_from("customer").await;
    assert_eq!(next["seq"], 3);
}

#[tokio::test]
async fn a_message_too_big_to_announce_inline_still_reaches_every_tab() {
    // 4,000 two-byte characters: over PostgreSQL's 8,000-byte limit for a
    // notification, so it is announced by seq and read back.
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut tab_a = app.connect(&visitor, None).await;
    let mut tab_b = app.connect(&visitor, None).await;
    tab_b.next_status("idle").await;
    let long = "é".repeat(4000);
    tab_a.send_message("big-1", &long).await;
    let seen = tab_b.next_from("customer").await;
    assert_eq!(seen["text"], long.as_str());
    assert_eq!(seen["seq"], 1);
    tab_b.next_from("assistant").await;
}
