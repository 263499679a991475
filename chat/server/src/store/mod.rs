//! The chat server's durable state: accounts (the password hash each user id is bound to, and
//! the names reserved to them), friends, the messages waiting for their recipient's
//! acknowledgement, and rooms: their owner and access, their members and invitations, and their
//! last posts.
//!
//! The store is the authority on rooms for every server sharing it: joins, leaves, invitations
//! and posts are each one atomic operation that checks the rules and quotas and makes the
//! change. A post is added to the room's history and, in the same transaction, to the mailbox
//! of every member, under each mailbox's next sequence number and idempotently by message id,
//! like a relay: members offline read it when they return and acknowledge it. A member whose
//! mailbox is full does not get that copy (the post stays in the history). Per room, posts are
//! ordered by the store (redb has one writer; PostgreSQL locks the room's group row), so every
//! member's mailbox has a room's posts in the order of its history.
//!
//! [`Store`] is what the server asks of it; every backend keeps the same contract, which one
//! conformance suite checks (`chat/server/tests/store_conformance.rs`). The backend:
//!
//! - [`RedbStore`], the default: one embedded [redb] file, for a single server.
//! - [`PgStore`]: a PostgreSQL database, which several servers can share, so that a user's
//!   messages survive the loss of any server and reach them wherever they reconnect.
//!
//! # The redb backend
//!
//! Why redb: it is pure Rust (no C toolchain, unlike SQLite), one file, ACID with a
//! copy-on-write B-tree whose commits are durable (fsync) by default, so a message whose relay
//! returned survives a `kill -9` of the server.
//!
//! ```text
//! table           key                               value
//! accounts        user id (u128)                    postcard(StoredUser): name, credential
//! names           folded name (name_key)            user id (u128), reserved for good
//! friends         (user id, other id)               where the user stands (0 friends,
//!                                                   1 request sent, 2 request received)
//! mailboxes       recipient id (u128)               (last sequence number, pending count)
//! pending         (recipient id, sequence)          postcard(Envelope)
//! message_ids     (recipient id, message id)        (sequence, or 0 once acknowledged; ms)
//! rooms           room name                         created at (ms since the epoch)
//! rooms_created   user id (u128)                    how many rooms the user created
//! room_groups     room name                         (owner, access, member count, next join no.)
//! room_members    (room name, user id)              join number (lower: longer-standing)
//! user_rooms      (user id, room name)              1: member, 2: invited
//! rooms_joined    user id (u128)                    how many rooms the user is a member of
//! room_posts      (room name, post number)          postcard(Envelope), the last N per room
//! room_post_ids   (room name, message id)           (post number, ms)
//! meta            key                               value (the node secret)
//! files           file id (u128)                    postcard(HeldFile): sender, recipient,
//!                                                   name, size, hash, bytes received, time
//! file_pieces     (file id, offset)                 the bytes of one upload chunk
//! files_held      recipient id (u128)               declared sizes of their files, summed
//! ```
//!
//! A file sent through the server is held under the id of the message that carries it, one
//! piece per upload chunk, until its recipient acknowledges that message (which deletes it in
//! the same transaction) or it expires.
//!
//! A friendship or request is two rows, one each way, written together. A credential is an
//! argon2id PHC string the server made; the store keeps it as given and never verifies.
//!
//! Databases of the format before accounts, with a table `users` of postcard(name, salt,
//! SHA-256), are migrated when opened: each user moves to `accounts` with the credential
//! `$chat-sha256$<salt>$<hash>` (hex), which the server verifies once and replaces with an
//! argon2id hash, and their name is reserved to them unless a user of the same folded name,
//! earlier in id order, has it; then `users` is deleted, in the same transaction.
//!
//! Every write goes through one writer thread that commits whatever is queued in one
//! transaction (group commit): under load many relays share one fsync, and each caller is
//! answered only after the commit that holds its write. Reads run on Tokio's blocking pool in
//! their own read transactions, concurrently with the writer. After an I/O error (a full disk)
//! the store opens its database again by itself, and answers [`StoreError::Unavailable`] until
//! it has.
//!
//! # The PostgreSQL backend
//!
//! The same records in tables created on connect (envelopes are postcard bytes, as in redb):
//!
//! ```text
//! table               primary key                  columns
//! chat_users          id                           name, credential
//! chat_names          key (folded name)            id
//! chat_friends        (user_id, other)             state (as in redb)
//! chat_mailboxes      recipient                    last_seq, pending
//! chat_pending        (recipient, seq)             envelope
//! chat_message_ids    (recipient, message_id)      seq (0 once acknowledged), at_ms
//! chat_rooms          name                         created_at_ms
//! chat_rooms_created  creator                      made
//! chat_room_groups    room                         owner, invite_only, member_count, next_join
//! chat_room_members   (room, member)               joined (join number)
//! chat_room_invites   (invitee, room)
//! chat_rooms_joined   member                       joined (how many rooms)
//! chat_room_heads     room                         last_number
//! chat_room_posts     (room, number)               envelope
//! chat_room_post_ids  (room, message_id)           number, at_ms
//! chat_meta           key                          value (the node secret)
//! chat_files          id                           sender, recipient, record (postcard
//!                                                  HeldFile), size, received, touched_ms
//! chat_file_pieces    (file_id, start)             data (deleted with their file)
//! chat_files_held     recipient                    held (declared sizes, summed)
//! ```
//!
//! A `chat_users` of the format before accounts (columns `salt` and `hash`) is migrated when a
//! server connects, under the schema lock, as in redb: a `credential` column takes the legacy
//! credential, names are reserved, and the old columns are dropped.

mod embedded;
mod engine;
mod error;
mod postgres;
mod tables;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use chat_api::{Access, Attachment, Envelope, FriendState, Membership, Page, Sender};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::embedded::RedbStore;
pub use self::error::StoreError;
pub use self::postgres::PgStore;
use crate::page::PageLimits;

/// The outcome of [`Store::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The id was new: it is now bound to the credential, and its name reserved to it.
    Created,
    /// The account is updated: its name (the old name freed if the new one differs) and its
    /// credential.
    Updated,
    /// The name is reserved to another id; nothing was changed.
    NameTaken,
    /// The id's credential is not the one expected (the id was bound, or its credential
    /// changed, since it was read); nothing was changed: read it again.
    Stale,
}

/// Where `user` stands with the other of a stored pair, as stored (one byte; one row each way).
fn friend_state_code(state: FriendState) -> u8 {
    match state {
        FriendState::Friends => 0,
        FriendState::RequestSent => 1,
        FriendState::RequestReceived => 2,
    }
}

fn friend_state(code: u8) -> Result<FriendState, StoreError> {
    match code {
        0 => Ok(FriendState::Friends),
        1 => Ok(FriendState::RequestSent),
        2 => Ok(FriendState::RequestReceived),
        other => Err(StoreError::Record(format!("friend state {other}"))),
    }
}

/// The outcome of [`Store::relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// Stored under this sequence number of the recipient's mailbox.
    Stored {
        /// The message's place in the recipient's mailbox; increases with every message.
        seq: u64,
    },
    /// A message with this id was already relayed to this recipient; nothing was stored.
    Duplicate {
        /// Whether the recipient has acknowledged it already.
        acknowledged: bool,
    },
    /// Nobody ever registered the recipient's id.
    UnknownRecipient,
    /// The recipient has too many unacknowledged messages.
    MailboxFull,
}

/// A file sent through the server, held for its recipient until they acknowledge the message
/// that carries it (its id is the message's) or it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFile {
    /// Who sends it.
    pub from: Sender,
    /// Who it is for.
    pub to: Uuid,
    /// Its name, size and hash, as the sender declared them.
    pub file: Attachment,
    /// How many of its bytes have arrived, from the start.
    pub received: u64,
    /// When it was begun or last written, in milliseconds since the Unix epoch: it expires so
    /// long after (see [`Store::expire_files`]).
    pub touched_ms: u64,
}

/// The outcome of [`Store::begin_file`]. Only a new [`FileBegun::Held`] changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileBegun {
    /// The file is held (new, or begun before with the same sender, recipient, size and
    /// hash): this many of its bytes have arrived.
    Held {
        /// Bytes held, from the start.
        received: u64,
    },
    /// Another file has this id (another sender, recipient, size or hash); nothing was
    /// changed.
    OtherFile,
    /// Nobody ever registered the recipient's id.
    UnknownRecipient,
    /// The recipient's files would pass the quota; nothing was changed.
    QuotaReached {
        /// The bytes of the files held for the recipient now (their declared sizes).
        held: u64,
    },
}

/// The outcome of [`Store::append_file`]. Only [`FileAppended::Appended`] changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAppended {
    /// The bytes are kept: this many of the file's have arrived.
    Appended {
        /// Bytes held, from the start.
        received: u64,
    },
    /// No file with this id is held from this sender.
    UnknownFile,
    /// The bytes do not start where the held ones end (at `received`), or would pass the
    /// declared size.
    WrongOffset {
        /// Bytes held, from the start.
        received: u64,
    },
}

/// The limits a change of a room's membership is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomQuotas {
    /// How many rooms one user may make, ever.
    pub max_created: u64,
    /// How many rooms one user may be a member of at once.
    pub max_joined: u64,
    /// How many members one room may have.
    pub max_members: u64,
}

/// How a user comes into a room (see [`Store::join_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The user makes the room with this access and owns it; [`Joined::Exists`] if it exists.
    Create(Access),
    /// The user joins: an open room (made, open and owned by them, if it does not exist), an
    /// invite-only one they were invited to (the invitation is used up), or one they own.
    Join,
    /// This user, who must be the room's owner, adds the user.
    AddedBy(Uuid),
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// Its name.
    pub name: String,
    /// Who owns it: its maker, or the member who took over when the owner left. Rooms made
    /// before rooms had owners have the nil id.
    pub owner: Uuid,
    /// Who may join.
    pub access: Access,
    /// How many members it has.
    pub member_count: u64,
}

impl StoredRoom {
    /// Where `user` stands in the room, given whether they are a member and are invited.
    pub fn membership(&self, user: Uuid, member: bool, invited: bool) -> Membership {
        if member && self.owner == user {
            Membership::Owner
        } else if member {
            Membership::Member
        } else if invited {
            Membership::Invited
        } else {
            Membership::Outsider
        }
    }
}

/// The outcome of [`Store::join_room`]. Only [`Joined::Joined`] changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The user is now a member (`created`: of the room they just made).
    Joined {
        /// The room, counting the user.
        room: StoredRoom,
        /// Whether the room was made by this call.
        created: bool,
    },
    /// The user was a member already.
    AlreadyMember(StoredRoom),
    /// [`Admission::Create`] of a room that exists.
    Exists,
    /// [`Admission::AddedBy`] into a room that does not exist.
    UnknownRoom,
    /// The user to add was never bound.
    UnknownUser,
    /// The room is invite-only and the user was not invited.
    NotInvited,
    /// [`Admission::AddedBy`] someone other than the owner.
    NotTheOwner,
    /// The user has made as many rooms as allowed.
    TooManyCreated,
    /// The user is in as many rooms as allowed.
    TooManyJoined,
    /// The room has as many members as allowed.
    RoomFull,
}

/// The outcome of [`Store::leave_room`]. Only [`Left::Left`] changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The user is no longer a member.
    Left {
        /// The room, without the user (and with its new owner, if the owner left).
        room: StoredRoom,
    },
    /// No such room.
    UnknownRoom,
    /// The user is not a member.
    NotAMember,
    /// The removal was asked by someone other than the owner.
    NotTheOwner,
}

/// The outcome of [`Store::invite`]. Only [`Invited::Invited`] changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invited {
    /// The user is invited.
    Invited(StoredRoom),
    /// The user is a member or invited already.
    AlreadyIn,
    /// No such room.
    UnknownRoom,
    /// The one inviting is not a member.
    NotAMember,
    /// The user to invite was never bound.
    UnknownUser,
}

/// The outcome of [`Store::post`]. Only [`Posted::Posted`] changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The post is in the room's history and in the mailboxes of these members, with its
    /// sequence number in each (a member whose mailbox was full, or who had a message with
    /// the same id, is not listed: they find the post in the history).
    Posted {
        /// (member, sequence number in their mailbox), in member id order.
        delivered: Vec<(Uuid, u64)>,
    },
    /// A post with this id was made in the room before; nothing was stored.
    Duplicate,
    /// No such room.
    UnknownRoom,
    /// The poster is not a member.
    NotAMember,
}

/// One room of a list, with where the user who asked stands in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRoom {
    /// The room.
    pub room: StoredRoom,
    /// Where the user who asked stands.
    pub membership: Membership,
}

/// Which rooms [`Store::room_list`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomFilter {
    /// The open rooms and the invite-only rooms the user is a member of.
    Visible,
    /// The rooms the user is a member of or invited to.
    Mine,
}

/// Part of what a user's mailbox holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// Unacknowledged messages with their sequence numbers, in order: those asked for.
    pub messages: Vec<(u64, Envelope)>,
    /// The highest sequence number ever given in this mailbox, when it was read: every message
    /// up to it is either unacknowledged (and listed from the start, a page at a time) or
    /// acknowledged.
    pub last_seq: u64,
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The display name the user last registered with (reserved to them, folded, in the names
    /// table).
    pub name: String,
    /// What proves the password: an argon2id PHC string, or the salted SHA-256 of the store
    /// format before accounts (`$chat-sha256$<salt>$<hash>`, in hex) until its user next signs
    /// in. The store keeps it as it is given.
    pub credential: String,
}

/// The outcome of [`Store::request_friend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendRequested {
    /// The request is recorded.
    Requested,
    /// The other had asked already: the two are friends now.
    Accepted,
    /// The two stood so already (friends, or a request sent); nothing was changed.
    Unchanged(FriendState),
    /// Nobody ever registered the other id.
    UnknownUser,
    /// One of the two has as many friends and requests as allowed; nothing was changed.
    QuotaReached {
        /// Whether it is the one asking.
        requester: bool,
    },
}

/// The outcome of [`Store::accept_friend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendAccepted {
    /// The request is accepted: the two are friends.
    Accepted,
    /// They were friends already; nothing was changed.
    AlreadyFriends,
    /// There is no request from the other to accept; nothing was changed.
    NoRequest,
}

/// The chat server's durable state, whatever keeps it.
///
/// Every operation is atomic: it is wholly done or not at all. One that returned `Ok` is
/// durable (it survives a crash of the server, and [`Store::close`] and opening the store
/// again). [`StoreError::Unavailable`] means the backend cannot serve for now (an I/O error,
/// a lost connection) and will try to recover by itself: the operation may or may not have
/// been done, and may be tried again (relays and posts are idempotent by message id).
#[async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Makes or updates the account of `id`, if its credential is still `expected` (`None`: the
    /// id has no account yet): records `name`, reserving its folded form (the server's
    /// `name_key`) to `id` and freeing the name it had, and stores `credential`. Refused
    /// ([`Binding::NameTaken`]) if another id holds the name, which is reserved for good.
    /// Checking the password is the caller's business: it reads the credential, verifies, and
    /// passes it back as `expected`, so that a credential changed meanwhile is not overwritten.
    async fn bind(
        &self,
        id: Uuid,
        name: &str,
        credential: &str,
        expected: Option<&str>,
    ) -> Result<Binding, StoreError>;

    /// The account of `id`, if it was ever registered.
    async fn user(&self, id: Uuid) -> Result<Option<StoredUser>, StoreError>;

    /// The account whose name is `name` (folded), with its id.
    async fn user_by_name(&self, name: &str) -> Result<Option<(Uuid, StoredUser)>, StoreError>;

    /// Asks for `from` to be friends with `to`: a request, unless `to` had asked `from`
    /// already (then they are friends at once). Refused if `to` never registered, or either
    /// has `max` friends and requests already (the pair counts once for each of them).
    async fn request_friend(
        &self,
        from: Uuid,
        to: Uuid,
        max: u64,
    ) -> Result<FriendRequested, StoreError>;

    /// Accepts the request of `from` to `user`.
    async fn accept_friend(&self, user: Uuid, from: Uuid) -> Result<FriendAccepted, StoreError>;

    /// Ends whatever stands between `user` and `other` (friendship or a request either way);
    /// returns where `user` stood, or `None` if nothing did.
    async fn unfriend(&self, user: Uuid, other: Uuid) -> Result<Option<FriendState>, StoreError>;

    /// Every friend and friend request of `user`, in no order, each with the other's name as
    /// they last registered it. At most the quota given to [`Store::request_friend`].
    async fn friends(&self, user: Uuid) -> Result<Vec<(Sender, FriendState)>, StoreError>;

    /// Stores `envelope` in the mailbox of `to` under the next sequence number, unless `to` was
    /// never bound, a message with the same id is already there (or was acknowledged, and its
    /// id not yet forgotten), or the mailbox holds `max_pending` messages.
    async fn relay(
        &self,
        to: Uuid,
        envelope: &Envelope,
        max_pending: u64,
    ) -> Result<Relayed, StoreError>;

    /// The first `limit` messages waiting in the mailbox of `user` after sequence number `after`
    /// (0: from the first), in order, with the highest sequence number ever given there.
    async fn mailbox(&self, user: Uuid, after: u64, limit: usize) -> Result<Mailbox, StoreError>;

    /// Deletes the acknowledged messages of `user` by id, and the files held for `user` under
    /// those ids; returns how many messages were waiting. Ids that are unknown or acknowledged
    /// already are ignored.
    async fn ack(&self, user: Uuid, ids: &[Uuid]) -> Result<usize, StoreError>;

    /// Forgets the ids of acknowledged messages and of room posts older than `max_age_ms`: a
    /// message relayed or posted again after that is delivered again. Returns how many were
    /// forgotten.
    async fn forget_old_ids(&self, max_age_ms: u64) -> Result<u64, StoreError>;

    /// Brings `user` into `room` as `how` says, within `quotas`: atomically checks the rules
    /// (see [`Admission`]), the user's rooms made and joined and the room's members, and
    /// records the membership (and the room, when it is made).
    async fn join_room(
        &self,
        room: &str,
        user: Uuid,
        how: Admission,
        quotas: RoomQuotas,
    ) -> Result<Joined, StoreError>;

    /// Takes `user` out of `room`: they leave (`by` is `None`) or are removed by `by`, who
    /// must be the owner. When the owner goes while members remain, the longest-standing
    /// member owns the room; the last member leaving keeps the room, empty, with its owner
    /// (who may join it again).
    async fn leave_room(
        &self,
        room: &str,
        user: Uuid,
        by: Option<Uuid>,
    ) -> Result<Left, StoreError>;

    /// Invites `user` to `room` on behalf of `by`, who must be a member.
    async fn invite(&self, room: &str, by: Uuid, user: Uuid) -> Result<Invited, StoreError>;

    /// A room, and where `user` stands in it; `None` if there is no such room.
    async fn room(&self, room: &str, user: Uuid) -> Result<Option<ListedRoom>, StoreError>;

    /// Up to `limit` rooms after the name `after` (from the first for `None`), by name in byte
    /// order, that `filter` lets `user` see.
    async fn room_list(
        &self,
        user: Uuid,
        filter: RoomFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ListedRoom>, StoreError>;

    /// Every member of a room, each with their name as last registered, in id order.
    async fn members(&self, room: &str) -> Result<Vec<Sender>, StoreError>;

    /// Every room ever created, by name, in byte order.
    async fn rooms(&self) -> Result<Vec<String>, StoreError>;

    /// Posts in a room on behalf of `from`, who must be a member: in one transaction, adds the
    /// post to the room's history (keeping the last `keep`) and to the mailbox of every member
    /// (the poster too), as [`Store::relay`] would with `max_pending`. Nothing is stored if a
    /// post with the same id was made in the room before (and its id not yet forgotten, see
    /// [`Store::forget_old_ids`]), even if it is no longer kept. Every member's mailbox gets
    /// the room's posts in the order of its history.
    async fn post(
        &self,
        room: &str,
        from: Uuid,
        envelope: &Envelope,
        keep: usize,
        max_pending: u64,
    ) -> Result<Posted, StoreError>;

    /// A page of a room's kept posts, oldest first: those numbered after `after` (0: from the
    /// first kept). The next page's cursor is the number of the page's last post, in decimal.
    async fn history(
        &self,
        room: &str,
        after: u64,
        limits: PageLimits,
    ) -> Result<Page<Envelope>, StoreError>;

    /// Holds a file `file.from` sends to `file.to` under `id` (with `received` 0), or finds
    /// the one begun before under `id` with the same sender, recipient, size and hash: refused
    /// if the recipient never registered, or if the declared sizes of the files held for them
    /// would pass `quota` bytes.
    async fn begin_file(
        &self,
        id: Uuid,
        file: &HeldFile,
        quota: u64,
    ) -> Result<FileBegun, StoreError>;

    /// Adds `data` to the file `id` that `from` sends, at `offset`, which must be where its
    /// held bytes end; the total may not pass the declared size.
    async fn append_file(
        &self,
        id: Uuid,
        from: Uuid,
        offset: u64,
        data: Bytes,
    ) -> Result<FileAppended, StoreError>;

    /// The file held under `id`, whoever it is from or for.
    async fn held_file(&self, id: Uuid) -> Result<Option<HeldFile>, StoreError>;

    /// Up to `max` bytes of the file `id` from `offset` (fewer when its bytes are stored in
    /// pieces: up to the end of the piece that holds `offset`; empty at or past the end of the
    /// bytes held). `None` when no file has this id.
    async fn read_file(
        &self,
        id: Uuid,
        offset: u64,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError>;

    /// Deletes the file `id` and its bytes; returns whether there was one.
    async fn delete_file(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Deletes the files not begun or written for `max_age_ms` (finished or not); returns how
    /// many.
    async fn expire_files(&self, max_age_ms: u64) -> Result<u64, StoreError>;

    /// A secret made at random the first time any server asks and the same ever after: the
    /// servers sharing this store prove to each other with it that they do (`chat.Node`).
    async fn node_secret(&self) -> Result<String, StoreError>;

    /// Whether the store works: open, and not recovering from a failure (meanwhile every
    /// operation fails with [`StoreError::Unavailable`]).
    fn is_healthy(&self) -> bool;

    /// Finishes the writes under way and lets go of the database, so that it can be opened
    /// again. Later operations fail with [`StoreError::Closed`].
    async fn close(&self);
}

/// Whether `held` is the file `begun` declares (the same sender, recipient, size and hash; the
/// name may differ, the first one given is kept).
fn same_file(held: &HeldFile, begun: &HeldFile) -> bool {
    held.from.id == begun.from.id
        && held.to == begun.to
        && held.file.size == begun.file.size
        && held.file.sha256 == begun.file.sha256
}

/// A stored envelope: as written now, or as written before envelopes could carry a file (the
/// same fields without `file`, which postcard cannot tell from a record cut short). Records
/// are never rewritten, so both live side by side in a database that was upgraded.
fn decode_envelope(bytes: &[u8]) -> Result<Envelope, StoreError> {
    #[derive(Deserialize)]
    struct EnvelopeV1 {
        id: Uuid,
        from: Sender,
        to: chat_api::Destination,
        text: String,
        sent_at_ms: u64,
        path: chat_api::Path,
    }
    match postcard::from_bytes::<Envelope>(bytes) {
        Ok(envelope) => Ok(envelope),
        Err(e) => match postcard::take_from_bytes::<EnvelopeV1>(bytes) {
            // The whole record, and nothing more: an envelope of the earlier format.
            Ok((old, [])) => Ok(Envelope {
                id: old.id,
                from: old.from,
                to: old.to,
                text: old.text,
                sent_at_ms: old.sent_at_ms,
                path: old.path,
                file: None,
            }),
            _ => Err(StoreError::Record(e.to_string())),
        },
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Record(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Record(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chat_api::{Attachment, Destination, Path};

    use super::*;

    fn envelope(file: Option<Attachment>) -> Envelope {
        Envelope {
            id: Uuid::from_u128(7),
            from: Sender {
                id: Uuid::from_u128(8),
                name: "ann".into(),
            },
            to: Destination::User(Uuid::from_u128(9)),
            text: "hi".into(),
            sent_at_ms: 1_700_000_000_000,
            path: Path::Stored,
            file,
        }
    }

    #[test]
    fn envelopes_of_both_formats_are_read() {
        let file = Attachment {
            name: "a.txt".into(),
            size: 3,
            sha256: "0".repeat(64),
        };
        for envelope in [envelope(None), envelope(Some(file))] {
            let bytes = encode(&envelope).unwrap();
            assert_eq!(decode_envelope(&bytes).unwrap(), envelope);
        }
        // Written before envelopes carried files: the same fields, without `file`.
        let old = envelope(None);
        let bytes = postcard::to_stdvec(&(
            old.id,
            &old.from,
            &old.to,
            &old.text,
            old.sent_at_ms,
            old.path,
        ))
        .unwrap();
        assert_eq!(decode_envelope(&bytes).unwrap(), old);
        // Neither: an error, not a guess.
        assert!(decode_envelope(&bytes[..bytes.len() - 2]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        assert!(decode_envelope(&longer).is_err());
    }
}
