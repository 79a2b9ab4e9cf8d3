//! The agents' side: accounts and sessions, the console's JSON API and live
//! socket, and the actions that change who speaks in a conversation.

pub mod frames;
