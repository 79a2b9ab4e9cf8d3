//! The widget on a customer's own web site: a page served from another
//! origin (`http://localhost:PORT`, while Helpline is `http://127.0.0.1:PORT`)
//! embeds it with one script tag, in a real headless Chromium.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{http::Uri, response::Html, Router};
use chromiumoxide::cdp::js_protocol::runtime::{ConsoleApiCalledType, EventConsoleApiCalled};
use futures::StreamExt;
use helpline::{
    chat::identity::user_hash,
    hub,
    simulator::Behaviour,
    storage::conversations::{self, NewMessage, Role},
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    browser::{
        eval, in_widget, open_widget, press, screenshot, send_in_widget, set_offline,
        widget_connected, widget_text, widget_until, TestBrowser,
    },
    helpers::{next_created, spawn_app_configured, TestApp, TestOptions, PATIENCE},
};

const IDENTITY_SECRET: &str = "browser-identity-secret";

/// A customer's web site: pages on their own origin.
struct CustomerSite {
    origin: String,
    pages: Arc<Mutex<HashMap<String, String>>>,
}

impl CustomerSite {
    /// Listens at once (Helpline's allow-list needs the origin); pages are
    /// added later, once Helpline's address is known.
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        let pages: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let served = pages.clone();
        let app = Router::new().fallback(move |uri: Uri| {
            let page = served.lock().unwrap().get(uri.path()).cloned();
            async move { page.map(Html).ok_or(StatusCode::NOT_FOUND) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { origin, pages }
    }

    /// Publishes a shop page at `path` embedding `helpline`'s widget.
    fn shop_page(&self, path: &str, helpline: &TestApp, settings: Value) -> String {
        self.shop_page_with(path, helpline, settings, "")
    }

    /// The same, with `attributes` on the script tag.
    fn shop_page_with(
        &self,
        path: &str,
        helpline: &TestApp,
        settings: Value,
        attributes: &str,
    ) -> String {
        // The shop's own CSS is deliberately hostile: it must not reach the widget.
        let html = format!(
            r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Acme Outdoor</title>
  <style>
    body {{ margin: 0; padding: 2rem; font: 18px/1.6 Georgia, serif; background: #f3efe6; color: #2b2b2b; }}
    div, p, li, button, textarea {{ font-size: 40px !important; color: red !important; background: yellow !important; }}
  </style>
  <script>window.alerts = 0; window.alert = () => {{ window.alerts += 1; }};</script>
</head>
<body>
  <h1>Acme Outdoor</h1>
  <h2>Tents, boots and everything for the trail</h2>
  <script>window.HelplineSettings = {settings};</script>
  <script src="{helpline}/widget.js" async {attributes}></script>
</body>
</html>"#,
            helpline = helpline.base_url,
        );
        self.pages.lock().unwrap().insert(path.to_owned(), html);
        format!("{}{path}", self.origin)
    }
}

/// Helpline allowing `site` only (its own origin aside), plus `env`.
async fn helpline_for(
    site: &CustomerSite,
    options: TestOptions,
    env: &[(&'static str, &str)],
) -> TestApp {
    let mut vars = vec![("HELPLINE_ALLOWED_ORIGINS", site.origin.clone())];
    vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    spawn_app_configured(options, vars).await
}

async fn count_in_widget(page: &chromiumoxide::Page, selector: &str) -> i64 {
    let expression = format!(
        "root.querySelectorAll({}).length",
        serde_json::to_string(selector).unwrap()
    );
    in_widget(page, &expression).await.as_i64().unwrap()
}

/// Waits until `selector` matches exactly `n` elements in the widget.
async fn until_count(page: &chromiumoxide::Page, selector: &str, n: usize) {
    let condition = format!(
        "root => root.querySelectorAll({}).length === {n}",
        serde_json::to_string(selector).unwrap()
    );
    widget_until(page, &condition).await;
}

/// A message written by someone other than the customer or the AI (what a
/// human agent's console will do): stored with the next seq and announced.
async fn post_staff_message(app: &TestApp, role: &str, author: Option<&str>, text: &str) {
    let mut tx = app.pool.begin().await.unwrap();
    let conversation_id: Uuid = sqlx::query_scalar("SELECT id FROM conversations LIMIT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let role = match role {
        "agent" => Role::Agent,
        "assistant" => Role::Assistant,
        _ => Role::System,
    };
    let mut new = NewMessage::public(conversation_id, role, text);
    new.author_name = author;
    let message = conversations::append(&mut tx, new).await.unwrap().unwrap();
    hub::publish_message(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_customer_site_on_another_origin_embeds_the_widget_and_chats() {
    let site = CustomerSite::start().await;
    let app = helpline_for(&site, TestOptions::default(), &[]).await;
    let url = site.shop_page(
        "/",
        &app,
        json!({ "title": "Acme support", "color": "#0f766e" }),
    );
    let browser = TestBrowser::launch().await;
    let page = browser.open(&url).await;

    // Keyboard only: Tab reaches the launcher, Enter opens the chat and puts
    // the focus in the message box.
    widget_until(&page, "root => root.querySelector('.launcher')").await;
    press(&page, "Tab").await;
    assert_eq!(
        in_widget(&page, "root.activeElement && root.activeElement.className").await,
        "launcher"
    );
    press(&page, "Enter").await;
    widget_connected(&page).await;
    assert_eq!(
        in_widget(&page, "root.activeElement && root.activeElement.tagName").await,
        "TEXTAREA"
    );
    assert_eq!(widget_text(&page, "h2").await, "Acme support");
    assert_eq!(
        in_widget(
            &page,
            "getComputedStyle(root.querySelector('.launcher')).backgroundColor"
        )
        .await,
        "rgb(15, 118, 110)"
    );

    send_in_widget(&page, "How long does shipping take?").await;
    let reply = widget_text(&page, ".msg-assistant .text").await;
    assert!(reply.starts_with("Orders ship"), "{reply}");
    let mine = widget_text(&page, ".msg-customer:not(.pending) .text").await;
    assert_eq!(mine, "How long does shipping take?");

    // The shop's CSS does not reach into the widget.
    assert_eq!(
        in_widget(
            &page,
            "getComputedStyle(root.querySelector('.msg-assistant .text')).fontSize"
        )
        .await,
        "15px"
    );
    // The visitor's token lives in the shop's own localStorage.
    let key = format!("helpline:{}:visitor", app.base_url);
    let stored = eval(
        &page,
        &format!("JSON.parse(localStorage.getItem({key:?}) || 'null')"),
    )
    .await;
    assert!(
        stored["token"]
            .as_str()
            .unwrap_or_default()
            .starts_with("hlv_"),
        "{stored}"
    );

    // A second tab of the same visitor shows the same conversation, open as
    // it was left, and what is sent in either shows in both.
    let second = browser.open(&url).await;
    widget_connected(&second).await;
    until_count(&second, "li.msg", 2).await;
    assert_eq!(
        in_widget(&second, "root.querySelector('.panel').hidden").await,
        false
    );
    send_in_widget(&second, "Can I return it if it does not fit?").await;
    until_count(&page, ".msg-assistant", 2).await;
    until_count(&second, ".msg-assistant", 2).await;
    // New replies are announced to screen readers.
    let announced = widget_text(&page, "[aria-live] p:last-child").await;
    assert!(
        announced.starts_with("Assistant: You can return"),
        "{announced}"
    );

    // A reload keeps the history, in order.
    page.reload().await.unwrap();
    until_count(&page, "li.msg:not(.pending)", 4).await;
    let roles = in_widget(
        &page,
        "[...root.querySelectorAll('li.msg')].map(li => li.className + ':' + li.dataset.seq)",
    )
    .await;
    assert_eq!(
        roles,
        json!([
            "msg msg-customer:1",
            "msg msg-assistant:2",
            "msg msg-customer:3",
            "msg msg-assistant:4"
        ])
    );

    // The history replayed on load is not read out again by screen readers.
    assert_eq!(
        in_widget(&page, "root.querySelector('[aria-live]').textContent").await,
        ""
    );

    // Escape closes the chat and gives the focus back to the launcher.
    in_widget(&page, "root.querySelector('textarea').focus()").await;
    press(&page, "Escape").await;
    assert_eq!(
        in_widget(&page, "root.querySelector('.panel').hidden").await,
        true
    );
    assert_eq!(
        in_widget(&page, "root.activeElement && root.activeElement.className").await,
        "launcher"
    );
    // The second tab goes: with its chat open, it would read what comes next.
    second.close().await.unwrap();

    // A reply while the chat is closed: an unread badge, an announcement.
    post_staff_message(&app, "agent", Some("Dana"), "Your parcel is on its way.").await;
    assert_eq!(widget_text(&page, ".badge:not([hidden])").await, "1");
    assert_eq!(
        in_widget(
            &page,
            "root.querySelector('.launcher').getAttribute('aria-label')"
        )
        .await,
        "Open chat, 1 unread message"
    );
    assert_eq!(
        widget_text(&page, "[aria-live] p:last-child").await,
        "Dana: Your parcel is on its way."
    );

    // The next page load remembers the chat closed and the message unread;
    // opening the chat reads it.
    page.reload().await.unwrap();
    widget_connected(&page).await;
    assert_eq!(
        in_widget(&page, "root.querySelector('.panel').hidden").await,
        true
    );
    assert_eq!(widget_text(&page, ".badge:not([hidden])").await, "1");
    in_widget(&page, "root.querySelector('.launcher').click()").await;
    assert_eq!(
        in_widget(&page, "root.querySelector('.badge').hidden").await,
        true
    );
    assert_eq!(
        in_widget(&page, "root.activeElement && root.activeElement.tagName").await,
        "TEXTAREA"
    );
}

#[tokio::test]
async fn a_network_cut_while_a_reply_is_produced_loses_and_repeats_nothing() {
    let site = CustomerSite::start().await;
    // Webhooks are delivered by the test: the reply is finished while the
    // browser is offline.
    let options = TestOptions {
        auto_webhooks: false,
        behaviour: Behaviour {
            reply_delay_ms: 0,
            ..Behaviour::default()
        },
        env: Vec::new(),
    };
    let app = helpline_for(&site, options, &[]).await;
    let mut created = app.sim.watch_created();
    let url = site.shop_page("/", &app, json!({}));
    let browser = TestBrowser::launch().await;
    let page = browser.open(&url).await;
    open_widget(&page).await;

    send_in_widget(&page, "What are your opening hours?").await;
    let first = next_created(&mut created).await;
    widget_until(&page, "root => !root.querySelector('.typing').hidden").await;

    set_offline(&page, true).await;
    widget_until(
        &page,
        "root => root.querySelector('.hl[data-conn=offline]')",
    )
    .await;
    assert!(
        in_widget(&page, "root.querySelector('.typing').hidden").await == true,
        "no typing indicator while offline"
    );

    // The reply is produced and stored while the browser cannot hear it.
    let event = TestApp::event_body("response.completed", &first);
    assert_eq!(app.post_webhook("wh-first", &event).await.status(), 200);
    app.wait_until(
        "the reply is stored",
        "SELECT count(*) = 1 FROM messages WHERE role = 'assistant'",
    )
    .await;
    assert_eq!(count_in_widget(&page, ".msg-assistant").await, 0);

    // Typed offline: shown as sending, kept in the outbox.
    send_in_widget(&page, "And do you ship to Norway?").await;
    widget_until(&page, "root => root.querySelector('.msg-customer.pending')").await;

    set_offline(&page, false).await;
    let reply = widget_text(&page, ".msg-assistant .text").await;
    assert!(reply.contains("Monday to Friday"), "{reply}");
    until_count(&page, ".msg-customer:not(.pending)", 2).await;
    let second = next_created(&mut created).await;
    let event = TestApp::event_body("response.completed", &second);
    assert_eq!(app.post_webhook("wh-second", &event).await.status(), 200);
    until_count(&page, ".msg-assistant", 2).await;

    // Everything once: in the widget and in the database.
    let texts = in_widget(
        &page,
        "[...root.querySelectorAll('li.msg')].map(li => li.dataset.seq + ' ' + li.className)",
    )
    .await;
    assert_eq!(
        texts,
        json!([
            "1 msg msg-customer",
            "2 msg msg-assistant",
            "3 msg msg-customer",
            "4 msg msg-assistant"
        ])
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE body = 'And do you ship to Norway?'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        2
    );
    // The outbox is empty once the server has the message.
    assert_eq!(
        eval(
            &page,
            "Object.keys(localStorage).filter(k => k.includes(':outbox:')).length"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn markup_from_customers_agents_and_the_assistant_stays_inert_text() {
    let site = CustomerSite::start().await;
    let app = helpline_for(&site, TestOptions::default(), &[]).await;
    let url = site.shop_page("/", &app, json!({}));
    let browser = TestBrowser::launch().await;
    let page = browser.open(&url).await;
    open_widget(&page).await;

    let payload = "<img src=x onerror=alert(1)>";
    send_in_widget(&page, payload).await;
    // The simulator quotes questions it does not know: the reply carries it.
    let reply = widget_text(&page, ".msg-assistant .text").await;
    assert!(reply.contains(payload), "{reply}");
    let mine = widget_text(&page, ".msg-customer:not(.pending) .text").await;
    assert_eq!(mine, payload);

    // The Markdown subset of assistant replies: real links only for http(s)
    // and mailto, opened safely; markup stays text.
    send_in_widget(
        &page,
        "**really** see [the guide](https://example.com/guide) or [this](javascript:alert(2))",
    )
    .await;
    until_count(&page, ".msg-assistant", 2).await;
    let links = in_widget(
        &page,
        "[...root.querySelectorAll('.msg-assistant a')].map(a => [a.textContent, a.href, a.rel, a.target])",
    )
    .await;
    assert_eq!(
        links,
        json!([[
            "the guide",
            "https://example.com/guide",
            "noopener noreferrer",
            "_blank"
        ]])
    );
    assert_eq!(
        widget_text(&page, ".msg-assistant:last-child strong").await,
        "really"
    );
    // The customer's own text is shown as typed, asterisks and all.
    assert!(
        in_widget(
            &page,
            "root.querySelectorAll('.msg-customer strong').length"
        )
        .await
            == 0
    );

    // A human agent's message shows their name; a system notice looks different.
    post_staff_message(&app, "agent", Some("Dana <script>"), "<b>Dana</b> here").await;
    post_staff_message(&app, "system", None, "Dana joined the conversation").await;
    assert_eq!(
        widget_text(&page, ".msg-agent .author").await,
        "Dana <script>"
    );
    assert_eq!(
        widget_text(&page, ".msg-agent .text").await,
        "<b>Dana</b> here"
    );
    widget_text(&page, ".msg-system").await;
    let styles = in_widget(
        &page,
        "[root.querySelector('.msg-system'), root.querySelector('.msg-assistant')].map(el => getComputedStyle(el).fontStyle + ' ' + getComputedStyle(el).alignSelf)",
    )
    .await;
    assert_eq!(styles, json!(["italic center", "normal flex-start"]));

    for selector in ["img", "script", "b"] {
        assert_eq!(count_in_widget(&page, selector).await, 0, "{selector}");
    }
    assert_eq!(
        eval(&page, "document.querySelectorAll('img, b').length").await,
        0
    );
    assert_eq!(eval(&page, "window.alerts").await, 0);
}

#[tokio::test]
async fn a_wrong_user_hash_is_refused_and_the_console_says_so() {
    let site = CustomerSite::start().await;
    let app = helpline_for(
        &site,
        TestOptions::default(),
        &[("HELPLINE_IDENTITY_SECRET", IDENTITY_SECRET)],
    )
    .await;
    let wrong = user_hash(b"not the secret", "customer-1234");
    let url = site.shop_page(
        "/",
        &app,
        json!({ "user_id": "customer-1234", "user_hash": wrong }),
    );
    let browser = TestBrowser::launch().await;
    let page = browser.open("about:blank").await;
    let mut console = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .unwrap();
    page.goto(url).await.unwrap();

    let error = tokio::time::timeout(PATIENCE, async {
        while let Some(call) = console.next().await {
            if call.r#type == ConsoleApiCalledType::Error {
                return call
                    .args
                    .iter()
                    .filter_map(|a| a.value.as_ref().and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
        panic!("console events ended");
    })
    .await
    .expect("console.error in time");
    assert!(error.contains("invalid_user_hash"), "{error}");

    widget_until(
        &page,
        "root => root.querySelector('.hl[data-conn=blocked]')",
    )
    .await;
    in_widget(&page, "root.querySelector('.launcher').click()").await;
    let notice = widget_text(&page, ".notice").await;
    assert!(notice.contains("could not prove who you are"), "{notice}");
    assert_eq!(app.count("SELECT count(*) FROM visitors").await, 0);
}

#[tokio::test]
async fn a_verified_user_sees_one_conversation_on_two_devices() {
    let site = CustomerSite::start().await;
    let app = helpline_for(
        &site,
        TestOptions::default(),
        &[("HELPLINE_IDENTITY_SECRET", IDENTITY_SECRET)],
    )
    .await;
    let hash = user_hash(IDENTITY_SECRET.as_bytes(), "customer-1234");
    let url = site.shop_page(
        "/account",
        &app,
        json!({ "user_id": "customer-1234", "user_hash": hash }),
    );

    let laptop = TestBrowser::launch().await;
    let on_laptop = laptop.open(&url).await;
    open_widget(&on_laptop).await;
    send_in_widget(&on_laptop, "How do refunds work?").await;
    until_count(&on_laptop, ".msg-assistant", 1).await;

    // Another browser profile: nothing in its localStorage.
    let phone = TestBrowser::launch().await;
    let on_phone = phone.open(&url).await;
    open_widget(&on_phone).await;
    until_count(&on_phone, "li.msg", 2).await;
    assert_eq!(
        widget_text(&on_phone, ".msg-customer .text").await,
        "How do refunds work?"
    );
    assert_eq!(app.count("SELECT count(*) FROM visitors").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM conversations").await, 1);
}

#[tokio::test]
async fn screenshots_of_the_open_widget_on_desktop_and_phone() {
    let site = CustomerSite::start().await;
    let app = helpline_for(&site, TestOptions::default(), &[]).await;
    let url = site.shop_page("/", &app, json!({ "title": "Acme support" }));
    let browser = TestBrowser::launch().await;
    let page = browser.open(&url).await;
    page.emulate_media_features(vec![
        chromiumoxide::cdp::browser_protocol::emulation::MediaFeature::new(
            "prefers-reduced-motion",
            "reduce",
        ),
    ])
    .await
    .unwrap();
    open_widget(&page).await;
    send_in_widget(&page, "How long does shipping take?").await;
    until_count(&page, ".msg-assistant", 1).await;
    post_staff_message(&app, "system", None, "Dana joined the conversation").await;
    post_staff_message(
        &app,
        "agent",
        Some("Dana"),
        "Hi, I'm Dana from Acme. Your order left our warehouse this morning.",
    )
    .await;
    until_count(&page, "li.msg", 4).await;
    send_in_widget(&page, "Great, thank you!").await;
    until_count(&page, ".msg-assistant", 2).await;

    for (name, width, height, mobile) in [
        ("widget-desktop", 1280, 800, false),
        ("widget-phone", 360, 740, true),
    ] {
        let path = screenshot(&page, name, width, height, mobile).await;
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 10_000, "{} is only {size} bytes", path.display());
    }
    // On a phone the open chat fills the screen.
    let panel = in_widget(
        &page,
        "(r => [r.width, r.height])(root.querySelector('.panel').getBoundingClientRect())",
    )
    .await;
    assert_eq!(panel, json!([360, 740]));
}

#[tokio::test]
async fn options_come_from_data_attributes_and_helpline_settings_wins() {
    let site = CustomerSite::start().await;
    let app = helpline_for(&site, TestOptions::default(), &[]).await;
    let url = site.shop_page_with(
        "/",
        &app,
        json!({ "title": "Aide Acme" }),
        r##"data-title="ignored" data-color="#fde047" data-position="left" data-language="fr" data-greeting="Bonjour, une question ?""##,
    );
    let browser = TestBrowser::launch().await;
    let page = browser.open(&url).await;
    open_widget(&page).await;

    assert_eq!(widget_text(&page, "h2").await, "Aide Acme");
    assert_eq!(
        widget_text(&page, ".greeting").await,
        "Bonjour, une question ?"
    );
    assert_eq!(
        in_widget(
            &page,
            "root.querySelector('.close').getAttribute('aria-label')"
        )
        .await,
        "Fermer le chat"
    );
    // On the left, in yellow with dark text (white would be unreadable).
    let launcher = in_widget(
        &page,
        "(s => [s.backgroundColor, s.color])(getComputedStyle(root.querySelector('.launcher')))",
    )
    .await;
    assert_eq!(launcher, json!(["rgb(253, 224, 71)", "rgb(17, 17, 17)"]));
    let left = in_widget(
        &page,
        "root.querySelector('.launcher').getBoundingClientRect().left",
    )
    .await;
    assert!(left.as_f64().unwrap() < 100.0, "{left}");
}
