//! The traits a user transport implements: `Connector` and `Acceptor`.

use std::fmt;
use std::sync::Arc;

use crate::{Connection, Endpoint, TransportError};

/// Opens connections: the client side of a transport.
///
/// [`EndpointConnector`](crate::EndpointConnector) connects to the built-in endpoints; a user
/// transport (a tunnel or an in-house protocol, say) implements this to bring its own byte stream, wrapped with
/// [`Connection::new`].
#[async_trait::async_trait]
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Opens one connection.
    async fn connect(&self) -> Result<Connection, TransportError>;

    /// What this connects to, for logs and errors.
    fn describe(&self) -> String;
}

/// Accepts connections: the server side of a transport.
///
/// [`Listener`](crate::Listener) accepts on the built-in endpoints; a user transport implements
/// this to hand its own byte streams to a server, wrapped with [`Connection::new`].
#[async_trait::async_trait]
pub trait Acceptor: Send + fmt::Debug + 'static {
    /// Waits for the next connection. An error is often transient (see
    /// [`TransportError::Accept`]); a server usually keeps accepting after one.
    async fn accept(&mut self) -> Result<Connection, TransportError>;

    /// Where it listens; for TCP on port 0 this names the port actually bound.
    fn local_endpoint(&self) -> Endpoint;
}

#[async_trait::async_trait]
impl<C: Connector + ?Sized> Connector for Box<C> {
    async fn connect(&self) -> Result<Connection, TransportError> {
        (**self).connect().await
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

#[async_trait::async_trait]
impl<C: Connector + ?Sized> Connector for Arc<C> {
    async fn connect(&self) -> Result<Connection, TransportError> {
        (**self).connect().await
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

#[async_trait::async_trait]
impl<A: Acceptor + ?Sized> Acceptor for Box<A> {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        (**self).accept().await
    }

    fn local_endpoint(&self) -> Endpoint {
        (**self).local_endpoint()
    }
}
