//! The chat signaling service built on the registry: a server, a client library, and the
//! interfaces between them.

pub use chat_api as api;
pub use chat_api::{EXCERPT_CHARS, excerpt};
pub use chat_client as client;
pub mod page;
pub mod server;
pub mod store;
