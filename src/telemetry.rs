//! Logging setup: logs go to stderr (stdout is for what commands report).
//! `RUST_LOG` picks what is shown; tests keep quiet unless `TEST_LOG` is set.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second call (several tests in one process) is harmless.
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
