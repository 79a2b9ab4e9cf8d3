//! Several instances on one PostgreSQL: a reply reaches a customer's socket
//! whichever instance the webhook lands on, even across a lost listener.

use crate::helpers::{spawn_app_with, TestOptions};

#[tokio::test]
async fn a_webhook_on_one_instance_reaches_a_socket_on_another_even_across_a_lost_listener() {
    // Instance A holds the customer's socket; OpenAI's webhooks go to B.
    let a = spawn_app_with(TestOptions::default()).await;
    let b = a.spawn_peer(&[]).await;
    a.sim.set_webhook_url(&b.webhook_url);

    let visitor = a.new_visitor().await;
    let mut socket = a.connect(&visitor, None).await;
    socket.next_status("idle").await;
    socket.send_message("m-1", "When will my order ship?").await;
    let reply = socket.next_from("assistant").await;
    assert_eq!(reply["seq"], 2);
    let on_b: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(on_b, 1);

    // A's listener connection is killed while replies are being produced:
    // the replies keep coming, each once.
    let listener = helpline::hub::listener_name(a.instance_id);
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&listener)
    .fetch_all(&b.pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "A's listener was found and terminated");
    let mut seqs = Vec::new();
    for (i, text) in ["and a refund?", "your hours?", "password reset?"]
        .iter()
        .enumerate()
    {
        socket.send_message(&format!("m-{}", i + 2), text).await;
        let frames = socket
            .frames_until(|f| f["type"] == "message" && f["role"] == "assistant")
            .await;
        seqs.extend(
            frames
                .iter()
                .filter(|f| f["type"] == "message")
                .map(|f| f["seq"].as_i64().unwrap()),
        );
    }
    assert_eq!(seqs, [3, 4, 5, 6, 7, 8]);

    // A reconnected its listener (the name shows up again).
    a.wait_until(
        "A listens again",
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = '{listener}')"
        ),
    )
    .await;
}

#[tokio::test]
async fn workers_of_several_instances_share_the_queue_without_doing_anything_twice() {
    let a = spawn_app_with(TestOptions::default()).await;
    let b = a.spawn_peer(&[]).await;
    let c = a.spawn_peer(&[]).await;
    let mut sockets = Vec::new();
    for (i, instance) in [&a, &b, &c].iter().cycle().take(9).enumerate() {
        let visitor = instance.new_visitor().await;
        let mut socket = instance.connect(&visitor, None).await;
        socket
            .send_message(&format!("q-{i}"), "What are your opening hours?")
            .await;
        sockets.push(socket);
    }
    for socket in &mut sockets {
        socket.next_from("assistant").await;
    }
    assert_eq!(
        a.count("SELECT count(*) FROM turns WHERE status = 'completed'")
            .await,
        9
    );
    assert_eq!(
        a.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        9
    );
    assert_eq!(
        a.sim_requests("POST", "/v1/responses").await.len(),
        9,
        "each turn started once"
    );
}
