//! Services shared by the example programs.
//!
//! - [`hello`]: the smallest service, served by `hello-server` and called by `hello-client`.
//! - [`chat`]: the chat signaling service, its client, and the pieces of the demo.
//! - [`shutdown_signal`]: what every server program waits on before it drains and stops.

pub mod chat;
pub mod hello;
mod shutdown;

pub use shutdown::{StopSignal, shutdown_signal};

/// Logs to stderr, at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
