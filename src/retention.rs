//! What is kept, and for how long. A periodic job on every instance deletes
//! finished webhook events and expired sessions past their configured ages
//! (deletes are idempotent, so instances need not coordinate). Conversations
//! are never purged: `helpline conversations delete ID` removes one
//! customer's data when an operator asks.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{ai::AiClient, config::RetentionConfig, observe::Metrics, storage::ops};

/// What one purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    /// `None` while there is no session table (before the agent console).
    pub sessions: Option<u64>,
}

/// Deletes what has outlived its retention, once.
pub async fn purge_once(pool: &PgPool, config: &RetentionConfig) -> Result<Purged, sqlx::Error> {
    let events = ops::purge_events(pool, config.events, config.dead_events).await?;
    let sessions = ops::purge_sessions(pool, config.sessions).await?;
    Ok(Purged { events, sessions })
}

/// Purges at start-up and then every `config.interval`, until cancelled.
pub async fn run(
    pool: PgPool,
    config: RetentionConfig,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    loop {
        match purge_once(&pool, &config).await {
            Ok(purged) => {
                metrics.retention_deleted("webhook_events", purged.events);
                if let Some(n) = purged.sessions {
                    metrics.retention_deleted("sessions", n);
                }
                if purged.events > 0 || purged.sessions.unwrap_or(0) > 0 {
                    tracing::info!(events = purged.events, sessions = ?purged.sessions, "retention purge");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention purge failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("no conversation {0}")]
    NotFound(Uuid),
    #[error("OpenAI could not delete {object}: {error}; nothing was deleted here, try again (or use --local-only)")]
    OpenAi {
        object: String,
        error: crate::ai::AiError,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What `delete_conversation` did.
#[derive(Debug, Clone, Default)]
pub struct DeleteReport {
    pub deleted: ops::Deleted,
    /// The OpenAI conversation, if there was one and it was deleted there.
    pub openai_conversation: Option<String>,
    /// OpenAI responses deleted there.
    pub openai_responses: usize,
}

/// Removes one customer's conversation: first the copies at OpenAI (the
/// Conversation and each Response, when `ai` is given), then, only if that
/// worked, the conversation, its messages and turns here, and the visitor
/// identity if nothing else of theirs is left. Stopping at an OpenAI failure
/// keeps the ids needed to try again.
pub async fn delete_conversation(
    pool: &PgPool,
    ai: Option<&AiClient>,
    id: Uuid,
) -> Result<DeleteReport, DeleteError> {
    let record = ops::conversation_record(pool, id)
        .await?
        .ok_or(DeleteError::NotFound(id))?;
    let mut report = DeleteReport::default();
    if let Some(ai) = ai {
        for response_id in &record.response_ids {
            if ai
                .delete_response(response_id)
                .await
                .map_err(|error| DeleteError::OpenAi {
                    object: format!("response {response_id}"),
                    error,
                })?
            {
                report.openai_responses += 1;
            }
        }
        if let Some(conversation) = &record.openai_conversation_id {
            ai.delete_conversation(conversation)
                .await
                .map_err(|error| DeleteError::OpenAi {
                    object: format!("conversation {conversation}"),
                    error,
                })?;
            report.openai_conversation = Some(conversation.clone());
        }
    }
    report.deleted = ops::delete_conversation(pool, id)
        .await?
        .ok_or(DeleteError::NotFound(id))?;
    tracing::info!(conversation_id = %id, messages = report.deleted.messages, "conversation deleted by an operator");
    Ok(report)
}
