//! Scenario 4, fan-out across instances: customer sockets on instance A,
//! webhooks delivered to instance B; push latency is from the webhook's
//! POST to the assistant frame arriving on each socket. Beside it, in the
//! same run and interleaved push by push, the baseline: webhooks delivered
//! to A itself.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{
    harness::{
        completed_event, create_visitors, ms, post_webhook, ratio, Customer, Instance, Samples,
        Sim, Table, PATIENCE,
    },
    turns::connect_all,
    Bench,
};

pub async fn run(bench: &Bench) -> anyhow::Result<()> {
    let (conversations, tabs, pushes) = if bench.smoke { (2, 2, 4) } else { (20, 3, 400) };
    let db = bench.server.new_database("fanout").await?;
    // No webhook URL: the benchmark delivers the webhooks itself, and
    // chooses the instance.
    let sim = Sim::start().await?;
    let a = Instance::start(&sim.env(&db)).await?;
    let b = Instance::start(&sim.env(&db)).await?;

    // `tabs` sockets per conversation (the same visitor's tabs), all on A.
    let tokens = create_visitors(&a.pool, conversations).await?;
    let mut sockets: Vec<Vec<Customer>> = Vec::new();
    for _ in 0..tabs {
        let tab = connect_all(&a.ws_url(), &tokens).await?;
        if sockets.is_empty() {
            sockets = tab.into_iter().map(|c| vec![c]).collect();
        } else {
            for (conversation, c) in sockets.iter_mut().zip(tab) {
                conversation.push(c);
            }
        }
    }

    let mut created = sim.sim.watch_created();
    let mut finished = sim.sim.watch_finished();
    let mut to_b = Samples::default();
    let mut to_a = Samples::default();
    // Warm-up: one turn per conversation (it also creates the OpenAI
    // Conversation), not measured.
    let total = conversations + pushes;
    for i in 0..total {
        let conv = i % conversations;
        let target = if i % 2 == 0 { &b } else { &a };
        sockets[conv][0].send_message("Where is my order?").await?;
        let response_id = tokio::time::timeout(PATIENCE, created.recv()).await??;
        // As OpenAI does, announce the response only once it has finished
        // (an event for a running one is retried a second later).
        while tokio::time::timeout(PATIENCE, finished.recv()).await?? != response_id {}
        let id = format!("wh_{}", Uuid::new_v4().simple());
        let body = completed_event(&response_id);
        let posted = Instant::now();
        let status =
            post_webhook(&bench.http, &target.webhook_url, &sim.secret, &id, &body).await?;
        anyhow::ensure!(status == 200, "webhook answered {status}");
        let arrivals = futures::future::join_all(sockets[conv].iter_mut().map(|s| async move {
            s.next_assistant().await?;
            anyhow::Ok(posted.elapsed())
        }))
        .await;
        if i < conversations {
            continue;
        }
        for arrival in arrivals {
            let latency: Duration = arrival?;
            if i % 2 == 0 {
                to_b.push(latency);
            } else {
                to_a.push(latency);
            }
        }
    }

    let mut table = Table::new(
        format!(
            "4. Fan-out across instances ({conversations} conversations x {tabs} sockets on A, {pushes} pushes, one at a time)"
        ),
        &["webhook delivered to", "frames", "p50 ms", "p99 ms", "max ms"],
    );
    let (p50, p99) = (to_b.p50(), to_b.p99());
    table.row(vec![
        "B (sockets on A)".into(),
        to_b.len().to_string(),
        ms(p50),
        ms(p99),
        ms(to_b.max()),
    ]);
    table.row(vec![
        "baseline: A itself".into(),
        to_a.len().to_string(),
        ms(to_a.p50()),
        ms(to_a.p99()),
        ms(to_a.max()),
    ]);
    table.row(vec![
        "ratio B / A".into(),
        String::new(),
        ratio(p50.as_secs_f64(), to_a.p50().as_secs_f64()),
        ratio(p99.as_secs_f64(), to_a.p99().as_secs_f64()),
        String::new(),
    ]);
    table.note("Push latency: from the webhook POST leaving the client to the assistant frame arriving on each socket. It includes recording the event, a worker of the receiving instance taking it, fetching the response from the simulator and finishing the turn, then pg_notify to A's listener.");
    table.print();

    for conv in sockets {
        for s in conv {
            s.close().await;
        }
    }
    a.stop().await;
    b.stop().await;
    bench.server.drop_database(&db).await;
    Ok(())
}
