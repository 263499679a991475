//! How a chat server is set up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::Endpoint;
use rpc_registry::Registry;

/// How a [`ChatServer`](super::ChatServer) runs. Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChatServerConfig {
    /// Where to listen. Default: `tcp://127.0.0.1:7300`.
    pub listen: Vec<Endpoint>,
    /// The directory of the database file ([`DATABASE_FILE`](super::DATABASE_FILE)); created if missing. No default
    /// in [`ChatServerConfig::new`]; `chat-data` in [`Default`].
    pub data_dir: PathBuf,
    /// Where presence lives. Default: `None`, an embedded
    /// [`MemoryRegistry`](rpc_registry::MemoryRegistry).
    pub registry: Option<Arc<dyn Registry>>,
    /// After this long without a heartbeat a user is dropped (the TTL of presence leases).
    /// Default: 10 s.
    pub presence_ttl: Duration,
    /// How often clients are told to heartbeat. Default: `presence_ttl / 3`.
    pub heartbeat: Duration,
    /// How many posts each room keeps. Default: 100.
    pub room_history: usize,
    /// How many unacknowledged messages one user's mailbox may hold; relays beyond it fail.
    /// Default: 10,000.
    pub max_pending: u64,
    /// The largest frame accepted or sent. Requests are small (a message is at most
    /// [`MAX_TEXT_BYTES`](crate::chat::api::MAX_TEXT_BYTES)), but the online list grows with
    /// the users (about 100 bytes each). Default: 4 MiB.
    pub max_frame_len: usize,
}

impl ChatServerConfig {
    /// The default listening endpoint.
    pub const DEFAULT_LISTEN: &'static str = "tcp://127.0.0.1:7300";
    /// The default presence TTL.
    pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(10);
    /// The default number of posts a room keeps.
    pub const DEFAULT_ROOM_HISTORY: usize = 100;
    /// The default mailbox limit.
    pub const DEFAULT_MAX_PENDING: u64 = 10_000;
    /// The default frame limit.
    pub const DEFAULT_MAX_FRAME_LEN: usize = 4 << 20;

    /// The defaults, with the database in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ChatServerConfig {
            listen: vec![
                Self::DEFAULT_LISTEN
                    .parse()
                    .expect("the default endpoint is valid"),
            ],
            data_dir: data_dir.into(),
            registry: None,
            presence_ttl: Self::DEFAULT_PRESENCE_TTL,
            heartbeat: Self::DEFAULT_PRESENCE_TTL / 3,
            room_history: Self::DEFAULT_ROOM_HISTORY,
            max_pending: Self::DEFAULT_MAX_PENDING,
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Sets the presence TTL and the heartbeat interval to a third of it.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self.heartbeat = ttl / 3;
        self
    }
}

impl Default for ChatServerConfig {
    /// [`ChatServerConfig::new`] with the data in `chat-data` in the current directory.
    fn default() -> Self {
        Self::new("chat-data")
    }
}
