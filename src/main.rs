//! The `helpline` command: run the service (default) or the OpenAI simulator.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use helpline::{
    admin,
    config::Config,
    simulator::{Behaviour, Simulator},
    startup::{Application, DatabaseSource},
    storage, telemetry,
    webhooks::signature::WebhookSecret,
};
use tokio_util::sync::CancellationToken;

/// Helpline: a customer-support chatbot backend.
///
/// With no configuration it runs in demo mode: a private PostgreSQL in
/// ./.helpline and the built-in OpenAI simulator. Configuration comes from
/// environment variables; see docs/configuration.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run Helpline (the default).
    Serve,
    /// Inspect and replay webhook events whose processing failed for good.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Run the OpenAI simulator as its own process.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8089")]
        bind: SocketAddr,
        /// Where to deliver webhooks, e.g. http://127.0.0.1:3000/api/webhooks/openai
        #[arg(long, env = "SIM_WEBHOOK_URL")]
        webhook_url: Option<String>,
        /// Signing secret (whsec_…); a fresh one is generated and printed when absent.
        #[arg(long, env = "OPENAI_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// How long a background response takes to finish, in milliseconds.
        #[arg(long, default_value_t = 400)]
        reply_delay_ms: u64,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// List dead events (newest first, at most 500).
    Dead {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one event, with its payload and last error.
    Show { webhook_id: String },
    /// Put a dead event back in the queue with a fresh attempt budget.
    Replay { webhook_id: String },
}

#[tokio::main]
async fn main() {
    telemetry::init("info,sqlx=warn,tower_http=warn");
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Webhooks { command } => webhooks(command).await,
        Command::Sim {
            bind,
            webhook_url,
            webhook_secret,
            reply_delay_ms,
        } => sim(bind, webhook_url, webhook_secret, reply_delay_ms).await,
    };
    if let Err(e) = result {
        eprintln!("helpline: {e:#}");
        std::process::exit(1);
    }
}

async fn serve() -> anyhow::Result<()> {
    let app = Application::build(load_config()?).await?;
    println!("Helpline is running at http://{}/", app.addr);
    match &app.database {
        DatabaseSource::Private { data_dir, port } => {
            println!("  database: private PostgreSQL in {} (127.0.0.1:{port}); set DATABASE_URL to use your own", data_dir.display())
        }
        DatabaseSource::Url => println!("  database: DATABASE_URL"),
    }
    if app.demo_mode {
        println!("  demo mode: replies come from the built-in simulator; set OPENAI_API_KEY to use OpenAI");
    }
    println!("  webhook URL: {}", app.webhook_url);
    app.run_until_stopped(shutdown_signal()).await
}

/// The webhook commands work on the same database `serve` would use.
async fn webhooks(command: WebhooksCommand) -> anyhow::Result<()> {
    let config = load_config()?;
    let database = storage::open(&config.database).await?;
    let result = match command {
        WebhooksCommand::Dead { json } => admin::print_dead(&database.pool, json).await,
        WebhooksCommand::Show { webhook_id } => {
            admin::print_event(&database.pool, &webhook_id).await
        }
        WebhooksCommand::Replay { webhook_id } => {
            admin::replay_dead(&database.pool, &webhook_id).await
        }
    };
    database.pool.close().await;
    if let Some(pg) = database.private {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    result
}

fn load_config() -> anyhow::Result<Config> {
    Config::from_env()
        .map_err(|problems| anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  ")))
}

async fn sim(
    bind: SocketAddr,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    reply_delay_ms: u64,
) -> anyhow::Result<()> {
    let secret = match webhook_secret {
        Some(raw) => {
            WebhookSecret::parse(&raw).map_err(|e| anyhow::anyhow!("OPENAI_WEBHOOK_SECRET: {e}"))?
        }
        None => {
            let (shown, secret) = WebhookSecret::generate();
            println!("webhook secret (set OPENAI_WEBHOOK_SECRET to this in Helpline): {shown}");
            secret
        }
    };
    let behaviour = Behaviour {
        reply_delay_ms,
        ..Behaviour::default()
    };
    let shutdown = CancellationToken::new();
    let handle = Simulator::new(secret, webhook_url.clone(), behaviour)
        .spawn(bind, shutdown.clone())
        .await?;
    println!(
        "OpenAI simulator listening; set OPENAI_BASE_URL={}",
        handle.base_url()
    );
    match webhook_url {
        Some(url) => println!("  webhooks go to {url}"),
        None => println!("  no --webhook-url: responses finish but no webhooks are sent"),
    }
    shutdown_signal().await;
    shutdown.cancel();
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
