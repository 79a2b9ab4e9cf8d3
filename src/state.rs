//! The state every handler and background task shares.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    ai::AiClient,
    config::Config,
    hub::Hub,
    limits::Limits,
    observe::{Health, Metrics},
    webhooks::signature::WebhookSecret,
};

/// Cheap to clone: everything inside is reference counted.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub hub: Hub,
    pub ai: AiClient,
    /// The secrets webhooks may be signed with (generated in demo mode).
    pub webhook_secrets: Arc<Vec<WebhookSecret>>,
    /// Cancelled when the instance shuts down: sockets close with 1001,
    /// workers stop claiming.
    pub shutdown: CancellationToken,
    /// Sockets and workers, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Liveness of the workers, for `/readyz`.
    pub health: Health,
    /// This instance's metrics, rendered by `/metrics`.
    pub metrics: Metrics,
    /// Rate limits of the customer side (per instance, in memory).
    pub limits: Arc<Limits>,
    /// Wakes this instance's worker loops, one per wake-up. The listener
    /// pokes it for every `helpline_work` notification (`turns` for a turn
    /// that is due, `any` otherwise); `recorder` pokes `any` after queueing
    /// webhook events in the database.
    pub wakeups: Arc<crate::queue::Wakeups>,
    /// Stores verified webhook deliveries, several per statement under load
    /// (`queue::Recorder`).
    pub recorder: crate::queue::Recorder,
}
