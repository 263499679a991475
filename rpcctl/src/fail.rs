//! Why a command failed, and the exit status that says so.

use std::fmt;
use std::process::ExitCode;

use rpc_core::RpcError;

/// A failed command: its one-line message and whose fault it was.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong (exit status 2).
    Usage(String),
    /// The call, the connection or the server failed (exit status 1).
    Failed(String),
    /// Standard output was closed (a pager quit): nothing left to tell anyone (exit status 1).
    OutputClosed,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(message.into())
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Failure::Failed(message.into())
    }

    /// A call's error, with its causes, on one line.
    pub(crate) fn rpc(context: &str, error: &RpcError) -> Self {
        Failure::Failed(format!(
            "{context}: {}",
            one_line(&error.report().to_string())
        ))
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Failed(_) | Failure::OutputClosed => ExitCode::from(1),
        }
    }

    pub(crate) fn is_quiet(&self) -> bool {
        matches!(self, Failure::OutputClosed)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => f.write_str(m),
            Failure::OutputClosed => f.write_str("standard output closed"),
        }
    }
}

/// Text a peer sent may hold line breaks; an error stays one line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
