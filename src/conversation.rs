//! Who may speak: the conversation state machine, enforced by the server.
//!
//! ```text
//!            take over / agent replies          hand back
//!   bot ─────────────────────────────▶ human ──────────────▶ bot
//!    │  AI hands off, turn fails         ▲
//!    ▼                                   │ take over / agent replies
//!  needs_human ──────────────────────────┘
//!   any open state ── resolve ──▶ resolved ── customer writes / reopen ──▶ bot
//! ```
//!
//! `bot` and `needs_human` get AI turns (`needs_human` is a flag for agents:
//! the AI keeps answering until a person takes over); `human` and
//! `resolved` do not. Every change is recorded as an internal `event` item
//! in the transcript, with who, when and why.

use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    hub::Announce,
    protocol::agent_frames,
    storage::{
        conversations::{self, ConversationState, Message, NewMessage, Role},
        notify::Announcements,
    },
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    TakeOver,
    HandBack,
    Resolve,
    Reopen,
    /// An agent replied while the AI had the conversation: an implicit take-over.
    AgentReplied,
    /// The model called `handoff_to_human`.
    AiHandoff,
    /// A turn ended without an answer from the AI.
    TurnFailed,
    /// The customer wrote in a resolved conversation.
    CustomerReturned,
}

impl Action {
    /// The state this action leads to from `from`, if it is allowed there.
    pub fn apply(self, from: ConversationState) -> Option<ConversationState> {
        use ConversationState::*;
        match (self, from) {
            (Self::TakeOver | Self::AgentReplied, Bot | NeedsHuman) => Some(Human),
            (Self::HandBack, Human) => Some(Bot),
            (Self::Resolve, Bot | NeedsHuman | Human) => Some(Resolved),
            (Self::Reopen | Self::CustomerReturned, Resolved) => Some(Bot),
            (Self::AiHandoff | Self::TurnFailed, Bot) => Some(NeedsHuman),
            _ => None,
        }
    }

    fn describe(self, by: &str) -> String {
        match self {
            Self::TakeOver => format!("{by} took over from the AI"),
            Self::HandBack => format!("{by} handed the conversation back to the AI"),
            Self::Resolve => format!("{by} resolved the conversation"),
            Self::Reopen => format!("{by} reopened the conversation"),
            Self::AgentReplied => format!("{by} replied and took over from the AI"),
            Self::AiHandoff => "The AI asked for a person".to_owned(),
            Self::TurnFailed => "The AI could not answer; a person is needed".to_owned(),
            Self::CustomerReturned => {
                "The customer wrote again; the conversation is open".to_owned()
            }
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Agent { id: Uuid, name: &'a str },
    Ai,
    Customer,
    System,
}

impl Actor<'_> {
    fn name(&self) -> &str {
        match self {
            Self::Agent { name, .. } => name,
            Self::Ai => "AI",
            Self::Customer => "customer",
            Self::System => "system",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {action:?} a conversation that is {from:?}")]
    NotAllowed {
        from: ConversationState,
        action: Action,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The conversation's state, read under its row lock (held until the
/// transaction ends).
pub async fn lock_state(
    conn: &mut PgConnection,
    conversation_id: Uuid,
) -> Result<ConversationState, sqlx::Error> {
    sqlx::query_scalar("SELECT state FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(conversation_id)
        .fetch_one(conn)
        .await
}

/// Applies `action`, records it in the transcript and tells agents. Call
/// inside the transaction that does the rest of the work.
pub async fn transition(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    action: Action,
    actor: Actor<'_>,
    reason: Option<&str>,
) -> Result<(ConversationState, Message), TransitionError> {
    let from = lock_state(&mut *conn, conversation_id).await?;
    let to = action
        .apply(from)
        .ok_or(TransitionError::NotAllowed { from, action })?;
    sqlx::query("UPDATE conversations SET state = $2, state_changed_at = now() WHERE id = $1")
        .bind(conversation_id)
        .bind(to)
        .execute(&mut *conn)
        .await?;
    if action == Action::HandBack {
        // What the customer said while a person had the conversation was
        // answered by that person: the AI starts from the next message.
        sqlx::query(
            "UPDATE conversations SET ai_cursor = GREATEST(ai_cursor, COALESCE(
                 (SELECT max(seq) FROM messages WHERE conversation_id = $1 AND role = 'customer'), 0))
             WHERE id = $1",
        )
        .bind(conversation_id)
        .execute(&mut *conn)
        .await?;
    }
    let body = match reason {
        Some(reason) => format!("{}: {reason}", action.describe(actor.name())),
        None => action.describe(actor.name()),
    };
    let by = match actor {
        Actor::Agent { id, name } => json!({ "kind": "agent", "id": id, "name": name }),
        Actor::Ai => json!({ "kind": "ai" }),
        Actor::Customer => json!({ "kind": "customer" }),
        Actor::System => json!({ "kind": "system" }),
    };
    let mut item = NewMessage::internal(conversation_id, Role::Event, &body);
    item.event =
        Some(json!({ "action": action, "from": from, "to": to, "reason": reason, "by": by }));
    if let Actor::Agent { id, name } = actor {
        item.author_id = Some(id);
        item.author_name = Some(name);
    }
    let item = conversations::append(&mut *conn, item)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Announcements::default()
        .message(&item)
        .to_agents(
            conversation_id,
            &agent_frames::state(conversation_id, to.as_str()),
        )
        .send(&mut *conn)
        .await?;
    Ok((to, item))
}

#[cfg(test)]
mod tests {
    use super::{Action::*, ConversationState::*, *};

    #[test]
    fn the_transition_table() {
        let all = [Bot, NeedsHuman, Human, Resolved];
        let allowed = |action: Action| {
            all.iter()
                .filter_map(|&s| action.apply(s).map(|t| (s, t)))
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(TakeOver), [(Bot, Human), (NeedsHuman, Human)]);
        assert_eq!(allowed(AgentReplied), [(Bot, Human), (NeedsHuman, Human)]);
        assert_eq!(allowed(HandBack), [(Human, Bot)]);
        assert_eq!(
            allowed(Resolve),
            [(Bot, Resolved), (NeedsHuman, Resolved), (Human, Resolved)]
        );
        assert_eq!(allowed(Reopen), [(Resolved, Bot)]);
        assert_eq!(allowed(CustomerReturned), [(Resolved, Bot)]);
        assert_eq!(allowed(AiHandoff), [(Bot, NeedsHuman)]);
        assert_eq!(allowed(TurnFailed), [(Bot, NeedsHuman)]);
    }

    #[test]
    fn the_ai_speaks_only_in_bot_and_needs_human() {
        assert!(Bot.ai_speaks() && NeedsHuman.ai_speaks());
        assert!(!Human.ai_speaks() && !Resolved.ai_speaks());
    }
}
