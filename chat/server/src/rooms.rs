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

use chat_api::{
    Access, ChatError, Destination, Envelope, InboxItem, MAX_ROOM_CHARS, Membership, Page, Path,
    RoomEvent, RoomInfo, Sender, excerpt,
};
use tracing::debug;
use uuid::Uuid;

use crate::by_name::{ByName, NameCursor};
use crate::page::{PageBuilder, PageLimits};
use crate::state::{Session, Shared, storage_error};
use crate::store::RoomCreated;
use crate::validate;

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
        if self.lock().contains_key(&name) {
            return Err(ChatError::RoomExists(name));
        }
        // Not a room made only to be left empty because its maker may not join it.
        check_joined(shared, session)?;
        let room = match self.create_stored(shared, session, &name).await? {
            RoomCreated::Created => self.installed(&name),
            _ => return Err(ChatError::RoomExists(name)),
        };
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
        let existing = self.lock().get(&name).cloned();
        let room = match existing {
            Some(room) => room,
            None => {
                check_joined(shared, session)?;
                // Made by this call or, a moment ago, by another: joined either way.
                self.create_stored(shared, session, &name).await?;
                self.installed(&name)
            }
        };
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
        notify(shared, &members, &InboxItem::Room(event)).await;
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
                notify(shared, &members, &InboxItem::Room(event)).await;
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
            notify(shared, &members, &InboxItem::Message(envelope)).await;
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
                owner: Uuid::nil(),               // PLACEHOLDER(groups)
                access: Access::Open,             // PLACEHOLDER(groups)
                membership: Membership::Outsider, // PLACEHOLDER(groups)
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

    /// Records a new room in the store, within its maker's quota. A room is in the map only
    /// once it is stored, so that the rooms listed are the rooms kept; when two calls make the
    /// same room at once, the store tells which made it.
    async fn create_stored(
        &self,
        shared: &Shared,
        session: &Session,
        name: &str,
    ) -> Result<RoomCreated, ChatError> {
        let max = u64::from(shared.settings.max_rooms_created);
        let created = shared
            .store
            .create_room(name, session.info.id, max)
            .await
            .map_err(storage_error)?;
        if created == RoomCreated::QuotaReached {
            return Err(ChatError::Quota(format!(
                "you have made {max} rooms, the most one user may make"
            )));
        }
        Ok(created)
    }

    /// The room of this name, put in the map if it is not there yet.
    fn installed(&self, name: &str) -> Arc<Room> {
        self.lock()
            .entry(name.to_owned())
            .or_insert_with(|| Room::new(name.to_owned()))
            .clone()
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
        if !members.contains(&session.info.id) {
            check_joined(shared, session)?;
        }
        if members.insert(session.sender()).is_none() {
            room.counted(&members);
            session.rooms().insert(room.name.clone());
            let event = RoomEvent::Joined {
                room: room.name.clone(),
                user: session.sender(),
            };
            notify(shared, &members, &InboxItem::Room(event)).await;
        }
        Ok(RoomInfo {
            name: room.name.clone(),
            member_count: room.member_count.load(Ordering::Relaxed),
            owner: Uuid::nil(),             // PLACEHOLDER(groups)
            access: Access::Open,           // PLACEHOLDER(groups)
            membership: Membership::Member, // PLACEHOLDER(groups)
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

/// Refuses a join beyond the number of rooms one user may be in.
fn check_joined(shared: &Shared, session: &Session) -> Result<(), ChatError> {
    let max = shared.settings.max_rooms_joined;
    if session.rooms().len() >= usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(ChatError::Quota(format!(
            "you are in {max} rooms, the most one user may be in; leave one first"
        )));
    }
    Ok(())
}

/// Pushes an item to the open inbox of every member, on whichever node they are.
async fn notify(shared: &Shared, members: &ByName<Sender>, item: &InboxItem) {
    let ids: Vec<Uuid> = members.ids().copied().collect();
    shared.push_everywhere(&ids, item).await;
}
