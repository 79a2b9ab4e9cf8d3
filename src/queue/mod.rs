//! The job queue's home. Jobs live in PostgreSQL (webhook events in
//! `storage::inbox`, turns in `storage::turns`). Webhook receipts are
//! stored by this instance's [`Recorder`], which hands the new events to
//! its own workers in memory; other jobs are announced with a
//! `helpline_work` notification, which every instance's listener turns
//! into a wake-up here ([`Wakeups`]).

mod recorder;

use std::sync::Arc;

pub use recorder::{Recorder, WRITERS};

use tokio::sync::{Notify, Semaphore};

/// How this instance's worker loops are woken: one idle loop per wake-up
/// (or the next to wait). Events handed in memory wake them through
/// [`Recorder::handed`].
pub struct Wakeups {
    /// Any job may be waiting: look everywhere (`notify_one`). A
    /// `helpline_work` notification, events the recorder queued in the
    /// database.
    pub any: Arc<Notify>,
    /// Turns due, counted: one permit per `helpline_work` notification for
    /// a turn ([`Wakeups::turn_due`]). While every loop is busy a burst of
    /// turns leaves as many permits, so a loop that has started one turn
    /// knows whether another is waiting instead of looking to find out.
    turns: Semaphore,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self {
            any: Arc::default(),
            turns: Semaphore::new(0),
        }
    }
}

impl Wakeups {
    /// A turn fell due (a notification said so): one loop looks for it.
    pub fn turn_due(&self) {
        self.turns.add_permits(1);
    }

    /// Waits for a turn's wake-up and takes it.
    pub async fn turn_wakeup(&self) {
        if let Ok(permit) = self.turns.acquire().await {
            permit.forget();
        }
    }

    /// Takes a turn's wake-up if one is waiting.
    pub fn take_turn(&self) -> bool {
        self.turns
            .try_acquire()
            .map(|permit| permit.forget())
            .is_ok()
    }
}
