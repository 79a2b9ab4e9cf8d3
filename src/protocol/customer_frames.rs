//! The customer wire protocol (version 1), as documented in
//! `docs/protocol.md`: what the widget may send, and what it receives.

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::storage::conversations::{Message, Role};

pub const MAX_CLIENT_ID_CHARS: usize = 64;
pub const MAX_TEXT_CHARS: usize = 4000;

/// A frame from the widget.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello {
        token: String,
        after_seq: Option<i64>,
    },
    Message {
        client_id: String,
        text: String,
    },
    Ping,
}

const CLIENT_TYPES: [&str; 3] = ["hello", "message", "ping"];

/// Why a frame was refused: becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl ClientFrame {
    /// Parses one text frame, telling apart bad JSON, unknown types and bad fields.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|_| FrameError::new("invalid_json", "frame is not valid JSON"))?;
        let kind = value.get("type").and_then(Value::as_str).ok_or_else(|| {
            FrameError::new(
                "invalid_frame",
                "frame must be a JSON object with a string \"type\"",
            )
        })?;
        if !CLIENT_TYPES.contains(&kind) {
            return Err(FrameError::new(
                "unknown_type",
                format!("unknown frame type {kind:?}"),
            ));
        }
        let frame: Self = serde_json::from_value(value)
            .map_err(|e| FrameError::new("invalid_frame", e.to_string()))?;
        frame.validate()?;
        Ok(frame)
    }

    fn validate(&self) -> Result<(), FrameError> {
        match self {
            Self::Hello {
                after_seq: Some(n), ..
            } if *n < 0 => Err(FrameError::new(
                "invalid_frame",
                "after_seq must not be negative",
            )),
            Self::Message { client_id, text } => {
                let id_len = client_id.chars().count();
                if id_len == 0 || id_len > MAX_CLIENT_ID_CHARS {
                    return Err(FrameError::new(
                        "invalid_client_id",
                        "client_id must be 1 to 64 characters",
                    ));
                }
                if client_id.contains('\0') {
                    return Err(FrameError::new(
                        "invalid_client_id",
                        "client_id must not contain the NUL character",
                    ));
                }
                check_text(text).map(|_| ())
            }
            _ => Ok(()),
        }
    }
}

/// A message's text, trimmed: not empty, at most `MAX_TEXT_CHARS`
/// characters. The same rule for customers and agents.
pub fn check_text(text: &str) -> Result<&str, FrameError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(FrameError::new("empty_message", "text is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(FrameError::new(
            "message_too_long",
            "text is longer than 4000 characters",
        ));
    }
    // PostgreSQL's text cannot hold it.
    if text.contains('\0') {
        return Err(FrameError::new(
            "invalid_text",
            "text must not contain the NUL character",
        ));
    }
    Ok(text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssistantStatus {
    Thinking,
    Idle,
}

/// A frame to the widget.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        conversation_id: Uuid,
        last_seq: i64,
    },
    Message(MessageFrame<'a>),
    Status {
        assistant: AssistantStatus,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
    Pong,
}

#[derive(Debug, Serialize)]
pub struct MessageFrame<'a> {
    pub seq: i64,
    pub id: Uuid,
    pub role: Role,
    pub text: &'a str,
    pub client_id: Option<&'a str>,
    /// The agent's name, on agent messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<&'a str>,
    pub created_at: String,
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames always serialize")
    }
}

/// Customer frames are built from public messages only (internal items have
/// no customer `seq`; the queries that feed sockets never return them).
impl<'a> From<&'a Message> for ServerFrame<'a> {
    fn from(m: &'a Message) -> Self {
        debug_assert!(!m.internal, "internal items never reach customers");
        ServerFrame::Message(MessageFrame {
            seq: m.seq.unwrap_or_default(),
            id: m.id,
            role: m.role,
            text: &m.body,
            client_id: m.client_id.as_deref(),
            author: m.author_name.as_deref(),
            created_at: m.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }
}

pub fn error_json(e: &FrameError) -> String {
    ServerFrame::Error {
        code: e.code,
        message: &e.message,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        ClientFrame::parse(text).unwrap_err().code
    }

    #[test]
    fn parses_the_three_client_frames() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"hello","token":"t","after_seq":3}"#).unwrap(),
            ClientFrame::Hello {
                token: "t".into(),
                after_seq: Some(3)
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"hello","token":"t"}"#).unwrap(),
            ClientFrame::Hello {
                token: "t".into(),
                after_seq: None
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"message","client_id":"c1","text":"hi"}"#).unwrap(),
            ClientFrame::Message {
                client_id: "c1".into(),
                text: "hi".into()
            }
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping
        );
    }

    #[test]
    fn tells_each_kind_of_bad_frame_apart() {
        assert_eq!(code("not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"message","text":"hi"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"hello","token":5}"#), "invalid_frame");
        assert_eq!(
            code(r#"{"type":"hello","token":"t","after_seq":1e400}"#),
            "invalid_json"
        );
        assert_eq!(
            code(r#"{"type":"hello","token":"t","after_seq":-1}"#),
            "invalid_frame"
        );
        assert_eq!(
            code(r#"{"type":"message","client_id":"","text":"hi"}"#),
            "invalid_client_id"
        );
        let long_id = "x".repeat(65);
        assert_eq!(
            code(&format!(
                r#"{{"type":"message","client_id":"{long_id}","text":"hi"}}"#
            )),
            "invalid_client_id"
        );
        assert_eq!(
            code(r#"{"type":"message","client_id":"c","text":"   "}"#),
            "empty_message"
        );
        assert_eq!(
            code(r#"{"type":"message","client_id":"c","text":"a\u0000b"}"#),
            "invalid_text"
        );
        assert_eq!(
            code(r#"{"type":"message","client_id":"c\u0000","text":"hi"}"#),
            "invalid_client_id"
        );
        let long_text = "é".repeat(4001);
        assert_eq!(
            code(&format!(
                r#"{{"type":"message","client_id":"c","text":"{long_text}"}}"#
            )),
            "message_too_long"
        );
    }
}
