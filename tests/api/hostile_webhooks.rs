//! Issue 8, the webhook endpoint under hostile input: every refusal names
//! its reason, is counted, and stores nothing; a flood of forgeries does not
//! keep a genuine delivery out.

use futures::{stream, StreamExt};
use serde_json::Value;

use crate::helpers::{metric, spawn_app, TestApp};

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// Posts `body` with the given headers (appended, so a name may repeat).
async fn post(app: &TestApp, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut request = app
        .http
        .post(&app.webhook_url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed(app: &TestApp, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = now();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-signature", app.secret.sign(id, &ts, body)),
        ("webhook-timestamp", ts),
    ]
}

async fn stored(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM webhook_events").await
}

#[tokio::test]
async fn a_signed_body_that_is_not_utf8_is_refused_and_not_stored() {
    let app = spawn_app().await;
    let body = b"{\"type\":\"response.completed\",\"data\":{\"id\":\"resp_\xff\xfe\"}}".to_vec();
    let (status, json) = post(&app, &signed(&app, "wh_bytes", &body), body).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["code"], "invalid_utf8", "{json}");
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn a_handled_event_of_an_unexpected_shape_is_refused_and_not_stored() {
    let app = spawn_app().await;
    for (i, body) in [
        r#"{"id":"evt_1","type":"response.completed"}"#,
        r#"{"id":"evt_2","type":"response.completed","data":{"id":42}}"#,
        r#"{"id":"evt_3","type":"response.failed","data":[]}"#,
        r#"{"id":7,"type":"response.completed","data":{"id":"resp_1"}}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("wh_shape_{i}");
        let bytes = body.as_bytes().to_vec();
        let (status, json) = post(&app, &signed(&app, &id, &bytes), bytes).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json["error"]["code"], "malformed_event", "{body}: {json}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(&id),
            "the refusal names the webhook-id: {json}"
        );
    }
    assert_eq!(stored(&app).await, 0);
    let metrics = app.metrics().await;
    let rejected = metric(
        &metrics,
        "helpline_webhooks_rejected_total",
        &[("reason", "malformed_event")],
    );
    assert_eq!(rejected, 4.0);
}

#[tokio::test]
async fn a_header_given_twice_is_refused_and_not_stored() {
    let app = spawn_app().await;
    let body = TestApp::event_body("response.completed", "resp_1").into_bytes();
    let good = signed(&app, "wh_twice", &body);
    for (i, name) in ["webhook-id", "webhook-signature", "webhook-timestamp"]
        .into_iter()
        .enumerate()
    {
        let mut headers = good.clone();
        // The same value again: even an identical repeat is ambiguous.
        headers.push(headers[i].clone());
        assert_eq!(headers[i].0, name);
        let (status, json) = post(&app, &headers, body.clone()).await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(json["error"]["code"], "duplicate_header", "{name}: {json}");
    }
    assert_eq!(stored(&app).await, 0);
    let (status, _) = post(&app, &good, body).await;
    assert_eq!(status, 200, "the same delivery, once each, is fine");
}

#[tokio::test]
async fn oversized_signature_headers_and_too_many_entries_are_refused() {
    let app = spawn_app().await;
    let body = TestApp::event_body("response.completed", "resp_1").into_bytes();
    let good = signed(&app, "wh_many", &body);
    let genuine = good[1].1.clone();

    // Nine entries, the genuine one last: refused before any is tried.
    let mut many = vec!["v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(); 8];
    many.push(genuine.clone());
    let mut headers = good.clone();
    headers[1].1 = many.join(" ");
    let (status, json) = post(&app, &headers, body.clone()).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("too_many_signatures"))
    );

    let mut headers = good.clone();
    headers[1].1 = format!("{genuine} v1,{}", "A".repeat(4000));
    let (status, json) = post(&app, &headers, body.clone()).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("header_too_large"))
    );

    let mut headers = good.clone();
    headers[0].1 = "w".repeat(300);
    let (status, json) = post(&app, &headers, body.clone()).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("header_too_large"))
    );

    for ts in ["+1750861210", "17508 61210", "1.7e9", "-1"] {
        let mut headers = good.clone();
        headers[2].1 = ts.to_owned();
        let (status, json) = post(&app, &headers, body.clone()).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (400, Some("invalid_timestamp")),
            "{ts}"
        );
    }
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn a_flood_of_forgeries_is_counted_not_stored_and_good_deliveries_still_pass() {
    let app = spawn_app().await;
    const FLOOD: usize = 500;
    let forged = |i: usize| {
        let app = &app;
        async move {
            let body = TestApp::event_body("response.completed", &format!("resp_{i}"));
            let headers = vec![
                ("webhook-id", format!("wh_forged_{i}")),
                ("webhook-timestamp", now()),
                (
                    "webhook-signature",
                    "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
                ),
            ];
            post(app, &headers, body.into_bytes()).await.0
        }
    };
    let flood = stream::iter(0..FLOOD)
        .map(forged)
        .buffer_unordered(32)
        .collect::<Vec<u16>>();
    // A genuine delivery in the middle of the flood.
    let genuine = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let body = TestApp::event_body("batch.completed", "batch_during");
        app.post_webhook("wh_during", &body).await.status().as_u16()
    };
    let (statuses, during) = tokio::join!(flood, genuine);
    assert!(statuses.iter().all(|&s| s == 400), "every forgery refused");
    assert_eq!(during, 200, "a genuine delivery during the flood");
    let after = app
        .post_webhook(
            "wh_after",
            &TestApp::event_body("batch.completed", "batch_after"),
        )
        .await;
    assert_eq!(after.status(), 200, "and after it");

    assert_eq!(stored(&app).await, 2, "only the two genuine deliveries");
    let metrics = app.metrics().await;
    let rejected = metric(
        &metrics,
        "helpline_webhooks_rejected_total",
        &[("reason", "invalid_signature")],
    );
    assert_eq!(rejected, FLOOD as f64);
}
