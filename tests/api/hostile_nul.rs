//! The NUL character, which PostgreSQL's text cannot hold, at every door
//! that stores text: each gets a clear 4xx naming the problem, nothing is
//! stored, and nothing else is affected. Also an agent marking an unknown
//! conversation read.

use helpline::chat::identity::user_hash;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_configured, TestApp, TestOptions};

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_signed_webhook_with_nul_is_refused_and_a_genuine_one_beside_it_is_recorded() {
    let app = spawn_app().await;
    let poisoned = r#"{"id":"evt_nul","type":"response.completed","data":{"id":"resp_\u0000"}}"#;
    let genuine = TestApp::event_body("response.completed", "resp_genuine");
    let (poisoned, genuine) = tokio::join!(
        app.post_webhook("wh_nul", poisoned),
        app.post_webhook("wh_genuine", &genuine)
    );
    assert_eq!(
        error_of(poisoned).await,
        (StatusCode::BAD_REQUEST, "malformed_event".into())
    );
    assert_eq!(genuine.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE webhook_id = 'wh_genuine'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_login_or_a_verified_user_with_nul_gets_a_clear_400() {
    let secret = "test-identity-secret";
    let app = spawn_app_configured(
        TestOptions::default(),
        vec![("HELPLINE_IDENTITY_SECRET", secret.to_owned())],
    )
    .await;
    let login = app
        .http
        .post(format!("{}/api/agent/login", app.base_url))
        .json(&json!({ "email": "dana\u{0}@example.com", "password": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(login).await,
        (StatusCode::BAD_REQUEST, "invalid_credentials_format".into())
    );

    let user_id = "user\u{0}1";
    let visitor = app
        .http
        .post(format!("{}/api/visitors", app.base_url))
        .json(&json!({ "user_id": user_id, "user_hash": user_hash(secret.as_bytes(), user_id) }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(visitor).await,
        (StatusCode::BAD_REQUEST, "invalid_user_id".into())
    );
    assert_eq!(app.count("SELECT count(*) FROM visitors").await, 0);
}

#[tokio::test]
async fn marking_an_unknown_conversation_read_is_404() {
    let app = spawn_app().await;
    helpline::admin::add_agent(
        &app.pool,
        "dana@example.com",
        "Dana",
        Some("a long password".into()),
    )
    .await
    .unwrap();
    let console = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let signed_in: Value = console
        .post(format!("{}/api/agent/login", app.base_url))
        .json(&json!({ "email": "dana@example.com", "password": "a long password" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read = console
        .post(format!(
            "{}/api/agent/conversations/{}/read",
            app.base_url,
            uuid::Uuid::now_v7()
        ))
        .header("x-csrf-token", signed_in["csrf_token"].as_str().unwrap())
        .json(&json!({ "seq": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(read).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}
