//! One established connection: a byte stream and what is known of its peer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

#[cfg(feature = "quic")]
use crate::quic::stream::QuicStream;

/// Any byte stream a [`Connection`] can carry: TCP, a Unix socket, an in-process pipe, or a
/// user's own stream (a tunnel or an in-house protocol, say). Implemented for every type with the required bounds.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// The read half of a [`Connection`], from [`Connection::into_split`].
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// The write half of a [`Connection`], from [`Connection::into_split`].
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// What was seen of the other side of a [`Connection`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer's address.
    Tcp(SocketAddr),
    /// A QUIC peer: its UDP address, and the ed25519 key it proved it holds in the handshake
    /// (`None` only for a client that presented no certificate). See [`quic`](crate::quic).
    Quic {
        /// The peer's UDP address.
        addr: SocketAddr,
        /// The peer's ed25519 public key.
        key: Option<[u8; 32]>,
    },
    /// A TLS peer (`tls://` endpoints): its TCP address, and the certificate it presented (DER,
    /// the leaf of its chain), checked by the handshake; `None` for a client that presented
    /// none. See [`tls`](crate::tls).
    Tls {
        /// The peer's TCP address.
        addr: SocketAddr,
        /// The peer's certificate, DER.
        cert: Option<Arc<[u8]>>,
    },
    /// A WebSocket peer's TCP address (`ws://` endpoints).
    Ws(SocketAddr),
    /// A WebSocket-over-TLS peer (`wss://` endpoints), as for [`Tls`](PeerAddr::Tls).
    Wss {
        /// The peer's TCP address.
        addr: SocketAddr,
        /// The peer's certificate, DER.
        cert: Option<Arc<[u8]>>,
    },
    /// A Unix socket peer: its path if it has one (a connecting client usually has none, a
    /// server it connected to is named by the path it listens on).
    Unix(Option<PathBuf>),
    /// An in-process peer, numbered by connection (both ends see the same number).
    Memory(u64),
    /// A peer of a user-supplied transport, described as that transport likes.
    Other(String),
}

impl PeerAddr {
    /// The peer's IP address and port, for the transports over IP (TCP, TLS, QUIC, WebSocket).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Tcp(addr) | PeerAddr::Ws(addr) => Some(*addr),
            PeerAddr::Tls { addr, .. }
            | PeerAddr::Wss { addr, .. }
            | PeerAddr::Quic { addr, .. } => Some(*addr),
            PeerAddr::Unix(_) | PeerAddr::Memory(_) | PeerAddr::Other(_) => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
            PeerAddr::Quic { addr, .. } => write!(f, "quic://{addr}"),
            PeerAddr::Tls { addr, .. } => write!(f, "tls://{addr}"),
            PeerAddr::Ws(addr) => write!(f, "ws://{addr}"),
            PeerAddr::Wss { addr, .. } => write!(f, "wss://{addr}"),
            PeerAddr::Unix(Some(path)) => write!(f, "unix://{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix (unnamed)"),
            PeerAddr::Memory(number) => write!(f, "mem connection #{number}"),
            PeerAddr::Other(description) => f.write_str(description),
        }
    }
}

/// One established connection: a byte stream and what is known of its peer.
///
/// It reads and writes directly ([`AsyncRead`], [`AsyncWrite`]), or splits into halves for a
/// reader task and a writer task with [`into_split`](Connection::into_split).
pub struct Connection {
    stream: Stream,
    peer: PeerAddr,
}

enum Stream {
    Tcp(TcpStream),
    #[cfg(feature = "quic")]
    Quic(QuicStream),
    #[cfg(unix)]
    Unix(UnixStream),
    Boxed(Box<dyn AsyncStream>),
}

impl Connection {
    /// A connection over any byte stream; this is how a user transport (a tunnel or an in-house protocol, say) hands its
    /// streams to the framework.
    pub fn new(stream: impl AsyncStream, peer: PeerAddr) -> Self {
        Connection {
            stream: Stream::Boxed(Box::new(stream)),
            peer,
        }
    }

    pub(crate) fn tcp(stream: TcpStream, peer: SocketAddr) -> Self {
        Connection {
            stream: Stream::Tcp(stream),
            peer: PeerAddr::Tcp(peer),
        }
    }

    #[cfg(feature = "quic")]
    pub(crate) fn quic(stream: QuicStream, peer: PeerAddr) -> Self {
        Connection {
            stream: Stream::Quic(stream),
            peer,
        }
    }

    #[cfg(unix)]
    pub(crate) fn unix(stream: UnixStream, peer: Option<PathBuf>) -> Self {
        Connection {
            stream: Stream::Unix(stream),
            peer: PeerAddr::Unix(peer),
        }
    }

    /// What was seen of the other side.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// Read and write halves that can be used from two tasks. TCP and Unix sockets and QUIC
    /// streams split into their native owned halves (no lock between them); other streams use
    /// [`tokio::io::split`]. Dropping the write half of a TCP, Unix or QUIC connection shuts
    /// down its sending direction.
    pub fn into_split(self) -> (BoxRead, BoxWrite) {
        match self.stream {
            Stream::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            #[cfg(unix)]
            Stream::Unix(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Stream::Boxed(stream) => {
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.stream {
            Stream::Tcp(_) => "tcp",
            #[cfg(feature = "quic")]
            Stream::Quic(_) => "quic",
            #[cfg(unix)]
            Stream::Unix(_) => "unix",
            Stream::Boxed(_) => "boxed",
        };
        f.debug_struct("Connection")
            .field("stream", &kind)
            .field("peer", &self.peer)
            .finish()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(unix)]
            Stream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Boxed(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(unix)]
            Stream::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Boxed(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Stream::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Boxed(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Tcp(stream) => stream.is_write_vectored(),
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => stream.is_write_vectored(),
            #[cfg(unix)]
            Stream::Unix(stream) => stream.is_write_vectored(),
            Stream::Boxed(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(unix)]
            Stream::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Boxed(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(feature = "quic")]
            Stream::Quic(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(unix)]
            Stream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Boxed(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn peer_addr_display() {
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 7);
        assert_eq!(PeerAddr::Tcp(v6).to_string(), "tcp://[::1]:7");
        assert_eq!(
            PeerAddr::Quic {
                addr: v6,
                key: Some([7; 32])
            }
            .to_string(),
            "quic://[::1]:7"
        );
        assert_eq!(PeerAddr::Ws(v6).to_string(), "ws://[::1]:7");
        assert_eq!(PeerAddr::Unix(Some("/s".into())).to_string(), "unix:///s");
        assert_eq!(PeerAddr::Unix(None).to_string(), "unix (unnamed)");
        assert_eq!(PeerAddr::Memory(3).to_string(), "mem connection #3");
        assert_eq!(PeerAddr::Other("tls://x".into()).to_string(), "tls://x");
    }

    #[tokio::test]
    async fn user_stream_reads_writes_and_splits() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = Connection::new(near, PeerAddr::Other("pipe".into()));
        assert_eq!(conn.peer(), &PeerAddr::Other("pipe".into()));
        assert!(format!("{conn:?}").contains("boxed"));

        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        let (mut read, mut write) = conn.into_split();
        far.write_all(b"pong").await.unwrap();
        read.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        write.write_all(b"done").await.unwrap();
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"done");
    }
}
