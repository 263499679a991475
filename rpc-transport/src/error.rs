//! Transport errors.

use std::io;
use std::time::Duration;

/// The accepted endpoint forms, named in every [`TransportError::InvalidEndpoint`] message.
pub(crate) const ACCEPTED_FORMS: &str = "tcp://host:port, tls://host:port, quic://host:port, ws://host:port/path, wss://host:port/path, unix:///path or mem://name";

/// Why an endpoint could not be parsed, connected to, listened on or accepted from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The text is not one of the endpoint forms `tcp://host:port`, `quic://host:port`,
    /// `ws://host:port/path`,
    /// `unix:///path` or `mem://name`.
    #[error("invalid endpoint {input:?}: {reason}; expected {ACCEPTED_FORMS}")]
    InvalidEndpoint {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting failed. For the memory transport, a name nobody listens on fails with
    /// [`io::ErrorKind::ConnectionRefused`].
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint connected to.
        endpoint: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Connecting did not finish in time.
    #[error("connecting to {endpoint} timed out after {after:?}")]
    Timeout {
        /// The endpoint connected to.
        endpoint: String,
        /// The time allowed.
        after: Duration,
    },
    /// Listening failed. An endpoint that something already listens on fails with
    /// [`io::ErrorKind::AddrInUse`].
    #[error("cannot listen on {endpoint}")]
    Bind {
        /// The endpoint listened on.
        endpoint: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Accepting a connection failed. Often transient (a peer that gave up during the
    /// handshake, or too many open files): a server usually logs it and keeps accepting.
    #[error("cannot accept a connection")]
    Accept(#[source] io::Error),
}

impl TransportError {
    /// The [`io::ErrorKind`] of the underlying failure, if there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            TransportError::Connect { source, .. }
            | TransportError::Bind { source, .. }
            | TransportError::Accept(source) => Some(source.kind()),
            TransportError::InvalidEndpoint { .. } | TransportError::Timeout { .. } => None,
        }
    }

    pub(crate) fn invalid(input: &str, reason: impl Into<String>) -> Self {
        TransportError::InvalidEndpoint {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn messages_are_lowercase_and_chain_their_source() {
        let err = TransportError::Connect {
            endpoint: "mem://a".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(err.to_string(), "cannot connect to mem://a");
        assert!(err.source().is_some());
        assert_eq!(err.io_kind(), Some(io::ErrorKind::ConnectionRefused));

        let err = TransportError::Timeout {
            endpoint: "tcp://127.0.0.1:1".into(),
            after: Duration::from_millis(250),
        };
        assert_eq!(
            err.to_string(),
            "connecting to tcp://127.0.0.1:1 timed out after 250ms"
        );
        assert_eq!(err.io_kind(), None);
    }
}
