//! The customer's WebSocket: `hello` first, then a backlog replay, then live
//! frames. A reader task takes the customer's frames; a writer task owns the
//! socket's sending half and keeps it gap-free and duplicate-free by `seq`.

mod reader;
mod writer;

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade},
        ConnectInfo, State,
    },
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{origins, token_hash};
use crate::{
    error::ApiError,
    hub::Delivery,
    limits,
    protocol::customer_frames::{
        error_json, ClientFrame, FrameError, MAX_CLIENT_ID_CHARS, MAX_TEXT_CHARS,
    },
    state::AppState,
    storage::conversations,
};
use reader::{read_frames, ReaderLimits};
use writer::Writer;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames are small; anything bigger is refused before it is parsed. Big
/// enough for any frame the protocol accepts, however it is escaped: a
/// character JSON-escaped as a surrogate pair (`\uD83D\uDE00`) takes 12
/// bytes.
const MAX_FRAME_BYTES: usize = (MAX_TEXT_CHARS + MAX_CLIENT_ID_CHARS) * 12 + 1024;
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

    let (to_writer_tx, to_writer_rx) = mpsc::channel(32);
    let mut write_task =
        tokio::spawn(writer.run(subscription, to_writer_rx, state.shutdown.clone()));
    let mut read_task = tokio::spawn(read_frames(
        stream,
        to_writer_tx,
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
