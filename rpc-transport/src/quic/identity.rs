//! An ed25519 key pair and the self-signed certificate a QUIC endpoint presents with it.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The PKCS#8 v1 encoding of an ed25519 private key (RFC 8410) is this prefix and the 32-byte
/// secret. Building it by hand saves a DER library for one fixed shape.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The subject of every identity certificate. Peers are told apart by key, never by name.
const CERTIFICATE_NAME: &str = "dubbo-rs";

/// An ed25519 key pair and the self-signed X.509 certificate made from it, which a
/// [`QuicEndpoint`](super::QuicEndpoint) presents in its TLS 1.3 handshakes.
///
/// Peers recognize each other by the 32-byte [public key](Identity::public_key), not by the
/// certificate's names or dates: keep the [secret](Identity::secret_bytes) to be the same peer
/// tomorrow.
///
/// ```
/// use rpc_transport::quic::Identity;
///
/// let identity = Identity::generate()?;
/// let again = Identity::from_secret_bytes(identity.secret_bytes())?;
/// assert_eq!(again.public_key(), identity.public_key());
/// # Ok::<(), rpc_transport::quic::IdentityError>(())
/// ```
#[derive(Clone)]
pub struct Identity {
    secret: [u8; 32],
    public: [u8; 32],
    certificate: CertificateDer<'static>,
}

/// Why an [`Identity`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The self-signed certificate could not be made.
    #[error("cannot make the identity certificate: {0}")]
    Certificate(String),
}

impl Identity {
    /// A new identity with a random key.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut secret = [0; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| IdentityError::Random)?;
        Self::from_secret_bytes(secret)
    }

    /// The identity of a 32-byte ed25519 secret key (the seed of RFC 8032), as
    /// [`secret_bytes`](Identity::secret_bytes) gave it. Any 32 bytes are a valid key.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Result<Self, IdentityError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&secret)
            .map_err(|_| IdentityError::Certificate("invalid ed25519 seed".into()))?;
        let mut public = [0; 32];
        public.copy_from_slice(pair.public_key().as_ref());

        let pkcs8 = pkcs8(&secret);
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![CERTIFICATE_NAME.to_owned()])
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let certificate = params
            .self_signed(&key)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?
            .der()
            .clone();
        Ok(Identity {
            secret,
            public,
            certificate,
        })
    }

    /// The 32-byte secret key; [`from_secret_bytes`](Identity::from_secret_bytes) makes the same
    /// identity from it. Keep it secret.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The 32-byte ed25519 public key that peers pin (see
    /// [`PeerAuth::Pinned`](super::PeerAuth::Pinned)).
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The self-signed certificate presented in handshakes.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8(&self.secret)))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &super::auth::KeyHex(&self.public))
            .finish_non_exhaustive()
    }
}

fn pkcs8(secret: &[u8; 32]) -> Vec<u8> {
    let mut der = Vec::with_capacity(PKCS8_PREFIX.len() + secret.len());
    der.extend_from_slice(&PKCS8_PREFIX);
    der.extend_from_slice(secret);
    der
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::auth::ed25519_key;

    #[test]
    fn secret_round_trip_and_certificate_key() {
        let identity = Identity::generate().unwrap();
        let again = Identity::from_secret_bytes(identity.secret_bytes()).unwrap();
        assert_eq!(again.public_key(), identity.public_key());
        assert_eq!(
            ed25519_key(identity.certificate()).unwrap(),
            identity.public_key()
        );
        assert_ne!(
            Identity::generate().unwrap().public_key(),
            identity.public_key()
        );
        assert!(!format!("{identity:?}").contains(&format!("{:?}", identity.secret_bytes())));
    }

    #[test]
    fn rfc8032_test_vector() {
        // RFC 8032 §7.1, TEST 1.
        let secret: [u8; 32] =
            hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public: [u8; 32] =
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        assert_eq!(
            Identity::from_secret_bytes(secret).unwrap().public_key(),
            public
        );
    }

    fn hex(text: &str) -> [u8; 32] {
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
