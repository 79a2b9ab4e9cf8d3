//! Scenario 1, webhook ingest: signed `response.completed` deliveries with
//! unique ids at 1, 8 and 32 concurrent senders, beside plain single-row
//! INSERTs of the same payload into a table of the same shape, through the
//! instance's own pool, at the same concurrency.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    harness::{completed_event, ms, post_webhook, ratio, Instance, Samples, Sim, Table},
    Bench,
};

/// Rows: senders, and whether the deliveries are events Helpline acts on.
/// The last row is a diagnostic: an event type Helpline stores as
/// `ignored`, so that the workers have nothing to do and the row measures
/// the receipt path alone (verify, parse, store, answer).
const ROWS: [(usize, bool); 4] = [(1, true), (8, true), (32, true), (32, false)];
/// Alternating slices per concurrency, each side.
const ROUNDS: usize = 6;

pub async fn run(bench: &Bench) -> anyhow::Result<()> {
    // Helpline and the baseline take turns, a short slice each, so that
    // the machine's drift (other tenants, the disk's flush times) falls on
    // both alike.
    let (rounds, slice, max_ops, warmup) = if bench.smoke {
        (1, Duration::from_millis(300), 60, 10)
    } else {
        (ROUNDS, Duration::from_secs(1), 50_000, 500)
    };
    let db = bench.server.new_database("ingest").await?;
    let sim = Arc::new(Sim::start().await?);
    let instance = Instance::start(&sim.env(&db)).await?;
    let pool = instance.pool.clone();
    sqlx::query("CREATE TABLE bench_baseline (LIKE webhook_events INCLUDING ALL)")
        .execute(&pool)
        .await?;

    let webhook = {
        let (http, url, sim) = (
            bench.http.clone(),
            instance.webhook_url.clone(),
            sim.clone(),
        );
        move |acted_on: bool| {
            let (http, url, sim) = (http.clone(), url.clone(), sim.clone());
            async move {
                let id = format!("wh_{}", Uuid::new_v4().simple());
                let mut body = completed_event(&format!("resp_bench_{}", Uuid::new_v4().simple()));
                if !acted_on {
                    body = body.replace("response.completed", "batch.completed");
                }
                let status = post_webhook(&http, &url, &sim.secret, &id, &body).await?;
                if status != 200 {
                    bail!("webhook answered {status}");
                }
                Ok(())
            }
        }
    };
    let insert = {
        let pool = pool.clone();
        move |_| {
            let pool = pool.clone();
            async move {
                let id = format!("wh_{}", Uuid::new_v4().simple());
                let body = completed_event(&format!("resp_bench_{}", Uuid::new_v4().simple()));
                // Parsed as the endpoint parses it, stored as it stores it.
                let payload: serde_json::Value = serde_json::from_str(&body)?;
                sqlx::query(
                    "INSERT INTO bench_baseline (webhook_id, event_id, event_type, payload, status, request_id)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(payload["id"].as_str())
                .bind("response.completed")
                .bind(Json(&payload))
                .bind("pending")
                .bind(Some(Uuid::new_v4().to_string()))
                .execute(&pool)
                .await?;
                Ok(())
            }
        }
    };

    // Warm both paths up (connections, caches) before measuring.
    drive(8, Duration::from_secs(10), warmup, {
        let webhook = webhook.clone();
        move |_| webhook(true)
    })
    .await?;
    drive(8, Duration::from_secs(10), warmup, insert.clone()).await?;
    drain(&pool).await?;

    let mut table = Table::new(
        format!(
            "1. Webhook ingest ({rounds} alternating slices of {} s per side and row; baseline: single-row INSERTs through the same pool)",
            slice.as_secs_f64()
        ),
        &[
            "senders",
            "helpline accepted/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "baseline inserts/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "rate ratio",
            "p99 ratio",
            "left to process",
        ],
    );
    for (senders, acted_on) in ROWS {
        let webhook = {
            let webhook = webhook.clone();
            move |_| webhook(acted_on)
        };
        let (mut ok, mut secs, mut lat) = (0, 0.0, Samples::default());
        let (mut base_ok, mut base_secs, mut base) = (0, 0.0, Samples::default());
        let mut backlog = 0;
        for _ in 0..rounds {
            let (n, s, l) = drive(senders, slice, max_ops, webhook.clone()).await?;
            (ok, secs) = (ok + n, secs + s);
            lat.extend(l);
            backlog += drain(&pool).await?;
            let (n, s, l) = drive(senders, slice, max_ops, insert.clone()).await?;
            (base_ok, base_secs) = (base_ok + n, base_secs + s);
            base.extend(l);
        }
        let rate = ok as f64 / secs;
        let base_rate = base_ok as f64 / base_secs;
        table.row(vec![
            if acted_on {
                senders.to_string()
            } else {
                format!("{senders}, receipts only")
            },
            format!("{rate:.0}"),
            ms(lat.p50()),
            ms(lat.p99()),
            ms(lat.max()),
            format!("{base_rate:.0}"),
            ms(base.p50()),
            ms(base.p99()),
            ms(base.max()),
            ratio(rate, base_rate),
            ratio(lat.p99().as_secs_f64(), base.p99().as_secs_f64()),
            format!("{:.0}%", 100.0 * backlog as f64 / ok.max(1) as f64),
        ]);
    }
    table.note("Targets: rate ratio >= 0.70 at 32 senders; helpline p99 < 10 ms at 1 sender.");
    table.note("Helpline's figure includes the HTTP client, signature verification, JSON parsing and the workers, which take each accepted event (handed to them by the instance that recorded it) and fetch its response meanwhile (as in production).");
    table.note("Receipts only (a diagnostic, not a target): the same deliveries with an event type Helpline stores but does not act on (`batch.completed`), so that no worker runs; the difference from the row above is what processing the events costs on the same two cores, including the simulator's side of each fetch.");
    table.note("Left to process: the accepted events the workers had not finished when a Helpline slice ended, as a share of those accepted; they are processed before the baseline's slice starts, so that neither side pays for the other's work.");
    table.print();

    instance.stop().await;
    bench.server.drop_database(&db).await;
    Ok(())
}

/// Runs `op` from `senders` concurrent loops until `duration` has passed or
/// `max_ops` were started. Returns the successes, the seconds taken and the
/// latency of each success.
pub async fn drive<F, Fut>(
    senders: usize,
    duration: Duration,
    max_ops: u64,
    op: F,
) -> anyhow::Result<(usize, f64, Samples)>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..senders {
        let (op, next) = (op.clone(), next.clone());
        loops.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut failures = 0usize;
            while started.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(e) => {
                        failures += 1;
                        if failures == 1 {
                            eprintln!("note: an operation failed: {e:#}");
                        }
                    }
                }
            }
            (samples, failures)
        }));
    }
    let mut all = Samples::default();
    let mut failures = 0;
    for l in loops {
        let (samples, failed) = l.await?;
        all.extend(samples);
        failures += failed;
    }
    let secs = started.elapsed().as_secs_f64();
    if failures > 0 && all.len() == 0 {
        bail!("every operation failed");
    }
    Ok((all.len(), secs, all))
}

/// Waits until the workers have processed every pending event. Returns how
/// many there were.
async fn drain(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    let count = || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events WHERE status = 'pending'")
            .fetch_one(pool)
    };
    let first = count().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut left = first;
    while left > 0 {
        if Instant::now() > deadline {
            bail!("{left} events still pending after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = count().await?;
    }
    Ok(first)
}
