//! Reconnecting customers get exactly what they missed; retried sends are
//! stored once.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn reconnecting_with_after_seq_replays_exactly_the_missed_messages_in_order() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    for (i, text) in ["hi there", "how do returns work?", "and shipping?"]
        .iter()
        .enumerate()
    {
        socket.send_message(&format!("r-{i}"), text).await;
        socket.next_from("assistant").await;
    }
    drop(socket);

    let mut again = app.connect(&visitor, Some(2)).await;
    assert_eq!(again.welcome["last_seq"], 6);
    let frames = again.frames_until(|f| f["type"] == "status").await;
    let replayed: Vec<(i64, &str)> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| (f["seq"].as_i64().unwrap(), f["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        replayed,
        [
            (3, "customer"),
            (4, "assistant"),
            (5, "customer"),
            (6, "assistant")
        ]
    );
    assert_eq!(frames.last().unwrap()["assistant"], "idle");

    // No after_seq: the whole history.
    let mut fresh = app.connect(&visitor, None).await;
    let frames = fresh.frames_until(|f| f["type"] == "status").await;
    assert_eq!(frames.iter().filter(|f| f["type"] == "message").count(), 6);
}

#[tokio::test]
async fn a_repeated_client_id_stores_one_message_and_answers_with_the_original() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.send_message("same-id", "Where is my parcel?").await;
    let original = socket.next_from("customer").await;
    socket.next_from("assistant").await;

    // The widget retries after a reconnect, not knowing the first try landed.
    drop(socket);
    let mut socket = app.connect(&visitor, Some(2)).await;
    socket.send_message("same-id", "Where is my parcel?").await;
    let answer = socket.next_message().await;
    assert_eq!(answer["id"], original["id"]);
    assert_eq!(answer["seq"], original["seq"]);

    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'customer'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM turns").await, 1);
    assert_eq!(app.sim_requests("POST", "/v1/responses").await.len(), 1);

    // seq stays gap-free after the refused duplicate.
    socket.send_message("next-id", "thanks").await;
    let next = socket.next_from("customer").await;
    assert_eq!(next["seq"], 3);
    let _: Value = socket.next_from("assistant").await;
}
