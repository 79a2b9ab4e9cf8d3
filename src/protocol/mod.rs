//! The wire formats Helpline speaks, beside the code that uses them: what
//! the chat widget and the agent console send and receive over their
//! sockets. Only types, parsing and rendering: no I/O.

pub mod agent_frames;
pub mod customer_frames;
