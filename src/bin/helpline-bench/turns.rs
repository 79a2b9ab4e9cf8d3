//! Scenario 2, turn latency: many conversations, each sending a message and
//! waiting for its reply; time from the customer frame leaving the client
//! to the assistant frame arriving, at a stated sustained rate. Beside it:
//! single-row INSERTs through the same pool at the same rate, in slices
//! that alternate with the turns'. The database statements per turn are
//! counted from sqlx's own statement log.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use sqlx::types::Json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    harness::{
        self, completed_event, create_visitors, ms, ratio, CpuMeter, Customer, Instance, Samples,
        Sim, Stalls, Table, PATIENCE, STATEMENTS,
    },
    Bench,
};

struct Sizes {
    conversations: usize,
    /// Each rate is run in turn; table 2b profiles the last.
    rates: Vec<f64>,
    duration: Duration,
    /// Each rate's turns and its baseline alternate in this many slices.
    slices: u32,
}

pub async fn run(bench: &Bench) -> anyhow::Result<()> {
    let sizes = if bench.smoke {
        Sizes {
            conversations: 4,
            rates: vec![20.0],
            duration: Duration::from_millis(500),
            slices: 1,
        }
    } else {
        Sizes {
            conversations: 200,
            rates: vec![50.0, 100.0, 200.0],
            duration: Duration::from_secs(10),
            slices: 5,
        }
    };
    let sizes = Sizes {
        rates: match &bench.turn_rates[..] {
            [] => sizes.rates,
            asked => asked.to_vec(),
        },
        ..sizes
    };
    let Load {
        db,
        sim: _sim,
        instance,
        mut conversations,
    } = Load::start(bench, "turns", sizes.conversations).await?;
    sqlx::query("CREATE TABLE bench_baseline (LIKE webhook_events INCLUDING ALL)")
        .execute(&instance.pool)
        .await?;

    let mut table = Table::new(
        format!(
            "2. Turn latency ({} conversations, {} s per rate in {} slices; baseline: single-row INSERTs at the same rate, through the same pool, in slices alternating with the turns')",
            sizes.conversations,
            sizes.duration.as_secs_f64(),
            sizes.slices
        ),
        &[
            "target /s",
            "turns",
            "achieved /s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "statements/turn",
            "WAL flushes/turn",
            "CPU ms/turn: this process",
            "CPU ms/turn: PostgreSQL",
            "baseline p50 ms",
            "baseline p99 ms",
            "p99 ratio",
            "baseline PostgreSQL CPU ms/insert",
        ],
    );
    let mut profile = Vec::new();
    let mut profiled_turns = 0;
    let mut slow_notes = Vec::new();
    for &rate in &sizes.rates {
        // Turns and the baseline take turns, slice by slice, so that a slow
        // phase of the machine (its disk's flushes, other tenants) falls on
        // both alike.
        harness::reset_statements();
        let slice = sizes.duration / sizes.slices;
        let max_turns = (rate * slice.as_secs_f64()).ceil() as usize;
        let (mut latency, mut secs, mut slow) = (Samples::default(), 0.0, Vec::new());
        let (mut base, mut base_pg_cpu) = (Samples::default(), Duration::ZERO);
        let (mut own_cpu, mut pg_cpu, mut wal, mut statements) =
            (Duration::ZERO, Duration::ZERO, 0, 0);
        let started = Instant::now();
        let stalls = Stalls::watch(&bench.server.probe_dir);
        for _ in 0..sizes.slices {
            let offset = started.elapsed().as_secs_f64();
            let cpu = CpuMeter::start();
            let (flushes, sent) = (
                harness::wal_flushes(&instance.pool).await,
                STATEMENTS.load(Relaxed),
            );
            harness::count_statements(true);
            let run = conversations.run_at(rate, max_turns, slice).await;
            harness::count_statements(false);
            let run = run?;
            statements += STATEMENTS.load(Relaxed) - sent;
            wal += harness::wal_flushes(&instance.pool).await - flushes;
            let (own, pg) = cpu.used();
            (own_cpu, pg_cpu) = (own_cpu + own, pg_cpu + pg);
            latency.extend(run.latency);
            secs += run.secs;
            slow.extend(run.slow.into_iter().map(|(at, took)| (offset + at, took)));

            let cpu = CpuMeter::start();
            let (samples, _) = baseline(&instance, rate, max_turns, slice).await?;
            base_pg_cpu += cpu.used().1;
            base.extend(samples);
        }
        slow_notes.extend(stalls.stop(&format!("{rate:.0}/s")).await);
        slow_notes.extend(TurnRun::slow_note(&slow, rate));
        profile = harness::statement_profile();
        let turns = latency.len();
        profiled_turns = turns;
        let p99 = latency.p99();
        table.row(vec![
            format!("{rate:.0}"),
            turns.to_string(),
            format!("{:.0}", turns as f64 / secs),
            ms(latency.p50()),
            ms(p99),
            ms(latency.max()),
            format!("{:.1}", statements as f64 / turns.max(1) as f64),
            format!("{:.1}", wal as f64 / turns.max(1) as f64),
            cpu_ms_each(own_cpu, turns),
            cpu_ms_each(pg_cpu, turns),
            ms(base.p50()),
            ms(base.p99()),
            ratio(p99.as_secs_f64(), base.p99().as_secs_f64()),
            cpu_ms_each(base_pg_cpu, base.len()),
        ]);
    }
    let turns = profiled_turns;
    table.note("Target: p99 < 50 ms at 200 turns/s.");
    for note in slow_notes {
        table.note(note);
    }
    table.note("CPU: user and system time while the turns ran, divided by the turns: of this process (Helpline, the simulator and the load's clients, all in process) and of PostgreSQL's processes (every process named `postgres` on the machine). The baseline's column is PostgreSQL's CPU per insert: a turn's database work counted in single-row inserts.");
    table.note("Statements: every statement this process sent while the turns ran (sqlx's statement log, BEGIN and COMMIT included; the pool's pings of a connection, before handing it out and after taking it back, are not logged), divided by the turns. Workers' idle polls fall in the same window.");
    table.note("WAL flushes: how many times PostgreSQL flushed its WAL to disk while the turns ran (`pg_stat_wal.wal_sync`, the whole server), divided by the turns. A commit that waits for the disk costs one unless it shares another's; the machine's disk may stall as their rate rises (BENCHMARKS.md, \"Findings\").");
    table.note(format!("Stalls: listed per rate when a step of one of three probes took over {} ms: the disk (4 KiB written and flushed beside the database every 50 ms), a thread of this process and a task on its runtime (each sleeping 5 ms at a time).", Stalls::LATE.as_millis()));
    table.print();

    let mut profile_table = Table::new(
        "2b. Where a turn's database time goes (at the last rate; statements per turn, by kind)",
        &["statement", "per turn", "ms per turn", "ms each"],
    );
    for (summary, count, secs) in profile.iter().take(16) {
        profile_table.row(vec![
            summary.clone(),
            format!("{:.2}", *count as f64 / turns.max(1) as f64),
            format!("{:.3}", secs * 1000.0 / turns.max(1) as f64),
            format!("{:.3}", secs * 1000.0 / (*count).max(1) as f64),
        ]);
    }
    profile_table.note("Time is as sqlx measures it in the client: from sending the statement to its last row, including waiting for the server.");
    profile_table.print();

    conversations.stop().await;
    instance.stop().await;
    bench.server.drop_database(&db).await;
    Ok(())
}

/// CPU time per item, in milliseconds.
fn cpu_ms_each(cpu: Duration, n: usize) -> String {
    format!("{:.2}", cpu.as_secs_f64() * 1000.0 / n.max(1) as f64)
}

/// Scenario 2's load, ready to run: a fresh database, the simulator, one
/// instance, and `n` conversations that have each had their first turn
/// (which also creates the OpenAI Conversation; later turns do not).
pub struct Load {
    pub db: String,
    pub sim: Sim,
    pub instance: Instance,
    pub conversations: Conversations,
}

impl Load {
    pub async fn start(bench: &Bench, label: &str, n: usize) -> anyhow::Result<Self> {
        let db = bench.server.new_database(label).await?;
        let sim = Sim::start().await?;
        let instance = Instance::start(&sim.env(&db)).await?;
        sim.sim.set_webhook_url(&instance.webhook_url);
        let tokens = create_visitors(&instance.pool, n).await?;
        let customers = connect_all(&instance.ws_url(), &tokens).await?;
        let mut conversations = Conversations::spawn(customers);
        conversations.run_at(50.0, n, PATIENCE).await?;
        Ok(Self {
            db,
            sim,
            instance,
            conversations,
        })
    }

    pub async fn stop(self, bench: &Bench) {
        self.conversations.stop().await;
        self.instance.stop().await;
        bench.server.drop_database(&self.db).await;
    }
}

/// Connects one customer socket per token, 32 at a time.
pub async fn connect_all(url: &str, tokens: &[String]) -> anyhow::Result<Vec<Customer>> {
    let mut customers = Vec::with_capacity(tokens.len());
    for chunk in tokens.chunks(32) {
        let connected =
            futures::future::join_all(chunk.iter().map(|token| Customer::connect(url, token)))
                .await;
        for c in connected {
            customers.push(c?);
        }
    }
    Ok(customers)
}

/// One task per conversation, each running a turn when told to.
pub struct Conversations {
    go: Vec<mpsc::Sender<()>>,
    done: mpsc::Receiver<(usize, anyhow::Result<(Instant, Duration)>)>,
    idle: VecDeque<usize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one run of [`Conversations::run_at`] measured.
#[derive(Default)]
pub struct TurnRun {
    pub latency: Samples,
    /// From the first start to the last reply.
    pub secs: f64,
    /// Turns slower than [`TurnRun::SLOW`]: when each started (seconds
    /// into the run) and how long it took. Started all within one stretch,
    /// they point at a stall of the whole instance or machine; scattered,
    /// at single turns that waited (a wake-up that reached no worker waits
    /// for the poll).
    pub slow: Vec<(f64, Duration)>,
}

impl TurnRun {
    pub const SLOW: Duration = Duration::from_millis(250);

    /// A table note on slow turns (gathered from one run or several), if
    /// there were any.
    pub fn slow_note(slow: &[(f64, Duration)], rate: f64) -> Option<String> {
        let first = slow.iter().map(|(at, _)| *at).reduce(f64::min)?;
        let last = slow.iter().map(|(at, _)| *at).reduce(f64::max)?;
        Some(format!(
            "Slow turns at {rate:.0}/s: {} over {} ms, started between {first:.2} s and {last:.2} s into the run.",
            slow.len(),
            Self::SLOW.as_millis(),
        ))
    }
}

impl Conversations {
    fn spawn(customers: Vec<Customer>) -> Self {
        let (done_tx, done) = mpsc::channel(customers.len().max(1));
        let mut go = Vec::new();
        let mut tasks = Vec::new();
        for (i, mut customer) in customers.into_iter().enumerate() {
            let (go_tx, mut go_rx) = mpsc::channel::<()>(1);
            let done_tx = done_tx.clone();
            go.push(go_tx);
            tasks.push(tokio::spawn(async move {
                while go_rx.recv().await.is_some() {
                    let started = Instant::now();
                    let result = async {
                        customer.send_message("Where is my order?").await?;
                        customer.next_assistant().await?;
                        Ok((started, started.elapsed()))
                    }
                    .await;
                    if done_tx.send((i, result)).await.is_err() {
                        break;
                    }
                }
                customer.close().await;
            }));
        }
        let idle = (0..go.len()).collect();
        Self {
            go,
            done,
            idle,
            tasks,
        }
    }

    /// Starts a turn every 1/`rate` s on an idle conversation (waiting for
    /// one when none is idle), until `max_turns` were started or `duration`
    /// has passed; then waits for the turns in flight.
    pub async fn run_at(
        &mut self,
        rate: f64,
        max_turns: usize,
        duration: Duration,
    ) -> anyhow::Result<TurnRun> {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut run = TurnRun::default();
        let mut record = |(at, latency): (Instant, Duration)| {
            run.latency.push(latency);
            if latency > TurnRun::SLOW {
                run.slow.push(((at - started).as_secs_f64(), latency));
            }
        };
        let (mut started_turns, mut in_flight) = (0usize, 0usize);
        while started_turns < max_turns && started.elapsed() < duration {
            tokio::select! {
                _ = ticker.tick(), if !self.idle.is_empty() => {
                    let i = self.idle.pop_front().expect("an idle conversation");
                    self.go[i].send(()).await?;
                    started_turns += 1;
                    in_flight += 1;
                }
                Some((i, result)) = self.done.recv() => {
                    record(result?);
                    self.idle.push_back(i);
                    in_flight -= 1;
                }
            }
        }
        while in_flight > 0 {
            let (i, result) = tokio::time::timeout(PATIENCE, self.done.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("conversation tasks ended"))?;
            record(result?);
            self.idle.push_back(i);
            in_flight -= 1;
        }
        run.secs = started.elapsed().as_secs_f64();
        Ok(run)
    }

    pub async fn stop(self) {
        drop(self.go);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Single-row INSERTs (the webhook's payload) started at `rate`, each
/// timed, through the instance's pool.
async fn baseline(
    instance: &Instance,
    rate: f64,
    max: usize,
    duration: Duration,
) -> anyhow::Result<(Samples, f64)> {
    let pool = instance.pool.clone();
    let body = Arc::new(completed_event("resp_bench_baseline"));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut running = Vec::new();
    while running.len() < max && started.elapsed() < duration {
        ticker.tick().await;
        let (pool, body) = (pool.clone(), body.clone());
        running.push(tokio::spawn(async move {
            let t = Instant::now();
            let payload: serde_json::Value = serde_json::from_str(&body)?;
            sqlx::query(
                "INSERT INTO bench_baseline (webhook_id, event_id, event_type, payload, status)
                 VALUES ($1, $2, $3, $4, 'pending')",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(payload["id"].as_str())
            .bind("response.completed")
            .bind(Json(&payload))
            .execute(&pool)
            .await?;
            anyhow::Ok(t.elapsed())
        }));
    }
    let mut samples = Samples::default();
    for r in running {
        samples.push(tokio::time::timeout(PATIENCE, r).await???);
    }
    Ok((samples, started.elapsed().as_secs_f64()))
}
