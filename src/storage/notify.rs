//! The notifications writers send with `pg_notify` inside their
//! transaction, so that PostgreSQL delivers them when it commits: the
//! channels, the payload a frame travels in (written here and by the SQL of
//! [`super::turns`], read by each instance's listener), and the builder
//! that sends several in one statement, some of them only if that
//! statement started a turn.

use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use uuid::Uuid;

use super::conversations::Message;

/// Frames for sockets: [`FrameNotice`] payloads.
pub const FRAMES_CHANNEL: &str = "helpline_frames";
/// Wake-ups for workers: [`TURN_DUE`], or anything else for any job.
pub const WORK_CHANNEL: &str = "helpline_work";
/// The payload of a `helpline_work` notification for a turn that is due.
pub const TURN_DUE: &str = "turn";

/// PostgreSQL drops NOTIFY payloads over 8000 bytes; bigger messages are
/// announced by seq only and read back from the database.
pub const MAX_INLINE_PAYLOAD: usize = 7900;

/// A `helpline_frames` notification's payload, as each instance's listener
/// reads it. Written by [`Announcements::frame`] and, with the stored row
/// in `m`, by the SQL of [`super::turns::append_and_schedule`].
#[derive(Debug, Deserialize)]
pub struct FrameNotice<'a> {
    pub c: Uuid,
    /// Set for the agents' audience; `seq` is then the `agent_seq`.
    #[serde(default)]
    pub a: bool,
    pub seq: Option<i64>,
    /// The frame, rendered by the writer.
    #[serde(borrow)]
    pub f: Option<&'a RawValue>,
    /// Or the stored item itself, when the writer announced it from SQL:
    /// the frame is rendered by the reader. A reader that predates this
    /// field reads the item back by `seq`.
    pub m: Option<Message>,
}

/// Notifications a writer sends together, in order, in one statement of
/// its transaction; PostgreSQL delivers them when it commits. One round trip
/// however many there are: [`Announcements::send`], or
/// [`super::turns::schedule`], which also sends those that depend
/// on whether it started a turn.
#[derive(Default)]
pub struct Announcements {
    channels: Vec<&'static str>,
    payloads: Vec<String>,
    /// Per notification: [`ALWAYS`], [`IF_SCHEDULED`] or [`UNLESS_SCHEDULED`].
    when: Vec<i16>,
}

/// Sent whatever happens.
pub const ALWAYS: i16 = 0;
/// Sent only if the statement that sends it started a turn.
pub const IF_SCHEDULED: i16 = 1;
/// Sent only if it did not.
pub const UNLESS_SCHEDULED: i16 = 2;

impl Announcements {
    /// A frame (JSON text) for a conversation's sockets, or for agents
    /// (`agents`; `seq` is then the `agent_seq`). A stored item's frame too
    /// big for PostgreSQL's payload limit goes by `seq` alone, and each
    /// reader reads the item back.
    pub fn frame(self, conversation_id: Uuid, agents: bool, seq: Option<i64>, frame: &str) -> Self {
        let c = conversation_id;
        let a = if agents { r#","a":true"# } else { "" };
        let seq_field = seq
            .map(|seq| format!(r#","seq":{seq}"#))
            .unwrap_or_default();
        let mut payload = format!(r#"{{"c":"{c}"{a}{seq_field},"f":{frame}}}"#);
        if seq.is_some() && payload.len() > MAX_INLINE_PAYLOAD {
            payload = format!(r#"{{"c":"{c}"{a}{seq_field}}}"#);
        }
        self.push(FRAMES_CHANNEL, payload)
    }

    /// An agents-only frame (e.g. a change of state).
    pub fn to_agents(self, conversation_id: Uuid, frame: &str) -> Self {
        self.frame(conversation_id, true, None, frame)
    }

    /// Wakes a worker on every instance: a turn is due. (A `helpline_work`
    /// notification with any other payload is for any job: an event, say.)
    pub fn wake_workers(self) -> Self {
        self.push(WORK_CHANNEL, TURN_DUE.to_owned())
    }

    /// What `add` adds goes out only if [`super::turns::schedule`],
    /// which sends these, starts a turn.
    pub fn if_scheduled(self, add: impl FnOnce(Self) -> Self) -> Self {
        self.only(IF_SCHEDULED, add)
    }

    /// What `add` adds goes out only if it does not.
    pub fn unless_scheduled(self, add: impl FnOnce(Self) -> Self) -> Self {
        self.only(UNLESS_SCHEDULED, add)
    }

    fn only(self, when: i16, add: impl FnOnce(Self) -> Self) -> Self {
        let from = self.when.len();
        let mut this = add(self);
        this.when[from..].fill(when);
        this
    }

    fn push(mut self, channel: &'static str, payload: String) -> Self {
        self.channels.push(channel);
        self.payloads.push(payload);
        self.when.push(ALWAYS);
        self
    }

    /// The notifications, in order: channels, payloads, and when each goes.
    pub fn into_parts(self) -> (Vec<&'static str>, Vec<String>, Vec<i16>) {
        (self.channels, self.payloads, self.when)
    }

    /// Sends them all. Only [`super::turns::schedule`] knows
    /// whether a turn was scheduled: conditional ones are not for this.
    pub async fn send(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        debug_assert!(
            self.when.iter().all(|&w| w == ALWAYS),
            "conditional notifications go through turns::schedule"
        );
        if self.channels.is_empty() {
            return Ok(());
        }
        // pg_notify is volatile, so it is evaluated after the sort: in order.
        sqlx::query(
            "SELECT pg_notify(n.channel, n.payload)
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(channel, payload, i)
             ORDER BY n.i",
        )
        .bind(self.channels)
        .bind(self.payloads)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(announce: Announcements) -> Vec<String> {
        announce.into_parts().1
    }

    #[test]
    fn a_frame_reads_back_as_it_was_written() {
        let c = Uuid::now_v7();
        for (agents, seq) in [
            (false, Some(3)),
            (true, Some(7)),
            (false, None),
            (true, None),
        ] {
            let payloads = sent(Announcements::default().frame(c, agents, seq, r#"{"type":"x"}"#));
            let read: FrameNotice = serde_json::from_str(&payloads[0]).unwrap();
            assert_eq!((read.c, read.a, read.seq), (c, agents, seq));
            assert_eq!(read.f.map(|f| f.get()), Some(r#"{"type":"x"}"#));
        }
    }

    #[test]
    fn a_frame_too_big_to_notify_goes_by_seq_alone() {
        let c = Uuid::now_v7();
        let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_INLINE_PAYLOAD));
        let payloads = sent(Announcements::default().frame(c, true, Some(9), &big));
        assert!(payloads[0].len() <= MAX_INLINE_PAYLOAD);
        let read: FrameNotice = serde_json::from_str(&payloads[0]).unwrap();
        assert_eq!((read.a, read.seq, read.f.is_none()), (true, Some(9), true));
    }
}
