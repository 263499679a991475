//! The chat server's durable state: the secrets users' ids are bound to, the messages waiting
//! for their recipient's acknowledgement, and rooms: their owner and access, their members and
//! invitations, and their last posts.
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
//! users           user id (u128)                    postcard(StoredUser): name, salt, SHA-256
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
//! ```
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
//! chat_users          id                           name, salt, hash
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
//! ```

mod embedded;
mod engine;
mod error;
mod postgres;
mod tables;

use std::fmt;

use async_trait::async_trait;
use chat_api::{Access, Envelope, Membership, Page, Sender};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use self::embedded::RedbStore;
pub use self::error::StoreError;
pub use self::postgres::PgStore;
use crate::page::PageLimits;

/// The outcome of [`Store::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The id was new: it is now bound to the secret.
    Created,
    /// The id was bound to this secret (its name is updated).
    Verified,
    /// The id is bound to another secret; nothing was changed.
    WrongSecret,
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

/// A user's id binding as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The display name the user last registered with.
    pub name: String,
    salt: [u8; 16],
    hash: [u8; 32],
}

impl StoredUser {
    fn new(name: &str, secret: &str) -> Self {
        let salt = *Uuid::new_v4().as_bytes();
        StoredUser {
            name: name.to_owned(),
            salt,
            hash: hash_secret(&salt, secret),
        }
    }

    /// Whether `secret` is the one this id is bound to (compared in constant time).
    pub fn verify(&self, secret: &str) -> bool {
        let candidate = hash_secret(&self.salt, secret);
        candidate
            .iter()
            .zip(self.hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn hash_secret(salt: &[u8; 16], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
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
    /// Binds `id` to `secret` if it is new, or checks the secret if not; records `name` as the
    /// user's name either way (unless the secret is wrong).
    async fn bind(&self, id: Uuid, name: &str, secret: &str) -> Result<Binding, StoreError>;

    /// The stored binding of `id`, if it was ever registered.
    async fn user(&self, id: Uuid) -> Result<Option<StoredUser>, StoreError>;

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

    /// Deletes the acknowledged messages of `user` by id; returns how many were waiting. Ids
    /// that are unknown or acknowledged already are ignored.
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

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Record(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Record(e.to_string()))
}
