//! TLS (`tls://host:port`): the framework's byte stream over TLS 1.3 or 1.2 on TCP, with
//! [rustls](https://docs.rs/rustls) and the ring crypto provider; and, with the `ws` feature,
//! `wss://host:port/path`, a WebSocket over TLS, which is what a browser on an `https://` page
//! must use.
//!
//! A server needs a certificate chain and its private key ([`ServerTls`], from PEM files or PEM
//! text) and may ask clients for certificates signed by a CA of its choosing
//! ([`ServerTls::client_ca_pem_file`], required or optional). A client checks the server's
//! certificate against the Mozilla root store compiled in ([`ClientTls::new`], which
//! [`connect`](crate::connect) uses) or against CAs of its own ([`ClientTls::with_ca_pem_file`]),
//! for the endpoint's host name (or IP address) unless [`ClientTls::server_name`] names another,
//! and may present a certificate of its own ([`ClientTls::identity_pem_files`]).
//!
//! `tls://` negotiates the ALPN protocol [`ALPN`], so a client of another protocol (HTTP/2, say)
//! fails in the handshake rather than later; `wss://` negotiates `http/1.1`, as browsers expect.
//! The certificate each side presented is in [`PeerAddr::Tls`] and [`PeerAddr::Wss`].
//!
//! A peer that closes the TCP connection without TLS's `close_notify` (a process that exits, a
//! browser tab that closes) ends the stream as a clean end of file, not an error: the frames
//! carry their own lengths, so a connection cut inside a frame is still reported as one.
//!
//! A listener runs each handshake in a task of its own with a timeout of 10 s, at most 64 at
//! once, as the WebSocket listener does.
//!
//! ```
//! use rpc_transport::tls::{ClientTls, ServerTls};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A self-signed certificate for 127.0.0.1, as a test would make one.
//! let key = rcgen::KeyPair::generate()?;
//! let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
//! let server = ServerTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
//! let client = ClientTls::with_ca_pem(cert.pem().as_bytes())?;
//! # let _ = (server, client);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The rustls this module is built on, for [`ServerTls::rustls_config`].
pub use rustls;
/// The tokio-rustls this module is built on.
pub use tokio_rustls;

use crate::handshake::{HANDSHAKE_TIMEOUT, HandshakeAcceptor};
use crate::{Connection, Endpoint, PeerAddr, tcp};

/// The ALPN protocol of `tls://` endpoints.
pub const ALPN: &[u8] = b"dubbo-rs.v1";

/// The ALPN protocol of `wss://` endpoints: the HTTP of the WebSocket upgrade.
#[cfg(feature = "ws")]
const WSS_ALPN: &[u8] = b"http/1.1";

/// Why a TLS setting could not be made: a file that cannot be read, PEM that holds no
/// certificate or key, or a certificate and key that rustls refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// PEM text that is malformed, or holds none of what it should.
    #[error("{what}: {detail}")]
    Pem {
        /// What was being read: a file's path, or "the certificate PEM".
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the setting (a key that does not match the certificate, say).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up.
        context: &'static str,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// A CA certificate that cannot serve as a trust anchor.
    #[error("{what}: not a usable CA certificate: {detail}")]
    BadCa {
        /// Where it came from.
        what: String,
        /// Why.
        detail: String,
    },
    /// A server name that is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// The server side of TLS: a certificate chain, its key, and what is asked of clients.
///
/// Cheap to clone (the rustls configuration is shared).
#[derive(Clone)]
pub struct ServerTls {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    clients: ClientCerts,
    config: Arc<ServerConfig>,
}

#[derive(Clone)]
enum ClientCerts {
    None,
    Optional(Arc<RootCertStore>),
    Required(Arc<RootCertStore>),
}

impl ServerTls {
    /// The certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1) in PEM files,
    /// such as `fullchain.pem` and `privkey.pem` from an ACME client.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let chain = certificates(&read(cert_path)?, &cert_path.display().to_string())?;
        let key = private_key(&read(key_path)?, &key_path.display().to_string())?;
        ServerTls::build(chain, Arc::new(key), ClientCerts::None)
    }

    /// As [`from_pem_files`](ServerTls::from_pem_files), from PEM text.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        let chain = certificates(cert_chain, "the certificate PEM")?;
        let key = private_key(key, "the private key PEM")?;
        ServerTls::build(chain, Arc::new(key), ClientCerts::None)
    }

    /// Asks every client for a certificate signed by a CA in the PEM file `ca`; with
    /// `required`, a client without one fails the handshake, else it is let in without, and
    /// [`PeerAddr::Tls`]'s `cert` tells the two apart.
    pub fn client_ca_pem_file(
        self,
        ca: impl AsRef<Path>,
        required: bool,
    ) -> Result<Self, TlsConfigError> {
        let path = ca.as_ref();
        self.client_ca_pem(&read(path)?, &path.display().to_string(), required)
    }

    /// As [`client_ca_pem_file`](ServerTls::client_ca_pem_file), from PEM text.
    pub fn client_ca_pem(
        self,
        ca: &[u8],
        what: &str,
        required: bool,
    ) -> Result<Self, TlsConfigError> {
        let roots = Arc::new(root_store(ca, what)?);
        let clients = if required {
            ClientCerts::Required(roots)
        } else {
            ClientCerts::Optional(roots)
        };
        ServerTls::build(self.chain, self.key, clients)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKeyDer<'static>>,
        clients: ClientCerts,
    ) -> Result<Self, TlsConfigError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsConfigError::Rustls {
                context: "TLS protocol versions",
                source,
            })?;
        let builder = match &clients {
            ClientCerts::None => builder.with_no_client_auth(),
            ClientCerts::Optional(roots) | ClientCerts::Required(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                let verifier = if matches!(clients, ClientCerts::Optional(_)) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| TlsConfigError::BadCa {
                    what: "the client CA".into(),
                    detail: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|source| TlsConfigError::Rustls {
                context: "the server certificate and key",
                source,
            })?;
        Ok(ServerTls {
            chain,
            key,
            clients,
            config: Arc::new(config),
        })
    }

    /// The rustls configuration, with `alpn` as its ALPN protocols: for serving another
    /// protocol (HTTPS, say) with the same certificate, through [`tokio_rustls`].
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The configuration for a listener that negotiates `alpn`.
    fn config_for(&self, alpn: &[u8]) -> Arc<ServerConfig> {
        self.rustls_config(&[alpn])
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("chain", &format_args!("{} certificates", self.chain.len()))
            .field(
                "client_certs",
                &match self.clients {
                    ClientCerts::None => "not asked for",
                    ClientCerts::Optional(_) => "optional",
                    ClientCerts::Required(_) => "required",
                },
            )
            .finish_non_exhaustive()
    }
}

/// The client side of TLS: which CAs to trust, the name to check, and the certificate to
/// present if any.
///
/// Cheap to clone (the rustls configuration is shared).
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<ServerName<'static>>,
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts the Mozilla root store compiled in (`webpki-roots`), as a browser would: for
    /// servers with certificates from a public CA.
    // The ring provider has every cipher suite of TLS 1.3 and 1.2 and the roots need no
    // parsing, so building this configuration cannot fail.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        static DEFAULT: OnceLock<ClientTls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                ClientTls::build(Arc::new(roots), None, None)
                    .expect("the Mozilla roots make a valid client configuration")
            })
            .clone()
    }

    /// Trusts only the CA certificates in the PEM file `ca` (a private CA, or a server's
    /// self-signed certificate).
    pub fn with_ca_pem_file(ca: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        let path = ca.as_ref();
        let roots = root_store(&read(path)?, &path.display().to_string())?;
        ClientTls::build(Arc::new(roots), None, None)
    }

    /// As [`with_ca_pem_file`](ClientTls::with_ca_pem_file), from PEM text.
    pub fn with_ca_pem(ca: &[u8]) -> Result<Self, TlsConfigError> {
        let roots = root_store(ca, "the CA PEM")?;
        ClientTls::build(Arc::new(roots), None, None)
    }

    /// Presents the certificate chain and key in these PEM files to servers that ask for one.
    pub fn identity_pem_files(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let chain = certificates(&read(cert_path)?, &cert_path.display().to_string())?;
        let key = private_key(&read(key_path)?, &key_path.display().to_string())?;
        ClientTls::build(self.roots, Some((chain, Arc::new(key))), self.server_name)
    }

    /// As [`identity_pem_files`](ClientTls::identity_pem_files), from PEM text.
    pub fn identity_pem(self, cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        let chain = certificates(cert_chain, "the client certificate PEM")?;
        let key = private_key(key, "the client key PEM")?;
        ClientTls::build(self.roots, Some((chain, Arc::new(key))), self.server_name)
    }

    /// Checks the server's certificate for `name` (a DNS name or an IP address) instead of the
    /// endpoint's host, and sends it as SNI when it is a DNS name: for a server reached by an
    /// address its certificate does not name.
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsConfigError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsConfigError::ServerName(name.to_owned()))?;
        self.server_name = Some(name);
        Ok(self)
    }

    fn build(
        roots: Arc<RootCertStore>,
        identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Self, TlsConfigError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsConfigError::Rustls {
                context: "TLS protocol versions",
                source,
            })?
            .with_root_certificates(roots.clone());
        let config = match &identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|source| TlsConfigError::Rustls {
                    context: "the client certificate and key",
                    source,
                })?,
        };
        Ok(ClientTls {
            roots,
            identity,
            server_name,
            config: Arc::new(config),
        })
    }

    /// The configuration for a connection that offers `alpn`.
    fn config_for(&self, alpn: &[u8]) -> Arc<ClientConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls::new()
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &format_args!("{} CAs", self.roots.len()))
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsConfigError::Pem {
            what: what.to_owned(),
            detail: "no CERTIFICATE section".into(),
        });
    }
    Ok(chain)
}

fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsConfigError::Pem {
        what: what.to_owned(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section".into()
            }
            other => other.to_string(),
        },
    })
}

fn root_store(pem: &[u8], what: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots.add(cert).map_err(|e| TlsConfigError::BadCa {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The name the client checks: the one set, else the endpoint's host.
fn server_name_for(tls: &ClientTls, host: &str) -> io::Result<ServerName<'static>> {
    match &tls.server_name {
        Some(name) => Ok(name.clone()),
        None => ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is neither a DNS name nor an IP address for TLS"),
            )
        }),
    }
}

/// The leaf certificate of a peer, if it presented one.
fn peer_cert(certs: Option<&[CertificateDer<'static>]>) -> Option<Arc<[u8]>> {
    certs
        .and_then(|certs| certs.first())
        .map(|cert| Arc::from(cert.as_ref()))
}

/// An error of a TLS handshake, saying what it most likely means.
fn handshake_error(side: &str, error: io::Error) -> io::Error {
    let hint = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_)) => {
            " (the peer does not speak TLS: a plain tcp:// or ws:// endpoint?)"
        }
        Some(
            rustls::Error::NoApplicationProtocol
            | rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol),
        ) => " (the peer serves another protocol on this port: wss:// and tls:// do not mix)",
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => {
            " (the certificate does not name the host connected to: connect by a name it holds, \
             or set the name to check)"
        }
        Some(rustls::Error::InvalidCertificate(_)) => {
            " (the certificate is not trusted: give the CA that signed it)"
        }
        _ if matches!(
            error.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        ) =>
        {
            " (the peer closed the connection: it may not speak TLS, or refused this side's \
             certificate)"
        }
        _ => "",
    };
    io::Error::new(error.kind(), format!("TLS handshake {side}: {error}{hint}"))
}

/// The TLS stream of a client connection to `host:port`, and the address reached.
pub(crate) async fn connect_stream(
    host: &str,
    port: u16,
    tls: &ClientTls,
    alpn: &[u8],
) -> io::Result<(tokio_rustls::client::TlsStream<TcpStream>, SocketAddr)> {
    let name = server_name_for(tls, host)?;
    let (stream, addr) = tcp::connect_stream(host, port).await?;
    let stream = TlsConnector::from(tls.config_for(alpn))
        .connect(name, stream)
        .await
        .map_err(|e| handshake_error(&format!("with {addr} failed"), e))?;
    Ok((stream, addr))
}

/// A TLS stream whose peer may end the TCP connection without TLS's `close_notify`: that end
/// reads as an ordinary end of stream rather than an error. The framework's frames carry their
/// own lengths, so a connection cut inside a frame is still caught ("stream ended inside a
/// frame"), which is what `close_notify` would guard against; and peers that simply exit (a
/// client process, a browser tab) skip it all the time.
struct EofTolerant<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for EofTolerant<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.0).poll_read(cx, buf)) {
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EofTolerant<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Connects to `tls://host:port`.
pub(crate) async fn connect(host: &str, port: u16, tls: &ClientTls) -> io::Result<Connection> {
    let (stream, addr) = connect_stream(host, port, tls, ALPN).await?;
    let cert = peer_cert(stream.get_ref().1.peer_certificates());
    Ok(Connection::new(
        EofTolerant(stream),
        PeerAddr::Tls { addr, cert },
    ))
}

/// Connects to `wss://host:port/path`.
#[cfg(feature = "ws")]
pub(crate) async fn connect_wss(
    host: &str,
    port: u16,
    path: &str,
    tls: &ClientTls,
) -> io::Result<Connection> {
    let (stream, addr) = connect_stream(host, port, tls, WSS_ALPN).await?;
    let cert = peer_cert(stream.get_ref().1.peer_certificates());
    let ws = crate::ws::upgrade_client(EofTolerant(stream), host, port, path, true).await?;
    Ok(Connection::new(ws, PeerAddr::Wss { addr, cert }))
}

/// Listens on `tls://host:port`.
pub(crate) async fn bind(host: &str, port: u16, tls: &ServerTls) -> io::Result<HandshakeAcceptor> {
    let listener = TcpListener::bind((host, port)).await?;
    let local = Endpoint::tls(listener.local_addr()?);
    let acceptor = TlsAcceptor::from(tls.config_for(ALPN));
    Ok(HandshakeAcceptor::spawn(
        listener,
        local,
        HANDSHAKE_TIMEOUT,
        move |stream: TcpStream, peer| {
            let acceptor = acceptor.clone();
            async move {
                stream.set_nodelay(true)?;
                let stream = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| handshake_error(&format!("from {peer} failed"), e))?;
                let cert = peer_cert(stream.get_ref().1.peer_certificates());
                Ok(Connection::new(
                    EofTolerant(stream),
                    PeerAddr::Tls { addr: peer, cert },
                ))
            }
        },
    ))
}

/// Listens on `wss://host:port/path`.
#[cfg(feature = "ws")]
pub(crate) async fn bind_wss(
    host: &str,
    port: u16,
    path: &str,
    tls: &ServerTls,
) -> io::Result<HandshakeAcceptor> {
    let listener = TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    let local = Endpoint::Wss {
        host: addr.ip().to_string(),
        port: addr.port(),
        path: path.to_owned(),
    };
    let acceptor = TlsAcceptor::from(tls.config_for(WSS_ALPN));
    let path: Arc<str> = path.into();
    Ok(HandshakeAcceptor::spawn(
        listener,
        local,
        HANDSHAKE_TIMEOUT,
        move |stream: TcpStream, peer| {
            let (acceptor, path) = (acceptor.clone(), path.clone());
            async move {
                stream.set_nodelay(true)?;
                let stream = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| handshake_error(&format!("from {peer} failed"), e))?;
                let cert = peer_cert(stream.get_ref().1.peer_certificates());
                let ws = crate::ws::upgrade_server(EofTolerant(stream), &path).await?;
                Ok(Connection::new(ws, PeerAddr::Wss { addr: peer, cert }))
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_errors_name_what_is_wrong() {
        let (cert, key) = self_signed(&["localhost"]);
        let error = ServerTls::from_pem(b"", key.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the certificate PEM: no CERTIFICATE section"
        );
        let error = ServerTls::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the private key PEM: no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section"
        );
        let (_, other_key) = self_signed(&["localhost"]);
        let error = ServerTls::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the server certificate and key: "),
            "{error}"
        );
        let error =
            ServerTls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/cert.pem: "),
            "{error}"
        );
        let error =
            ClientTls::with_ca_pem(b"-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap_err();
        assert!(error.to_string().starts_with("the CA PEM: "), "{error}");
        let error = ClientTls::new().server_name("not a name!").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"invalid TLS server name "not a name!""#
        );
    }

    #[test]
    fn the_default_client_trusts_the_mozilla_roots() {
        let tls = ClientTls::new();
        assert!(tls.roots.len() > 100, "{}", tls.roots.len());
        assert!(tls.identity.is_none());
        assert!(format!("{tls:?}").contains("CAs"));
    }
}
