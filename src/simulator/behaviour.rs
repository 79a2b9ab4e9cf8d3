//! What the simulator does, including the faults it injects. Set per run
//! (`Simulator::new`, `helpline sim`), per test (`Simulator::set_behaviour`)
//! or over HTTP (`PUT /_sim/behaviour`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// How long a background response takes to finish.
    pub reply_delay_ms: u64,
    /// How background responses end.
    pub outcome: SimOutcome,
    /// Deliver the webhook before `POST /v1/responses` has answered (as
    /// OpenAI may): the response finishes at once and the create call
    /// answers only after the webhook was delivered.
    pub webhook_before_create_returns: bool,
    /// Attempts per webhook delivery (OpenAI retries for up to 72 hours;
    /// the simulator compresses that to a few quick retries).
    pub webhook_attempts: u32,
    /// Chance (0 to 1) that an event is never delivered.
    pub webhook_drop_rate: f64,
    /// Chance that an event is delivered twice with the same `webhook-id`.
    pub webhook_duplicate_rate: f64,
    /// Chance that an event is delivered again as a second event, with a new
    /// `webhook-id`.
    pub webhook_second_id_rate: f64,
    /// Each delivery first waits a random 0..=N ms, so events overtake each
    /// other.
    pub webhook_jitter_ms: u64,
    /// The next N `POST /v1/responses` fail as `create_failure` says.
    pub create_failures: u32,
    pub create_failure: Failure,
    /// The next N `GET /v1/responses/{id}` answer 500.
    pub retrieve_failures: u32,
    /// Each `GET /v1/responses/{id}` first waits this long (OpenAI slow to
    /// answer).
    pub retrieve_delay_ms: u64,
    /// When set, only this API key is accepted; any other gets OpenAI's 401.
    pub api_key: Option<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            reply_delay_ms: 0,
            outcome: SimOutcome::Completed,
            webhook_before_create_returns: false,
            webhook_attempts: 5,
            webhook_drop_rate: 0.0,
            webhook_duplicate_rate: 0.0,
            webhook_second_id_rate: 0.0,
            webhook_jitter_ms: 0,
            create_failures: 0,
            create_failure: Failure::ServerError,
            retrieve_failures: 0,
            retrieve_delay_ms: 0,
            api_key: None,
        }
    }
}

/// How a failing `POST /v1/responses` fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// 429 with a `Retry-After` header.
    RateLimited { retry_after_secs: u64 },
    /// 500.
    ServerError,
    /// The response is created and runs, but the answer comes only after
    /// `after_ms`: the caller times out not knowing it exists.
    Timeout { after_ms: u64 },
}

/// The final state of background responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimOutcome {
    Completed,
    Failed,
    Incomplete,
    Cancelled,
    /// Stays `in_progress` for ever.
    Never,
}

impl Behaviour {
    /// Takes one of the pending create failures, if any.
    pub(super) fn take_create_failure(&mut self) -> Option<Failure> {
        (self.create_failures > 0).then(|| {
            self.create_failures -= 1;
            self.create_failure.clone()
        })
    }

    /// Takes one of the pending retrieve failures; true if this call fails.
    pub(super) fn take_retrieve_failure(&mut self) -> bool {
        let fail = self.retrieve_failures > 0;
        self.retrieve_failures = self.retrieve_failures.saturating_sub(1);
        fail
    }
}
