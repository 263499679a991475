//! Connect and listen on the built-in endpoints, with timeouts.

use std::io;
use std::time::Duration;

use crate::memory::MemoryListener;
use crate::tcp::TcpAcceptor;
#[cfg(unix)]
use crate::unix::UnixAcceptor;
use crate::{Acceptor, Connection, Connector, Endpoint, TransportError, memory, tcp};

/// Connects to a built-in endpoint, failing with [`TransportError::Timeout`] if that takes
/// longer than `timeout`.
///
/// TCP resolves the host, tries each address it resolves to and sets `TCP_NODELAY`. QUIC
/// resolves the host likewise and connects from a new UDP socket with a new
/// [`Identity`](crate::quic::Identity), accepting any server key
/// ([`PeerAuth::AnyKey`](crate::quic::PeerAuth::AnyKey)): the connection is encrypted and the
/// server's key is in [`PeerAddr::Quic`](crate::PeerAddr::Quic), but nothing checks it. To pin
/// the server's key, connect from a [`QuicEndpoint`](crate::quic::QuicEndpoint) with
/// [`PeerAuth::Pinned`](crate::quic::PeerAuth::Pinned).
/// WebSocket resolves and connects as TCP does, then does the HTTP upgrade to the endpoint's
/// path, offering the subprotocol [`ws::SUBPROTOCOL`](crate::ws::SUBPROTOCOL); the timeout
/// covers both. A memory
/// endpoint nobody listens on fails at once with [`io::ErrorKind::ConnectionRefused`]; one whose
/// listener has [a full backlog](listen) waits, up to `timeout`.
///
/// TLS (`tls://` and `wss://`) checks the server's certificate against the Mozilla root store
/// compiled in ([`ClientTls::new`](crate::tls::ClientTls::new)); [`connect_tls`] takes CAs of
/// one's own and a client certificate.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Connection, TransportError> {
    connect_inner(endpoint, timeout, None).await
}

/// As [`connect`], with these TLS settings for a `tls://` or `wss://` endpoint (other endpoints
/// ignore them).
#[cfg(feature = "tls")]
pub async fn connect_tls(
    endpoint: &Endpoint,
    timeout: Duration,
    tls: &crate::tls::ClientTls,
) -> Result<Connection, TransportError> {
    connect_inner(endpoint, timeout, Some(tls)).await
}

#[cfg(feature = "tls")]
type ClientTlsRef<'a> = Option<&'a crate::tls::ClientTls>;
#[cfg(not(feature = "tls"))]
type ClientTlsRef<'a> = Option<&'a std::convert::Infallible>;

async fn connect_inner(
    endpoint: &Endpoint,
    timeout: Duration,
    tls: ClientTlsRef<'_>,
) -> Result<Connection, TransportError> {
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    let attempt = async {
        match endpoint {
            Endpoint::Tcp { host, port } => tcp::connect(host, *port).await,
            #[cfg(feature = "tls")]
            Endpoint::Tls { host, port } => {
                let default;
                let tls = match tls {
                    Some(tls) => tls,
                    None => {
                        default = crate::tls::ClientTls::new();
                        &default
                    }
                };
                crate::tls::connect(host, *port, tls).await
            }
            #[cfg(all(feature = "tls", feature = "ws"))]
            Endpoint::Wss { host, port, path } => {
                let default;
                let tls = match tls {
                    Some(tls) => tls,
                    None => {
                        default = crate::tls::ClientTls::new();
                        &default
                    }
                };
                crate::tls::connect_wss(host, *port, path, tls).await
            }
            #[cfg(not(feature = "tls"))]
            Endpoint::Tls { .. } => Err(tls_disabled()),
            #[cfg(not(all(feature = "tls", feature = "ws")))]
            Endpoint::Wss { .. } => Err(wss_disabled()),
            Endpoint::Quic { host, port } => quic_connect(host, *port).await,
            #[cfg(feature = "ws")]
            Endpoint::Ws { host, port, path } => crate::ws::connect(host, *port, path).await,
            #[cfg(not(feature = "ws"))]
            Endpoint::Ws { .. } => Err(ws_disabled()),
            #[cfg(unix)]
            Endpoint::Unix(path) => crate::unix::connect(path).await,
            #[cfg(not(unix))]
            Endpoint::Unix(_) => Err(unix_unsupported()),
            Endpoint::Memory(name) => memory::connect(name).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(TransportError::Connect {
            endpoint: endpoint.to_string(),
            source,
        }),
        Err(_elapsed) => Err(TransportError::Timeout {
            endpoint: endpoint.to_string(),
            after: timeout,
        }),
    }
}

/// Listens on a built-in endpoint.
///
/// - TCP binds the first address the host resolves to; port 0 picks a free port, which
///   [`Listener::local_endpoint`] reports. Accepted connections get `TCP_NODELAY`.
/// - QUIC binds a UDP socket at the first address the host resolves to (port 0 as for TCP) with
///   a new [`Identity`](crate::quic::Identity), and accepts every client, with or without a key
///   of its own ([`PeerAuth::AnyKey`](crate::quic::PeerAuth::AnyKey)); a client's key, when it
///   presents one, is in [`PeerAddr::Quic`](crate::PeerAddr::Quic). Clients that should be
///   checked need a [`QuicEndpoint`](crate::quic::QuicEndpoint) with
///   [`PeerAuth::Pinned`](crate::quic::PeerAuth::Pinned).
/// - WebSocket binds as TCP does. Each accepted TCP connection does its WebSocket handshake in
///   a task of its own, with a timeout, so a client that never sends its upgrade request delays
///   no other; [`Listener::accept`] returns connections whose handshake is done. An upgrade
///   request for another path is answered 404; any `Origin` is accepted. See
///   [`ws`](crate::ws) for the limits.
/// - Unix binds the socket path. An existing socket file is probed by connecting to it: if that
///   is refused, the file was left by a process that is gone and is replaced; otherwise this
///   fails with [`io::ErrorKind::AddrInUse`] (and the live listener sees the probe as a
///   connection closed without data). A file that is not a socket is never removed. The socket
///   file is removed when the listener is dropped.
/// - Memory registers the name for this process, failing with [`io::ErrorKind::AddrInUse`] if it
///   is taken. Up to 128 connections queue until accepted. Dropping the listener frees the name.
/// - TLS (`tls://`, `wss://`) needs a certificate: it fails here with
///   [`io::ErrorKind::InvalidInput`]; see [`listen_tls`].
pub async fn listen(endpoint: &Endpoint) -> Result<Listener, TransportError> {
    listen_inner(endpoint, None).await
}

/// As [`listen`], with the certificate (and client CA) for a `tls://` or `wss://` endpoint;
/// other endpoints ignore it. Each accepted connection does its TLS handshake (and, for
/// `wss://`, its WebSocket upgrade) in a task of its own with a timeout of 10 s, so a client
/// that connects and stalls delays no other; [`Listener::accept`] returns connections whose
/// handshake is done.
#[cfg(feature = "tls")]
pub async fn listen_tls(
    endpoint: &Endpoint,
    tls: &crate::tls::ServerTls,
) -> Result<Listener, TransportError> {
    listen_inner(endpoint, Some(tls)).await
}

#[cfg(feature = "tls")]
type ServerTlsRef<'a> = Option<&'a crate::tls::ServerTls>;
#[cfg(not(feature = "tls"))]
type ServerTlsRef<'a> = Option<&'a std::convert::Infallible>;

async fn listen_inner(
    endpoint: &Endpoint,
    tls: ServerTlsRef<'_>,
) -> Result<Listener, TransportError> {
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    let inner = match endpoint {
        Endpoint::Tcp { host, port } => TcpAcceptor::bind(host, *port).await.map(Inner::Tcp),
        Endpoint::Quic { host, port } => quic_listen(host, *port).await,
        #[cfg(feature = "ws")]
        Endpoint::Ws { host, port, path } => crate::ws::bind(host, *port, path)
            .await
            .map(Inner::Handshake),
        #[cfg(feature = "tls")]
        Endpoint::Tls { host, port } => match tls {
            Some(tls) => crate::tls::bind(host, *port, tls)
                .await
                .map(Inner::Handshake),
            None => Err(no_certificate()),
        },
        #[cfg(all(feature = "tls", feature = "ws"))]
        Endpoint::Wss { host, port, path } => match tls {
            Some(tls) => crate::tls::bind_wss(host, *port, path, tls)
                .await
                .map(Inner::Handshake),
            None => Err(no_certificate()),
        },
        #[cfg(not(feature = "tls"))]
        Endpoint::Tls { .. } => Err(tls_disabled()),
        #[cfg(not(all(feature = "tls", feature = "ws")))]
        Endpoint::Wss { .. } => Err(wss_disabled()),
        #[cfg(not(feature = "ws"))]
        Endpoint::Ws { .. } => Err(ws_disabled()),
        #[cfg(unix)]
        Endpoint::Unix(path) => UnixAcceptor::bind(path).await.map(Inner::Unix),
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err(unix_unsupported()),
        Endpoint::Memory(name) => MemoryListener::bind(name).map(Inner::Memory),
    };
    match inner {
        Ok(inner) => Ok(Listener { inner }),
        Err(source) => Err(TransportError::Bind {
            endpoint: endpoint.to_string(),
            source,
        }),
    }
}

#[cfg(feature = "quic")]
async fn quic_connect(host: &str, port: u16) -> io::Result<Connection> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use crate::quic::{Identity, PeerAuth, QuicConfig};

    let identity = Identity::generate().map_err(io::Error::other)?;
    let client_config = QuicConfig::new(identity).client_config(&PeerAuth::AnyKey)?;
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let local = match addr {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        // A client-only socket: nothing is accepted on it, and it closes with the connection.
        let endpoint = quinn::Endpoint::client(local)?;
        match crate::quic::connect(&endpoint, client_config.clone(), addr).await {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                tracing::debug!(%addr, %error, "quic connect attempt failed");
                last_error = Some(io::Error::new(
                    error.io_kind().unwrap_or(io::ErrorKind::Other),
                    std::error::Error::source(&error)
                        .map_or_else(|| error.to_string(), ToString::to_string),
                ));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no addresses"),
        )
    }))
}

#[cfg(feature = "quic")]
async fn quic_listen(host: &str, port: u16) -> io::Result<Inner> {
    use crate::quic::{Identity, QuicConfig, QuicEndpoint};

    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolved to no addresses"),
            )
        })?;
    let identity = Identity::generate().map_err(io::Error::other)?;
    QuicEndpoint::bind_io(addr, QuicConfig::new(identity)).map(Inner::Quic)
}

#[cfg(not(feature = "quic"))]
async fn quic_connect(_host: &str, _port: u16) -> io::Result<Connection> {
    Err(quic_unsupported())
}

#[cfg(not(feature = "quic"))]
async fn quic_listen(_host: &str, _port: u16) -> io::Result<Inner> {
    Err(quic_unsupported())
}

#[cfg(not(feature = "quic"))]
fn quic_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "QUIC is not compiled in (feature `quic` of rpc-transport)",
    )
}

#[cfg(feature = "tls")]
fn no_certificate() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a TLS endpoint needs a certificate and key: listen with listen_tls \
         (ServerBuilder::tls, or --tls-cert and --tls-key)",
    )
}

#[cfg(not(feature = "tls"))]
fn tls_disabled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "tls:// endpoints need the `tls` feature of rpc-transport",
    )
}

#[cfg(not(all(feature = "tls", feature = "ws")))]
fn wss_disabled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "wss:// endpoints need the `tls` and `ws` features of rpc-transport",
    )
}

#[cfg(not(feature = "ws"))]
fn ws_disabled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "ws:// endpoints need the `ws` feature of rpc-transport",
    )
}

#[cfg(not(unix))]
fn unix_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "unix sockets are not supported on this platform",
    )
}

/// A [`Connector`] for a built-in endpoint, with a connect timeout and, for TLS endpoints,
/// TLS settings; see [`connect`].
#[derive(Debug, Clone)]
pub struct EndpointConnector {
    endpoint: Endpoint,
    timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ClientTls>,
}

impl EndpointConnector {
    /// Connects to `endpoint`, giving up after `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        EndpointConnector {
            endpoint,
            timeout,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects to a `tls://` or `wss://` endpoint with these settings (CAs, client
    /// certificate) instead of the default ones; see [`connect_tls`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The endpoint it connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How long a connect may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[async_trait::async_trait]
impl Connector for EndpointConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        #[cfg(feature = "tls")]
        let tls = self.tls.as_ref();
        #[cfg(not(feature = "tls"))]
        let tls = None;
        connect_inner(&self.endpoint, self.timeout, tls).await
    }

    fn describe(&self) -> String {
        self.endpoint.to_string()
    }
}

/// Listens on a built-in endpoint; made by [`listen`].
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpAcceptor),
    #[cfg(feature = "quic")]
    Quic(crate::quic::QuicEndpoint),
    #[cfg(any(feature = "ws", feature = "tls"))]
    Handshake(crate::handshake::HandshakeAcceptor),
    #[cfg(unix)]
    Unix(UnixAcceptor),
    Memory(MemoryListener),
}

impl Listener {
    /// Waits for the next connection. An error is often transient (see
    /// [`TransportError::Accept`]).
    pub async fn accept(&mut self) -> Result<Connection, TransportError> {
        let accepted: io::Result<Connection> = match &mut self.inner {
            Inner::Tcp(acceptor) => acceptor.accept().await,
            #[cfg(feature = "quic")]
            Inner::Quic(endpoint) => return endpoint.accept().await,
            #[cfg(any(feature = "ws", feature = "tls"))]
            Inner::Handshake(acceptor) => acceptor.accept().await,
            #[cfg(unix)]
            Inner::Unix(acceptor) => acceptor.accept().await,
            Inner::Memory(listener) => listener.accept().await,
        };
        accepted.map_err(TransportError::Accept)
    }

    /// Where it listens; for TCP, TLS, WebSocket and QUIC this is the address actually bound, with the real
    /// port when port 0 was asked for.
    pub fn local_endpoint(&self) -> Endpoint {
        match &self.inner {
            Inner::Tcp(acceptor) => acceptor.local_endpoint().clone(),
            #[cfg(feature = "quic")]
            Inner::Quic(endpoint) => Acceptor::local_endpoint(endpoint),
            #[cfg(any(feature = "ws", feature = "tls"))]
            Inner::Handshake(acceptor) => acceptor.local_endpoint().clone(),
            #[cfg(unix)]
            Inner::Unix(acceptor) => Endpoint::Unix(acceptor.path().to_owned()),
            Inner::Memory(listener) => Endpoint::Memory(listener.name().to_owned()),
        }
    }
}

#[async_trait::async_trait]
impl Acceptor for Listener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        Listener::accept(self).await
    }

    fn local_endpoint(&self) -> Endpoint {
        Listener::local_endpoint(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerAddr;

    #[tokio::test(start_paused = true)]
    async fn memory_connect_times_out_while_the_backlog_is_full() {
        let endpoint = Endpoint::memory("builtin-unit-timeout");
        let _listener = listen(&endpoint).await.unwrap();
        let mut queued = Vec::new();
        for _ in 0..memory::BACKLOG {
            queued.push(connect(&endpoint, Duration::from_secs(1)).await.unwrap());
        }
        let err = connect(&endpoint, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Timeout { endpoint, after }
                if endpoint == "mem://builtin-unit-timeout" && *after == Duration::from_secs(1)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn endpoint_connector_and_listener_through_the_traits() {
        let endpoint = Endpoint::memory("builtin-unit-traits");
        let mut acceptor: Box<dyn Acceptor> = Box::new(listen(&endpoint).await.unwrap());
        assert_eq!(acceptor.local_endpoint(), endpoint);

        let connector = EndpointConnector::new(endpoint.clone(), Duration::from_secs(5));
        assert_eq!(connector.endpoint(), &endpoint);
        assert_eq!(connector.timeout(), Duration::from_secs(5));
        let connector: std::sync::Arc<dyn Connector> = std::sync::Arc::new(connector);
        assert_eq!(connector.describe(), "mem://builtin-unit-traits");

        let client = connector.connect().await.unwrap();
        let server = acceptor.accept().await.unwrap();
        assert_eq!(client.peer(), server.peer());
        assert!(matches!(client.peer(), PeerAddr::Memory(_)));
    }
}
