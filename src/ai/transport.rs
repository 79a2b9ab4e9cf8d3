//! How calls reach OpenAI: the HTTP transport under async-openai (one
//! attempt per call, `Retry-After` kept), and what a failed call means for
//! the caller ([`AiError`]: whether to try again, and when).

use std::time::Duration;

use async_openai::{error::OpenAIError, middleware::HttpRequestFactory};

#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error("OpenAI answered {status}: {message}")]
    Api {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("could not reach OpenAI: {0}")]
    Transport(String),
    #[error("unexpected answer from OpenAI: {0}")]
    Unexpected(String),
}

impl AiError {
    /// Whether trying again could help: transport failures, timeouts, rate
    /// limits, conflicts and server errors. Other 4xx answers will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            Self::Transport(_) => true,
            Self::Unexpected(_) => false,
        }
    }

    /// How long OpenAI asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<OpenAIError> for AiError {
    fn from(e: OpenAIError) -> Self {
        match e {
            OpenAIError::ApiError(r) => Self::Api {
                status: r.status_code.as_u16(),
                message: r.api_error.message,
                retry_after: None,
            },
            OpenAIError::Reqwest(e) => Self::Transport(e.to_string()),
            OpenAIError::Boxed(b) => match b.downcast::<Refused>() {
                Ok(r) => Self::Api {
                    status: r.status,
                    message: r.message,
                    retry_after: r.retry_after,
                },
                Err(other) => Self::Unexpected(other.to_string()),
            },
            other => Self::Unexpected(other.to_string()),
        }
    }
}

/// A 429 or 5xx answer, caught below async-openai so that `Retry-After`
/// survives (async-openai's own errors drop the headers).
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
struct Refused {
    status: u16,
    message: String,
    retry_after: Option<Duration>,
}

/// The HTTP transport under async-openai: one attempt per call, no hidden
/// retries (the worker retries, with backoff, jitter and a lease), and
/// throttling answers turned into `Refused`.
pub(super) async fn send(
    http: reqwest::Client,
    factory: HttpRequestFactory,
) -> Result<reqwest::Response, OpenAIError> {
    let response = http
        .execute(factory.build().await?)
        .await
        .map_err(OpenAIError::Reqwest)?;
    let status = response.status();
    if status.as_u16() != 429 && !status.is_server_error() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    let refused = Refused {
        status: status.as_u16(),
        message,
        retry_after,
    };
    Err(OpenAIError::Boxed(Box::new(refused)))
}
