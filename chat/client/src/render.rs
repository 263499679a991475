//! How events look: one JSON object per line for scripts, one short line of text for people.

use chat_api::{Destination, Envelope, FriendEvent, Path, PresenceEvent, RoomEvent, UserInfo};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::event::{ChatEvent, ClientState};

/// The path's name in output: `direct`, `relayed`, `stored` or `room`.
pub fn path_name(path: Path) -> &'static str {
    match path {
        Path::Direct => "direct",
        Path::Relayed => "relayed",
        Path::Stored => "stored",
        Path::Room => "room",
    }
}

/// A user as a JSON object: `{"id", "name", "advertised", "observed"}`.
pub fn user_json(user: &UserInfo) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "advertised": user.advertised,
        "observed": user.observed,
    })
}

/// A message as a JSON object with `"event": "message"`.
fn message_json(m: &Envelope) -> Value {
    let mut value = json!({
        "event": "message",
        "id": m.id,
        "from": m.from.name,
        "from_id": m.from.id,
        "text": m.text,
        "path": path_name(m.path),
        "sent_at_ms": m.sent_at_ms,
    });
    match &m.to {
        Destination::User(id) => value["to_id"] = json!(id),
        Destination::Room(room) => value["room"] = json!(room),
    }
    value
}

/// An event as one JSON object, its kind under `"event"`:
///
/// ```text
/// {"event":"message","id":"…","from":"alice","from_id":"…","to_id":"…","text":"hi","path":"direct","sent_at_ms":…}
/// {"event":"message",…,"room":"lobby","path":"room"}
/// {"event":"presence","online":[{"id":"…","name":"bob",…}],"more":false}
/// {"event":"presence","joined":"bob","user":{…}}
/// {"event":"presence","left":"bob","user":{…}}
/// {"event":"room","room":"lobby","joined":"bob","id":"…"}
/// {"event":"room","room":"lobby","left":"bob","id":"…"}
/// {"event":"state","state":"online","id":"…","name":"alice","observed":"…","advertised":"…","reconnects":0}
/// {"event":"state","state":"reconnecting","reason":"…","attempt":1}
/// ```
pub fn event_json(event: &ChatEvent) -> Value {
    match event {
        ChatEvent::Message(m) => message_json(m),
        ChatEvent::Presence(PresenceEvent::Online { users, more }) => json!({
            "event": "presence",
            "online": users.iter().map(user_json).collect::<Vec<_>>(),
            "more": more,
        }),
        ChatEvent::Presence(PresenceEvent::Joined(user)) => json!({
            "event": "presence", "joined": user.name, "user": user_json(user),
        }),
        ChatEvent::Presence(PresenceEvent::Left(user)) => json!({
            "event": "presence", "left": user.name, "user": user_json(user),
        }),
        ChatEvent::Room(RoomEvent::Joined { room, user }) => json!({
            "event": "room", "room": room, "joined": user.name, "id": user.id,
        }),
        ChatEvent::Room(RoomEvent::Left { room, user }) => json!({
            "event": "room", "room": room, "left": user.name, "id": user.id,
        }),
        ChatEvent::Room(RoomEvent::Removed { room, user, by }) => json!({
            "event": "room", "room": room, "removed": user.name, "id": user.id, "by": by.name,
        }),
        ChatEvent::Room(RoomEvent::Invited { room, by }) => json!({
            "event": "room", "room": room, "invited_by": by.name, "id": by.id,
        }),
        ChatEvent::Friend(FriendEvent::Requested { from }) => json!({
            "event": "friend", "requested_by": from.name, "id": from.id,
        }),
        ChatEvent::Friend(FriendEvent::Accepted { by }) => json!({
            "event": "friend", "accepted_by": by.name, "id": by.id,
        }),
        ChatEvent::Friend(FriendEvent::Removed { by }) => json!({
            "event": "friend", "removed_by": by.name, "id": by.id,
        }),
        ChatEvent::State(state) => state_json(state),
    }
}

fn state_json(state: &ClientState) -> Value {
    match state {
        ClientState::Online { user, reconnects } => json!({
            "event": "state",
            "state": "online",
            "id": user.id,
            "name": user.name,
            "observed": user.observed,
            "advertised": user.advertised,
            "reconnects": reconnects,
        }),
        ClientState::Reconnecting { reason, attempt } => json!({
            "event": "state", "state": "reconnecting", "reason": reason, "attempt": attempt,
        }),
        other => json!({"event": "state", "state": other.name()}),
    }
}

/// An event as a line for people; `me` is this client's user, whose own presence changes and
/// room joins are not worth a line.
pub fn event_text(event: &ChatEvent, me: Uuid) -> Option<String> {
    Some(match event {
        ChatEvent::Message(m) => match &m.to {
            Destination::Room(room) => format!("[#{room}] {}: {}", m.from.name, m.text),
            Destination::User(_) => format!("[{}] {}: {}", path_name(m.path), m.from.name, m.text),
        },
        ChatEvent::Presence(PresenceEvent::Online { users, more }) => {
            let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
            let more = if *more { ", and more:" } else { "" };
            format!("* online: {}{more}", names.join(", "))
        }
        ChatEvent::Presence(PresenceEvent::Joined(user)) if user.id != me => {
            format!("* {} is online", user.name)
        }
        ChatEvent::Presence(PresenceEvent::Left(user)) if user.id != me => {
            format!("* {} went offline", user.name)
        }
        ChatEvent::Presence(_) => return None,
        ChatEvent::Room(RoomEvent::Joined { room, user }) if user.id != me => {
            format!("* {} joined #{room}", user.name)
        }
        ChatEvent::Room(RoomEvent::Left { room, user }) if user.id != me => {
            format!("* {} left #{room}", user.name)
        }
        ChatEvent::Room(RoomEvent::Removed { room, user, by }) if user.id == me => {
            format!("* {} removed you from #{room}", by.name)
        }
        ChatEvent::Room(RoomEvent::Removed { room, user, by }) => {
            format!("* {} removed {} from #{room}", by.name, user.name)
        }
        ChatEvent::Room(RoomEvent::Invited { room, by }) => {
            format!("* {} invited you to #{room} (/join {room})", by.name)
        }
        ChatEvent::Room(_) => return None,
        ChatEvent::Friend(FriendEvent::Requested { from }) => format!(
            "* {} asks to be friends (/friend accept {})",
            from.name, from.name
        ),
        ChatEvent::Friend(FriendEvent::Accepted { by }) => {
            format!("* {} and you are friends now", by.name)
        }
        ChatEvent::Friend(FriendEvent::Removed { by }) => {
            format!(
                "* {} is no longer a friend (or withdrew or declined a request)",
                by.name
            )
        }
        ChatEvent::State(ClientState::Online {
            user,
            reconnects: 0,
        }) => format!(
            "* online as {} (server sees us at {}; direct messages to {})",
            user.name,
            user.observed,
            user.advertised.as_deref().unwrap_or("nowhere"),
        ),
        ChatEvent::State(ClientState::Online { user, .. }) => {
            format!(
                "* back online as {} (server sees us at {})",
                user.name, user.observed
            )
        }
        ChatEvent::State(ClientState::Reconnecting { reason, attempt: 0 }) => {
            format!("* offline: {reason}; reconnecting…")
        }
        ChatEvent::State(ClientState::Reconnecting { reason, attempt }) => {
            format!("* still reconnecting (attempt {attempt}): {reason}")
        }
        ChatEvent::State(ClientState::Connecting) => "* connecting…".to_owned(),
        ChatEvent::State(ClientState::Replaced) => {
            "* another client registered as this user and took over; this one stopped".to_owned()
        }
        ChatEvent::State(ClientState::Closed) => "* disconnected".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_api::Sender;

    #[test]
    fn a_message_renders_with_its_path() {
        let me = Uuid::new_v4();
        let message = Envelope {
            id: Uuid::new_v4(),
            from: Sender {
                id: Uuid::new_v4(),
                name: "alice".into(),
            },
            to: Destination::User(me),
            text: "hi".into(),
            sent_at_ms: 5,
            path: Path::Relayed,
        };
        let event = ChatEvent::Message(message.clone());
        let value = event_json(&event);
        assert_eq!(value["event"], "message");
        assert_eq!(value["from"], "alice");
        assert_eq!(value["path"], "relayed");
        assert_eq!(value["id"], json!(message.id));
        assert_eq!(event_text(&event, me).unwrap(), "[relayed] alice: hi");
    }

    #[test]
    fn own_presence_is_not_shown_to_people() {
        let me = UserInfo {
            id: Uuid::new_v4(),
            name: "me".into(),
            advertised: None,
            observed: "tcp://127.0.0.1:9".into(),
        };
        let joined = ChatEvent::Presence(PresenceEvent::Joined(me.clone()));
        assert_eq!(event_text(&joined, me.id), None);
        assert_eq!(event_json(&joined)["joined"], "me");
        let state = ChatEvent::State(ClientState::Reconnecting {
            reason: "connection lost".into(),
            attempt: 2,
        });
        assert_eq!(event_json(&state)["state"], "reconnecting");
        assert!(event_text(&state, me.id).unwrap().contains("attempt 2"));
    }
}
