//! A QUIC endpoint: one UDP socket that accepts connections and opens them.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::auth::ed25519_key;
use super::datagrams::Datagrams;
use super::stream::QuicStream;
use super::{PeerAuth, QuicConfig};
use crate::{Acceptor, Connection, Connector, Endpoint, PeerAddr, TransportError};

/// What a client writes first on its stream. QUIC announces a stream to the peer only with its
/// first bytes, and in this framework's protocol a client need not write before its first call:
/// without these bytes a server could not hand the connection on until then.
pub(crate) const OPENER: [u8; 4] = *b"DRQ\x01";

/// Connections that finished their handshake and wait for [`QuicEndpoint::accept`].
const BACKLOG: usize = 128;

/// One UDP socket that both accepts QUIC connections and opens them.
///
/// Each framework [`Connection`] is one QUIC connection carrying one bidirectional stream,
/// opened by the client. Both sides present their [`Identity`](super::Identity) and check the
/// other's by its ed25519 key (see [`PeerAuth`]); the key is in [`PeerAddr::Quic`].
///
/// Connecting and accepting share the socket, so the connections opened from an endpoint leave
/// from the address that [`local_addr`](QuicEndpoint::local_addr) reports, the one peers
/// connect to. (That is what lets a connection through a NAT whose mapping the socket opened.)
///
/// Incoming handshakes run in the background, so a slow or silent peer holds up no other;
/// one that fails (a refused key, say) is logged at debug level and never reaches
/// [`accept`](QuicEndpoint::accept). Dropping the endpoint stops accepting; connections
/// already made carry on until they are dropped.
///
/// ```
/// use rpc_transport::quic::{Identity, PeerAuth, QuicConfig, QuicEndpoint};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server_identity = Identity::generate()?;
/// let server_key = server_identity.public_key();
/// let mut server = QuicEndpoint::bind("127.0.0.1:0".parse()?, QuicConfig::new(server_identity))?;
///
/// let client_config = QuicConfig::new(Identity::generate()?).peer(PeerAuth::pinned(server_key));
/// let client = QuicEndpoint::bind("127.0.0.1:0".parse()?, client_config)?;
/// let mut to_server = client.connect(server.local_addr()?).await?;
/// to_server.write_all(b"ping").await?;
///
/// let mut from_client = server.accept().await?;
/// let mut buf = [0; 4];
/// from_client.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"ping");
/// # Ok(())
/// # }
/// ```
pub struct QuicEndpoint {
    endpoint: quinn::Endpoint,
    config: Arc<QuicConfig>,
    /// For [`connect`](QuicEndpoint::connect): made once from the config's [`PeerAuth`].
    client_config: quinn::ClientConfig,
    accepted: mpsc::Receiver<Connection>,
    accept_task: JoinHandle<()>,
}

impl QuicEndpoint {
    /// Binds a UDP socket at `addr` (port 0 picks a free one). Fails on an address that cannot
    /// be bound, on settings QUIC cannot carry, or outside a tokio runtime.
    pub fn bind(addr: SocketAddr, config: QuicConfig) -> Result<Self, TransportError> {
        Self::bind_io(addr, config).map_err(|source| TransportError::Bind {
            endpoint: Endpoint::quic(addr).to_string(),
            source,
        })
    }

    /// Runs QUIC on a UDP socket that is already bound, such as one whose NAT mapping was just
    /// opened. Fails on settings QUIC cannot carry, or outside a tokio runtime.
    pub fn from_std_socket(socket: UdpSocket, config: QuicConfig) -> Result<Self, TransportError> {
        let name = socket
            .local_addr()
            .map(|addr| Endpoint::quic(addr).to_string())
            .unwrap_or_else(|_| "quic://(unbound)".into());
        Self::from_socket_io(socket, config).map_err(|source| TransportError::Bind {
            endpoint: name,
            source,
        })
    }

    /// Binds as [`bind`](QuicEndpoint::bind) does, and hands the datagrams of the socket that
    /// are not QUIC (STUN, an application's probes) to the [`Datagrams`] returned with it,
    /// which also sends such datagrams from the same port: what hole punching needs.
    pub fn bind_with_datagrams(
        addr: SocketAddr,
        config: QuicConfig,
    ) -> Result<(Self, Datagrams), TransportError> {
        let bind = || -> io::Result<(Self, Datagrams)> {
            let (endpoint, datagrams) = Self::build(UdpSocket::bind(addr)?, config, true)?;
            let datagrams = datagrams.ok_or_else(|| io::Error::other("no datagram channel"))?;
            Ok((endpoint, datagrams))
        };
        bind().map_err(|source| TransportError::Bind {
            endpoint: Endpoint::quic(addr).to_string(),
            source,
        })
    }

    pub(crate) fn bind_io(addr: SocketAddr, config: QuicConfig) -> io::Result<Self> {
        Self::from_socket_io(UdpSocket::bind(addr)?, config)
    }

    fn from_socket_io(socket: UdpSocket, config: QuicConfig) -> io::Result<Self> {
        Self::build(socket, config, false).map(|(endpoint, _)| endpoint)
    }

    fn build(
        socket: UdpSocket,
        config: QuicConfig,
        with_datagrams: bool,
    ) -> io::Result<(Self, Option<Datagrams>)> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("a QUIC endpoint must be made inside a tokio runtime"))?;
        let server_config = config.server_config()?;
        let client_config = config.client_config(&config.peer)?;
        let quinn_runtime = Arc::new(quinn::TokioRuntime);
        let (endpoint, datagrams) = if with_datagrams {
            let (socket, datagrams) = super::datagrams::demux(socket, &*quinn_runtime)?;
            // Peers must keep the fixed bit set, which is what tells QUIC from the rest.
            let mut endpoint_config = quinn::EndpointConfig::default();
            endpoint_config.grease_quic_bit(false);
            let endpoint = quinn::Endpoint::new_with_abstract_socket(
                endpoint_config,
                Some(server_config),
                socket,
                quinn_runtime,
            )?;
            (endpoint, Some(datagrams))
        } else {
            let endpoint = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_config),
                socket,
                quinn_runtime,
            )?;
            (endpoint, None)
        };
        let (ready, accepted) = mpsc::channel(BACKLOG);
        let accept_task = runtime.spawn(accept_loop(
            endpoint.clone(),
            ready,
            config.handshake_timeout,
        ));
        let endpoint = QuicEndpoint {
            endpoint,
            config: Arc::new(config),
            client_config,
            accepted,
            accept_task,
        };
        Ok((endpoint, datagrams))
    }

    /// The address of the UDP socket, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The settings it was made with.
    pub fn config(&self) -> &QuicConfig {
        &self.config
    }

    /// Opens a connection to the endpoint at `remote`, checking it as the config's
    /// [`peer`](QuicConfig::peer) says. Gives up when the handshake exceeds the
    /// [idle timeout](QuicConfig::idle_timeout) of silence.
    pub async fn connect(&self, remote: SocketAddr) -> Result<Connection, TransportError> {
        connect(&self.endpoint, self.client_config.clone(), remote).await
    }

    /// Opens a connection to `remote`, checking it as `peer` says instead of the config's
    /// [`peer`](QuicConfig::peer): to reach one device whose key is known, say.
    pub async fn connect_with(
        &self,
        remote: SocketAddr,
        peer: &PeerAuth,
    ) -> Result<Connection, TransportError> {
        let client_config =
            self.config
                .client_config(peer)
                .map_err(|source| TransportError::Connect {
                    endpoint: Endpoint::quic(remote).to_string(),
                    source,
                })?;
        connect(&self.endpoint, client_config, remote).await
    }

    /// A [`Connector`] that opens connections to `remote` from this endpoint's socket, as
    /// [`connect`](QuicEndpoint::connect) does, each within the config's
    /// [handshake timeout](QuicConfig::handshake_timeout). It keeps working after the
    /// endpoint is dropped.
    pub fn connector(&self, remote: SocketAddr) -> QuicConnector {
        QuicConnector {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            client_config: self.client_config.clone(),
            remote,
            timeout: self.config.handshake_timeout,
        }
    }

    /// Waits for the next connection whose handshake succeeded and whose stream is open.
    pub async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.accepted.recv().await.ok_or_else(|| {
            TransportError::Accept(io::Error::new(
                io::ErrorKind::NotConnected,
                "the QUIC endpoint stopped accepting",
            ))
        })
    }
}

impl Drop for QuicEndpoint {
    fn drop(&mut self) {
        // Connectors may keep the socket in use; refuse the connections nobody will accept.
        self.endpoint.set_server_config(None);
        self.accept_task.abort();
    }
}

impl fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Acceptor for QuicEndpoint {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        QuicEndpoint::accept(self).await
    }

    fn local_endpoint(&self) -> Endpoint {
        match self.endpoint.local_addr() {
            Ok(addr) => Endpoint::quic(addr),
            // quinn reports only an error of the socket itself here, which a bound socket
            // does not have; name the endpoint anyway.
            Err(_) => Endpoint::Quic {
                host: "0.0.0.0".into(),
                port: 0,
            },
        }
    }
}

/// Opens connections to one address from a [`QuicEndpoint`]'s socket; see
/// [`QuicEndpoint::connector`].
#[derive(Clone)]
pub struct QuicConnector {
    endpoint: quinn::Endpoint,
    config: Arc<QuicConfig>,
    client_config: quinn::ClientConfig,
    remote: SocketAddr,
    timeout: Duration,
}

impl QuicConnector {
    /// A connector from the same socket to `remote`, checking it as `peer` says: to reach
    /// another device whose key is known, from the socket whose NAT mapping the others know.
    pub fn to(&self, remote: SocketAddr, peer: &PeerAuth) -> Result<QuicConnector, TransportError> {
        let client_config =
            self.config
                .client_config(peer)
                .map_err(|source| TransportError::Connect {
                    endpoint: Endpoint::quic(remote).to_string(),
                    source,
                })?;
        Ok(QuicConnector {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            client_config,
            remote,
            timeout: self.timeout,
        })
    }

    /// The address it connects to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl fmt::Debug for QuicConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicConnector")
            .field("remote", &self.remote)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Connector for QuicConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let attempt = connect(&self.endpoint, self.client_config.clone(), self.remote);
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_elapsed) => Err(TransportError::Timeout {
                endpoint: self.describe(),
                after: self.timeout,
            }),
        }
    }

    fn describe(&self) -> String {
        Endpoint::quic(self.remote).to_string()
    }
}

pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    client_config: quinn::ClientConfig,
    remote: SocketAddr,
) -> Result<Connection, TransportError> {
    let attempt = async {
        // Peers are checked by key, so the name is only what rustls needs to start: the
        // address, which also keeps the handshake free of a server name indication.
        let server_name = remote.ip().to_string();
        let connection = endpoint
            .connect_with(client_config, remote, &server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .await?;
        let key = peer_key(&connection);
        let (mut send, recv) = connection.open_bi().await?;
        send.write_all(&OPENER).await?;
        Ok::<_, io::Error>(Connection::quic(
            QuicStream::new(send, recv),
            PeerAddr::Quic { addr: remote, key },
        ))
    };
    attempt.await.map_err(|source| TransportError::Connect {
        endpoint: Endpoint::quic(remote).to_string(),
        source,
    })
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    ready: mpsc::Sender<Connection>,
    handshake_timeout: Duration,
) {
    while let Some(incoming) = endpoint.accept().await {
        let ready = ready.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match tokio::time::timeout(handshake_timeout, establish(incoming)).await {
                Ok(Ok(connection)) => {
                    // A send fails only when the endpoint is gone; the connection goes too.
                    let _ = ready.send(connection).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "incoming QUIC connection failed");
                }
                Err(_elapsed) => {
                    tracing::debug!(%remote, "incoming QUIC connection timed out");
                }
            }
        });
    }
}

/// Completes an incoming connection's handshake and takes its stream.
async fn establish(incoming: quinn::Incoming) -> io::Result<Connection> {
    let connection = incoming.await?;
    let remote = connection.remote_address();
    let key = peer_key(&connection);
    let (send, mut recv) = connection.accept_bi().await?;
    let mut opener = [0; OPENER.len()];
    recv.read_exact(&mut opener)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if opener != OPENER {
        connection.close(quinn::VarInt::from_u32(1), b"bad stream opener");
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stream opened with {opener:02x?}, expected {OPENER:02x?}"),
        ));
    }
    Ok(Connection::quic(
        QuicStream::new(send, recv),
        PeerAddr::Quic { addr: remote, key },
    ))
}

/// The ed25519 key of the peer's certificate; `None` for a client that presented none.
fn peer_key(connection: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = connection.peer_identity()?;
    let certificates = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    ed25519_key(certificates.first()?).ok()
}
