//! What agent consoles receive over their socket (docs/agent-api.md).

use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    protocol::customer_frames::AssistantStatus,
    storage::conversations::{Message, Role},
};

/// One transcript item as agents see it.
#[derive(Debug, Serialize)]
pub struct Item<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub conversation_id: Uuid,
    /// The item's `agent_seq`: 1, 2, 3… per conversation, no gaps.
    pub seq: i64,
    pub id: Uuid,
    pub role: Role,
    pub text: &'a str,
    /// Only agents see it (notes, changes of state, AI output that arrived
    /// after a takeover).
    pub internal: bool,
    /// The seq the customer knows it by, when they see it.
    pub customer_seq: Option<i64>,
    pub author: Option<&'a str>,
    pub event: Option<&'a Value>,
    pub created_at: String,
}

impl<'a> From<&'a Message> for Item<'a> {
    fn from(m: &'a Message) -> Self {
        Item {
            kind: "item",
            conversation_id: m.conversation_id,
            seq: m.agent_seq,
            id: m.id,
            role: m.role,
            text: &m.body,
            internal: m.internal,
            customer_seq: m.seq,
            author: m.author_name.as_deref(),
            event: m.event.as_ref().map(|e| &e.0),
            created_at: m.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

pub fn item(m: &Message) -> String {
    serde_json::to_string(&Item::from(m)).expect("items serialize")
}

pub fn status(conversation_id: Uuid, assistant: AssistantStatus) -> String {
    serde_json::json!({ "type": "status", "conversation_id": conversation_id, "assistant": assistant })
        .to_string()
}

/// A conversation's state changed.
pub fn state(conversation_id: Uuid, state: &str) -> String {
    serde_json::json!({ "type": "state", "conversation_id": conversation_id, "state": state })
        .to_string()
}
