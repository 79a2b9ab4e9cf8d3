//! `helpline doctor`: checks a configuration against the world and says, in
//! plain words, what to fix. Nothing is changed: no migration is applied,
//! no private cluster is started.

use std::{fmt, time::Duration};

use serde_json::Value;

use crate::{
    config::Config,
    storage::{self, ops},
    webhooks::HANDLED_EVENTS,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    /// Works, but not as production should.
    Warn,
    /// Helpline will not work until this is fixed.
    Fail,
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok  ",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: CheckResult,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
    /// What to paste into OpenAI.
    pub webhook_url: String,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != CheckResult::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "  {}  {}: {}", c.verdict, c.name, c.detail)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "In the OpenAI dashboard (project settings, Webhooks), add an endpoint:"
        )?;
        writeln!(f, "  webhook URL: {}", self.webhook_url)?;
        writeln!(f, "  events to select: {}", HANDLED_EVENTS.join(", "))?;
        writeln!(
            f,
            "  then set OPENAI_WEBHOOK_SECRET to the whsec_… secret OpenAI shows for it."
        )?;
        if self.healthy() {
            write!(f, "Everything checked is in order.")
        } else {
            write!(
                f,
                "Fix the FAIL lines above, then run helpline doctor again."
            )
        }
    }
}

/// Runs every check.
pub async fn run(config: &Config) -> Report {
    let webhook_url = format!("{}/api/webhooks/openai", config.public_url(config.bind));
    let checks = vec![
        database(config).await,
        openai(config).await,
        webhook_secret(config),
        public_url(config, &webhook_url).await,
    ];
    Report {
        checks,
        webhook_url,
    }
}

fn check(name: &'static str, verdict: CheckResult, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
    }
}

async fn database(config: &Config) -> Check {
    let name = "database";
    let Some(url) = &config.database.url else {
        return check(
            name,
            CheckResult::Warn,
            format!(
                "DATABASE_URL is not set: Helpline runs its own private PostgreSQL in {} \
                 (fine to try it out; set DATABASE_URL to your server in production)",
                config.database.data_dir.display()
            ),
        );
    };
    let pool = match tokio::time::timeout(TIMEOUT, storage::connect(url.expose(), 1)).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => {
            return check(
                name,
                CheckResult::Fail,
                format!("cannot connect to DATABASE_URL ({e}): is PostgreSQL running there, and are the host, port, user and password right?"),
            )
        }
        Err(_) => {
            return check(
                name,
                CheckResult::Fail,
                "DATABASE_URL did not answer within 10 seconds: check the host and port, and any firewall",
            )
        }
    };
    let status = ops::migration_status(&pool).await;
    pool.close().await;
    match status {
        Err(e) => check(
            name,
            CheckResult::Fail,
            format!("connected, but cannot read the migrations table: {e}"),
        ),
        Ok(s) if !s.changed.is_empty() => check(
            name,
            CheckResult::Fail,
            format!(
                "migrations applied to this database differ from this version's files ({}): \
                 the database was set up by a different build of Helpline",
                s.changed.join(", ")
            ),
        ),
        Ok(s) if !s.pending.is_empty() => check(
            name,
            CheckResult::Fail,
            format!(
                "reachable, but {} migration(s) not applied yet ({}): start this version of \
                 Helpline once, it applies them at start-up",
                s.pending.len(),
                s.pending.join(", ")
            ),
        ),
        Ok(s) if !s.unknown.is_empty() => check(
            name,
            CheckResult::Warn,
            format!(
                "reachable and migrated, but by a newer Helpline too (versions {:?}): \
                 upgrade this binary",
                s.unknown
            ),
        ),
        Ok(_) => check(name, CheckResult::Ok, "reachable, every migration applied"),
    }
}

async fn openai(config: &Config) -> Check {
    let name = "OpenAI";
    let Some(openai) = &config.openai else {
        return check(
            name,
            CheckResult::Warn,
            "OPENAI_API_KEY is not set: demo mode, the built-in simulator answers customers",
        );
    };
    let url = format!("{}/models", openai.base_url);
    let answer = http()
        .get(&url)
        .bearer_auth(openai.api_key.expose())
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            return check(
                name,
                CheckResult::Fail,
                format!(
                "cannot reach {} ({}): check OPENAI_BASE_URL and this machine's outgoing network",
                openai.base_url,
                without_url(e)
            ),
            )
        }
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
    if status == 401 {
        return check(
            name,
            CheckResult::Fail,
            format!("OpenAI refused the API key (401 {message}): check OPENAI_API_KEY"),
        );
    }
    if !status.is_success() {
        return check(
            name,
            CheckResult::Fail,
            format!(
                "GET {url} answered {status} {message}: check OPENAI_BASE_URL and the key's permissions"
            ),
        );
    }
    let models: Vec<&str> = body["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    let model = &config.ai.model;
    if models.iter().any(|m| m == model) {
        check(
            name,
            CheckResult::Ok,
            format!("the API key works, and model {model} is available"),
        )
    } else {
        check(
            name,
            CheckResult::Warn,
            format!(
                "the API key works, but model {model} is not among the {} models it can list: \
                 check HELPLINE_MODEL",
                models.len()
            ),
        )
    }
}

fn webhook_secret(config: &Config) -> Check {
    let name = "webhook secret";
    match &config.openai {
        None => check(
            name,
            CheckResult::Ok,
            "demo mode: a fresh secret is shared with the built-in simulator at start-up",
        ),
        Some(o) if o.webhook_secrets.len() > 1 => check(
            name,
            CheckResult::Ok,
            format!(
                "{} secrets parse: a rotation is in progress; remove the old one once OpenAI no longer signs with it",
                o.webhook_secrets.len()
            ),
        ),
        Some(_) => check(name, CheckResult::Ok, "parses (whsec_…)"),
    }
}

async fn public_url(config: &Config, webhook_url: &str) -> Check {
    let name = "public URL";
    if config.public_url.is_none() {
        let verdict = if config.openai.is_some() {
            CheckResult::Fail
        } else {
            CheckResult::Warn
        };
        return check(
            name,
            verdict,
            format!(
                "HELPLINE_PUBLIC_URL is not set, so the webhook URL would be {webhook_url}, \
                 which OpenAI cannot reach: set it to the https:// address of this server"
            ),
        );
    }
    // Unsigned on purpose: Helpline, and only Helpline, answers 400 missing_header.
    let answer = http()
        .post(webhook_url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            return check(
                name,
                CheckResult::Fail,
                format!(
                    "{webhook_url} cannot be reached from here ({}): check DNS, the proxy and the firewall",
                    without_url(e)
                ),
            )
        }
    };
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        return check(
            name,
            CheckResult::Fail,
            format!("{webhook_url} redirects ({status}) to {to}; OpenAI does not follow redirects: use the final address"),
        );
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 400 && body["error"]["code"] == "missing_header" {
        check(
            name,
            CheckResult::Ok,
            format!("{webhook_url} reaches Helpline from outside"),
        )
    } else {
        check(
            name,
            CheckResult::Fail,
            format!(
                "{webhook_url} answered {status}, not Helpline's 400 missing_header: \
                 does the proxy forward /api/webhooks/openai to Helpline?"
            ),
        )
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client builds")
}

/// reqwest's message without the URL it names (the caller names it).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
