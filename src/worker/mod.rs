//! Background work, shared by every instance through PostgreSQL: recorded
//! webhook events to process and pending AI turns to start. Jobs are claimed
//! with `FOR UPDATE SKIP LOCKED` and a lease; workers are woken by
//! `LISTEN/NOTIFY` (or, for a webhook, directly by the instance that
//! recorded it) and also poll, since notifications can be missed.

mod events;
mod reconciler;
mod turns;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::{
    state::AppState,
    storage::{inbox, turns as turn_store, KeptConnection},
};

pub use turns::finish_turn;

/// Events a worker takes at once (handed to it, or claimed) and processes
/// side by side: one outcome statement (and under a backlog, one claim)
/// serves this many events, so they share its round trip and its commit.
/// Each still fetches its own response.
pub const EVENT_BATCH: usize = 8;

/// How long a claimed job is ours before another worker may take it over
/// (the owner may have died): longer than any one call to OpenAI can take.
pub fn lease(openai_timeout: Duration) -> Duration {
    openai_timeout + openai_timeout.max(Duration::from_secs(5))
}

/// Starts the configured number of worker loops.
pub fn spawn(state: &AppState) {
    let n = state.config.worker.concurrency.max(1);
    state.health.expect_workers(n);
    for _ in 0..n {
        state.tasks.spawn(run(state.clone()));
    }
    state.tasks.spawn(reconciler::run(state.clone()));
}

async fn run(state: AppState) {
    let wakeups = state.wakeups.clone();
    let poll = state.config.worker.poll_interval;
    let _alive = state.health.worker_started();
    // Claims and outcomes go through a connection kept while the loop is
    // busy (no pool pings per statement), given back when it goes idle.
    let mut conn = KeptConnection::new(state.pool.clone());
    let mut floor = ClaimFloor::default();
    let (mut look, mut looked_everywhere) = (WhereToLook::Everywhere, Instant::now());
    while !state.shutdown.is_cancelled() {
        // However busy, the whole database at least once per poll
        // interval: retries fall due there, leases run out.
        if look != WhereToLook::Everywhere && looked_everywhere.elapsed() >= poll {
            look = WhereToLook::Everywhere;
        }
        if look == WhereToLook::Everywhere {
            looked_everywhere = Instant::now();
        }
        match next_job(&state, &mut conn, &mut floor, look).await {
            Ok(Some(next)) => {
                look = next;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "worker could not claim a job"),
        }
        conn.release();
        // Only now is this loop a waiter: a wake-up (`notify_one`) goes to a
        // loop that is idle, not to one busy with a job. One that lands
        // while no loop waits is kept as a permit, so a job recorded between
        // an empty look and this wait is not missed. (A wake-up that lands
        // on the branch `select!` drops is passed on to another waiter.)
        look = tokio::select! {
            _ = state.recorder.handed() => WhereToLook::HandedOnly,
            _ = wakeups.turn_wakeup() => WhereToLook::OneTurn,
            _ = wakeups.any.notified() => WhereToLook::Everywhere,
            _ = tokio::time::sleep(poll) => WhereToLook::Everywhere,
            _ = state.shutdown.cancelled() => WhereToLook::Everywhere,
        };
    }
}

/// Where a worker looks for jobs after a wake-up, or after a job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WhereToLook {
    /// Only at the events handed to this instance's workers in memory: the
    /// wake-up said there are some, and said nothing about the database.
    HandedOnly,
    /// There, and at the turns due in the database, for one turn: the
    /// wake-up was a turn's, and said nothing about the event queue.
    OneTurn,
    /// There, and at the turns due until none is: the worker has just
    /// started a turn that a look everywhere found (there may be more that
    /// no wake-up stands for), and the event queue was short then.
    TurnsUntilNone,
    /// There too, then in the database: its event queue and pending turns
    /// (a notification for any job, events queued there, or the poll).
    Everywhere,
}

/// Claims and runs a batch of events or one turn. Returns where to look
/// again at once, or `None` to wait for a wake-up.
///
/// A batch starts with the events this instance recorded and handed to its
/// workers (leased already: no claim), and is topped up from the queue in
/// the database when `look` says so. A short batch means what it looked at
/// was empty when it was taken (the database's queue from the worker's
/// [`ClaimFloor`] on): every event recorded since then has woken a worker (this
/// one, should it have been the one notified), so the look after it would
/// find nothing: after a turn, a worker goes on with the turns (and what is
/// handed to it), not with the event queue it found short. It goes on while
/// turns' wake-ups are waiting, or, after a turn it found without one,
/// until it finds none.
async fn next_job(
    state: &AppState,
    conn: &mut KeptConnection,
    floor: &mut ClaimFloor,
    look: WhereToLook,
) -> Result<Option<WhereToLook>, sqlx::Error> {
    let mut events = state.recorder.take(EVENT_BATCH);
    let lease = lease(state.config.delivery.openai_timeout);
    if events.len() < EVENT_BATCH && look == WhereToLook::Everywhere {
        let from = floor.start();
        let limit = (EVENT_BATCH - events.len()) as i64;
        match inbox::claim(conn, lease, limit, from).await {
            Ok(claimed) => {
                floor.claimed(from, &claimed);
                events.extend(claimed);
            }
            Err(e) if events.is_empty() => return Err(e),
            // The handed events are taken: process them all the same.
            Err(e) => tracing::warn!(error = %e, "worker could not claim events"),
        }
    }
    let full = events.len() == EVENT_BATCH;
    if !events.is_empty() {
        events::process_batch(state, conn, events).await;
    }
    if full || look == WhereToLook::HandedOnly {
        return Ok(full.then_some(look));
    }
    if let Some(claimed) = turn_store::claim_pending(conn, lease).await? {
        turns::start(state, conn, claimed).await;
        // Each turn started uses up a wake-up, whichever turn it was for.
        let woken = state.wakeups.take_turn();
        return Ok(match look {
            WhereToLook::OneTurn if !woken => None,
            WhereToLook::OneTurn => Some(WhereToLook::OneTurn),
            _ => Some(WhereToLook::TurnsUntilNone),
        });
    }
    Ok(None)
}

/// Where a worker's claims of events start in the queue's index.
///
/// An event that is processed leaves its entry in the index of due events
/// until `VACUUM`, and a claim that starts at the oldest entry walks past
/// all of them: under a steady stream, each claim would read ever more
/// dead index pages. So a claim from the start remembers the oldest event
/// it took, and for the next second this worker's claims start a little
/// before it. New events, retries and replays all fall due at the
/// database's `now()`, which is when their transaction began, not when it
/// committed: an event committed after the claim may be stamped earlier
/// than what it took, by as long as its writer took to commit (two writers,
/// or two instances, commit out of order). [`ClaimFloor::SLACK`] covers that.
/// Then a claim from the start again finds what a floor could pass over:
/// an event whose lease ran out, one a rolled-back claim had locked, or one
/// whose writer took longer than the slack. Those wait at most that second
/// longer.
#[derive(Default)]
struct ClaimFloor {
    oldest: Option<DateTime<Utc>>,
    found_at: Option<Instant>,
}

impl ClaimFloor {
    const HELD: Duration = Duration::from_secs(1);
    /// How much earlier than the oldest event taken a claim starts: longer
    /// than a writer's one-statement transaction takes to commit, unless
    /// the disk stalls.
    const SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

    /// Where the next claim starts: `None` for the beginning.
    fn start(&self) -> Option<DateTime<Utc>> {
        let fresh = self.found_at.is_some_and(|at| at.elapsed() < Self::HELD);
        self.oldest
            .filter(|_| fresh)
            .map(|oldest| oldest - Self::SLACK)
    }

    /// After a claim that started at `from`.
    fn claimed(&mut self, from: Option<DateTime<Utc>>, events: &[inbox::Event]) {
        if from.is_none() {
            self.oldest = events.iter().map(|e| e.next_attempt_at).min();
            self.found_at = Some(Instant::now());
        }
    }
}

/// Exponential backoff with ±20% jitter.
fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exp =
        base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).clamp(0, 20) as u32));
    let capped = exp.min(max);
    capped.mul_f64(rand::random_range(0.8..1.2))
}
