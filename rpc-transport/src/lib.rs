//! Byte-stream transports for the framework: where connections come from, and nothing about
//! what travels over them (framing belongs to `rpc-codec`, calls to `rpc-core`).
//!
//! - [`Endpoint`] names a place to connect or listen: `tcp://host:port`, `tls://host:port`
//!   (TLS over TCP; feature `tls`, on by default), `quic://host:port`, `ws://host:port/path`
//!   (a WebSocket, so that browsers can call; feature `ws`, on by default),
//!   `wss://host:port/path` (a WebSocket over TLS), `unix:///abs/path` or `mem://name` (an
//!   in-process pipe, for tests and for client and server in one process).
//! - [`tls`] holds the certificates: [`tls::ServerTls`] for listeners ([`listen_tls`]),
//!   [`tls::ClientTls`] for clients ([`connect_tls`], [`EndpointConnector::tls`]).
//! - [`quic`] (feature `quic`, on by default) runs connections over QUIC, with peers known by
//!   their ed25519 keys.
//! - [`connect`] and [`listen`] open the built-in endpoints; [`EndpointConnector`] and
//!   [`Listener`] are the same as [`Connector`] and [`Acceptor`] values.
//! - [`Connector`] and [`Acceptor`] are the plug: a user transport implements them and
//!   wraps its own byte stream, any [`AsyncStream`], in a [`Connection`]. Implement them with
//!   the re-exported [`macro@async_trait`] attribute.
//! - A [`Connection`] is a byte stream plus the [`PeerAddr`] seen on the other side;
//!   [`Connection::into_split`] gives a read half and a write half for two tasks.
//! - Every failure is a [`TransportError`].
//!
//! ```
//! use std::time::Duration;
//!
//! use rpc_transport::{Endpoint, PeerAddr, connect, listen};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint: Endpoint = "mem://greeter".parse()?;
//! let mut listener = listen(&endpoint).await?;
//!
//! let client = connect(&endpoint, Duration::from_secs(1)).await?;
//! let server = listener.accept().await?;
//! assert!(matches!(server.peer(), PeerAddr::Memory(_)));
//!
//! let (mut client_read, mut client_write) = client.into_split();
//! let (mut server_read, mut server_write) = server.into_split();
//! client_write.write_all(b"hello").await?;
//! let mut request = [0; 5];
//! server_read.read_exact(&mut request).await?;
//! server_write.write_all(&request.to_ascii_uppercase()).await?;
//! let mut reply = [0; 5];
//! client_read.read_exact(&mut reply).await?;
//! assert_eq!(&reply, b"HELLO");
//! # Ok(())
//! # }
//! ```

mod builtin;
mod connection;
mod endpoint;
mod error;
mod failover;
#[cfg(any(feature = "ws", feature = "tls"))]
mod handshake;
mod memory;
#[cfg(feature = "quic")]
pub mod quic;
mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
#[cfg(unix)]
mod unix;
#[cfg(feature = "ws")]
pub mod ws;

pub use builtin::{EndpointConnector, Listener, connect, listen};
#[cfg(feature = "tls")]
pub use builtin::{connect_tls, listen_tls};
pub use connection::{AsyncStream, BoxRead, BoxWrite, Connection, PeerAddr};
pub use endpoint::{Endpoint, IntoEndpoint};
pub use error::TransportError;
pub use failover::Failover;
pub use transport::{Acceptor, Connector};

// Re-exported so a user transport implements `Connector` and `Acceptor` with the same version,
// without a dependency of its own.
pub use async_trait::async_trait;
