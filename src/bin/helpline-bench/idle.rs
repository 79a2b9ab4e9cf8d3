//! Scenario 3, idle sockets: N customer sockets connected and idle on a
//! Helpline running as its own process, so that the load generator's memory
//! does not count. Memory per socket is the growth of the server's RSS
//! divided by N; CPU while idle is beside the same process's idle CPU
//! before any socket connected.

use std::time::{Duration, Instant};

use crate::{
    harness::{create_visitors, raise_fd_limit, ratio, ChildInstance, Customer, Sim, Table},
    Bench,
};

pub async fn run(bench: &Bench) -> anyhow::Result<()> {
    let (steps, settle, window): (&[usize], _, _) = if bench.smoke {
        (
            &[20, 50],
            Duration::from_millis(200),
            Duration::from_millis(500),
        )
    } else {
        (
            &[2_000, 20_000],
            Duration::from_secs(3),
            Duration::from_secs(5),
        )
    };
    let wanted = *steps.last().expect("a step");
    let limit = raise_fd_limit(wanted as u64 + 4096);
    // Each process holds one descriptor per socket plus its own few
    // hundred; without CAP_SYS_RESOURCE the hard limit caps N.
    let n = wanted.min(limit.saturating_sub(512) as usize);
    let steps: Vec<usize> = steps.iter().map(|&s| s.min(n)).collect();

    let db = bench.server.new_database("idle").await?;
    let sim = Sim::start().await?;
    let pool = helpline::storage::connect(&db, 4).await?;
    let tokens = create_visitors(&pool, n).await?;
    pool.close().await;
    let server = ChildInstance::start(&sim.env(&db)).await?;

    tokio::time::sleep(settle).await;
    let rss_before = server.rss_bytes()?;
    let cpu_before = idle_cpu(&server, window).await?;

    let mut table = Table::new(
        format!("3. Idle sockets (Helpline as its own process; open-file limit {limit})"),
        &[
            "sockets",
            "server RSS MB",
            "RSS delta / socket KB",
            "idle CPU %",
            "baseline idle CPU % (0 sockets)",
            "connect s",
        ],
    );
    table.row(vec![
        "0".into(),
        format!("{:.1}", rss_before as f64 / 1e6),
        "-".into(),
        format!("{cpu_before:.2}"),
        format!("{cpu_before:.2}"),
        "-".into(),
    ]);

    let url = server.ws_url();
    let mut sockets: Vec<Customer> = Vec::with_capacity(n);
    let mut cpu_last = cpu_before;
    for &step in &steps {
        let started = Instant::now();
        while sockets.len() < step {
            let end = (sockets.len() + 128).min(step);
            let batch = &tokens[sockets.len()..end];
            let connected =
                futures::future::join_all(batch.iter().map(|t| Customer::connect(&url, t))).await;
            for c in connected {
                sockets.push(c?);
            }
        }
        let connect_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let rss = server.rss_bytes()?;
        let cpu = idle_cpu(&server, window).await?;
        cpu_last = cpu;
        let per_socket = (rss.saturating_sub(rss_before)) as f64 / step as f64 / 1024.0;
        table.row(vec![
            step.to_string(),
            format!("{:.1}", rss as f64 / 1e6),
            format!("{per_socket:.1}"),
            format!("{cpu:.2}"),
            format!("{cpu_before:.2}"),
            format!("{connect_secs:.1}"),
        ]);
    }
    table.note(format!(
        "Target: 16 KB or less per socket (Centrifugo publishes about 30 KB). Idle CPU ratio at {n} sockets vs none: {}.",
        ratio(cpu_last, cpu_before)
    ));
    if n < wanted {
        table.note(format!(
            "{wanted} sockets were asked for; this machine's hard open-file limit ({limit}, not raisable without CAP_SYS_RESOURCE) allows {n}."
        ));
    }
    table.note("Each socket is a visitor whose hello opened a conversation (one hub channel per conversation).");
    table.print();

    for s in sockets {
        drop(s);
    }
    server.stop().await;
    bench.server.drop_database(&db).await;
    Ok(())
}

/// The process's CPU use over `window`, in percent of one core.
async fn idle_cpu(server: &ChildInstance, window: Duration) -> anyhow::Result<f64> {
    let before = server.cpu_time()?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let used = server.cpu_time()?.saturating_sub(before);
    Ok(used.as_secs_f64() / started.elapsed().as_secs_f64() * 100.0)
}
