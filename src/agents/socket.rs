//! The console's live feed, `GET /api/agent/ws`: every item, status and
//! change of state of every conversation, as it happens. For the
//! conversations a console `watch`es (those whose transcript it shows) the
//! feed has the customer socket's guarantees: replay after `after_seq`, then
//! every item once, in `seq` order, gaps filled from the database.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade},
        State,
    },
    http::{header, HeaderMap},
    response::Response,
};
use futures::{stream::SplitSink, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::auth::CurrentAgent;
use crate::protocol::agent_frames;
use crate::{
    error::ApiError,
    hub::{AgentDelivery, Delivery},
    state::AppState,
    storage::{self, conversations},
};

const MAX_FRAME_BYTES: usize = 16 * 1024;
/// How often an open feed checks that its session still stands: the feed
/// closes within this long of a sign-out, the session's expiry, or the
/// agent being disabled.
const SESSION_CHECK: Duration = Duration::from_secs(2);
const CLOSE_POLICY: u16 = 1008;

/// `GET /api/agent/ws`: signed-in agents only, from the console's own origin.
pub(super) async fn upgrade(
    agent: CurrentAgent,
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden {
            code: "origin_not_allowed",
            message: "the agent feed is only for the console's own pages".into(),
        });
    }
    let tasks = state.tasks.clone();
    let session = SignedIn {
        session_id: agent
            .session
            .id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        agent_id: agent.id,
        name: agent.name.clone(),
    };
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| tasks.track_future(serve(socket, state, session))))
}

/// Browsers always send `Origin` on a WebSocket; it must name this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true; // not a browser
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    bare == Some(host)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Watch {
        conversation_id: Uuid,
        after_seq: Option<i64>,
    },
    Unwatch {
        conversation_id: Uuid,
    },
    Ping,
}

struct Feed {
    sink: SplitSink<WebSocket, WsMessage>,
    state: AppState,
    /// Watched conversations and the last item seq sent for each.
    watched: HashMap<Uuid, i64>,
}

/// Whose feed it is: the session it was opened with.
struct SignedIn {
    session_id: String,
    agent_id: Uuid,
    name: String,
}

async fn serve(socket: WebSocket, state: AppState, signed_in: SignedIn) {
    let _open = state.metrics.socket_opened("agent");
    let mut session_check = tokio::time::interval(SESSION_CHECK);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deliveries = state.hub.subscribe_agents();
    let (sink, mut stream) = socket.split();
    let shutdown = state.shutdown.clone();
    let mut feed = Feed {
        sink,
        state,
        watched: HashMap::new(),
    };
    if feed
        .send(json!({ "type": "welcome", "agent": { "name": signed_in.name } }).to_string())
        .await
        .is_err()
    {
        return;
    }
    loop {
        let sent = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let close = CloseFrame { code: 1001, reason: Utf8Bytes::from_static("server restarting") };
                let _ = feed.sink.send(WsMessage::Close(Some(close))).await;
                return;
            }
            _ = session_check.tick() => {
                let live = storage::agents::session_is_live(
                    &feed.state.pool,
                    &signed_in.session_id,
                    signed_in.agent_id,
                )
                .await;
                // A database that cannot answer ends nothing: the next
                // check asks again.
                if let Ok(false) = live {
                    let close = CloseFrame { code: CLOSE_POLICY, reason: Utf8Bytes::from_static("signed out") };
                    let _ = feed.sink.send(WsMessage::Close(Some(close))).await;
                    return;
                }
                Ok(())
            }
            message = stream.next() => match message {
                Some(Ok(WsMessage::Text(text))) => feed.client_frame(text.as_str()).await,
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => Ok(()),
            },
            delivery = deliveries.recv() => match delivery {
                Ok(delivery) => feed.deliver(delivery).await,
                Err(RecvError::Lagged(_)) => feed.resync().await,
                Err(RecvError::Closed) => return,
            },
        };
        if sent.is_err() {
            return;
        }
    }
}

impl Feed {
    async fn client_frame(&mut self, text: &str) -> Result<(), axum::Error> {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Watch {
                conversation_id,
                after_seq,
            }) => {
                let last_seq =
                    match conversations::last_agent_seq(&self.state.pool, conversation_id).await {
                        Ok(Some(last)) => last,
                        Ok(None) => return self.error("not_found", "no such conversation").await,
                        Err(e) => {
                            tracing::warn!(error = %e, "watch failed");
                            return self.error("internal", "try again").await;
                        }
                    };
                let watching = json!({ "type": "watching", "conversation_id": conversation_id, "last_seq": last_seq });
                self.send(watching.to_string()).await?;
                let after = after_seq.unwrap_or(0).clamp(0, last_seq);
                self.watched.insert(conversation_id, after);
                self.catch_up(conversation_id).await
            }
            Ok(ClientFrame::Unwatch { conversation_id }) => {
                self.watched.remove(&conversation_id);
                Ok(())
            }
            Ok(ClientFrame::Ping) => self.send(json!({ "type": "pong" }).to_string()).await,
            Err(e) => self.error("invalid_frame", &e.to_string()).await,
        }
    }

    async fn deliver(&mut self, delivery: AgentDelivery) -> Result<(), axum::Error> {
        match (delivery.conversation_id, delivery.delivery) {
            (_, Delivery::Resync) => self.resync().await,
            (_, Delivery::Ephemeral(frame)) => self.send(frame).await,
            (Some(c), Delivery::Message { seq, frame }) => match self.watched.get(&c).copied() {
                None => self.send(frame).await,
                Some(last) if seq <= last => Ok(()),
                Some(last) if seq == last + 1 => {
                    self.watched.insert(c, seq);
                    self.send(frame).await
                }
                Some(_) => self.catch_up(c).await,
            },
            (None, Delivery::Message { .. }) => Ok(()),
        }
    }

    /// Notifications may have been lost: the console refreshes its list,
    /// and watched transcripts are filled from the database.
    async fn resync(&mut self) -> Result<(), axum::Error> {
        self.send(json!({ "type": "resync" }).to_string()).await?;
        let watched: Vec<Uuid> = self.watched.keys().copied().collect();
        for c in watched {
            self.catch_up(c).await?;
        }
        Ok(())
    }

    async fn catch_up(&mut self, conversation_id: Uuid) -> Result<(), axum::Error> {
        let Some(&last) = self.watched.get(&conversation_id) else {
            return Ok(());
        };
        match conversations::items_after(&self.state.pool, conversation_id, last).await {
            Ok(items) => {
                for item in items {
                    self.watched.insert(conversation_id, item.agent_seq);
                    self.send(agent_frames::item(&item)).await?;
                }
                Ok(())
            }
            // The next resync (after the database is back) fills the gap.
            Err(e) => {
                tracing::warn!(error = %e, "agent feed cannot catch up yet");
                Ok(())
            }
        }
    }

    async fn error(&mut self, code: &str, message: &str) -> Result<(), axum::Error> {
        self.send(json!({ "type": "error", "code": code, "message": message }).to_string())
            .await
    }

    async fn send(&mut self, frame: impl Into<Utf8Bytes>) -> Result<(), axum::Error> {
        self.state.metrics.frame_sent("agent");
        self.sink.send(WsMessage::Text(frame.into())).await
    }
}
