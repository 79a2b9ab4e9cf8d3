//! The instance's metrics, exposed by `GET /metrics` in Prometheus text
//! format through `metrics-exporter-prometheus`.
//!
//! Each `Metrics` owns its own `PrometheusRecorder` instead of installing a
//! process-wide one: metrics are recorded with the `metrics` macros inside
//! `metrics::with_local_recorder`, which binds the returned handle to this
//! recorder. An instance's `/metrics` therefore shows exactly that
//! instance's counts, even when a test process runs many instances at once,
//! and nothing global has to be installed (or installed only once).

use std::{sync::Arc, time::Duration};

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Histogram buckets, in seconds: from a fast database write to a slow model.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps a socket counted in `helpline_open_sockets` until dropped.
pub struct OpenSocket {
    metrics: Metrics,
    kind: &'static str,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        let kind = self.kind;
        self.metrics
            .with(|| gauge!("helpline_open_sockets", "kind" => kind).decrement(1.0));
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let metrics = Self {
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
        };
        metrics.describe();
        metrics
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        ::metrics::with_local_recorder(self.recorder.as_ref(), f)
    }

    /// Help texts, and the series that should read 0 before anything
    /// happens (so alerts and dashboards see them from the start).
    fn describe(&self) {
        self.with(|| {
            describe_counter!(
                "helpline_webhooks_received_total",
                "Webhook deliveries that reached the endpoint."
            );
            describe_counter!(
                "helpline_webhooks_accepted_total",
                "Deliveries answered 200, by whether the webhook-id was already recorded."
            );
            describe_counter!(
                "helpline_webhooks_rejected_total",
                "Deliveries refused, by reason (the error code of the answer)."
            );
            describe_gauge!(
                "helpline_webhook_events",
                "Recorded webhook events waiting (pending) or parked (dead), database-wide."
            );
            describe_gauge!(
                "helpline_webhook_event_attempts_max",
                "The most attempts any pending webhook event has had, database-wide: climbing means events keep failing or their workers stall."
            );
            describe_histogram!(
                "helpline_event_processing_seconds",
                Unit::Seconds,
                "Time a worker spent on one webhook event, by outcome."
            );
            describe_histogram!(
                "helpline_openai_request_seconds",
                Unit::Seconds,
                "OpenAI API calls, by endpoint and HTTP status (or transport)."
            );
            describe_counter!(
                "helpline_openai_errors_total",
                "OpenAI API calls that failed, by endpoint and HTTP status (or transport)."
            );
            describe_histogram!(
                "helpline_turn_seconds",
                Unit::Seconds,
                "From the first customer message of a turn to its reply (or notice), by how the turn ended."
            );
            describe_gauge!("helpline_open_sockets", "Open WebSockets, by kind.");
            describe_counter!(
                "helpline_frames_sent_total",
                "WebSocket frames sent, by kind of socket."
            );
            describe_counter!(
                "helpline_handoffs_total",
                "Conversations handed from the AI to a person."
            );
            describe_gauge!(
                "helpline_conversations",
                "Conversations by state, database-wide."
            );
            describe_gauge!(
                "helpline_turns",
                "AI turns not yet finished (pending, in_flight), database-wide."
            );
            describe_gauge!(
                "helpline_database_up",
                "1 if the last scrape could query the database, else 0."
            );
            describe_counter!(
                "helpline_retention_deleted_total",
                "Rows removed by the retention job, by table."
            );
            describe_counter!(
                "helpline_rate_limited_total",
                "Customer-side requests refused by a rate limit or cap, by what was limited."
            );
            describe_counter!(
                "helpline_socket_policy_closes_total",
                "Customer sockets closed by the server for a reason, by reason."
            );
            counter!("helpline_webhooks_received_total").absolute(0);
            counter!("helpline_handoffs_total").absolute(0);
            gauge!("helpline_open_sockets", "kind" => "customer").set(0.0);
        });
    }

    pub fn webhook_received(&self) {
        self.with(|| counter!("helpline_webhooks_received_total").increment(1));
    }

    pub fn webhook_accepted(&self, duplicate: bool) {
        let duplicate = if duplicate { "true" } else { "false" };
        self.with(|| {
            counter!("helpline_webhooks_accepted_total", "duplicate" => duplicate).increment(1)
        });
    }

    pub fn webhook_rejected(&self, reason: &'static str) {
        self.with(|| counter!("helpline_webhooks_rejected_total", "reason" => reason).increment(1));
    }

    /// `outcome`: processed, retry or dead.
    pub fn event_processed(&self, outcome: &'static str, elapsed: Duration) {
        self.with(|| {
            histogram!("helpline_event_processing_seconds", "outcome" => outcome).record(elapsed)
        });
    }

    /// One OpenAI call; `status` is the HTTP status, or "transport" when
    /// no answer came.
    pub fn openai_call(&self, endpoint: &'static str, status: String, ok: bool, elapsed: Duration) {
        self.with(|| {
            histogram!("helpline_openai_request_seconds", "endpoint" => endpoint, "status" => status.clone())
                .record(elapsed);
            if !ok {
                counter!("helpline_openai_errors_total", "endpoint" => endpoint, "status" => status)
                    .increment(1);
            }
        });
    }

    pub fn turn_finished(&self, status: &'static str, latency: Duration) {
        self.with(|| histogram!("helpline_turn_seconds", "status" => status).record(latency));
    }

    /// Counts an open socket of `kind` (customer, agent) until the guard drops.
    pub fn socket_opened(&self, kind: &'static str) -> OpenSocket {
        self.with(|| gauge!("helpline_open_sockets", "kind" => kind).increment(1.0));
        OpenSocket {
            metrics: self.clone(),
            kind,
        }
    }

    /// `what`: visitors, sockets, messages or sockets_per_visitor.
    pub fn rate_limited(&self, what: &'static str) {
        self.with(|| counter!("helpline_rate_limited_total", "what" => what).increment(1));
    }

    /// `reason`: abuse, idle or too_many_sockets.
    pub fn socket_closed_for(&self, reason: &'static str) {
        self.with(|| {
            counter!("helpline_socket_policy_closes_total", "reason" => reason).increment(1)
        });
    }

    pub fn frame_sent(&self, kind: &'static str) {
        self.with(|| counter!("helpline_frames_sent_total", "kind" => kind).increment(1));
    }

    pub fn handoff(&self) {
        self.with(|| counter!("helpline_handoffs_total").increment(1));
    }

    pub fn retention_deleted(&self, table: &'static str, rows: u64) {
        self.with(|| {
            counter!("helpline_retention_deleted_total", "table" => table).increment(rows)
        });
    }

    /// Database-wide gauges, sampled when `/metrics` is scraped.
    pub fn set_sampled(&self, samples: &[(String, String, i64)]) {
        self.with(|| {
            for (kind, label, value) in samples {
                let value = *value as f64;
                match kind.as_str() {
                    "events" => {
                        gauge!("helpline_webhook_events", "status" => label.clone()).set(value)
                    }
                    "conversations" => {
                        gauge!("helpline_conversations", "state" => label.clone()).set(value)
                    }
                    "turns" => gauge!("helpline_turns", "status" => label.clone()).set(value),
                    "event_attempts" => gauge!("helpline_webhook_event_attempts_max").set(value),
                    _ => {}
                }
            }
        });
    }

    pub fn set_database_up(&self, up: bool) {
        self.with(|| gauge!("helpline_database_up").set(if up { 1.0 } else { 0.0 }));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
