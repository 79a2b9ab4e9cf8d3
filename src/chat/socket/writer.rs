//! The sending half of a customer's socket: the welcome and backlog, then
//! the hub's deliveries and the reader's answers, gap-free by `seq`.

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures::{stream::SplitSink, SinkExt};
use sqlx::PgPool;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{text, ToWriter, CLOSE_GOING_AWAY};
use crate::{
    hub::{Delivery, Subscription},
    protocol::customer_frames::{AssistantStatus, ServerFrame},
    storage::{conversations, turns},
};

/// The sending half. `last_seq` is the highest message seq this socket has
/// sent; messages arrive in order, and any gap is filled from the database.
pub(super) struct Writer {
    pub(super) sink: SplitSink<WebSocket, WsMessage>,
    pub(super) pool: PgPool,
    pub(super) conversation_id: Uuid,
    pub(super) last_seq: i64,
    pub(super) metrics: crate::observe::Metrics,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error("socket closed: {0}")]
    Socket(#[from] axum::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Writer {
    /// `welcome`, the messages after `after_seq`, then the assistant's state.
    pub(super) async fn welcome(&mut self, after_seq: Option<i64>) -> Result<(), WriteError> {
        let last_seq = conversations::last_seq(&self.pool, self.conversation_id).await?;
        // A client that claims more than exists has a stale view: give it all.
        let after_seq = after_seq.filter(|&n| n <= last_seq).unwrap_or(0);
        let welcome = ServerFrame::Welcome {
            conversation_id: self.conversation_id,
            last_seq,
        };
        self.send(welcome.to_json()).await?;
        self.last_seq = after_seq;
        self.catch_up().await?;
        let thinking = turns::has_active(&self.pool, self.conversation_id).await?;
        let assistant = if thinking {
            AssistantStatus::Thinking
        } else {
            AssistantStatus::Idle
        };
        self.send(ServerFrame::Status { assistant }.to_json()).await
    }

    pub(super) async fn run(
        mut self,
        mut subscription: Subscription,
        mut from_reader: mpsc::Receiver<ToWriter>,
        shutdown: CancellationToken,
    ) {
        let result: Result<(), WriteError> = async {
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        let close = CloseFrame { code: CLOSE_GOING_AWAY, reason: Utf8Bytes::from_static("server restarting") };
                        self.sink.send(WsMessage::Close(Some(close))).await?;
                        return Ok(());
                    }
                    delivery = from_reader.recv() => match delivery {
                        Some(ToWriter::Deliver(d)) => self.deliver(d).await?,
                        Some(ToWriter::Ping) => self.sink.send(WsMessage::Ping(Default::default())).await?,
                        Some(ToWriter::Close(code, reason)) => {
                            let close = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                            self.sink.send(WsMessage::Close(Some(close))).await?;
                            return Ok(());
                        }
                        None => return Ok(()),
                    },
                    delivery = subscription.receiver.recv() => match delivery {
                        Ok(d) => self.deliver(d).await?,
                        Err(RecvError::Lagged(_)) => self.catch_up_or_wait().await?,
                        Err(RecvError::Closed) => return Ok(()),
                    },
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "socket writer stopped");
        }
    }

    async fn deliver(&mut self, delivery: Delivery) -> Result<(), WriteError> {
        match delivery {
            Delivery::Message { seq, .. } if seq <= self.last_seq => Ok(()),
            Delivery::Message { seq, frame } if seq == self.last_seq + 1 => {
                self.send(frame).await?;
                self.last_seq = seq;
                Ok(())
            }
            Delivery::Message { .. } | Delivery::Resync => self.catch_up_or_wait().await,
            Delivery::Ephemeral(frame) => self.send(frame).await,
        }
    }

    /// Catches up, unless the database is unreachable: then the socket stays
    /// open and the listener's resync, which follows every reconnect to the
    /// database, fills the gap later.
    async fn catch_up_or_wait(&mut self) -> Result<(), WriteError> {
        match Box::pin(self.catch_up()).await {
            Err(WriteError::Database(e)) => {
                tracing::warn!(error = %e, "cannot catch up yet; waiting for the next resync");
                Ok(())
            }
            other => other,
        }
    }

    /// Sends every stored message after `last_seq`, in order.
    async fn catch_up(&mut self) -> Result<(), WriteError> {
        for m in
            conversations::messages_after(&self.pool, self.conversation_id, self.last_seq).await?
        {
            self.send(ServerFrame::from(&m).to_json()).await?;
            self.last_seq = m.seq.unwrap_or(self.last_seq);
        }
        Ok(())
    }

    async fn send(&mut self, frame: impl Into<Utf8Bytes>) -> Result<(), WriteError> {
        self.sink.send(text(frame)).await?;
        self.metrics.frame_sent("customer");
        Ok(())
    }
}
