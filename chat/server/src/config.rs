//! How a chat server is set up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::Endpoint;
use rpc_core::tls::{ClientTls, ServerTls};
use rpc_registry::Registry;

use crate::page::{MIN_PAGE_BYTES, PAGE_EXPANSION};
use crate::store::Store;
use crate::stun::StunConfig;

/// How a [`ChatServer`](crate::ChatServer) runs. Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChatServerConfig {
    /// Where to listen. Default: `tcp://127.0.0.1:7300`.
    pub listen: Vec<Endpoint>,
    /// The directory of the database file ([`DATABASE_FILE`](crate::DATABASE_FILE)) of the
    /// default store; created if missing (and unused with [`store`](Self::store)). No default
    /// in [`ChatServerConfig::new`]; `chat-data` in [`Default`].
    pub data_dir: PathBuf,
    /// Where the durable state lives. Default: `None`, a [`RedbStore`](crate::store::RedbStore)
    /// in `data_dir`. A store given here is closed when the server shuts down.
    pub store: Option<Arc<dyn Store>>,
    /// Where presence lives. Default: `None`, an embedded
    /// [`MemoryRegistry`](rpc_registry::MemoryRegistry).
    pub registry: Option<Arc<dyn Registry>>,
    /// The endpoints this server is registered under in the registry (as instances of
    /// `chat.Signal`, so that clients find a node through it and move to another when theirs
    /// dies). Default: empty, meaning the endpoints it listens on (with the real port for port
    /// 0); set them when it listens on `0.0.0.0` or behind a NAT.
    pub advertise: Vec<String>,
    /// After this long without a heartbeat a user is dropped (the TTL of presence leases).
    /// From [`MIN_PRESENCE_TTL`](Self::MIN_PRESENCE_TTL) to
    /// [`MAX_PRESENCE_TTL`](Self::MAX_PRESENCE_TTL). Default: 10 s.
    pub presence_ttl: Duration,
    /// How often clients are told to heartbeat; positive and shorter than `presence_ttl`.
    /// Default: `presence_ttl / 3`.
    pub heartbeat: Duration,
    /// How many posts each room keeps, 1 to [`MAX_ROOM_HISTORY`](Self::MAX_ROOM_HISTORY).
    /// Default: 100.
    pub room_history: usize,
    /// How many unacknowledged messages one user's mailbox may hold, 1 to
    /// [`MAX_PENDING_LIMIT`](Self::MAX_PENDING_LIMIT). A relay beyond it is refused with
    /// [`ChatError::Quota`](chat_api::ChatError::Quota), so its sender knows; the
    /// messages accepted before are all kept. Default: 10,000.
    pub max_pending: u64,
    /// How many rooms one user may make (by `create_room`, or by joining a room that did not
    /// exist), 1 to [`MAX_QUOTA`](Self::MAX_QUOTA). Rooms are never deleted, so this counts
    /// every room the user ever made. Default: 100.
    pub max_rooms_created: u32,
    /// How many rooms one user may be a member of at once, 1 to
    /// [`MAX_QUOTA`](Self::MAX_QUOTA). Membership lasts until the member leaves or is removed,
    /// so a session that ends frees no slot. Default: 100.
    pub max_rooms_joined: u32,
    /// How many members one room may have, 1 to [`MAX_QUOTA`](Self::MAX_QUOTA); a join or an
    /// `add_member` beyond it is refused with [`ChatError::Quota`](chat_api::ChatError::Quota).
    /// Default: 1,000.
    pub max_room_members: u32,
    /// The largest frame accepted or sent, from [`MIN_FRAME_LEN`](Self::MIN_FRAME_LEN) to
    /// 4 GiB - 1. Requests are small (a message is at most
    /// [`MAX_TEXT_BYTES`](chat_api::MAX_TEXT_BYTES)) and lists come a page at a time,
    /// so answers stay small too. Default: 4 MiB.
    pub max_frame_len: usize,
    /// The most items one page of a list holds (`online`, `rooms`, `members`, `history`, the
    /// online list at the start of `presence`), whatever the client asks, 1 to
    /// [`MAX_PAGE_ITEMS_LIMIT`](Self::MAX_PAGE_ITEMS_LIMIT). Default: 500.
    pub max_page_items: usize,
    /// The byte budget of one page ([`page`](crate::page)), from
    /// [`MIN_PAGE_BYTES`] to `max_frame_len` / [`PAGE_EXPANSION`], so that no page can reach
    /// the frame limit whatever it lists. Default: 64 KiB.
    pub max_page_bytes: usize,
    /// How many friends and friend requests (sent or received) one user may have, 1 to
    /// [`MAX_QUOTA`](Self::MAX_QUOTA). A request past it, on either side, is refused with
    /// [`ChatError::Quota`](chat_api::ChatError::Quota). Default: 1,000.
    pub max_friends: u32,
    /// The largest file the server holds for its recipient (sent with `upload_file`), in
    /// bytes, up to [`MAX_HELD_FILE_LIMIT`](Self::MAX_HELD_FILE_LIMIT); 0 takes no files.
    /// Default: 100 MiB.
    pub max_held_file: u64,
    /// How many bytes of files the server holds for one recipient at once (the declared sizes
    /// of those not yet acknowledged or expired), at least `max_held_file`. An upload past it
    /// is refused with [`ChatError::Quota`](chat_api::ChatError::Quota). Default: 1 GiB.
    pub held_files_quota: u64,
    /// How long a held file lasts after it was begun or last written, finished or not, from
    /// 1 s to [`MAX_FILE_TTL`](Self::MAX_FILE_TTL). Default: 7 days.
    pub file_ttl: Duration,
    /// How long a call may ring before it ends as missed, from 1 ms to
    /// [`MAX_CALL_ANSWER`](Self::MAX_CALL_ANSWER). Default: 30 s
    /// ([`CALL_ANSWER_SECS`](chat_api::CALL_ANSWER_SECS)).
    pub call_answer: Duration,
    /// Where to serve the web chat (its pages over HTTP, or HTTPS with `tls`), or nowhere. The
    /// browsers talk to the server over its first `ws://` endpoint in `listen` (`wss://` with
    /// `tls`); without one, the server adds one on this address's host, on a free port.
    /// Default: `None`.
    pub web: Option<SocketAddr>,
    /// How account passwords are hashed (argon2id). Default: [`PasswordHashing::default`],
    /// OWASP's recommendation.
    pub password_hashing: PasswordHashing,
    /// The STUN service (RFC 8489 Binding with RFC 5780's NAT behaviour discovery) on UDP,
    /// which `rendezvous` tells clients about. Default: `None`, no STUN service.
    pub stun: Option<StunConfig>,
    /// The certificate and key of the `tls://` and `wss://` endpoints in `listen`, and of the
    /// web chat, which is then served over HTTPS and talks to a `wss://` endpoint (browsers
    /// allow cameras and microphones only on secure pages, and a secure page only `wss://`).
    /// Default: `None`: no TLS endpoint can listen, and the web chat is served over HTTP.
    pub tls: Option<ServerTls>,
    /// The TLS settings of the connections this server makes to other nodes that advertise
    /// `tls://` or `wss://` endpoints. Default: `None`, the Mozilla root store.
    pub client_tls: Option<ClientTls>,
    /// Where the server records its metrics: the framework's (calls, connections, bytes) and
    /// its own (`chat_online_users`, `chat_messages_total` by path, `chat_messages_waiting`,
    /// `chat_calls_in_progress`). Serving them is up to whoever holds the
    /// [`Metrics`](rpc_core::metrics::Metrics). Default: `None`, no metrics.
    pub metrics: Option<rpc_core::metrics::Metrics>,
}

/// The argon2id parameters account passwords are hashed with. Each hash records the
/// parameters it was made with, so changing them leaves existing passwords working; a password
/// hashed with other parameters is hashed again with these when its user next signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordHashing {
    /// Memory per hash, in KiB, from [`MIN_MEMORY_KIB`](Self::MIN_MEMORY_KIB) (and at least
    /// 8 × `parallelism`) to [`MAX_MEMORY_KIB`](Self::MAX_MEMORY_KIB). Default: 19,456
    /// (19 MiB).
    pub memory_kib: u32,
    /// Passes over the memory, 1 to [`MAX_ITERATIONS`](Self::MAX_ITERATIONS). Default: 2.
    pub iterations: u32,
    /// Lanes, 1 to [`MAX_PARALLELISM`](Self::MAX_PARALLELISM). Default: 1.
    pub parallelism: u32,
}

impl PasswordHashing {
    /// The smallest memory setting argon2 allows.
    pub const MIN_MEMORY_KIB: u32 = 8;
    /// The largest memory setting: 4 GiB.
    pub const MAX_MEMORY_KIB: u32 = 4 << 20;
    /// The most passes.
    pub const MAX_ITERATIONS: u32 = 100;
    /// The most lanes.
    pub const MAX_PARALLELISM: u32 = 64;

    /// These settings as argon2 parameters, if argon2 accepts them.
    pub(crate) fn params(&self) -> Result<argon2::Params, ConfigError> {
        in_range(
            "the password hashing memory (KiB)",
            self.memory_kib,
            Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB,
        )?;
        in_range(
            "the password hashing iterations",
            self.iterations,
            1..=Self::MAX_ITERATIONS,
        )?;
        in_range(
            "the password hashing parallelism",
            self.parallelism,
            1..=Self::MAX_PARALLELISM,
        )?;
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| ConfigError(format!("password hashing parameters: {e}")))
    }
}

impl Default for PasswordHashing {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        PasswordHashing {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl ChatServerConfig {
    /// The default listening endpoint.
    pub const DEFAULT_LISTEN: &'static str = "tcp://127.0.0.1:7300";
    /// The port of [`Self::DEFAULT_LISTEN`].
    pub const DEFAULT_PORT: u16 = 7300;
    /// The default presence TTL.
    pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(10);
    /// The default number of posts a room keeps.
    pub const DEFAULT_ROOM_HISTORY: usize = 100;
    /// The default mailbox limit.
    pub const DEFAULT_MAX_PENDING: u64 = 10_000;
    /// The default frame limit.
    pub const DEFAULT_MAX_FRAME_LEN: usize = 4 << 20;
    /// The shortest presence TTL.
    pub const MIN_PRESENCE_TTL: Duration = Duration::from_millis(100);
    /// The longest presence TTL (as long as a registry server grants by default).
    pub const MAX_PRESENCE_TTL: Duration = Duration::from_secs(3600);
    /// The most posts a room may be set to keep.
    pub const MAX_ROOM_HISTORY: usize = 100_000;
    /// The largest mailbox limit.
    pub const MAX_PENDING_LIMIT: u64 = 1_000_000;
    /// The default number of rooms one user may make.
    pub const DEFAULT_MAX_ROOMS_CREATED: u32 = 100;
    /// The default number of rooms one user may be in.
    pub const DEFAULT_MAX_ROOMS_JOINED: u32 = 100;
    /// The default number of members one room may have.
    pub const DEFAULT_MAX_ROOM_MEMBERS: u32 = 1_000;
    /// The largest room quota.
    pub const MAX_QUOTA: u32 = 1_000_000;
    /// The smallest frame limit: room for the largest request with plenty to spare, and for
    /// the smallest page budget.
    pub const MIN_FRAME_LEN: usize = PAGE_EXPANSION * MIN_PAGE_BYTES;
    /// The default number of items in a page.
    pub const DEFAULT_MAX_PAGE_ITEMS: usize = 500;
    /// The largest number of items a page may be set to hold.
    pub const MAX_PAGE_ITEMS_LIMIT: usize = 10_000;
    /// The default byte budget of a page.
    pub const DEFAULT_MAX_PAGE_BYTES: usize = 64 << 10;
    /// The default number of friends and friend requests one user may have.
    pub const DEFAULT_MAX_FRIENDS: u32 = 1_000;
    /// The default largest file held for a recipient: 100 MiB.
    pub const DEFAULT_MAX_HELD_FILE: u64 = 100 << 20;
    /// The largest file the server may be set to hold: 64 GiB.
    pub const MAX_HELD_FILE_LIMIT: u64 = 64 << 30;
    /// The default bytes of files held for one recipient: 1 GiB.
    pub const DEFAULT_HELD_FILES_QUOTA: u64 = 1 << 30;
    /// The default time a held file lasts: 7 days.
    pub const DEFAULT_FILE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
    /// The longest time a held file may be set to last: a year.
    pub const MAX_FILE_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
    /// The longest time a call may ring before it ends as missed.
    pub const MAX_CALL_ANSWER: Duration = Duration::from_secs(600);

    /// The defaults, with the database in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ChatServerConfig {
            listen: vec![Endpoint::tcp(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                Self::DEFAULT_PORT,
            )))],
            data_dir: data_dir.into(),
            store: None,
            registry: None,
            advertise: Vec::new(),
            presence_ttl: Self::DEFAULT_PRESENCE_TTL,
            heartbeat: Self::DEFAULT_PRESENCE_TTL / 3,
            room_history: Self::DEFAULT_ROOM_HISTORY,
            max_pending: Self::DEFAULT_MAX_PENDING,
            max_rooms_created: Self::DEFAULT_MAX_ROOMS_CREATED,
            max_rooms_joined: Self::DEFAULT_MAX_ROOMS_JOINED,
            max_room_members: Self::DEFAULT_MAX_ROOM_MEMBERS,
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
            max_page_items: Self::DEFAULT_MAX_PAGE_ITEMS,
            max_page_bytes: Self::DEFAULT_MAX_PAGE_BYTES,
            max_friends: Self::DEFAULT_MAX_FRIENDS,
            max_held_file: Self::DEFAULT_MAX_HELD_FILE,
            held_files_quota: Self::DEFAULT_HELD_FILES_QUOTA,
            file_ttl: Self::DEFAULT_FILE_TTL,
            call_answer: Duration::from_secs(chat_api::CALL_ANSWER_SECS),
            web: None,
            password_hashing: PasswordHashing::default(),
            stun: None,
            tls: None,
            client_tls: None,
            metrics: None,
        }
    }

    /// Sets the presence TTL and the heartbeat interval to a third of it.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self.heartbeat = ttl / 3;
        self
    }

    /// Checks every setting against its range, and the settings that depend on each other,
    /// so that a bad one is reported when the server starts rather than failing later.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError("no endpoint to listen on".into()));
        }
        in_range(
            "the presence TTL",
            self.presence_ttl,
            Self::MIN_PRESENCE_TTL..=Self::MAX_PRESENCE_TTL,
        )?;
        if self.heartbeat.is_zero() || self.heartbeat >= self.presence_ttl {
            return Err(ConfigError(format!(
                "the heartbeat interval ({:?}) must be positive and shorter than the presence \
                 TTL ({:?})",
                self.heartbeat, self.presence_ttl
            )));
        }
        in_range(
            "the room history",
            self.room_history,
            1..=Self::MAX_ROOM_HISTORY,
        )?;
        in_range(
            "the mailbox limit",
            self.max_pending,
            1..=Self::MAX_PENDING_LIMIT,
        )?;
        in_range(
            "the quota of rooms made",
            self.max_rooms_created,
            1..=Self::MAX_QUOTA,
        )?;
        in_range(
            "the quota of rooms joined",
            self.max_rooms_joined,
            1..=Self::MAX_QUOTA,
        )?;
        in_range(
            "the quota of room members",
            self.max_room_members,
            1..=Self::MAX_QUOTA,
        )?;
        in_range(
            "the largest held file",
            self.max_held_file,
            0..=Self::MAX_HELD_FILE_LIMIT,
        )?;
        if self.held_files_quota < self.max_held_file {
            return Err(ConfigError(format!(
                "the bytes of files held for one user ({}) must be at least the largest held \
                 file ({})",
                self.held_files_quota, self.max_held_file
            )));
        }
        in_range(
            "the held files' lifetime",
            self.file_ttl,
            Duration::from_secs(1)..=Self::MAX_FILE_TTL,
        )?;
        in_range(
            "the frame limit",
            self.max_frame_len,
            Self::MIN_FRAME_LEN..=u32::MAX as usize,
        )?;
        in_range(
            "the page item limit",
            self.max_page_items,
            1..=Self::MAX_PAGE_ITEMS_LIMIT,
        )?;
        in_range(
            "the page byte budget",
            self.max_page_bytes,
            MIN_PAGE_BYTES..=self.max_frame_len / PAGE_EXPANSION,
        )?;
        in_range(
            "the quota of friends",
            self.max_friends,
            1..=Self::MAX_QUOTA,
        )?;
        in_range(
            "the time a call may ring",
            self.call_answer,
            Duration::from_millis(1)..=Self::MAX_CALL_ANSWER,
        )?;
        self.password_hashing.params()?;
        Ok(())
    }
}

/// A setting of a [`ChatServerConfig`] that is out of its range or at odds with another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chat server setting: {0}")]
pub struct ConfigError(String);

fn in_range<T: PartialOrd + std::fmt::Debug>(
    what: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError(format!(
        "{what} is {value:?}; it must be from {:?} to {:?}",
        range.start(),
        range.end()
    )))
}

impl Default for ChatServerConfig {
    /// [`ChatServerConfig::new`] with the data in `chat-data` in the current directory.
    fn default() -> Self {
        Self::new("chat-data")
    }
}
