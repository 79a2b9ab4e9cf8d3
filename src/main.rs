//! The `helpline` command: run the service (default), check a setup
//! (`doctor`), handle dead webhook events, delete a customer's data, or run
//! the OpenAI simulator.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use helpline::{
    admin,
    ai::AiClient,
    config::{Config, DEFAULT_LOG_FILTER},
    doctor, retention,
    simulator::{Behaviour, Simulator},
    startup::{self, Application, DatabaseSource},
    storage, telemetry,
    webhooks::signature::WebhookSecret,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Helpline: a customer-support chatbot backend.
///
/// With no configuration it runs in demo mode: a private PostgreSQL in
/// ./.helpline and the built-in OpenAI simulator. Configuration comes from
/// helpline.toml (--config, HELPLINE_CONFIG, or ./helpline.toml when
/// present) and environment variables, which win; see
/// docs/configuration.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: ./helpline.toml when it exists).
    #[arg(long, global = true, env = "HELPLINE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run Helpline (the default).
    Serve,
    /// Check the configuration, the database, the OpenAI key and the public
    /// webhook URL; print the webhook URL and events to set up in OpenAI.
    /// Exits non-zero when something must be fixed.
    Doctor,
    /// Manage the agents who use the console at /agent/.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Inspect and replay webhook events whose processing failed for good.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Operate on stored conversations.
    Conversations {
        #[command(subcommand)]
        command: ConversationsCommand,
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
    /// Exit 0 if the instance at HELPLINE_BIND answers GET PATH with 200
    /// (the container health check).
    Probe {
        /// `/readyz` (ready to serve) or `/healthz` (the process lives).
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
}

#[derive(Subcommand)]
enum ConversationsCommand {
    /// Delete a customer's conversation (privacy request): its messages and
    /// AI turns, the visitor identity if nothing else of theirs is left, and
    /// first the conversation and responses stored at OpenAI.
    Delete {
        /// The conversation id (a UUID).
        id: Uuid,
        /// Delete only what Helpline stores, not the copies at OpenAI.
        #[arg(long)]
        local_only: bool,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Add an agent. The password is asked for (twice) on a terminal, read
    /// from standard input with --password-stdin, or generated and printed
    /// once with --generate-password.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "generate_password")]
        password_stdin: bool,
        /// Generate a password and print it once.
        #[arg(long)]
        generate_password: bool,
    },
    /// List agents.
    List,
    /// Disable an agent: signed out at once, and no longer able to sign in.
    Disable {
        #[arg(long)]
        email: String,
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
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Sim {
        bind,
        webhook_url,
        webhook_secret,
        reply_delay_ms,
    } = command
    {
        telemetry::init(DEFAULT_LOG_FILTER);
        return report(sim(bind, webhook_url, webhook_secret, reply_delay_ms).await);
    }

    let config = match Config::load(cli.config) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("helpline: invalid configuration:");
            for p in problems {
                eprintln!("  {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    telemetry::init_with(&config.log);
    match command {
        Command::Serve => report(serve(config).await),
        Command::Doctor => {
            println!("Helpline doctor");
            println!("  ok    configuration: no problems");
            let checked = doctor::run(&config).await;
            println!("{checked}");
            if checked.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Agents { command } => report(agents(config, command).await),
        Command::Webhooks { command } => report(webhooks(config, command).await),
        Command::Conversations {
            command: ConversationsCommand::Delete { id, local_only },
        } => report(delete_conversation(config, id, local_only).await),
        Command::Probe { path } => probe(&config, &path).await,
        Command::Sim { .. } => unreachable!("handled above"),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helpline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    println!("Helpline is running at http://{}/", app.addr);
    match &app.database {
        DatabaseSource::Private { data_dir, url } => {
            println!("  database: private PostgreSQL in {} ({url}, a socket only this user can reach); set DATABASE_URL to use your own", data_dir.display())
        }
        DatabaseSource::Url => println!("  database: DATABASE_URL"),
    }
    if app.demo_mode {
        println!("  demo mode: replies come from the built-in simulator; set OPENAI_API_KEY to use OpenAI");
    }
    println!("  webhook URL: {}", app.webhook_url);
    println!(
        "  health: /healthz, /readyz; metrics: /metrics; check a setup with `helpline doctor`"
    );
    app.run_until_stopped(shutdown_signal()).await
}

/// The agent commands work on the same database `serve` would use.
async fn agents(config: Config, command: AgentsCommand) -> anyhow::Result<()> {
    // Ask before touching the database, so a typo costs nothing.
    let password = match &command {
        AgentsCommand::Add {
            password_stdin: true,
            ..
        } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            Some(line.trim_end_matches(['\r', '\n']).to_owned())
        }
        AgentsCommand::Add {
            generate_password: false,
            ..
        } => {
            let first = rpassword::prompt_password("Password: ").map_err(|e| {
                anyhow::anyhow!(
                    "cannot read a password ({e}); use --password-stdin or --generate-password"
                )
            })?;
            let again = rpassword::prompt_password("Password again: ")?;
            if first != again {
                anyhow::bail!("the passwords differ");
            }
            Some(first)
        }
        _ => None,
    };
    let database = storage::open(&config.database).await?;
    let pool = &database.pool;
    let result = match command {
        AgentsCommand::Add { email, name, .. } => {
            match admin::add_agent(pool, &email, &name, password).await {
                Ok(Some(generated)) => {
                    println!("added {email}; its password (shown only now): {generated}");
                    Ok(())
                }
                Ok(None) => {
                    println!("added {email}");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        AgentsCommand::List => admin::print_agents(pool).await,
        AgentsCommand::Disable { email } => admin::disable_agent(pool, &email).await,
    };
    database.pool.close().await;
    if let Some(pg) = database.private {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    result
}

/// The webhook commands work on the same database `serve` would use.
async fn webhooks(config: Config, command: WebhooksCommand) -> anyhow::Result<()> {
    let database = storage::open(&config.database).await?;
    let pool = &database.pool;
    let result = match command {
        WebhooksCommand::Dead { json } => admin::print_dead(pool, json).await,
        WebhooksCommand::Show { webhook_id } => admin::print_event(pool, &webhook_id).await,
        WebhooksCommand::Replay { webhook_id } => admin::replay_dead(pool, &webhook_id).await,
    };
    database.pool.close().await;
    if let Some(pg) = database.private {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    result
}

async fn delete_conversation(config: Config, id: Uuid, local_only: bool) -> anyhow::Result<()> {
    let (pool, private_pg) = startup::open_database(&config).await?;
    let ai = match (&config.openai, local_only) {
        (Some(openai), false) => Some(AiClient::new(
            &openai.base_url,
            openai.api_key.expose(),
            config.ai.clone(),
            config.delivery.openai_timeout,
        )),
        _ => None,
    };
    let result = retention::delete_conversation(&pool, ai.as_ref(), id).await;
    pool.close().await;
    if let Some(pg) = private_pg {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    let done = result?;
    println!(
        "deleted conversation {id}: {} messages, {} AI turns{}",
        done.deleted.messages,
        done.deleted.turns,
        if done.deleted.visitor {
            ", and the visitor identity"
        } else {
            ""
        }
    );
    match (&config.openai, local_only) {
        (None, _) => println!("  demo mode: nothing was stored at OpenAI"),
        (Some(_), true) => {
            println!("  --local-only: the conversation and responses at OpenAI were left alone")
        }
        (Some(_), false) => println!(
            "  at OpenAI: {} response(s) deleted{}",
            done.openai_responses,
            done.openai_conversation
                .map(|c| format!(", conversation {c} deleted"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

async fn probe(config: &Config, path: &str) -> ExitCode {
    let mut addr = config.bind;
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    let url = format!("http://{addr}{path}");
    let answer = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
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
