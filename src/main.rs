//! The `helpline` command: run the service (default) or the OpenAI simulator.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use helpline::{
    config::Config,
    simulator::{Behaviour, Simulator},
    startup::{Application, DatabaseSource},
    telemetry,
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

#[tokio::main]
async fn main() {
    telemetry::init("info,sqlx=warn,tower_http=warn");
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
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
    let config = Config::from_env().map_err(|problems| {
        anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  "))
    })?;
    let app = Application::build(config).await?;
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
