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
use sqlx::{postgres::PgListener, PgConnection, PgPool};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    chat::frames::{AssistantStatus, ServerFrame},
    storage::conversations::{self, Message},
};

pub const FRAMES_CHANNEL: &str = "helpline_frames";
pub const WORK_CHANNEL: &str = "helpline_work";

/// PostgreSQL drops NOTIFY payloads over 8000 bytes; bigger messages are
/// announced by seq only and read back from the database.
const MAX_INLINE_PAYLOAD: usize = 7900;
const CHANNEL_CAPACITY: usize = 256;

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

#[derive(Clone, Default)]
pub struct Hub {
    topics: Arc<RwLock<HashMap<Uuid, broadcast::Sender<Delivery>>>>,
    /// Whether the listener connection is up (for `/readyz`).
    listening: Arc<AtomicBool>,
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

    /// Whether this instance's listener is connected and listening.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::SeqCst);
    }

    /// Number of conversations with at least one local socket.
    pub fn watched(&self) -> usize {
        self.topics.read().expect("hub lock").len()
    }

    fn resync_all(&self) {
        for sender in self.topics.read().expect("hub lock").values() {
            let _ = sender.send(Delivery::Resync);
        }
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
    seq: Option<i64>,
    #[serde(borrow)]
    f: Option<&'a RawValue>,
}

/// Announces a stored message; delivered when the transaction commits.
pub async fn publish_message(
    conn: &mut PgConnection,
    message: &Message,
) -> Result<(), sqlx::Error> {
    let frame = ServerFrame::from(message).to_json();
    let mut payload = format!(
        r#"{{"c":"{}","seq":{},"f":{frame}}}"#,
        message.conversation_id, message.seq
    );
    if payload.len() > MAX_INLINE_PAYLOAD {
        payload = format!(
            r#"{{"c":"{}","seq":{}}}"#,
            message.conversation_id, message.seq
        );
    }
    notify(conn, FRAMES_CHANNEL, &payload).await
}

/// Announces the assistant's state; delivered when the transaction commits.
pub async fn publish_status(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    status: AssistantStatus,
) -> Result<(), sqlx::Error> {
    let frame = ServerFrame::Status { assistant: status }.to_json();
    notify(
        conn,
        FRAMES_CHANNEL,
        &format!(r#"{{"c":"{conversation_id}","f":{frame}}}"#),
    )
    .await
}

pub async fn notify(
    conn: &mut PgConnection,
    channel: &str,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// The instance's one listener connection: frames go to the hub, work
/// notifications wake the workers. Reconnects forever, until cancelled.
pub async fn listen(pool: PgPool, hub: Hub, work: Arc<Notify>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        let mut listener = match connect_listener(&pool).await {
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
        work.notify_waiters();

        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = cancel.cancelled() => return,
            };
            match received {
                Ok(Some(n)) if n.channel() == WORK_CHANNEL => work.notify_waiters(),
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

async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([FRAMES_CHANNEL, WORK_CHANNEL]).await?;
    Ok(listener)
}

fn handle_frame(pool: &PgPool, hub: &Hub, payload: &str) {
    let Ok(n) = serde_json::from_str::<Notification>(payload) else {
        tracing::warn!(payload, "ignoring a malformed frame notification");
        return;
    };
    let Some(sender) = hub.sender(n.c) else {
        return;
    };
    match (n.seq, n.f) {
        (Some(seq), Some(frame)) => {
            let _ = sender.send(Delivery::Message {
                seq,
                frame: Utf8Bytes::from(frame.get().to_owned()),
            });
        }
        (None, Some(frame)) => {
            let _ = sender.send(Delivery::Ephemeral(Utf8Bytes::from(frame.get().to_owned())));
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
