//! Errors: why a call failed as the caller sees it, and a server-side error that travels as a
//! status and an error body.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use rpc_codec::{ErrorBody, Format, SerializeError, Status};
use serde::Serialize;

/// Why a call failed, as seen by the caller.
///
/// `E` is the method's application error type when it returns `Result<T, E>`; for methods that
/// return a plain `T` it is `String` and [`RpcError::Application`] holds the server's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E = String> {
    /// No connection could be made to the server. Why is the error's
    /// [`source`](std::error::Error::source); [`RpcError::report`] prints both.
    #[error("could not connect to {endpoint}")]
    Connect {
        /// Where the client tried to connect.
        endpoint: String,
        /// The last connection error.
        #[source]
        cause: Cause,
    },
    /// The endpoint given does not name one (see [`Endpoint`](crate::Endpoint)).
    #[error("invalid endpoint: {0}")]
    BadEndpoint(String),
    /// The client's settings do not make sense (see [`ClientConfig`](crate::ClientConfig)).
    #[error("invalid client setting: {0}")]
    InvalidConfig(String),
    /// The connection the call was on broke before the answer arrived. How is the error's
    /// [`source`](std::error::Error::source).
    #[error("connection lost")]
    ConnectionLost(#[source] Cause),
    /// The call's deadline passed before the answer arrived.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The server does not serve the service (name and version).
    #[error("service not found: {0}")]
    ServiceNotFound(String),
    /// The service has no such method.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// The server could not decode the request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The server refused the call because a concurrency limit was reached.
    #[error("server busy: {0}")]
    ServerBusy(String),
    /// The server is draining and did not start the call.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// A filter refused the call.
    #[error("call rejected: {0}")]
    Rejected(String),
    /// The method returned an error.
    #[error("application error: {0:?}")]
    Application(E),
    /// The server failed while handling the call.
    #[error("internal server error: {0}")]
    Internal(String),
    /// The arguments could not be encoded or the result decoded on this side.
    #[error(transparent)]
    Serialize(#[from] SerializeError),
    /// The peer sent something that does not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl<E> RpcError<E> {
    /// Converts the application error into another type it converts into, so that code
    /// returning `RpcError<Mine>` can `?` a call of a method whose error type is `Theirs`
    /// (given `impl From<Theirs> for Mine`): `call().await.map_err(RpcError::convert)?`.
    pub fn convert<F: From<E>>(self) -> RpcError<F> {
        self.map_application(F::from)
    }

    /// Maps the application error type.
    pub fn map_application<F>(self, f: impl FnOnce(E) -> F) -> RpcError<F> {
        match self {
            RpcError::Application(e) => RpcError::Application(f(e)),
            other => other.cast(),
        }
    }

    /// The status code this error travelled as, when it came from the server.
    pub fn status(&self) -> Option<Status> {
        Some(match self {
            RpcError::DeadlineExceeded => Status::DEADLINE_EXCEEDED,
            RpcError::ServiceNotFound(_) => Status::SERVICE_NOT_FOUND,
            RpcError::MethodNotFound(_) => Status::METHOD_NOT_FOUND,
            RpcError::BadRequest(_) => Status::BAD_REQUEST,
            RpcError::ServerBusy(_) => Status::SERVER_BUSY,
            RpcError::Unavailable(_) => Status::UNAVAILABLE,
            RpcError::Rejected(_) => Status::REJECTED,
            RpcError::Application(_) => Status::APPLICATION_ERROR,
            RpcError::Internal(_) => Status::INTERNAL_ERROR,
            _ => return None,
        })
    }

    /// Whether the call certainly did not reach a handler, so sending it again elsewhere cannot
    /// run it twice: no connection was made, or the server refused it before starting it.
    pub fn not_started(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. } | RpcError::ServerBusy(_) | RpcError::Unavailable(_)
        )
    }

    /// Whether the error is about the connection rather than the call: another instance may
    /// succeed.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. } | RpcError::ConnectionLost(_) | RpcError::Unavailable(_)
        )
    }

    /// Converts an error that carries no application value into any application type.
    ///
    /// # Panics
    ///
    /// Never for errors built by this crate's transport paths; an `Application` variant is turned
    /// into `Internal` rather than panicking.
    pub(crate) fn cast<F>(self) -> RpcError<F> {
        match self {
            RpcError::Connect { endpoint, cause } => RpcError::Connect { endpoint, cause },
            RpcError::BadEndpoint(m) => RpcError::BadEndpoint(m),
            RpcError::InvalidConfig(m) => RpcError::InvalidConfig(m),
            RpcError::ConnectionLost(m) => RpcError::ConnectionLost(m),
            RpcError::DeadlineExceeded => RpcError::DeadlineExceeded,
            RpcError::ServiceNotFound(m) => RpcError::ServiceNotFound(m),
            RpcError::MethodNotFound(m) => RpcError::MethodNotFound(m),
            RpcError::BadRequest(m) => RpcError::BadRequest(m),
            RpcError::ServerBusy(m) => RpcError::ServerBusy(m),
            RpcError::Unavailable(m) => RpcError::Unavailable(m),
            RpcError::Rejected(m) => RpcError::Rejected(m),
            RpcError::Application(_) => {
                RpcError::Internal("application error of an unexpected type".to_owned())
            }
            RpcError::Internal(m) => RpcError::Internal(m),
            RpcError::Serialize(e) => RpcError::Serialize(e),
            RpcError::Protocol(m) => RpcError::Protocol(m),
        }
    }

    /// Builds the error for a non-ok status and its error body; `app` turns an application
    /// error body into `E`.
    pub(crate) fn from_status(
        status: Status,
        body: ErrorBody,
        app: impl FnOnce(ErrorBody) -> Result<E, RpcError<E>>,
    ) -> RpcError<E> {
        let m = body.message.clone();
        match status {
            Status::BAD_REQUEST => RpcError::BadRequest(m),
            Status::SERVICE_NOT_FOUND => RpcError::ServiceNotFound(m),
            Status::METHOD_NOT_FOUND => RpcError::MethodNotFound(m),
            Status::DEADLINE_EXCEEDED => RpcError::DeadlineExceeded,
            // A cancelled call gets no answer; a server never sends this.
            Status::CANCELLED => RpcError::Protocol(format!("the server answered CANCELLED: {m}")),
            Status::SERVER_BUSY => RpcError::ServerBusy(m),
            Status::UNAVAILABLE => RpcError::Unavailable(m),
            Status::REJECTED => RpcError::Rejected(m),
            Status::APPLICATION_ERROR => match app(body) {
                Ok(e) => RpcError::Application(e),
                Err(e) => e,
            },
            Status::INTERNAL_ERROR => RpcError::Internal(m),
            Status::UNSUPPORTED_SERIALIZER => RpcError::BadRequest(m),
            Status::PROTOCOL_ERROR => RpcError::Protocol(m),
            other => RpcError::Protocol(format!("unknown status {}: {m}", other.as_u8())),
        }
    }
}

/// A failure on the server side, sent to the caller as a status and an error body.
///
/// Handlers normally return their own error types (which become
/// [`Status::APPLICATION_ERROR`]); this type is for the framework and for filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The status sent to the caller; never [`Status::OK`].
    pub status: Status,
    /// A description for people.
    pub message: String,
    /// The serialized application error, or empty.
    pub detail: Bytes,
}

impl ServerError {
    /// An error with a status and a message.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        debug_assert!(!status.is_ok(), "a server error needs a non-ok status");
        ServerError {
            status,
            message: message.into(),
            detail: Bytes::new(),
        }
    }

    /// An application error: `error` serialized in `format` as the detail, its `Debug` form as
    /// the message.
    pub fn application<E: Serialize + fmt::Debug>(format: &Format, error: &E) -> Self {
        match format.to_bytes(error) {
            Ok(detail) => ServerError {
                status: Status::APPLICATION_ERROR,
                message: format!("{error:?}"),
                detail,
            },
            Err(e) => ServerError::new(
                Status::INTERNAL_ERROR,
                format!("application error could not be encoded: {e}"),
            ),
        }
    }

    /// The error body sent on the wire.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            message: self.message.clone(),
            detail: self.detail.clone(),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ServerError {}

impl<E: fmt::Debug> RpcError<E> {
    /// The error and its causes on one line, for people: "could not connect to
    /// tcp://127.0.0.1:7000: connection refused". `Display` alone says what failed; the causes
    /// are the [`source`](std::error::Error::source) chain.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// An error and its [`source`](std::error::Error::source) chain, written as "what: why: why".
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The error behind a failure that is not the server's answer (a connection that could not be
/// made or was lost), kept whole as the failure's [`source`](std::error::Error::source) and
/// shared, so that [`RpcError`] stays cheap to clone. Two causes are equal when they read the
/// same.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// A cause that is only a message.
    pub fn message(message: impl Into<String>) -> Self {
        Cause(Arc::new(Message(message.into())))
    }

    /// The error kept, to inspect or downcast.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_both_ways() {
        for status in [
            Status::BAD_REQUEST,
            Status::SERVICE_NOT_FOUND,
            Status::METHOD_NOT_FOUND,
            Status::DEADLINE_EXCEEDED,
            Status::SERVER_BUSY,
            Status::UNAVAILABLE,
            Status::REJECTED,
            Status::INTERNAL_ERROR,
        ] {
            let e: RpcError = RpcError::from_status(status, ErrorBody::new("m"), |b| Ok(b.message));
            assert_eq!(e.status(), Some(status), "{e}");
        }
        let e: RpcError<u32> =
            RpcError::from_status(Status::APPLICATION_ERROR, ErrorBody::new("x"), |_| Ok(7));
        assert_eq!(e, RpcError::Application(7));
        let e: RpcError =
            RpcError::from_status(Status::from_u8(99), ErrorBody::new("?"), |b| Ok(b.message));
        assert!(matches!(e, RpcError::Protocol(_)));
    }

    #[test]
    fn classification_for_failover() {
        let connect: RpcError = RpcError::Connect {
            endpoint: "tcp://127.0.0.1:1".into(),
            cause: Cause::message("refused"),
        };
        assert!(connect.not_started() && connect.is_connection_error());
        let lost: RpcError = RpcError::ConnectionLost(Cause::message("reset"));
        assert!(!lost.not_started() && lost.is_connection_error());
        let app: RpcError = RpcError::Application("x".into());
        assert!(!app.not_started() && !app.is_connection_error());
        assert_eq!(app.map_application(|s| s.len()), RpcError::Application(1));
    }

    #[test]
    fn application_errors_carry_their_value() {
        let e = ServerError::application(&Format::Json, &vec!["no", "way"]);
        assert_eq!(e.status, Status::APPLICATION_ERROR);
        assert_eq!(&e.detail[..], br#"["no","way"]"#);
        assert_eq!(e.message, r#"["no", "way"]"#);
    }
}
