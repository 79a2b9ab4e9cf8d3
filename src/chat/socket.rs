//! The customer's WebSocket: `hello` first, then a backlog replay, then live
//! frames. A reader task takes the customer's frames; a writer task owns the
//! socket's sending half and keeps it gap-free and duplicate-free by `seq`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade},
        ConnectInfo, State,
    },
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use futures::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use sqlx::PgPool;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{origins, receive_customer_message, token_hash, Received};
use crate::{
    error::ApiError,
    hub::{Delivery, Subscription},
    limits::{self, AbuseCounter, Limits},
    observe::Metrics,
    protocol::customer_frames::{
        error_json, AssistantStatus, ClientFrame, FrameError, ServerFrame, MAX_TEXT_CHARS,
    },
    state::AppState,
    storage::{conversations, turns},
};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames are small; anything bigger is refused before it is parsed.
const MAX_FRAME_BYTES: usize = MAX_TEXT_CHARS * 4 + 1024;
/// tungstenite zero-fills its whole read buffer (128 KiB by default) on the
/// first read, which would keep all of it resident for every idle socket;
/// frames are small, and a bigger one grows the buffer as needed.
const READ_BUFFER_BYTES: usize = 4 * 1024;

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;

/// `GET /api/chat/ws`. A page from a site that is not allowed gets 403
/// before the upgrade (cross-site WebSocket hijacking).
pub(super) async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = origins::check(&state.config.allowed_origins, &headers) {
        return e.into_response();
    }
    // Refused before the upgrade: a flood of connections costs no socket.
    if let Err(wait) = state
        .limits
        .sockets
        .take(peer.ip(), std::time::Instant::now())
    {
        state.metrics.rate_limited("sockets");
        return ApiError::TooManyRequests {
            retry_after_secs: limits::retry_after_secs(wait),
        }
        .into_response();
    }
    let tasks = state.tasks.clone();
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        // Tracked, so that shutdown waits for sockets to say goodbye.
        .on_upgrade(move |socket| tasks.track_future(serve(socket, state)))
}

/// A socket's three tasks (this one, the reader and the writer) each keep
/// their future, at its largest, for the socket's whole life: the deep
/// steps that run once or now and then (the handshake, the welcome, storing
/// a message, catching up) are boxed, so their database futures take memory
/// only while they run, not for as long as the socket stays open.
async fn serve(mut socket: WebSocket, state: AppState) {
    let Some((visitor, conversation_id, after_seq)) =
        Box::pin(handshake(&mut socket, &state)).await
    else {
        return;
    };
    let Some(_slot) = state.limits.open_socket(visitor) else {
        state.metrics.rate_limited("sockets_per_visitor");
        state.metrics.socket_closed_for("too_many_sockets");
        let max = state.limits.config.sockets_per_visitor;
        Box::pin(refuse(
            &mut socket,
            FrameError::new(
                "too_many_sockets",
                format!("this visitor already has {max} open sockets; close one"),
            ),
        ))
        .await;
        return;
    };
    let _open = state.metrics.socket_opened("customer");
    // Subscribe before reading the backlog, so nothing falls between the two.
    let subscription = state.hub.subscribe(conversation_id);
    let (sink, stream) = socket.split();
    let mut writer = Writer {
        sink,
        pool: state.pool.clone(),
        conversation_id,
        last_seq: 0,
        metrics: state.metrics.clone(),
    };
    if let Err(e) = Box::pin(writer.welcome(after_seq)).await {
        tracing::debug!(error = %e, "socket closed during welcome");
        return;
    }

    let (direct_tx, direct_rx) = mpsc::channel(32);
    let mut write_task = tokio::spawn(writer.run(subscription, direct_rx, state.shutdown.clone()));
    let mut read_task = tokio::spawn(read_frames(
        stream,
        direct_tx,
        state.pool.clone(),
        conversation_id,
        ReaderLimits {
            visitor,
            limits: state.limits.clone(),
            metrics: state.metrics.clone(),
        },
    ));
    tokio::select! {
        _ = &mut write_task => read_task.abort(),
        _ = &mut read_task => {
            // The reader's last words (an error, a close) are queued: let the
            // writer send them (it ends when the queue closes), briefly.
            if tokio::time::timeout(Duration::from_secs(2), &mut write_task).await.is_err() {
                write_task.abort();
            }
        }
    }
}

/// Waits for `hello`, checks the token, and finds the visitor's conversation.
async fn handshake(socket: &mut WebSocket, state: &AppState) -> Option<(Uuid, Uuid, Option<i64>)> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, next_text(socket)).await {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(_) => {
            refuse(
                socket,
                FrameError::new("not_authenticated", "send a hello frame first"),
            )
            .await;
            return None;
        }
    };
    let (token, after_seq) = match ClientFrame::parse(&first) {
        Ok(ClientFrame::Hello { token, after_seq }) => (token, after_seq),
        Ok(_) | Err(_) => {
            refuse(
                socket,
                FrameError::new("not_authenticated", "the first frame must be hello"),
            )
            .await;
            return None;
        }
    };
    let visitor = match conversations::find_visitor(&state.pool, &token_hash(&token)).await {
        Ok(Some(visitor)) => visitor,
        Ok(None) => {
            refuse(
                socket,
                FrameError::new("invalid_token", "unknown visitor token"),
            )
            .await;
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "visitor lookup failed");
            let _ = socket
                .send(text(error_json(&FrameError::new("internal", "try again"))))
                .await;
            return None;
        }
    };
    match conversations::open_conversation(&state.pool, visitor).await {
        Ok(conversation_id) => Some((visitor, conversation_id, after_seq)),
        Err(e) => {
            tracing::error!(error = %e, "opening the conversation failed");
            let _ = socket
                .send(text(error_json(&FrameError::new("internal", "try again"))))
                .await;
            None
        }
    }
}

async fn next_text(socket: &mut WebSocket) -> Option<String> {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            WsMessage::Text(t) => return Some(t.to_string()),
            WsMessage::Close(_) => return None,
            _ => continue,
        }
    }
    None
}

async fn refuse(socket: &mut WebSocket, error: FrameError) {
    let _ = socket.send(text(error_json(&error))).await;
    let close = CloseFrame {
        code: CLOSE_POLICY,
        reason: Utf8Bytes::from_static("policy violation"),
    };
    let _ = socket.send(WsMessage::Close(Some(close))).await;
}

fn text(s: impl Into<Utf8Bytes>) -> WsMessage {
    WsMessage::Text(s.into())
}

/// What the reader asks of the writer, besides frames.
enum ToWriter {
    Deliver(Delivery),
    Ping,
    Close(u16, &'static str),
}

/// The reader's limits: the visitor's message bucket, abuse and idleness.
struct ReaderLimits {
    visitor: Uuid,
    limits: Arc<Limits>,
    metrics: Metrics,
}

/// The customer's frames: each is answered through `direct` (errors, pongs,
/// the stored message) and stored messages also reach every other socket
/// through the hub. The reader also pings, and closes a socket that is idle
/// or abusive.
async fn read_frames(
    mut stream: SplitStream<WebSocket>,
    direct: mpsc::Sender<ToWriter>,
    pool: PgPool,
    conversation_id: Uuid,
    guard: ReaderLimits,
) {
    let config = &guard.limits.config;
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
                if direct.send(ToWriter::Ping).await.is_err() {
                    break;
                }
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                guard.metrics.socket_closed_for("idle");
                let _ = direct.send(ToWriter::Close(CLOSE_GOING_AWAY, "idle timeout")).await;
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
                match guard
                    .limits
                    .messages
                    .take(guard.visitor, std::time::Instant::now())
                {
                    Ok(()) => frame,
                    Err(wait) => {
                        guard.metrics.rate_limited("messages");
                        let secs = limits::retry_after_secs(wait);
                        let json = serde_json::json!({
                            "type": "error",
                            "code": "rate_limited",
                            "message": format!("too many messages; try again in {secs} s"),
                            "retry_after": secs,
                        });
                        if direct
                            .send(ToWriter::Deliver(ephemeral(json.to_string())))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        if abuse.record(std::time::Instant::now()) {
                            close_for_abuse(&direct, &guard.metrics).await;
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
        if direct.send(ToWriter::Deliver(reply)).await.is_err() {
            break;
        }
        if is_error && abuse.record(std::time::Instant::now()) {
            close_for_abuse(&direct, &guard.metrics).await;
            break;
        }
    }
}

async fn close_for_abuse(direct: &mpsc::Sender<ToWriter>, metrics: &Metrics) {
    metrics.socket_closed_for("abuse");
    let error = FrameError::new("abuse", "too many invalid frames; closing");
    let _ = direct.send(ToWriter::Deliver(error_delivery(&error))).await;
    let _ = direct
        .send(ToWriter::Close(CLOSE_POLICY, "policy violation"))
        .await;
}

fn ephemeral(frame: String) -> Delivery {
    Delivery::Ephemeral(frame.into())
}

fn error_delivery(e: &FrameError) -> Delivery {
    ephemeral(error_json(e))
}

/// The sending half. `last_seq` is the highest message seq this socket has
/// sent; messages arrive in order, and any gap is filled from the database.
struct Writer {
    sink: SplitSink<WebSocket, WsMessage>,
    pool: PgPool,
    conversation_id: Uuid,
    last_seq: i64,
    metrics: crate::observe::Metrics,
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("socket closed: {0}")]
    Socket(#[from] axum::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Writer {
    /// `welcome`, the messages after `after_seq`, then the assistant's state.
    async fn welcome(&mut self, after_seq: Option<i64>) -> Result<(), WriteError> {
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

    async fn run(
        mut self,
        mut subscription: Subscription,
        mut direct: mpsc::Receiver<ToWriter>,
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
                    delivery = direct.recv() => match delivery {
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
