//! Scenario 5, agents watching: scenario 2's turn-latency load at each
//! rate twice in the same run, first with no agent console connected (the
//! baseline), then with 50 consoles on `/api/agent/ws`, each reading every
//! frame (every item of every conversation reaches every console).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message as WsMessage,
};
use tokio_util::sync::CancellationToken;

use crate::{
    harness::{ms, ratio, Instance, Stalls, Table, PATIENCE},
    turns::Load,
    Bench,
};

struct Sizes {
    conversations: usize,
    consoles: usize,
    /// Consoles per agent account (each console signs in once).
    consoles_per_agent: usize,
    rates: &'static [f64],
    duration: Duration,
}

const PASSWORD: &str = "bench-agent-password";

pub async fn run(bench: &Bench) -> anyhow::Result<()> {
    let sizes = if bench.smoke {
        Sizes {
            conversations: 4,
            consoles: 3,
            consoles_per_agent: 2,
            rates: &[20.0],
            duration: Duration::from_millis(500),
        }
    } else {
        Sizes {
            conversations: 200,
            consoles: 50,
            consoles_per_agent: 10,
            rates: &[50.0, 100.0],
            duration: Duration::from_secs(10),
        }
    };
    let mut load = Load::start(bench, "agents", sizes.conversations).await?;
    let sessions = sign_in(bench, &load.instance, &sizes).await?;

    let mut table = Table::new(
        format!(
            "5. Agents watching ({} conversations, {} s per run; each rate without consoles, then with {} consoles on /api/agent/ws reading every frame)",
            sizes.conversations,
            sizes.duration.as_secs_f64(),
            sizes.consoles,
        ),
        &[
            "target /s",
            "consoles",
            "turns",
            "achieved /s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p50 ratio",
            "p99 ratio",
            "frames received",
            "item frames",
            "items expected",
            "resyncs",
        ],
    );
    let mut stall_notes = Vec::new();
    for &rate in sizes.rates {
        let max_turns = (rate * sizes.duration.as_secs_f64()).ceil() as usize;

        let stalls = Stalls::watch(&bench.server.probe_dir);
        let run = load
            .conversations
            .run_at(rate, max_turns, sizes.duration)
            .await?;
        stall_notes.extend(stalls.stop(&format!("{rate:.0}/s without consoles")).await);
        let (mut alone, secs) = (run.latency, run.secs);
        let (alone_p50, alone_p99) = (alone.p50(), alone.p99());
        table.row(vec![
            format!("{rate:.0}"),
            "0".into(),
            alone.len().to_string(),
            format!("{:.0}", alone.len() as f64 / secs),
            ms(alone_p50),
            ms(alone_p99),
            ms(alone.max()),
            "1.00".into(),
            "1.00".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);

        let consoles = Consoles::connect(&load.instance, &sessions).await?;
        let stalls = Stalls::watch(&bench.server.probe_dir);
        let run = load
            .conversations
            .run_at(rate, max_turns, sizes.duration)
            .await?;
        stall_notes.extend(stalls.stop(&format!("{rate:.0}/s with consoles")).await);
        let (mut watched, secs) = (run.latency, run.secs);
        // Every turn stores the customer's message and the assistant's
        // reply: two items, to every console.
        let expected = watched.len() as u64 * 2 * sessions.len() as u64;
        let counts = consoles.finish(expected).await?;
        table.row(vec![
            format!("{rate:.0}"),
            sessions.len().to_string(),
            watched.len().to_string(),
            format!("{:.0}", watched.len() as f64 / secs),
            ms(watched.p50()),
            ms(watched.p99()),
            ms(watched.max()),
            ratio(watched.p50().as_secs_f64(), alone_p50.as_secs_f64()),
            ratio(watched.p99().as_secs_f64(), alone_p99.as_secs_f64()),
            counts.frames.to_string(),
            counts.items.to_string(),
            expected.to_string(),
            counts.resyncs.to_string(),
        ]);
    }
    table.note("Latency is scenario 2's: customer frame sent to assistant frame received, over the same conversations, at the same rate, in the same process. Ratios are to the run without consoles at the same rate, just before.");
    table.note("The consoles run in the benchmark's process, beside the instance and the customers: their own reading costs CPU on the same cores, so the ratio is an upper bound on what the feed costs the server.");
    table.note("Stalls: as in scenario 2, listed per run when a step of the disk's, the process's or the runtime's probe took over 50 ms.");
    for note in stall_notes {
        table.note(note);
    }
    table.note("Frames: every text frame the consoles received during the run (items, status, state), all consoles together, after the welcome. Items expected: two per turn (customer, assistant) per console; a console that falls behind gets a `resync` instead of the items it missed.");
    table.print();

    load.stop(bench).await;
    Ok(())
}

/// A signed-in agent session: the `helpline_session` cookie.
struct Session {
    cookie: String,
}

/// Creates the agent accounts and signs each console in once.
async fn sign_in(
    bench: &Bench,
    instance: &Instance,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Session>> {
    let agents = sizes.consoles.div_ceil(sizes.consoles_per_agent);
    for a in 0..agents {
        helpline::admin::add_agent(
            &instance.pool,
            &format!("agent{a}@bench.invalid"),
            &format!("Bench agent {a}"),
            Some(PASSWORD.into()),
        )
        .await?;
    }
    let url = format!("http://{}/api/agent/login", instance.addr);
    let mut sessions = Vec::with_capacity(sizes.consoles);
    let consoles: Vec<usize> = (0..sizes.consoles).collect();
    // Password hashing is deliberately slow: a few at a time.
    for chunk in consoles.chunks(4) {
        let signed_in = futures::future::join_all(chunk.iter().map(|c| {
            let email = format!("agent{}@bench.invalid", c / sizes.consoles_per_agent);
            login(&bench.http, &url, email)
        }))
        .await;
        for s in signed_in {
            sessions.push(s?);
        }
    }
    Ok(sessions)
}

async fn login(http: &reqwest::Client, url: &str, email: String) -> anyhow::Result<Session> {
    let response = http
        .post(url)
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("login as {email}: {}", response.status());
    }
    let cookie = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("helpline_session="))
        .and_then(|v| v.split(';').next())
        .context("no helpline_session cookie at login")?
        .to_owned();
    Ok(Session { cookie })
}

#[derive(Default)]
struct Counts {
    frames: u64,
    items: u64,
    resyncs: u64,
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    items: AtomicU64,
    resyncs: AtomicU64,
}

/// Agent consoles reading the live feed, each in its own task.
struct Consoles {
    counters: Arc<Counters>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Consoles {
    /// Opens one feed per session and waits for each welcome.
    async fn connect(instance: &Instance, sessions: &[Session]) -> anyhow::Result<Self> {
        let url = format!("ws://{}/api/agent/ws", instance.addr);
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let mut tasks = Vec::with_capacity(sessions.len());
        for session in sessions {
            let mut request = url.as_str().into_client_request()?;
            request
                .headers_mut()
                .insert("cookie", HeaderValue::from_str(&session.cookie)?);
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
            let (mut ws, _) = tokio::time::timeout(PATIENCE, connect)
                .await
                .context("agent socket connect timed out")??;
            let welcome = next_text(&mut ws).await?;
            if welcome["type"] != "welcome" {
                bail!("expected the agent welcome, got {welcome}");
            }
            let (counters, stop) = (counters.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => break,
                        m = ws.next() => m,
                    };
                    let Some(message) = message else {
                        bail!("the agent socket closed");
                    };
                    if let WsMessage::Text(text) = message? {
                        counters.frames.fetch_add(1, Ordering::Relaxed);
                        let frame: Value = serde_json::from_str(text.as_str())?;
                        match frame["type"].as_str() {
                            Some("item") => {
                                counters.items.fetch_add(1, Ordering::Relaxed);
                            }
                            Some("resync") => {
                                counters.resyncs.fetch_add(1, Ordering::Relaxed);
                            }
                            Some("error") => bail!("agent error frame: {frame}"),
                            _ => {}
                        }
                    }
                }
                let _ = ws.close(None).await;
                Ok(())
            }));
        }
        Ok(Self {
            counters,
            stop,
            tasks,
        })
    }

    /// Waits (boundedly) until the consoles have read the `expected` items
    /// or stop receiving, then closes them and returns the counts.
    async fn finish(self, expected: u64) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = u64::MAX;
        while Instant::now() < deadline {
            let frames = self.counters.frames.load(Ordering::Relaxed);
            if self.counters.items.load(Ordering::Relaxed) >= expected || frames == last {
                break;
            }
            last = frames;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(PATIENCE, task).await???;
        }
        Ok(Counts {
            frames: self.counters.frames.load(Ordering::Relaxed),
            items: self.counters.items.load(Ordering::Relaxed),
            resyncs: self.counters.resyncs.load(Ordering::Relaxed),
        })
    }
}

async fn next_text<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .context("no agent frame in time")?
            .context("agent socket closed")??;
        match message {
            WsMessage::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            WsMessage::Close(close) => bail!("agent socket closed: {close:?}"),
            _ => continue,
        }
    }
}
