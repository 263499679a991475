//! The chat services' interfaces: the signaling server (`chat.Signal`) and the small service
//! every chat client serves for direct messages (`chat.Peer`).
//!
//! These definitions are the contract between the chat server, the chat client and anyone
//! writing another client: the types here are what travels on the wire. Both sides also quote
//! what users typed in their error messages the same way, with [`excerpt`].

mod excerpt;

pub use excerpt::{EXCERPT_CHARS, excerpt};
use rpc_core::{CallContext, ServerStream};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// The longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;

/// A user as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user's id, chosen by the user's device at its first registration.
    pub id: Uuid,
    /// The display name.
    pub name: String,
    /// Where the user's own chat peer says it listens (its private address), if it serves one.
    pub advertised: Option<String>,
    /// The address the server saw the user's connection come from (its public address).
    pub observed: String,
}

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's id.
    pub id: Uuid,
    /// The sender's display name when the message was sent.
    pub name: String,
}

/// What `register` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The user's id. The first registration of an id binds it to `secret`.
    pub id: Uuid,
    /// The display name; unique among online users.
    pub name: String,
    /// The secret that proves the id is yours on later registrations.
    pub secret: String,
    /// Where this user's chat peer (the `chat.Peer` service) listens, for direct messages.
    pub endpoint: Option<String>,
}

/// A registered session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Presents the session in every later call; secret to the user.
    pub token: String,
    /// The user as the server recorded them, with the observed (public) address.
    pub user: UserInfo,
    /// How often the client must call `heartbeat`, in milliseconds.
    pub heartbeat_ms: u64,
    /// After this long without a heartbeat the user is dropped (the presence lease's TTL), in
    /// milliseconds.
    pub presence_ttl_ms: u64,
}

/// One page of a list that grows with the users (who is online, the rooms, a room's members, a
/// room's history).
///
/// Ask for the first page with `after: None`, then for each next one with the `next` of the
/// page before, until `next` is `None`. A page holds at most the `limit` asked for (0: as many as
/// the server allows, which is also the most it gives whatever is asked) and stops before its
/// content passes the server's byte budget; it always holds at least one item when one is left.
/// Lists are in a fixed order and a cursor stands for the last item of its page, so items added
/// or removed while a client pages through do not make it miss or repeat the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Where the next page starts, to be passed back as `after` as it is (its content is the
    /// server's business); `None` on the last page.
    pub next: Option<String>,
}

/// A change in who is online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceEvent {
    /// Everyone online when the watch started, a page at a time (always the first events, in
    /// name order): the list is complete with the part whose `more` is false, and joins and
    /// leaves follow it. Sent again, from its first part, when a watcher fell too far behind.
    Online {
        /// Part of the list.
        users: Vec<UserInfo>,
        /// Whether more parts of the list follow.
        more: bool,
    },
    /// Someone came online (or registered again with new details).
    Joined(UserInfo),
    /// Someone left or stopped heartbeating.
    Left(UserInfo),
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Destination {
    /// One user, by id.
    User(Uuid),
    /// Every member of a room.
    Room(String),
}

/// How a message reached its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Path {
    /// Peer to peer, from the sender's client to the recipient's.
    Direct,
    /// Through the server to a recipient that was online.
    Relayed,
    /// Kept by the server while the recipient was offline, delivered when it came back.
    Stored,
    /// Posted in a room.
    Room,
}

/// A message as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Chosen by the sender; the same message delivered twice (by both paths, or again after a
    /// restart) has the same id, so receivers show it once.
    pub id: Uuid,
    /// Who sent it.
    pub from: Sender,
    /// Where it was sent.
    pub to: Destination,
    /// The text.
    pub text: String,
    /// When the sender sent it, in milliseconds since the Unix epoch (sender's clock).
    pub sent_at_ms: u64,
    /// How it arrived.
    pub path: Path,
}

/// Something that happened in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomEvent {
    /// A member joined.
    Joined {
        /// The room.
        room: String,
        /// Who joined.
        user: Sender,
    },
    /// A member left (or was dropped when their presence expired).
    Left {
        /// The room.
        room: String,
        /// Who left.
        user: Sender,
    },
}

/// What a client's inbox stream yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxItem {
    /// A message relayed by the server, stored for this user, or posted in a room. Relayed and
    /// stored messages must be acknowledged with `ack`; until then they are delivered again on
    /// every new inbox.
    Message(Envelope),
    /// A room membership change.
    Room(RoomEvent),
}

/// What happened to a relayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// The recipient is online: it was pushed to their inbox (and is kept until they ack it).
    Delivered,
    /// The recipient is offline: it is stored and will be delivered when they return.
    Stored,
}

/// A room: its name and how many members it has (the members themselves are listed by
/// `members`, a page at a time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// How many members it has.
    pub member_count: u32,
}

/// Why a chat call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChatError {
    /// The id is bound to another secret.
    #[error("wrong secret for user {0}")]
    WrongSecret(Uuid),
    /// The session token is unknown or expired: register again.
    #[error("no such session; register again")]
    NoSession,
    /// No user with that id or name is known (or online, for lookups by name).
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// The display name is taken by another online user.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// No room with that name.
    #[error("unknown room {0:?}")]
    UnknownRoom(String),
    /// The room already exists.
    #[error("room {0:?} already exists")]
    RoomExists(String),
    /// The caller is not a member of the room.
    #[error("not a member of room {0:?}")]
    NotAMember(String),
    /// The request broke a rule (empty or too long name or text, …).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The server's storage failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A per-user quota is used up (rooms created, rooms joined, messages waiting for one
    /// recipient); the message says which. Nothing was done.
    #[error("quota reached: {0}")]
    Quota(String),
    /// The server's storage failed with an I/O error (a full disk) and is being opened again:
    /// try again. A write in progress when it failed may or may not have been kept, so repeat
    /// `relay` and `post` with the same message id.
    #[error("storage unavailable, try again")]
    StorageUnavailable,
}

/// The signaling server: registration and presence, lookups, relay and store-and-forward, rooms.
#[rpc_core::service(name = "chat.Signal", version = "1")]
pub trait Signal {
    /// Registers a user (the first time binding the id to the secret) and opens a session. The
    /// server records the address it observed for this connection and returns it.
    async fn register(
        &self,
        ctx: CallContext,
        request: RegisterRequest,
    ) -> Result<Session, ChatError>;
    /// Keeps the session's presence alive; call it every `Session::heartbeat_ms`.
    #[rpc(idempotent)]
    async fn heartbeat(&self, token: String) -> Result<(), ChatError>;
    /// Ends the session at once: the user goes offline and leaves their rooms.
    async fn leave(&self, token: String) -> Result<(), ChatError>;
    /// One user, by id (as text) or display name; offline users are found by id only.
    #[rpc(idempotent)]
    async fn lookup(&self, token: String, user: String) -> Result<UserInfo, ChatError>;
    /// Who is online, a page at a time (see [`Page`]), by name then id.
    #[rpc(idempotent)]
    async fn online(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<UserInfo>, ChatError>;
    /// Who is online, then every join and leave.
    async fn presence(&self, token: String) -> ServerStream<PresenceEvent>;
    /// Sends a message through the server to one user: pushed if online, stored if not.
    /// Relaying the same message id to the same user again (within 24 hours) does not deliver
    /// it twice, so a relay whose answer was lost can be sent again.
    #[rpc(idempotent)]
    async fn relay(
        &self,
        token: String,
        id: Uuid,
        to: Uuid,
        text: String,
        sent_at_ms: u64,
    ) -> Result<Delivery, ChatError>;
    /// This user's messages: everything stored and not yet acknowledged (in order), then what
    /// arrives, then room events and posts. One inbox per session; a new one replaces the old.
    async fn inbox(&self, token: String) -> ServerStream<InboxItem>;
    /// Acknowledges messages: the server deletes them from storage.
    #[rpc(idempotent)]
    async fn ack(&self, token: String, ids: Vec<Uuid>) -> Result<(), ChatError>;
    /// Creates a room and joins it; the answer counts the caller among the members.
    async fn create_room(&self, token: String, room: String) -> Result<RoomInfo, ChatError>;
    /// Joins a room (created if it does not exist); members are told. The answer counts the
    /// caller among the members.
    async fn join(&self, token: String, room: String) -> Result<RoomInfo, ChatError>;
    /// Leaves a room; members are told.
    async fn leave_room(&self, token: String, room: String) -> Result<(), ChatError>;
    /// Every room, a page at a time (see [`Page`]), by name.
    #[rpc(idempotent)]
    async fn rooms(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<RoomInfo>, ChatError>;
    /// A room's members, a page at a time (see [`Page`]), by name then id.
    #[rpc(idempotent)]
    async fn members(
        &self,
        token: String,
        room: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Sender>, ChatError>;
    /// Posts in a room; every member online gets it in their inbox. The room keeps its last
    /// posts. Posting the same message id in the same room again (within 24 hours) does not
    /// post it twice, so a post whose answer was lost can be sent again.
    #[rpc(idempotent)]
    async fn post(
        &self,
        token: String,
        room: String,
        id: Uuid,
        text: String,
        sent_at_ms: u64,
    ) -> Result<(), ChatError>;
    /// The room's last posts, oldest first, a page at a time (see [`Page`]).
    #[rpc(idempotent)]
    async fn history(
        &self,
        token: String,
        room: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Envelope>, ChatError>;
}

/// Why a peer refused a direct message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// The message is addressed to someone else (the peer's address was reused).
    #[error("this peer is not user {0}")]
    WrongRecipient(Uuid),
    /// The message broke a rule.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// The service every chat client serves, for messages sent peer to peer.
#[rpc_core::service(name = "chat.Peer", version = "1")]
pub trait Peer {
    /// Delivers a direct message to this client's user.
    async fn deliver(&self, envelope: Envelope) -> Result<(), PeerError>;
    /// The user this peer serves.
    #[rpc(idempotent)]
    async fn whoami(&self) -> Uuid;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What chat servers sharing a registry and a store call on each other.
#[rpc_core::service(name = "chat.Node", version = "1")]
pub trait Node {
    /// Tells the server holding `user`'s session that their mailbox in the shared store has a
    /// new message, numbered `seq` in it: the server reads what is new from the store and
    /// pushes it to the user's open inbox. Answers whether it did: the message is in the store
    /// that server reads, and an inbox was open to take it. It carries no message, so a caller
    /// can make a server read what is already stored, and nothing else.
    #[rpc(idempotent)]
    async fn wake(&self, user: Uuid, seq: u64) -> bool;
    /// Pushes `item`, which is not stored (a room or friend event), to the open inboxes of
    /// those of `users` whose sessions this server holds; answers how many it reached.
    /// `node_secret` proves the caller is a chat server on the same store (every server reads
    /// it there): a call with another is refused with [`ChatError::Invalid`] and pushes nothing.
    async fn push(
        &self,
        node_secret: String,
        users: Vec<Uuid>,
        item: InboxItem,
    ) -> Result<u32, ChatError>;
}
