//! What a chat client tells its application: events, its state, what a send did, and errors.

use chat_api::{
    CallEvent, ChatError, Envelope, FriendEvent, Path, PresenceEvent, RoomEvent, Sender, UserInfo,
};
use rpc_core::RpcError;
use uuid::Uuid;

/// Something the application should show, read from the receiver [`ChatClient::connect`]
/// returns.
///
/// [`ChatClient::connect`]: crate::ChatClient::connect
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatEvent {
    /// A message for this user or one of its rooms, by whichever path it came, once.
    Message(Envelope),
    /// Who is online: the whole list after every (re)registration, then joins and leaves.
    Presence(PresenceEvent),
    /// A member joined or left one of this user's rooms, or this user was invited to one.
    Room(RoomEvent),
    /// A friend request, or an answer to one, or a friendship ended.
    Friend(FriendEvent),
    /// Call signaling: an invite, its answer, SDP and ICE from the other side, the end.
    Call(CallEvent),
    /// A file sent to this client peer to peer started, resumed, arrived or failed.
    File(FileEvent),
    /// The client's state changed.
    State(ClientState),
}

/// What happened to a file sent to this client peer to peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileEvent {
    /// A peer started sending a file, or resumed sending it from `offset`.
    Incoming {
        /// The transfer.
        id: Uuid,
        /// The sender.
        from: Sender,
        /// The file's name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Bytes already here (0 for a new transfer).
        offset: u64,
    },
    /// A file arrived whole, with the hash offered, and was saved.
    Received {
        /// The transfer.
        id: Uuid,
        /// The sender.
        from: Sender,
        /// The file's name as offered.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Where it was saved (its name, or `name (n).ext` when that was taken).
        path: std::path::PathBuf,
    },
    /// A file arrived whole but not with the hash offered; the copy was deleted.
    Failed {
        /// The transfer.
        id: Uuid,
        /// The sender.
        from: Sender,
        /// The file's name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// What [`ChatClient::send_file`](crate::ChatClient::send_file) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The transfer's id.
    pub id: Uuid,
    /// The recipient.
    pub to: UserInfo,
    /// The file's name as offered.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// How it went: [`Path::Direct`](chat_api::Path::Direct) peer to peer; through the
    /// server to a recipient who was online ([`Path::Relayed`](chat_api::Path::Relayed): they
    /// download it at once) or offline ([`Path::Stored`](chat_api::Path::Stored): held for
    /// them).
    pub path: chat_api::Path,
    /// The direct path's endpoint, when it went directly.
    pub endpoint: Option<String>,
    /// Why it did not go directly, when it went through the server.
    pub why_not_direct: Option<String>,
    /// How long it took, hashing included.
    pub took: std::time::Duration,
    /// How many times the transfer resumed after a broken connection.
    pub resumed: u32,
}

/// Where a chat client stands. Watch it with [`ChatClient::watch_state`] or read it from
/// [`ChatEvent::State`].
///
/// [`ChatClient::watch_state`]: crate::ChatClient::watch_state
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Registering for the first time.
    Connecting,
    /// Registered, heartbeating, with the inbox and presence streams open.
    Online {
        /// This user as the server recorded them, with the address it observed.
        user: UserInfo,
        /// How many times the client registered again after losing its session.
        reconnects: u32,
    },
    /// The session was lost; the client is registering again by itself.
    Reconnecting {
        /// Why the session was lost, or why the last attempt failed.
        reason: String,
        /// Failed attempts since the session was lost.
        attempt: u32,
    },
    /// Another client registered as the same user and took the session over; this one
    /// stopped (registering again would take it back, and the two would fight for ever).
    Replaced,
    /// The session was lost and registering again failed as many times in a row as
    /// [`ChatClientConfig::max_reconnect_attempts`](crate::ChatClientConfig) allows; the client
    /// stopped.
    GaveUp {
        /// Why the last attempt failed.
        reason: String,
        /// How many attempts failed.
        attempts: u32,
    },
    /// The client was shut down.
    Closed,
}

impl ClientState {
    /// A one-word name: `connecting`, `online`, `reconnecting`, `replaced`, `gave-up` or
    /// `closed`.
    pub fn name(&self) -> &'static str {
        match self {
            ClientState::Connecting => "connecting",
            ClientState::Online { .. } => "online",
            ClientState::Reconnecting { .. } => "reconnecting",
            ClientState::Replaced => "replaced",
            ClientState::GaveUp { .. } => "gave-up",
            ClientState::Closed => "closed",
        }
    }

    /// Whether the client stopped for good (shut down, replaced by another client, or gave up
    /// reconnecting).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ClientState::Replaced | ClientState::GaveUp { .. } | ClientState::Closed
        )
    }

    /// Whether the client is online.
    pub fn is_online(&self) -> bool {
        matches!(self, ClientState::Online { .. })
    }
}

/// What [`ChatClient::send`](crate::ChatClient::send) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The message's id.
    pub id: Uuid,
    /// The recipient.
    pub to: UserInfo,
    /// How the message went: [`Path::Direct`] (peer to peer), [`Path::Relayed`] (through the
    /// server to an online user) or [`Path::Stored`] (kept for an offline user).
    pub path: Path,
    /// Why the direct path was not used, when it was tried and failed.
    pub direct_error: Option<String>,
}

/// How this client reaches a peer: what [`ChatClient::connect_peer`](crate::ChatClient::connect_peer)
/// found, or the last direct message to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    /// The peer.
    pub to: UserInfo,
    /// [`Path::Direct`] (peer to peer) or [`Path::Relayed`] (through the server).
    pub path: Path,
    /// The direct path's endpoint (`quic://ip:port`), when there is one.
    pub endpoint: Option<String>,
    /// How the direct path was found, or why messages go through the server.
    pub why: String,
    /// How long finding out took.
    pub took: std::time::Duration,
    /// Hole-punching datagrams (probes and spray packets) this client sent meanwhile.
    pub datagrams: u64,
}

/// Why a chat client operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The peer service could not listen where asked.
    #[error("could not serve the chat peer on {endpoint}: {reason}")]
    Listen {
        /// Where it tried to listen.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// The server refused the request.
    #[error("{0}")]
    Chat(#[from] ChatError),
    /// The call did not go through: no connection, connection lost, timeout, protocol error.
    #[error("{}", .0.report())]
    Rpc(RpcError),
    /// The client was not online within the call timeout (it is reconnecting).
    #[error("not online: {0}")]
    Offline(String),
    /// The request is not valid; nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// The client was shut down.
    #[error("the chat client is closed")]
    Closed,
}

impl From<RpcError<ChatError>> for ClientError {
    fn from(error: RpcError<ChatError>) -> Self {
        match error {
            RpcError::Application(e) => ClientError::Chat(e),
            other => ClientError::Rpc(other.map_application(|e| e.to_string())),
        }
    }
}

impl From<RpcError> for ClientError {
    fn from(error: RpcError) -> Self {
        ClientError::Rpc(error)
    }
}
