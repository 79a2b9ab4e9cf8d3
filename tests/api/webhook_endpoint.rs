//! The webhook endpoint at the HTTP level: what each kind of delivery gets,
//! and what is recorded.

use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

async fn post_raw(app: &TestApp, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut request = app
        .http
        .post(&app.webhook_url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed_headers(
    app: &TestApp,
    id: &str,
    timestamp: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    let signature = app.secret.sign(id, &ts, body.as_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
    ]
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn refused_deliveries_get_400_naming_the_reason_and_record_nothing() {
    let app = spawn_app().await;
    let body = TestApp::event_body("response.completed", "resp_1");
    let good = signed_headers(&app, "wh_1", now(), &body);

    let mut wrong_signature = good.clone();
    wrong_signature[2].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    // A minute beyond the 300 s tolerance: the server reads its clock a
    // moment later, and a second boundary in between must not bring a
    // timestamp back within it.
    let stale = signed_headers(&app, "wh_1", now() - 360, &body);
    let future = signed_headers(&app, "wh_1", now() + 360, &body);
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("wrong signature", wrong_signature, "invalid_signature"),
        ("no id", good[1..].to_vec(), "missing_header"),
        (
            "no timestamp",
            vec![good[0].clone(), good[2].clone()],
            "missing_header",
        ),
        ("no signature", good[..2].to_vec(), "missing_header"),
        ("stale", stale, "timestamp_too_old"),
        ("from the future", future, "timestamp_too_new"),
    ];
    for (what, headers, code) in cases {
        let (status, body) = post_raw(
            &app,
            &headers,
            &TestApp::event_body("response.completed", "resp_1"),
        )
        .await;
        // The body differs from the signed one for every case but the
        // header ones, which fail first anyway.
        assert_eq!(status, 400, "{what}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // Signed correctly, but over another body.
    let (status, body_json) = post_raw(&app, &good, &body.replace("resp_1", "resp_2")).await;
    assert_eq!(
        (status, body_json["error"]["code"].as_str()),
        (400, Some("invalid_signature"))
    );
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);

    // And the genuine one is accepted.
    let (status, _) = post_raw(&app, &good, &body).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1);
}

#[tokio::test]
async fn a_redelivery_is_answered_200_and_stored_once() {
    let app = spawn_app().await;
    let body = TestApp::event_body("response.completed", "resp_dup");
    let first = app.post_webhook("wh_dup", &body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap()["duplicate"], false);
    // A retry carries the same id and a fresh timestamp.
    let again = app.post_webhook("wh_dup", &body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE webhook_id = 'wh_dup'")
            .await,
        1
    );
}

#[tokio::test]
async fn concurrent_deliveries_each_get_their_own_answer_and_are_stored_once() {
    // Deliveries arriving together share a statement (BENCHMARKS.md): each
    // must still get its own answer, and copies of one id only one insert.
    let app = spawn_app().await;
    let mut deliveries = Vec::new();
    for i in 0..40 {
        let kind = if i % 4 == 0 {
            "batch.completed"
        } else {
            "response.completed"
        };
        deliveries.push((format!("wh_many_{i}"), kind));
    }
    for _ in 0..10 {
        deliveries.push(("wh_many_copy".to_owned(), "response.completed"));
    }
    let answers = futures::future::join_all(deliveries.iter().map(|(id, kind)| {
        let app = &app;
        async move {
            let body = TestApp::event_body(kind, &format!("resp_{id}"));
            let response = app.post_webhook(id, &body).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body["duplicate"].as_bool().unwrap())
        }
    }))
    .await;

    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let fresh: Vec<bool> = answers.iter().map(|(_, duplicate)| !duplicate).collect();
    assert!(fresh[..40].iter().all(|f| *f), "{answers:?}");
    assert_eq!(fresh[40..].iter().filter(|f| **f).count(), 1, "{answers:?}");
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT webhook_id, status FROM webhook_events WHERE webhook_id LIKE 'wh_many_%'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 41);
    for (id, status) in stored {
        let kind = deliveries.iter().find(|(d, _)| *d == id).unwrap().1;
        // Processed, parked or still waiting by now; ignored only if unknown.
        assert_eq!(
            status == "ignored",
            kind == "batch.completed",
            "{id}: {status}"
        );
    }
}

#[tokio::test]
async fn unknown_event_types_are_accepted_recorded_and_ignored() {
    let app = spawn_app().await;
    let body = TestApp::event_body("batch.completed", "batch_1");
    let response = app.post_webhook("wh_batch", &body).await;
    assert_eq!(response.status(), 200);
    let status: String =
        sqlx::query_scalar("SELECT status FROM webhook_events WHERE webhook_id = 'wh_batch'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "ignored");
    let event_type: String = sqlx::query_scalar("SELECT event_type FROM webhook_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(event_type, "batch.completed");
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_event_is_refused() {
    let app = spawn_app().await;
    for (id, body) in [
        ("wh_a", "{not json"),
        ("wh_b", "[1,2,3]"),
        ("wh_c", r#"{"id":"evt_1","type":7}"#),
    ] {
        let response = app.post_webhook(id, body).await;
        assert_eq!(response.status(), 400, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], "malformed_event", "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let body = format!(
        r#"{{"type":"response.completed","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let response = app.post_webhook("wh_big", &body).await;
    assert_eq!(response.status(), 413);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);
}
