//! Rooms: named groups whose members get each other's posts and are told who joins and leaves.
//!
//! Room names and their last posts are stored; membership is not: it is bound to presence, so a
//! user whose session ends leaves every room. A room's member list is behind an async lock held
//! while a post is committed and fanned out, so every member sees the room's posts in the order
//! of its history.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::debug;
use uuid::Uuid;

use super::inbox::Live;
use super::state::{Session, Shared, storage_error};
use super::validate;
use crate::chat::api::{
    ChatError, Destination, Envelope, InboxItem, Path, RoomEvent, RoomInfo, Sender,
};
use crate::chat::excerpt;

/// Every room.
#[derive(Debug)]
pub(crate) struct Rooms {
    map: Mutex<HashMap<String, Arc<Room>>>,
}

#[derive(Debug)]
struct Room {
    name: String,
    members: tokio::sync::Mutex<BTreeMap<Uuid, Sender>>,
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
            if let Ok(room) = self.room(&name)
                && let Some(member) = room.members.lock().await.get_mut(&session.info.id)
            {
                *member = session.sender();
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
        if !members.contains_key(&session.info.id) {
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

    /// Every room with its members, by name.
    pub(crate) async fn list(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<Arc<Room>> = self.lock().values().cloned().collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            let members = room.members.lock().await;
            out.push(info(&room.name, &members));
        }
        out
    }

    /// A room's kept posts, oldest first.
    pub(crate) async fn history(
        &self,
        shared: &Shared,
        name: &str,
    ) -> Result<Vec<Envelope>, ChatError> {
        self.room(name)?;
        shared.store.history(name).await.map_err(storage_error)
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
        if members.insert(session.info.id, session.sender()).is_none() {
            session.rooms().insert(room.name.clone());
            let event = RoomEvent::Joined {
                room: room.name.clone(),
                user: session.sender(),
            };
            notify(shared, &members, &InboxItem::Room(event));
        }
        Ok(info(&room.name, &members))
    }

    fn room(&self, name: &str) -> Result<Arc<Room>, ChatError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ChatError::UnknownRoom(excerpt(name).into_owned()))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        // Each mutation is one insert or remove: a poisoned lock is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Room {
    fn new(name: String) -> Arc<Room> {
        Arc::new(Room {
            name,
            members: tokio::sync::Mutex::default(),
        })
    }
}

/// Pushes an item to the open inbox of every member.
fn notify(shared: &Shared, members: &BTreeMap<Uuid, Sender>, item: &InboxItem) {
    for id in members.keys() {
        if let Some(member) = shared.session_of(*id) {
            member.inbox.push(Live::Item(item.clone()));
        }
    }
}

fn info(name: &str, members: &BTreeMap<Uuid, Sender>) -> RoomInfo {
    let mut members: Vec<Sender> = members.values().cloned().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    RoomInfo {
        name: name.to_owned(),
        members,
    }
}
