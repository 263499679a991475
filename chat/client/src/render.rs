//! How events look: one JSON object per line for scripts, one short line of text for people.

use chat_api::{
    CallEnd, CallEvent, CallMedia, Destination, Envelope, FriendEvent, NatReport, Path,
    PresenceEvent, RoomEvent, SdpKind, Sender, UserInfo,
};
use serde_json::{Value, json};
use std::borrow::Cow;
use uuid::Uuid;

use crate::event::{ChatEvent, ClientState, FileEvent};
use crate::files::human_bytes;

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

/// A NAT report as a JSON object: `{"event": "nat", "user", "mapping", "filtering",
/// "public"}`, `user` null for this client's own; behaviours are named by
/// [`behaviour_name`](crate::nat::behaviour_name), `public` is `ip:port` or null.
pub fn nat_json(report: &NatReport, user: Option<&str>) -> Value {
    json!({
        "event": "nat",
        "user": user,
        "mapping": crate::nat::behaviour_name(report.mapping),
        "filtering": crate::nat::behaviour_name(report.filtering),
        "public": report.public,
    })
}

/// A NAT report as a line of text for people.
pub fn nat_text(report: &NatReport, user: Option<&str>) -> String {
    let whose = match user {
        Some(user) => format!("{}'s", printable(user)),
        None => "your".to_owned(),
    };
    format!(
        "* {whose} NAT: {} mapping, {} filtering; public address {}",
        crate::nat::behaviour_name(report.mapping),
        crate::nat::behaviour_name(report.filtering),
        report
            .public
            .as_deref()
            .map_or(Cow::Borrowed("unknown"), printable),
    )
}

/// A message as a JSON object with `"event": "message"`; `to_id` is null for a room post and
/// `room` null for a direct message.
fn message_json(m: &Envelope) -> Value {
    let (to_id, room) = match &m.to {
        Destination::User(id) => (Some(*id), None),
        Destination::Room(room) => (None, Some(room.as_str())),
    };
    json!({
        "event": "message",
        "id": m.id,
        "from": m.from.name,
        "from_id": m.from.id,
        "to_id": to_id,
        "room": room,
        "text": m.text,
        "path": path_name(m.path),
        "sent_at_ms": m.sent_at_ms,
    })
}

/// An event as one JSON object, its kind under `"event"`. Every object of a kind has the same
/// keys (null where one does not apply), and what changed is under `"change"`:
///
/// ```text
/// {"event":"message","id":"…","from":"alice","from_id":"…","to_id":"…","room":null,"text":"hi","path":"direct","sent_at_ms":…}
/// {"event":"message","id":"…","from":"alice","from_id":"…","to_id":null,"room":"lobby","text":"hi","path":"room","sent_at_ms":…}
/// {"event":"presence","change":"online","users":[{"id":"…","name":"bob",…}],"more":false}
/// {"event":"presence","change":"joined","users":[{"id":"…","name":"bob",…}],"more":false}
/// {"event":"presence","change":"left","users":[{…}],"more":false}
/// {"event":"room","change":"joined","room":"lobby","user":"bob","user_id":"…","by":null,"by_id":null}
/// {"event":"room","change":"left",…}   {"event":"room","change":"removed",…,"by":"alice","by_id":"…"}
/// {"event":"room","change":"invited","room":"team","user":null,"user_id":null,"by":"alice","by_id":"…"}
/// {"event":"friend","change":"requested","user":"bob","user_id":"…"}   (also accepted, removed)
/// {"event":"call","change":"incoming","call":"…","user":"bob","user_id":"…","media":["audio"],"reason":null,"sdp_kind":null,"sdp":null,"candidate":null}
/// {"event":"call","change":"ended","call":"…","user":null,"user_id":null,…,"reason":"missed",…}   (also ringing, accepted, sdp, ice)
/// {"event":"file","change":"incoming","id":"…","user":"bob","user_id":"…","name":"a.txt","size":10,"offset":0,"path":null,"reason":null}
/// {"event":"file","change":"received",…,"size":10,"offset":null,"path":"chat-files/a.txt","reason":null}   (also failed, with reason)
/// {"event":"state","state":"online","id":"…","name":"alice","observed":"…","advertised":"…","reconnects":0,"reason":null,"attempt":null}
/// {"event":"state","state":"reconnecting","id":null,…,"reason":"…","attempt":1}
/// ```
pub fn event_json(event: &ChatEvent) -> Value {
    match event {
        ChatEvent::Message(m) => message_json(m),
        ChatEvent::Presence(PresenceEvent::Online { users, more }) => {
            presence_json("online", users, *more)
        }
        ChatEvent::Presence(PresenceEvent::Joined(user)) => {
            presence_json("joined", std::slice::from_ref(user), false)
        }
        ChatEvent::Presence(PresenceEvent::Left(user)) => {
            presence_json("left", std::slice::from_ref(user), false)
        }
        ChatEvent::Room(RoomEvent::Joined { room, user }) => {
            room_json("joined", room, Some(user), None)
        }
        ChatEvent::Room(RoomEvent::Left { room, user }) => {
            room_json("left", room, Some(user), None)
        }
        ChatEvent::Room(RoomEvent::Removed { room, user, by }) => {
            room_json("removed", room, Some(user), Some(by))
        }
        ChatEvent::Room(RoomEvent::Invited { room, by }) => {
            room_json("invited", room, None, Some(by))
        }
        ChatEvent::Friend(FriendEvent::Requested { from }) => friend_json("requested", from),
        ChatEvent::Friend(FriendEvent::Accepted { by }) => friend_json("accepted", by),
        ChatEvent::Friend(FriendEvent::Removed { by }) => friend_json("removed", by),
        ChatEvent::Call(event) => call_json(event),
        ChatEvent::File(event) => file_json(event),
        ChatEvent::State(state) => state_json(state),
    }
}

/// `{"event":"file","change":…,"id":…,"user":…,"user_id":…,"name":…,"size":…,"offset":…,
/// "path":…,"reason":…}`: `change` is `incoming`, `received` or `failed`; the last three keys
/// are null unless the change carries them.
fn file_json(event: &FileEvent) -> Value {
    let (change, id, from, name) = match event {
        FileEvent::Incoming { id, from, name, .. } => ("incoming", id, from, name),
        FileEvent::Received { id, from, name, .. } => ("received", id, from, name),
        FileEvent::Failed { id, from, name, .. } => ("failed", id, from, name),
    };
    let mut value = json!({
        "event": "file",
        "change": change,
        "id": id,
        "user": from.name,
        "user_id": from.id,
        "name": name,
        "size": null,
        "offset": null,
        "path": null,
        "reason": null,
    });
    match event {
        FileEvent::Incoming { size, offset, .. } => {
            value["size"] = json!(size);
            value["offset"] = json!(offset);
        }
        FileEvent::Received { size, path, .. } => {
            value["size"] = json!(size);
            value["path"] = json!(path.display().to_string());
        }
        FileEvent::Failed { reason, .. } => value["reason"] = json!(reason),
    }
    value
}

fn presence_json(change: &str, users: &[UserInfo], more: bool) -> Value {
    json!({
        "event": "presence",
        "change": change,
        "users": users.iter().map(user_json).collect::<Vec<_>>(),
        "more": more,
    })
}

fn room_json(change: &str, room: &str, user: Option<&Sender>, by: Option<&Sender>) -> Value {
    json!({
        "event": "room",
        "change": change,
        "room": room,
        "user": user.map(|u| &u.name),
        "user_id": user.map(|u| u.id),
        "by": by.map(|u| &u.name),
        "by_id": by.map(|u| u.id),
    })
}

fn friend_json(change: &str, user: &Sender) -> Value {
    json!({"event": "friend", "change": change, "user": user.name, "user_id": user.id})
}

/// `{"event":"call","change":…,"call":…,"user":…,"user_id":…,"media":…,"reason":…,
/// "sdp_kind":…,"sdp":…,"candidate":…}`: `user` is the other side (or who ended it, null when
/// the server did); the last five keys are null unless the change carries them.
fn call_json(event: &CallEvent) -> Value {
    let mut value = json!({
        "event": "call",
        "call": event.call(),
        "user": null,
        "user_id": null,
        "media": null,
        "reason": null,
        "sdp_kind": null,
        "sdp": null,
        "candidate": null,
    });
    let (change, user) = match event {
        CallEvent::Incoming { from, media, .. } => {
            value["media"] = json!(media.iter().map(|m| media_name(*m)).collect::<Vec<_>>());
            ("incoming", Some(from))
        }
        CallEvent::Ringing { by, .. } => ("ringing", Some(by)),
        CallEvent::Accepted { by, .. } => ("accepted", Some(by)),
        CallEvent::Sdp {
            from, kind, sdp, ..
        } => {
            value["sdp_kind"] = json!(match kind {
                SdpKind::Offer => "offer",
                SdpKind::Answer => "answer",
            });
            value["sdp"] = json!(sdp);
            ("sdp", Some(from))
        }
        CallEvent::Ice {
            from, candidate, ..
        } => {
            value["candidate"] = json!({
                "candidate": candidate.candidate,
                "sdp_mid": candidate.sdp_mid,
                "sdp_m_line_index": candidate.sdp_m_line_index,
                "username_fragment": candidate.username_fragment,
            });
            ("ice", Some(from))
        }
        CallEvent::Ended { by, reason, .. } => {
            value["reason"] = json!(end_name(*reason));
            ("ended", by.as_ref())
        }
    };
    value["change"] = json!(change);
    value["user"] = json!(user.map(|u| &u.name));
    value["user_id"] = json!(user.map(|u| u.id));
    value
}

fn media_name(media: CallMedia) -> &'static str {
    match media {
        CallMedia::Audio => "audio",
        CallMedia::Video => "video",
        CallMedia::Screen => "screen",
        CallMedia::Data => "data",
    }
}

fn end_name(reason: CallEnd) -> &'static str {
    match reason {
        CallEnd::Rejected => "rejected",
        CallEnd::Busy => "busy",
        CallEnd::Cancelled => "cancelled",
        CallEnd::Missed => "missed",
        CallEnd::HungUp => "hung up",
        CallEnd::Gone => "gone offline",
    }
}

fn state_json(state: &ClientState) -> Value {
    let (user, reconnects) = match state {
        ClientState::Online { user, reconnects } => (Some(user), Some(*reconnects)),
        _ => (None, None),
    };
    let (reason, attempt) = match state {
        ClientState::Reconnecting { reason, attempt } => (Some(reason.as_str()), Some(*attempt)),
        ClientState::GaveUp { reason, attempts } => (Some(reason.as_str()), Some(*attempts)),
        _ => (None, None),
    };
    json!({
        "event": "state",
        "state": state.name(),
        "id": user.map(|u| u.id),
        "name": user.map(|u| &u.name),
        "observed": user.map(|u| &u.observed),
        "advertised": user.and_then(|u| u.advertised.as_ref()),
        "reconnects": reconnects,
        "reason": reason,
        "attempt": attempt,
    })
}

/// `text` safe to print on a terminal: control characters (which could move the cursor,
/// clear the screen or retitle the window: escape sequences), and the Unicode controls that
/// reorder or hide text (bidirectional embeddings, overrides and isolates, zero-width
/// characters), are shown as `\u{…}` escapes; a line break is kept, indented under the line it
/// belongs to.
pub fn printable(text: &str) -> Cow<'_, str> {
    let hidden = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
    };
    if !text.chars().any(|c| hidden(c) || c == '\n') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An event as a line for people; `me` is this client's user, whose own presence changes and
/// room joins are not worth a line.
pub fn event_text(event: &ChatEvent, me: Uuid) -> Option<String> {
    Some(match event {
        ChatEvent::Message(m) => {
            let (from, text) = (printable(&m.from.name), printable(&m.text));
            match &m.to {
                Destination::Room(room) => format!("[#{}] {from}: {text}", printable(room)),
                Destination::User(_) => format!("[{}] {from}: {text}", path_name(m.path)),
            }
        }
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
        ChatEvent::Call(CallEvent::Incoming { from, media, .. }) => {
            let media: Vec<&str> = media.iter().map(|m| media_name(*m)).collect();
            format!(
                "* {} calls you ({}); answer in the web chat",
                printable(&from.name),
                media.join(", ")
            )
        }
        ChatEvent::Call(CallEvent::Ended {
            by: Some(by),
            reason,
            ..
        }) if by.id != me => format!("* call with {} ended: {}", by.name, end_name(*reason)),
        ChatEvent::Call(CallEvent::Ended {
            by: None, reason, ..
        }) => format!("* a call ended: {}", end_name(*reason)),
        ChatEvent::Call(_) => return None,
        ChatEvent::File(FileEvent::Incoming {
            from,
            name,
            size,
            offset: 0,
            ..
        }) => format!(
            "* {} is sending you {} ({})",
            printable(&from.name),
            printable(name),
            human_bytes(*size)
        ),
        ChatEvent::File(FileEvent::Incoming {
            from,
            name,
            size,
            offset,
            ..
        }) => format!(
            "* {} resumes sending you {} ({} of {} here)",
            printable(&from.name),
            printable(name),
            human_bytes(*offset),
            human_bytes(*size)
        ),
        ChatEvent::File(FileEvent::Received {
            from, size, path, ..
        }) => format!(
            "* file from {} saved: {} ({})",
            printable(&from.name),
            printable(&path.display().to_string()),
            human_bytes(*size)
        ),
        ChatEvent::File(FileEvent::Failed {
            from, name, reason, ..
        }) => format!(
            "! file {} from {} failed: {}",
            printable(name),
            printable(&from.name),
            printable(reason)
        ),
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
        ChatEvent::State(ClientState::GaveUp { reason, attempts }) => {
            format!("* gave up reconnecting after {attempts} attempts: {reason}")
        }
        ChatEvent::State(ClientState::Closed) => "* disconnected".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_api::IceCandidate;

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
            file: None,
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
        assert_eq!(event_json(&joined)["change"], "joined");
        assert_eq!(event_json(&joined)["users"][0]["name"], "me");
        let state = ChatEvent::State(ClientState::Reconnecting {
            reason: "connection lost".into(),
            attempt: 2,
        });
        assert_eq!(event_json(&state)["state"], "reconnecting");
        assert!(event_text(&state, me.id).unwrap().contains("attempt 2"));
    }

    #[test]
    fn every_event_of_a_kind_has_the_same_keys() {
        let user = UserInfo {
            id: Uuid::new_v4(),
            name: "bob".into(),
            advertised: None,
            observed: "127.0.0.1:9".into(),
        };
        let sender = Sender {
            id: user.id,
            name: "bob".into(),
        };
        let message = |to| {
            ChatEvent::Message(Envelope {
                id: Uuid::new_v4(),
                from: sender.clone(),
                to,
                text: "hi".into(),
                sent_at_ms: 1,
                path: Path::Relayed,
                file: None,
            })
        };
        let room = "lobby".to_owned();
        let events = [
            message(Destination::User(user.id)),
            message(Destination::Room(room.clone())),
            ChatEvent::Presence(PresenceEvent::Online {
                users: vec![user.clone()],
                more: true,
            }),
            ChatEvent::Presence(PresenceEvent::Joined(user.clone())),
            ChatEvent::Presence(PresenceEvent::Left(user.clone())),
            ChatEvent::Room(RoomEvent::Joined {
                room: room.clone(),
                user: sender.clone(),
            }),
            ChatEvent::Room(RoomEvent::Left {
                room: room.clone(),
                user: sender.clone(),
            }),
            ChatEvent::Room(RoomEvent::Removed {
                room: room.clone(),
                user: sender.clone(),
                by: sender.clone(),
            }),
            ChatEvent::Room(RoomEvent::Invited {
                room,
                by: sender.clone(),
            }),
            ChatEvent::Friend(FriendEvent::Requested {
                from: sender.clone(),
            }),
            ChatEvent::Friend(FriendEvent::Accepted { by: sender.clone() }),
            ChatEvent::Friend(FriendEvent::Removed { by: sender.clone() }),
            ChatEvent::Call(CallEvent::Incoming {
                call: Uuid::new_v4(),
                from: sender.clone(),
                media: vec![CallMedia::Audio, CallMedia::Video],
            }),
            ChatEvent::Call(CallEvent::Ringing {
                call: Uuid::new_v4(),
                by: sender.clone(),
            }),
            ChatEvent::Call(CallEvent::Accepted {
                call: Uuid::new_v4(),
                by: sender.clone(),
            }),
            ChatEvent::Call(CallEvent::Sdp {
                call: Uuid::new_v4(),
                from: sender.clone(),
                kind: SdpKind::Offer,
                sdp: "v=0".into(),
            }),
            ChatEvent::Call(CallEvent::Ice {
                call: Uuid::new_v4(),
                from: sender.clone(),
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    username_fragment: None,
                },
            }),
            ChatEvent::Call(CallEvent::Ended {
                call: Uuid::new_v4(),
                by: None,
                reason: CallEnd::Missed,
            }),
            ChatEvent::Call(CallEvent::Ended {
                call: Uuid::new_v4(),
                by: Some(sender.clone()),
                reason: CallEnd::HungUp,
            }),
            ChatEvent::File(FileEvent::Incoming {
                id: Uuid::new_v4(),
                from: sender.clone(),
                name: "a.txt".into(),
                size: 10,
                offset: 0,
            }),
            ChatEvent::File(FileEvent::Received {
                id: Uuid::new_v4(),
                from: sender.clone(),
                name: "a.txt".into(),
                size: 10,
                path: "chat-files/a.txt".into(),
            }),
            ChatEvent::File(FileEvent::Failed {
                id: Uuid::new_v4(),
                from: sender,
                name: "a.txt".into(),
                reason: "hash".into(),
            }),
            ChatEvent::State(ClientState::Connecting),
            ChatEvent::State(ClientState::Online {
                user,
                reconnects: 1,
            }),
            ChatEvent::State(ClientState::Reconnecting {
                reason: "lost".into(),
                attempt: 2,
            }),
            ChatEvent::State(ClientState::GaveUp {
                reason: "lost".into(),
                attempts: 3,
            }),
            ChatEvent::State(ClientState::Closed),
        ];
        let mut shapes: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for event in &events {
            let value = event_json(event);
            let kind = value["event"].as_str().unwrap().to_owned();
            let keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            let shape = shapes.entry(kind.clone()).or_insert_with(|| keys.clone());
            assert_eq!(*shape, keys, "{kind}: {value}");
        }
        let kinds: Vec<&str> = shapes.keys().map(String::as_str).collect();
        assert_eq!(
            kinds,
            [
                "call", "file", "friend", "message", "presence", "room", "state"
            ]
        );
    }

    #[test]
    fn text_that_could_take_over_a_terminal_is_escaped() {
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\u{202E}txt.exe"), "x\\u{202e}txt.exe");
        assert_eq!(printable("bell\x07\r"), "bell\\u{7}\\u{d}");
        assert_eq!(printable("two\nlines"), "two\n    lines");
        let me = Uuid::new_v4();
        let message = Envelope {
            id: Uuid::new_v4(),
            from: Sender {
                id: Uuid::new_v4(),
                name: "eve".into(),
            },
            to: Destination::User(me),
            text: "\x1b]0;pwned\x07hi".into(),
            sent_at_ms: 5,
            path: Path::Direct,
            file: None,
        };
        let line = event_text(&ChatEvent::Message(message), me).unwrap();
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
}
