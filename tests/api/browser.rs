//! A real browser (Debian's headless Chromium) against a running Helpline.

use std::path::{Path, PathBuf};

use chromiumoxide::{
    browser::BrowserConfig,
    cdp::browser_protocol::{
        emulation::SetDeviceMetricsOverrideParams,
        input::InsertTextParams,
        network::{
            EmulateNetworkConditionsByRuleParams, NetworkConditions, OverrideNetworkStateParams,
        },
    },
    page::ScreenshotParams,
    Browser, Page,
};
use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{spawn_app, PATIENCE};

/// A headless Chromium with a fresh profile, closed when dropped.
pub struct TestBrowser {
    browser: Browser,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

impl TestBrowser {
    pub async fn launch() -> Self {
        let profile = TempDir(std::env::temp_dir().join(format!(
            "helpline-chromium-{}",
            uuid::Uuid::new_v4().simple()
        )));
        let config = BrowserConfig::builder()
            .chrome_executable(chromium_path())
            .user_data_dir(&profile.0)
            .no_sandbox()
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.unwrap_or_else(|e| {
            panic!(
                "launch {} (apt-get install chromium): {e}",
                chromium_path().display()
            )
        });
        tokio::spawn(async move { while handler.next().await.is_some() {} });
        Self {
            browser,
            _profile: profile,
        }
    }

    pub async fn open(&self, url: &str) -> Page {
        let page = self.browser.new_page(url).await.expect("open page");
        page.wait_for_navigation().await.expect("page loads");
        page
    }
}

/// Evaluates `expression` (which may be a promise) and returns its value.
pub async fn eval(page: &Page, expression: &str) -> Value {
    let result = tokio::time::timeout(PATIENCE, page.evaluate(expression))
        .await
        .unwrap_or_else(|_| panic!("in time: {expression}"))
        .unwrap_or_else(|e| panic!("{expression}: {e}"));
    result.value().cloned().unwrap_or(Value::Null)
}

/// Resolves with the first truthy value of `condition`, a JavaScript
/// function of the widget's shadow root, checked again on every change in
/// the page and in the widget (a MutationObserver, not a poll).
pub async fn widget_until(page: &Page, condition: &str) -> Value {
    let script = format!(
        r#"new Promise(resolve => {{
            const condition = {condition};
            let watching = null;
            const observer = new MutationObserver(check);
            function check() {{
                const host = document.querySelector('helpline-widget');
                const root = host && host.shadowRoot;
                if (!root) return;
                if (watching !== root) {{
                    watching = root;
                    observer.observe(root, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                }}
                const value = condition(root);
                if (value) {{ observer.disconnect(); resolve(value); }}
            }}
            observer.observe(document, {{ subtree: true, childList: true }});
            check();
        }})"#
    );
    eval(page, &script).await
}

/// The text of the first element in the widget matching `selector`, as soon
/// as there is one with some text.
pub async fn widget_text(page: &Page, selector: &str) -> String {
    let condition = format!(
        "root => {{ const el = root.querySelector({}); return el && el.textContent; }}",
        serde_json::to_string(selector).unwrap()
    );
    widget_until(page, &condition)
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Evaluates `expression` with `root` bound to the widget's shadow root.
pub async fn in_widget(page: &Page, expression: &str) -> Value {
    eval(
        page,
        &format!("(root => ({expression}))(document.querySelector('helpline-widget').shadowRoot)"),
    )
    .await
}

/// Presses a key in whatever has the focus, as a person would.
pub async fn press(page: &Page, key: &str) {
    page.find_element("body")
        .await
        .unwrap()
        .press_key(key)
        .await
        .unwrap();
}

/// Types a message in the widget's box and presses Enter.
pub async fn send_in_widget(page: &Page, text: &str) {
    in_widget(page, "root.querySelector('textarea').focus()").await;
    page.execute(InsertTextParams::new(text)).await.unwrap();
    press(page, "Enter").await;
}

/// Clicks the launcher and waits until the panel is open and connected.
pub async fn open_widget(page: &Page) {
    widget_until(page, "root => root.querySelector('.launcher')").await;
    in_widget(page, "root.querySelector('.launcher').click()").await;
    widget_connected(page).await;
}

pub async fn widget_connected(page: &Page) {
    widget_until(page, "root => root.querySelector('.hl[data-conn=open]')").await;
}

/// Writes a PNG of the page at `width`x`height` to `target/screenshots/`.
pub async fn screenshot(page: &Page, name: &str, width: i64, height: i64, mobile: bool) -> PathBuf {
    page.execute(SetDeviceMetricsOverrideParams::new(
        width, height, 1.0, mobile,
    ))
    .await
    .unwrap();
    // Two frames: the new layout is painted.
    eval(
        page,
        "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
    )
    .await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/")
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().build(), &path)
        .await
        .unwrap();
    path
}

#[tokio::test]
async fn a_person_can_chat_on_the_demo_page() {
    let app = spawn_app().await;
    let browser = TestBrowser::launch().await;
    let page = browser.open(&format!("{}/", app.base_url)).await;
    // The demo page embeds the widget as any customer site does.
    assert_eq!(
        eval(
            &page,
            "document.querySelectorAll('script[src$=\"/widget.js\"]').length"
        )
        .await,
        1
    );
    open_widget(&page).await;

    send_in_widget(&page, "How long does shipping take?").await;
    let reply = widget_text(&page, ".msg-assistant .text").await;
    assert!(reply.starts_with("Orders ship"), "{reply}");
    let mine = widget_text(&page, ".msg-customer:not(.pending) .text").await;
    assert_eq!(mine, "How long does shipping take?");

    // A reload shows the same history, from the server, in the open panel.
    page.reload().await.unwrap();
    let after_reload = widget_text(&page, ".msg-assistant .text").await;
    assert_eq!(after_reload, reply);
    assert_eq!(
        in_widget(&page, "root.querySelectorAll('li.msg').length").await,
        2
    );
    assert_eq!(
        in_widget(&page, "root.querySelector('.panel').hidden").await,
        false
    );
}

/// DevTools' offline mode: connections fail, and the page is told
/// (`navigator.onLine`, `offline`/`online` events) as on a real network loss.
pub async fn set_offline(page: &Page, offline: bool) {
    let everything = NetworkConditions::new("", 0, -1, -1);
    page.execute(EmulateNetworkConditionsByRuleParams::new(
        offline,
        vec![everything],
    ))
    .await
    .unwrap();
    page.execute(OverrideNetworkStateParams::new(offline, 0, -1, -1))
        .await
        .unwrap();
}
