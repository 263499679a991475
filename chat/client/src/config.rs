//! What a chat client needs to know: where the server is, who it is, where it serves its peer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::tls::ClientTls;
use rpc_core::transport::quic::Identity;
use rpc_core::{Backoff, Endpoint, Format};
use rpc_registry::Registry;
use uuid::Uuid;

/// The chat server's default endpoint, `tcp://127.0.0.1:7300`.
pub const DEFAULT_SERVER: &str = "tcp://127.0.0.1:7300";
/// Where a client serves its peer by default: a free UDP port of the loopback interface, for
/// QUIC.
pub const DEFAULT_LISTEN: &str = "quic://127.0.0.1:0";

/// Settings of a [`ChatClient`](crate::ChatClient). Every field's default is in its description;
/// [`ChatClientConfig::new`] fills them in.
#[derive(Clone)]
#[non_exhaustive]
pub struct ChatClientConfig {
    /// The chat server. Default: [`DEFAULT_SERVER`].
    pub server: Endpoint,
    /// Other nodes of the same chat service (sharing its registry), tried in order when
    /// `server` cannot be reached, at the first connect and whenever the connection is lost:
    /// the client registers again on the node that answers and stays with it. Default: none.
    pub fallback_servers: Vec<Endpoint>,
    /// A registry the chat servers register in (as nodes of `chat.Signal`): when set, the
    /// client connects to one of the nodes it lists, as they are when it connects, and moves to
    /// another when its node goes away; `server` and `fallback_servers` are used while it lists
    /// none. Default: none.
    pub registry: Option<Arc<dyn Registry>>,
    /// The user's id. Default: a new random id (keep it, with the secret, to come back as the
    /// same user). With `login`, the id the server knows the name by replaces it.
    pub id: Uuid,
    /// The display name, reserved to this id for good by the server (no other account may take
    /// it, online or not).
    pub name: String,
    /// The account's password: the secret the id is bound to at its first registration.
    /// Default: a new random secret.
    pub secret: String,
    /// Whether to log in to an existing account by `name` and `secret` (its password) rather
    /// than register `id`: the server tells the id, and the client registers with it from then
    /// on. Default: false.
    pub login: bool,
    /// Where this client serves its peer (`chat.Peer`) for direct messages: a `quic://`
    /// endpoint, whose UDP socket also carries the messages this client sends directly.
    /// Default: [`DEFAULT_LISTEN`].
    pub listen: Endpoint,
    /// The endpoint advertised to others for direct messages. Default: `None`, meaning the
    /// endpoint the peer is really bound to (with the real port when `listen` asks for port 0).
    /// Set it when others reach this machine by another address, or to a closed endpoint to
    /// force others onto the relay.
    pub advertise: Option<String>,
    /// How long a direct send may take (connecting included) before the message goes through
    /// the server instead, 1 ms to 1 h. Default: 1 s.
    pub direct_timeout: Duration,
    /// How long a call to the server may take; also how long a call waits for the client to be
    /// back online while it reconnects; 1 ms to 1 h. Default: 5 s.
    pub call_timeout: Duration,
    /// The serializer used with the server and with peers. Default: MessagePack.
    pub format: Format,
    /// Delays between attempts to register again after the session was lost. Default: 100 ms
    /// doubling to 2 s, with full jitter, for ever.
    pub reconnect: Backoff,
    /// How long a message sent through the server (`relay`, `post`) whose outcome is unknown
    /// (the connection was lost before the answer came) is sent again with the same id, as the
    /// client reconnects; 0 to 1 h, 0 for never. Default: 30 s.
    pub resend_within: Duration,
    /// How many recent message ids are remembered to show each message once, 1 to 1,048,576.
    /// Default: 4,096.
    pub dedup_capacity: usize,
    /// How many attempts in a row to register again after the session was lost before the
    /// client gives up (its state becomes [`ClientState::GaveUp`](crate::ClientState::GaveUp));
    /// `None` for no limit. Default: `None`.
    pub max_reconnect_attempts: Option<u32>,
    /// This device's identity key, bound to each session with `bind_device_key` so that peers
    /// connecting directly can pin it; `None` binds none. Default: a new random key (keep one
    /// with [`Identity::from_secret_bytes`] to be the same device across runs).
    pub device_key: Option<Identity>,
    /// The TLS settings for a `tls://` or `wss://` server (a private CA, say). Default: `None`,
    /// the Mozilla root store.
    pub tls: Option<ClientTls>,
    /// Where files other users send peer to peer are saved (made when the first arrives);
    /// `None` refuses every file. Default: `None`.
    pub files_dir: Option<std::path::PathBuf>,
    /// The largest file taken from a peer, in bytes. Default: 1 GB.
    pub max_file_bytes: u64,
}

impl ChatClientConfig {
    /// A configuration for the user `name` on `server`, with a new random id and secret and
    /// every other field at its default.
    pub fn new(server: Endpoint, name: impl Into<String>) -> Self {
        ChatClientConfig {
            server,
            fallback_servers: Vec::new(),
            registry: None,
            id: Uuid::new_v4(),
            name: name.into(),
            secret: new_secret(),
            login: false,
            listen: Endpoint::Quic {
                host: "127.0.0.1".to_owned(),
                port: 0,
            },
            advertise: None,
            direct_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(5),
            format: Format::MessagePack,
            reconnect: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            resend_within: Duration::from_secs(30),
            dedup_capacity: 4096,
            max_reconnect_attempts: None,
            device_key: Identity::generate().ok(),
            tls: None,
            files_dir: None,
            max_file_bytes: 1_000_000_000,
        }
    }

    /// The shortest direct and call timeouts.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
    /// The longest direct and call timeouts.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
    /// The most message ids the client may be set to remember.
    pub const MAX_DEDUP_CAPACITY: usize = 1 << 20;

    /// Sets the id and the secret, to come back as a user registered before.
    pub fn identity(mut self, id: Uuid, secret: impl Into<String>) -> Self {
        self.id = id;
        self.secret = secret.into();
        self
    }

    /// Logs in to the existing account `name` with its password, instead of registering an id.
    pub fn login(mut self, password: impl Into<String>) -> Self {
        self.secret = password.into();
        self.login = true;
        self
    }
}

impl fmt::Debug for ChatClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("ChatClientConfig")
            .field("server", &self.server)
            .field("fallback_servers", &self.fallback_servers)
            .field("registry", &self.registry.is_some())
            .field("id", &self.id)
            .field("name", &self.name)
            .field("secret", &"<hidden>")
            .field("login", &self.login)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("direct_timeout", &self.direct_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("format", &self.format.name())
            .field("reconnect", &self.reconnect)
            .field("resend_within", &self.resend_within)
            .field("dedup_capacity", &self.dedup_capacity)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            // An identity shows its public key only.
            .field("device_key", &self.device_key)
            .field("tls", &self.tls)
            .field("files_dir", &self.files_dir)
            .field("max_file_bytes", &self.max_file_bytes)
            .finish()
    }
}

impl ChatClientConfig {
    /// Checks the settings' ranges, so that a bad one is reported by `connect` rather than
    /// failing later.
    pub(crate) fn check(&self) -> Result<(), String> {
        let timeouts = Self::MIN_TIMEOUT..=Self::MAX_TIMEOUT;
        for (what, value) in [
            ("direct timeout", self.direct_timeout),
            ("call timeout", self.call_timeout),
        ] {
            if !timeouts.contains(&value) {
                return Err(format!(
                    "the {what} is {value:?}; it must be from {:?} to {:?}",
                    Self::MIN_TIMEOUT,
                    Self::MAX_TIMEOUT
                ));
            }
        }
        if self.resend_within > Self::MAX_TIMEOUT {
            return Err(format!(
                "the resend window is {:?}; it must be at most {:?}",
                self.resend_within,
                Self::MAX_TIMEOUT
            ));
        }
        if !(1..=Self::MAX_DEDUP_CAPACITY).contains(&self.dedup_capacity) {
            return Err(format!(
                "the dedup capacity is {}; it must be from 1 to {}",
                self.dedup_capacity,
                Self::MAX_DEDUP_CAPACITY
            ));
        }
        let Endpoint::Quic { host, .. } = &self.listen else {
            return Err(format!(
                "the peer listens on quic:// only (direct messages are authenticated by device \
                 keys over QUIC), not on {}",
                self.listen
            ));
        };
        if self.advertise.is_none()
            && host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(format!(
                "the peer listens on {} (every interface), which others cannot connect to: \
                 give the endpoint they should use as `advertise` (--advertise)",
                self.listen
            ));
        }
        Ok(())
    }
}

/// A new random secret: 244 random bits (two v4 UUIDs) as 64 hex digits.
pub fn new_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_wildcard_listen_needs_an_advertised_endpoint() {
        let server: Endpoint = DEFAULT_SERVER.parse().unwrap();
        for wildcard in ["quic://0.0.0.0:0", "quic://[::]:7400"] {
            let mut config = ChatClientConfig::new(server.clone(), "x");
            config.listen = wildcard.parse().unwrap();
            let refused = config.check().unwrap_err();
            assert!(refused.contains("--advertise"), "{refused}");
            config.advertise = Some("quic://198.51.100.7:7400".into());
            assert_eq!(config.check(), Ok(()));
        }
        let config = ChatClientConfig::new(server, "x");
        assert_eq!(config.check(), Ok(()), "the default listen is fine");
    }

    #[test]
    fn the_peer_listens_on_quic_only() {
        let server: Endpoint = DEFAULT_SERVER.parse().unwrap();
        let mut config = ChatClientConfig::new(server, "x");
        config.listen = "tcp://127.0.0.1:0".parse().unwrap();
        let refused = config.check().unwrap_err();
        assert!(refused.contains("quic:// only"), "{refused}");
    }
}
