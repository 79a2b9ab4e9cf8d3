//! Typed configuration, read from the environment and validated at start-up.
//! Every variable is documented, with its default, in `docs/configuration.md`.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use crate::{chat::origins::AllowedOrigins, webhooks::signature::WebhookSecret};

pub const DEFAULT_MODEL: &str = "gpt-4.1-mini";
pub const DEFAULT_INSTRUCTIONS: &str = "You are the customer-support assistant of this company. \
Answer briefly and politely. If you do not know the answer, say so.";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP server listens.
    pub bind: SocketAddr,
    /// The address the outside world (OpenAI, browsers) uses to reach us;
    /// `http://{bind}` when unset.
    pub public_url: Option<String>,
    pub database: DatabaseConfig,
    /// `None` means demo mode: the built-in simulator stands in for OpenAI.
    pub openai: Option<OpenAiConfig>,
    pub ai: AiSettings,
    pub worker: WorkerConfig,
    pub delivery: DeliveryConfig,
    /// Bearer token for the admin API (`/api/admin/...`); disabled when unset.
    pub admin_token: Option<Secret>,
    /// Delay before the built-in simulator (demo mode) finishes a response.
    pub demo_reply_delay: Duration,
    /// Web sites whose pages may embed the widget (`HELPLINE_ALLOWED_ORIGINS`).
    /// The instance's own public URL is added at start-up.
    pub allowed_origins: AllowedOrigins,
    /// Key of the `user_hash` HMAC; `None` disables identity verification.
    pub identity_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None`: run a private PostgreSQL cluster under `data_dir`.
    pub url: Option<Secret>,
    pub data_dir: PathBuf,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    pub api_key: Secret,
    pub base_url: String,
    /// Every secret that may have signed a webhook (two during a rotation).
    pub webhook_secrets: Vec<WebhookSecret>,
}

#[derive(Debug, Clone)]
pub struct AiSettings {
    pub model: String,
    pub instructions: String,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker tasks per instance.
    pub concurrency: usize,
    /// How often idle workers look for due work even without a notification.
    pub poll_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            poll_interval: Duration::from_millis(1000),
        }
    }
}

/// Timeouts, budgets and deadlines of the talk with OpenAI (docs/delivery.md).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Bound on each call to OpenAI.
    pub openai_timeout: Duration,
    /// How long Helpline keeps trying to start a turn before telling the
    /// customer a person will take over.
    pub turn_start_budget: Duration,
    /// A turn in flight this long without its webhook is looked up by the
    /// reconciler (and again every `reconcile_interval`).
    pub reconcile_after: Duration,
    pub reconcile_interval: Duration,
    /// A response still running this long after it started is cancelled and
    /// handled as failed.
    pub response_deadline: Duration,
    /// Processing attempts of a webhook event before it is parked as dead.
    pub event_max_attempts: i32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            openai_timeout: Duration::from_secs(30),
            turn_start_budget: Duration::from_secs(120),
            reconcile_after: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(5),
            response_deadline: Duration::from_secs(600),
            event_max_attempts: 12,
        }
    }
}

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// Reads the environment. All problems are reported at once, one line each.
    pub fn from_env() -> Result<Self, Vec<String>> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();

        let bind = match get("HELPLINE_BIND")
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .parse()
        {
            Ok(addr) => addr,
            Err(_) => {
                problems.push("HELPLINE_BIND must be an address like 127.0.0.1:3000".into());
                SocketAddr::from(([127, 0, 0, 1], 3000))
            }
        };
        let public_url = get("HELPLINE_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!(
                    "HELPLINE_PUBLIC_URL must start with http:// or https:// (got {url:?})"
                ));
            }
        }

        let database = DatabaseConfig {
            url: get("DATABASE_URL").map(Secret::new),
            data_dir: get("HELPLINE_DATA_DIR")
                .unwrap_or_else(|| ".helpline".into())
                .into(),
            max_connections: parse_or(&get, "HELPLINE_DB_MAX_CONNECTIONS", 20, &mut problems),
        };

        let openai = match get("OPENAI_API_KEY") {
            None => None,
            Some(key) => {
                let webhook_secrets = match get("OPENAI_WEBHOOK_SECRET") {
                    None => {
                        problems.push(
                            "OPENAI_WEBHOOK_SECRET is required when OPENAI_API_KEY is set \
                             (copy the whsec_… secret shown when you create the webhook endpoint)"
                                .into(),
                        );
                        Vec::new()
                    }
                    Some(raw) => match WebhookSecret::parse_list(&raw) {
                        Ok(secrets) => secrets,
                        Err(e) => {
                            problems.push(format!("OPENAI_WEBHOOK_SECRET: {e}"));
                            Vec::new()
                        }
                    },
                };
                Some(OpenAiConfig {
                    api_key: Secret::new(key),
                    base_url: get("OPENAI_BASE_URL")
                        .unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.into())
                        .trim_end_matches('/')
                        .to_owned(),
                    webhook_secrets,
                })
            }
        };

        let ai = AiSettings {
            model: get("HELPLINE_MODEL").unwrap_or_else(|| DEFAULT_MODEL.into()),
            instructions: get("HELPLINE_INSTRUCTIONS")
                .unwrap_or_else(|| DEFAULT_INSTRUCTIONS.into()),
        };
        let worker = WorkerConfig {
            concurrency: parse_or(&get, "HELPLINE_WORKERS", 4, &mut problems),
            poll_interval: Duration::from_millis(parse_or(
                &get,
                "HELPLINE_WORKER_POLL_MS",
                1000,
                &mut problems,
            )),
        };
        let ms = |name: &str, default: Duration, problems: &mut Vec<String>| {
            Duration::from_millis(parse_or(&get, name, default.as_millis() as u64, problems))
        };
        let secs = |name: &str, default: Duration, problems: &mut Vec<String>| {
            Duration::from_secs(parse_or(&get, name, default.as_secs(), problems))
        };
        let d = DeliveryConfig::default();
        let delivery = DeliveryConfig {
            openai_timeout: ms(
                "HELPLINE_OPENAI_TIMEOUT_MS",
                d.openai_timeout,
                &mut problems,
            ),
            turn_start_budget: secs(
                "HELPLINE_TURN_START_BUDGET_SECS",
                d.turn_start_budget,
                &mut problems,
            ),
            reconcile_after: ms(
                "HELPLINE_RECONCILE_AFTER_MS",
                d.reconcile_after,
                &mut problems,
            ),
            reconcile_interval: ms(
                "HELPLINE_RECONCILE_INTERVAL_MS",
                d.reconcile_interval,
                &mut problems,
            ),
            response_deadline: secs(
                "HELPLINE_RESPONSE_DEADLINE_SECS",
                d.response_deadline,
                &mut problems,
            ),
            event_max_attempts: parse_or(
                &get,
                "HELPLINE_EVENT_MAX_ATTEMPTS",
                d.event_max_attempts,
                &mut problems,
            ),
        };
        if delivery.openai_timeout.is_zero() {
            problems.push("HELPLINE_OPENAI_TIMEOUT_MS must be at least 1".into());
        }
        let admin_token = get("HELPLINE_ADMIN_TOKEN").map(Secret::new);
        let demo_reply_delay = Duration::from_millis(parse_or(
            &get,
            "HELPLINE_DEMO_REPLY_DELAY_MS",
            400,
            &mut problems,
        ));

        let allowed_origins = match get("HELPLINE_ALLOWED_ORIGINS") {
            None => AllowedOrigins::default(),
            Some(list) => AllowedOrigins::parse(&list).unwrap_or_else(|e| {
                problems.push(format!("HELPLINE_ALLOWED_ORIGINS: {e}"));
                AllowedOrigins::default()
            }),
        };
        let identity_secret = get("HELPLINE_IDENTITY_SECRET").map(Secret::new);

        if problems.is_empty() {
            Ok(Self {
                bind,
                public_url,
                database,
                openai,
                ai,
                worker,
                delivery,
                admin_token,
                demo_reply_delay,
                allowed_origins,
                identity_secret,
            })
        } else {
            Err(problems)
        }
    }

    /// The base URL others use to reach this instance.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    problems: &mut Vec<String>,
) -> T {
    match get(name) {
        None => default,
        Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
            problems.push(format!(
                "{name} must be a non-negative whole number (got {raw:?})"
            ));
            default
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_configuration_means_demo_mode_with_a_private_database() {
        let c = config(&[]).unwrap();
        assert!(c.openai.is_none());
        assert!(c.database.url.is_none());
        assert_eq!(c.bind.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn an_api_key_without_a_webhook_secret_is_refused() {
        let problems = config(&[("OPENAI_API_KEY", "sk-x")]).unwrap_err();
        assert!(
            problems[0].contains("OPENAI_WEBHOOK_SECRET is required"),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems =
            config(&[("HELPLINE_BIND", "nope"), ("HELPLINE_WORKERS", "-1")]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn two_webhook_secrets_are_accepted_for_rotation() {
        let c = config(&[
            ("OPENAI_API_KEY", "sk-x"),
            ("OPENAI_WEBHOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c="),
        ])
        .unwrap();
        assert_eq!(c.openai.unwrap().webhook_secrets.len(), 2);
    }

    #[test]
    fn allowed_origins_default_to_this_machine_and_are_checked() {
        let c = config(&[]).unwrap();
        assert!(c.allowed_origins.allows("http://localhost:8080"));
        assert!(!c.allowed_origins.allows("https://shop.example.com"));
        let c = config(&[("HELPLINE_ALLOWED_ORIGINS", "https://shop.example.com")]).unwrap();
        assert!(c.allowed_origins.allows("https://shop.example.com"));
        assert!(!c.allowed_origins.allows("http://localhost:8080"));
        let problems = config(&[("HELPLINE_ALLOWED_ORIGINS", "shop.example.com")]).unwrap_err();
        assert!(
            problems[0].starts_with("HELPLINE_ALLOWED_ORIGINS"),
            "{problems:?}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = config(&[
            ("HELPLINE_IDENTITY_SECRET", "identity-very-secret"),
            ("OPENAI_API_KEY", "sk-very-secret"),
            (
                "OPENAI_WEBHOOK_SECRET",
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            ),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-very-secret"));
        assert!(!shown.contains("C2FVsBQ"));
        assert!(!shown.contains("identity-very-secret"));
    }
}
