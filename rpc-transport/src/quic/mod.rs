//! QUIC: the framework's frames over one bidirectional stream of a QUIC connection, with TLS 1.3
//! (rustls, ring provider) and peers known by their ed25519 keys.
//!
//! - An [`Identity`] is an ed25519 key pair and the self-signed certificate made from it.
//! - [`PeerAuth`] says which peers to accept: [pinned](PeerAuth::Pinned) keys or
//!   [any key](PeerAuth::AnyKey), reported in [`PeerAddr::Quic`](crate::PeerAddr::Quic) for the
//!   application to judge. Either way the peer proves it holds its key by signing the handshake.
//! - A [`QuicEndpoint`] is one UDP socket that accepts connections ([`Acceptor`](crate::Acceptor))
//!   and opens them ([`QuicEndpoint::connect`], [`QuicEndpoint::connector`]), configured by a
//!   [`QuicConfig`].
//!
//! The built-in [`connect`](crate::connect) and [`listen`](crate::listen) also take `quic://`
//! endpoints, with a fresh identity each and [`PeerAuth::AnyKey`]: the traffic is encrypted, but
//! who is on the other side is only reported, never checked. To pin a peer's key, use a
//! `QuicEndpoint` with [`PeerAuth::Pinned`].
//!
//! On the wire: ALPN [`ALPN`] (`dubbo-rs/1`); the client opens one bidirectional stream and
//! writes the 4 bytes `44 52 51 01` (`"DRQ\x01"`) before its frames, so that the server sees the
//! stream at once; from then on the stream carries frames exactly as a TCP connection does.

mod auth;
mod config;
mod datagrams;
mod endpoint;
mod identity;
pub(crate) mod stream;

pub use auth::PeerAuth;
pub use config::{ALPN, QuicConfig};
pub use datagrams::{DatagramSender, Datagrams};
pub use endpoint::{QuicConnector, QuicEndpoint};
pub use identity::{Identity, IdentityError, verify};

pub(crate) use endpoint::connect;
