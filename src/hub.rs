//! Fan-out: every stored message and status change reaches every socket
//! watching its conversation, on every instance.
//!
//! Writers publish with `pg_notify` inside their own transaction, so a frame
//! is announced exactly when it is committed. One listener connection per
//! instance receives the notifications and hands them to the local sockets
//! through one broadcast channel per conversation.
//!
//! Notifications are not stored while a listener is disconnected, so after
//! every (re)connect the hub tells all local sockets to `Resync`: each reads
//! what it missed from the database by `seq`. Sockets do the same when they
//! see a gap in `seq` or fall behind their channel.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgConnection, PgPool,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    agents::frames as agent_frames,
    chat::frames::{AssistantStatus, ServerFrame},
    storage::conversations::{self, Message},
};

pub const FRAMES_CHANNEL: &str = "helpline_frames";
pub const WORK_CHANNEL: &str = "helpline_work";
/// The payload of a `helpline_work` notification for a turn that is due.
pub const TURN_DUE: &str = "turn";

/// PostgreSQL drops NOTIFY payloads over 8000 bytes; bigger messages are
/// announced by seq only and read back from the database.
pub const MAX_INLINE_PAYLOAD: usize = 7900;
/// Per conversation. A socket that falls further behind reads the gap from
/// the database (`RecvError::Lagged`). The slots are allocated up front, per
/// watched conversation: 256 cost about 20 KiB of every idle socket
/// (BENCHMARKS.md, scenario 3).
const CHANNEL_CAPACITY: usize = 16;
/// Agents watch every conversation at once: a deeper buffer.
const AGENT_CHANNEL_CAPACITY: usize = 4096;

/// What a socket receives from the hub.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A stored message frame; `seq` lets a socket skip what it sent and
    /// notice gaps.
    Message { seq: i64, frame: Utf8Bytes },
    /// A frame that is not stored (status).
    Ephemeral(Utf8Bytes),
    /// Notifications may have been lost: read from the database.
    Resync,
}

/// What an agent socket receives: every conversation's items, each with
/// the conversation it belongs to (`seq` in a `Message` is the `agent_seq`).
#[derive(Debug, Clone)]
pub struct AgentDelivery {
    pub conversation_id: Option<Uuid>,
    pub delivery: Delivery,
}

#[derive(Clone)]
pub struct Hub {
    topics: Arc<RwLock<HashMap<Uuid, broadcast::Sender<Delivery>>>>,
    agents: broadcast::Sender<AgentDelivery>,
    /// Whether the listener connection is up (for `/readyz`).
    listening: Arc<AtomicBool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            topics: Arc::default(),
            agents: broadcast::channel(AGENT_CHANNEL_CAPACITY).0,
            listening: Arc::default(),
        }
    }
}

/// A socket's interest in one conversation; unsubscribes when dropped.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Delivery>,
    hub: Hub,
    conversation_id: Uuid,
}

impl Hub {
    pub fn subscribe(&self, conversation_id: Uuid) -> Subscription {
        let mut topics = self.topics.write().expect("hub lock");
        let receiver = topics
            .entry(conversation_id)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Subscription {
            receiver,
            hub: self.clone(),
            conversation_id,
        }
    }

    fn sender(&self, conversation_id: Uuid) -> Option<broadcast::Sender<Delivery>> {
        self.topics
            .read()
            .expect("hub lock")
            .get(&conversation_id)
            .cloned()
    }

    /// Every agent item and status, of every conversation.
    pub fn subscribe_agents(&self) -> broadcast::Receiver<AgentDelivery> {
        self.agents.subscribe()
    }

    /// Whether this instance's listener is connected and listening.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::SeqCst);
    }

    fn resync_all(&self) {
        for sender in self.topics.read().expect("hub lock").values() {
            let _ = sender.send(Delivery::Resync);
        }
        let _ = self.agents.send(AgentDelivery {
            conversation_id: None,
            delivery: Delivery::Resync,
        });
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.hub.topics.write().expect("hub lock");
        if let Some(sender) = topics.get(&self.conversation_id) {
            // Our receiver is still alive here, so 1 means "only us".
            if sender.receiver_count() <= 1 {
                topics.remove(&self.conversation_id);
            }
        }
    }
}

#[derive(Deserialize)]
struct Notification<'a> {
    c: Uuid,
    /// Set for the agents' audience; `seq` is then the `agent_seq`.
    #[serde(default)]
    a: bool,
    seq: Option<i64>,
    /// The frame, rendered by the writer.
    #[serde(borrow)]
    f: Option<&'a RawValue>,
    /// Or the stored item itself, when the writer announced it from SQL
    /// (`storage::turns::append_and_schedule`): the frame is rendered here.
    /// A hub that predates this field reads the item back by `seq`.
    m: Option<Message>,
}

/// Notifications a writer sends together, in order, in one statement of
/// its transaction; PostgreSQL delivers them when it commits. One round trip
/// however many there are: [`Announcements::send`], or
/// [`crate::storage::turns::schedule`], which also sends those that depend
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
    /// A stored item, to agents, and to the customer's sockets if it is
    /// public.
    pub fn message(mut self, message: &Message) -> Self {
        let c = message.conversation_id;
        let agent_frame = agent_frames::item(message);
        let mut agents = format!(
            r#"{{"c":"{c}","a":true,"seq":{},"f":{agent_frame}}}"#,
            message.agent_seq
        );
        if agents.len() > MAX_INLINE_PAYLOAD {
            agents = format!(r#"{{"c":"{c}","a":true,"seq":{}}}"#, message.agent_seq);
        }
        if let Some(seq) = message.seq {
            let frame = ServerFrame::from(message).to_json();
            let mut customers = format!(r#"{{"c":"{c}","seq":{seq},"f":{frame}}}"#);
            if customers.len() > MAX_INLINE_PAYLOAD {
                customers = format!(r#"{{"c":"{c}","seq":{seq}}}"#);
            }
            self = self.push(FRAMES_CHANNEL, customers);
        }
        self.push(FRAMES_CHANNEL, agents)
    }

    /// The assistant's state, to the conversation's sockets and to agents.
    pub fn status(self, conversation_id: Uuid, status: AssistantStatus) -> Self {
        let c = conversation_id;
        let frame = ServerFrame::Status { assistant: status }.to_json();
        let agent_frame = agent_frames::status(conversation_id, status);
        self.push(FRAMES_CHANNEL, format!(r#"{{"c":"{c}","f":{frame}}}"#))
            .push(
                FRAMES_CHANNEL,
                format!(r#"{{"c":"{c}","a":true,"f":{agent_frame}}}"#),
            )
    }

    /// An agents-only frame (e.g. a change of state).
    pub fn to_agents(self, conversation_id: Uuid, frame: &str) -> Self {
        self.push(
            FRAMES_CHANNEL,
            format!(r#"{{"c":"{conversation_id}","a":true,"f":{frame}}}"#),
        )
    }

    /// Wakes a worker on every instance: a turn is due. (A `helpline_work`
    /// notification with any other payload is for any job: an event, say.)
    pub fn wake_workers(self) -> Self {
        self.push(WORK_CHANNEL, TURN_DUE.to_owned())
    }

    /// What `add` adds goes out only if [`crate::storage::turns::schedule`],
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

    /// Sends them all. Only [`crate::storage::turns::schedule`] knows
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

/// Announces a stored item (see [`Announcements::message`]).
pub async fn publish_message(
    conn: &mut PgConnection,
    message: &Message,
) -> Result<(), sqlx::Error> {
    Announcements::default().message(message).send(conn).await
}

/// The instance's one listener connection: frames go to the hub, work
/// notifications wake the workers. Reconnects forever, until cancelled.
/// `application_name` of an instance's listener connection.
pub fn listener_name(instance: Uuid) -> String {
    format!("helpline-listener:{instance}")
}

pub async fn listen(
    pool: PgPool,
    hub: Hub,
    work: Arc<crate::worker::Wakeups>,
    cancel: CancellationToken,
    instance: Uuid,
) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        let mut listener = match connect_listener(&pool, instance).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "notification listener cannot connect; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        hub.set_listening(true);
        // Whatever was published while we were not listening is only in the
        // database now.
        hub.resync_all();
        work.any.notify_waiters();

        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = cancel.cancelled() => return,
            };
            match received {
                // One job, one worker: the others keep sleeping (they poll
                // anyway). A turn's wake-up is counted, so a burst of turns
                // wakes as many workers, or keeps busy ones going.
                Ok(Some(n)) if n.channel() == WORK_CHANNEL && n.payload() == TURN_DUE => {
                    work.turn_due()
                }
                Ok(Some(n)) if n.channel() == WORK_CHANNEL => work.any.notify_one(),
                Ok(Some(n)) => handle_frame(&pool, &hub, n.payload()),
                Ok(None) => {
                    tracing::warn!("notification listener lost its connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener failed; reconnecting");
                    break;
                }
            }
        }
        hub.set_listening(false);
    }
}

/// The listener gets its own connection, named after the instance so an
/// operator (or a test) can find it in `pg_stat_activity`.
async fn connect_listener(pool: &PgPool, instance: Uuid) -> Result<PgListener, sqlx::Error> {
    let options = (*pool.connect_options())
        .clone()
        .application_name(&listener_name(instance));
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen_all([FRAMES_CHANNEL, WORK_CHANNEL]).await?;
    Ok(listener)
}

fn handle_frame(pool: &PgPool, hub: &Hub, payload: &str) {
    let Ok(n) = serde_json::from_str::<Notification>(payload) else {
        tracing::warn!(payload, "ignoring a malformed frame notification");
        return;
    };
    // Rendered only once someone here watches.
    let frame = |n: &Notification| match (n.f, &n.m) {
        (Some(f), _) => Some(Utf8Bytes::from(f.get().to_owned())),
        (None, Some(m)) if n.a => Some(agent_frames::item(m).into()),
        (None, Some(m)) => Some(ServerFrame::from(m).to_json().into()),
        (None, None) => None,
    };
    if n.a {
        if hub.agents.receiver_count() == 0 {
            return;
        }
        let frame = frame(&n);
        let agents = hub.agents.clone();
        let send = move |delivery| {
            let _ = agents.send(AgentDelivery {
                conversation_id: Some(n.c),
                delivery,
            });
        };
        match (n.seq, frame) {
            (Some(seq), Some(frame)) => send(Delivery::Message { seq, frame }),
            (None, Some(frame)) => send(Delivery::Ephemeral(frame)),
            (Some(seq), None) => {
                // Too big to inline: read it back, off the listener's path.
                let (pool, conversation_id) = (pool.clone(), n.c);
                tokio::spawn(async move {
                    match conversations::item_at(&pool, conversation_id, seq).await {
                        Ok(Some(m)) => send(Delivery::Message {
                            seq,
                            frame: agent_frames::item(&m).into(),
                        }),
                        _ => send(Delivery::Resync),
                    }
                });
            }
            (None, None) => {}
        }
        return;
    }
    let Some(sender) = hub.sender(n.c) else {
        return;
    };
    match (n.seq, frame(&n)) {
        (Some(seq), Some(frame)) => {
            let _ = sender.send(Delivery::Message { seq, frame });
        }
        (None, Some(frame)) => {
            let _ = sender.send(Delivery::Ephemeral(frame));
        }
        (Some(seq), None) => {
            // Too big to inline: read it back, off the listener's path.
            let (pool, conversation_id) = (pool.clone(), n.c);
            tokio::spawn(async move {
                match conversations::message_at(&pool, conversation_id, seq).await {
                    Ok(Some(m)) => {
                        let frame = Utf8Bytes::from(ServerFrame::from(&m).to_json());
                        let _ = sender.send(Delivery::Message { seq, frame });
                    }
                    _ => {
                        let _ = sender.send(Delivery::Resync);
                    }
                }
            });
        }
        (None, None) => {}
    }
}
