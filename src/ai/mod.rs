//! The AI client: OpenAI's Conversations and Responses APIs through
//! async-openai. The same code talks to OpenAI and to the built-in simulator;
//! only the base URL and key differ.
//!
//! A support conversation is one OpenAI Conversation; each AI turn is one
//! background Response on it, tagged with metadata naming the Helpline
//! conversation and turn, so a webhook that overtakes the create call can
//! still be matched to its turn.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_openai::{
    config::OpenAIConfig,
    error::OpenAIError,
    types::responses::{
        CreateConversationRequest, CreateResponseArgs, EasyInputContent, EasyInputMessage,
        FunctionTool, InputItem, InputParam, MessageType, OutputItem, OutputMessageContent, Role,
        Status, Tool,
    },
    Client,
};
use uuid::Uuid;

use crate::{config::AiSettings, observe::Metrics};

mod transport;

use transport::send;
pub use transport::AiError;

pub const META_CONVERSATION: &str = "helpline_conversation";
pub const META_TURN: &str = "helpline_turn";
/// The function every response offers the model, to hand over to a person.
pub const HANDOFF_TOOL: &str = "handoff_to_human";

#[derive(Clone)]
pub struct AiClient {
    client: Client<OpenAIConfig>,
    settings: Arc<AiSettings>,
    metrics: Metrics,
}

/// Where a response stands, as far as Helpline cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still queued or running.
    Running,
    Completed,
    Failed,
    Cancelled,
    Incomplete,
}

/// One assistant message of a finished response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistantReply {
    /// OpenAI's output item id: the idempotency key of the stored message.
    pub item_id: String,
    pub text: String,
}

/// The model called `handoff_to_human`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub call_id: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct FetchedResponse {
    pub id: String,
    pub outcome: Outcome,
    /// The Helpline turn named in the response's metadata.
    pub turn_id: Option<Uuid>,
    pub replies: Vec<AssistantReply>,
    /// Why it failed or stopped short, when it did.
    pub problem: Option<String>,
    pub handoff: Option<Handoff>,
    /// The OpenAI Conversation it ran on.
    pub conversation: Option<String>,
}

impl AiClient {
    /// `timeout` bounds each call; the worker's lease must be longer.
    pub fn new(base_url: &str, api_key: &str, settings: AiSettings, timeout: Duration) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(base_url)
            .with_api_key(api_key);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()
            .expect("a reqwest client with timeouts builds");
        let transport = http.clone();
        let service = tower::service_fn(move |factory| send(transport.clone(), factory));
        let client = Client::build(http, config).with_http_service(service);
        Self {
            client,
            settings: Arc::new(settings),
            metrics: Metrics::new(),
        }
    }

    /// `POST /responses/{id}/cancel`, for a response that ran past its deadline.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_response(&self, response_id: &str) -> Result<(), AiError> {
        self.observed(
            "POST /responses/{id}/cancel",
            self.client.responses().cancel(response_id),
        )
        .await?;
        Ok(())
    }

    /// Counts every call in `metrics` (latency and errors by endpoint and status).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs one API call, timing it and counting its status.
    async fn observed<T>(
        &self,
        endpoint: &'static str,
        call: impl Future<Output = Result<T, OpenAIError>>,
    ) -> Result<T, AiError> {
        let started = Instant::now();
        let result = call.await.map_err(AiError::from);
        let (status, ok) = match &result {
            Ok(_) => ("200".to_owned(), true),
            Err(AiError::Api { status, .. }) => (status.to_string(), false),
            Err(AiError::Transport(_)) => ("transport".to_owned(), false),
            Err(AiError::Unexpected(_)) => ("unexpected".to_owned(), false),
        };
        self.metrics
            .openai_call(endpoint, status, ok, started.elapsed());
        result
    }

    /// `POST /conversations`, tagged with the Helpline conversation.
    #[tracing::instrument(skip(self))]
    pub async fn create_conversation(&self, conversation_id: Uuid) -> Result<String, AiError> {
        let request = CreateConversationRequest {
            metadata: Some(
                serde_json::json!({ META_CONVERSATION: conversation_id.to_string() }).into(),
            ),
            items: None,
        };
        let created = self
            .observed(
                "POST /conversations",
                self.client.conversations().create(request),
            )
            .await?;
        Ok(created.id)
    }

    /// `POST /responses` in the background, on the given OpenAI Conversation,
    /// with the customer's new messages as input. Returns the response id.
    #[tracing::instrument(skip(self, inputs))]
    pub async fn start_response(
        &self,
        openai_conversation: &str,
        inputs: &[String],
        conversation_id: Uuid,
        turn_id: Uuid,
    ) -> Result<String, AiError> {
        let input = inputs
            .iter()
            .map(|text| {
                InputItem::EasyMessage(EasyInputMessage {
                    r#type: MessageType::Message,
                    role: Role::User,
                    content: EasyInputContent::Text(text.clone()),
                    phase: None,
                })
            })
            .collect();
        let metadata = HashMap::from([
            (META_CONVERSATION.to_owned(), conversation_id.to_string()),
            (META_TURN.to_owned(), turn_id.to_string()),
        ]);
        let mut args = CreateResponseArgs::default();
        if let Some(max) = self.settings.max_output_tokens {
            args.max_output_tokens(max);
        }
        if let Some(temperature) = self.settings.temperature {
            args.temperature(temperature);
        }
        if self.settings.handoff_tool {
            args.tools(vec![handoff_tool()]);
        }
        let request = args
            .model(&self.settings.model)
            .instructions(&self.settings.instructions)
            .conversation(openai_conversation)
            .input(InputParam::Items(input))
            .background(true)
            .store(true)
            .metadata(metadata)
            .build()?;
        let created = self
            .observed("POST /responses", self.client.responses().create(request))
            .await?;
        Ok(created.id)
    }

    /// `GET /responses/{id}`: its state, turn and assistant messages.
    #[tracing::instrument(skip(self))]
    pub async fn fetch_response(&self, response_id: &str) -> Result<FetchedResponse, AiError> {
        let response = self
            .observed(
                "GET /responses/{id}",
                self.client.responses().retrieve(response_id),
            )
            .await?;
        let outcome = match response.status {
            Status::Queued | Status::InProgress => Outcome::Running,
            Status::Completed => Outcome::Completed,
            Status::Failed => Outcome::Failed,
            Status::Cancelled => Outcome::Cancelled,
            Status::Incomplete => Outcome::Incomplete,
        };
        let turn_id = response
            .metadata
            .as_ref()
            .and_then(|m| m.get(META_TURN))
            .and_then(|t| t.parse().ok());
        let replies = response
            .output
            .iter()
            .filter_map(|item| match item {
                OutputItem::Message(m) => {
                    let text: Vec<&str> = m
                        .content
                        .iter()
                        .map(|c| match c {
                            OutputMessageContent::OutputText(t) => t.text.as_str(),
                            OutputMessageContent::Refusal(r) => r.refusal.as_str(),
                        })
                        .collect();
                    Some(AssistantReply {
                        item_id: m.id.clone(),
                        text: text.join(""),
                    })
                }
                _ => None,
            })
            .filter(|r| !r.text.trim().is_empty())
            .collect();
        let problem = response
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .or_else(|| {
                response
                    .incomplete_details
                    .as_ref()
                    .map(|d| format!("incomplete: {}", d.reason))
            });
        let handoff = response.output.iter().find_map(|item| match item {
            OutputItem::FunctionCall(call) if call.name == HANDOFF_TOOL => {
                let arguments: serde_json::Value =
                    serde_json::from_str(&call.arguments).unwrap_or_default();
                let reason = arguments["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_owned();
                Some(Handoff {
                    call_id: call.call_id.clone(),
                    reason,
                })
            }
            _ => None,
        });
        Ok(FetchedResponse {
            id: response.id,
            outcome,
            turn_id,
            replies,
            problem,
            handoff,
            conversation: response.conversation.map(|c| c.id),
        })
    }

    /// `DELETE /conversations/{id}`. Returns false if OpenAI does not know
    /// it (already deleted).
    #[tracing::instrument(skip(self))]
    pub async fn delete_conversation(&self, openai_conversation: &str) -> Result<bool, AiError> {
        let deleted = self
            .observed(
                "DELETE /conversations/{id}",
                self.client.conversations().delete(openai_conversation),
            )
            .await;
        gone_is_fine(deleted.map(|_| ()))
    }

    /// `DELETE /responses/{id}`. Returns false if OpenAI does not know it.
    #[tracing::instrument(skip(self))]
    pub async fn delete_response(&self, response_id: &str) -> Result<bool, AiError> {
        let deleted = self
            .observed(
                "DELETE /responses/{id}",
                self.client.responses().delete(response_id),
            )
            .await;
        gone_is_fine(deleted.map(|_| ()))
    }

    /// Answers a function call on the OpenAI Conversation (`POST
    /// /conversations/{id}/items` with a `function_call_output`), so the
    /// conversation stays consistent for the next response.
    #[tracing::instrument(skip(self, output))]
    pub async fn answer_function_call(
        &self,
        conversation: &str,
        call_id: &str,
        output: &str,
    ) -> Result<(), AiError> {
        let items = serde_json::json!({
            "items": [{ "type": "function_call_output", "call_id": call_id, "output": output }]
        });
        let conversations = self.client.conversations();
        let items_api = conversations.items(conversation);
        let created = items_api.create_byot::<_, serde_json::Value>(items);
        self.observed("POST /conversations/{id}/items", created)
            .await?;
        Ok(())
    }
}

/// A delete answered 404 has nothing left to delete.
fn gone_is_fine(result: Result<(), AiError>) -> Result<bool, AiError> {
    match result {
        Ok(()) => Ok(true),
        Err(AiError::Api { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `handoff_to_human(reason)`: offered with every response.
fn handoff_tool() -> Tool {
    Tool::Function(FunctionTool {
        name: HANDOFF_TOOL.to_owned(),
        description: Some(
            "Hand the conversation over to a human support agent. Call it when the customer asks \
             for a person, or when you cannot help."
                .to_owned(),
        ),
        parameters: Some(serde_json::json!({
            "type": "object",
            "properties": { "reason": { "type": "string", "description": "Why a person is needed" } },
            "required": ["reason"],
            "additionalProperties": false,
        })),
        strict: Some(true),
        ..Default::default()
    })
}
