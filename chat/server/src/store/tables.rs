//! The tables of the database (see the layout in the [module's](super) documentation).

use chat_api::Access;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::error::StoreError;

pub(super) const USERS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("users");
pub(super) const MAILBOXES: TableDefinition<'_, u128, (u64, u64)> =
    TableDefinition::new("mailboxes");
pub(super) const PENDING: TableDefinition<'_, (u128, u64), &[u8]> = TableDefinition::new("pending");
pub(super) const MESSAGE_IDS: TableDefinition<'_, (u128, u128), (u64, u64)> =
    TableDefinition::new("message_ids");
pub(super) const ROOMS: TableDefinition<'_, &str, u64> = TableDefinition::new("rooms");
pub(super) const ROOMS_CREATED: TableDefinition<'_, u128, u64> =
    TableDefinition::new("rooms_created");
pub(super) const ROOM_POSTS: TableDefinition<'_, (&str, u64), &[u8]> =
    TableDefinition::new("room_posts");
pub(super) const ROOM_POST_IDS: TableDefinition<'_, (&str, u128), (u64, u64)> =
    TableDefinition::new("room_post_ids");
/// A room's owner, access (see [`access_code`]), member count and the number the next member
/// joins under.
pub(super) const ROOM_GROUPS: TableDefinition<'_, &str, (u128, u8, u64, u64)> =
    TableDefinition::new("room_groups");
/// A room's members, with the number each joined under (lower: longer-standing).
pub(super) const ROOM_MEMBERS: TableDefinition<'_, (&str, u128), u64> =
    TableDefinition::new("room_members");
/// The rooms a user is a member of ([`MEMBER`]) or invited to ([`INVITED`]).
pub(super) const USER_ROOMS: TableDefinition<'_, (u128, &str), u8> =
    TableDefinition::new("user_rooms");
/// How many rooms a user is a member of.
pub(super) const ROOMS_JOINED: TableDefinition<'_, u128, u64> =
    TableDefinition::new("rooms_joined");
pub(super) const META: TableDefinition<'_, &str, &str> = TableDefinition::new("meta");

/// A [`USER_ROOMS`] entry of a member.
pub(super) const MEMBER: u8 = 1;
/// A [`USER_ROOMS`] entry of an invited user.
pub(super) const INVITED: u8 = 2;

/// How [`ROOM_GROUPS`] stores an access.
pub(super) fn access_code(access: Access) -> u8 {
    match access {
        Access::Open => 0,
        Access::InviteOnly => 1,
    }
}

/// The access [`access_code`] stored (an unknown code is the stricter one).
pub(super) fn access_of(code: u8) -> Access {
    if code == 0 {
        Access::Open
    } else {
        Access::InviteOnly
    }
}

/// The key of the node secret in [`META`].
pub(super) const NODE_SECRET: &str = "node_secret";

/// The tables of one write transaction.
pub(super) struct Tables<'txn> {
    pub(super) users: Table<'txn, u128, &'static [u8]>,
    pub(super) mailboxes: Table<'txn, u128, (u64, u64)>,
    pub(super) pending: Table<'txn, (u128, u64), &'static [u8]>,
    pub(super) message_ids: Table<'txn, (u128, u128), (u64, u64)>,
    pub(super) rooms: Table<'txn, &'static str, u64>,
    pub(super) rooms_created: Table<'txn, u128, u64>,
    pub(super) room_posts: Table<'txn, (&'static str, u64), &'static [u8]>,
    pub(super) room_post_ids: Table<'txn, (&'static str, u128), (u64, u64)>,
    pub(super) room_groups: Table<'txn, &'static str, (u128, u8, u64, u64)>,
    pub(super) room_members: Table<'txn, (&'static str, u128), u64>,
    pub(super) user_rooms: Table<'txn, (u128, &'static str), u8>,
    pub(super) rooms_joined: Table<'txn, u128, u64>,
    pub(super) meta: Table<'txn, &'static str, &'static str>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            users: txn.open_table(USERS).map_err(StoreError::db)?,
            mailboxes: txn.open_table(MAILBOXES).map_err(StoreError::db)?,
            pending: txn.open_table(PENDING).map_err(StoreError::db)?,
            message_ids: txn.open_table(MESSAGE_IDS).map_err(StoreError::db)?,
            rooms: txn.open_table(ROOMS).map_err(StoreError::db)?,
            rooms_created: txn.open_table(ROOMS_CREATED).map_err(StoreError::db)?,
            room_posts: txn.open_table(ROOM_POSTS).map_err(StoreError::db)?,
            room_post_ids: txn.open_table(ROOM_POST_IDS).map_err(StoreError::db)?,
            room_groups: txn.open_table(ROOM_GROUPS).map_err(StoreError::db)?,
            room_members: txn.open_table(ROOM_MEMBERS).map_err(StoreError::db)?,
            user_rooms: txn.open_table(USER_ROOMS).map_err(StoreError::db)?,
            rooms_joined: txn.open_table(ROOMS_JOINED).map_err(StoreError::db)?,
            meta: txn.open_table(META).map_err(StoreError::db)?,
        })
    }

    /// (last sequence number, pending count) of a mailbox.
    pub(super) fn mailbox(&self, user: u128) -> Result<(u64, u64), StoreError> {
        Ok(self
            .mailboxes
            .get(user)
            .map_err(StoreError::db)?
            .map(|entry| entry.value())
            .unwrap_or((0, 0)))
    }
}
