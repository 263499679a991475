//! The tables of the database (see the layout in the [module's](super) documentation).

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
pub(super) const META: TableDefinition<'_, &str, &str> = TableDefinition::new("meta");

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
