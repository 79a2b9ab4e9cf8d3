//! What operators look at, kept by every part of an instance: its metrics
//! (rendered by `GET /metrics`) and the liveness of its background tasks
//! (read by `GET /readyz`). The HTTP handlers are in [`crate::probes`].

pub mod health;
pub mod metrics;

pub use health::Health;
pub use metrics::Metrics;
