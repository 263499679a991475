//! A user-supplied transport through the public traits: a stream wrapper over TCP that XORs
//! every byte with a key, with its own [`Connector`] and [`Acceptor`].
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc_transport::{Acceptor, Connection, Connector, Endpoint, PeerAddr, TransportError, connect};
use support::{EXCHANGE_LEN, exchange, pattern};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const KEY: u8 = 0x5a;

/// XORs every byte read and written with `key`. Stateless per byte, so a partial write needs no
/// bookkeeping: the unwritten rest is transformed again on the next call.
#[derive(Debug)]
struct XorStream<S> {
    inner: S,
    key: u8,
    scratch: Vec<u8>,
}

impl<S> XorStream<S> {
    fn new(inner: S, key: u8) -> Self {
        XorStream {
            inner,
            key,
            scratch: Vec::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for XorStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            buf.filled_mut()[before..]
                .iter_mut()
                .for_each(|b| *b ^= this.key);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for XorStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.scratch.clear();
        this.scratch.extend(buf.iter().map(|b| b ^ this.key));
        Pin::new(&mut this.inner).poll_write(cx, &this.scratch)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn xor_peer(addr: SocketAddr) -> PeerAddr {
    PeerAddr::Other(format!("xor+tcp://{addr}"))
}

#[derive(Debug)]
struct XorConnector {
    addr: SocketAddr,
    key: u8,
}

#[rpc_transport::async_trait]
impl Connector for XorConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let stream =
            TcpStream::connect(self.addr)
                .await
                .map_err(|source| TransportError::Connect {
                    endpoint: self.describe(),
                    source,
                })?;
        Ok(Connection::new(
            XorStream::new(stream, self.key),
            xor_peer(self.addr),
        ))
    }

    fn describe(&self) -> String {
        format!("xor+tcp://{}", self.addr)
    }
}

#[derive(Debug)]
struct XorAcceptor {
    listener: TcpListener,
    local: SocketAddr,
    key: u8,
}

impl XorAcceptor {
    async fn bind(key: u8) -> XorAcceptor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        XorAcceptor {
            listener,
            local,
            key,
        }
    }
}

#[rpc_transport::async_trait]
impl Acceptor for XorAcceptor {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        let (stream, peer) = self
            .listener
            .accept()
            .await
            .map_err(TransportError::Accept)?;
        Ok(Connection::new(
            XorStream::new(stream, self.key),
            xor_peer(peer),
        ))
    }

    fn local_endpoint(&self) -> Endpoint {
        Endpoint::tcp(self.local)
    }
}

/// Accepts one connection from any acceptor and connects with any connector, as a framework
/// holding only trait objects would.
async fn pair(connector: &dyn Connector, acceptor: &mut dyn Acceptor) -> (Connection, Connection) {
    let (client, server) = tokio::join!(connector.connect(), acceptor.accept());
    (client.unwrap(), server.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xor_transport_round_trips_bytes() {
    let mut acceptor = XorAcceptor::bind(KEY).await;
    let connector = XorConnector {
        addr: acceptor.local,
        key: KEY,
    };
    assert_eq!(
        connector.describe(),
        format!("xor+tcp://{}", acceptor.local)
    );

    let (client, server) = pair(&connector, &mut acceptor).await;
    assert_eq!(client.peer(), &xor_peer(acceptor.local));
    assert!(
        matches!(server.peer(), PeerAddr::Other(text) if text.starts_with("xor+tcp://127.0.0.1:"))
    );
    exchange(client, server).await;
}

#[tokio::test]
async fn bytes_on_the_wire_are_obfuscated() {
    let mut acceptor = XorAcceptor::bind(KEY).await;
    // A plain TCP client, found through the acceptor's reported endpoint, sees the raw wire.
    let endpoint = acceptor.local_endpoint();
    let (plain, xor) = tokio::join!(
        connect(&endpoint, Duration::from_secs(10)),
        acceptor.accept()
    );
    let (mut plain, mut xor) = (plain.unwrap(), xor.unwrap());
    assert!(matches!(plain.peer(), PeerAddr::Tcp(_)));

    let message = pattern(0x33, 4096);
    let on_the_wire: Vec<u8> = message.iter().map(|b| b ^ KEY).collect();
    assert_ne!(message, on_the_wire);

    xor.write_all(&message).await.unwrap();
    let mut seen = vec![0; message.len()];
    plain.read_exact(&mut seen).await.unwrap();
    assert_eq!(seen, on_the_wire, "the wire carries the transformed bytes");

    plain.write_all(&on_the_wire).await.unwrap();
    let mut decoded = vec![0; message.len()];
    xor.read_exact(&mut decoded).await.unwrap();
    assert_eq!(decoded, message, "the transport undoes the transformation");
}

#[tokio::test]
async fn mismatched_keys_garble_the_bytes() {
    let mut acceptor = XorAcceptor::bind(KEY).await;
    let connector = XorConnector {
        addr: acceptor.local,
        key: KEY ^ 0xff,
    };
    let (mut client, mut server) = pair(&connector, &mut acceptor).await;

    let message = pattern(0x44, EXCHANGE_LEN / 64);
    client.write_all(&message).await.unwrap();
    let mut received = vec![0; message.len()];
    server.read_exact(&mut received).await.unwrap();
    assert!(received.iter().zip(&message).all(|(r, m)| r ^ m == 0xff));
}

#[tokio::test]
async fn user_connector_reports_its_own_connect_errors() {
    let acceptor = XorAcceptor::bind(KEY).await;
    let addr = acceptor.local;
    drop(acceptor);

    let connector: Box<dyn Connector> = Box::new(XorConnector { addr, key: KEY });
    let err = connector.connect().await.unwrap_err();
    assert_eq!(err.io_kind(), Some(io::ErrorKind::ConnectionRefused));
    assert_eq!(
        err.to_string(),
        format!("cannot connect to xor+tcp://{addr}")
    );
}
