//! The chat services' interfaces: the signaling server (`chat.Signal`) and the small service
//! every chat client serves for direct messages (`chat.Peer`).
//!
//! These definitions are the contract between the chat server, the chat client and anyone
//! writing another client: the types here are what travels on the wire. Both sides also quote
//! what users typed in their error messages the same way, with [`excerpt`].

mod call;
mod excerpt;

pub use call::{
    CALL_ANSWER_SECS, CallEnd, CallEvent, CallMedia, CallPhase, IceCandidate, MAX_CANDIDATE_BYTES,
    MAX_SDP_BYTES, SdpKind,
};
pub use excerpt::{EXCERPT_CHARS, excerpt};
use rpc_core::{CallContext, ServerStream};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

/// The largest piece of a file sent peer to peer in one `file_chunk` call, in bytes (1 MiB).
pub const MAX_FILE_CHUNK: usize = 1 << 20;

/// The longest file name a peer offers, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
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
    /// The user's id. The first registration of an id makes the account: it binds the id to
    /// `secret` and reserves `name` to it.
    pub id: Uuid,
    /// The display name, reserved to this id for good (case and width folded): nobody else
    /// may register or be renamed to it, online or not. Registering the id again with another
    /// name that is free renames the account and frees the old name.
    pub name: String,
    /// The account's password: proves the id (or, with `login`, the name) is yours on later
    /// registrations. The server keeps only a slow hash of it (argon2id).
    pub secret: String,
    /// Where this user's chat peer (the `chat.Peer` service) listens, for direct messages.
    pub endpoint: Option<String>,
}

/// What `login` needs: the account's name and password instead of its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The account's name (as registered; case and width folded).
    pub name: String,
    /// The account's password (the `secret` it was registered with).
    pub password: String,
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
    /// The file the message carries, held by the server until the recipient downloads it
    /// (`download`) and acknowledges the message; `None` for a text message. Only the server
    /// sets it (see `upload_file`).
    pub file: Option<Attachment>,
}

/// A file sent through the server: what the message that carries it says about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's name, without any directory: at most [`MAX_FILE_NAME_BYTES`] bytes, no `/`,
    /// `\`, control character, nor `.` or `..` alone.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, as 64 lowercase hexadecimal digits.
    pub sha256: String,
}

/// Something that happened in a room, pushed to its members who are online (on any server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomEvent {
    /// A member joined (or was added by the owner).
    Joined {
        /// The room.
        room: String,
        /// Who joined.
        user: Sender,
    },
    /// A member left.
    Left {
        /// The room.
        room: String,
        /// Who left.
        user: Sender,
    },
    /// The owner removed a member (the removed user is told too).
    Removed {
        /// The room.
        room: String,
        /// Who was removed.
        user: Sender,
        /// The owner.
        by: Sender,
    },
    /// The caller was invited to the room (told to the invited user only).
    Invited {
        /// The room.
        room: String,
        /// The member who invited them.
        by: Sender,
    },
}

/// What a client's inbox stream yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxItem {
    /// A message relayed by the server, stored for this user, or posted in a room. Every one
    /// must be acknowledged with `ack`; until then it is delivered again on every new inbox.
    Message(Envelope),
    /// A room membership change.
    Room(RoomEvent),
    /// A change in the user's friends.
    Friend(FriendEvent),
    /// Call signaling: an invite, its answer, SDP and ICE from the other side, the end.
    Call(CallEvent),
    /// Another user's client wants a direct path to this one (or answers such a request): the
    /// addresses to probe. Not acknowledged, and not kept for an offline user.
    Punch(PunchRequest),
}

/// How many candidate addresses a [`PunchRequest`] may carry.
pub const MAX_PUNCH_CANDIDATES: usize = 8;

/// A step of opening a direct path through NATs (UDP hole punching): where the sender's peer
/// socket may be reached. The recipient of a request (`answer` false) sends probes to these
/// addresses from its own peer socket, which opens its NAT toward them, then answers with its
/// own candidates; the requester, on the answer, connects over QUIC to the first candidate
/// that answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchRequest {
    /// Who sent it (set by the server).
    pub from: Sender,
    /// The attempt, chosen by the requester; the answer carries it back.
    pub attempt: Uuid,
    /// `ip:port` addresses of the sender's peer socket: its own, and the one the server's
    /// STUN service saw (its NAT's mapping); at most [`MAX_PUNCH_CANDIDATES`].
    pub candidates: Vec<String>,
    /// Whether this answers a request (the recipient of an answer connects).
    pub answer: bool,
    /// What the sender reported about its NAT (`report_nat`), if anything (set by the
    /// server): a side behind an address-and-port-dependent mapping, facing one that filters
    /// by address and port, opens many mappings for the other to find by probing random ports.
    pub nat: Option<NatReport>,
}

/// What happened to a relayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// The recipient is online: it was pushed to their inbox (and is kept until they ack it).
    Delivered,
    /// The recipient is offline: it is stored and will be delivered when they return.
    Stored,
}

/// Who may join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Anyone may join (and `join` makes the room if it does not exist).
    Open,
    /// A group: only those its members invited, or its owner added, may join; outsiders do not
    /// see it listed.
    InviteOnly,
}

/// Where the caller stands in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Membership {
    /// The caller made the room: they may add and remove members.
    Owner,
    /// The caller is a member.
    Member,
    /// The caller is invited and may join.
    Invited,
    /// The caller is none of these.
    Outsider,
}

/// A room (a group of users; membership lasts until the member leaves or is removed): its
/// name, owner, access, how many members it has (the members themselves are listed by
/// `members`, a page at a time) and where the caller stands in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// How many members it has.
    pub member_count: u32,
    /// Who made it.
    pub owner: Uuid,
    /// Who may join.
    pub access: Access,
    /// Where the caller stands in it.
    pub membership: Membership,
}

/// Where two users stand with each other, as one of them sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FriendState {
    /// Both agreed.
    Friends,
    /// The caller asked; the other has not answered.
    RequestSent,
    /// The other asked the caller; accept with `accept_friend`, decline with `unfriend`.
    RequestReceived,
}

/// One of the caller's friends or friend requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Friend {
    /// The other user (their name as they last registered it).
    pub user: Sender,
    /// Where the two stand.
    pub state: FriendState,
    /// Whether the other user is online now (on any server).
    pub online: bool,
}

/// A change in the caller's friends, pushed to the inbox of the user it concerns when they are
/// online (offline, they find it in `friends` when they return).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FriendEvent {
    /// `from` asked to be friends.
    Requested {
        /// Who asked.
        from: Sender,
    },
    /// `by` accepted the caller's request: they are friends.
    Accepted {
        /// Who accepted.
        by: Sender,
    },
    /// `by` removed the friendship, withdrew their request or declined the caller's.
    Removed {
        /// Who removed it.
        by: Sender,
    },
}

/// How a NAT treats a device's UDP traffic, as RFC 5780 classifies its mapping (which public
/// address a private one gets) and its filtering (who may send to that public address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NatBehaviour {
    /// The same for every destination (mapping), or anyone may send (filtering): no NAT, or
    /// the friendliest kind.
    EndpointIndependent,
    /// Depends on the remote IP address only.
    AddressDependent,
    /// Depends on the remote IP address and port (a "symmetric" NAT's mapping).
    AddressAndPortDependent,
    /// Could not be told: the tests needed got no answer, or the server lacks what they need.
    Unknown,
}

/// What a device's identity key is signed over to bind it to a session: these bytes, then the
/// session's token (see [`DeviceKey`]).
pub const DEVICE_KEY_CONTEXT: &[u8] = b"dubbo-rs chat device key v1\n";

/// A device's identity key (ed25519; the key its direct QUIC connections are known by), and
/// the proof that the device holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    /// The 32-byte ed25519 public key.
    pub public: Vec<u8>,
    /// The 64-byte ed25519 signature, with that key, of [`DEVICE_KEY_CONTEXT`] followed by the
    /// session's token.
    pub proof: Vec<u8>,
}

/// What a client found out about its NAT with the server's STUN service (RFC 5780).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatReport {
    /// How the NAT maps the device's address to public ones.
    pub mapping: NatBehaviour,
    /// Which remote endpoints may reach the device through its public address.
    pub filtering: NatBehaviour,
    /// The device's public (server-reflexive) address as `ip:port`, if STUN answered.
    pub public: Option<String>,
}

/// A STUN or TURN server as a browser's `RTCIceServer` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// Its URLs, like `stun:host:port`.
    pub urls: Vec<String>,
    /// The user name, for a TURN server.
    pub username: Option<String>,
    /// The password, for a TURN server.
    pub credential: Option<String>,
}

/// Where clients meet to find out how they are reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendezvous {
    /// The server's STUN services, as `host:port` of their primary address (UDP); empty when it
    /// has none.
    pub stun: Vec<String>,
    /// The same for browsers (and any ICE agent).
    pub ice_servers: Vec<IceServer>,
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
    /// The display name is reserved to another account.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// `login` with a name that no account has, or with the wrong password (the two are not
    /// told apart).
    #[error("wrong name or password")]
    WrongLogin,
    /// No room with that name.
    #[error("unknown room {0:?}")]
    UnknownRoom(String),
    /// The room already exists.
    #[error("room {0:?} already exists")]
    RoomExists(String),
    /// The caller is not a member of the room.
    #[error("not a member of room {0:?}")]
    NotAMember(String),
    /// The room is invite-only and the caller was not invited.
    #[error("room {0:?} is invite-only; ask a member to invite you")]
    NotInvited(String),
    /// `accept_friend` without a request from that user to accept.
    #[error("no friend request from {0} to accept")]
    NoFriendRequest(String),
    /// Only the room's owner may do that.
    #[error("only the owner of room {0:?} may do that")]
    NotTheOwner(String),
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
    /// The user called is not online (on any server).
    #[error("user {0} is not online")]
    Offline(String),
    /// The call has ended, or never was, or the caller is not part of it.
    #[error("no such call {0}; it has ended")]
    NoSuchCall(Uuid),
    /// The server holds no such file for the caller: never uploaded, expired, or deleted once
    /// its recipient acknowledged it.
    #[error("no file {0} is held for you; it expired or was deleted")]
    NoSuchFile(Uuid),
}

/// The signaling server: registration and presence, lookups, relay and store-and-forward, rooms.
#[rpc_core::service(name = "chat.Signal", version = "2")]
pub trait Signal {
    /// Registers a user (the first time binding the id to the secret) and opens a session. The
    /// server records the address it observed for this connection and returns it.
    async fn register(
        &self,
        ctx: CallContext,
        request: RegisterRequest,
    ) -> Result<Session, ChatError>;
    /// Opens a session on an existing account by its name and password, like `register` with
    /// the account's id and secret.
    async fn login(&self, ctx: CallContext, request: LoginRequest) -> Result<Session, ChatError>;
    /// Keeps the session's presence alive; call it every `Session::heartbeat_ms`.
    #[rpc(idempotent)]
    async fn heartbeat(&self, token: String) -> Result<(), ChatError>;
    /// Ends the session at once: the user goes offline (and stays a member of their rooms).
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
    /// Creates a room owned by the caller, open or invite-only (a group), and joins it; the
    /// answer counts the caller among the members.
    async fn create_room(
        &self,
        token: String,
        room: String,
        access: Access,
    ) -> Result<RoomInfo, ChatError>;
    /// Joins a room: an open one (made, open and owned by the caller, if it does not exist), or
    /// an invite-only one the caller was invited to. Members are told. Membership lasts across
    /// sessions until the member leaves. The answer counts the caller among the members.
    async fn join(&self, token: String, room: String) -> Result<RoomInfo, ChatError>;
    /// Leaves a room for good; members are told.
    async fn leave_room(&self, token: String, room: String) -> Result<(), ChatError>;
    /// Invites a user to a room the caller is a member of; the user is told (when online) and
    /// may then `join`. Inviting a member or an invited user again changes nothing.
    async fn invite(&self, token: String, room: String, user: Uuid) -> Result<(), ChatError>;
    /// Adds a user to the caller's room at once (the owner only); members and the user are told.
    async fn add_member(&self, token: String, room: String, user: Uuid) -> Result<(), ChatError>;
    /// Removes a member from the caller's room (the owner only); members and the user are told.
    async fn remove_member(&self, token: String, room: String, user: Uuid)
    -> Result<(), ChatError>;
    /// The rooms the caller owns, is a member of, or is invited to, a page at a time (see
    /// [`Page`]), by name.
    #[rpc(idempotent)]
    async fn my_rooms(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<RoomInfo>, ChatError>;
    /// Every open room and the invite-only rooms the caller belongs to, a page at a time (see
    /// [`Page`]), by name.
    #[rpc(idempotent)]
    async fn rooms(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<RoomInfo>, ChatError>;
    /// A room's members, a page at a time (see [`Page`]), by name then id; members only.
    #[rpc(idempotent)]
    async fn members(
        &self,
        token: String,
        room: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Sender>, ChatError>;
    /// Posts in a room (members only). Every member gets it in their inbox: at once if online
    /// (on any server), else when they return, like a relayed message (it is acknowledged with
    /// `ack`). The room keeps its last posts. Posting the same message id in the same room
    /// again (within 24 hours) does not post it twice, so a post whose answer was lost can be
    /// sent again.
    #[rpc(idempotent)]
    async fn post(
        &self,
        token: String,
        room: String,
        id: Uuid,
        text: String,
        sent_at_ms: u64,
    ) -> Result<(), ChatError>;
    /// The room's last posts, oldest first, a page at a time (see [`Page`]); members only.
    #[rpc(idempotent)]
    async fn history(
        &self,
        token: String,
        room: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Envelope>, ChatError>;
    /// Asks a user to be friends; they are told. If they had asked the caller already, the two
    /// are friends at once (the answer says which). Asking again changes nothing.
    async fn request_friend(&self, token: String, user: Uuid) -> Result<FriendState, ChatError>;
    /// Accepts a user's friend request; they are told.
    async fn accept_friend(&self, token: String, user: Uuid) -> Result<(), ChatError>;
    /// Ends a friendship, withdraws the caller's request, or declines the other's; they are
    /// told. Idempotent: nothing to remove is not an error.
    #[rpc(idempotent)]
    async fn unfriend(&self, token: String, user: Uuid) -> Result<(), ChatError>;
    /// The caller's friends and friend requests, a page at a time (see [`Page`]), by name then
    /// id, each with whether the other is online.
    #[rpc(idempotent)]
    async fn friends(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Friend>, ChatError>;
    /// Calls a user who is online: every device of theirs gets [`CallEvent::Incoming`]. The
    /// answer is the call's id. Unanswered after [`CALL_ANSWER_SECS`], the call ends as
    /// [`CallEnd::Missed`] for both.
    async fn call(
        &self,
        token: String,
        user: Uuid,
        media: Vec<CallMedia>,
    ) -> Result<Uuid, ChatError>;
    /// Tells the caller that this device of the callee rings.
    #[rpc(idempotent)]
    async fn ringing(&self, token: String, call: Uuid) -> Result<(), ChatError>;
    /// Accepts a call (the callee); both sides are told, and may exchange SDP and ICE.
    #[rpc(idempotent)]
    async fn accept_call(&self, token: String, call: Uuid) -> Result<(), ChatError>;
    /// Declines a call (the callee), as busy or not; it ends for both.
    async fn reject_call(&self, token: String, call: Uuid, busy: bool) -> Result<(), ChatError>;
    /// Ends a call: before it is accepted the caller cancels it (and the callee declines it),
    /// after it, either side hangs up. Both are told.
    async fn hang_up(&self, token: String, call: Uuid) -> Result<(), ChatError>;
    /// Sends an SDP offer or answer to the other side of the call.
    async fn send_sdp(
        &self,
        token: String,
        call: Uuid,
        kind: SdpKind,
        sdp: String,
    ) -> Result<(), ChatError>;
    /// Sends an ICE candidate to the other side of the call.
    async fn send_ice(
        &self,
        token: String,
        call: Uuid,
        candidate: IceCandidate,
    ) -> Result<(), ChatError>;
    /// Passes a hole-punching request (or its answer) with the caller's candidate addresses to
    /// an online user (by id), on whichever server holds their session: see [`PunchRequest`].
    async fn punch(
        &self,
        token: String,
        to: Uuid,
        attempt: Uuid,
        candidates: Vec<String>,
        answer: bool,
    ) -> Result<(), ChatError>;
    /// Where this server's STUN service is (RFC 8489 and RFC 5780 over UDP), for clients to
    /// learn their public address and their NAT's behaviour; needs no session.
    #[rpc(idempotent)]
    async fn rendezvous(&self) -> Rendezvous;
    /// Records what the caller found out about its NAT, with its session (until it ends), for
    /// other users to see with `nat_of`.
    #[rpc(idempotent)]
    async fn report_nat(&self, token: String, report: NatReport) -> Result<(), ChatError>;
    /// What an online user (by id as text, or display name) reported about their NAT; `None`
    /// when they reported nothing.
    #[rpc(idempotent)]
    async fn nat_of(&self, token: String, user: String) -> Result<Option<NatReport>, ChatError>;
    /// Binds this device's identity key to the session (until it ends): peers that connect
    /// to the device directly pin it. The proof must be the key's signature of
    /// [`DEVICE_KEY_CONTEXT`] and the token, or the call is refused with `Invalid`.
    #[rpc(idempotent)]
    async fn bind_device_key(&self, token: String, key: DeviceKey) -> Result<(), ChatError>;
    /// The identity key (32 bytes) of the device an online user (by id as text, or display
    /// name) is signed in on; `None` when it bound none.
    #[rpc(idempotent)]
    async fn device_key_of(
        &self,
        token: String,
        user: String,
    ) -> Result<Option<Vec<u8>>, ChatError>;

    /// Starts sending a file through the server to a user, online or not, or resumes an
    /// upload: the transfer's `id` is the id of the message that will carry it, chosen by the
    /// sender. The answer is how many of its bytes the server holds already (0 for a new
    /// upload). Refused with `Quota` when the file is larger than the server holds, or would
    /// take the recipient past the bytes held for one user; with `Invalid` when `id` is
    /// another upload.
    #[rpc(idempotent)]
    async fn upload_file(
        &self,
        token: String,
        id: Uuid,
        to: Uuid,
        file: Attachment,
    ) -> Result<u64, ChatError>;

    /// The file's bytes from `offset`, which must be where the server's copy ends (what
    /// `upload_file` answered, plus what was sent since); at most [`MAX_FILE_CHUNK`] bytes.
    async fn upload_chunk(
        &self,
        token: String,
        id: Uuid,
        offset: u64,
        data: bytes::Bytes,
    ) -> Result<(), ChatError>;

    /// Ends an upload whose bytes have all arrived: the server checks the hash (`Invalid`,
    /// and the copy deleted, when it differs), then relays the message that carries the file
    /// ([`Envelope::file`]) like `relay`. Finishing it again relays nothing more.
    #[rpc(idempotent)]
    async fn finish_upload(
        &self,
        token: String,
        id: Uuid,
        sent_at_ms: u64,
    ) -> Result<Delivery, ChatError>;

    /// Bytes of a file held for the caller (the id of the message that carries it), from
    /// `offset`: at most `limit` (0, or more than [`MAX_FILE_CHUNK`]: [`MAX_FILE_CHUNK`]), and
    /// fewer where the server's pieces end; empty at the end. Acknowledging the message
    /// (`ack`) deletes the file.
    #[rpc(idempotent)]
    async fn download(
        &self,
        token: String,
        id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<bytes::Bytes, ChatError>;
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
    /// The connection did not prove the sender's device key: not QUIC, no key, or not the key
    /// the server has for the user the envelope names.
    #[error("sender not authenticated: {0}")]
    Unauthenticated(String),
    /// The recipient does not take this file: too large, or no room for it.
    #[error("refused: {0}")]
    Refused(String),
    /// The recipient could not store what it received (its disk is full, say).
    #[error("the recipient could not store the file: {0}")]
    Storage(String),
}

/// A file a peer offers to send directly: `offer_file`, then `file_chunk` from the offset the
/// answer gives, then `finish_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    /// The transfer, chosen by the sender; offering it again resumes it.
    pub id: Uuid,
    /// The sender, whose device key the connection must prove.
    pub from: Sender,
    /// The file's name, without any directory: at most [`MAX_FILE_NAME_BYTES`] bytes, no `/`,
    /// `\`, control character, nor `.` or `..` alone.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, as 64 lowercase hexadecimal digits: the recipient keeps the file only if
    /// what it received has this hash.
    pub sha256: String,
}

/// The service every chat client serves, for messages and files sent peer to peer, over
/// `quic://` connections on which both ends prove their device keys.
#[rpc_core::service(name = "chat.Peer", version = "1")]
pub trait Peer {
    /// Delivers a direct message to this client's user, from the user whose device key the
    /// connection proved.
    async fn deliver(
        &self,
        ctx: rpc_core::CallContext,
        envelope: Envelope,
    ) -> Result<(), PeerError>;
    /// The user this peer serves.
    #[rpc(idempotent)]
    async fn whoami(&self) -> Uuid;
    /// Offers a file; the answer is how many of its bytes the recipient holds already (0 for
    /// a new transfer, more when an interrupted one resumes, its size when it is complete).
    /// `Refused` when the recipient takes no such file (too large, no room for it).
    #[rpc(idempotent)]
    async fn offer_file(
        &self,
        ctx: rpc_core::CallContext,
        offer: FileOffer,
    ) -> Result<u64, PeerError>;
    /// The file's bytes from `offset`, which must be where the recipient's copy ends; at most
    /// [`MAX_FILE_CHUNK`] bytes, from the device that offered it.
    async fn file_chunk(
        &self,
        ctx: rpc_core::CallContext,
        id: Uuid,
        offset: u64,
        data: bytes::Bytes,
    ) -> Result<(), PeerError>;
    /// Ends a transfer whose bytes have all arrived: the recipient checks the hash and keeps
    /// the file under its name (`Invalid`, and the copy deleted, when the hash differs).
    #[rpc(idempotent)]
    async fn finish_file(&self, ctx: rpc_core::CallContext, id: Uuid) -> Result<(), PeerError>;
}

/// Whether `name` may name a file sent to someone (peer to peer, or held by the server): no
/// directory, nothing that escapes the recipient's files directory.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(format!(
            "a file name is at most {MAX_FILE_NAME_BYTES} bytes, not {}",
            name.len()
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(format!(
            "a file name has no directory nor control characters: {:?}",
            excerpt(name)
        ));
    }
    Ok(())
}

/// A SHA-256 written as 64 hexadecimal digits, as bytes.
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let bad = || format!("a SHA-256 is 64 hexadecimal digits, not {:?}", excerpt(hex));
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(hash)
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
