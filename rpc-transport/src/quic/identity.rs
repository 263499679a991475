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

    /// Signs `message` with this identity's key (ed25519, RFC 8032): a proof, checked with
    /// [`verify`], that whoever made it holds the key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        #[allow(
            clippy::expect_used,
            reason = "any 32 bytes are a seed, and these were accepted when the identity was made"
        )]
        let pair = Ed25519KeyPair::from_seed_unchecked(&self.secret)
            .expect("the seed was accepted when the identity was made");
        let mut signature = [0; 64];
        signature.copy_from_slice(pair.sign(message).as_ref());
        signature
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8(&self.secret)))
    }
}

/// Whether `signature` is `public_key`'s ed25519 signature of `message` (see
/// [`Identity::sign`]).
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
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

    #[test]
    fn a_signature_verifies_with_its_key_and_message_only() {
        let identity = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let signature = identity.sign(b"token");
        assert!(verify(&identity.public_key(), b"token", &signature));
        assert!(!verify(&identity.public_key(), b"tokem", &signature));
        assert!(!verify(&other.public_key(), b"token", &signature));
        assert!(!verify(&identity.public_key(), b"token", &signature[..63]));
        // RFC 8032 test 1: the empty message.
        let rfc = Identity::from_secret_bytes([
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ])
        .unwrap();
        assert_eq!(
            rfc.sign(b"")[..8],
            [0xe5, 0x56, 0x43, 0x00, 0xc3, 0x60, 0xac, 0x72]
        );
    }
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
