//! A real browser (Debian's headless Chromium) against a running Helpline.

use std::path::PathBuf;

use chromiumoxide::{browser::BrowserConfig, Browser, Page};
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

/// Resolves with the text of the first element matching `selector`, as soon
/// as it exists (a MutationObserver, not a poll).
pub async fn text_of(page: &Page, selector: &str) -> String {
    let script = format!(
        r#"new Promise(resolve => {{
            const found = () => {{
                const el = document.querySelector({selector});
                if (el) {{ resolve(el.textContent); return true; }}
                return false;
            }};
            if (!found()) {{
                const observer = new MutationObserver(() => {{ if (found()) observer.disconnect(); }});
                observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
            }}
        }})"#,
        selector = serde_json::to_string(selector).unwrap()
    );
    eval(page, &script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_person_can_chat_on_the_demo_page() {
    let app = spawn_app().await;
    let browser = TestBrowser::launch().await;
    let page = browser.open(&format!("{}/", app.base_url)).await;
    text_of(&page, "#conn[data-state=ok]").await;

    let input = page.find_element("#input").await.unwrap();
    input.click().await.unwrap();
    input
        .type_str("How long does shipping take?")
        .await
        .unwrap();
    input.press_key("Enter").await.unwrap();

    let reply = text_of(&page, ".msg-assistant .text").await;
    assert!(reply.starts_with("Orders ship"), "{reply}");
    let mine = text_of(&page, ".msg-customer:not(.pending) .text").await;
    assert_eq!(mine, "How long does shipping take?");

    // A reload shows the same history, from the server.
    page.reload().await.unwrap();
    let after_reload = text_of(&page, ".msg-assistant .text").await;
    assert_eq!(after_reload, reply);
    assert_eq!(
        eval(&page, "document.querySelectorAll('.msg').length").await,
        2
    );
}
