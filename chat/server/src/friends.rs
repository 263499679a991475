//! Friends: requests, acceptance, unfriending and the list, kept in the store; every change is
//! pushed to the other user wherever they are online (`FriendEvent`).

use chat_api::{ChatError, Friend, FriendEvent, FriendState, InboxItem, Page, excerpt};
use tracing::info;
use uuid::Uuid;

use crate::by_name::{ByName, NameCursor, Named};
use crate::page::PageLimits;
use crate::state::{Session, Shared, storage_error};
use crate::store::{FriendAccepted, FriendRequested};

impl Named for Friend {
    fn id(&self) -> Uuid {
        self.user.id
    }

    fn name(&self) -> &str {
        &self.user.name
    }
}

impl Shared {
    /// Asks `user` to be friends with the caller, or accepts their request if they asked.
    pub(crate) async fn request_friend(
        &self,
        session: &Session,
        user: Uuid,
    ) -> Result<FriendState, ChatError> {
        let me = session.sender();
        not_yourself(me.id, user)?;
        let max = u64::from(self.settings.max_friends);
        let requested = self
            .store
            .request_friend(me.id, user, max)
            .await
            .map_err(storage_error)?;
        let (state, event) = match requested {
            FriendRequested::Requested => (
                FriendState::RequestSent,
                FriendEvent::Requested { from: me.clone() },
            ),
            FriendRequested::Accepted => (
                FriendState::Friends,
                FriendEvent::Accepted { by: me.clone() },
            ),
            FriendRequested::Unchanged(state) => return Ok(state),
            FriendRequested::UnknownUser => return Err(ChatError::UnknownUser(user.to_string())),
            FriendRequested::QuotaReached { requester } => {
                let max = self.settings.max_friends;
                return Err(ChatError::Quota(if requester {
                    format!("you have {max} friends and friend requests, the most allowed")
                } else {
                    format!("user {user} has {max} friends and friend requests, the most allowed")
                }));
            }
        };
        info!(user = %me.id, other = %user, ?state, "friend request");
        self.push_everywhere(&[user], &InboxItem::Friend(event))
            .await;
        Ok(state)
    }

    /// Accepts the friend request of `user`.
    pub(crate) async fn accept_friend(
        &self,
        session: &Session,
        user: Uuid,
    ) -> Result<(), ChatError> {
        let me = session.sender();
        not_yourself(me.id, user)?;
        match self
            .store
            .accept_friend(me.id, user)
            .await
            .map_err(storage_error)?
        {
            FriendAccepted::Accepted => {
                info!(user = %me.id, other = %user, "friend request accepted");
                let event = FriendEvent::Accepted { by: me };
                self.push_everywhere(&[user], &InboxItem::Friend(event))
                    .await;
                Ok(())
            }
            // An answer lost on the way, asked again: done already.
            FriendAccepted::AlreadyFriends => Ok(()),
            FriendAccepted::NoRequest => Err(ChatError::NoFriendRequest(user.to_string())),
        }
    }

    /// Ends the friendship with `user`, or the request either way.
    pub(crate) async fn unfriend(&self, session: &Session, user: Uuid) -> Result<(), ChatError> {
        let me = session.sender();
        not_yourself(me.id, user)?;
        let removed = self
            .store
            .unfriend(me.id, user)
            .await
            .map_err(storage_error)?;
        if let Some(state) = removed {
            info!(user = %me.id, other = %user, was = ?state, "unfriended");
            let event = FriendEvent::Removed { by: me };
            self.push_everywhere(&[user], &InboxItem::Friend(event))
                .await;
        }
        Ok(())
    }

    /// A page of the caller's friends and requests, by name then id, each with whether the
    /// other is online (on any server).
    pub(crate) async fn friends(
        &self,
        session: &Session,
        after: Option<String>,
        limits: PageLimits,
    ) -> Result<Page<Friend>, ChatError> {
        let after = after.as_deref().map(NameCursor::parse).transpose()?;
        let all = self
            .store
            .friends(session.info.id)
            .await
            .map_err(storage_error)?;
        // At most the friends quota: sorting them all for each page costs little.
        let mut list = ByName::default();
        for (user, state) in all {
            list.insert(Friend {
                user,
                state,
                online: false,
            });
        }
        Ok(list.page(after.as_ref(), limits, |friend| Friend {
            online: self.presence.get(friend.user.id).is_some(),
            ..friend.clone()
        }))
    }
}

fn not_yourself(me: Uuid, user: Uuid) -> Result<(), ChatError> {
    if me == user {
        return Err(ChatError::Invalid(format!(
            "user {} is yourself",
            excerpt(&user.to_string())
        )));
    }
    Ok(())
}
