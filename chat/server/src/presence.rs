//! Presence: who is online, kept in the registry and fanned out to `presence` streams.
//!
//! Each session is an [`Instance`] of the key `chat.presence` under its own lease; heartbeats
//! keep the lease alive. The server watches the key: when a lease of one of its sessions
//! expires the registry removes the instance and the watch ends that session. Instances of other
//! chat servers sharing the registry are mirrored as they come and go. This server's own joins
//! and leaves are applied as they happen, without waiting for the watch, so that a client sees
//! itself online as soon as `register` returns.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_api::{ChatError, Page, PresenceEvent, UserInfo};
use futures::StreamExt;
use rpc_core::{ServerError, ServerStream, Status};
use rpc_registry::{Change, Instance, ServiceKey, Snapshot, WatchEvent, WatchStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::by_name::{ByName, NameCursor, Named};
use crate::inbox::error_stream;
use crate::page::PageLimits;
use crate::state::{Ending, Shared};
use crate::validate::name_key;

/// The registry key every chat session is an instance of.
pub(crate) const PRESENCE_KEY: &str = "chat.presence";
/// The endpoint of an instance whose user serves no chat peer.
const NO_ENDPOINT: &str = "none";
/// How many presence events a slow `presence` stream may fall behind before it is sent a fresh
/// online list instead.
const FANOUT_BUFFER: usize = 4096;

/// The registry key of presence.
pub(crate) fn key() -> ServiceKey {
    ServiceKey::new(PRESENCE_KEY)
}

/// The registry instance of a session.
pub(crate) fn instance(info: &UserInfo, server_id: &str, serial: u64) -> Instance {
    Instance::new(key(), info.advertised.as_deref().unwrap_or(NO_ENDPOINT))
        .with_id(info.id.to_string())
        .with_metadata("name", info.name.clone())
        .with_metadata("observed", info.observed.clone())
        .with_metadata("server", server_id)
        .with_metadata("session", serial.to_string())
}

/// What a presence instance says: the user, and which server and session registered it.
struct Announced {
    info: UserInfo,
    server: String,
    serial: u64,
}

fn parse(instance: &Instance) -> Option<Announced> {
    let meta = |k: &str| instance.metadata.get(k).cloned().unwrap_or_default();
    Some(Announced {
        info: UserInfo {
            id: Uuid::parse_str(&instance.id).ok()?,
            name: meta("name"),
            advertised: (instance.endpoint != NO_ENDPOINT).then(|| instance.endpoint.clone()),
            observed: meta("observed"),
        },
        server: meta("server"),
        serial: meta("session").parse().unwrap_or(0),
    })
}

/// Who is online, and the fan-out of changes.
#[derive(Debug)]
pub(crate) struct Presence {
    online: Mutex<ByName<Entry>>,
    events: broadcast::Sender<PresenceEvent>,
}

#[derive(Debug)]
struct Entry {
    info: UserInfo,
    /// Registered by this server (else mirrored from another server through the registry).
    local: bool,
    /// The id of the server that holds the session, when it is another one.
    node: Option<String>,
}

impl Named for Entry {
    fn id(&self) -> Uuid {
        self.info.id
    }

    fn name(&self) -> &str {
        &self.info.name
    }
}

impl Presence {
    pub(crate) fn new() -> Self {
        Presence {
            online: Mutex::default(),
            events: broadcast::channel(FANOUT_BUFFER).0,
        }
    }

    /// Someone is online with these details, on this server (`node` is `None`) or on the one
    /// named; watchers are told if anything they see changed.
    pub(crate) fn upsert(&self, info: UserInfo, node: Option<String>) {
        let local = node.is_none();
        let mut online = self.lock();
        if let Some(entry) = online.get(&info.id) {
            if entry.info == info && entry.node == node {
                return;
            }
            let unchanged = entry.info == info;
            if entry.local && !local {
                // This server's session wins over another server's claim of the same user.
                return;
            }
            if unchanged {
                // Only the server holding the session changed; nobody sees that.
                online.insert(Entry { info, local, node });
                return;
            }
        }
        online.insert(Entry {
            info: info.clone(),
            local,
            node,
        });
        // Sent under the lock, so that a watcher sees the changes in the order they were made.
        let _ = self.events.send(PresenceEvent::Joined(info));
    }

    /// The id of the other server holding this user's session, if another one does.
    pub(crate) fn node_of(&self, id: Uuid) -> Option<String> {
        self.lock().get(&id).and_then(|e| e.node.clone())
    }

    /// Someone left; watchers are told.
    pub(crate) fn remove(&self, id: Uuid, local: bool) {
        let mut online = self.lock();
        if online.get(&id).is_some_and(|e| e.local == local)
            && let Some(entry) = online.remove(&id)
        {
            let _ = self.events.send(PresenceEvent::Left(entry.info));
        }
    }

    /// How many users are online.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// A page of who is online, by name then id.
    pub(crate) fn page(&self, after: Option<&NameCursor>, limits: PageLimits) -> Page<UserInfo> {
        self.lock().page(after, limits, |e| e.info.clone())
    }

    pub(crate) fn get(&self, id: Uuid) -> Option<UserInfo> {
        self.lock().get(&id).map(|e| e.info.clone())
    }

    /// The online user with this name ([`name_key`]).
    pub(crate) fn find_name(&self, key: &str) -> Option<UserInfo> {
        self.lock()
            .values()
            .find(|e| name_key(&e.info.name) == key)
            .map(|e| e.info.clone())
    }

    /// Makes the users of other servers those of a registry snapshot.
    fn replace_foreign(&self, foreign: Vec<(UserInfo, String)>) {
        let known: Vec<Uuid> = self
            .lock()
            .values()
            .filter(|e| !e.local)
            .map(|e| e.info.id)
            .collect();
        for id in known {
            if !foreign.iter().any(|(info, _)| info.id == id) {
                self.remove(id, false);
            }
        }
        for (info, node) in foreign {
            self.upsert(info, Some(node));
        }
    }

    fn lock(&self) -> MutexGuard<'_, ByName<Entry>> {
        // Each mutation is one insert or remove: a poisoned lock is still consistent.
        self.online.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a `presence` stream is: sending the online list (after this cursor), or the changes.
enum Phase {
    List(Option<NameCursor>),
    Changes,
}

/// The `presence` stream of a session: the online list a page at a time, then joins and
/// leaves, until the session ends.
///
/// The stream subscribes to the changes before it reads the list, and the list is read a page
/// at a time as the client takes it, so the list may already show a change that follows it.
/// Applied in order, the list and the changes after it end in the same state either way:
/// `Joined` of someone listed, or `Left` of someone not listed, changes nothing.
pub(crate) fn stream(shared: Arc<Shared>, token: &str) -> ServerStream<PresenceEvent> {
    let session = match shared.session(token) {
        Ok(session) => session,
        Err(e) => return error_stream(&e),
    };
    let events = shared.presence.events.subscribe();
    let state = (Phase::List(None), events, shared, session);
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let (phase, mut events, shared, session) = state?;
        if let Phase::List(after) = phase {
            let (event, next) = list_part(&shared, after.as_ref());
            return Some((Ok(event), Some((next, events, shared, session))));
        }
        let event = tokio::select! {
            event = events.recv() => event,
            () = session.ended.cancelled() => {
                let e = ServerError::new(
                    Status::APPLICATION_ERROR,
                    ChatError::NoSession.to_string(),
                );
                return Some((Err(e), None));
            }
        };
        match event {
            Ok(event) => Some((Ok(event), Some((Phase::Changes, events, shared, session)))),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(user = %session.info.id, missed, "presence watcher fell behind");
                // Start over from the list; the changes after it follow.
                let events = shared.presence.events.subscribe();
                let (event, next) = list_part(&shared, None);
                Some((Ok(event), Some((next, events, shared, session))))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    ServerStream::try_new(stream.boxed())
}

/// The part of the online list after `after`, and where the stream goes next.
fn list_part(shared: &Shared, after: Option<&NameCursor>) -> (PresenceEvent, Phase) {
    let part = shared.presence.page(after, shared.settings.page(0));
    let next = match part.next.as_deref().map(NameCursor::parse) {
        Some(Ok(cursor)) => Phase::List(Some(cursor)),
        _ => Phase::Changes,
    };
    let event = PresenceEvent::Online {
        more: part.next.is_some(),
        users: part.items,
    };
    (event, next)
}

/// Follows the registry until `stop`: ends this server's sessions whose lease expired and
/// mirrors the sessions of other servers. Reconnects (resuming from the last revision seen)
/// when the watch fails.
pub(crate) async fn watch_registry(
    shared: Arc<Shared>,
    first: Option<WatchStream>,
    stop: CancellationToken,
) {
    let key = key();
    let mut revision = None;
    let mut next = first;
    let mut pause = Duration::from_millis(100);
    loop {
        let watch = match next.take() {
            Some(watch) => Ok(watch),
            None => tokio::select! {
                watch = shared.registry.watch(&key, revision) => watch,
                () = stop.cancelled() => return,
            },
        };
        match watch {
            Ok(mut watch) => loop {
                let event = tokio::select! {
                    event = watch.next() => event,
                    () = stop.cancelled() => return,
                };
                match event {
                    Some(Ok(event)) => {
                        pause = Duration::from_millis(100);
                        revision = Some(event.revision());
                        apply(&shared, event);
                    }
                    Some(Err(e)) => {
                        warn!("presence watch failed: {e}");
                        break;
                    }
                    None => {
                        warn!("presence watch ended");
                        break;
                    }
                }
            },
            Err(e) => warn!("presence watch could not start: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
        pause = pause.saturating_mul(2).min(Duration::from_secs(5));
    }
}

fn apply(shared: &Arc<Shared>, event: WatchEvent) {
    match event {
        WatchEvent::Change { change, .. } => {
            let removed = matches!(change, Change::Remove(_));
            let Some(announced) = parse(change.instance()) else {
                return;
            };
            if announced.server == shared.server_id {
                // This server's joins were applied when they happened; only expiry is news.
                if removed {
                    end_if_current(shared, announced.info.id, announced.serial);
                }
            } else if removed {
                shared.presence.remove(announced.info.id, false);
            } else {
                shared
                    .presence
                    .upsert(announced.info, Some(announced.server));
            }
        }
        WatchEvent::Snapshot(snapshot) => apply_snapshot(shared, &snapshot),
    }
}

/// A snapshot replaces what the watch knew: this server's sessions registered before it but
/// missing from it have expired.
fn apply_snapshot(shared: &Arc<Shared>, snapshot: &Snapshot) {
    let announced: Vec<Announced> = snapshot.instances.iter().filter_map(parse).collect();
    for session in shared.all_sessions() {
        let present = announced.iter().any(|a| {
            a.server == shared.server_id
                && a.info.id == session.info.id
                && a.serial == session.serial
        });
        if !present && session.revision <= snapshot.revision {
            end_if_current(shared, session.info.id, session.serial);
        }
    }
    let foreign = announced
        .into_iter()
        .filter(|a| a.server != shared.server_id)
        .map(|a| (a.info, a.server))
        .collect();
    shared.presence.replace_foreign(foreign);
}

fn end_if_current(shared: &Arc<Shared>, user: Uuid, serial: u64) {
    let Some(session) = shared.session_of(user).filter(|s| s.serial == serial) else {
        return;
    };
    let shared = shared.clone();
    // Ending takes the user's lock and tells rooms: not on the watch's path.
    tokio::spawn(async move { shared.end_session(&session, Ending::Expired).await });
}
