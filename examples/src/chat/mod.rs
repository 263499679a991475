//! The chat signaling service built on the registry: a server, a client library, and the
//! interfaces between them.

pub mod api;
pub mod client;
mod excerpt;
pub mod page;
pub mod server;
pub mod store;

pub use excerpt::{EXCERPT_CHARS, excerpt};
