//! The agents' API: sign-in, who may call what, every change of state, the
//! AI's output after a takeover, and the handoff tool end to end.

use std::sync::Arc;

use helpline::simulator::Behaviour;
use reqwest::{cookie::Jar, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{
    next_created, spawn_app, spawn_app_with, ChatSocket, TestApp, TestOptions, Visitor,
};

const PASSWORD: &str = "a long enough password";

/// A signed-in console: a cookie jar and the CSRF token.
struct Console {
    http: reqwest::Client,
    jar: Arc<Jar>,
    base: String,
    csrf: String,
}

impl Console {
    fn anonymous(app: &TestApp) -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Console {
            http,
            jar,
            base: app.base_url.clone(),
            csrf: String::new(),
        }
    }

    async fn sign_in(app: &TestApp, email: &str) -> Self {
        let mut console = Self::anonymous(app);
        let response = console.login(email, PASSWORD).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        console.csrf = body["csrf_token"].as_str().unwrap().to_owned();
        console
    }

    async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/agent/login", self.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn act(&self, conversation: &str, action: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/agent/conversations/{conversation}/{action}"),
            json!({ "reason": "testing" }),
        )
        .await
    }

    async fn items(&self, conversation: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/agent/conversations/{conversation}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    async fn state(&self, conversation: &str) -> String {
        let (_, body) = self
            .get(&format!("/api/agent/conversations/{conversation}"))
            .await;
        body["conversation"]["state"].as_str().unwrap().to_owned()
    }

    /// The live feed, with this console's session cookie.
    async fn feed(&self) -> ChatSocket {
        let url = format!("{}/api/agent/ws", self.base.replace("http://", "ws://"));
        let mut request = url.as_str().into_client_request().unwrap();
        let cookies =
            reqwest::cookie::CookieStore::cookies(&*self.jar, &self.base.parse().unwrap()).unwrap();
        request
            .headers_mut()
            .insert("cookie", cookies.to_str().unwrap().parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("agent feed");
        let mut socket = ChatSocket {
            ws,
            welcome: Value::Null,
        };
        socket.welcome = socket.next_frame().await;
        assert_eq!(socket.welcome["type"], "welcome");
        socket
    }
}

async fn add_agent(app: &TestApp, email: &str, name: &str) {
    helpline::admin::add_agent(&app.pool, email, name, Some(PASSWORD.into()))
        .await
        .unwrap();
}

/// A customer with a conversation that has one exchange with the AI.
async fn customer(app: &TestApp) -> (Visitor, ChatSocket, String) {
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    let conversation = socket.welcome["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    socket.send_message("c-1", "When will my order ship?").await;
    socket.next_from("assistant").await;
    socket.next_status("idle").await;
    (visitor, socket, conversation)
}

#[tokio::test]
async fn signing_in_never_says_which_part_was_wrong_and_a_session_then_works() {
    let app = spawn_app().await;
    add_agent(&app, "dana@example.com", "Dana").await;
    let console = Console::anonymous(&app);

    let wrong_password = console.login("dana@example.com", "not the password").await;
    let unknown_email = console.login("nobody@example.com", PASSWORD).await;
    for response in [wrong_password, unknown_email] {
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_credentials");
        assert_eq!(body["error"]["message"], "wrong email or password");
    }

    let signed_in = console.login("DANA@example.com", PASSWORD).await;
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let (status, me) = console.get("/api/agent/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["agent"]["name"], "Dana");

    let csrf = me["csrf_token"].as_str().unwrap();
    let out = console
        .http
        .post(format!("{}/api/agent/logout", app.base_url))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(console.get("/api/agent/me").await.0, 401);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let app = spawn_app().await;
    add_agent(&app, "sam@example.com", "Sam").await;
    let console = Console::anonymous(&app);
    for _ in 0..5 {
        assert_eq!(
            console.login("sam@example.com", "guess").await.status(),
            401
        );
    }
    let refused = console.login("sam@example.com", PASSWORD).await;
    assert_eq!(refused.status(), 429, "even the right password waits");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_attempts"
    );
}

#[tokio::test]
async fn no_agent_endpoint_answers_without_a_session_and_changes_need_the_csrf_token() {
    let app = spawn_app().await;
    let (_, _, conversation) = customer(&app).await;
    let anonymous = Console::anonymous(&app);
    let c = &conversation;
    for path in [
        "/api/agent/me",
        "/api/agent/conversations",
        &format!("/api/agent/conversations/{c}"),
    ] {
        assert_eq!(anonymous.get(path).await.0, 401, "{path}");
    }
    for action in [
        "messages", "notes", "takeover", "handback", "resolve", "reopen", "read",
    ] {
        let (status, body) = anonymous
            .post(
                &format!("/api/agent/conversations/{c}/{action}"),
                json!({"text":"x","seq":1}),
            )
            .await;
        assert_eq!(status, 401, "{action}: {body}");
        assert_eq!(body["error"]["code"], "not_signed_in");
    }
    let feed = tokio_tungstenite::connect_async(format!(
        "{}/api/agent/ws",
        app.base_url.replace("http", "ws")
    ))
    .await;
    assert!(feed.is_err(), "the feed refuses anonymous sockets");

    add_agent(&app, "dana@example.com", "Dana").await;
    let mut console = Console::sign_in(&app, "dana@example.com").await;
    console.csrf = "forged".into();
    let (status, body) = console.act(c, "takeover").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf_failed"))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM conversations WHERE state = 'human'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_disabled_agent_is_signed_out_and_cannot_act() {
    let app = spawn_app().await;
    let (_, _, conversation) = customer(&app).await;
    add_agent(&app, "dana@example.com", "Dana").await;
    let console = Console::sign_in(&app, "dana@example.com").await;
    assert_eq!(console.get("/api/agent/conversations").await.0, 200);

    helpline::admin::disable_agent(&app.pool, "dana@example.com")
        .await
        .unwrap();
    let (status, body) = console.act(&conversation, "takeover").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("account_disabled"))
    );
    assert_eq!(
        console.get("/api/agent/me").await.0,
        401,
        "the session is gone"
    );
    assert_eq!(
        console.login("dana@example.com", PASSWORD).await.status(),
        401
    );
    assert_eq!(
        app.count("SELECT count(*) FROM conversations WHERE state = 'human'")
            .await,
        0
    );
}

/// Reads the feed until the server closes it; returns the close code and
/// reason. Frames sent before the close are skipped.
async fn closed_by_server(feed: &mut ChatSocket) -> (u16, String) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(crate::helpers::PATIENCE, feed.ws.next())
            .await
            .expect("the feed closed in time")
            .expect("a close frame before the end")
            .expect("readable");
        if let Message::Close(frame) = message {
            let frame = frame.expect("a close code");
            return (frame.code.into(), frame.reason.to_string());
        }
    }
}

#[tokio::test]
async fn a_live_feed_closes_when_its_session_ends() {
    let app = spawn_app().await;
    for (email, name) in [
        ("out@example.com", "Out"),
        ("old@example.com", "Old"),
        ("off@example.com", "Off"),
    ] {
        add_agent(&app, email, name).await;
    }
    let signed_out = Console::sign_in(&app, "out@example.com").await;
    let expired = Console::sign_in(&app, "old@example.com").await;
    let disabled = Console::sign_in(&app, "off@example.com").await;
    let (mut out_feed, mut old_feed, mut off_feed) = (
        signed_out.feed().await,
        expired.feed().await,
        disabled.feed().await,
    );
    let closed = (1008, "signed out".to_owned());

    assert_eq!(signed_out.post("/api/agent/logout", json!({})).await.0, 204);
    assert_eq!(closed_by_server(&mut out_feed).await, closed);

    helpline::admin::disable_agent(&app.pool, "off@example.com")
        .await
        .unwrap();
    assert_eq!(closed_by_server(&mut off_feed).await, closed);

    // Sessions expire after a time without requests; a feed is not one.
    sqlx::query("UPDATE tower_sessions.session SET expiry_date = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(closed_by_server(&mut old_feed).await, closed);
}

#[tokio::test]
async fn every_state_transition_is_enforced_and_recorded() {
    let app = spawn_app().await;
    let (visitor, mut socket, c) = customer(&app).await;
    add_agent(&app, "dana@example.com", "Dana").await;
    let console = Console::sign_in(&app, "dana@example.com").await;

    // bot: hand back and reopen make no sense.
    for action in ["handback", "reopen"] {
        let (status, body) = console.act(&c, action).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("invalid_transition")),
            "{action}"
        );
    }
    let expected = [
        ("takeover", "human"),
        ("handback", "bot"),
        ("takeover", "human"),
        ("resolve", "resolved"),
        ("reopen", "bot"),
        ("resolve", "resolved"),
    ];
    for (action, state) in expected {
        let (status, body) = console.act(&c, action).await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(body["state"], state, "{action}");
    }
    // resolved: only reopen (or the customer) opens it again.
    for action in ["takeover", "handback", "resolve"] {
        assert_eq!(
            console.act(&c, action).await.0,
            StatusCode::CONFLICT,
            "{action}"
        );
    }
    let (status, body) = console
        .post(
            &format!("/api/agent/conversations/{c}/messages"),
            json!({"text":"hi"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conversation_resolved"))
    );

    // The customer writes again: the conversation is open, and the AI answers.
    socket.send_message("c-2", "hello again").await;
    socket.next_from("assistant").await;
    assert_eq!(console.state(&c).await, "bot");

    // Every change is an internal event item with who and why.
    let events: Vec<Value> = console
        .items(&c)
        .await
        .into_iter()
        .filter(|i| i["role"] == "event")
        .collect();
    let moves: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"]["from"].as_str().unwrap().to_owned(),
                e["event"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("bot", "human"),
        ("human", "bot"),
        ("bot", "human"),
        ("human", "resolved"),
        ("resolved", "bot"),
        ("bot", "resolved"),
        ("resolved", "bot"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(moves, expected);
    assert!(events.iter().all(|e| e["internal"] == true));
    assert_eq!(events[0]["event"]["by"]["name"], "Dana");
    assert_eq!(events[0]["event"]["reason"], "testing");
    assert_eq!(events[6]["event"]["by"]["kind"], "customer");
    // The customer saw none of it.
    assert!(app
        .customer_view(&visitor)
        .await
        .iter()
        .all(|(role, _)| role != "event" && role != "note"));
}

#[tokio::test]
async fn while_a_person_owns_the_conversation_the_ai_is_silent_and_late_ai_output_stays_internal() {
    let app = spawn_app_with(TestOptions {
        auto_webhooks: false,
        ..TestOptions::default()
    })
    .await;
    let mut created = app.sim.watch_created();
    add_agent(&app, "dana@example.com", "Dana").await;
    let console = Console::sign_in(&app, "dana@example.com").await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    let c = socket.welcome["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A turn is in flight when the agent takes over…
    socket.send_message("h-1", "Where is my parcel?").await;
    let response_id = next_created(&mut created).await;
    assert_eq!(console.act(&c, "takeover").await.0, 200);
    // …and its answer lands afterwards.
    let body = TestApp::event_body("response.completed", &response_id);
    assert_eq!(app.post_webhook("wh_late", &body).await.status(), 200);
    app.wait_until(
        "the late answer is stored",
        "SELECT EXISTS (SELECT 1 FROM messages WHERE role = 'assistant')",
    )
    .await;
    let late: Vec<Value> = console
        .items(&c)
        .await
        .into_iter()
        .filter(|i| i["role"] == "assistant")
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["internal"], true);
    assert_eq!(late[0]["customer_seq"], Value::Null);

    // The customer writes again: no AI turn; the agent answers.
    socket.send_message("h-2", "hello?").await;
    socket
        .next_where("own message", |f| f["client_id"] == "h-2")
        .await;
    let (status, reply) = console
        .post(
            &format!("/api/agent/conversations/{c}/messages"),
            json!({"text":"Dana here, checking now."}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let from_agent = socket.next_from("agent").await;
    assert_eq!(from_agent["author"], "Dana");
    assert_eq!(from_agent["text"], "Dana here, checking now.");
    assert_eq!(
        app.sim_requests("POST", "/v1/responses").await.len(),
        1,
        "no AI turn while a person owns it"
    );

    // A note stays internal too.
    console
        .post(
            &format!("/api/agent/conversations/{c}/notes"),
            json!({"text":"VIP customer"}),
        )
        .await;
    let view = app.customer_view(&visitor).await;
    let roles: Vec<&str> = view.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["customer", "customer", "agent"], "{view:?}");
    let seqs: Vec<i64> = console
        .items(&c)
        .await
        .iter()
        .map(|i| i["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "items are numbered without gaps"
    );

    // Handed back, the AI answers the next message, not the old ones.
    assert_eq!(console.act(&c, "handback").await.0, 200);
    socket
        .send_message("h-3", "thanks, and your opening hours?")
        .await;
    let next = next_created(&mut created).await;
    let requests = app.sim_requests("POST", "/v1/responses").await;
    let inputs: Vec<&str> = requests[1]["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["thanks, and your opening hours?"]);
    app.complete("wh_next", &next, &mut socket).await;
}

#[tokio::test]
async fn the_ai_hands_over_through_its_tool_and_the_openai_conversation_stays_consistent() {
    let app = spawn_app().await;
    add_agent(&app, "dana@example.com", "Dana").await;
    let console = Console::sign_in(&app, "dana@example.com").await;
    let mut feed = console.feed().await;
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    let c = socket.welcome["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    socket
        .send_message("t-1", "I want to talk to a human, please")
        .await;
    let notice = socket.next_from("system").await;
    assert!(
        notice["text"]
            .as_str()
            .unwrap()
            .contains("passing you to a person"),
        "{notice}"
    );
    socket.next_status("idle").await;

    // Agents see it flagged, live and at the top of the list.
    feed.next_where("state change", |f| {
        f["type"] == "state" && f["state"] == "needs_human"
    })
    .await;
    let (_, list) = console.get("/api/agent/conversations").await;
    assert_eq!(list[0]["id"], c.as_str());
    assert_eq!(list[0]["state"], "needs_human");
    let events: Vec<Value> = console
        .items(&c)
        .await
        .into_iter()
        .filter(|i| i["role"] == "event")
        .collect();
    assert_eq!(events[0]["event"]["by"]["kind"], "ai");
    assert_eq!(
        events[0]["event"]["reason"],
        "the customer asked for a person"
    );

    // The tool call was answered on the OpenAI conversation…
    let created: Vec<Value> = app.sim_requests("POST", "/v1/conversations").await;
    assert_eq!(created.len(), 1);
    let requests = app.sim_requests("POST", "/v1/responses").await;
    assert!(requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "handoff_to_human"));
    let openai_conversation = requests[0]["conversation"].as_str().unwrap();
    let outputs = app
        .sim_requests(
            "POST",
            &format!("/v1/conversations/{openai_conversation}/items"),
        )
        .await;
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["items"][0]["type"], "function_call_output");
    // …so the next response on it is accepted (OpenAI refuses otherwise).
    socket
        .send_message("t-2", "are you still there? what are your hours?")
        .await;
    let reply = socket.next_from("assistant").await;
    assert!(
        reply["text"].as_str().unwrap().contains("Monday to Friday"),
        "{reply}"
    );
}

#[tokio::test]
async fn the_list_filters_by_state_and_searches_text_and_the_feed_replays_after_seq() {
    let app = spawn_app_with(TestOptions {
        behaviour: Behaviour::default(),
        ..TestOptions::default()
    })
    .await;
    add_agent(&app, "dana@example.com", "Dana").await;
    let console = Console::sign_in(&app, "dana@example.com").await;
    let (_, _, first) = customer(&app).await;
    let (_, mut second_socket, second) = customer(&app).await;
    second_socket
        .send_message("c-2", "I need a refund for order 123")
        .await;
    second_socket.next_from("assistant").await;
    console.act(&first, "takeover").await;

    let (_, human) = console.get("/api/agent/conversations?state=human").await;
    assert_eq!(
        human
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [first.as_str()]
    );
    let (_, found) = console.get("/api/agent/conversations?q=ORDER%20123").await;
    assert_eq!(
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [second.as_str()]
    );
    let (_, all) = console.get("/api/agent/conversations").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["unread"].as_i64().unwrap() >= 1));
    let (status, _) = console.get("/api/agent/conversations?state=lost").await;
    assert_eq!(status, 400);

    // Reading clears the unread count.
    let last = console.items(&second).await.last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    let (_, summary) = console
        .post(
            &format!("/api/agent/conversations/{second}/read"),
            json!({ "seq": last }),
        )
        .await;
    assert_eq!(summary["unread"], 0);

    // The feed replays a watched transcript after a seq, then goes live.
    let mut feed = console.feed().await;
    feed.send(json!({ "type": "watch", "conversation_id": second, "after_seq": 2 }))
        .await;
    let watching = feed
        .next_where("watching", |f| f["type"] == "watching")
        .await;
    assert_eq!(watching["last_seq"], last);
    let replayed = feed
        .frames_until(|f| f["type"] == "item" && f["seq"] == last)
        .await;
    let seqs: Vec<i64> = replayed
        .iter()
        .filter(|f| f["type"] == "item")
        .map(|f| f["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (3..=last).collect::<Vec<_>>());
    second_socket.send_message("c-3", "thanks").await;
    let live = feed
        .next_where("live item", |f| {
            f["type"] == "item" && f["conversation_id"] == second.as_str()
        })
        .await;
    assert_eq!(live["seq"], last + 1);
}

#[tokio::test]
async fn a_session_id_fixed_before_sign_in_is_replaced_at_sign_in() {
    let app = spawn_app().await;
    add_agent(&app, "dana@example.com", "Dana").await;
    let planted = "attacker-chosen-session-id";
    let response = reqwest::Client::new()
        .post(format!("{}/api/agent/login", app.base_url))
        .header("cookie", format!("helpline_session={planted}"))
        .json(&json!({ "email": "dana@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = cookie
        .trim_start_matches("helpline_session=")
        .split(';')
        .next()
        .unwrap();
    assert!(!id.is_empty() && id != planted, "{cookie}");
    // The planted id is worth nothing.
    let planted_me = reqwest::Client::new()
        .get(format!("{}/api/agent/me", app.base_url))
        .header("cookie", format!("helpline_session={planted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(planted_me.status(), 401);
}

#[tokio::test]
async fn passwords_never_reach_the_logs() {
    // The real binary at its most talkative, its logs in a file.
    let app = spawn_app().await;
    add_agent(&app, "dana@example.com", "Dana").await;
    app.stop();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path =
        std::env::temp_dir().join(format!("helpline-log-{}", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut env = app.env(&[("HELPLINE_BIND", format!("127.0.0.1:{port}"))]);
    env.push(("RUST_LOG", "trace".into()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpline"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("webhook URL") {
            break;
        }
    }
    let console = Console {
        base: format!("http://127.0.0.1:{port}"),
        ..Console::anonymous(&app)
    };
    assert_eq!(
        console
            .login("dana@example.com", "wrong-password-WXYZ")
            .await
            .status(),
        401
    );
    assert_eq!(
        console.login("dana@example.com", PASSWORD).await.status(),
        200
    );
    crate::helpers::terminate(&child);
    child.wait().await.unwrap();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logged.contains("agent signed in"), "the log was captured");
    assert!(!logged.contains(PASSWORD) && !logged.contains("wrong-password-WXYZ"));
}
