//! How a QUIC endpoint checks the other side: by the ed25519 key of its certificate.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The DER `SubjectPublicKeyInfo` of an ed25519 key (RFC 8410) is this prefix and the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// How a [`QuicEndpoint`](super::QuicEndpoint) checks the peer of a connection.
///
/// Either way the peer must present a certificate for an ed25519 key and sign the TLS 1.3
/// handshake with that key, which proves it holds the secret half. The key is reported in
/// [`PeerAddr::Quic`](crate::PeerAddr::Quic). Certificate names, dates and issuers are not
/// looked at: a peer is its key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAuth {
    /// Only a peer whose key is one of these. Anything else fails the handshake.
    Pinned(Vec<[u8; 32]>),
    /// Any ed25519 peer. The connection is encrypted and the peer proved it holds its key, but
    /// which key is acceptable is for the application to decide, from
    /// [`PeerAddr::Quic`](crate::PeerAddr::Quic).
    AnyKey,
}

impl PeerAuth {
    /// Only the peer with this key.
    pub fn pinned(key: [u8; 32]) -> Self {
        PeerAuth::Pinned(vec![key])
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let key = ed25519_key(cert)?;
        match self {
            PeerAuth::AnyKey => Ok(()),
            PeerAuth::Pinned(keys) if keys.contains(&key) => Ok(()),
            PeerAuth::Pinned(keys) => Err(other_error(format!(
                "peer key {} is not among the {} pinned key(s)",
                KeyHex(&key),
                keys.len()
            ))),
        }
    }
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAuth::Pinned(keys) => f
                .debug_tuple("Pinned")
                .field(&keys.iter().map(KeyHex).collect::<Vec<_>>())
                .finish(),
            PeerAuth::AnyKey => f.write_str("AnyKey"),
        }
    }
}

/// Writes a key as lowercase hex.
pub(crate) struct KeyHex<'a>(pub(crate) &'a [u8; 32]);

impl fmt::Display for KeyHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The ed25519 public key of a certificate, or why it has none.
pub(crate) fn ed25519_key(cert: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    let spki = parsed.subject_public_key_info();
    spki.as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX)
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .ok_or_else(|| other_error("the peer's certificate key is not ed25519".into()))
}

fn other_error(message: String) -> rustls::Error {
    // rustls writes this error with `Debug` in its messages: make that the plain text.
    struct Message(String);
    impl fmt::Display for Message {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl fmt::Debug for Message {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Message {}
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Message(message),
    ))))
}

/// Checks the peer's certificate key against a [`PeerAuth`] and its handshake signature against
/// that key. Serves as both the client's check of servers and the server's check of clients.
#[derive(Debug)]
pub(crate) struct KeyVerifier {
    auth: PeerAuth,
    /// Whether a client must present a certificate (server side only).
    client_key_required: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl KeyVerifier {
    pub(crate) fn new(
        auth: PeerAuth,
        client_key_required: bool,
        provider: &CryptoProvider,
    ) -> Self {
        KeyVerifier {
            auth,
            client_key_required,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The certificate passed `check`, so its key is ed25519: only that scheme can match.
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for KeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.auth.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for KeyVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.client_key_required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.auth.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::Identity;

    #[test]
    fn pinned_and_any_key() {
        let identity = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let cert = identity.certificate();
        assert!(PeerAuth::AnyKey.check(cert).is_ok());
        assert!(PeerAuth::pinned(identity.public_key()).check(cert).is_ok());
        assert!(
            PeerAuth::Pinned(vec![other.public_key(), identity.public_key()])
                .check(cert)
                .is_ok()
        );
        let refused = PeerAuth::pinned(other.public_key())
            .check(cert)
            .unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains(&KeyHex(&identity.public_key()).to_string()),
            "{text}"
        );
        assert!(text.contains("not among the 1 pinned key(s)"), "{text}");
    }

    #[test]
    fn a_certificate_that_is_not_ed25519_or_not_der_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = PeerAuth::AnyKey.check(cert.der()).unwrap_err();
        assert!(err.to_string().contains("not ed25519"), "{err}");
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03]);
        assert!(PeerAuth::AnyKey.check(&garbage).is_err());
    }
}
