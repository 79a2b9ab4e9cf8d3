//! Integration tests: a real PostgreSQL, real HTTP and WebSocket connections
//! on loopback, and the OpenAI simulator over HTTP.

mod helpers;

mod agent_console;
mod agents;
mod batched_events;
mod bench_smoke;
mod browser;
mod conversation_flow;
mod crashes;
mod dead_letters;
mod faults;
mod hostile_headers;
mod hostile_nul;
mod hostile_sockets;
mod hostile_webhooks;
mod instances;
mod login_flood;
mod observability;
mod operations;
mod processes;
mod reconnect;
mod webhook_delivery;
mod webhook_endpoint;
mod widget_api;
mod widget_browser;
