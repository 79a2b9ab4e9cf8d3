//! The agent console (`/agent/`) in a real headless Chromium: signing in, the
//! live conversation list, taking over and replying, and customer markup
//! that stays text.

use chromiumoxide::{cdp::browser_protocol::input::InsertTextParams, Page};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    browser::{eval, press, screenshot, set_offline, TestBrowser},
    helpers::{spawn_app, ChatSocket, TestApp},
};

const EMAIL: &str = "dana@example.com";
const PASSWORD: &str = "a long enough password";
const HANDOFF_NOTICE: &str = "I'm passing you to a person from our team";

fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Resolves with the first truthy value of `condition`, a JavaScript
/// function of no arguments, checked again on every change in the page (a
/// MutationObserver, not a poll).
async fn until(page: &Page, condition: &str) -> Value {
    let script = format!(
        r#"new Promise(resolve => {{
            const condition = {condition};
            const observer = new MutationObserver(check);
            function check() {{
                let value;
                try {{ value = condition(); }} catch (e) {{ value = null; }}
                if (value) {{ observer.disconnect(); resolve(value); }}
            }}
            observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
            check();
        }})"#
    );
    eval(page, &script).await
}

/// The text of the first element matching `selector`, once it has some.
async fn text_of(page: &Page, selector: &str) -> String {
    let condition = format!(
        "() => {{ const el = document.querySelector({}); return el && el.textContent; }}",
        js(selector)
    );
    until(page, &condition).await.as_str().unwrap().to_owned()
}

/// Waits until `selector` matches exactly `n` elements.
async fn until_count(page: &Page, selector: &str, n: usize) {
    let condition = format!(
        "() => document.querySelectorAll({}).length === {n}",
        js(selector)
    );
    until(page, &condition).await;
}

/// Clicks the element matching `selector` as soon as it is there and enabled.
async fn click(page: &Page, selector: &str) {
    let condition = format!(
        "() => {{ const el = document.querySelector({}); return el && !el.disabled && el.offsetParent !== null && (el.click(), true); }}",
        js(selector)
    );
    until(page, &condition).await;
}

/// Types `text` into the field `selector` as a keyboard would.
async fn type_into(page: &Page, selector: &str, text: &str) {
    eval(
        page,
        &format!("document.querySelector({}).focus()", js(selector)),
    )
    .await;
    page.execute(InsertTextParams::new(text)).await.unwrap();
}

/// The row of the conversation `id` in the list.
fn row(id: Uuid) -> String {
    format!("#conversations li.conv[data-id='{id}']")
}

async fn add_agent(app: &TestApp, email: &str, name: &str) {
    helpline::admin::add_agent(&app.pool, email, name, Some(PASSWORD.into()))
        .await
        .expect("add agent");
}

/// Opens the console and signs in with the keyboard; returns once the live
/// feed is connected.
async fn sign_in(browser: &TestBrowser, app: &TestApp, password: &str) -> Page {
    let page = browser.open(&format!("{}/agent/", app.base_url)).await;
    until(
        &page,
        "() => !document.querySelector('#signin-view').hidden",
    )
    .await;
    type_into(&page, "#email", EMAIL).await;
    type_into(&page, "#password", password).await;
    press(&page, "Enter").await;
    page
}

async fn signed_in(page: &Page) {
    until(page, "() => document.body.dataset.conn === 'open'").await;
}

/// A new customer who says `text` and waits for the AI's answer (or the
/// handoff notice); returns the socket and the conversation's id.
async fn customer_says(app: &TestApp, text: &str) -> (ChatSocket, Uuid, String) {
    let visitor = app.new_visitor().await;
    let mut socket = app.connect(&visitor, None).await;
    socket.send_message(&Uuid::new_v4().to_string(), text).await;
    let answer = socket
        .next_where("an answer", |f| {
            f["type"] == "message" && (f["role"] == "assistant" || f["role"] == "system")
        })
        .await;
    let id: Uuid = sqlx::query_scalar("SELECT conversation_id FROM messages WHERE body = $1")
        .bind(text)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (socket, id, answer["text"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_agent_sees_a_new_conversation_live_takes_over_and_replies() {
    let app = spawn_app().await;
    add_agent(&app, EMAIL, "Dana").await;
    let browser = TestBrowser::launch().await;

    // A wrong password is refused plainly.
    let page = sign_in(&browser, &app, "not the password").await;
    assert_eq!(
        text_of(&page, "#signin-error").await,
        "Wrong email or password"
    );
    screenshot(&page, "agent-signin", 1280, 800, false).await;
    eval(&page, "document.querySelector('#password').value = ''").await;
    type_into(&page, "#password", PASSWORD).await;
    press(&page, "Enter").await;
    signed_in(&page).await;
    assert_eq!(text_of(&page, "#me-name").await, "Dana");
    assert_eq!(text_of(&page, "#list-empty").await, "No conversations yet.");
    // Set on this page only: still there at the end, so nothing reloaded.
    eval(&page, "window.sameDocument = true").await;

    // A customer writes while the console is open; the AI answers.
    let (mut customer, id, answer) = customer_says(&app, "Where is my parcel?").await;
    let conv = row(id);
    until_count(&page, "#conversations li.conv", 1).await;
    assert_eq!(
        text_of(&page, &format!("{conv} .badge")).await,
        "Bot",
        "a new conversation is the AI's"
    );
    let preview = format!("AI assistant: {answer}");
    until(
        &page,
        &format!(
            "() => document.querySelector({}).textContent === {}",
            js(&format!("{conv} .preview")),
            js(&preview)
        ),
    )
    .await;
    assert_eq!(text_of(&page, &format!("{conv} .unread")).await, "1");
    assert!(text_of(&page, &format!("{conv} .who"))
        .await
        .starts_with("Visitor "));

    // Opening it shows the transcript and reads it.
    click(&page, &format!("{conv} .conv-open")).await;
    assert_eq!(
        text_of(&page, "#transcript .role-customer .text").await,
        "Where is my parcel?"
    );
    assert_eq!(
        text_of(&page, "#transcript .role-assistant .text").await,
        answer
    );
    until_count(&page, &format!("{conv} .unread"), 0).await;
    assert_eq!(
        eval(&page, "document.querySelector('#handback').disabled").await,
        true
    );

    // Take over: the state changes live, the event shows who did it.
    click(&page, "#takeover").await;
    until(
        &page,
        "() => document.querySelector('#detail-state').textContent === 'Human'",
    )
    .await;
    assert_eq!(
        text_of(&page, "#transcript .role-event .text").await,
        "Dana took over from the AI"
    );
    assert!(text_of(&page, "#transcript .role-event .meta")
        .await
        .contains("internal"));
    assert_eq!(text_of(&page, &format!("{conv} .badge")).await, "Human");
    assert_eq!(
        eval(
            &page,
            "['#takeover', '#handback', '#resolve', '#reopen'].map(s => document.querySelector(s).disabled)"
        )
        .await,
        serde_json::json!([true, false, false, true])
    );

    // The agent's reply reaches the customer with the agent's name.
    type_into(
        &page,
        "#compose-text",
        "Hi, I'm Dana. Let me check that for you.",
    )
    .await;
    press(&page, "Enter").await;
    let reply = customer.next_from("agent").await;
    assert_eq!(reply["text"], "Hi, I'm Dana. Let me check that for you.");
    assert_eq!(reply["author"], "Dana");
    assert_eq!(
        text_of(&page, "#transcript .role-agent .author").await,
        "Dana"
    );
    // The box empties once the server has stored the reply.
    until(
        &page,
        "() => document.querySelector('#compose-text').value === ''",
    )
    .await;

    // The customer writes again: the console shows it live, and only the
    // agent answers it.
    customer
        .send_message("after-takeover", "Thanks! It was due on Monday.")
        .await;
    until(
        &page,
        "() => [...document.querySelectorAll('#transcript .role-customer .text')].some(el => el.textContent === 'Thanks! It was due on Monday.')",
    )
    .await;
    type_into(&page, "#compose-text", "It arrives tomorrow morning.").await;
    click(&page, "#send").await;
    let frames = customer
        .frames_until(|f| f["type"] == "message" && f["text"] == "It arrives tomorrow morning.")
        .await;
    assert!(
        frames.iter().all(|f| f["role"] != "assistant"
            && !(f["type"] == "status" && f["assistant"] == "thinking")),
        "the AI stays silent after a takeover: {frames:?}"
    );
    assert_eq!(frames.last().unwrap()["author"], "Dana");
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM turns").await, 1);

    // Everything once, in order.
    until_count(&page, "#transcript li.item", 6).await;
    let roles = eval(
        &page,
        "[...document.querySelectorAll('#transcript li.item')].map(li => li.dataset.seq + ' ' + li.className)",
    )
    .await;
    assert_eq!(
        roles,
        serde_json::json!([
            "1 item role-customer",
            "2 item role-assistant",
            "3 item role-event internal",
            "4 item role-agent",
            "5 item role-customer",
            "6 item role-agent"
        ])
    );
    assert_eq!(eval(&page, "window.sameDocument").await, true);
}

#[tokio::test]
async fn customer_markup_shows_as_text_in_the_console() {
    let app = spawn_app().await;
    add_agent(&app, EMAIL, "Dana <i>").await;
    let browser = TestBrowser::launch().await;
    let page = sign_in(&browser, &app, PASSWORD).await;
    signed_in(&page).await;
    eval(
        &page,
        "window.alerts = 0; window.alert = () => { window.alerts += 1; }; window.onerror = () => { window.alerts += 100; }; document.addEventListener('securitypolicyviolation', () => { window.alerts += 1000; })",
    )
    .await;

    let payload = "<img src=x onerror=alert(1)>";
    let (_customer, id, answer) = customer_says(&app, payload).await;
    // The simulator quotes questions it does not know.
    assert!(answer.contains(payload), "{answer}");
    let conv = row(id);
    until(
        &page,
        &format!(
            "() => document.querySelector({}).textContent.includes('AI assistant')",
            js(&format!("{conv} .preview"))
        ),
    )
    .await;
    click(&page, &format!("{conv} .conv-open")).await;
    assert_eq!(
        text_of(&page, "#transcript .role-customer .text").await,
        payload
    );
    assert_eq!(
        text_of(&page, "#transcript .role-assistant .text").await,
        answer
    );

    // An agent's name, note and reply with markup stay text too.
    eval(&page, "document.querySelector('input[value=note]').click()").await;
    type_into(
        &page,
        "#compose-text",
        "<b>check</b> the <script>order</script>",
    )
    .await;
    press(&page, "Enter").await;
    assert_eq!(
        text_of(&page, "#transcript .role-note .text").await,
        "<b>check</b> the <script>order</script>"
    );
    assert_eq!(
        text_of(&page, "#transcript .role-note .author").await,
        "Dana <i>"
    );
    assert!(text_of(&page, "#transcript .role-note .tag")
        .await
        .contains("not sent to customer"));

    assert_eq!(
        eval(&page, "document.querySelectorAll('img, b, i').length").await,
        0
    );
    assert_eq!(
        eval(&page, "document.querySelectorAll('script').length").await,
        1
    );
    assert_eq!(
        eval(
            &page,
            "[...document.querySelectorAll('#transcript *, #conversations *')].every(el => ['LI', 'DIV', 'SPAN', 'P', 'TIME', 'BUTTON'].includes(el.tagName))",
        )
        .await,
        true
    );
    assert_eq!(eval(&page, "window.alerts").await, 0);
}

#[tokio::test]
async fn a_handoff_from_the_ai_goes_to_the_top_of_the_list_live() {
    let app = spawn_app().await;
    add_agent(&app, EMAIL, "Dana").await;
    let browser = TestBrowser::launch().await;
    let page = sign_in(&browser, &app, PASSWORD).await;
    signed_in(&page).await;

    let (_a, shipping, _) = customer_says(&app, "How long does shipping take?").await;
    let (_b, returns, _) = customer_says(&app, "Can I return boots that do not fit?").await;
    until_count(&page, "#conversations li.conv", 2).await;
    let order = "[...document.querySelectorAll('#conversations li.conv')].map(li => li.dataset.id)";
    until(
        &page,
        &format!(
            "() => document.querySelector('#conversations li.conv').dataset.id === '{returns}'"
        ),
    )
    .await;

    // The AI hands over: the conversation jumps to the top, marked urgent.
    let (_c, person, notice) = customer_says(&app, "I want to talk to a human, please").await;
    assert!(notice.starts_with(HANDOFF_NOTICE), "{notice}");
    until(
        &page,
        &format!(
            "() => {{ const li = document.querySelector('#conversations li.conv'); return li.dataset.id === '{person}' && li.dataset.state === 'needs_human'; }}"
        ),
    )
    .await;
    assert_eq!(
        text_of(&page, &format!("{} .badge", row(person))).await,
        "Needs human"
    );
    assert_eq!(
        eval(&page, order).await,
        serde_json::json!([person, returns, shipping])
    );
    let urgent = eval(
        &page,
        &format!(
            "getComputedStyle(document.querySelector({})).backgroundColor",
            js(&format!("{} .badge", row(person)))
        ),
    )
    .await;
    assert_ne!(
        urgent,
        eval(
            &page,
            &format!(
                "getComputedStyle(document.querySelector({})).backgroundColor",
                js(&format!("{} .badge", row(returns)))
            )
        )
        .await
    );

    // Filters and search ask the server.
    click(&page, ".filter[data-state=needs_human]").await;
    until_count(&page, "#conversations li.conv", 1).await;
    click(&page, ".filter[data-state='']").await;
    until_count(&page, "#conversations li.conv", 3).await;
    type_into(&page, "#search", "boots").await;
    until_count(&page, "#conversations li.conv", 1).await;
    assert_eq!(eval(&page, order).await, serde_json::json!([returns]));
    eval(
        &page,
        "(s => { s.value = ''; s.dispatchEvent(new Event('input')); })(document.querySelector('#search'))",
    )
    .await;
    until_count(&page, "#conversations li.conv", 3).await;

    // Resolve one, step into the handoff with a note and a reply.
    click(&page, &format!("{} .conv-open", row(shipping))).await;
    click(&page, "#resolve").await;
    until(
        &page,
        &format!(
            "() => document.querySelector({}).dataset.state === 'resolved'",
            js(&row(shipping))
        ),
    )
    .await;
    assert_eq!(
        eval(&page, "document.querySelector('#send').disabled").await,
        true
    );

    click(&page, &format!("{} .conv-open", row(person))).await;
    text_of(&page, "#transcript .role-system .text").await;
    assert!(text_of(&page, "#transcript .role-event .text")
        .await
        .starts_with("The AI asked for a person"));
    eval(&page, "document.querySelector('input[value=note]').click()").await;
    type_into(
        &page,
        "#compose-text",
        "Customer asked for a person; order A-1234 is delayed at the depot.",
    )
    .await;
    press(&page, "Enter").await;
    text_of(&page, "#transcript .role-note .text").await;
    eval(
        &page,
        "document.querySelector('input[value=reply]').click()",
    )
    .await;
    type_into(&page, "#compose-text", "Hi, I'm Dana from the support team. I can see your order is delayed at our depot; I'll make sure it goes out today.").await;
    press(&page, "Enter").await;
    until(
        &page,
        "() => document.querySelector('#detail-state').textContent === 'Human'",
    )
    .await;
    text_of(&page, "#transcript .role-agent .text").await;

    // Someone else needs a person meanwhile: unread, urgent, on top.
    let (_d, other, _) = customer_says(&app, "Can a real person call me back?").await;
    until(
        &page,
        &format!(
            "() => {{ const li = document.querySelector('#conversations li.conv'); return li.dataset.id === '{other}' && li.dataset.state === 'needs_human' && li.querySelector('.unread') && li.querySelector('.preview').textContent.startsWith('Notice: '); }}"
        ),
    )
    .await;
    eval(&page, "document.activeElement.blur()").await;
    let path = screenshot(&page, "agent-console", 1280, 800, false).await;
    assert!(std::fs::metadata(&path).unwrap().len() > 10_000);
}

#[tokio::test]
async fn after_a_network_cut_the_console_catches_up_without_duplicates() {
    let app = spawn_app().await;
    add_agent(&app, EMAIL, "Dana").await;
    let browser = TestBrowser::launch().await;
    let page = sign_in(&browser, &app, PASSWORD).await;
    signed_in(&page).await;

    let (mut customer, id, _) = customer_says(&app, "How long does shipping take?").await;
    click(&page, &format!("{} .conv-open", row(id))).await;
    until_count(&page, "#transcript li.item", 2).await;

    set_offline(&page, true).await;
    until(&page, "() => document.body.dataset.conn === 'closed'").await;
    assert_eq!(text_of(&page, "#conn").await, "Offline, reconnecting…");

    // While the console is away: the open conversation goes on, and a new
    // one starts.
    customer
        .send_message("while-away", "And what about returns?")
        .await;
    customer.next_from("assistant").await;
    let (_other, new_id, _) = customer_says(&app, "What are your opening hours?").await;
    assert_eq!(
        eval(
            &page,
            "document.querySelectorAll('#transcript li.item').length"
        )
        .await,
        2
    );

    // Back online: the feed reconnects, the transcript resumes after the last
    // seq it showed, and the list is fetched again.
    set_offline(&page, false).await;
    until(&page, "() => document.body.dataset.conn === 'open'").await;
    until_count(&page, "#transcript li.item", 4).await;
    until_count(&page, "#conversations li.conv", 2).await;
    let seqs = eval(
        &page,
        "[...document.querySelectorAll('#transcript li.item')].map(li => li.dataset.seq + ' ' + li.className)",
    )
    .await;
    assert_eq!(
        seqs,
        serde_json::json!([
            "1 item role-customer",
            "2 item role-assistant",
            "3 item role-customer",
            "4 item role-assistant"
        ])
    );
    assert_eq!(
        text_of(&page, &format!("{} .unread", row(new_id))).await,
        "1"
    );
    // The open conversation has been read up to its last item.
    app.wait_until(
        "the console marks the transcript read",
        &format!(
            "SELECT EXISTS (SELECT 1 FROM agent_reads \
             WHERE conversation_id = '{id}' AND read_agent_seq = 4)"
        ),
    )
    .await;
}

#[tokio::test]
async fn sign_in_is_throttled_plainly_and_a_session_survives_a_reload() {
    let app = spawn_app().await;
    add_agent(&app, EMAIL, "Dana").await;
    let browser = TestBrowser::launch().await;

    // `/agent` is the console's address too (its assets are relative to `/agent/`).
    let response = app
        .http
        .get(format!("{}/agent", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/agent/");

    // Someone guesses Dana's password five times.
    for _ in 0..5 {
        let response = app
            .http
            .post(format!("{}/api/agent/login", app.base_url))
            .json(&serde_json::json!({ "email": EMAIL, "password": "guess" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let page = sign_in(&browser, &app, PASSWORD).await;
    assert_eq!(
        text_of(&page, "#signin-error").await,
        "Too many attempts, try again in 15 minutes"
    );

    // Another agent signs in; a reload keeps the session.
    add_agent(&app, "sam@example.com", "Sam").await;
    eval(
        &page,
        "for (const s of ['#email', '#password']) document.querySelector(s).value = ''",
    )
    .await;
    type_into(&page, "#email", "sam@example.com").await;
    type_into(&page, "#password", PASSWORD).await;
    press(&page, "Enter").await;
    signed_in(&page).await;
    page.reload().await.unwrap();
    signed_in(&page).await;
    assert_eq!(text_of(&page, "#me-name").await, "Sam");

    // Signing out ends the session on the server too.
    click(&page, "#logout").await;
    until(
        &page,
        "() => !document.querySelector('#signin-view').hidden",
    )
    .await;
    assert_eq!(
        eval(&page, "fetch('/api/agent/me').then(r => r.status)").await,
        401
    );
    assert_eq!(
        eval(&page, "document.activeElement && document.activeElement.id").await,
        "email"
    );
}
