//! Services shared by the example programs.
//!
//! - [`hello`]: the smallest service, served by `hello-server` and called by `hello-client`.
//! - [`proc_status`]: a process's memory, for `chat-load` and `soak`.
//! - [`shutdown_signal`]: what every server program waits on before it drains and stops.
//! - [`init_logging`]: logs to stderr, at `info` unless `RUST_LOG` says otherwise.
//!
//! The last two are `chat-server`'s, re-exported here: the `chat-server` program uses them too.
//! The chat service itself is in its own crates: `chat-api` (the contracts), `chat-server` and
//! `chat-client`.

pub mod hello;
pub mod proc_status;
pub mod tls_args;

pub use chat_server::{StopSignal, init_logging, shutdown_signal};
