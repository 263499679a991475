//! What a client knows about other users: who is online now (from the presence stream), and the
//! last details of everyone it has seen, so an offline user can still be written to by name.

use std::collections::HashMap;

use chat_api::{PresenceEvent, UserInfo};
use uuid::Uuid;

/// Online users and users seen before.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    online: HashMap<Uuid, UserInfo>,
    /// The parts of an online list received so far, until its last part.
    listing: Option<HashMap<Uuid, UserInfo>>,
    /// Everyone ever seen, with when they were last seen (a counter), newest details kept.
    known: HashMap<Uuid, (u64, UserInfo)>,
    clock: u64,
}

impl Directory {
    /// Applies a presence event.
    pub(crate) fn apply(&mut self, event: &PresenceEvent) {
        match event {
            PresenceEvent::Online { users, more } => {
                let listing = self.listing.get_or_insert_with(HashMap::new);
                listing.extend(users.iter().map(|u| (u.id, u.clone())));
                for user in users {
                    self.remember(user);
                }
                if !more && let Some(listing) = self.listing.take() {
                    self.online = listing;
                }
            }
            PresenceEvent::Joined(user) => {
                self.remember(user);
                self.online.insert(user.id, user.clone());
            }
            PresenceEvent::Left(user) => {
                self.remember(user);
                self.online.remove(&user.id);
            }
        }
    }

    /// Replaces the online list with an authoritative one.
    pub(crate) fn replace_online(&mut self, users: &[UserInfo]) {
        self.online.clear();
        for user in users {
            self.remember(user);
            self.online.insert(user.id, user.clone());
        }
    }

    /// Records a user's details, seen just now.
    pub(crate) fn remember(&mut self, user: &UserInfo) {
        self.clock += 1;
        self.known.insert(user.id, (self.clock, user.clone()));
    }

    /// The online user with this id, or else with this display name.
    pub(crate) fn online(&self, id: Option<Uuid>, name: &str) -> Option<&UserInfo> {
        match id {
            Some(id) => self.online.get(&id),
            None => self.online.values().find(|u| u.name == name),
        }
    }

    /// The user most recently seen with this display name, online or not.
    pub(crate) fn known_by_name(&self, name: &str) -> Option<&UserInfo> {
        self.known
            .values()
            .filter(|(_, u)| u.name == name)
            .max_by_key(|(seen, _)| *seen)
            .map(|(_, u)| u)
    }

    /// Whether the user is online, as far as the presence stream told.
    #[cfg(test)]
    fn is_online(&self, id: Uuid) -> bool {
        self.online.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            advertised: Some("tcp://127.0.0.1:1".to_owned()),
            observed: "tcp://127.0.0.1:2".to_owned(),
        }
    }

    #[test]
    fn presence_events_keep_the_online_list() {
        let (alice, bob) = (user("alice"), user("bob"));
        let mut dir = Directory::default();
        dir.apply(&PresenceEvent::Online {
            users: vec![alice.clone()],
            more: false,
        });
        dir.apply(&PresenceEvent::Joined(bob.clone()));
        assert_eq!(dir.online(None, "bob"), Some(&bob));
        assert_eq!(dir.online(Some(alice.id), "ignored"), Some(&alice));
        dir.apply(&PresenceEvent::Left(bob.clone()));
        assert!(!dir.is_online(bob.id));
        assert_eq!(dir.online(None, "bob"), None);
        // Gone, but still known by name.
        assert_eq!(dir.known_by_name("bob"), Some(&bob));
        // A fresh list replaces the old one, once all its parts are in.
        let carol = user("carol");
        dir.apply(&PresenceEvent::Online {
            users: vec![bob.clone()],
            more: true,
        });
        assert!(dir.is_online(alice.id) && !dir.is_online(bob.id));
        dir.apply(&PresenceEvent::Online {
            users: vec![carol.clone()],
            more: false,
        });
        assert!(!dir.is_online(alice.id) && dir.is_online(bob.id) && dir.is_online(carol.id));
    }

    #[test]
    fn a_reused_name_resolves_to_whoever_had_it_last() {
        let (old, new) = (user("carol"), user("carol"));
        let mut dir = Directory::default();
        dir.apply(&PresenceEvent::Joined(old.clone()));
        dir.apply(&PresenceEvent::Left(old));
        dir.apply(&PresenceEvent::Joined(new.clone()));
        assert_eq!(dir.known_by_name("carol"), Some(&new));
    }
}
