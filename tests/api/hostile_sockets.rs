//! Issue 8, the visitor API and the customer socket under hostile input:
//! rate limits per IP and per visitor, a cap on sockets per visitor, abuse
//! and idleness closing sockets, and tokens that reach only their own
//! conversation. Every refusal leaves nothing in the database.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::helpers::{metric, spawn_app, spawn_app_configured, ChatSocket, TestApp, TestOptions};

async fn app_with(env: &[(&'static str, &str)]) -> TestApp {
    let env = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    spawn_app_configured(TestOptions::default(), env).await
}

/// Reads until the server closes; returns the close code (frames before it
/// are returned too).
async fn until_closed(socket: &mut ChatSocket) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.ws.next())
            .await
            .expect("the server closed in time");
        match next {
            Some(Ok(WsMessage::Text(t))) => frames.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(WsMessage::Close(close))) => return (frames, close.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (frames, None),
        }
    }
}

async fn customer_messages(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM messages WHERE role = 'customer'")
        .await
}

#[tokio::test]
async fn visitor_creation_is_rate_limited_per_ip_with_429_and_retry_after() {
    let app = app_with(&[
        ("HELPLINE_VISITORS_PER_IP_BURST", "3"),
        ("HELPLINE_VISITORS_PER_IP_PER_MINUTE", "1"),
    ])
    .await;
    for _ in 0..3 {
        app.new_visitor().await;
    }
    let response = app
        .http
        .post(format!("{}/api/visitors", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
    assert_eq!(app.count("SELECT count(*) FROM visitors").await, 3);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "helpline_rate_limited_total",
            &[("what", "visitors")]
        ),
        1.0
    );
}

#[tokio::test]
async fn socket_connections_are_rate_limited_per_ip_before_the_upgrade() {
    let app = app_with(&[
        ("HELPLINE_SOCKETS_PER_IP_BURST", "2"),
        ("HELPLINE_SOCKETS_PER_IP_PER_MINUTE", "1"),
    ])
    .await;
    let _a = app.open_socket().await;
    let _b = app.open_socket().await;
    match tokio_tungstenite::connect_async(&app.ws_url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 429, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn messages_are_rate_limited_per_visitor_and_the_refused_one_is_not_stored() {
    let app = app_with(&[
        ("HELPLINE_MESSAGES_BURST", "2"),
        ("HELPLINE_MESSAGES_PER_MINUTE", "1"),
    ])
    .await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    // Two sockets of one visitor share the bucket.
    let mut other = app.connect(&visitor, None).await;
    socket.send_message("c1", "one").await;
    socket.next_where("c1", |f| f["client_id"] == "c1").await;
    other.send_message("c2", "two").await;
    other.next_where("c2", |f| f["client_id"] == "c2").await;
    socket.send_message("c3", "three").await;
    let error = socket
        .frames_until(|f| f["type"] == "error")
        .await
        .pop()
        .unwrap();
    assert_eq!(error["code"], "rate_limited", "{error}");
    let retry = error["retry_after"].as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{error}");
    assert_eq!(customer_messages(&app).await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE client_id = 'c3'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_visitor_gets_at_most_the_configured_number_of_sockets() {
    let app = app_with(&[("HELPLINE_SOCKETS_PER_VISITOR", "2")]).await;
    let visitor = app.new_visitor().await;
    let _a = app.connect(&visitor, None).await;
    let mut b = app.connect(&visitor, None).await;
    let mut c = app.open_socket().await;
    c.send(json!({ "type": "hello", "token": visitor.token }))
        .await;
    let (frames, code) = until_closed(&mut c).await;
    assert_eq!(frames[0]["code"], "too_many_sockets", "{frames:?}");
    assert_eq!(code, Some(1008));
    // Closing one frees its place.
    b.ws.close(None).await.unwrap();
    let _ = until_closed(&mut b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _d = app.connect(&visitor, None).await;
    // Another visitor is not affected.
    let _e = app.connect(&app.new_visitor().await, None).await;
}

#[tokio::test]
async fn repeated_bad_frames_close_the_socket_with_1008_and_store_nothing() {
    let app = app_with(&[("HELPLINE_ABUSE_ERRORS_PER_MINUTE", "5")]).await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    let bad = [
        "not json".to_owned(),
        json!({ "type": "dance" }).to_string(),
        json!({ "type": "message", "client_id": 5, "text": "x" }).to_string(),
        json!({ "type": "message", "client_id": "c", "text": ["x"] }).to_string(),
        json!({ "type": "hello", "token": visitor.token }).to_string(),
        json!({ "type": "message", "client_id": "c", "text": "never" }).to_string(),
    ];
    for frame in &bad {
        let _ = socket.ws.send(WsMessage::text(frame.as_str())).await;
    }
    let (frames, code) = until_closed(&mut socket).await;
    let errors: Vec<_> = frames.iter().filter(|f| f["type"] == "error").collect();
    assert_eq!(
        errors.len(),
        6,
        "five errors and the abuse notice: {frames:?}"
    );
    assert_eq!(errors[5]["code"], "abuse");
    assert_eq!(code, Some(1008));
    assert_eq!(
        customer_messages(&app).await,
        0,
        "the frame after the fifth error was never read"
    );
}

#[tokio::test]
async fn an_idle_socket_is_pinged_then_closed_but_a_live_one_stays() {
    let app = app_with(&[
        ("HELPLINE_PING_INTERVAL_MS", "100"),
        ("HELPLINE_IDLE_TIMEOUT_MS", "400"),
    ])
    .await;
    let visitor = app.new_visitor().await;
    // A live client reads (and so answers pings with pongs) and stays open.
    let mut live = app.connect(&visitor, None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while let Ok(next) = tokio::time::timeout_at(deadline, live.ws.next()).await {
        match next {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(WsMessage::Close(c))) => panic!("a live socket was closed: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
    assert!(pings >= 3, "pinged {pings} times");
    live.send(json!({ "type": "ping" })).await;
    assert_eq!(live.next_frame().await["type"], "pong");

    // A client that never reads never answers: the server closes it (with
    // 1001; the client may only see the connection end, as its queued pongs
    // meet a closed connection).
    let mut dead = app.connect(&visitor, None).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (_, code) = until_closed(&mut dead).await;
    assert!(matches!(code, Some(1001) | None), "{code:?}");
    let metrics = app.metrics().await;
    // (The live socket, unread during that sleep, went the same way.)
    assert!(
        metric(
            &metrics,
            "helpline_socket_policy_closes_total",
            &[("reason", "idle")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_token_reaches_only_its_own_conversation() {
    let app = spawn_app().await;
    let alice = app.new_visitor().await;
    let bob = app.new_visitor().await;
    let mut a = app.connect(&alice, None).await;
    a.send_message("a1", "alice's secret").await;
    a.next_from("assistant").await;
    let alice_conversation = a.welcome["conversation_id"].clone();

    // Bob sees his own (empty) conversation, even claiming a huge after_seq.
    for after_seq in [None, Some(0), Some(1), Some(i64::MAX)] {
        let mut b = app.connect(&bob, after_seq).await;
        assert_ne!(b.welcome["conversation_id"], alice_conversation);
        assert_eq!(b.welcome["last_seq"], 0);
        let frames = b.frames_until(|f| f["type"] == "status").await;
        assert!(
            frames.iter().all(|f| f["type"] != "message"),
            "{after_seq:?}: {frames:?}"
        );
    }
    // Alice, claiming more than exists, gets her own history again, only hers.
    let mut a2 = app.connect(&alice, Some(i64::MAX)).await;
    assert_eq!(a2.welcome["conversation_id"], alice_conversation);
    let frames = a2.frames_until(|f| f["type"] == "status").await;
    let texts: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["customer", "assistant"]);

    // A guessed token, an altered one, or a conversation id as token: refused.
    let altered = format!("{}x", &alice.token[..alice.token.len() - 1]);
    for token in [
        "hlv_guess".to_owned(),
        altered,
        alice_conversation.as_str().unwrap().to_owned(),
        String::new(),
    ] {
        let mut s = app.open_socket().await;
        s.send(json!({ "type": "hello", "token": token })).await;
        let (frames, code) = until_closed(&mut s).await;
        assert_eq!(frames[0]["code"], "invalid_token", "{token}: {frames:?}");
        assert_eq!(code, Some(1008));
    }
    // Huge numbers and wrong types in the hello: refused, nothing opened.
    for hello in [
        r#"{"type":"hello","token":"t","after_seq":99999999999999999999999}"#,
        r#"{"type":"hello","token":"t","after_seq":"1"}"#,
        r#"{"type":"hello","token":["t"]}"#,
    ] {
        let mut s = app.open_socket().await;
        s.ws.send(WsMessage::text(hello)).await.unwrap();
        let (frames, code) = until_closed(&mut s).await;
        assert_eq!(frames[0]["code"], "not_authenticated", "{hello}");
        assert_eq!(code, Some(1008));
    }
    assert_eq!(app.count("SELECT count(*) FROM conversations").await, 2);
    assert_eq!(customer_messages(&app).await, 1);
}

#[tokio::test]
async fn any_message_the_protocol_accepts_fits_a_frame_and_nul_is_refused_plainly() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    // 4000 control characters, each JSON-escaped in six bytes.
    let text = "\u{1}".repeat(4000);
    socket
        .send(json!({ "type": "message", "client_id": "control", "text": text }))
        .await;
    let echo = socket.next_from("customer").await;
    assert_eq!(echo["client_id"], "control");
    assert_eq!(echo["text"].as_str().unwrap().chars().count(), 4000);

    for (client_id, text, code) in [
        ("nul-text", "a\u{0}b", "invalid_text"),
        ("nul\u{0}id", "hello", "invalid_client_id"),
    ] {
        socket
            .send(json!({ "type": "message", "client_id": client_id, "text": text }))
            .await;
        let error = socket
            .next_where("an error frame", |f| f["type"] == "error")
            .await;
        assert_eq!(error["code"], code);
    }
    assert_eq!(customer_messages(&app).await, 1);
}
