//! Wiring: database (given or private), AI (OpenAI or the built-in
//! simulator), the HTTP app, the notification listener, the workers and the
//! retention job.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{serve::ListenerExt, Router};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::services::ServeDir;

use tower_sessions_sqlx_store::PostgresStore;

use crate::{
    admin, agents,
    ai::AiClient,
    chat,
    config::Config,
    hub::{self, Hub},
    observe::{Health, Metrics},
    probes, retention, security_headers,
    simulator::{Behaviour, Simulator},
    state::AppState,
    storage::{self, private_pg::PrivatePostgres},
    telemetry,
    webhooks::{self, signature::WebhookSecret},
    worker,
};

/// How long shutdown waits for sockets and in-flight jobs.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP routes. Kept apart from `Application` so the shape is easy to see.
pub fn app(state: AppState) -> Router {
    let static_dir = static_dir(&state.config);
    let sessions = PostgresStore::new(state.pool.clone());
    let https = state
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let routes = Router::new()
        .merge(chat::router(&static_dir))
        .merge(agents::router(sessions, https))
        .merge(admin::router())
        .merge(webhooks::router())
        .merge(probes::router())
        .fallback_service(ServeDir::new(static_dir));
    let mut routes = routes.layer(axum::middleware::from_fn(security_headers::add));
    if https {
        routes = routes.layer(axum::middleware::from_fn(security_headers::https_only));
    }
    telemetry::layers(routes).with_state(state)
}

/// `HELPLINE_STATIC_DIR`, or `static/` next to the sources.
fn static_dir(config: &Config) -> PathBuf {
    config
        .static_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static")))
}

/// Connects to `DATABASE_URL`, or starts (or reuses) the private cluster.
/// Does not migrate.
pub async fn open_database(
    config: &Config,
) -> anyhow::Result<(sqlx::PgPool, Option<PrivatePostgres>)> {
    let (database_url, private_pg) = match &config.database.url {
        Some(url) => (url.expose().to_owned(), None),
        None => {
            let dir = config.database.data_dir.clone();
            let pg = tokio::task::spawn_blocking(move || PrivatePostgres::ensure_running(&dir))
                .await??;
            storage::ensure_database(&pg.url("postgres"), "helpline").await?;
            (pg.url("helpline"), Some(pg))
        }
    };
    let pool = storage::connect(&database_url, config.database.max_connections)
        .await
        .context("cannot connect to PostgreSQL")?;
    Ok((pool, private_pg))
}

/// Where the database came from, for the start-up report.
#[derive(Debug)]
pub enum DatabaseSource {
    Url,
    /// The private cluster, and the URL that reaches it (its socket).
    Private {
        data_dir: PathBuf,
        url: String,
    },
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    private_pg: Option<PrivatePostgres>,
    pub addr: SocketAddr,
    pub webhook_url: String,
    pub database: DatabaseSource,
    /// True when the built-in simulator stands in for OpenAI.
    pub demo_mode: bool,
    /// Names this process in logs and in `pg_stat_activity`.
    pub instance_id: uuid::Uuid,
}

impl Application {
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {} (HELPLINE_BIND)", config.bind))?;
        let addr = listener.local_addr()?;
        let webhook_url = format!("{}/api/webhooks/openai", config.public_url(addr));
        // The demo page (and anything else served here) may always use the widget.
        let own_url = config.public_url(addr);
        config.allowed_origins.allow_url(&own_url);
        tracing::info!(origins = %config.allowed_origins, "pages allowed to use the widget");
        let shutdown = CancellationToken::new();

        let storage::Database {
            pool,
            private: private_pg,
        } = storage::open(&config.database).await?;
        let database = match &private_pg {
            Some(pg) => DatabaseSource::Private {
                data_dir: pg.data_dir.clone(),
                url: pg.url("helpline"),
            },
            None => DatabaseSource::Url,
        };

        let metrics = Metrics::new();

        let timeout = config.delivery.openai_timeout;
        let (ai, webhook_secrets) = match &config.openai {
            Some(openai) => (
                AiClient::new(
                    &openai.base_url,
                    openai.api_key.expose(),
                    config.ai.clone(),
                    timeout,
                ),
                openai.webhook_secrets.clone(),
            ),
            None => {
                // Demo mode: a simulator on a private port, sharing a fresh secret.
                let (_, secret) = WebhookSecret::generate();
                let behaviour = Behaviour {
                    reply_delay_ms: config.demo_reply_delay.as_millis() as u64,
                    ..Behaviour::default()
                };
                let simulator =
                    Simulator::new(secret.clone(), Some(webhook_url.clone()), behaviour);
                let sim = simulator
                    .spawn(([127, 0, 0, 1], 0).into(), shutdown.clone())
                    .await?;
                (
                    AiClient::new(
                        &sim.base_url(),
                        "sk-helpline-demo",
                        config.ai.clone(),
                        timeout,
                    ),
                    vec![secret],
                )
            }
        };

        let ai = ai.with_metrics(metrics.clone());
        let demo_mode = config.openai.is_none();
        let limits = Arc::new(crate::limits::Limits::new(config.limits.clone()));
        // Recorded webhooks wake this instance's workers (no pg_notify:
        // see storage::inbox).
        let wakeups = Arc::new(crate::queue::Wakeups::default());
        let recorder = crate::queue::Recorder::start(
            pool.clone(),
            wakeups.any.clone(),
            crate::worker::EVENT_BATCH,
            crate::worker::lease(config.delivery.openai_timeout),
        );
        let state = AppState {
            recorder,
            pool,
            config: Arc::new(config),
            hub: Hub::default(),
            ai,
            webhook_secrets: Arc::new(webhook_secrets),
            shutdown,
            tasks: TaskTracker::new(),
            health: Health::default(),
            metrics,
            limits,
            wakeups,
        };
        Ok(Self {
            listener,
            state,
            private_pg,
            addr,
            webhook_url,
            database,
            demo_mode,
            instance_id: uuid::Uuid::new_v4(),
        })
    }

    /// Cancelling it stops the instance as a signal would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    pub fn pool(&self) -> sqlx::PgPool {
        self.state.pool.clone()
    }

    /// The instance's shared state (metrics, health, AI client…).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` resolves (or the shutdown token is cancelled),
    /// then drains: sockets are closed with 1001, workers finish their job.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            private_pg,
            instance_id,
            ..
        } = self;
        let shutdown = state.shutdown.clone();
        let tasks = state.tasks.clone();

        tasks.spawn(hub::listen(
            state.pool.clone(),
            state.hub.clone(),
            state.wakeups.clone(),
            shutdown.clone(),
            instance_id,
        ));
        worker::spawn(&state);
        tasks.spawn(retention::run(
            state.pool.clone(),
            state.config.retention.clone(),
            state.metrics.clone(),
            shutdown.clone(),
        ));

        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
        // For giving back, at the end, the events no worker took.
        let (receipts, pool) = (state.recorder.clone(), state.pool.clone());
        // Peer addresses feed the login throttle.
        let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        // Chat frames are small writes in quick succession (the echo, then
        // "thinking", then the reply): without TCP_NODELAY, Nagle's algorithm
        // holds each behind the peer's delayed ACK, up to 40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;

        shutdown.cancel();
        tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sockets or jobs did not finish within {DRAIN_TIMEOUT:?}");
        }
        // Events handed to this instance's workers that none took: to the
        // database queue, for the other instances, now rather than when
        // their leases run out.
        match receipts.release_untaken(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "gave untaken events back to the queue"),
            Err(e) => {
                tracing::warn!(error = %e, "could not give untaken events back to the queue; they wait for their leases")
            }
        }
        if let Some(pg) = private_pg {
            tokio::task::spawn_blocking(move || pg.stop()).await?;
        }
        served.context("HTTP server failed")
    }
}
