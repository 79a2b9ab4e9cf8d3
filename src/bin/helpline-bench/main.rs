//! `helpline-bench`: how fast, how many, at what cost (BENCHMARKS.md).
//!
//! Starts what it needs (PostgreSQL as Helpline does by default, Helpline
//! instances, the simulator with zero model latency), drives load over
//! loopback and prints one table per scenario. Every figure that depends on
//! the machine is printed beside a baseline measured in the same run.
//! Every loop is bounded by a count and a time; traffic goes only to
//! 127.0.0.1.

mod agents;
mod fanout;
mod harness;
mod idle;
mod ingest;
mod turns;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use harness::Server;

#[derive(Parser)]
#[command(
    name = "helpline-bench",
    about = "Benchmarks Helpline on this machine and prints one table per scenario",
    after_help = "Environment: DATABASE_URL runs against that server instead of a private cluster; HELPLINE_* variables override the settings of every instance it starts (HELPLINE_WORKERS=16, say); RUST_LOG chooses which logs are shown (default: warnings, but the workers' errors only). BENCHMARKS.md says what each figure is."
)]
struct Cli {
    /// Scenarios to run (`serve` is internal: one instance as a child process).
    #[arg(required = true)]
    scenarios: Vec<Scenario>,
    /// Tiny sizes, a few seconds in all: checks the benchmark still runs.
    #[arg(long)]
    smoke: bool,
    /// Where the private PostgreSQL cluster lives (default target/bench-pg);
    /// ignored when DATABASE_URL is set.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Scenario 2's rates, in turns per second, run in this order; table 2b
    /// profiles the last (default 50,100,200; 20 with --smoke).
    #[arg(long, value_delimiter = ',', value_name = "RATES")]
    turn_rates: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1. Signed webhook deliveries at 1, 8 and 32 concurrent senders.
    Ingest,
    /// 2. Customer frame to assistant frame, at a sustained rate.
    Turns,
    /// 3. Idle customer sockets: memory per socket, CPU while idle.
    Idle,
    /// 4. Sockets on one instance, webhooks to another.
    Fanout,
    /// 5. Agent consoles watching everything while scenario 2 runs.
    Agents,
    /// All of the above, in order.
    All,
    #[value(hide = true)]
    Serve,
}

/// What the scenarios share.
pub struct Bench {
    pub server: Server,
    pub smoke: bool,
    /// Scenario 2's rates, when asked for other than its defaults.
    pub turn_rates: Vec<f64>,
    pub http: reqwest::Client,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.scenarios.contains(&Scenario::Serve) {
        return harness::serve_child().await;
    }
    anyhow::ensure!(
        cli.turn_rates.iter().all(|r| r.is_finite() && *r > 0.0),
        "--turn-rates: each rate must be a positive number of turns per second"
    );
    harness::init_tracing();
    let mut scenarios = cli.scenarios.clone();
    if scenarios.contains(&Scenario::All) {
        scenarios = vec![
            Scenario::Ingest,
            Scenario::Turns,
            Scenario::Idle,
            Scenario::Fanout,
            Scenario::Agents,
        ];
    }
    scenarios.dedup();

    println!(
        "# helpline-bench{}",
        if cli.smoke { " --smoke" } else { "" }
    );
    println!();
    println!("{}", machine());
    let bench = Bench {
        server: Server::start(cli.data_dir).await?,
        smoke: cli.smoke,
        turn_rates: cli.turn_rates,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
    };
    let mut failed = false;
    for scenario in scenarios {
        let result = match scenario {
            Scenario::Ingest => ingest::run(&bench).await,
            Scenario::Turns => turns::run(&bench).await,
            Scenario::Idle => idle::run(&bench).await,
            Scenario::Fanout => fanout::run(&bench).await,
            Scenario::Agents => agents::run(&bench).await,
            Scenario::All | Scenario::Serve => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("scenario failed: {e:#}");
            failed = true;
        }
    }
    bench.server.stop().await;
    if failed {
        anyhow::bail!("some scenarios failed");
    }
    Ok(())
}

/// One line about the machine: CPU model, cores, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {model}, {cores} cores, {mem_gb:.0} GB RAM, Linux {}",
        kernel.trim()
    )
}
