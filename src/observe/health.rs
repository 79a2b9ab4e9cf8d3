//! Liveness flags the background tasks keep up to date, read by `/readyz`.
//! The hub's listener reports its connection on the `Hub` itself; workers
//! hold a guard for as long as their loop runs (also across a panic).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    workers_running: AtomicUsize,
    workers_expected: AtomicUsize,
}

/// Counts one running worker loop until dropped.
pub struct WorkerAlive {
    health: Health,
}

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        self.health
            .inner
            .workers_running
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl Health {
    /// How many worker loops this instance starts.
    pub fn expect_workers(&self, n: usize) {
        self.inner.workers_expected.store(n, Ordering::SeqCst);
    }

    /// Called by each worker loop as it starts; keep the guard alive.
    pub fn worker_started(&self) -> WorkerAlive {
        self.inner.workers_running.fetch_add(1, Ordering::SeqCst);
        WorkerAlive {
            health: self.clone(),
        }
    }

    /// (running, expected)
    pub fn workers(&self) -> (usize, usize) {
        (
            self.inner.workers_running.load(Ordering::SeqCst),
            self.inner.workers_expected.load(Ordering::SeqCst),
        )
    }
}
