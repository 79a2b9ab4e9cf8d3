//! PostgreSQL: the pool, the embedded migrations, the private cluster used
//! when no `DATABASE_URL` is given, and the queries of every table.
//!
//! Queries are plain `sqlx::query`/`query_as` (no compile-time database);
//! the integration tests run every one of them against a real PostgreSQL.

pub mod agents;
pub mod conversations;
pub mod inbox;
pub mod ops;
pub mod private_pg;
pub mod turns;

use std::time::Duration;

use anyhow::Context;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use crate::config::DatabaseConfig;
use private_pg::PrivatePostgres;

/// Ends the `RETURNING` list of a *bookkeeping* write: claiming a job,
/// recording a job's outcome or its next attempt. It sets
/// `synchronous_commit = off` for that statement's own transaction, so its
/// commit does not wait for the WAL flush (BENCHMARKS.md: each wait is a
/// disk flush, and under load they queue behind the webhook inserts).
///
/// A crash of PostgreSQL itself (not of Helpline) can lose the last such
/// commits, never any other: a later ordinary commit flushes them with it.
/// Losing one only means work is done again, which every job is safe to:
/// a lost claim is claimed again, a lost "processed" processes the event
/// again (finishing a turn twice changes nothing), a lost retry time retries
/// at once. Writes whose loss a customer could see (messages, a turn's
/// response id, webhook receipts) keep the default, and wait.
pub(crate) const NO_FLUSH_WAIT: &str = "set_config('synchronous_commit', 'off', true)";

/// The database an instance (or a CLI command) works on.
pub struct Database {
    pub pool: PgPool,
    /// Set when no `DATABASE_URL` was given and the private cluster is used.
    pub private: Option<PrivatePostgres>,
}

/// Connects to `DATABASE_URL`, or creates/starts the private cluster, and
/// brings the schema up to date.
pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Database> {
    let (url, private) = match &config.url {
        Some(url) => (url.expose().to_owned(), None),
        None => {
            let dir = config.data_dir.clone();
            let pg = tokio::task::spawn_blocking(move || PrivatePostgres::ensure_running(&dir))
                .await??;
            ensure_database(&pg.url("postgres"), "helpline").await?;
            (pg.url("helpline"), Some(pg))
        }
    };
    let pool = connect(&url, config.max_connections)
        .await
        .context("cannot connect to PostgreSQL")?;
    migrate(&pool).await.context("database migrations failed")?;
    // The agent console's sessions live in tower-sessions' own schema.
    tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
        .migrate()
        .await
        .context("creating the session table failed")?;
    Ok(Database { pool, private })
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings an idle connection before handing it out, a round trip
        // per acquire, kept on purpose: without it every stale connection
        // fails a statement after a PostgreSQL restart, and the restart test
        // once timed out waiting for a turn (BENCHMARKS.md, "Findings").
        .connect_with(options.application_name("helpline"))
        .await
}

/// Applies this version's pending migrations. Migrations applied by a newer
/// version are ignored, so an older replica can still (re)start during a
/// rolling upgrade.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Creates `name` on the server behind `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let admin = connect(admin_url, 1).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        let created = sqlx::query(&format!(r#"CREATE DATABASE "{}""#, name.replace('"', "")))
            .execute(&admin)
            .await;
        // Another process may have created it in the meantime.
        if let Err(e) = created {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04");
            if !duplicate {
                return Err(e);
            }
        }
    }
    admin.close().await;
    Ok(())
}
