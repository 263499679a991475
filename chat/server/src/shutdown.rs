//! The signals that stop a server program.

use std::fmt;
use std::future::Future;

/// The signal that asked a server program to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM, as sent by `kill`, a service manager or a container runtime.
    Terminate,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        })
    }
}

/// Starts listening for Ctrl-C (SIGINT) and, on Unix, SIGTERM; the future resolves on the first
/// that comes. Every server program waits on it and then shuts down gracefully, so that being
/// stopped by a service manager drains the calls in flight exactly as Ctrl-C does.
///
/// Listening starts at this call, not at the first poll: a program that calls it before it says
/// it is ready cannot be killed by a signal sent right after. From then on neither signal
/// terminates the process by itself. Must be called within a Tokio runtime.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let stop = chat_server::shutdown_signal()?;
/// // ... start the server and say where it listens ...
/// let signal = stop.await;
/// println!("{signal}: draining");
/// # Ok(())
/// # }
/// ```
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = StopSignal>> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // `recv` returns `None` only once the runtime is shutting down, and then stopping is right.
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => StopSignal::Interrupt,
            _ = terminate.recv() => StopSignal::Terminate,
        }
    })
}

/// Starts listening for Ctrl-C; the future resolves when it comes. Every server program waits on
/// it and then shuts down gracefully.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = StopSignal>> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => StopSignal::Interrupt,
            // Ctrl-C then ends the process as it does in a program that does not listen.
            Err(_) => std::future::pending().await,
        }
    })
}
