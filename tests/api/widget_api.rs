//! What the widget relies on from the server, seen from another web site:
//! CORS on `POST /api/visitors`, the socket's `Origin` check, identity
//! verification, and how `widget.js` is served.

use helpline::chat::identity::user_hash;
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::helpers::{spawn_app, spawn_app_configured, ChatSocket, TestApp, TestOptions, Visitor};

const EVIL: &str = "https://evil.example";
const IDENTITY_SECRET: &str = "test-identity-secret";

async fn app_with(env: &[(&'static str, &str)]) -> TestApp {
    spawn_app_configured(
        TestOptions::default(),
        env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    )
    .await
}

impl TestApp {
    async fn post_visitor(&self, origin: Option<&str>, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/api/visitors", self.base_url));
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn preflight(&self, origin: &str) -> reqwest::Response {
        self.http
            .request(Method::OPTIONS, format!("{}/api/visitors", self.base_url))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .send()
            .await
            .unwrap()
    }

    async fn visitors(&self) -> i64 {
        self.count("SELECT count(*) FROM visitors").await
    }

    /// The upgrade's answer when a page from `origin` opens the socket.
    async fn open_socket_from(
        &self,
        origin: &str,
    ) -> Result<ChatSocket, tungstenite::http::StatusCode> {
        let mut request = self.ws_url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(ChatSocket {
                ws,
                welcome: Value::Null,
            }),
            Err(tungstenite::Error::Http(response)) => Err(response.status()),
            Err(e) => panic!("websocket connect: {e}"),
        }
    }
}

fn header(response: &reqwest::Response, name: header::HeaderName) -> Option<&str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_gets_a_preflight_answer_and_a_visitor() {
    let app = spawn_app().await;
    let origin = "http://localhost:5173";

    let preflight = app.preflight(origin).await;
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&preflight, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(origin)
    );
    assert_eq!(
        header(&preflight, header::ACCESS_CONTROL_ALLOW_METHODS),
        Some("POST")
    );
    assert_eq!(
        header(&preflight, header::ACCESS_CONTROL_ALLOW_HEADERS),
        Some("content-type")
    );
    assert_eq!(header(&preflight, header::VARY), Some("origin"));
    assert_eq!(app.visitors().await, 0, "a preflight stores nothing");

    let response = app.post_visitor(Some(origin), Some(json!({}))).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(origin)
    );
    assert_eq!(header(&response, header::VARY), Some("origin"));
    assert_eq!(
        header(&response, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        None,
        "the token is not a cookie; no credentials are needed"
    );
    assert_eq!(app.visitors().await, 1);
}

#[tokio::test]
async fn a_page_on_another_origin_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;

    let preflight = app.preflight(EVIL).await;
    assert_eq!(preflight.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&preflight, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        None
    );

    // A simple POST (no preflight needed) is refused by the server itself.
    let response = app.post_visitor(Some(EVIL), None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    assert_eq!(error_code(response).await, "origin_not_allowed");

    // "null" is what sandboxed frames and file: pages send.
    let response = app.post_visitor(Some("null"), None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.visitors().await, 0);

    // Clients that are not browsers send no Origin and are not affected.
    let response = app.post_visitor(None, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
}

#[tokio::test]
async fn configured_origins_replace_the_default_and_the_instance_keeps_its_own() {
    let app = app_with(&[(
        "HELPLINE_ALLOWED_ORIGINS",
        "https://shop.example.com, https://www.example.com",
    )])
    .await;
    for origin in [
        "https://shop.example.com",
        "https://www.example.com",
        app.base_url.as_str(),
    ] {
        let response = app.post_visitor(Some(origin), None).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{origin}");
    }
    for origin in ["http://localhost:5173", "http://shop.example.com"] {
        let response = app.post_visitor(Some(origin), None).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    assert_eq!(app.visitors().await, 3);
}

#[tokio::test]
async fn the_socket_refuses_pages_from_other_origins_before_the_upgrade() {
    let app = spawn_app().await;
    let visitor = app.new_visitor().await;

    let refused = app.open_socket_from(EVIL).await.err();
    assert_eq!(refused, Some(tungstenite::http::StatusCode::FORBIDDEN));
    assert_eq!(
        app.count("SELECT count(*) FROM conversations").await,
        0,
        "nothing was opened for the refused socket"
    );

    let mut allowed = app
        .open_socket_from("http://127.0.0.1:8080")
        .await
        .expect("an allowed origin is upgraded");
    allowed
        .send(json!({ "type": "hello", "token": visitor.token }))
        .await;
    assert_eq!(allowed.next_frame().await["type"], "welcome");

    // Without Origin (not a browser), as every other test does.
    app.connect(&visitor, None).await;
}

#[tokio::test]
async fn a_verified_user_gets_one_conversation_on_every_device() {
    let app = app_with(&[("HELPLINE_IDENTITY_SECRET", IDENTITY_SECRET)]).await;
    let hash = user_hash(IDENTITY_SECRET.as_bytes(), "customer-1234");
    let body = json!({ "user_id": "customer-1234", "user_hash": hash });

    let mut devices = Vec::new();
    for _ in 0..2 {
        let response = app.post_visitor(None, Some(body.clone())).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["user_id"], "customer-1234");
        devices.push(created);
    }
    assert_eq!(devices[0]["visitor_id"], devices[1]["visitor_id"]);
    assert_ne!(devices[0]["token"], devices[1]["token"]);

    let phone = Visitor {
        token: devices[0]["token"].as_str().unwrap().to_owned(),
    };
    let laptop = Visitor {
        token: devices[1]["token"].as_str().unwrap().to_owned(),
    };
    let mut on_phone = app.connect(&phone, None).await;
    let mut on_laptop = app.connect(&laptop, None).await;
    assert_eq!(
        on_phone.welcome["conversation_id"],
        on_laptop.welcome["conversation_id"]
    );
    on_phone.send_message("p-1", "Sent from my phone").await;
    let seen = on_laptop.next_from("customer").await;
    assert_eq!(seen["text"], "Sent from my phone");

    // An anonymous visitor is someone else.
    let anonymous = app.new_visitor().await;
    let other = app.connect(&anonymous, None).await;
    assert_ne!(
        other.welcome["conversation_id"],
        on_phone.welcome["conversation_id"]
    );
}

#[tokio::test]
async fn a_wrong_user_hash_is_refused_and_nothing_is_stored() {
    let app = app_with(&[("HELPLINE_IDENTITY_SECRET", IDENTITY_SECRET)]).await;
    let right = user_hash(IDENTITY_SECRET.as_bytes(), "customer-1234");
    let for_someone_else = user_hash(IDENTITY_SECRET.as_bytes(), "customer-9999");
    let wrong_secret = user_hash(b"not the secret", "customer-1234");

    for (body, status, code) in [
        (
            json!({ "user_id": "customer-1234", "user_hash": for_someone_else }),
            StatusCode::FORBIDDEN,
            "invalid_user_hash",
        ),
        (
            json!({ "user_id": "customer-1234", "user_hash": wrong_secret }),
            StatusCode::FORBIDDEN,
            "invalid_user_hash",
        ),
        (
            json!({ "user_id": "customer-1234" }),
            StatusCode::FORBIDDEN,
            "invalid_user_hash",
        ),
        (
            json!({ "user_hash": right }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({ "user_id": "", "user_hash": right }),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            json!({ "user_id": 1234 }),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        // From an allowed page, so that its script can read the code.
        let response = app
            .post_visitor(Some("http://localhost:5173"), Some(body.clone()))
            .await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(
            header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://localhost:5173")
        );
        assert_eq!(error_code(response).await, code, "{body}");
    }
    assert_eq!(app.visitors().await, 0);
    assert_eq!(app.count("SELECT count(*) FROM visitor_tokens").await, 0);
}

#[tokio::test]
async fn without_an_identity_secret_a_user_id_is_refused() {
    let app = spawn_app().await;
    let hash = user_hash(IDENTITY_SECRET.as_bytes(), "customer-1234");
    let response = app
        .post_visitor(
            None,
            Some(json!({ "user_id": "customer-1234", "user_hash": hash })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "identity_verification_disabled");
    assert_eq!(app.visitors().await, 0);
}

#[tokio::test]
async fn widget_js_is_served_to_any_site_small_and_briefly_cached() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/widget.js", app.base_url))
        .header(header::ORIGIN, EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(&response, header::CONTENT_TYPE)
            .unwrap()
            .contains("javascript"),
        "{:?}",
        response.headers()
    );
    assert_eq!(
        header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("*")
    );
    let cache = header(&response, header::CACHE_CONTROL).unwrap().to_owned();
    assert!(cache.contains("max-age=300"), "{cache}");
    assert!(header(&response, header::LAST_MODIFIED).is_some());
    let script = response.bytes().await.unwrap();

    // Under 20 KB once gzipped, as served by any CDN or reverse proxy.
    let mut gzip = std::process::Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip (part of every Debian install)");
    use std::io::Write;
    gzip.stdin.take().unwrap().write_all(&script).unwrap();
    let gzipped = gzip.wait_with_output().unwrap().stdout.len();
    assert!(gzipped < 20 * 1024, "widget.js is {gzipped} bytes gzipped");
}
