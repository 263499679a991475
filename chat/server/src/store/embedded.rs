//! The [`Store`] in one embedded [redb] file: see the layout in the [module's](super)
//! documentation.

use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chat_api::{Access, Envelope, FriendState, Membership, Page, Sender, now_ms};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use uuid::Uuid;

use super::engine::Engine;
use super::tables::{
    FILE_PIECES, FILES, FRIENDS, INVITED, MAILBOXES, MEMBER, NAMES, NODE_SECRET, PENDING,
    ROOM_GROUPS, ROOM_MEMBERS, ROOM_POSTS, ROOMS, Tables, USER_ROOMS, USERS, access_code,
    access_of,
};
use super::{
    Admission, Binding, FileAppended, FileBegun, FriendAccepted, FriendRequested, HeldFile,
    Invited, Joined, Left, ListedRoom, Mailbox, Posted, Relayed, RoomFilter, RoomQuotas, Store,
    StoreError, StoredRoom, StoredUser, decode, decode_envelope, encode, friend_state,
    friend_state_code, same_file,
};
use crate::page::{PageBuilder, PageLimits};
use crate::validate::name_key;

/// The store in one embedded redb file. Cheap to clone; all clones share one file and one
/// writer.
#[derive(Clone)]
pub struct RedbStore {
    engine: Arc<Engine>,
}

impl RedbStore {
    /// Opens (or creates) the database at `path`. Blocks while the file is opened, and repaired
    /// if the last process using it was killed.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        Ok(RedbStore {
            engine: Arc::new(Engine::open(path)?),
        })
    }

    async fn write<T, F>(&self, apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.engine.write(apply).await
    }

    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.engine.read(read).await
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn bind(
        &self,
        id: Uuid,
        name: &str,
        credential: &str,
        expected: Option<&str>,
    ) -> Result<Binding, StoreError> {
        let (id, name, credential) = (id.as_u128(), name.to_owned(), credential.to_owned());
        let expected = expected.map(str::to_owned);
        self.write(move |t| {
            let existing = match t.users.get(id).map_err(StoreError::db)? {
                Some(bytes) => Some(decode::<StoredUser>(bytes.value())?),
                None => None,
            };
            if existing.as_ref().map(|user| &user.credential) != expected.as_ref() {
                return Ok(Binding::Stale);
            }
            let key = name_key(&name);
            if let Some(owner) = t.names.get(key.as_str()).map_err(StoreError::db)?
                && owner.value() != id
            {
                return Ok(Binding::NameTaken);
            }
            if let Some(old) = &existing {
                let old_key = name_key(&old.name);
                let owned = t
                    .names
                    .get(old_key.as_str())
                    .map_err(StoreError::db)?
                    .is_some_and(|owner| owner.value() == id);
                if old_key != key && owned {
                    t.names.remove(old_key.as_str()).map_err(StoreError::db)?;
                }
            }
            t.names.insert(key.as_str(), id).map_err(StoreError::db)?;
            let user = StoredUser { name, credential };
            t.users
                .insert(id, encode(&user)?.as_slice())
                .map_err(StoreError::db)?;
            Ok(match existing {
                None => Binding::Created,
                Some(_) => Binding::Updated,
            })
        })
        .await
    }

    async fn user(&self, id: Uuid) -> Result<Option<StoredUser>, StoreError> {
        self.read(move |txn| {
            let users = txn.open_table(USERS).map_err(StoreError::db)?;
            match users.get(id.as_u128()).map_err(StoreError::db)? {
                Some(bytes) => Ok(Some(decode(bytes.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<(Uuid, StoredUser)>, StoreError> {
        let key = name_key(name);
        self.read(move |txn| {
            let names = txn.open_table(NAMES).map_err(StoreError::db)?;
            let Some(id) = names.get(key.as_str()).map_err(StoreError::db)? else {
                return Ok(None);
            };
            let id = id.value();
            let users = txn.open_table(USERS).map_err(StoreError::db)?;
            match users.get(id).map_err(StoreError::db)? {
                Some(bytes) => Ok(Some((Uuid::from_u128(id), decode(bytes.value())?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn request_friend(
        &self,
        from: Uuid,
        to: Uuid,
        max: u64,
    ) -> Result<FriendRequested, StoreError> {
        let (from, to) = (from.as_u128(), to.as_u128());
        self.write(move |t| {
            if t.users.get(to).map_err(StoreError::db)?.is_none() {
                return Ok(FriendRequested::UnknownUser);
            }
            let standing = t.friends.get((from, to)).map_err(StoreError::db)?;
            match standing.map(|s| friend_state(s.value())).transpose()? {
                Some(FriendState::RequestReceived) => {
                    let friends = friend_state_code(FriendState::Friends);
                    t.friends
                        .insert((from, to), friends)
                        .map_err(StoreError::db)?;
                    t.friends
                        .insert((to, from), friends)
                        .map_err(StoreError::db)?;
                    return Ok(FriendRequested::Accepted);
                }
                Some(state) => return Ok(FriendRequested::Unchanged(state)),
                None => {}
            }
            for (user, requester) in [(from, true), (to, false)] {
                let count = t
                    .friends
                    .range((user, 0)..=(user, u128::MAX))
                    .map_err(StoreError::db)?
                    .count();
                if count as u64 >= max {
                    return Ok(FriendRequested::QuotaReached { requester });
                }
            }
            t.friends
                .insert((from, to), friend_state_code(FriendState::RequestSent))
                .map_err(StoreError::db)?;
            t.friends
                .insert((to, from), friend_state_code(FriendState::RequestReceived))
                .map_err(StoreError::db)?;
            Ok(FriendRequested::Requested)
        })
        .await
    }

    async fn accept_friend(&self, user: Uuid, from: Uuid) -> Result<FriendAccepted, StoreError> {
        let (user, from) = (user.as_u128(), from.as_u128());
        self.write(move |t| {
            let standing = t.friends.get((user, from)).map_err(StoreError::db)?;
            match standing.map(|s| friend_state(s.value())).transpose()? {
                Some(FriendState::RequestReceived) => {
                    let friends = friend_state_code(FriendState::Friends);
                    t.friends
                        .insert((user, from), friends)
                        .map_err(StoreError::db)?;
                    t.friends
                        .insert((from, user), friends)
                        .map_err(StoreError::db)?;
                    Ok(FriendAccepted::Accepted)
                }
                Some(FriendState::Friends) => Ok(FriendAccepted::AlreadyFriends),
                Some(FriendState::RequestSent) | None => Ok(FriendAccepted::NoRequest),
            }
        })
        .await
    }

    async fn unfriend(&self, user: Uuid, other: Uuid) -> Result<Option<FriendState>, StoreError> {
        let (user, other) = (user.as_u128(), other.as_u128());
        self.write(move |t| {
            let removed = t.friends.remove((user, other)).map_err(StoreError::db)?;
            let state = removed.map(|s| friend_state(s.value())).transpose()?;
            t.friends.remove((other, user)).map_err(StoreError::db)?;
            Ok(state)
        })
        .await
    }

    async fn friends(&self, user: Uuid) -> Result<Vec<(Sender, FriendState)>, StoreError> {
        let user = user.as_u128();
        self.read(move |txn| {
            let friends = txn.open_table(FRIENDS).map_err(StoreError::db)?;
            let users = txn.open_table(USERS).map_err(StoreError::db)?;
            let mut list = Vec::new();
            for entry in friends
                .range((user, 0)..=(user, u128::MAX))
                .map_err(StoreError::db)?
            {
                let (key, state) = entry.map_err(StoreError::db)?;
                let other = key.value().1;
                let name = match users.get(other).map_err(StoreError::db)? {
                    Some(bytes) => decode::<StoredUser>(bytes.value())?.name,
                    None => continue,
                };
                let sender = Sender {
                    id: Uuid::from_u128(other),
                    name,
                };
                list.push((sender, friend_state(state.value())?));
            }
            Ok(list)
        })
        .await
    }

    /// Stores `envelope` in the mailbox of `to`, unless a message with the same id is already
    /// there (or was acknowledged) or the mailbox holds `max_pending` messages.
    async fn relay(
        &self,
        to: Uuid,
        envelope: &Envelope,
        max_pending: u64,
    ) -> Result<Relayed, StoreError> {
        let bytes = encode(envelope)?;
        let (to, id) = (to.as_u128(), envelope.id.as_u128());
        self.write(move |t| {
            if t.users.get(to).map_err(StoreError::db)?.is_none() {
                return Ok(Relayed::UnknownRecipient);
            }
            if let Some(entry) = t.message_ids.get((to, id)).map_err(StoreError::db)? {
                let (seq, _) = entry.value();
                return Ok(Relayed::Duplicate {
                    acknowledged: seq == 0,
                });
            }
            let (last, count) = t.mailbox(to)?;
            if count >= max_pending {
                return Ok(Relayed::MailboxFull);
            }
            let seq = last + 1;
            t.pending
                .insert((to, seq), bytes.as_slice())
                .map_err(StoreError::db)?;
            t.message_ids
                .insert((to, id), (seq, now_ms()))
                .map_err(StoreError::db)?;
            t.mailboxes
                .insert(to, (seq, count + 1))
                .map_err(StoreError::db)?;
            Ok(Relayed::Stored { seq })
        })
        .await
    }

    /// The first `limit` messages waiting in the mailbox of `user` after sequence number `after`
    /// (0: from the first), in order.
    async fn mailbox(&self, user: Uuid, after: u64, limit: usize) -> Result<Mailbox, StoreError> {
        let user = user.as_u128();
        self.read(move |txn| {
            // One read transaction: `last_seq` and `messages` are of the same moment.
            let mailboxes = txn.open_table(MAILBOXES).map_err(StoreError::db)?;
            let last_seq = match mailboxes.get(user).map_err(StoreError::db)? {
                Some(entry) => entry.value().0,
                None => 0,
            };
            let pending = txn.open_table(PENDING).map_err(StoreError::db)?;
            let mut messages = Vec::new();
            let Some(first) = after.checked_add(1) else {
                return Ok(Mailbox { messages, last_seq });
            };
            for entry in pending
                .range((user, first)..=(user, u64::MAX))
                .map_err(StoreError::db)?
                .take(limit)
            {
                let (key, value) = entry.map_err(StoreError::db)?;
                messages.push((key.value().1, decode_envelope(value.value())?));
            }
            Ok(Mailbox { messages, last_seq })
        })
        .await
    }

    /// Deletes the acknowledged messages of `user` by id; returns how many were waiting. Ids
    /// that are unknown or acknowledged already are ignored.
    async fn ack(&self, user: Uuid, ids: &[Uuid]) -> Result<usize, StoreError> {
        let user = user.as_u128();
        let ids: Vec<u128> = ids.iter().map(|id| id.as_u128()).collect();
        self.write(move |t| {
            let mut removed = 0;
            for &id in &ids {
                let seq = match t.message_ids.get((user, id)).map_err(StoreError::db)? {
                    Some(entry) => entry.value().0,
                    None => continue,
                };
                if seq == 0 {
                    continue;
                }
                t.pending.remove((user, seq)).map_err(StoreError::db)?;
                // The id stays, marked acknowledged, so that relaying it again is recognised.
                t.message_ids
                    .insert((user, id), (0, now_ms()))
                    .map_err(StoreError::db)?;
                t.delete_file(id, Some(user))?;
                removed += 1;
            }
            if removed > 0 {
                let (last, count) = t.mailbox(user)?;
                t.mailboxes
                    .insert(user, (last, count.saturating_sub(removed as u64)))
                    .map_err(StoreError::db)?;
            }
            Ok(removed)
        })
        .await
    }

    /// Forgets the ids of acknowledged messages and of room posts older than `max_age_ms`: a
    /// message relayed or posted again after that is delivered again. Returns how many were
    /// forgotten.
    async fn forget_old_ids(&self, max_age_ms: u64) -> Result<u64, StoreError> {
        let cutoff = now_ms().saturating_sub(max_age_ms);
        self.write(move |t| {
            let before = t.message_ids.len().map_err(StoreError::db)?
                + t.room_post_ids.len().map_err(StoreError::db)?;
            t.message_ids
                .retain(|_, (seq, at)| seq != 0 || at >= cutoff)
                .map_err(StoreError::db)?;
            t.room_post_ids
                .retain(|_, (_, at)| at >= cutoff)
                .map_err(StoreError::db)?;
            let after = t.message_ids.len().map_err(StoreError::db)?
                + t.room_post_ids.len().map_err(StoreError::db)?;
            Ok(before - after)
        })
        .await
    }

    async fn begin_file(
        &self,
        id: Uuid,
        file: &HeldFile,
        quota: u64,
    ) -> Result<FileBegun, StoreError> {
        let file = file.clone();
        let id = id.as_u128();
        self.write(move |t| {
            if let Some(bytes) = t.files.get(id).map_err(StoreError::db)? {
                let held: HeldFile = decode(bytes.value())?;
                return Ok(if same_file(&held, &file) {
                    FileBegun::Held {
                        received: held.received,
                    }
                } else {
                    FileBegun::OtherFile
                });
            }
            let to = file.to.as_u128();
            if t.users.get(to).map_err(StoreError::db)?.is_none() {
                return Ok(FileBegun::UnknownRecipient);
            }
            let held = t
                .files_held
                .get(to)
                .map_err(StoreError::db)?
                .map_or(0, |entry| entry.value());
            if held.saturating_add(file.file.size) > quota {
                return Ok(FileBegun::QuotaReached { held });
            }
            let stored = HeldFile {
                received: 0,
                touched_ms: now_ms(),
                ..file
            };
            t.files
                .insert(id, encode(&stored)?.as_slice())
                .map_err(StoreError::db)?;
            t.files_held
                .insert(to, held + stored.file.size)
                .map_err(StoreError::db)?;
            Ok(FileBegun::Held { received: 0 })
        })
        .await
    }

    async fn append_file(
        &self,
        id: Uuid,
        from: Uuid,
        offset: u64,
        data: Bytes,
    ) -> Result<FileAppended, StoreError> {
        let id = id.as_u128();
        self.write(move |t| {
            let mut held: HeldFile = match t.files.get(id).map_err(StoreError::db)? {
                Some(bytes) => decode(bytes.value())?,
                None => return Ok(FileAppended::UnknownFile),
            };
            if held.from.id != from {
                return Ok(FileAppended::UnknownFile);
            }
            let end = offset.saturating_add(data.len() as u64);
            if offset != held.received || end > held.file.size {
                return Ok(FileAppended::WrongOffset {
                    received: held.received,
                });
            }
            if !data.is_empty() {
                t.file_pieces
                    .insert((id, offset), &data[..])
                    .map_err(StoreError::db)?;
            }
            held.received = end;
            held.touched_ms = now_ms();
            t.files
                .insert(id, encode(&held)?.as_slice())
                .map_err(StoreError::db)?;
            Ok(FileAppended::Appended { received: end })
        })
        .await
    }

    async fn held_file(&self, id: Uuid) -> Result<Option<HeldFile>, StoreError> {
        let id = id.as_u128();
        self.read(move |txn| {
            let files = txn.open_table(FILES).map_err(StoreError::db)?;
            match files.get(id).map_err(StoreError::db)? {
                Some(bytes) => Ok(Some(decode(bytes.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn read_file(
        &self,
        id: Uuid,
        offset: u64,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        let id = id.as_u128();
        self.read(move |txn| {
            let files = txn.open_table(FILES).map_err(StoreError::db)?;
            let held: HeldFile = match files.get(id).map_err(StoreError::db)? {
                Some(bytes) => decode(bytes.value())?,
                None => return Ok(None),
            };
            if offset >= held.received {
                return Ok(Some(Bytes::new()));
            }
            let pieces = txn.open_table(FILE_PIECES).map_err(StoreError::db)?;
            let Some(entry) = pieces
                .range((id, 0)..=(id, offset))
                .map_err(StoreError::db)?
                .next_back()
            else {
                return Err(StoreError::Record(format!(
                    "file {} has no piece at {offset}",
                    Uuid::from_u128(id)
                )));
            };
            let (key, piece) = entry.map_err(StoreError::db)?;
            let piece = piece.value();
            let skip = usize::try_from(offset - key.value().1).unwrap_or(usize::MAX);
            let Some(rest) = piece.get(skip..) else {
                return Err(StoreError::Record(format!(
                    "file {} has a gap at {offset}",
                    Uuid::from_u128(id)
                )));
            };
            Ok(Some(Bytes::copy_from_slice(&rest[..rest.len().min(max)])))
        })
        .await
    }

    async fn delete_file(&self, id: Uuid) -> Result<bool, StoreError> {
        let id = id.as_u128();
        self.write(move |t| t.delete_file(id, None)).await
    }

    async fn expire_files(&self, max_age_ms: u64) -> Result<u64, StoreError> {
        let cutoff = now_ms().saturating_sub(max_age_ms);
        self.write(move |t| {
            let mut old = Vec::new();
            for entry in t.files.iter().map_err(StoreError::db)? {
                let (id, bytes) = entry.map_err(StoreError::db)?;
                let held: HeldFile = decode(bytes.value())?;
                if held.touched_ms < cutoff {
                    old.push(id.value());
                }
            }
            for &id in &old {
                t.delete_file(id, None)?;
            }
            Ok(old.len() as u64)
        })
        .await
    }

    async fn node_secret(&self) -> Result<String, StoreError> {
        let made = Uuid::new_v4().simple().to_string();
        self.write(move |t| {
            if let Some(secret) = t.meta.get(NODE_SECRET).map_err(StoreError::db)? {
                return Ok(secret.value().to_owned());
            }
            t.meta
                .insert(NODE_SECRET, made.as_str())
                .map_err(StoreError::db)?;
            Ok(made)
        })
        .await
    }

    /// Every room ever created, by name.
    async fn rooms(&self) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            let rooms = txn.open_table(ROOMS).map_err(StoreError::db)?;
            let mut names = Vec::new();
            for entry in rooms.iter().map_err(StoreError::db)? {
                names.push(entry.map_err(StoreError::db)?.0.value().to_owned());
            }
            Ok(names)
        })
        .await
    }

    async fn join_room(
        &self,
        room: &str,
        user: Uuid,
        how: Admission,
        quotas: RoomQuotas,
    ) -> Result<Joined, StoreError> {
        let (room, user) = (room.to_owned(), user.as_u128());
        self.write(move |t| join_in(t, &room, user, how, quotas))
            .await
    }

    async fn leave_room(
        &self,
        room: &str,
        user: Uuid,
        by: Option<Uuid>,
    ) -> Result<Left, StoreError> {
        let (room, user) = (room.to_owned(), user.as_u128());
        self.write(move |t| leave_in(t, &room, user, by.map(|by| by.as_u128())))
            .await
    }

    async fn invite(&self, room: &str, by: Uuid, user: Uuid) -> Result<Invited, StoreError> {
        let (room, by, user) = (room.to_owned(), by.as_u128(), user.as_u128());
        self.write(move |t| {
            let room = room.as_str();
            if t.rooms.get(room).map_err(StoreError::db)?.is_none() {
                return Ok(Invited::UnknownRoom);
            }
            if t.room_members
                .get((room, by))
                .map_err(StoreError::db)?
                .is_none()
            {
                return Ok(Invited::NotAMember);
            }
            if t.users.get(user).map_err(StoreError::db)?.is_none() {
                return Ok(Invited::UnknownUser);
            }
            if t.user_rooms
                .get((user, room))
                .map_err(StoreError::db)?
                .is_some()
            {
                return Ok(Invited::AlreadyIn);
            }
            t.user_rooms
                .insert((user, room), INVITED)
                .map_err(StoreError::db)?;
            Ok(Invited::Invited(group_of(&t.room_groups, room)?.0))
        })
        .await
    }

    async fn room(&self, room: &str, user: Uuid) -> Result<Option<ListedRoom>, StoreError> {
        let (room, user) = (room.to_owned(), user.as_u128());
        self.read(move |txn| {
            let rooms = txn.open_table(ROOMS).map_err(StoreError::db)?;
            if rooms.get(room.as_str()).map_err(StoreError::db)?.is_none() {
                return Ok(None);
            }
            let view = RoomView::open(txn)?;
            Ok(Some(view.listed(&room, user)?))
        })
        .await
    }

    async fn room_list(
        &self,
        user: Uuid,
        filter: RoomFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ListedRoom>, StoreError> {
        let id = user.as_u128();
        self.read(move |txn| {
            let view = RoomView::open(txn)?;
            let mut listed = Vec::new();
            let start = after.as_deref().unwrap_or("");
            match filter {
                RoomFilter::Visible => {
                    let rooms = txn.open_table(ROOMS).map_err(StoreError::db)?;
                    let range = match &after {
                        Some(_) => rooms.range::<&str>((Bound::Excluded(start), Bound::Unbounded)),
                        None => rooms.range::<&str>(..),
                    }
                    .map_err(StoreError::db)?;
                    for entry in range {
                        if listed.len() >= limit {
                            break;
                        }
                        let (name, _) = entry.map_err(StoreError::db)?;
                        let room = view.listed(name.value(), id)?;
                        if room.room.access == Access::Open
                            || matches!(room.membership, Membership::Owner | Membership::Member)
                        {
                            listed.push(room);
                        }
                    }
                }
                RoomFilter::Mine => {
                    let user_rooms = txn.open_table(USER_ROOMS).map_err(StoreError::db)?;
                    let first = match &after {
                        Some(_) => Bound::Excluded((id, start)),
                        None => Bound::Included((id, "")),
                    };
                    for entry in user_rooms
                        .range::<(u128, &str)>((first, Bound::Unbounded))
                        .map_err(StoreError::db)?
                    {
                        if listed.len() >= limit {
                            break;
                        }
                        let (key, _) = entry.map_err(StoreError::db)?;
                        let (owner, name) = key.value();
                        if owner != id {
                            break;
                        }
                        listed.push(view.listed(name, id)?);
                    }
                }
            }
            Ok(listed)
        })
        .await
    }

    async fn members(&self, room: &str) -> Result<Vec<Sender>, StoreError> {
        let room = room.to_owned();
        self.read(move |txn| {
            let members = txn.open_table(ROOM_MEMBERS).map_err(StoreError::db)?;
            let users = txn.open_table(USERS).map_err(StoreError::db)?;
            let mut senders = Vec::new();
            let room = room.as_str();
            for entry in members
                .range((room, 0)..=(room, u128::MAX))
                .map_err(StoreError::db)?
            {
                let id = entry.map_err(StoreError::db)?.0.value().1;
                let name = match users.get(id).map_err(StoreError::db)? {
                    Some(bytes) => decode::<StoredUser>(bytes.value())?.name,
                    None => String::new(),
                };
                senders.push(Sender {
                    id: Uuid::from_u128(id),
                    name,
                });
            }
            Ok(senders)
        })
        .await
    }

    async fn post(
        &self,
        room: &str,
        from: Uuid,
        envelope: &Envelope,
        keep: usize,
        max_pending: u64,
    ) -> Result<Posted, StoreError> {
        let bytes = encode(envelope)?;
        let (room, id, from) = (room.to_owned(), envelope.id.as_u128(), from.as_u128());
        let keep = u64::try_from(keep).unwrap_or(u64::MAX);
        self.write(move |t| {
            let room = room.as_str();
            if t.rooms.get(room).map_err(StoreError::db)?.is_none() {
                return Ok(Posted::UnknownRoom);
            }
            if t.room_members
                .get((room, from))
                .map_err(StoreError::db)?
                .is_none()
            {
                return Ok(Posted::NotAMember);
            }
            if t.room_post_ids
                .get((room, id))
                .map_err(StoreError::db)?
                .is_some()
            {
                return Ok(Posted::Duplicate);
            }
            let last = t
                .room_posts
                .range((room, 0)..=(room, u64::MAX))
                .map_err(StoreError::db)?
                .next_back()
                .transpose()
                .map_err(StoreError::db)?
                .map_or(0, |(key, _)| key.value().1);
            let number = last + 1;
            let now = now_ms();
            t.room_posts
                .insert((room, number), bytes.as_slice())
                .map_err(StoreError::db)?;
            t.room_post_ids
                .insert((room, id), (number, now))
                .map_err(StoreError::db)?;
            // Post numbers follow each other, so the posts beyond the last `keep` are those
            // numbered up to `number - keep`: usually the one oldest post.
            let cutoff = number.saturating_sub(keep);
            if cutoff > 0 {
                t.room_posts
                    .retain_in((room, 0)..=(room, cutoff), |_, _| false)
                    .map_err(StoreError::db)?;
            }
            let mut members = Vec::new();
            for entry in t
                .room_members
                .range((room, 0)..=(room, u128::MAX))
                .map_err(StoreError::db)?
            {
                members.push(entry.map_err(StoreError::db)?.0.value().1);
            }
            let mut delivered = Vec::new();
            for member in members {
                if t.message_ids
                    .get((member, id))
                    .map_err(StoreError::db)?
                    .is_some()
                {
                    continue;
                }
                let (last, count) = t.mailbox(member)?;
                if count >= max_pending {
                    continue;
                }
                let seq = last + 1;
                t.pending
                    .insert((member, seq), bytes.as_slice())
                    .map_err(StoreError::db)?;
                t.message_ids
                    .insert((member, id), (seq, now))
                    .map_err(StoreError::db)?;
                t.mailboxes
                    .insert(member, (seq, count + 1))
                    .map_err(StoreError::db)?;
                delivered.push((Uuid::from_u128(member), seq));
            }
            Ok(Posted::Posted { delivered })
        })
        .await
    }

    /// A page of a room's kept posts, oldest first: those numbered after `after` (0: from the
    /// first kept). The next page's cursor is the number of the page's last post, in decimal.
    async fn history(
        &self,
        room: &str,
        after: u64,
        limits: PageLimits,
    ) -> Result<Page<Envelope>, StoreError> {
        let room = room.to_owned();
        self.read(move |txn| {
            let posts = txn.open_table(ROOM_POSTS).map_err(StoreError::db)?;
            let room = room.as_str();
            let mut page = PageBuilder::new(limits);
            let mut last = None;
            let Some(first) = after.checked_add(1) else {
                return Ok(page.finish(None));
            };
            for entry in posts
                .range((room, first)..=(room, u64::MAX))
                .map_err(StoreError::db)?
            {
                let (key, value) = entry.map_err(StoreError::db)?;
                if page.push(decode_envelope(value.value())?).is_err() {
                    return Ok(page.finish(last.map(|n: u64| n.to_string())));
                }
                last = Some(key.value().1);
            }
            Ok(page.finish(None))
        })
        .await
    }

    /// Whether the store works: open, and not opening its database again after an I/O error
    /// (meanwhile every operation fails with [`StoreError::Unavailable`]).
    fn is_healthy(&self) -> bool {
        self.engine.is_healthy()
    }

    /// Finishes the queued writes and closes the file, so that it can be opened again. Later
    /// operations fail with [`StoreError::Closed`].
    async fn close(&self) {
        let engine = self.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.close()).await;
    }
}

/// The tables a room is read from, in one read transaction.
struct RoomView {
    groups: redb::ReadOnlyTable<&'static str, (u128, u8, u64, u64)>,
    members: redb::ReadOnlyTable<(&'static str, u128), u64>,
    user_rooms: redb::ReadOnlyTable<(u128, &'static str), u8>,
}

impl RoomView {
    fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(RoomView {
            groups: txn.open_table(ROOM_GROUPS).map_err(StoreError::db)?,
            members: txn.open_table(ROOM_MEMBERS).map_err(StoreError::db)?,
            user_rooms: txn.open_table(USER_ROOMS).map_err(StoreError::db)?,
        })
    }

    /// A room that exists, as `user` sees it.
    fn listed(&self, room: &str, user: u128) -> Result<ListedRoom, StoreError> {
        let (stored, _) = group_of(&self.groups, room)?;
        let member = self
            .members
            .get((room, user))
            .map_err(StoreError::db)?
            .is_some();
        let invited = self
            .user_rooms
            .get((user, room))
            .map_err(StoreError::db)?
            .is_some_and(|entry| entry.value() == INVITED);
        let membership = stored.membership(Uuid::from_u128(user), member, invited);
        Ok(ListedRoom {
            room: stored,
            membership,
        })
    }
}

/// The record of a room that exists, with the number its next member joins under. A room made
/// before rooms had owners has none: it is open, owned by nobody, and had no lasting members.
fn group_of(
    groups: &impl ReadableTable<&'static str, (u128, u8, u64, u64)>,
    room: &str,
) -> Result<(StoredRoom, u64), StoreError> {
    let (owner, access, count, next) = groups
        .get(room)
        .map_err(StoreError::db)?
        .map_or((0, 0, 0, 1), |entry| entry.value());
    let stored = StoredRoom {
        name: room.to_owned(),
        owner: Uuid::from_u128(owner),
        access: access_of(access),
        member_count: count,
    };
    Ok((stored, next))
}

fn put_group(t: &mut Tables<'_>, room: &StoredRoom, next: u64) -> Result<(), StoreError> {
    let value = (
        room.owner.as_u128(),
        access_code(room.access),
        room.member_count,
        next,
    );
    t.room_groups
        .insert(room.name.as_str(), value)
        .map_err(StoreError::db)?;
    Ok(())
}

fn join_in(
    t: &mut Tables<'_>,
    room: &str,
    user: u128,
    how: Admission,
    quotas: RoomQuotas,
) -> Result<Joined, StoreError> {
    let exists = t.rooms.get(room).map_err(StoreError::db)?.is_some();
    let joined = t
        .rooms_joined
        .get(user)
        .map_err(StoreError::db)?
        .map_or(0, |entry| entry.value());
    let (mut stored, next, created) = match (exists, how) {
        (true, Admission::Create(_)) => return Ok(Joined::Exists),
        (false, Admission::AddedBy(_)) => return Ok(Joined::UnknownRoom),
        (false, Admission::Create(_) | Admission::Join) => {
            let access = match how {
                Admission::Create(access) => access,
                _ => Access::Open,
            };
            let made = t
                .rooms_created
                .get(user)
                .map_err(StoreError::db)?
                .map_or(0, |entry| entry.value());
            if made >= quotas.max_created {
                return Ok(Joined::TooManyCreated);
            }
            // Not a room made only to be left empty because its maker may not join it.
            if joined >= quotas.max_joined {
                return Ok(Joined::TooManyJoined);
            }
            t.rooms.insert(room, now_ms()).map_err(StoreError::db)?;
            t.rooms_created
                .insert(user, made + 1)
                .map_err(StoreError::db)?;
            let stored = StoredRoom {
                name: room.to_owned(),
                owner: Uuid::from_u128(user),
                access,
                member_count: 0,
            };
            (stored, 1, true)
        }
        (true, _) => {
            let (stored, next) = group_of(&t.room_groups, room)?;
            (stored, next, false)
        }
    };
    if !created {
        if let Admission::AddedBy(by) = how
            && stored.owner != by
        {
            return Ok(Joined::NotTheOwner);
        }
        if t.users.get(user).map_err(StoreError::db)?.is_none() {
            return Ok(Joined::UnknownUser);
        }
        if t.room_members
            .get((room, user))
            .map_err(StoreError::db)?
            .is_some()
        {
            return Ok(Joined::AlreadyMember(stored));
        }
        let invited = t
            .user_rooms
            .get((user, room))
            .map_err(StoreError::db)?
            .is_some_and(|entry| entry.value() == INVITED);
        let admitted = stored.access == Access::Open
            || invited
            || stored.owner.as_u128() == user
            || matches!(how, Admission::AddedBy(_));
        if !admitted {
            return Ok(Joined::NotInvited);
        }
        if stored.member_count >= quotas.max_members {
            return Ok(Joined::RoomFull);
        }
        if joined >= quotas.max_joined {
            return Ok(Joined::TooManyJoined);
        }
    }
    t.room_members
        .insert((room, user), next)
        .map_err(StoreError::db)?;
    t.user_rooms
        .insert((user, room), MEMBER)
        .map_err(StoreError::db)?;
    t.rooms_joined
        .insert(user, joined + 1)
        .map_err(StoreError::db)?;
    stored.member_count += 1;
    put_group(t, &stored, next + 1)?;
    Ok(Joined::Joined {
        room: stored,
        created,
    })
}

fn leave_in(
    t: &mut Tables<'_>,
    room: &str,
    user: u128,
    by: Option<u128>,
) -> Result<Left, StoreError> {
    if t.rooms.get(room).map_err(StoreError::db)?.is_none() {
        return Ok(Left::UnknownRoom);
    }
    let (mut stored, next) = group_of(&t.room_groups, room)?;
    if let Some(by) = by
        && stored.owner.as_u128() != by
    {
        return Ok(Left::NotTheOwner);
    }
    if t.room_members
        .remove((room, user))
        .map_err(StoreError::db)?
        .is_none()
    {
        return Ok(Left::NotAMember);
    }
    t.user_rooms.remove((user, room)).map_err(StoreError::db)?;
    let joined = t
        .rooms_joined
        .get(user)
        .map_err(StoreError::db)?
        .map_or(0, |entry| entry.value());
    t.rooms_joined
        .insert(user, joined.saturating_sub(1))
        .map_err(StoreError::db)?;
    stored.member_count = stored.member_count.saturating_sub(1);
    if stored.owner.as_u128() == user {
        // The longest-standing member takes over; an empty room keeps its owner.
        let mut heir: Option<(u64, u128)> = None;
        for entry in t
            .room_members
            .range((room, 0)..=(room, u128::MAX))
            .map_err(StoreError::db)?
        {
            let (key, number) = entry.map_err(StoreError::db)?;
            let candidate = (number.value(), key.value().1);
            if heir.is_none_or(|heir| candidate < heir) {
                heir = Some(candidate);
            }
        }
        if let Some((_, heir)) = heir {
            stored.owner = Uuid::from_u128(heir);
        }
    }
    put_group(t, &stored, next)?;
    Ok(Left::Left { room: stored })
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("open", &self.engine.is_open())
            .field("healthy", &self.engine.is_healthy())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_api::{Destination, Path as MsgPath, Sender};

    fn envelope(to: Uuid, text: &str) -> Envelope {
        Envelope {
            id: Uuid::new_v4(),
            from: Sender {
                id: Uuid::new_v4(),
                name: "a".into(),
            },
            to: Destination::User(to),
            text: text.into(),
            sent_at_ms: 1,
            path: MsgPath::Stored,
            file: None,
        }
    }

    #[tokio::test]
    async fn relay_is_idempotent_and_ack_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let bob = Uuid::new_v4();
        assert_eq!(
            store.bind(bob, "bob", "s", None).await.unwrap(),
            Binding::Created
        );
        assert_eq!(
            store.bind(bob, "bob", "x", Some("x")).await.unwrap(),
            Binding::Stale
        );
        let m1 = envelope(bob, "one");
        let m2 = envelope(bob, "two");
        assert_eq!(
            store.relay(bob, &m1, 10).await.unwrap(),
            Relayed::Stored { seq: 1 }
        );
        assert_eq!(
            store.relay(bob, &m1, 10).await.unwrap(),
            Relayed::Duplicate {
                acknowledged: false
            }
        );
        assert_eq!(
            store.relay(bob, &m2, 10).await.unwrap(),
            Relayed::Stored { seq: 2 }
        );
        let mailbox = store.mailbox(bob, 0, 100).await.unwrap();
        assert_eq!(mailbox.last_seq, 2);
        assert_eq!(mailbox.messages, vec![(1, m1.clone()), (2, m2.clone())]);
        let page = store.mailbox(bob, 0, 1).await.unwrap();
        assert_eq!((page.messages, page.last_seq), (vec![(1, m1.clone())], 2));
        let page = store.mailbox(bob, 1, 1).await.unwrap();
        assert_eq!(page.messages, vec![(2, m2.clone())]);
        assert_eq!(store.ack(bob, &[m1.id, m1.id]).await.unwrap(), 1);
        assert_eq!(
            store.relay(bob, &m1, 10).await.unwrap(),
            Relayed::Duplicate { acknowledged: true }
        );
        assert_eq!(
            store.mailbox(bob, 0, 100).await.unwrap().messages,
            vec![(2, m2)]
        );
        assert_eq!(
            store.relay(Uuid::new_v4(), &m1, 10).await.unwrap(),
            Relayed::UnknownRecipient
        );
        store.close().await;
        assert_eq!(store.mailbox(bob, 0, 100).await, Err(StoreError::Closed));
    }

    #[tokio::test]
    async fn a_database_of_the_format_before_accounts_is_migrated() {
        #[derive(serde::Serialize)]
        struct OldUser {
            name: &'static str,
            salt: [u8; 16],
            hash: [u8; 32],
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        let (ann, bob, other_ann) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let old = redb::TableDefinition::<u128, &[u8]>::new("users");
                let mut users = txn.open_table(old).unwrap();
                for (id, name) in [(ann, "Ann"), (bob, "bob"), (other_ann, "ANN")] {
                    let user = OldUser {
                        name,
                        salt: [1; 16],
                        hash: [2; 32],
                    };
                    users
                        .insert(id.as_u128(), encode(&user).unwrap().as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let account = store.user(ann).await.unwrap().unwrap();
        assert_eq!(account.name, "Ann");
        assert_eq!(
            account.credential,
            crate::password::legacy_credential(&[1; 16], &[2; 32])
        );
        assert_eq!(store.user_by_name("ann").await.unwrap().unwrap().0, ann);
        assert_eq!(store.user_by_name("BOB").await.unwrap().unwrap().0, bob);
        // The one whose name was taken first keeps the account, not the name.
        assert_eq!(store.user(other_ann).await.unwrap().unwrap().name, "ANN");
        // Migrated users are known recipients.
        assert_eq!(
            store.relay(bob, &envelope(bob, "hi"), 10).await.unwrap(),
            Relayed::Stored { seq: 1 }
        );
        store.close().await;
        // Opened again: migrated once, nothing lost.
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.user_by_name("Ann").await.unwrap().unwrap().0, ann);
        assert_eq!(store.mailbox(bob, 0, 10).await.unwrap().messages.len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn mailbox_limit_and_room_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let store = RedbStore::open(&path).unwrap();
        let bob = Uuid::new_v4();
        store.bind(bob, "bob", "s", None).await.unwrap();
        store.relay(bob, &envelope(bob, "1"), 1).await.unwrap();
        assert_eq!(
            store.relay(bob, &envelope(bob, "2"), 1).await.unwrap(),
            Relayed::MailboxFull
        );
        let quotas = RoomQuotas {
            max_created: 2,
            max_joined: 10,
            max_members: 10,
        };
        let create = Admission::Create(Access::Open);
        assert!(matches!(
            store.join_room("lobby", bob, create, quotas).await.unwrap(),
            Joined::Joined { created: true, .. }
        ));
        assert_eq!(
            store.join_room("lobby", bob, create, quotas).await.unwrap(),
            Joined::Exists
        );
        assert!(matches!(
            store.join_room("hall", bob, create, quotas).await.unwrap(),
            Joined::Joined { created: true, .. }
        ));
        assert_eq!(
            store.join_room("attic", bob, create, quotas).await.unwrap(),
            Joined::TooManyCreated
        );
        let posts: Vec<_> = (0..5).map(|i| envelope(bob, &i.to_string())).collect();
        for post in &posts {
            assert!(matches!(
                store.post("lobby", bob, post, 3, 100).await.unwrap(),
                Posted::Posted { .. }
            ));
        }
        // A post no longer kept is still known by its id: posting it again adds nothing.
        assert_eq!(
            store.post("lobby", bob, &posts[0], 3, 100).await.unwrap(),
            Posted::Duplicate
        );
        store.close().await;
        // Reopening finds everything.
        let store = RedbStore::open(&path).unwrap();
        let all = PageLimits {
            items: 100,
            bytes: 1 << 20,
        };
        let history = store.history("lobby", 0, all).await.unwrap();
        assert_eq!((history.items, history.next), (posts[2..].to_vec(), None));
        let two = PageLimits { items: 2, ..all };
        let first = store.history("lobby", 0, two).await.unwrap();
        assert_eq!(first.items, posts[2..4].to_vec());
        let after = first.next.unwrap().parse().unwrap();
        let rest = store.history("lobby", after, two).await.unwrap();
        assert_eq!((rest.items, rest.next), (posts[4..].to_vec(), None));
        assert_eq!(store.rooms().await.unwrap(), ["hall", "lobby"]);
        assert_eq!(
            store.join_room("attic", bob, create, quotas).await.unwrap(),
            Joined::TooManyCreated
        );
        // The relayed message and the five posts (the mailbox limit was 1 for relays only).
        assert_eq!(store.mailbox(bob, 0, 100).await.unwrap().messages.len(), 6);
        assert_eq!(store.user(bob).await.unwrap().unwrap().name, "bob");
        store.close().await;
    }
}
