//! Rooms and groups: named sets of users whose members get each other's posts and are told who
//! joins, leaves and is removed.
//!
//! Everything about a room is in the store, which is the authority every node asks: its owner
//! (its maker, or the longest-standing member when the owner left), its access (open, or
//! invite-only: a group), its members and invitations, and its last posts. Membership lasts
//! across sessions until the member leaves or the owner removes them; a session that ends
//! leaves no room.
//!
//! A post is committed to the room's history and, in the same transaction, to the mailbox of
//! every member (see [`Store::post`](crate::store::Store::post)); then it is pushed at once to
//! the members whose sessions this node holds and the nodes holding the others are woken to
//! read it from the store. Members offline find it in their mailbox when their inbox opens, and
//! acknowledge it like a relayed message. The store numbers each room's posts and each
//! mailbox's messages in one order, so every member gets a room's posts in the order of its
//! history. Room events (joins, leaves, removals, invitations) are not stored: they reach the
//! inboxes open at the time, on any node.

use chat_api::{
    Access, ChatError, Destination, Envelope, InboxItem, MAX_ROOM_CHARS, Membership, Page, Path,
    RoomEvent, RoomInfo, Sender, excerpt,
};
use tracing::debug;
use uuid::Uuid;

use crate::by_name::{ByName, NameCursor};
use crate::inbox::Live;
use crate::page::{PageBuilder, PageLimits};
use crate::state::{Session, Shared, storage_error};
use crate::store::{
    Admission, Invited, Joined, Left, ListedRoom, Posted, RoomFilter, RoomQuotas, StoredRoom,
};
use crate::validate;

/// Rooms and groups, all kept in the store (see the [module's](self) documentation).
#[derive(Debug, Default)]
pub(crate) struct Rooms {}

impl Rooms {
    /// Creates a room owned by the caller and joins it.
    pub(crate) async fn create(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
        access: Access,
    ) -> Result<RoomInfo, ChatError> {
        validate::room_name(&name)?;
        let joined = self
            .admit(shared, &name, session.info.id, Admission::Create(access))
            .await?;
        debug!(room = %name, by = %session.info.id, ?access, "room created");
        self.joined(shared, session.sender(), &name, joined).await
    }

    /// Joins a room: an open one (made if it does not exist), or a group the caller was
    /// invited to.
    pub(crate) async fn join(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
    ) -> Result<RoomInfo, ChatError> {
        validate::room_name(&name)?;
        let joined = self
            .admit(shared, &name, session.info.id, Admission::Join)
            .await?;
        self.joined(shared, session.sender(), &name, joined).await
    }

    /// Adds a user to the caller's room (the owner only); the members and the user are told.
    pub(crate) async fn add_member(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
        user: Uuid,
    ) -> Result<(), ChatError> {
        existing(&name)?;
        let who = shared
            .store
            .user(user)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ChatError::UnknownUser(user.to_string()))?;
        let added = Sender {
            id: user,
            name: who.name,
        };
        let joined = self
            .admit(shared, &name, user, Admission::AddedBy(session.info.id))
            .await?;
        self.joined(shared, added, &name, joined).await?;
        Ok(())
    }

    /// Leaves a room for good; the remaining members are told.
    pub(crate) async fn leave(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
    ) -> Result<(), ChatError> {
        existing(&name)?;
        let left = shared
            .store
            .leave_room(&name, session.info.id, None)
            .await
            .map_err(storage_error)?;
        let room = left_room(left, &name)?;
        debug!(room = %name, user = %session.info.id, owner = %room.owner, "left");
        let event = RoomEvent::Left {
            room: name.clone(),
            user: session.sender(),
        };
        self.tell_members(shared, &name, &[], InboxItem::Room(event))
            .await;
        Ok(())
    }

    /// Removes a member from the caller's room (the owner only); the remaining members and the
    /// removed user are told.
    pub(crate) async fn remove_member(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
        user: Uuid,
    ) -> Result<(), ChatError> {
        existing(&name)?;
        let left = shared
            .store
            .leave_room(&name, user, Some(session.info.id))
            .await
            .map_err(storage_error)?;
        left_room(left, &name)?;
        let removed = Sender {
            id: user,
            name: self.name_of(shared, user).await?,
        };
        debug!(room = %name, %user, by = %session.info.id, "removed");
        let event = RoomEvent::Removed {
            room: name.clone(),
            user: removed,
            by: session.sender(),
        };
        self.tell_members(shared, &name, &[user], InboxItem::Room(event))
            .await;
        Ok(())
    }

    /// Invites a user to a room the caller is a member of; the user is told.
    pub(crate) async fn invite(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
        user: Uuid,
    ) -> Result<(), ChatError> {
        existing(&name)?;
        let invited = shared
            .store
            .invite(&name, session.info.id, user)
            .await
            .map_err(storage_error)?;
        match invited {
            Invited::Invited(_) => {
                debug!(room = %name, %user, by = %session.info.id, "invited");
                let event = RoomEvent::Invited {
                    room: name,
                    by: session.sender(),
                };
                shared
                    .push_everywhere(&[user], &InboxItem::Room(event))
                    .await;
                Ok(())
            }
            Invited::AlreadyIn => Ok(()),
            Invited::UnknownRoom => Err(unknown_room(&name)),
            Invited::NotAMember => Err(ChatError::NotAMember(name)),
            Invited::UnknownUser => Err(ChatError::UnknownUser(user.to_string())),
        }
    }

    /// Posts in a room: committed to its history and its members' mailboxes, then pushed to
    /// the members online here and woken on the nodes of the others.
    pub(crate) async fn post(
        &self,
        shared: &Shared,
        session: &Session,
        name: String,
        envelope: (Uuid, String, u64),
    ) -> Result<(), ChatError> {
        let (id, text, sent_at_ms) = envelope;
        existing(&name)?;
        validate::text(&text)?;
        let envelope = Envelope {
            id,
            from: session.sender(),
            to: Destination::Room(name.clone()),
            text,
            sent_at_ms,
            path: Path::Room,
            file: None,
        };
        let posted = shared
            .store
            .post(
                &name,
                session.info.id,
                &envelope,
                shared.settings.room_history,
                shared.settings.max_pending,
            )
            .await
            .map_err(storage_error)?;
        let delivered = match posted {
            Posted::Posted { delivered } => delivered,
            Posted::Duplicate => {
                debug!(room = %name, post = %id, "posted again; ignored");
                return Ok(());
            }
            Posted::UnknownRoom => return Err(unknown_room(&name)),
            Posted::NotAMember => return Err(ChatError::NotAMember(name)),
        };
        let mut wakes = Vec::new();
        for (member, seq) in delivered {
            let envelope = envelope.clone();
            let pushed = shared
                .session_of(member)
                .is_some_and(|s| s.inbox.push(Live::Message { seq, envelope }));
            if pushed {
                continue;
            }
            if let Some(node) = shared.presence.node_of(member)
                && node != shared.server_id
            {
                wakes.push(async move {
                    shared
                        .nodes
                        .wake(&*shared.registry, &node, member, seq)
                        .await
                });
            }
        }
        // Members on other nodes are woken all at once; one that is not reached reads the
        // post from its mailbox when its inbox opens again.
        let woken = futures::future::join_all(wakes).await;
        debug!(
            room = %name,
            from = %session.info.id,
            post = %id,
            woken = woken.iter().filter(|w| **w).count(),
            "posted"
        );
        Ok(())
    }

    /// A page of the rooms `filter` lets the caller see, by name.
    pub(crate) async fn page(
        &self,
        shared: &Shared,
        session: &Session,
        filter: RoomFilter,
        after: Option<String>,
        limits: PageLimits,
    ) -> Result<Page<RoomInfo>, ChatError> {
        if after
            .as_ref()
            .is_some_and(|after| after.chars().count() > MAX_ROOM_CHARS)
        {
            // Any name sorts somewhere, but a longer one no room has: not a cursor.
            return Err(ChatError::Invalid("not a cursor this list gave".into()));
        }
        // One more than the page holds tells whether the list goes on.
        let listed = shared
            .store
            .room_list(
                session.info.id,
                filter,
                after,
                limits.items.saturating_add(1),
            )
            .await
            .map_err(storage_error)?;
        let mut page = PageBuilder::new(limits);
        let mut last: Option<String> = None;
        for listed in listed {
            let name = listed.room.name.clone();
            if page.push(info(listed)).is_err() {
                return Ok(page.finish(last));
            }
            last = Some(name);
        }
        Ok(page.finish(None))
    }

    /// A page of a room's members, by name then id; members only.
    pub(crate) async fn members(
        &self,
        shared: &Shared,
        session: &Session,
        name: &str,
        after: Option<String>,
        limits: PageLimits,
    ) -> Result<Page<Sender>, ChatError> {
        let after = after.as_deref().map(NameCursor::parse).transpose()?;
        self.check_member(shared, session, name).await?;
        let mut members = ByName::default();
        for member in shared.store.members(name).await.map_err(storage_error)? {
            members.insert(member);
        }
        Ok(members.page(after.as_ref(), limits, Sender::clone))
    }

    /// A page of a room's kept posts, oldest first; members only.
    pub(crate) async fn history(
        &self,
        shared: &Shared,
        session: &Session,
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
        self.check_member(shared, session, name).await?;
        shared
            .store
            .history(name, after, limits)
            .await
            .map_err(storage_error)
    }

    /// Asks the store to bring `user` in, answering the refusals as errors.
    async fn admit(
        &self,
        shared: &Shared,
        name: &str,
        user: Uuid,
        how: Admission,
    ) -> Result<Joined, ChatError> {
        let settings = &shared.settings;
        let quotas = RoomQuotas {
            max_created: u64::from(settings.max_rooms_created),
            max_joined: u64::from(settings.max_rooms_joined),
            max_members: u64::from(settings.max_room_members),
        };
        let joined = shared
            .store
            .join_room(name, user, how, quotas)
            .await
            .map_err(storage_error)?;
        let owned = || name.to_owned();
        match joined {
            Joined::Joined { .. } | Joined::AlreadyMember(_) => Ok(joined),
            Joined::Exists => Err(ChatError::RoomExists(owned())),
            Joined::UnknownRoom => Err(unknown_room(name)),
            Joined::UnknownUser => Err(ChatError::UnknownUser(user.to_string())),
            Joined::NotInvited => Err(ChatError::NotInvited(owned())),
            Joined::NotTheOwner => Err(ChatError::NotTheOwner(owned())),
            Joined::TooManyCreated => Err(ChatError::Quota(format!(
                "you have made {} rooms, the most one user may make",
                quotas.max_created
            ))),
            Joined::TooManyJoined if matches!(how, Admission::AddedBy(_)) => {
                Err(ChatError::Quota(format!(
                    "{user} is in {} rooms, the most one user may be in",
                    quotas.max_joined
                )))
            }
            Joined::TooManyJoined => Err(ChatError::Quota(format!(
                "you are in {} rooms, the most one user may be in; leave one first",
                quotas.max_joined
            ))),
            Joined::RoomFull => Err(ChatError::Quota(format!(
                "room {name:?} has {} members, the most a room may have",
                quotas.max_members
            ))),
        }
    }

    /// Tells the members that `user` joined, if they just did; the room as `user` sees it.
    async fn joined(
        &self,
        shared: &Shared,
        user: Sender,
        name: &str,
        joined: Joined,
    ) -> Result<RoomInfo, ChatError> {
        let (room, new) = match joined {
            Joined::Joined { room, .. } => (room, true),
            Joined::AlreadyMember(room) => (room, false),
            _ => return Err(unknown_room(name)),
        };
        let membership = room.membership(user.id, true, false);
        if new {
            debug!(room = %name, user = %user.id, "joined");
            let event = RoomEvent::Joined {
                room: name.to_owned(),
                user,
            };
            self.tell_members(shared, name, &[], InboxItem::Room(event))
                .await;
        }
        Ok(info(ListedRoom { room, membership }))
    }

    /// Pushes `item` to every member of the room and to `also`, on whichever node they are.
    async fn tell_members(&self, shared: &Shared, name: &str, also: &[Uuid], item: InboxItem) {
        let mut users = also.to_vec();
        match shared.store.members(name).await {
            Ok(members) => users.extend(members.into_iter().map(|m| m.id)),
            // The change is made; only the telling failed (the members see it in the lists).
            Err(e) => debug!(room = %name, "reading the members to tell them: {e}"),
        }
        shared.push_everywhere(&users, &item).await;
    }

    /// Refuses a caller who is not a member of the room.
    async fn check_member(
        &self,
        shared: &Shared,
        session: &Session,
        name: &str,
    ) -> Result<(), ChatError> {
        existing(name)?;
        let listed = shared
            .store
            .room(name, session.info.id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| unknown_room(name))?;
        match listed.membership {
            Membership::Owner | Membership::Member => Ok(()),
            Membership::Invited | Membership::Outsider => {
                Err(ChatError::NotAMember(name.to_owned()))
            }
        }
    }

    /// A user's name as last registered ("" for an id never registered).
    async fn name_of(&self, shared: &Shared, user: Uuid) -> Result<String, ChatError> {
        let stored = shared.store.user(user).await.map_err(storage_error)?;
        Ok(stored.map(|u| u.name).unwrap_or_default())
    }
}

/// The room a leave or removal left, or why it did not happen.
fn left_room(left: Left, name: &str) -> Result<StoredRoom, ChatError> {
    match left {
        Left::Left { room } => Ok(room),
        Left::UnknownRoom => Err(unknown_room(name)),
        Left::NotAMember => Err(ChatError::NotAMember(name.to_owned())),
        Left::NotTheOwner => Err(ChatError::NotTheOwner(name.to_owned())),
    }
}

/// A room as the caller sees it.
fn info(listed: ListedRoom) -> RoomInfo {
    RoomInfo {
        name: listed.room.name,
        member_count: u32::try_from(listed.room.member_count).unwrap_or(u32::MAX),
        owner: listed.room.owner,
        access: listed.room.access,
        membership: listed.membership,
    }
}

/// Refuses a name no room can have as the name of no room (quoting only its start).
fn existing(name: &str) -> Result<(), ChatError> {
    validate::room_name(name).map_err(|_| unknown_room(name))
}

fn unknown_room(name: &str) -> ChatError {
    ChatError::UnknownRoom(excerpt(name).into_owned())
}
