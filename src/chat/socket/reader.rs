//! The reading half of a customer's socket: the customer's frames, each
//! answered through the writer, with the visitor's limits applied.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures::{stream::SplitStream, StreamExt};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{ToWriter, CLOSE_GOING_AWAY, CLOSE_POLICY};
use crate::chat::{receive_customer_message, Received};
use crate::{
    hub::Delivery,
    limits::{self, AbuseCounter, Limits},
    observe::Metrics,
    protocol::customer_frames::{error_json, ClientFrame, FrameError, ServerFrame},
};

/// The reader's limits: the visitor's message bucket, abuse and idleness.
pub(super) struct ReaderLimits {
    pub(super) visitor: Uuid,
    pub(super) limits: Arc<Limits>,
    pub(super) metrics: Metrics,
}

/// The customer's frames: each is answered through `to_writer` (errors, pongs,
/// the stored message) and stored messages also reach every other socket
/// through the hub. The reader also pings, and closes a socket that is idle
/// or abusive.
pub(super) async fn read_frames(
    mut stream: SplitStream<WebSocket>,
    to_writer: mpsc::Sender<ToWriter>,
    pool: PgPool,
    conversation_id: Uuid,
    reader_limits: ReaderLimits,
) {
    let config = &reader_limits.limits.config;
    let mut abuse = AbuseCounter::new(config.abuse_errors_per_minute);
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let idle_deadline = last_heard + config.idle_timeout;
        let message = tokio::select! {
            message = stream.next() => message,
            _ = ping.tick() => {
                if to_writer.send(ToWriter::Ping).await.is_err() {
                    break;
                }
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                reader_limits.metrics.socket_closed_for("idle");
                let _ = to_writer.send(ToWriter::Close(CLOSE_GOING_AWAY, "idle timeout")).await;
                break;
            }
        };
        let Some(Ok(message)) = message else { break };
        last_heard = tokio::time::Instant::now();
        let frame = match message {
            WsMessage::Text(t) => ClientFrame::parse(t.as_str()),
            WsMessage::Binary(_) => Err(FrameError::new("invalid_frame", "frames must be text")),
            WsMessage::Close(_) => break,
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
        };
        // Checked before the database is touched: a refused message is not stored.
        let frame = match frame {
            Ok(ClientFrame::Message { .. }) => {
                match reader_limits
                    .limits
                    .messages
                    .take(reader_limits.visitor, std::time::Instant::now())
                {
                    Ok(()) => frame,
                    Err(wait) => {
                        reader_limits.metrics.rate_limited("messages");
                        let secs = limits::retry_after_secs(wait);
                        let json = serde_json::json!({
                            "type": "error",
                            "code": "rate_limited",
                            "message": format!("too many messages; try again in {secs} s"),
                            "retry_after": secs,
                        });
                        if to_writer
                            .send(ToWriter::Deliver(ephemeral(json.to_string())))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        if abuse.record(std::time::Instant::now()) {
                            close_for_abuse(&to_writer, &reader_limits.metrics).await;
                            break;
                        }
                        continue;
                    }
                }
            }
            other => other,
        };
        let is_error = matches!(frame, Err(_) | Ok(ClientFrame::Hello { .. }));
        let reply = match frame {
            Err(e) => error_delivery(&e),
            Ok(ClientFrame::Ping) => ephemeral(ServerFrame::Pong.to_json()),
            Ok(ClientFrame::Hello { .. }) => error_delivery(&FrameError::new(
                "already_authenticated",
                "hello was already received",
            )),
            Ok(ClientFrame::Message { client_id, text }) => {
                match Box::pin(receive_customer_message(
                    &pool,
                    conversation_id,
                    &client_id,
                    text.trim(),
                ))
                .await
                {
                    Ok(Received::New(m)) => Delivery::Message {
                        seq: m.seq.unwrap_or_default(),
                        frame: ServerFrame::from(&m).to_json().into(),
                    },
                    // Sent even if this socket has shown it: it answers the retry.
                    Ok(Received::Duplicate(m)) => ephemeral(ServerFrame::from(&m).to_json()),
                    Err(e) => {
                        tracing::error!(error = %e, "storing a customer message failed");
                        error_delivery(&FrameError::new(
                            "internal",
                            "the message was not stored; send it again",
                        ))
                    }
                }
            }
        };
        if to_writer.send(ToWriter::Deliver(reply)).await.is_err() {
            break;
        }
        if is_error && abuse.record(std::time::Instant::now()) {
            close_for_abuse(&to_writer, &reader_limits.metrics).await;
            break;
        }
    }
}

async fn close_for_abuse(to_writer: &mpsc::Sender<ToWriter>, metrics: &Metrics) {
    metrics.socket_closed_for("abuse");
    let error = FrameError::new("abuse", "too many invalid frames; closing");
    let _ = to_writer
        .send(ToWriter::Deliver(error_delivery(&error)))
        .await;
    let _ = to_writer
        .send(ToWriter::Close(CLOSE_POLICY, "policy violation"))
        .await;
}

fn ephemeral(frame: String) -> Delivery {
    Delivery::Ephemeral(frame.into())
}

fn error_delivery(e: &FrameError) -> Delivery {
    ephemeral(error_json(e))
}
