//! An OpenAI simulator, like stripe-mock: it serves the part of the
//! Conversations and Responses APIs Helpline uses, with objects in OpenAI's
//! shape, runs background responses, and delivers Standard-Webhooks-signed
//! `response.*` events to a configured URL.
//!
//! Helpline's production code talks to it over HTTP through async-openai,
//! exactly as it talks to OpenAI. `helpline sim` runs it as its own process;
//! demo mode and the tests run it in-process.
//!
//! Test hooks live under `/_sim/` (recorded requests, behaviour switches).

mod behaviour;
mod replies;
mod webhooks;

pub use behaviour::{Behaviour, Failure, SimOutcome};

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    serve::ListenerExt,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::webhooks::signature::WebhookSecret;

/// One request the simulator received (for tests and `/_sim/requests`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// Milliseconds since the Unix epoch, when it arrived.
    pub at_ms: i64,
}

#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<SimState>,
    /// Ids of responses as they are created, for tests to await.
    created: tokio::sync::broadcast::Sender<String>,
    /// Ids of background responses as they reach a final status (before
    /// their webhook is sent), for tests to await.
    finished: tokio::sync::broadcast::Sender<String>,
    secret: WebhookSecret,
    http: reqwest::Client,
}

#[derive(Default)]
struct SimState {
    webhook_url: Option<String>,
    behaviour: Behaviour,
    conversations: HashMap<String, Value>,
    responses: HashMap<String, Value>,
    requests: Vec<RecordedRequest>,
}

/// A simulator serving on a loopback port.
pub struct SimHandle {
    pub simulator: Simulator,
    pub addr: SocketAddr,
}

impl SimHandle {
    /// What to use as `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Simulator {
    pub fn new(secret: WebhookSecret, webhook_url: Option<String>, behaviour: Behaviour) -> Self {
        let state = SimState {
            webhook_url,
            behaviour,
            ..Default::default()
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let created = tokio::sync::broadcast::channel(1024).0;
        let finished = tokio::sync::broadcast::channel(1024).0;
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                created,
                finished,
                secret,
                http,
            }),
        }
    }

    /// Binds `addr` and serves until `shutdown` is cancelled.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            // Small request/response exchanges, as OpenAI's own front end
            // serves them: no Nagle delay.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(SimHandle {
            simulator: self,
            addr,
        })
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/conversations", post(create_conversation))
            .route(
                "/v1/conversations/{id}/items",
                post(create_conversation_items),
            )
            .route("/v1/responses", post(create_response))
            .route("/v1/responses/{id}", get(retrieve_response))
            .route("/v1/responses/{id}/cancel", post(cancel_response))
            .route("/v1/models", get(list_models))
            .route("/v1/conversations/{id}", delete(delete_conversation))
            .route("/v1/responses/{id}", delete(delete_response))
            .route("/_sim/requests", get(list_requests))
            .route("/_sim/behaviour", get(get_behaviour).put(put_behaviour))
            .with_state(self.clone())
    }

    pub fn set_webhook_url(&self, url: impl Into<String>) {
        self.lock().webhook_url = Some(url.into());
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.lock().behaviour = behaviour;
    }

    /// The ids of responses created from now on, in order.
    pub fn watch_created(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.created.subscribe()
    }

    /// The ids of responses that reach a final status from now on, in order:
    /// what a client delivering webhooks itself must wait for, as OpenAI
    /// only announces a finished response.
    pub fn watch_finished(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.finished.subscribe()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.inner.state.lock().expect("simulator state lock")
    }

    fn record(&self, method: &str, path: String, body: Value) {
        let at_ms = chrono::Utc::now().timestamp_millis();
        self.lock().requests.push(RecordedRequest {
            method: method.into(),
            path,
            body,
            at_ms,
        });
    }

    /// Ends a background response as `Behaviour::outcome` says (unless it
    /// was cancelled meanwhile) and announces it.
    async fn complete(&self, response_id: &str) {
        let event = {
            let mut state = self.lock();
            let outcome = state.behaviour.outcome;
            let SimState {
                responses,
                conversations,
                ..
            } = &mut *state;
            let Some(response) = responses.get_mut(response_id) else {
                return;
            };
            if response["status"] != "queued" && response["status"] != "in_progress" {
                return;
            }
            match outcome {
                SimOutcome::Never => {
                    response["status"] = json!("in_progress");
                    None
                }
                SimOutcome::Failed => {
                    response["status"] = json!("failed");
                    response["error"] = json!({ "code": "server_error", "message": "The model failed to generate a response." });
                    Some("response.failed")
                }
                SimOutcome::Incomplete => {
                    response["status"] = json!("incomplete");
                    response["incomplete_details"] = json!({ "reason": "max_output_tokens" });
                    Some("response.incomplete")
                }
                SimOutcome::Cancelled => {
                    response["status"] = json!("cancelled");
                    Some("response.cancelled")
                }
                SimOutcome::Completed => {
                    let message = answer(response);
                    if let Some(conversation_id) = response["conversation"]["id"].as_str() {
                        if let Some(conversation) = conversations.get_mut(conversation_id) {
                            let items = conversation["_items"].as_array_mut().expect("items array");
                            items
                                .extend(response["_input"].as_array().cloned().unwrap_or_default());
                            items.push(message);
                        }
                    }
                    Some("response.completed")
                }
            }
        };
        if let Some(event_type) = event {
            let _ = self.inner.finished.send(response_id.to_owned());
            self.send_webhook(event_type, response_id).await;
        }
    }
}

/// Completes `response` with the assistant's message; returns the message.
fn answer(response: &mut Value) -> Value {
    let inputs = user_texts(&response["_input"]);
    let text = replies::answer(&inputs);
    let message = if response["_offers_handoff"] == true && replies::wants_a_person(&inputs) {
        // As a model would: call the tool rather than answer.
        json!({
            "type": "function_call",
            "id": format!("fc_{}", random_hex(24)),
            "call_id": format!("call_{}", random_hex(12)),
            "name": "handoff_to_human",
            "arguments": json!({ "reason": "the customer asked for a person" }).to_string(),
            "status": "completed",
        })
    } else {
        json!({
            "type": "message",
            "id": format!("msg_{}", random_hex(24)),
            "status": "completed",
            "role": "assistant",
            "content": [{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }],
        })
    };
    let input_tokens = inputs
        .iter()
        .map(|t| t.split_whitespace().count())
        .sum::<usize>() as u64;
    let output_tokens = text.split_whitespace().count() as u64;
    response["status"] = json!("completed");
    response["completed_at"] = json!(now());
    response["output"] = json!([message]);
    response["usage"] = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": output_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": input_tokens + output_tokens,
    });
    message
}

async fn create_conversation(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_else(|| json!({}));
    sim.record("POST", "/v1/conversations".into(), body.clone());
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    let metadata = body.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Err(e) = check_metadata(&metadata) {
        return e.into_response();
    }
    let id = format!("conv_{}", random_hex(24));
    let conversation =
        json!({ "id": id, "object": "conversation", "created_at": now(), "metadata": metadata });
    let mut stored = conversation.clone();
    stored["_items"] = body.get("items").cloned().unwrap_or_else(|| json!([]));
    sim.lock().conversations.insert(id, stored);
    Json(conversation).into_response()
}

async fn create_response(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    sim.record("POST", "/v1/responses".into(), body.clone());
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    let failure = sim.lock().behaviour.take_create_failure();
    let answer_after = match failure {
        Some(Failure::RateLimited { retry_after_secs }) => {
            let mut refused = failure_response(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                "rate_limit_exceeded",
            );
            refused
                .headers_mut()
                .insert("retry-after", retry_after_secs.into());
            return refused;
        }
        Some(Failure::ServerError) => {
            return failure_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                "server_error",
            );
        }
        Some(Failure::Timeout { after_ms }) => Some(Duration::from_millis(after_ms)),
        None => None,
    };
    let Some(model) = body["model"].as_str() else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'model'.",
            Some("model"),
        );
    };
    let conversation_id = match &body["conversation"] {
        Value::Null => None,
        Value::String(id) => Some(id.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "Invalid 'conversation'.",
                Some("conversation"),
            )
        }
    };
    if conversation_id.is_some() && !body["previous_response_id"].is_null() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Mutually exclusive parameters: 'previous_response_id' and 'conversation'.",
            Some("conversation"),
        );
    }
    if let Some(id) = &conversation_id {
        if !sim.lock().conversations.contains_key(id) {
            return api_error(
                StatusCode::NOT_FOUND,
                &format!("Conversation with id '{id}' not found."),
                Some("conversation"),
            );
        }
    }
    let metadata = body.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Err(e) = check_metadata(&metadata) {
        return e.into_response();
    }
    let input = match &body["input"] {
        Value::String(text) => json!([{ "type": "message", "role": "user", "content": text }]),
        Value::Array(items) => Value::Array(items.clone()),
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "Missing required parameter: 'input'.",
                Some("input"),
            )
        }
    };
    let background = body["background"].as_bool().unwrap_or(false);
    let id = format!("resp_{}", random_hex(24));
    let mut response = json!({
        "id": id,
        "object": "response",
        "created_at": now(),
        "status": "queued",
        "background": background,
        "error": null,
        "incomplete_details": null,
        "instructions": body["instructions"],
        "max_output_tokens": body["max_output_tokens"],
        "model": model,
        "output": [],
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "store": body["store"].as_bool().unwrap_or(true),
        "temperature": 1.0,
        "top_p": 1.0,
        "metadata": metadata,
    });
    if let Some(conversation_id) = &conversation_id {
        response["conversation"] = json!({ "id": conversation_id });
    }
    if let Some(id) = &conversation_id {
        if let Some(call_id) = unanswered_call(&sim.lock().conversations[id]) {
            let message = format!("No tool output found for function call {call_id}.");
            return api_error(StatusCode::BAD_REQUEST, &message, Some("input"));
        }
    }
    let mut stored = response.clone();
    stored["_input"] = input;
    stored["_offers_handoff"] = json!(offers_handoff(&body["tools"]));
    let behaviour = {
        let mut state = sim.lock();
        state.responses.insert(id.clone(), stored);
        state.behaviour.clone()
    };
    let _ = sim.inner.created.send(id.clone());

    if !background || behaviour.webhook_before_create_returns {
        // Finish now; in the early-webhook case the event is delivered
        // before this call answers.
        sim.complete(&id).await;
        if !background {
            return Json(public(&sim.lock().responses[&id])).into_response();
        }
        return Json(response).into_response();
    }
    let delay = Duration::from_millis(behaviour.reply_delay_ms);
    let (task_sim, task_id) = (sim.clone(), id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        task_sim.complete(&task_id).await;
    });
    if let Some(after) = answer_after {
        // Created and running, but the caller hears of it too late.
        tokio::time::sleep(after).await;
    }
    Json(response).into_response()
}

async fn retrieve_response(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    sim.record("GET", format!("/v1/responses/{id}"), Value::Null);
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    let delay = sim.lock().behaviour.retrieve_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if sim.lock().behaviour.take_retrieve_failure() {
        return failure_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            "server_error",
        );
    }
    match sim.lock().responses.get(&id) {
        Some(response) => Json(public(response)).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            &format!("Response with id '{id}' not found."),
            None,
        ),
    }
}

async fn cancel_response(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    sim.record("POST", format!("/v1/responses/{id}/cancel"), Value::Null);
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    let (answer, cancelled) = {
        let mut state = sim.lock();
        let Some(response) = state.responses.get_mut(&id) else {
            return api_error(
                StatusCode::NOT_FOUND,
                &format!("Response with id '{id}' not found."),
                None,
            );
        };
        if response["background"] != true {
            return api_error(
                StatusCode::BAD_REQUEST,
                "Only background responses can be cancelled.",
                None,
            );
        }
        let running = response["status"] == "queued" || response["status"] == "in_progress";
        if running {
            response["status"] = json!("cancelled");
        }
        (public(response), running)
    };
    if cancelled {
        let sim = sim.clone();
        tokio::spawn(async move { sim.send_webhook("response.cancelled", &id).await });
    }
    Json(answer).into_response()
}

async fn list_requests(State(sim): State<Simulator>) -> Json<Vec<RecordedRequest>> {
    Json(sim.requests())
}

async fn get_behaviour(State(sim): State<Simulator>) -> Json<Behaviour> {
    Json(sim.lock().behaviour.clone())
}

async fn put_behaviour(
    State(sim): State<Simulator>,
    Json(behaviour): Json<Behaviour>,
) -> Json<Behaviour> {
    sim.set_behaviour(behaviour.clone());
    Json(behaviour)
}

/// `POST /v1/conversations/{id}/items`: adds items (e.g. a
/// `function_call_output`) without running the model.
async fn create_conversation_items(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    sim.record(
        "POST",
        format!("/v1/conversations/{id}/items"),
        body.clone(),
    );
    if let Err(e) = authorize(&headers) {
        return e.into_response();
    }
    let Some(items) = body["items"]
        .as_array()
        .filter(|items| !items.is_empty() && items.len() <= 20)
    else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "'items' must hold 1 to 20 items.",
            Some("items"),
        );
    };
    let mut added = Vec::new();
    let mut state = sim.lock();
    let Some(conversation) = state.conversations.get_mut(&id) else {
        return api_error(
            StatusCode::NOT_FOUND,
            &format!("Conversation with id '{id}' not found."),
            None,
        );
    };
    for item in items {
        let mut item = item.clone();
        let prefix = if item["type"] == "function_call_output" {
            "fco"
        } else {
            "item"
        };
        item["id"] = json!(format!("{prefix}_{}", random_hex(24)));
        item["status"] = json!("completed");
        conversation["_items"]
            .as_array_mut()
            .expect("items array")
            .push(item.clone());
        added.push(item);
    }
    let (first, last) = (
        added.first().map(|i| i["id"].clone()),
        added.last().map(|i| i["id"].clone()),
    );
    Json(json!({ "object": "list", "data": added, "first_id": first, "last_id": last, "has_more": false }))
        .into_response()
}

/// A function call on the conversation that no `function_call_output`
/// answers yet (OpenAI refuses to run a response then).
fn unanswered_call(conversation: &Value) -> Option<String> {
    let items = conversation["_items"].as_array()?;
    let answered = |call_id: &Value| {
        items
            .iter()
            .any(|i| i["type"] == "function_call_output" && &i["call_id"] == call_id)
    };
    items
        .iter()
        .filter(|i| i["type"] == "function_call")
        .find(|call| !answered(&call["call_id"]))
        .and_then(|call| call["call_id"].as_str().map(str::to_owned))
}

fn offers_handoff(tools: &Value) -> bool {
    tools.as_array().is_some_and(|tools| {
        tools
            .iter()
            .any(|t| t["type"] == "function" && t["name"] == "handoff_to_human")
    })
}

/// The object as the API shows it: without the simulator's private fields.
fn public(stored: &Value) -> Value {
    let mut shown = stored.clone();
    if let Some(object) = shown.as_object_mut() {
        object.retain(|k, _| !k.starts_with('_'));
    }
    shown
}

/// The text of every user message in a response's input.
fn user_texts(input: &Value) -> Vec<String> {
    let items = input.as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|item| item["role"] == "user")
        .filter_map(|item| match &item["content"] {
            Value::String(text) => Some(text.clone()),
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
            ),
            _ => None,
        })
        .collect()
}

fn authorize(headers: &HeaderMap) -> Result<(), ApiFailure> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| !k.trim().is_empty());
    match key {
        Some(_) => Ok(()),
        None => Err(failure(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth.",
            None,
        )),
    }
}

fn check_metadata(metadata: &Value) -> Result<(), ApiFailure> {
    let Some(pairs) = metadata.as_object() else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "Invalid 'metadata': expected an object.",
            Some("metadata"),
        ));
    };
    let too_long = pairs
        .iter()
        .any(|(k, v)| k.chars().count() > 64 || v.as_str().is_none_or(|v| v.chars().count() > 512));
    if pairs.len() > 16 || too_long {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "Invalid 'metadata': at most 16 pairs, keys up to 64 characters, string values up to 512.",
            Some("metadata"),
        ));
    }
    Ok(())
}

/// A server-side failure as OpenAI reports it.
fn failure_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let error = json!({ "message": message, "type": kind, "param": null, "code": code });
    (status, Json(json!({ "error": error }))).into_response()
}

/// An error as OpenAI reports it.
struct ApiFailure {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let error = json!({ "message": self.message, "type": "invalid_request_error", "param": self.param, "code": null });
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

fn api_error(status: StatusCode, message: &str, param: Option<&'static str>) -> Response {
    failure(status, message, param).into_response()
}

fn failure(status: StatusCode, message: &str, param: Option<&'static str>) -> ApiFailure {
    ApiFailure {
        status,
        message: message.to_owned(),
        param,
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `authorize`, and when the behaviour names the one valid key, that key.
fn check_key(sim: &Simulator, headers: &HeaderMap) -> Result<(), ApiFailure> {
    authorize(headers)?;
    let Some(valid) = sim.lock().behaviour.api_key.clone() else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if given == valid {
        Ok(())
    } else {
        Err(failure(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            None,
        ))
    }
}

/// The models the simulator claims, in the shape of `GET /v1/models`.
const MODELS: &[&str] = &["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini"];

/// `GET /v1/models`: a cheap authenticated call (what `helpline doctor` uses).
async fn list_models(State(sim): State<Simulator>, headers: HeaderMap) -> Response {
    sim.record("GET", "/v1/models".into(), Value::Null);
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_744_316_542, "owned_by": "system" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `DELETE /v1/conversations/{id}`: the conversation goes; as at OpenAI,
/// responses created on it are separate objects and stay.
async fn delete_conversation(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    sim.record("DELETE", format!("/v1/conversations/{id}"), Value::Null);
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    match sim.lock().conversations.remove(&id) {
        Some(_) => Json(json!({ "id": id, "object": "conversation.deleted", "deleted": true }))
            .into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            &format!("Conversation with id '{id}' not found."),
            None,
        ),
    }
}

/// `DELETE /v1/responses/{id}`.
async fn delete_response(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    sim.record("DELETE", format!("/v1/responses/{id}"), Value::Null);
    if let Err(e) = check_key(&sim, &headers) {
        return e.into_response();
    }
    match sim.lock().responses.remove(&id) {
        Some(_) => {
            Json(json!({ "id": id, "object": "response.deleted", "deleted": true })).into_response()
        }
        None => api_error(
            StatusCode::NOT_FOUND,
            &format!("Response with id '{id}' not found."),
            None,
        ),
    }
}
