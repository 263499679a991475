//! Rooms: named groups whose members get each other's posts and are told who joins and leaves.
//!
//! Room names and their last posts are stored; membership is not: it is bound to presence, so a
//! user whose session ends leaves every room. A room's member list is behind an async lock held
//! while a post is committed and fanned out, so every member sees the room's posts in the order
//! of its history. Rooms, members and posts are listed a page at a time.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::debug;
use uuid::Uuid;

use super::by_name::{ByName, NameCursor};
use super::inbox::Live;
use super::state::{Session, Shared, storage_error};
use super::validate;
use crate::chat::api::{
    ChatError, Destination, Envelope, InboxItem, MAX_ROOM_CHARS, Page, Path, RoomEvent, RoomInfo,
    Sender,
};
use crate::chat::excerpt;
use crate::chat::page::{PageBuilder, PageLimits};

/// Every room, by name.
#[derive(Debug)]
pub(crate) struct Rooms {
    map: Mutex<BTreeMap<String, Arc<Room>>>,
}

#[derive(Debug)]
struct Room {
    name: String,
    members: tokio::sync::Mutex<ByName<Sender>>,
    /// How many members there are, kept with `members` so that listing rooms need not wait
    /// for each room's lock.
    member_count: AtomicU32,
}

impl Rooms {
    /// The rooms found in the store, without members.
    pub(crate) fn new(names: Vec<String>) -> Self {
        Rooms {
            map: Mutex::new(
                names
                    .into_iter()
                    .map(|n| (n.clone(), Room::new(n)))
                    .collect(),
            ),
        }
    }

    /// Creates a room and joins it.
    pub(crate) async fn create(
        &self,
        shared: &Shared,
        session: &Arc<Session>,
        name: String,
    ) -> Result<RoomInfo, ChatError> {
        validate::room_name(&name)?;
        let room = {
            let mut map = self.lock();
            if map.contains_key(&name) {
                return Err(ChatError::RoomExists(name));
            }
            let room = Room::new(name.clone());
            map.insert(name.clone(), room.clone());
            room
        };
        if let Err(e) = shared.store.create_room(&name).await {
            self.lock().remove(&name);
            return Err(storage_error(e));
        }
        debug!(room = %name, by = %session.info.id, "room created");
        self.join_room(shared, session, &room).await
    }

    /// Joins a room, creating it if needed.
    pub(crate) async fn join(
        &self,
        shared: &Shared,
        session: &Arc<Session>,
        name: String,
    ) -> Result<RoomInfo, ChatError> {
        validate::room_name(&name)?;
        let (room, created) = {
            let mut map = self.lock();
            match map.get(&name) {
                Some(room) => (room.clone(), false),
                None => {
                    let room = Room::new(name.clone());
                    map.insert(name.clone(), room.clone());
                    (room, true)
                }
            }
        };
        if created && let Err(e) = shared.store.create_room(&name).await {
            self.lock().remove(&name);
            return Err(storage_error(e));
        }
        self.join_room(shared, session, &room).await
    }

    /// Leaves a room; the remaining members are told.
    pub(crate) async fn leave(
        &self,
        shared: &Shared,
        session: &Arc<Session>,
        name: String,
    ) -> Result<(), ChatError> {
        let room = self.room(&name)?;
        let _user = shared.lock_user(session.info.id).await;
        shared.session(&session.token)?;
        let mut members = room.members.lock().await;
        if members.remove(&session.info.id).is_none() {
            return Err(ChatError::NotAMember(name));
        }
        room.counted(&members);
        session.rooms().remove(&name);
        let event = RoomEvent::Left {
            room: name,
            user: session.sender(),
        };
        notify(shared, &members, &InboxItem::Room(event));
        Ok(())
    }

    /// Takes a user whose session ended out of every room.
    pub(crate) async fn leave_all(&self, shared: &Shared, session: &Session) {
        let names = std::mem::take(&mut *session.rooms());
        for name in names {
            let Ok(room) = self.room(&name) else { continue };
            let mut members = room.members.lock().await;
            if members.remove(&session.info.id).is_some() {
                room.counted(&members);
                let event = RoomEvent::Left {
                    room: name,
                    user: session.sender(),
                };
                notify(shared, &members, &InboxItem::Room(event));
            }
        }
    }

    /// Updates a member's name in their rooms after they registered again under another.
    pub(crate) async fn rename(&self, session: &Session) {
        let names: Vec<String> = session.rooms().iter().cloned().collect();
        for name in names {
            if let Ok(room) = self.room(&name) {
                let mut members = room.members.lock().await;
                if members.contains(&session.info.id) {
                    members.insert(session.sender());
                }
            }
        }
    }

    /// Posts in a room: stored in its history, then sent to every member (the poster too).
    pub(crate) async fn post(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
        envelope: (Uuid, String, u64),
    ) -> Result<(), ChatError> {
        let (id, text, sent_at_ms) = envelope;
        validate::text(&text)?;
        let room = self.room(&name)?;
        let members = room.members.lock().await;
        if !members.contains(&session.info.id) {
            return Err(ChatError::NotAMember(name));
        }
        let envelope = Envelope {
            id,
            from: session.sender(),
            to: Destination::Room(name.clone()),
            text,
            sent_at_ms,
            path: Path::Room,
        };
        let fresh = shared
            .store
            .post(&name, &envelope, shared.settings.room_history)
            .await
            .map_err(storage_error)?;
        if fresh {
            debug!(room = %name, from = %session.info.id, post = %id, "posted");
            notify(shared, &members, &InboxItem::Message(envelope));
        }
        Ok(())
    }

    /// A page of the rooms, by name, with how many members each has.
    pub(crate) fn page(
        &self,
        after: Option<String>,
        limits: PageLimits,
    ) -> Result<Page<RoomInfo>, ChatError> {
        let start = match after {
            // Any name sorts somewhere, but a longer one no room has: refused as not a cursor.
            Some(after) if after.chars().count() > MAX_ROOM_CHARS => {
                return Err(ChatError::Invalid("not a cursor this list gave".into()));
            }
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let map = self.lock();
        let mut page = PageBuilder::new(limits);
        let mut last: Option<&str> = None;
        for (name, room) in map.range((start, Bound::Unbounded)) {
            let info = RoomInfo {
                name: name.clone(),
                member_count: room.member_count.load(Ordering::Relaxed),
            };
            if page.push(info).is_err() {
                return Ok(page.finish(last.map(str::to_owned)));
            }
            last = Some(name);
        }
        Ok(page.finish(None))
    }

    /// A page of a room's members, by name then id.
    pub(crate) async fn members(
        &self,
        name: &str,
        after: Option<String>,
        limits: PageLimits,
    ) -> Result<Page<Sender>, ChatError> {
        let after = after.as_deref().map(NameCursor::parse).transpose()?;
        let room = self.room(name)?;
        let members = room.members.lock().await;
        Ok(members.page(after.as_ref(), limits, Sender::clone))
    }

    /// A page of a room's kept posts, oldest first.
    pub(crate) async fn history(
        &self,
        shared: &Shared,
        name: &str,
        after: Option<String>,
        limits: PageLimits,
    ) -> Result<Page<Envelope>, ChatError> {
        let after = match after {
            None => 0,
            Some(after) => after
                .parse()
                .map_err(|_| ChatError::Invalid("not a cursor this list gave".into()))?,
        };
        self.room(name)?;
        shared
            .store
            .history(name, after, limits)
            .await
            .map_err(storage_error)
    }

    async fn join_room(
        &self,
        shared: &Shared,
        session: &Arc<Session>,
        room: &Room,
    ) -> Result<RoomInfo, ChatError> {
        let _user = shared.lock_user(session.info.id).await;
        // The session may have ended or been replaced while this call waited.
        shared.session(&session.token)?;
        let mut members = room.members.lock().await;
        if members.insert(session.sender()).is_none() {
            room.counted(&members);
            session.rooms().insert(room.name.clone());
            let event = RoomEvent::Joined {
                room: room.name.clone(),
                user: session.sender(),
            };
            notify(shared, &members, &InboxItem::Room(event));
        }
        Ok(RoomInfo {
            name: room.name.clone(),
            member_count: room.member_count.load(Ordering::Relaxed),
        })
    }

    fn room(&self, name: &str) -> Result<Arc<Room>, ChatError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ChatError::UnknownRoom(excerpt(name).into_owned()))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Room>>> {
        // Each mutation is one insert or remove: a poisoned lock is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Room {
    fn new(name: String) -> Arc<Room> {
        Arc::new(Room {
            name,
            members: tokio::sync::Mutex::default(),
            member_count: AtomicU32::new(0),
        })
    }

    /// Records how many members there are now; called under the members' lock after a change.
    fn counted(&self, members: &ByName<Sender>) {
        let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
        self.member_count.store(count, Ordering::Relaxed);
    }
}

/// Pushes an item to the open inbox of every member.
fn notify(shared: &Shared, members: &ByName<Sender>, item: &InboxItem) {
    for id in members.ids() {
        if let Some(member) = shared.session_of(*id) {
            member.inbox.push(Live::Item(item.clone()));
        }
    }
}
