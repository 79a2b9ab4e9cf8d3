//! Decoding a verified webhook body into the event we record: a pure
//! function of the bytes (no clock, no database), so it can be fuzzed.

use serde::Deserialize;
use serde_json::Value;

/// The event types the worker acts on; every other type is recorded and ignored.
pub const HANDLED_EVENTS: [&str; 4] = [
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
];

/// A decoded event, ready to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's own id (`evt_…`), when it has one.
    pub id: Option<String>,
    pub kind: String,
    /// Whether the worker acts on it (`HANDLED_EVENTS`).
    pub handled: bool,
    pub payload: Value,
}

/// Why a signed body is not an event we can record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("body is not a JSON event object with a string \"type\": {0}")]
    Malformed(String),
    #[error("a {kind} event must carry a string data.id")]
    MissingResponseId { kind: String },
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotUtf8 => "invalid_utf8",
            Self::Malformed(_) | Self::MissingResponseId { .. } => "malformed_event",
        }
    }
}

/// The part of an envelope we read before storing it.
#[derive(Deserialize)]
struct Envelope {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
}

/// Checks, in order: UTF-8, a JSON object with a string `type` (and a
/// string `id` if any), and for the types the worker acts on, a string
/// `data.id` (the response to fetch). Unknown types need only the envelope.
pub fn decode(body: &[u8]) -> Result<Event, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotUtf8)?;
    let payload: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if holds_nul(&payload) {
        return Err(DecodeError::Malformed(
            "it holds the NUL character (\\u0000), which cannot be stored".into(),
        ));
    }
    let envelope =
        Envelope::deserialize(&payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let handled = HANDLED_EVENTS.contains(&envelope.kind.as_str());
    if handled {
        let response_id = payload
            .get("data")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_str);
        if response_id.is_none_or(str::is_empty) {
            return Err(DecodeError::MissingResponseId {
                kind: envelope.kind,
            });
        }
    }
    Ok(Event {
        id: envelope.id,
        kind: envelope.kind,
        handled,
        payload,
    })
}

/// Whether any string or key in `value` holds U+0000, which PostgreSQL's
/// `jsonb` refuses.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &[u8]) -> &'static str {
        decode(body).unwrap_err().code()
    }

    #[test]
    fn a_handled_event_needs_a_string_data_id() {
        let ok = decode(br#"{"id":"evt_1","type":"response.completed","data":{"id":"resp_1"}}"#)
            .unwrap();
        assert!(ok.handled);
        assert_eq!(ok.id.as_deref(), Some("evt_1"));
        for body in [
            r#"{"type":"response.completed"}"#,
            r#"{"type":"response.completed","data":null}"#,
            r#"{"type":"response.failed","data":{}}"#,
            r#"{"type":"response.cancelled","data":{"id":7}}"#,
            r#"{"type":"response.incomplete","data":{"id":""}}"#,
            r#"{"type":"response.completed","data":"resp_1"}"#,
            r#"{"type":"response.completed","data":{"id":"resp_\u0000"}}"#,
            r#"{"type":"response.completed","data":{"id":"resp_1","x\u0000":1}}"#,
        ] {
            assert_eq!(code(body.as_bytes()), "malformed_event", "{body}");
        }
    }

    #[test]
    fn unknown_types_need_only_the_envelope() {
        let e = decode(br#"{"type":"batch.completed"}"#).unwrap();
        assert!(!e.handled);
        assert_eq!(e.kind, "batch.completed");
    }

    #[test]
    fn bytes_that_are_not_a_json_event_are_told_apart() {
        assert_eq!(code(b"\xff\xfe{}"), "invalid_utf8");
        assert_eq!(code(b"{\"type\":\"x\",\"s\":\"\xc3\x28\"}"), "invalid_utf8");
        assert_eq!(code(b"{not json"), "malformed_event");
        assert_eq!(code(b"[1]"), "malformed_event");
        assert_eq!(code(br#"{"type":7}"#), "malformed_event");
        assert_eq!(code(br#"{"type":"x","id":5}"#), "malformed_event");
        assert_eq!(code(b""), "malformed_event");
    }
}
