//! `helpline.toml`: the same settings as the environment variables, grouped
//! in tables. The file is flattened into environment-variable names, so one
//! validator (`Config::from_lookup`) serves both, and the environment wins.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// Every setting: its environment variable and its key in `helpline.toml`.
/// `docs/configuration.md` lists them in this order, with their defaults.
pub const SETTINGS: &[(&str, &str)] = &[
    ("HELPLINE_BIND", "bind"),
    ("HELPLINE_PUBLIC_URL", "public_url"),
    ("HELPLINE_ALLOWED_ORIGINS", "allowed_origins"),
    ("HELPLINE_IDENTITY_SECRET", "identity_secret"),
    ("HELPLINE_ADMIN_TOKEN", "admin_token"),
    ("HELPLINE_STATIC_DIR", "static_dir"),
    ("DATABASE_URL", "database.url"),
    ("HELPLINE_DATA_DIR", "database.data_dir"),
    ("HELPLINE_DB_MAX_CONNECTIONS", "database.max_connections"),
    ("OPENAI_API_KEY", "openai.api_key"),
    ("OPENAI_WEBHOOK_SECRET", "openai.webhook_secret"),
    ("OPENAI_BASE_URL", "openai.base_url"),
    ("HELPLINE_MODEL", "ai.model"),
    ("HELPLINE_INSTRUCTIONS", "ai.instructions"),
    ("HELPLINE_INSTRUCTIONS_FILE", "ai.instructions_file"),
    ("HELPLINE_MAX_OUTPUT_TOKENS", "ai.max_output_tokens"),
    ("HELPLINE_TEMPERATURE", "ai.temperature"),
    ("HELPLINE_HANDOFF_TOOL", "ai.handoff_tool"),
    ("HELPLINE_WORKERS", "worker.concurrency"),
    ("HELPLINE_WORKER_POLL_MS", "worker.poll_ms"),
    ("HELPLINE_OPENAI_TIMEOUT_MS", "delivery.openai_timeout_ms"),
    (
        "HELPLINE_TURN_START_BUDGET_SECS",
        "delivery.turn_start_budget_secs",
    ),
    ("HELPLINE_RECONCILE_AFTER_MS", "delivery.reconcile_after_ms"),
    (
        "HELPLINE_RECONCILE_INTERVAL_MS",
        "delivery.reconcile_interval_ms",
    ),
    (
        "HELPLINE_RESPONSE_DEADLINE_SECS",
        "delivery.response_deadline_secs",
    ),
    ("HELPLINE_EVENT_MAX_ATTEMPTS", "delivery.event_max_attempts"),
    ("HELPLINE_RETAIN_EVENTS_HOURS", "retention.events_hours"),
    (
        "HELPLINE_RETAIN_DEAD_EVENTS_HOURS",
        "retention.dead_events_hours",
    ),
    ("HELPLINE_RETAIN_SESSIONS_HOURS", "retention.sessions_hours"),
    (
        "HELPLINE_RETENTION_INTERVAL_SECS",
        "retention.interval_secs",
    ),
    ("HELPLINE_LOG_FORMAT", "log.format"),
    ("RUST_LOG", "log.filter"),
    ("HELPLINE_DEMO_REPLY_DELAY_MS", "demo.reply_delay_ms"),
    ("HELPLINE_VISITORS_PER_IP_BURST", "limits.visitors_burst"),
    (
        "HELPLINE_VISITORS_PER_IP_PER_MINUTE",
        "limits.visitors_per_minute",
    ),
    ("HELPLINE_SOCKETS_PER_IP_BURST", "limits.sockets_burst"),
    (
        "HELPLINE_SOCKETS_PER_IP_PER_MINUTE",
        "limits.sockets_per_minute",
    ),
    ("HELPLINE_MESSAGES_BURST", "limits.messages_burst"),
    ("HELPLINE_MESSAGES_PER_MINUTE", "limits.messages_per_minute"),
    ("HELPLINE_SOCKETS_PER_VISITOR", "limits.sockets_per_visitor"),
    (
        "HELPLINE_ABUSE_ERRORS_PER_MINUTE",
        "limits.abuse_errors_per_minute",
    ),
    ("HELPLINE_PING_INTERVAL_MS", "limits.ping_interval_ms"),
    ("HELPLINE_IDLE_TIMEOUT_MS", "limits.idle_timeout_ms"),
];

/// The file's key for an environment variable, for messages.
pub fn key_of(env: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|(e, _)| *e == env).map(|(_, k)| *k)
}

/// Which file to read: `--config`/`HELPLINE_CONFIG` (must exist), else
/// `./helpline.toml` when present, else none.
pub fn locate(explicit: Option<PathBuf>) -> Option<(PathBuf, bool)> {
    match explicit {
        Some(path) => Some((path, true)),
        None => {
            let default = Path::new("helpline.toml");
            default.is_file().then(|| (default.to_path_buf(), false))
        }
    }
}

/// Reads the file into a map from environment-variable name to value.
pub fn read(path: &Path) -> Result<HashMap<String, String>, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        )]
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses `helpline.toml` text; `origin` names it in messages.
pub fn parse(text: &str, origin: &str) -> Result<HashMap<String, String>, Vec<String>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The parser's message spans lines; one line per problem.
        let message = e.message().to_owned();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(1);
        vec![format!("{origin}: line {line}: {message}")]
    })?;
    let mut flat = Vec::new();
    flatten("", &toml::Value::Table(table), &mut flat);

    let mut values = HashMap::new();
    let mut problems = Vec::new();
    for (key, value) in flat {
        let Some((env, _)) = SETTINGS.iter().find(|(_, k)| *k == key) else {
            problems.push(format!(
                "{origin}: unknown setting `{key}` (see docs/configuration.md)"
            ));
            continue;
        };
        match scalar(&value) {
            Some(text) => {
                values.insert((*env).to_owned(), text);
            }
            None => problems.push(format!(
                "{origin}: `{key}` must be a string, a number, a boolean or a list of strings"
            )),
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// A leaf as the text an environment variable would hold. Lists (origins,
/// webhook secrets) become space-separated.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(" ")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_flatten_into_environment_names() {
        let values = parse(
            r#"
            bind = "0.0.0.0:3000"
            allowed_origins = ["https://a.example", "https://b.example"]
            [ai]
            model = "gpt-4.1"
            max_output_tokens = 500
            [worker]
            concurrency = 2
            "#,
            "helpline.toml",
        )
        .unwrap();
        assert_eq!(values["HELPLINE_BIND"], "0.0.0.0:3000");
        assert_eq!(
            values["HELPLINE_ALLOWED_ORIGINS"],
            "https://a.example https://b.example"
        );
        assert_eq!(values["HELPLINE_MODEL"], "gpt-4.1");
        assert_eq!(values["HELPLINE_MAX_OUTPUT_TOKENS"], "500");
        assert_eq!(values["HELPLINE_WORKERS"], "2");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_one_line_each() {
        let problems = parse("[ai]\nmodle = \"x\"\nwat = 1\n", "h.toml").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`ai.modle`"), "{problems:?}");

        let problems = parse("bind = \n", "h.toml").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].contains('\n'), "{problems:?}");
        assert!(problems[0].starts_with("h.toml: line 1"), "{problems:?}");
    }

    #[test]
    fn a_file_named_explicitly_must_exist() {
        let missing = std::path::PathBuf::from("/nonexistent/helpline.toml");
        let (path, explicit) = locate(Some(missing.clone())).unwrap();
        assert!(explicit);
        let problems = read(&path).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .starts_with("cannot read the configuration file /nonexistent/helpline.toml"),
            "{problems:?}"
        );
    }

    #[test]
    fn every_setting_has_a_distinct_key() {
        let mut keys: Vec<_> = SETTINGS.iter().map(|(_, k)| *k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
    }

    /// The example file and the documentation name every setting, and
    /// nothing else.
    #[test]
    fn the_example_file_and_the_docs_cover_every_setting() {
        let example = include_str!("../../helpline.example.toml");
        let uncommented: String = example
            .lines()
            .map(|l| {
                let rest = l.trim_start_matches("# ");
                let is_setting = rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
                if is_setting {
                    rest
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let values = parse(&uncommented, "helpline.example.toml").unwrap();
        let docs = include_str!("../../docs/configuration.md");
        for (env, key) in SETTINGS {
            assert!(values.contains_key(*env), "{key} missing from the example");
            assert!(
                docs.contains(&format!("| `{env}` | `{key}`")),
                "{env} / {key} missing from docs/configuration.md"
            );
        }
    }
}
