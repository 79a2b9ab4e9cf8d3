//! Helpline: a customer-support chatbot backend.
//!
//! The data flows one way through the modules named after each step:
//!
//! ```text
//! customer socket ─▶ chat ─▶ storage ─▶ worker ─▶ ai (OpenAI background response)
//! OpenAI webhook  ─▶ webhooks ─▶ storage (inbox) ─▶ worker ─▶ storage ─▶ hub ─▶ sockets
//! ```
//!
//! `startup` wires the pieces together; `simulator` is a stand-in for OpenAI
//! that speaks its wire format, used by the demo mode and the tests.

pub mod admin;
pub mod agents;
pub mod ai;
pub mod chat;
pub mod config;
pub mod conversation;
pub mod doctor;
pub mod error;
#[cfg(test)]
mod fuzz_props;
pub mod hub;
pub mod limits;
pub mod observe;
pub mod probes;
pub mod protocol;
pub mod queue;
pub mod retention;
pub mod security_headers;
pub mod simulator;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
