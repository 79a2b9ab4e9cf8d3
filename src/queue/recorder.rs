//! The webhook receipt recorder: the writers that store verified
//! deliveries for the webhook endpoint (several per statement), and the
//! hand-over of the new events to this instance's workers in memory.

use std::{sync::Arc, time::Duration};

use sqlx::{types::Json, PgPool};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::storage::{
    inbox::{self, Event, VerifiedDelivery},
    KeptConnection,
};

type Answer = oneshot::Sender<Result<Option<bool>, Arc<sqlx::Error>>>;

/// Stores receipts for the webhook endpoint, several concurrent deliveries
/// per statement (group commit): each delivery waits for the commit of the
/// statement that holds it, so none is answered before it is stored. A
/// delivery that finds a writer idle goes alone, at once; deliveries that
/// arrive while the writers are busy go together in the next statement. Up
/// to [`WRITERS`] statements are in flight.
///
/// New events are stored already leased to this instance's workers, up to
/// [`HANDED_MAX`] of them waiting at once, and handed to them in memory
/// ([`Recorder::take`]): an event so handed needs no claim, which is one
/// statement and one row update fewer per event. The rest go to the queue in the database unleased, for any
/// instance's workers. After each commit the writer wakes one worker per
/// [`crate::worker`] batch of new events: through [`Recorder::handed`] for
/// those it handed, through `work` for those it queued in the database.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<(VerifiedDelivery, Answer)>,
    handed_events: Arc<HandedEvents>,
}

/// Statements in flight at once.
pub const WRITERS: usize = 2;
/// Receipts per statement at most: with webhook bodies of at most 64 KiB,
/// a statement carries at most 4 MiB.
const MAX_BATCH: usize = 64;
/// Events handed to this instance's workers and not yet taken, at most.
/// Enough for the workers to take full batches under load; few enough that
/// one waits a moment, not a lease, and that a backlog stays in the
/// database, where every instance's workers can share it.
pub const HANDED_MAX: usize = 64;

/// Events waiting in memory for this instance's workers, each leased to
/// them in the database since it was stored.
struct HandedEvents {
    /// Room is reserved (a permit) before the statement that leases.
    sender: mpsc::Sender<Handed>,
    receiver: std::sync::Mutex<mpsc::Receiver<Handed>>,
    lease: Duration,
    /// Wakes one idle worker per batch of events handed.
    ready: Notify,
}

struct Handed {
    event: Event,
    /// Past this, the event is left to the database: its lease is running
    /// out, and another worker may claim it soon.
    take_by: std::time::Instant,
}

impl HandedEvents {
    /// Reserves room for up to `n` events.
    fn reserve(&self, n: usize) -> Vec<mpsc::OwnedPermit<Handed>> {
        std::iter::from_fn(|| self.sender.clone().try_reserve_owned().ok())
            .take(n)
            .collect()
    }
}

impl Recorder {
    /// Starts the writers. They stop when the last `Recorder` is dropped or
    /// the pool is closed; then they give back their kept connections, so
    /// that closing the pool does not wait for them. `work` wakes this
    /// instance's workers; `lease` is how long an event handed to them is
    /// theirs alone.
    pub fn start(pool: PgPool, work: Arc<Notify>, per_wake: usize, lease: Duration) -> Self {
        let (queue, receiver) = mpsc::channel::<(VerifiedDelivery, Answer)>(1024);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let (sender, handed) = mpsc::channel(HANDED_MAX);
        let handed_events = Arc::new(HandedEvents {
            sender,
            receiver: std::sync::Mutex::new(handed),
            lease,
            ready: Notify::new(),
        });
        for _ in 0..WRITERS {
            let (pool, receiver, work, handed_events) = (
                pool.clone(),
                receiver.clone(),
                work.clone(),
                handed_events.clone(),
            );
            tokio::spawn(async move {
                let mut conn = KeptConnection::new(pool.clone());
                loop {
                    let batch = tokio::select! {
                        batch = next_batch(&receiver) => batch,
                        _ = pool.close_event() => None,
                    };
                    let Some(batch) = batch else {
                        conn.release();
                        break;
                    };
                    write(&mut conn, &handed_events, &work, per_wake, batch).await;
                }
            });
        }
        Self {
            queue,
            handed_events,
        }
    }

    /// Stores one receipt. Returns `Some(pending)` if it was new (and
    /// whether it is work for the workers), `None` for a redelivery.
    pub async fn record(
        &self,
        receipt: VerifiedDelivery,
    ) -> Result<Option<bool>, Arc<sqlx::Error>> {
        let (reply, stored) = oneshot::channel();
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        self.queue
            .send((receipt, reply))
            .await
            .map_err(|_| closed())?;
        stored.await.map_err(|_| closed())?
    }

    /// Resolves when events were handed to this instance's workers: one
    /// waiting worker per batch of them, or the next to wait.
    pub async fn handed(&self) {
        self.handed_events.ready.notified().await
    }

    /// Up to `limit` of the events handed to this instance's workers, oldest
    /// first: they are leased to the caller already. One whose lease is
    /// half gone is dropped instead (its lease runs out, and then any
    /// worker claims it from the database).
    pub fn take(&self, limit: usize) -> Vec<Event> {
        let mut receiver = self
            .handed_events
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let mut events = Vec::new();
        while events.len() < limit {
            match receiver.try_recv() {
                Ok(handed) if handed.take_by > now => events.push(handed.event),
                Ok(handed) => {
                    tracing::warn!(webhook_id = %handed.event.webhook_id, "event waited too long for a worker; left to the database queue")
                }
                Err(_) => break,
            }
        }
        events
    }

    /// Gives the leases of the events no worker took back to the database
    /// queue, so that other instances take them at once rather than when
    /// the leases run out: for shutdown, once the workers have stopped.
    pub async fn release_untaken(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let ids: Vec<String> = self
            .take(usize::MAX)
            .into_iter()
            .map(|e| e.webhook_id)
            .collect();
        if !ids.is_empty() {
            inbox::release_leases(pool, &ids).await?;
        }
        Ok(ids.len())
    }
}

/// Stores one batch of receipts and answers each delivery; hands the events
/// it leased to the workers, then wakes them.
async fn write(
    conn: &mut KeptConnection,
    handed_events: &HandedEvents,
    work: &Notify,
    per_wake: usize,
    batch: Vec<(VerifiedDelivery, Answer)>,
) {
    let receipts: Vec<&VerifiedDelivery> = batch.iter().map(|(r, _)| r).collect();
    let mut room = handed_events.reserve(receipts.iter().filter(|r| r.handled).count());
    let results = match inbox::record_kept(conn, &receipts, handed_events.lease, room.len()).await {
        Ok(results) => results,
        Err(e) => {
            let e = Arc::new(e);
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let take_by = std::time::Instant::now() + handed_events.lease / 2;
    let pending = results.iter().flatten().filter(|s| s.pending).count();
    let handed = results
        .iter()
        .flatten()
        .filter(|s| s.leased.is_some())
        .count();
    for ((receipt, reply), result) in batch.into_iter().zip(results) {
        let _ = reply.send(Ok(result.map(|s| s.pending)));
        let Some(next_attempt_at) = result.and_then(|s| s.leased) else {
            continue;
        };
        // Each event leased had its room reserved.
        let Some(permit) = room.pop() else { continue };
        let event = Event {
            webhook_id: receipt.webhook_id,
            event_type: receipt.event_type,
            payload: Json(receipt.payload),
            attempts: 1,
            request_id: receipt.request_id,
            next_attempt_at,
        };
        permit.send(Handed { event, take_by });
    }
    // Handed first, woken second: a woken worker finds its events. Those
    // queued in the database wake a worker that will look there.
    for _ in 0..handed.div_ceil(per_wake.max(1)) {
        handed_events.ready.notify_one();
    }
    for _ in 0..(pending - handed).div_ceil(per_wake.max(1)) {
        work.notify_one();
    }
}

/// Waits for one receipt, then takes whatever else is already queued.
async fn next_batch(
    receiver: &tokio::sync::Mutex<mpsc::Receiver<(VerifiedDelivery, Answer)>>,
) -> Option<Vec<(VerifiedDelivery, Answer)>> {
    let mut receiver = receiver.lock().await;
    let mut batch = vec![receiver.recv().await?];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}
