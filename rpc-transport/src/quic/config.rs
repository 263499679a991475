//! A QUIC endpoint's settings, and the quinn and rustls configurations made from them.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;

use super::auth::KeyVerifier;
use super::{Identity, PeerAuth};

/// The ALPN protocol every connection negotiates: this framework's frames, protocol version 1.
pub const ALPN: &[u8] = b"dubbo-rs/1";

/// The settings of a [`QuicEndpoint`](super::QuicEndpoint).
///
/// ```
/// use std::time::Duration;
///
/// use rpc_transport::quic::{Identity, PeerAuth, QuicConfig};
///
/// let server_key = Identity::generate()?.public_key();
/// let config = QuicConfig::new(Identity::generate()?)
///     .peer(PeerAuth::pinned(server_key))
///     .idle_timeout(Duration::from_secs(20));
/// assert_eq!(config.keep_alive_interval, Some(Duration::from_secs(10)));
/// # Ok::<(), rpc_transport::quic::IdentityError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QuicConfig {
    /// The key and certificate this endpoint presents, as a server and as a client.
    pub identity: Identity,
    /// How peers are checked, in both directions. Default [`PeerAuth::AnyKey`].
    pub peer: PeerAuth,
    /// Whether a connecting client must present its key. Default `false`; always required
    /// when [`peer`](QuicConfig::peer) is [`PeerAuth::Pinned`]. A client connecting from a
    /// [`QuicEndpoint`](super::QuicEndpoint) always presents its identity; only other QUIC
    /// clients may come without one, and then [`PeerAddr::Quic`](crate::PeerAddr::Quic) has no key.
    pub require_client_key: bool,
    /// A connection that hears nothing from its peer for this long is lost: reads and writes
    /// on it fail. Default 30 s. The smaller of the two sides' values applies.
    pub idle_timeout: Duration,
    /// How often to send a keep-alive packet on a connection that is otherwise quiet, so that
    /// it outlives the idle timeout and NAT mappings stay open. Default 10 s, below the usual
    /// 30 s a NAT keeps an idle UDP mapping. `None` sends none.
    pub keep_alive_interval: Option<Duration>,
    /// How long an incoming connection may take from its first packet to its stream being
    /// opened, before it is dropped. Default 10 s.
    pub handshake_timeout: Duration,
}

impl QuicConfig {
    /// The defaults described on each field, presenting `identity`.
    pub fn new(identity: Identity) -> Self {
        QuicConfig {
            identity,
            peer: PeerAuth::AnyKey,
            require_client_key: false,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Sets [`peer`](QuicConfig::peer).
    pub fn peer(mut self, peer: PeerAuth) -> Self {
        self.peer = peer;
        self
    }

    /// Sets [`require_client_key`](QuicConfig::require_client_key).
    pub fn require_client_key(mut self, required: bool) -> Self {
        self.require_client_key = required;
        self
    }

    /// Sets [`idle_timeout`](QuicConfig::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`keep_alive_interval`](QuicConfig::keep_alive_interval).
    pub fn keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// Sets [`handshake_timeout`](QuicConfig::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The quinn transport settings, for one direction. `accepts_stream` is true for the
    /// server side, which lets the client open the connection's one bidirectional stream.
    fn transport(&self, accepts_stream: bool) -> io::Result<Arc<TransportConfig>> {
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            invalid(format!(
                "idle timeout {:?} is too long for QUIC",
                self.idle_timeout
            ))
        })?;
        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive_interval)
            .max_concurrent_bidi_streams(VarInt::from_u32(u32::from(accepts_stream)))
            .max_concurrent_uni_streams(VarInt::from_u32(0));
        Ok(Arc::new(transport))
    }

    pub(crate) fn server_config(&self) -> io::Result<quinn::ServerConfig> {
        let provider = provider();
        let required = self.require_client_key || matches!(self.peer, PeerAuth::Pinned(_));
        let verifier = KeyVerifier::new(self.peer.clone(), required, &provider);
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(
                vec![self.identity.certificate().clone()],
                self.identity.private_key(),
            )
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| invalid(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(self.transport(true)?);
        Ok(server)
    }

    pub(crate) fn client_config(&self, peer: &PeerAuth) -> io::Result<quinn::ClientConfig> {
        let provider = provider();
        let verifier = KeyVerifier::new(peer.clone(), false, &provider);
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(
                vec![self.identity.certificate().clone()],
                self.identity.private_key(),
            )
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| invalid(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.transport(false)?);
        Ok(client)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(error: rustls::Error) -> io::Error {
    invalid(format!("invalid TLS settings: {error}"))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_timeout_quic_cannot_carry_is_reported() {
        let config = QuicConfig::new(Identity::generate().unwrap()).idle_timeout(Duration::MAX);
        let err = config.server_config().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("too long for QUIC"), "{err}");
        assert!(config.client_config(&PeerAuth::AnyKey).is_err());
    }
}
