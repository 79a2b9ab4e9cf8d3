//! PostgreSQL: the pool, the embedded migrations, the private cluster used
//! when no `DATABASE_URL` is given, and the queries of every table.
//!
//! Queries are plain `sqlx::query`/`query_as` (no compile-time database);
//! the integration tests run every one of them against a real PostgreSQL.

pub mod agents;
pub mod conversations;
pub mod inbox;
pub mod notify;
pub mod ops;
pub mod private_pg;
pub mod turns;

use std::time::Duration;

use anyhow::Context;

use sqlx::{
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgConnection, PgPool, Postgres,
};

use crate::config::DatabaseConfig;
use private_pg::PrivatePostgres;

/// Ends the `RETURNING` list of a *bookkeeping* write: claiming a job,
/// recording a job's outcome or its next attempt, marking a turn in flight.
/// It sets
/// `synchronous_commit = off` for that statement's own transaction, so its
/// commit does not wait for the WAL flush: each wait is a disk flush, and
/// under load they queue behind the webhook inserts.
///
/// A crash of PostgreSQL itself (not of Helpline) can lose the last such
/// commits, never any other: a later ordinary commit flushes them with it.
/// Losing one only means work is done again, which every job is safe to:
/// a lost claim is claimed again, a lost "processed" processes the event
/// again (finishing a turn twice changes nothing), a lost retry time retries
/// at once, a lost mark in flight starts the turn again
/// ([`turns::mark_in_flight`]). Writes whose loss a customer could see
/// (messages, webhook receipts) keep the default, and wait.
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

/// Limits every pooled session runs under, so that a mistake that leaves a
/// lock held can only stall a conversation for seconds, never freeze it:
/// a session idle inside a transaction is ended by PostgreSQL (its locks go
/// with it), and a statement waiting for a lock gives up with SQLSTATE
/// `55P03`, which callers treat as a failure that may pass (events and
/// turns are retried, a customer's message is answered with a retryable
/// error). No transaction in Helpline waits on anything but its own
/// statements, so neither limit is reached in normal work. Set after
/// connecting rather than as startup options, which connection poolers
/// such as PgBouncer refuse.
pub const SESSION_LIMITS: &str =
    "SET idle_in_transaction_session_timeout = '10s'; SET lock_timeout = '5s'";

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, SESSION_LIMITS).await?;
                Ok(())
            })
        })
        // sqlx pings an idle connection before handing it out, a round trip
        // per acquire, kept on purpose: without it every stale connection
        // fails a statement after a PostgreSQL restart, and a turn whose
        // failure cannot be recorded either (on another stale connection)
        // is left waiting.
        .connect_with(options.application_name("helpline"))
        .await
}

/// How the work run by [`in_transaction`] ends its transaction.
pub enum Ending<T> {
    Commit(T),
    /// Nothing to keep: for work that found there was nothing to do.
    RollBack(T),
}

/// Runs `work` in a transaction on `conn` and ends the transaction before
/// returning, whichever way the work ends (an error rolls it back). A
/// dropped sqlx transaction only queues its rollback, sent with the
/// connection's next statement; on a connection kept for later statements
/// (a worker's [`KeptConnection`]) that can come long after, with the transaction's
/// locks held all the while. Every transaction in Helpline goes through
/// here.
pub async fn in_transaction<T, E>(
    conn: &mut PgConnection,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<Ending<T>, E>,
) -> Result<T, E>
where
    E: From<sqlx::Error>,
{
    let mut tx = sqlx::Connection::begin(conn).await?;
    match work(&mut tx).await {
        Ok(Ending::Commit(done)) => {
            tx.commit().await?;
            Ok(done)
        }
        Ok(Ending::RollBack(done)) => {
            tx.rollback().await?;
            Ok(done)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                // The work's own error says more; a lost connection ends
                // its transaction by itself.
                tracing::debug!(error = %rollback, "rollback after a failed transaction failed");
            }
            Err(e)
        }
    }
}

/// A pooled connection kept from one statement to the next by a task that
/// runs many in a row (a receipt writer; a worker loop while it is busy,
/// for its claims and outcomes). sqlx pings a connection when the
/// pool hands it out and again when it comes back: two round trips per
/// statement that a kept connection does not pay.
///
/// A statement that fails because the kept connection is gone (PostgreSQL
/// restarted, say) runs once more on a fresh one, which the pool has just
/// checked. Only statements that are safe to run twice belong here.
pub struct KeptConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    /// Whether `conn` served an earlier statement (and may have gone stale
    /// since), rather than coming fresh from the pool.
    reused: bool,
}

impl KeptConnection {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            conn: None,
            reused: false,
        }
    }

    /// The kept connection, or one from the pool.
    pub async fn acquire(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.reused = self.conn.is_some();
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    /// Call when a statement on the connection failed. The connection goes
    /// back to the pool, which tests it and closes it if it is broken. Says
    /// whether to run the statement once more: only when a kept connection
    /// turned out to be gone.
    pub fn failed(&mut self, e: &sqlx::Error) -> bool {
        self.conn = None;
        self.reused && is_connection_lost(e)
    }

    /// Gives the connection back, so that closing the pool need not wait.
    pub fn release(&mut self) {
        self.conn = None;
    }
}

/// Runs a statement on a [`KeptConnection`], and once more on a fresh one
/// if the kept one turns out to be gone: `on_kept_connection!(kept, |conn| query(conn))`
/// where `query(conn)` is a future of `Result<_, sqlx::Error>`.
macro_rules! on_kept_connection {
    ($kept:expr, |$conn:ident| $statement:expr) => {{
        let kept: &mut $crate::storage::KeptConnection = $kept;
        loop {
            let $conn = kept.acquire().await?;
            match $statement.await {
                Ok(done) => break Ok(done),
                Err(e) => {
                    if !kept.failed(&e) {
                        break Err(e);
                    }
                    tracing::debug!(error = %e, "kept connection lost; once more on a fresh one");
                }
            }
        }
    }};
}
pub(crate) use on_kept_connection;

/// Whether a statement failed because its connection is gone rather than
/// because of what it asked.
fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P: the server is shutting down.
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    /// A transaction opened anywhere else could end by being dropped, its
    /// rollback left queued on its connection.
    #[test]
    fn transactions_are_opened_only_by_in_transaction() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut openers = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let count = text.matches(".begin()").count()
                        + text.matches("Connection::begin(").count();
                    if count > 0 {
                        let file = path.strip_prefix(&src).unwrap().to_owned();
                        openers.push((file.to_string_lossy().into_owned(), count));
                    }
                }
            }
        }
        // This file: `in_transaction` itself, and the patterns above.
        assert_eq!(openers, [("storage/mod.rs".to_owned(), 3)]);
    }
}
