//! Issue 8, security headers: every response says nosniff and a referrer
//! policy; Helpline's own pages and API forbid framing and inline code;
//! `widget.js` stays embeddable by any site.

use crate::helpers::{spawn_app, spawn_app_configured, TestOptions};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[tokio::test]
async fn pages_and_the_api_carry_the_security_headers() {
    let app = spawn_app().await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base_url)).send();
    let responses = vec![
        ("/", get("/").await.unwrap()),
        ("/agent/", get("/agent/").await.unwrap()),
        ("/healthz", get("/healthz").await.unwrap()),
        ("/no-such-page", get("/no-such-page").await.unwrap()),
        (
            "POST /api/visitors",
            app.http
                .post(format!("{}/api/visitors", app.base_url))
                .send()
                .await
                .unwrap(),
        ),
        (
            "POST /api/webhooks/openai",
            app.http.post(&app.webhook_url).send().await.unwrap(),
        ),
    ];
    for (what, response) in responses {
        let h = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(
            h["referrer-policy"], "strict-origin-when-cross-origin",
            "{what}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, CSP, "{what}");
        assert!(!csp.contains("unsafe-inline"), "{what}");
    }
}

#[tokio::test]
async fn the_demo_page_has_no_inline_script_or_style() {
    let app = spawn_app().await;
    let page = app
        .http
        .get(format!("{}/", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<style"), "inline <style> would be blocked");
    assert!(
        !page.contains("style=\""),
        "inline style attributes would be blocked"
    );
    for script in page.split("<script").skip(1) {
        let tag_end = script.find('>').unwrap();
        assert!(
            script[..tag_end].contains("src="),
            "inline script: {script}"
        );
        assert!(script[tag_end + 1..].trim_start().starts_with("</script>"));
    }
}

#[tokio::test]
async fn widget_js_stays_embeddable_by_any_site() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/widget.js", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("x-frame-options").is_none());
    assert!(h.get("content-security-policy").is_none());
}

#[tokio::test]
async fn behind_an_https_public_url_every_response_asks_for_https_only() {
    let https = spawn_app_configured(
        TestOptions::default(),
        vec![(
            "HELPLINE_PUBLIC_URL",
            "https://support.example.com".to_owned(),
        )],
    )
    .await;
    for path in ["/", "/healthz", "/widget.js", "/no-such-page"] {
        let response = https
            .http
            .get(format!("{}{path}", https.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }
    let plain = spawn_app().await;
    let response = plain
        .http
        .get(format!("{}/", plain.base_url))
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("strict-transport-security"));
}
