//! Account passwords: hashed with argon2id into PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`,
//! which carry their salt and parameters, so that the parameters can change and old hashes
//! still verify), on Tokio's blocking pool behind a semaphore with as many permits as cores:
//! a flood of registrations queues instead of taking every core and `m` KiB per call.
//!
//! Stores written before accounts kept a salted SHA-256 instead. The store turns those records
//! into [`legacy_credential`] strings; a password that verifies against one is hashed again
//! with argon2id and stored in its place ([`Verdict::Outdated`]).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use chat_api::ChatError;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};
use tracing::error;
use uuid::Uuid;

use crate::config::PasswordHashing;

/// The prefix of a credential written by the store format before accounts: a salted SHA-256.
const LEGACY_PREFIX: &str = "$chat-sha256$";

/// Hashes and verifies passwords with the server's argon2id parameters.
#[derive(Debug)]
pub(crate) struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of no one's password, verified against when a login names no account, so that
    /// an unknown name takes as long to refuse as a wrong password.
    dummy: OnceCell<String>,
}

/// What checking a password against a stored credential found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It is the password.
    Right,
    /// It is the password, but the credential should be made again with the server's current
    /// parameters (an old format, or other argon2 parameters).
    Outdated,
    /// It is not.
    Wrong,
}

impl Passwords {
    /// Hashing with `settings`, which [`PasswordHashing::params`] accepted.
    pub(crate) fn new(settings: PasswordHashing) -> Self {
        let params = settings.params().unwrap_or_else(|_| {
            // The configuration was checked when the server started; this is only reached by
            // a settings struct built around that check.
            error!("invalid password hashing settings; using the defaults");
            Params::default()
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Passwords {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            dummy: OnceCell::new(),
        }
    }

    /// A new credential for `password`: a PHC string with a fresh random salt.
    pub(crate) async fn hash(&self, password: &str) -> Result<String, ChatError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.blocking(move || {
            let salt = SaltString::encode_b64(Uuid::new_v4().as_bytes())
                .map_err(|e| format!("salt: {e}"))?;
            hasher(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| format!("hashing: {e}"))
        })
        .await
    }

    /// Whether `password` is the one `credential` was made from.
    pub(crate) async fn verify(
        &self,
        credential: &str,
        password: &str,
    ) -> Result<Verdict, ChatError> {
        let params = self.params.clone();
        let (credential, password) = (credential.to_owned(), password.to_owned());
        self.blocking(move || Ok(verify(&params, &credential, &password)))
            .await
    }

    /// Spends the time of one verification, for a login that names no account.
    pub(crate) async fn verify_nothing(&self, password: &str) -> Result<(), ChatError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| self.hash("not anyone's password"))
            .await?;
        self.verify(dummy, password).await.map(|_| ())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, ChatError> {
        let failed = |e: String| {
            error!("password hashing: {e}");
            ChatError::Storage("password hashing failed".into())
        };
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(failed)
    }
}

/// The credential a store of the format before accounts kept: `salt` and
/// SHA-256(`salt` ‖ secret), in hex.
pub(crate) fn legacy_credential(salt: &[u8], hash: &[u8]) -> String {
    format!("{LEGACY_PREFIX}{}${}", hex(salt), hex(hash))
}

fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn verify(params: &Params, credential: &str, password: &str) -> Verdict {
    if let Some(legacy) = credential.strip_prefix(LEGACY_PREFIX) {
        return match verify_legacy(legacy, password) {
            true => Verdict::Outdated,
            false => Verdict::Wrong,
        };
    }
    let Ok(hash) = PasswordHash::new(credential) else {
        error!("a stored credential is not a PHC string; refusing every password");
        return Verdict::Wrong;
    };
    // The parameters come from the hash itself, so hashes made with older settings verify.
    if hasher(params.clone())
        .verify_password(password.as_bytes(), &hash)
        .is_err()
    {
        return Verdict::Wrong;
    }
    let current = hash.algorithm.as_str() == Algorithm::Argon2id.ident().as_str()
        && Params::try_from(&hash).is_ok_and(|used| {
            (used.m_cost(), used.t_cost(), used.p_cost())
                == (params.m_cost(), params.t_cost(), params.p_cost())
        });
    if current {
        Verdict::Right
    } else {
        Verdict::Outdated
    }
}

fn verify_legacy(legacy: &str, password: &str) -> bool {
    let Some((salt, hash)) = legacy.split_once('$') else {
        return false;
    };
    let (Some(salt), Some(hash)) = (unhex(salt), unhex(hash)) else {
        return false;
    };
    let mut hasher = Sha256::new();
    hasher.update(&salt);
    hasher.update(password.as_bytes());
    let candidate: [u8; 32] = hasher.finalize().into();
    // Compared in constant time.
    hash.len() == candidate.len()
        && candidate
            .iter()
            .zip(&hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHashing {
        PasswordHashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(cheap());
        let hash = passwords.hash("hunter2").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            passwords.verify(&hash, "hunter2").await.unwrap(),
            Verdict::Right
        );
        assert_eq!(
            passwords.verify(&hash, "hunter3").await.unwrap(),
            Verdict::Wrong
        );
        assert_ne!(passwords.hash("hunter2").await.unwrap(), hash, "salted");
        assert_eq!(
            passwords.verify("garbage", "hunter2").await.unwrap(),
            Verdict::Wrong
        );
        passwords.verify_nothing("x").await.unwrap();
    }

    #[tokio::test]
    async fn other_parameters_verify_and_ask_for_a_new_hash() {
        let old = Passwords::new(cheap()).hash("pw").await.unwrap();
        let mut settings = cheap();
        settings.iterations = 2;
        let passwords = Passwords::new(settings);
        assert_eq!(
            passwords.verify(&old, "pw").await.unwrap(),
            Verdict::Outdated
        );
        assert_eq!(passwords.verify(&old, "pq").await.unwrap(), Verdict::Wrong);
    }

    #[tokio::test]
    async fn legacy_sha256_credentials_verify_as_outdated() {
        let salt = [7u8; 16];
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update(b"old secret");
        let hash: [u8; 32] = hasher.finalize().into();
        let credential = legacy_credential(&salt, &hash);
        let passwords = Passwords::new(cheap());
        assert_eq!(
            passwords.verify(&credential, "old secret").await.unwrap(),
            Verdict::Outdated
        );
        assert_eq!(
            passwords.verify(&credential, "new secret").await.unwrap(),
            Verdict::Wrong
        );
        for bad in ["$chat-sha256$", "$chat-sha256$zz$00", "$chat-sha256$00$0"] {
            assert_eq!(
                passwords.verify(bad, "").await.unwrap(),
                Verdict::Wrong,
                "{bad}"
            );
        }
    }
}
