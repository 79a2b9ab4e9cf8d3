//! Processes that die: `kill -9` after a webhook was acknowledged, a chaos
//! run with faults everywhere and an instance killed midway, PostgreSQL
//! restarting under Helpline, and what a death between starting a response
//! and recording it leaves.

use std::{collections::HashMap, time::Duration};

use helpline::{simulator::Behaviour, storage::private_pg::PrivatePostgres};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    kill, next_created, run_binary, spawn_app_with, terminate, webhooks_by_hand, ChatSocket,
    TestApp, TestOptions, Visitor,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_event_acknowledged_then_cut_short_by_kill_9_is_processed_after_restart() {
    // Fetching responses fails, so the acknowledged event cannot be processed
    // before the process dies.
    let behaviour = Behaviour {
        retrieve_failures: u32::MAX,
        ..Behaviour::default()
    };
    let app = spawn_app_with(TestOptions {
        auto_webhooks: false,
        behaviour,
        env: vec![],
    })
    .await;
    app.stop(); // only the helpline process below works on this database

    let port = free_port();
    let env = app.env(&[
        ("HELPLINE_BIND", format!("127.0.0.1:{port}")),
        ("HELPLINE_OPENAI_TIMEOUT_MS", "1000".into()),
        ("HELPLINE_RECONCILE_AFTER_MS", "600000".into()),
    ]);
    let (process, _) = run_binary(&[], &env, "webhook URL").await;
    let base = format!("http://127.0.0.1:{port}");
    let ws_url = format!("ws://127.0.0.1:{port}/api/chat/ws");
    app.sim
        .set_webhook_url(format!("{base}/api/webhooks/openai"));

    let visitor = Visitor::create(&app.http, &base).await;
    let mut socket = ChatSocket::connect(&ws_url, &visitor, None).await;
    socket.send_message("k-1", "When will my order ship?").await;
    socket.next_from("customer").await;
    app.wait_until(
        "the webhook is acknowledged and its processing has failed once",
        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE status = 'pending' AND attempts >= 1)",
    )
    .await;
    kill(&process);
    let mut process = process;
    process.wait().await.unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        0
    );

    // OpenAI answers again; Helpline restarts and finishes the job.
    app.sim.set_behaviour(Behaviour::default());
    let (restarted, _) = run_binary(&[], &env, "webhook URL").await;
    let mut socket = ChatSocket::connect(&ws_url, &visitor, Some(1)).await;
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"].as_str().unwrap().starts_with("Orders ship"),
        "{reply}"
    );
    assert_eq!(reply["seq"], 2);
    terminate(&restarted);
}

#[tokio::test]
async fn a_turn_whose_start_was_not_recorded_is_started_again_and_answered_once() {
    // What Helpline dying between OpenAI's create call and the mark in
    // flight leaves, or PostgreSQL losing that mark (its commit does not
    // wait for the disk): a pending turn without a response id, whose first
    // response runs at OpenAI all the same.
    let (app, mut created, _, mut socket) = webhooks_by_hand().await;
    socket.send_message("m-1", "Where is my parcel?").await;
    let first = next_created(&mut created).await;
    app.wait_until(
        "the turn is in flight",
        "SELECT EXISTS (SELECT 1 FROM turns WHERE status = 'in_flight')",
    )
    .await;
    sqlx::query(
        "UPDATE turns SET status = 'pending', response_id = NULL, started_at = NULL,
             claimed_until = NULL",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // The poll would find it within a second; a wake-up finds it now.
    sqlx::query("SELECT pg_notify('helpline_work', 'turn')")
        .execute(&app.pool)
        .await
        .unwrap();
    let second = next_created(&mut created).await;
    assert_ne!(first, second);
    app.wait_until(
        "the turn is in flight again",
        "SELECT EXISTS (SELECT 1 FROM turns WHERE status = 'in_flight')",
    )
    .await;

    // The first response's webhook ends the turn; the second's finds it
    // ended.
    let reply = app.complete("wh_first", &first, &mut socket).await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("Where is my parcel?"),
        "{reply}"
    );
    app.post_webhook(
        "wh_second",
        &TestApp::event_body("response.completed", &second),
    )
    .await;
    app.wait_until(
        "both events are processed",
        "SELECT count(*) = 2 FROM webhook_events WHERE status = 'processed'",
    )
    .await;
    let (turns, answers): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM turns),
                (SELECT count(*) FROM messages WHERE role <> 'customer')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((turns, answers), (1, 1), "one turn, one answer");
    socket.next_status("idle").await;
}

/// What one simulated customer sent and saw.
struct Customer {
    socket: ChatSocket,
    conversation_id: Uuid,
    frames: Vec<Value>,
}

#[tokio::test]
async fn chaos_every_customer_message_gets_one_answer_and_every_socket_a_gap_free_stream() {
    let behaviour = Behaviour {
        reply_delay_ms: 30,
        webhook_drop_rate: 0.2,
        webhook_duplicate_rate: 0.2,
        webhook_second_id_rate: 0.2,
        webhook_jitter_ms: 200,
        webhook_attempts: 3,
        ..Behaviour::default()
    };
    let quick = vec![
        ("HELPLINE_RECONCILE_AFTER_MS", "500".to_owned()),
        ("HELPLINE_RECONCILE_INTERVAL_MS", "200".to_owned()),
        ("HELPLINE_OPENAI_TIMEOUT_MS", "1000".to_owned()),
    ];
    // Customers are on instance A (in this process); OpenAI's webhooks go to
    // instance B (a real process), which is killed and restarted midway.
    let a = spawn_app_with(TestOptions {
        auto_webhooks: false,
        behaviour,
        env: quick.clone(),
    })
    .await;
    let port = free_port();
    let mut b_env = a.env(&quick);
    b_env.push(("HELPLINE_BIND", format!("127.0.0.1:{port}")));
    let (b, _) = run_binary(&[], &b_env, "webhook URL").await;
    a.sim
        .set_webhook_url(format!("http://127.0.0.1:{port}/api/webhooks/openai"));

    let mut customers = Vec::new();
    for _ in 0..20 {
        let visitor = a.new_visitor().await;
        let socket = a.connect(&visitor, None).await;
        let conversation_id = socket.conversation_id();
        customers.push(Customer {
            socket,
            conversation_id,
            frames: Vec::new(),
        });
    }

    let mut b = Some(b);
    for round in 0..3 {
        for (i, customer) in customers.iter_mut().enumerate() {
            customer
                .socket
                .send_message(
                    &format!("c{i}-r{round}"),
                    &format!("question {round} from {i}"),
                )
                .await;
        }
        if round == 1 {
            let victim = b.take().unwrap();
            kill(&victim);
            let mut victim = victim;
            victim.wait().await.unwrap();
            let (restarted, _) = run_binary(&[], &b_env, "webhook URL").await;
            b = Some(restarted);
        }
    }

    // Wait until every customer message has been taken by a turn and every
    // turn has ended.
    a.wait_until(
        "every turn has ended",
        "SELECT NOT EXISTS (SELECT 1 FROM turns WHERE status IN ('pending', 'in_flight'))
            AND NOT EXISTS (SELECT 1 FROM conversations c JOIN messages m ON m.conversation_id = c.id
                            WHERE m.role = 'customer' AND m.seq > c.ai_cursor)",
    )
    .await;

    // Every socket's stream is gap-free and duplicate-free up to the end.
    let last_seqs: HashMap<Uuid, i64> =
        sqlx::query_as::<_, (Uuid, i64)>("SELECT id, last_seq FROM conversations")
            .fetch_all(&a.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for customer in &mut customers {
        let last = last_seqs[&customer.conversation_id];
        while customer
            .frames
            .last()
            .and_then(|f| f["seq"].as_i64())
            .unwrap_or(0)
            < last
        {
            let frame = customer.socket.next_message().await;
            customer.frames.push(frame);
        }
        let seqs: Vec<i64> = customer
            .frames
            .iter()
            .map(|f| f["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "no gap and no duplicate"
        );
    }

    // Every customer message is answered by exactly one turn, and every turn
    // by exactly one message (the AI's, or a notice that a person will come).
    let uncovered: i64 = a
        .count(
            "SELECT count(*) FROM messages m WHERE m.role = 'customer' AND 1 <> (
                 SELECT count(*) FROM turns t WHERE t.conversation_id = m.conversation_id
                 AND m.seq BETWEEN t.first_seq AND t.last_seq)",
        )
        .await;
    assert_eq!(uncovered, 0);
    let badly_answered: i64 = a
        .count(
            "SELECT count(*) FROM turns t WHERE 1 <> (
                 SELECT count(*) FROM messages m WHERE m.turn_id = t.id AND m.role IN ('assistant', 'system'))",
        )
        .await;
    assert_eq!(badly_answered, 0);
    assert_eq!(
        a.count("SELECT count(*) FROM messages WHERE role = 'customer'")
            .await,
        60
    );
    let turns = a.count("SELECT count(*) FROM turns").await;
    let events = a.count("SELECT count(*) FROM webhook_events").await;
    let notices = a
        .count("SELECT count(*) FROM messages WHERE role = 'system'")
        .await;
    println!(
        "chaos: {turns} turns, {events} distinct webhook deliveries recorded, {notices} notices"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        terminate(b.as_ref().unwrap())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_postgresql_restart_under_traffic_loses_nothing_and_needs_no_helpline_restart() {
    let cluster = OwnCluster::start().await;
    let env = vec![
        ("HELPLINE_RECONCILE_AFTER_MS", "1000".to_owned()),
        ("HELPLINE_RECONCILE_INTERVAL_MS", "200".to_owned()),
    ];
    let app = crate::helpers::spawn_app_on(
        &cluster.pg.url("postgres"),
        TestOptions {
            env,
            ..TestOptions::default()
        },
    )
    .await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.send_message("p-0", "hello").await;
    socket.next_from("assistant").await;

    // Restart PostgreSQL while the customer keeps writing, as a widget
    // would: a message refused with `internal` is sent again, same client_id.
    let restart = tokio::spawn(cluster.restart());
    let texts = [
        "where is my parcel?",
        "can I get a refund?",
        "what are your hours?",
    ];
    for (i, text) in texts.iter().enumerate() {
        let client_id = format!("p-{}", i + 1);
        loop {
            socket.send_message(&client_id, text).await;
            let answer = socket
                .next_where("stored or refused", |f| {
                    (f["type"] == "message" && f["client_id"] == client_id.as_str())
                        || f["type"] == "error"
                })
                .await;
            if answer["type"] == "message" {
                break;
            }
            assert_eq!(answer["code"], "internal", "{answer}");
            tokio::time::sleep(Duration::from_millis(200)).await; // the widget's retry backoff
        }
    }
    let cluster = restart.await.unwrap();

    // Every message is stored once and answered; the socket saw each seq once.
    app.wait_until(
        "every turn has ended",
        "SELECT NOT EXISTS (SELECT 1 FROM turns WHERE status IN ('pending', 'in_flight'))
            AND NOT EXISTS (SELECT 1 FROM conversations c JOIN messages m ON m.conversation_id = c.id
                            WHERE m.role = 'customer' AND m.seq > c.ai_cursor)",
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'customer'")
            .await,
        4
    );
    let last_seq = app.count("SELECT last_seq FROM conversations").await;
    let mut fresh = app.connect(&visitor, None).await;
    let frames = fresh.frames_until(|f| f["type"] == "status").await;
    let seqs: Vec<i64> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>());
    let answers = frames
        .iter()
        .filter(|f| f["type"] == "message" && f["role"] != "customer")
        .count();
    let turns = app.count("SELECT count(*) FROM turns").await;
    assert_eq!(answers as i64, turns, "one answer per turn");

    drop(app);
    cluster.stop().await;
}

#[tokio::test]
async fn webhooks_just_after_a_postgresql_restart_are_stored_at_once() {
    // The receipt writers keep their connection from one delivery to the
    // next. A restart leaves them holding dead connections: the deliveries
    // that find them must still be stored and answered 200, not 503.
    let cluster = OwnCluster::start().await;
    let app =
        crate::helpers::spawn_app_on(&cluster.pg.url("postgres"), TestOptions::default()).await;
    // An event type Helpline only keeps, so that no worker is involved.
    let deliver = |id: &'static str| {
        let body = crate::helpers::TestApp::event_body("batch.completed", &format!("resp_{id}"));
        let app = &app;
        async move { app.post_webhook(id, &body).await }
    };
    // One after the other, so that each writer takes its turn and keeps a
    // connection.
    for id in ["wh_before_1", "wh_before_2", "wh_before_3"] {
        assert_eq!(deliver(id).await.status(), 200);
    }

    let cluster = cluster.restart().await;

    for id in ["wh_after_1", "wh_after_2", "wh_after_3"] {
        let answer = deliver(id).await;
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert_eq!(status, 200, "{id}: {body}");
        assert!(body.contains(r#""duplicate":false"#), "{id}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 6);

    drop(app);
    cluster.stop().await;
}

/// A PostgreSQL cluster of one test's own, so that restarting it disturbs
/// no other test.
struct OwnCluster {
    dir: std::path::PathBuf,
    pg: PrivatePostgres,
}

impl OwnCluster {
    async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("helpline-restart-pg-{}", Uuid::new_v4().simple()));
        let pg = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || PrivatePostgres::ensure_running(&dir).unwrap()
        })
        .await
        .unwrap();
        Self { dir, pg }
    }

    /// `pg_ctl restart -m fast`: every connection is cut.
    async fn restart(self) -> Self {
        tokio::task::spawn_blocking(move || {
            self.pg.restart().expect("restart");
            self
        })
        .await
        .unwrap()
    }

    async fn stop(self) {
        let Self { dir, pg } = self;
        let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
