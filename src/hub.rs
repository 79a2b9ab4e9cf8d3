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
use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgConnection, PgPool,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    protocol::agent_frames,
    protocol::customer_frames::{AssistantStatus, ServerFrame},
    storage::{
        conversations::{self, Message},
        notify::{Announcements, FrameNotice, FRAMES_CHANNEL, TURN_DUE, WORK_CHANNEL},
    },
};

/// Per conversation. A socket that falls further behind reads the gap from
/// the database (`RecvError::Lagged`). The slots are allocated up front, per
/// watched conversation, so a deeper buffer costs every idle socket memory.
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

/// Frames for the sockets, added to a writer's [`Announcements`]: rendered
/// here, where the frames' formats are known; sent by the writer.
pub trait Announce {
    /// A stored item, to agents, and to the customer's sockets if it is
    /// public.
    fn message(self, message: &Message) -> Self;
    /// The assistant's state, to the conversation's sockets and to agents.
    fn status(self, conversation_id: Uuid, status: AssistantStatus) -> Self;
}

impl Announce for Announcements {
    fn message(self, message: &Message) -> Self {
        let c = message.conversation_id;
        let agents = agent_frames::item(message);
        let this = match message.seq {
            Some(seq) => {
                let frame = ServerFrame::from(message).to_json();
                self.frame(c, false, Some(seq), &frame)
            }
            None => self,
        };
        this.frame(c, true, Some(message.agent_seq), &agents)
    }

    fn status(self, conversation_id: Uuid, status: AssistantStatus) -> Self {
        let frame = ServerFrame::Status { assistant: status }.to_json();
        let agents = agent_frames::status(conversation_id, status);
        self.frame(conversation_id, false, None, &frame)
            .frame(conversation_id, true, None, &agents)
    }
}

/// Announces a stored item (see [`Announce::message`]).
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
    work: Arc<crate::queue::Wakeups>,
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
    let Ok(n) = serde_json::from_str::<FrameNotice>(payload) else {
        tracing::warn!(payload, "ignoring a malformed frame notification");
        return;
    };
    // Rendered only once someone here watches.
    let frame = |n: &FrameNotice| match (n.f, &n.m) {
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
