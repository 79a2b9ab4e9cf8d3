//! Typed configuration: defaults, then `helpline.toml`, then environment
//! variables (the environment wins), validated at start-up with one line per
//! problem. Every setting is documented, with its default and its file key,
//! in `docs/configuration.md`. Secrets are wrapped so they never print.

mod file;

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use file::{key_of, SETTINGS};

use crate::{
    chat::origins::AllowedOrigins,
    limits::{LimitsConfig, Rate},
    webhooks::signature::WebhookSecret,
};

pub const DEFAULT_MODEL: &str = "gpt-4.1-mini";
pub const DEFAULT_INSTRUCTIONS: &str = "You are the customer-support assistant of this company. \
Answer briefly and politely. If you do not know the answer, say so.";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,tower_http=warn";
/// OpenAI retries a webhook for up to 72 hours with the same `webhook-id`:
/// ids must be remembered at least that long to stay deduplicated.
pub const MIN_EVENT_RETENTION_HOURS: u64 = 72;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP server listens.
    pub bind: SocketAddr,
    /// The address the outside world (OpenAI, browsers) uses to reach us;
    /// `http://{bind}` when unset.
    pub public_url: Option<String>,
    /// Web sites whose pages may embed the widget (`HELPLINE_ALLOWED_ORIGINS`).
    /// The instance's own public URL is added at start-up.
    pub allowed_origins: AllowedOrigins,
    /// Key of the `user_hash` HMAC; `None` disables identity verification.
    pub identity_secret: Option<Secret>,
    /// The demo page and other static files; `static/` in the source tree
    /// when unset.
    pub static_dir: Option<PathBuf>,
    pub database: DatabaseConfig,
    /// `None` means demo mode: the built-in simulator stands in for OpenAI.
    pub openai: Option<OpenAiConfig>,
    pub ai: AiSettings,
    pub worker: WorkerConfig,
    pub delivery: DeliveryConfig,
    /// Bearer token for the admin API (`/api/admin/...`); disabled when unset.
    pub admin_token: Option<Secret>,
    pub retention: RetentionConfig,
    pub log: LogConfig,
    /// Delay before the built-in simulator (demo mode) finishes a response.
    pub demo_reply_delay: Duration,
    /// Rate limits and socket rules of the public customer side.
    pub limits: LimitsConfig,
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

/// What every response is created with.
#[derive(Debug, Clone)]
pub struct AiSettings {
    pub model: String,
    pub instructions: String,
    /// Upper bound on a reply's tokens (OpenAI's `max_output_tokens`).
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2; OpenAI's default when unset.
    pub temperature: Option<f32>,
    /// Whether responses offer the model the `handoff_to_human` tool.
    pub handoff_tool: bool,
}

impl Default for AiSettings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            instructions: DEFAULT_INSTRUCTIONS.into(),
            max_output_tokens: None,
            temperature: None,
            handoff_tool: true,
        }
    }
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

/// How long finished data is kept, and how often the purge runs.
/// Conversations are never purged: only an operator deletes them.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Processed and ignored webhook events (at least 72 hours).
    pub events: Duration,
    /// Dead webhook events, kept longer so operators can inspect and replay
    /// them (at least 72 hours).
    pub dead_events: Duration,
    /// Expired agent-console sessions.
    pub sessions: Duration,
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events: hours(168),
            dead_events: hours(720),
            sessions: hours(720),
            interval: Duration::from_secs(3600),
        }
    }
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event, for terminals.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` syntax.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: DEFAULT_LOG_FILTER.into(),
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

/// Reads one setting and records what is wrong with it, naming both the
/// environment variable and the file key.
struct Reader<G> {
    get: G,
    problems: Vec<String>,
}

impl<G: Fn(&str) -> Option<String>> Reader<G> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.get)(name)
    }

    fn problem(&mut self, name: &str, what: impl fmt::Display) {
        let key = key_of(name).map(|k| format!(" ({k})")).unwrap_or_default();
        self.problems.push(format!("{name}{key} {what}"));
    }

    /// A number within `range`, or the default when unset.
    fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        match raw.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => v,
            _ => {
                self.problem(
                    name,
                    format!("must be a number from {min} to {max} (got {raw:?})"),
                );
                default
            }
        }
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name).map(|r| r.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => false,
            Some(v) => {
                self.problem(name, format!("must be true or false (got {v:?})"));
                default
            }
        }
    }

    /// An http(s) URL with a host; returned without a trailing slash.
    fn url(&mut self, name: &str, must_be_origin: bool) -> Option<String> {
        let raw = self.raw(name)?;
        match check_url(&raw, must_be_origin) {
            Ok(url) => Some(url),
            Err(why) => {
                self.problem(name, why);
                None
            }
        }
    }
}

/// `Ok(normalised)` or why the text is not an http(s) URL (an origin:
/// nothing after the port).
fn check_url(raw: &str, must_be_origin: bool) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|_| format!("must be a URL like https://support.example.com (got {raw:?})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "must start with http:// or https:// and name a host (got {raw:?})"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("must not have a query or fragment (got {raw:?})"));
    }
    if must_be_origin && parsed.path() != "/" {
        return Err(format!(
            "must be an origin, scheme://host[:port] with no path (got {raw:?})"
        ));
    }
    Ok(trimmed.to_owned())
}

impl Config {
    /// Reads `helpline.toml` (`explicit` path, else `./helpline.toml` when
    /// present) and the environment; the environment wins.
    pub fn load(explicit: Option<PathBuf>) -> Result<Self, Vec<String>> {
        let file = match file::locate(explicit) {
            Some((path, _)) => file::read(&path)?,
            None => HashMap::new(),
        };
        Self::from_layers(&file, |name| std::env::var(name).ok())
    }

    /// The environment only (no file).
    pub fn from_env() -> Result<Self, Vec<String>> {
        Self::from_layers(&HashMap::new(), |name| std::env::var(name).ok())
    }

    /// The file's settings under the environment's. Empty environment
    /// values count as unset.
    pub fn from_layers(
        file: &HashMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        Self::from_lookup(|name| {
            env(name)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| file.get(name).cloned())
        })
    }

    /// Parses `helpline.toml` text and layers `env` over it (for tests).
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        Self::from_layers(&file::parse(text, "helpline.toml")?, env)
    }

    /// Builds and validates the configuration from a lookup by
    /// environment-variable name. All problems are reported at once.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut r = Reader {
            get,
            problems: Vec::new(),
        };

        let bind = match r
            .raw("HELPLINE_BIND")
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .trim()
            .parse()
        {
            Ok(addr) => addr,
            Err(_) => {
                r.problem("HELPLINE_BIND", "must be an address like 127.0.0.1:3000");
                SocketAddr::from(([127, 0, 0, 1], 3000))
            }
        };
        let public_url = r.url("HELPLINE_PUBLIC_URL", false);
        let allowed_origins = match r.raw("HELPLINE_ALLOWED_ORIGINS") {
            None => AllowedOrigins::default(),
            Some(list) => AllowedOrigins::parse(&list).unwrap_or_else(|e| {
                r.problem("HELPLINE_ALLOWED_ORIGINS", e);
                AllowedOrigins::default()
            }),
        };
        let identity_secret = r.raw("HELPLINE_IDENTITY_SECRET").map(Secret::new);
        let static_dir = r.raw("HELPLINE_STATIC_DIR").map(PathBuf::from);

        let db_url = r.raw("DATABASE_URL");
        if let Some(url) = &db_url {
            // Never echo it: it usually holds a password.
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                r.problem(
                    "DATABASE_URL",
                    "must start with postgres:// (postgres://user:password@host:5432/helpline)",
                );
            }
        }
        let database = DatabaseConfig {
            url: db_url.map(Secret::new),
            data_dir: r
                .raw("HELPLINE_DATA_DIR")
                .unwrap_or_else(|| ".helpline".into())
                .into(),
            max_connections: r.number("HELPLINE_DB_MAX_CONNECTIONS", 20, 2, 1000),
        };

        let openai = match r.raw("OPENAI_API_KEY") {
            None => None,
            Some(key) => {
                let webhook_secrets = match r.raw("OPENAI_WEBHOOK_SECRET") {
                    None => {
                        r.problem(
                            "OPENAI_WEBHOOK_SECRET",
                            "is required when OPENAI_API_KEY is set \
                             (copy the whsec_… secret shown when you create the webhook endpoint)",
                        );
                        Vec::new()
                    }
                    Some(raw) => match parse_webhook_secrets(&raw) {
                        Ok(secrets) => secrets,
                        Err(why) => {
                            r.problem("OPENAI_WEBHOOK_SECRET", why);
                            Vec::new()
                        }
                    },
                };
                let base_url = r
                    .url("OPENAI_BASE_URL", false)
                    .unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.into());
                Some(OpenAiConfig {
                    api_key: Secret::new(key.trim()),
                    base_url,
                    webhook_secrets,
                })
            }
        };

        let model = r
            .raw("HELPLINE_MODEL")
            .map(|m| m.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_MODEL.into());
        if model.is_empty() || model.contains(char::is_whitespace) {
            r.problem(
                "HELPLINE_MODEL",
                format!("must name a model, e.g. {DEFAULT_MODEL} (got {model:?})"),
            );
        }
        let instructions = match (
            r.raw("HELPLINE_INSTRUCTIONS"),
            r.raw("HELPLINE_INSTRUCTIONS_FILE"),
        ) {
            (Some(_), Some(_)) => {
                r.problem(
                    "HELPLINE_INSTRUCTIONS",
                    "and HELPLINE_INSTRUCTIONS_FILE are both set: keep one",
                );
                String::new()
            }
            (Some(text), None) => text,
            (None, Some(path)) => match std::fs::read_to_string(Path::new(path.trim())) {
                Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
                Ok(_) => {
                    r.problem("HELPLINE_INSTRUCTIONS_FILE", format!("{path} is empty"));
                    String::new()
                }
                Err(e) => {
                    r.problem(
                        "HELPLINE_INSTRUCTIONS_FILE",
                        format!("cannot be read ({path}: {e})"),
                    );
                    String::new()
                }
            },
            (None, None) => DEFAULT_INSTRUCTIONS.into(),
        };
        let max_output_tokens = r
            .raw("HELPLINE_MAX_OUTPUT_TOKENS")
            .map(|_| r.number("HELPLINE_MAX_OUTPUT_TOKENS", 0u32, 16, 1_000_000));
        let temperature = r
            .raw("HELPLINE_TEMPERATURE")
            .map(|_| r.number("HELPLINE_TEMPERATURE", 1.0f32, 0.0, 2.0));
        let ai = AiSettings {
            model,
            instructions,
            max_output_tokens,
            temperature,
            handoff_tool: r.flag("HELPLINE_HANDOFF_TOOL", true),
        };

        let worker = WorkerConfig {
            concurrency: r.number("HELPLINE_WORKERS", 4, 1, 256),
            poll_interval: Duration::from_millis(r.number(
                "HELPLINE_WORKER_POLL_MS",
                1000,
                10,
                3_600_000,
            )),
        };
        // A busy worker and each receipt writer keep a connection of their
        // own (`storage::Kept`); requests and finishing turns share the rest.
        let kept = worker.concurrency + crate::queue::WRITERS;
        if kept + 2 > database.max_connections as usize {
            r.problem(
                "HELPLINE_WORKERS",
                format!(
                    "is {} but HELPLINE_DB_MAX_CONNECTIONS is {}: workers and the {} webhook writers keep a connection each, so the pool needs at least {} (raise it, or lower the workers)",
                    worker.concurrency,
                    database.max_connections,
                    crate::queue::WRITERS,
                    kept + 2
                ),
            );
        }

        let defaults = RetentionConfig::default();
        let min = MIN_EVENT_RETENTION_HOURS;
        let retention = RetentionConfig {
            events: hours(r.number("HELPLINE_RETAIN_EVENTS_HOURS", 168, min, 87_600)),
            dead_events: hours(r.number("HELPLINE_RETAIN_DEAD_EVENTS_HOURS", 720, min, 87_600)),
            sessions: hours(r.number("HELPLINE_RETAIN_SESSIONS_HOURS", 720, 1, 87_600)),
            interval: Duration::from_secs(r.number(
                "HELPLINE_RETENTION_INTERVAL_SECS",
                defaults.interval.as_secs(),
                1,
                86_400,
            )),
        };

        let format = match r.raw("HELPLINE_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                r.problem(
                    "HELPLINE_LOG_FORMAT",
                    format!("must be human or json (got {other:?})"),
                );
                LogFormat::Human
            }
        };
        let filter = r
            .raw("RUST_LOG")
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.into());
        if tracing_subscriber::EnvFilter::try_new(&filter).is_err() {
            r.problem(
                "RUST_LOG",
                format!("is not a valid log filter, e.g. {DEFAULT_LOG_FILTER} (got {filter:?})"),
            );
        }
        let log = LogConfig { format, filter };

        let d = DeliveryConfig::default();
        let ms = |d: Duration| d.as_millis() as u64;
        let delivery = DeliveryConfig {
            openai_timeout: Duration::from_millis(r.number(
                "HELPLINE_OPENAI_TIMEOUT_MS",
                ms(d.openai_timeout),
                1,
                600_000,
            )),
            turn_start_budget: Duration::from_secs(r.number(
                "HELPLINE_TURN_START_BUDGET_SECS",
                d.turn_start_budget.as_secs(),
                1,
                86_400,
            )),
            reconcile_after: Duration::from_millis(r.number(
                "HELPLINE_RECONCILE_AFTER_MS",
                ms(d.reconcile_after),
                1,
                86_400_000,
            )),
            reconcile_interval: Duration::from_millis(r.number(
                "HELPLINE_RECONCILE_INTERVAL_MS",
                ms(d.reconcile_interval),
                10,
                3_600_000,
            )),
            response_deadline: Duration::from_secs(r.number(
                "HELPLINE_RESPONSE_DEADLINE_SECS",
                d.response_deadline.as_secs(),
                1,
                86_400,
            )),
            event_max_attempts: r.number(
                "HELPLINE_EVENT_MAX_ATTEMPTS",
                d.event_max_attempts,
                1,
                100,
            ),
        };
        let admin_token = r.raw("HELPLINE_ADMIN_TOKEN").map(Secret::new);

        let demo_reply_delay =
            Duration::from_millis(r.number("HELPLINE_DEMO_REPLY_DELAY_MS", 400, 0, 600_000));

        let l = LimitsConfig::default();
        let mut rate = |burst: &str, per_minute: &str, d: Rate| Rate {
            burst: r.number(burst, d.burst, 1, 1_000_000),
            per_minute: r.number(per_minute, d.per_minute, 1, 1_000_000),
        };
        let visitors_per_ip = rate(
            "HELPLINE_VISITORS_PER_IP_BURST",
            "HELPLINE_VISITORS_PER_IP_PER_MINUTE",
            l.visitors_per_ip,
        );
        let sockets_per_ip = rate(
            "HELPLINE_SOCKETS_PER_IP_BURST",
            "HELPLINE_SOCKETS_PER_IP_PER_MINUTE",
            l.sockets_per_ip,
        );
        let messages_per_visitor = rate(
            "HELPLINE_MESSAGES_BURST",
            "HELPLINE_MESSAGES_PER_MINUTE",
            l.messages_per_visitor,
        );
        let limits = LimitsConfig {
            visitors_per_ip,
            sockets_per_ip,
            messages_per_visitor,
            sockets_per_visitor: r.number(
                "HELPLINE_SOCKETS_PER_VISITOR",
                l.sockets_per_visitor,
                1,
                10_000,
            ),
            abuse_errors_per_minute: r.number(
                "HELPLINE_ABUSE_ERRORS_PER_MINUTE",
                l.abuse_errors_per_minute,
                1,
                100_000,
            ),
            ping_interval: Duration::from_millis(r.number(
                "HELPLINE_PING_INTERVAL_MS",
                ms(l.ping_interval),
                10,
                3_600_000,
            )),
            idle_timeout: Duration::from_millis(r.number(
                "HELPLINE_IDLE_TIMEOUT_MS",
                ms(l.idle_timeout),
                20,
                86_400_000,
            )),
        };
        if limits.idle_timeout <= limits.ping_interval {
            r.problem(
                "HELPLINE_IDLE_TIMEOUT_MS",
                "must be longer than HELPLINE_PING_INTERVAL_MS (a pong needs time to come back)",
            );
        }

        if r.problems.is_empty() {
            Ok(Self {
                bind,
                public_url,
                allowed_origins,
                identity_secret,
                static_dir,
                database,
                openai,
                ai,
                worker,
                delivery,
                admin_token,
                retention,
                log,
                demo_reply_delay,
                limits,
            })
        } else {
            Err(r.problems)
        }
    }

    /// The base URL others use to reach this instance.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

/// The secrets OpenAI shows are `whsec_` followed by base64; several,
/// separated by spaces, during a rotation. Never echoes a secret.
fn parse_webhook_secrets(raw: &str) -> Result<Vec<WebhookSecret>, String> {
    let mut secrets = Vec::new();
    for (i, text) in raw.split_whitespace().enumerate() {
        let n = i + 1;
        let Some(b64) = text.strip_prefix("whsec_") else {
            return Err(format!(
                "secret {n} does not start with whsec_ (copy it exactly as OpenAI shows it)"
            ));
        };
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(key) if key.len() >= 16 => {}
            Ok(_) => return Err(format!("secret {n} is too short (under 16 bytes)")),
            Err(_) => {
                return Err(format!(
                    "secret {n}: the part after whsec_ is not valid base64"
                ))
            }
        }
        secrets.push(WebhookSecret::parse(text).map_err(|e| format!("secret {n}: {e}"))?);
    }
    if secrets.is_empty() {
        return Err("is empty".into());
    }
    Ok(secrets)
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
            problems[0].contains("OPENAI_WEBHOOK_SECRET (openai.webhook_secret) is required"),
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
    }

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn problems_for(vars: &[(&str, &str)]) -> Vec<String> {
        let problems = config(vars).unwrap_err();
        for p in &problems {
            assert!(!p.contains('\n'), "one line per problem: {p:?}");
        }
        problems
    }

    #[test]
    fn a_webhook_secret_must_be_whsec_base64_and_is_never_echoed() {
        let cases = [
            ("not-a-whsec-secret", "does not start with whsec_"),
            ("whsec_***not base64***", "not valid base64"),
            ("whsec_c2hvcnQ=", "too short"),
            (
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD whsec_!!",
                "secret 2",
            ),
        ];
        for (secret, expected) in cases {
            let problems = problems_for(&[
                ("OPENAI_API_KEY", "sk-x"),
                ("OPENAI_WEBHOOK_SECRET", secret),
            ]);
            assert_eq!(problems.len(), 1, "{secret}: {problems:?}");
            assert!(problems[0].contains(expected), "{secret}: {problems:?}");
            assert!(
                problems[0].starts_with("OPENAI_WEBHOOK_SECRET (openai.webhook_secret)"),
                "{problems:?}"
            );
            assert!(!problems[0].contains(secret), "secret echoed: {problems:?}");
        }
    }

    #[test]
    fn urls_origins_and_numbers_are_checked() {
        let problems = problems_for(&[
            ("HELPLINE_PUBLIC_URL", "support.example.com"),
            (
                "HELPLINE_ALLOWED_ORIGINS",
                "https://shop.example.com, shop.example.org, https://x.example/path",
            ),
            ("HELPLINE_DB_MAX_CONNECTIONS", "lots"),
            ("HELPLINE_WORKERS", "0"),
            ("HELPLINE_MAX_OUTPUT_TOKENS", "5"),
            ("HELPLINE_TEMPERATURE", "3"),
            ("HELPLINE_LOG_FORMAT", "xml"),
            ("DATABASE_URL", "mysql://root:hunter2@db/helpline"),
        ]);
        let joined = problems.join("\n");
        assert_eq!(problems.len(), 8, "{joined}");
        for expected in [
            "HELPLINE_PUBLIC_URL (public_url) must",
            "HELPLINE_ALLOWED_ORIGINS (allowed_origins) not an origin like https://shop.example.com or http://localhost:*: \"shop.example.org\", \"https://x.example/path\"",
            "HELPLINE_DB_MAX_CONNECTIONS (database.max_connections) must be a number from 2 to 1000",
            "HELPLINE_WORKERS (worker.concurrency) must be a number from 1 to 256",
            "HELPLINE_MAX_OUTPUT_TOKENS (ai.max_output_tokens) must be a number from 16",
            "HELPLINE_TEMPERATURE (ai.temperature) must be a number from 0 to 2",
            "HELPLINE_LOG_FORMAT (log.format) must be human or json",
            "DATABASE_URL (database.url) must start with postgres://",
        ] {
            assert!(joined.contains(expected), "missing {expected:?} in\n{joined}");
        }
        assert!(!joined.contains("hunter2"), "{joined}");
    }

    #[test]
    fn the_pool_must_leave_room_beside_the_kept_connections() {
        let problems = problems_for(&[
            ("HELPLINE_WORKERS", "20"),
            ("HELPLINE_DB_MAX_CONNECTIONS", "20"),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "HELPLINE_WORKERS (worker.concurrency) is 20 but HELPLINE_DB_MAX_CONNECTIONS is 20"
            ) && problems[0].contains("needs at least 24"),
            "{problems:?}"
        );
        let fits = config(&[
            ("HELPLINE_WORKERS", "20"),
            ("HELPLINE_DB_MAX_CONNECTIONS", "24"),
        ]);
        assert!(fits.is_ok(), "{:?}", fits.err());
    }

    #[test]
    fn a_model_name_must_be_given() {
        let problems = config_toml("[ai]\nmodel = \"\"\n", &[]).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("HELPLINE_MODEL (ai.model) must name a model"),
            "{problems:?}"
        );
    }

    #[test]
    fn webhook_ids_are_kept_at_least_72_hours() {
        let problems = problems_for(&[("HELPLINE_RETAIN_EVENTS_HOURS", "24")]);
        assert!(
            problems[0].contains("retention.events_hours) must be a number from 72"),
            "{problems:?}"
        );
        let c = config(&[("HELPLINE_RETAIN_EVENTS_HOURS", "72")]).unwrap();
        assert_eq!(c.retention.events, Duration::from_secs(72 * 3600));
    }

    fn config_toml(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(text, |k| env.get(k).cloned())
    }

    #[test]
    fn the_file_sets_what_the_environment_does_not() {
        let text = format!(
            r#"
            bind = "0.0.0.0:8080"
            public_url = "https://support.example.com/"
            allowed_origins = ["https://shop.example.com"]
            [openai]
            api_key = "sk-from-file"
            webhook_secret = "{SECRET}"
            [ai]
            model = "gpt-4.1"
            instructions = "Be brief."
            max_output_tokens = 300
            temperature = 0.2
            [worker]
            concurrency = 2
            [log]
            format = "json"
            "#
        );
        let c = config_toml(
            &text,
            &[("HELPLINE_MODEL", "gpt-4.1-nano"), ("HELPLINE_WORKERS", "")],
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(c.public_url.as_deref(), Some("https://support.example.com"));
        assert!(c.allowed_origins.allows("https://shop.example.com"));
        assert!(!c.allowed_origins.allows("http://localhost:8080"));
        assert_eq!(c.openai.unwrap().api_key.expose(), "sk-from-file");
        assert_eq!(c.ai.model, "gpt-4.1-nano", "the environment wins");
        assert_eq!(c.ai.instructions, "Be brief.");
        assert_eq!(c.ai.max_output_tokens, Some(300));
        assert_eq!(c.ai.temperature, Some(0.2));
        assert_eq!(c.worker.concurrency, 2, "an empty variable counts as unset");
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn instructions_come_from_a_file_but_not_from_two_places() {
        let path = std::env::temp_dir().join(format!(
            "helpline-instructions-{}.md",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, "You sell bicycles.\n").unwrap();
        let file = path.display().to_string();
        let c = config(&[("HELPLINE_INSTRUCTIONS_FILE", &file)]).unwrap();
        assert_eq!(c.ai.instructions, "You sell bicycles.");

        let problems = problems_for(&[
            ("HELPLINE_INSTRUCTIONS_FILE", &file),
            ("HELPLINE_INSTRUCTIONS", "inline"),
        ]);
        assert!(problems[0].contains("both set"), "{problems:?}");
        std::fs::remove_file(&path).unwrap();
        let problems = problems_for(&[("HELPLINE_INSTRUCTIONS_FILE", &file)]);
        assert!(problems[0].contains("cannot be read"), "{problems:?}");
    }
}
