//! The chat signaling service built on the registry: a server, a client library, and the
//! interfaces between them.

pub mod api;
pub mod client;
pub mod server;
pub mod store;
