//! The tables of the database (see the layout in the [module's](super) documentation).

use chat_api::Access;
use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};
use serde::Deserialize;
use tracing::{info, warn};

use super::error::StoreError;
use super::{HeldFile, StoredUser, decode, encode};
use crate::password::legacy_credential;
use crate::validate::name_key;

/// The accounts, by user id.
pub(super) const USERS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("accounts");
/// The users of the store format before accounts (SHA-256 secrets, names not reserved): moved
/// into [`USERS`] and [`NAMES`] when the database is opened (see [`migrate`]).
const LEGACY_USERS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("users");
/// Reserved names: the folded name to the id it is reserved to.
pub(super) const NAMES: TableDefinition<'_, &str, u128> = TableDefinition::new("names");
/// Friends and friend requests: (user, other) to where the user stands (one row each way).
pub(super) const FRIENDS: TableDefinition<'_, (u128, u128), u8> = TableDefinition::new("friends");
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
/// Files held for their recipients, by id: postcard(HeldFile).
pub(super) const FILES: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("files");
/// A held file's bytes: (file id, offset of the piece) to the piece (one per upload chunk).
pub(super) const FILE_PIECES: TableDefinition<'_, (u128, u64), &[u8]> =
    TableDefinition::new("file_pieces");
/// The declared sizes of the files held for a user, summed (for the quota).
pub(super) const FILES_HELD: TableDefinition<'_, u128, u64> = TableDefinition::new("files_held");

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
    pub(super) names: Table<'txn, &'static str, u128>,
    pub(super) friends: Table<'txn, (u128, u128), u8>,
    pub(super) files: Table<'txn, u128, &'static [u8]>,
    pub(super) file_pieces: Table<'txn, (u128, u64), &'static [u8]>,
    pub(super) files_held: Table<'txn, u128, u64>,
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
            names: txn.open_table(NAMES).map_err(StoreError::db)?,
            friends: txn.open_table(FRIENDS).map_err(StoreError::db)?,
            files: txn.open_table(FILES).map_err(StoreError::db)?,
            file_pieces: txn.open_table(FILE_PIECES).map_err(StoreError::db)?,
            files_held: txn.open_table(FILES_HELD).map_err(StoreError::db)?,
        })
    }

    /// Deletes the held file `id` (if `for_user` is given, only one held for that user), its
    /// pieces, and its bytes from its recipient's sum; returns whether there was one.
    pub(super) fn delete_file(
        &mut self,
        id: u128,
        for_user: Option<u128>,
    ) -> Result<bool, StoreError> {
        let held: HeldFile = match self.files.get(id).map_err(StoreError::db)? {
            Some(bytes) => decode(bytes.value())?,
            None => return Ok(false),
        };
        let to = held.to.as_u128();
        if for_user.is_some_and(|user| user != to) {
            return Ok(false);
        }
        self.files.remove(id).map_err(StoreError::db)?;
        self.file_pieces
            .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
            .map_err(StoreError::db)?;
        let sum = self
            .files_held
            .get(to)
            .map_err(StoreError::db)?
            .map_or(0, |entry| entry.value());
        let left = sum.saturating_sub(held.file.size);
        if left == 0 {
            self.files_held.remove(to).map_err(StoreError::db)?;
        } else {
            self.files_held.insert(to, left).map_err(StoreError::db)?;
        }
        Ok(true)
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

/// A user as the store format before accounts kept them.
#[derive(Deserialize)]
struct LegacyUser {
    name: String,
    salt: [u8; 16],
    hash: [u8; 32],
}

/// Moves the users of the format before accounts (table `users`, if there is one) into
/// accounts: their salted SHA-256 becomes a legacy credential, which the server replaces with
/// an argon2id hash when the user next signs in, and their name is reserved to them unless
/// another user of the same (folded) name had it first, in id order: those keep their account
/// and choose another name on their next registration.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), StoreError> {
    let legacy = txn
        .list_tables()
        .map_err(StoreError::db)?
        .any(|table| table.name() == LEGACY_USERS.name());
    if !legacy {
        return Ok(());
    }
    let mut tables = Tables::open(txn)?;
    let (mut moved, mut unreserved) = (0u64, 0u64);
    {
        let old = txn.open_table(LEGACY_USERS).map_err(StoreError::db)?;
        for entry in old.iter().map_err(StoreError::db)? {
            let (id, bytes) = entry.map_err(StoreError::db)?;
            let id = id.value();
            let user: LegacyUser = decode(bytes.value())?;
            let key = name_key(&user.name);
            if tables
                .names
                .get(key.as_str())
                .map_err(StoreError::db)?
                .is_none()
            {
                tables
                    .names
                    .insert(key.as_str(), id)
                    .map_err(StoreError::db)?;
            } else {
                unreserved += 1;
            }
            let account = StoredUser {
                credential: legacy_credential(&user.salt, &user.hash),
                name: user.name,
            };
            tables
                .users
                .insert(id, encode(&account)?.as_slice())
                .map_err(StoreError::db)?;
            moved += 1;
        }
    }
    drop(tables);
    txn.delete_table(LEGACY_USERS).map_err(StoreError::db)?;
    info!(
        users = moved,
        "moved the users of the format before accounts into accounts"
    );
    if unreserved > 0 {
        warn!(
            users = unreserved,
            "users whose name another user had first keep their account without it"
        );
    }
    Ok(())
}
