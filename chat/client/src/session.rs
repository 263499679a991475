//! The background task of a chat client: keeps a session with the server alive (heartbeats),
//! reads the inbox and presence streams, acknowledges what it handed to the application, and
//! registers again by itself whenever the session is lost.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_api::{
    ChatError, Envelope, FileOffer, InboxItem, Membership, NatReport, PeerError, RegisterRequest,
    Session, SignalClient,
};
use futures::{FutureExt, StreamExt};
use rpc_core::{ConnectionState, RpcError, RpcStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::ChatClientConfig;
use crate::directory::Directory;
use crate::event::{ChatEvent, ClientError, ClientState, FileEvent};
use crate::files::{Incoming, Source};
use crate::peer::{PeerClients, Sink};
use crate::punch::{self, Puncher, parse_candidates};

/// Heartbeats that may fail in a row (for reasons other than a lost session) before the
/// session is given up and registered again.
const MAX_MISSED_HEARTBEATS: u32 = 2;

/// How long to wait for the inbox to say why the server ended a session.
const VERDICT_WAIT: Duration = Duration::from_millis(500);

/// What the server says when it ends a session because the same user registered again
/// elsewhere (the contract has no error variant for it; the inbox ends with this message).
const REPLACED: &str = "replaced by a newer registration";

/// The shortest and longest heartbeat intervals a client follows, whatever the server says.
const HEARTBEAT_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_secs(3600));

/// Why a session ended.
#[derive(Debug)]
enum Ended {
    /// Lost (connection, expiry, server restart): register again.
    Lost(String),
    /// Another client registered as this user and took the session over: registering again
    /// would take it back, and the two would fight for ever.
    Replaced,
}

/// What the client handle and its background task share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ChatClientConfig,
    /// The endpoint registered for direct messages.
    pub(crate) advertised: Option<String>,
    pub(crate) signal: SignalClient,
    pub(crate) sink: Arc<Sink>,
    pub(crate) peers: PeerClients,
    pub(crate) puncher: Arc<Puncher>,
    pub(crate) state: watch::Sender<ClientState>,
    /// The session in force; `None` while registering.
    pub(crate) session: watch::Sender<Option<Session>>,
    pub(crate) directory: Mutex<Directory>,
    /// The rooms this user belongs to, as last read from the server or changed by this client.
    pub(crate) rooms: Mutex<BTreeSet<String>>,
    /// Tokens the server no longer knows: the task registers again if one is the current one.
    pub(crate) renew: mpsc::UnboundedSender<String>,
    /// The NAT report last sent with `report_nat`: the server keeps it with the session, so it
    /// is sent again with each new one.
    pub(crate) nat: Mutex<Option<NatReport>>,
    /// Files arriving, directly or downloaded from the server.
    pub(crate) files: Arc<Incoming>,
    /// The files being downloaded from the server now, by message id.
    pub(crate) downloads: Arc<Mutex<HashSet<Uuid>>>,
}

impl Shared {
    /// Changes the state and tells the application.
    pub(crate) fn set_state(&self, state: ClientState) {
        self.state.send_replace(state.clone());
        self.sink.emit(ChatEvent::State(state));
    }

    /// Registers this user, opening a new session.
    pub(crate) async fn register(&self) -> Result<Session, ClientError> {
        let request = RegisterRequest {
            id: self.config.id,
            name: self.config.name.clone(),
            secret: self.config.secret.clone(),
            endpoint: self.advertised.clone(),
        };
        Ok(self.signal.register(request).await?)
    }

    pub(crate) fn directory(&self) -> MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn rooms(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one session until it is lost; returns why.
    async fn serve(
        &self,
        session: &Session,
        reconnects: u32,
        renew: &mut mpsc::UnboundedReceiver<String>,
    ) -> Ended {
        let token = session.token.clone();
        // Watch the connection from before the streams open, so a loss in between is seen.
        let mut connection = self.signal.caller().watch_state();
        connection.mark_unchanged();
        let mut inbox = match self.signal.inbox(token.clone()).await {
            Ok(inbox) => inbox,
            Err(e) => return Ended::Lost(format!("could not open the inbox: {}", e.report())),
        };
        let mut presence = match self.signal.presence(token.clone()).await {
            Ok(presence) => presence,
            Err(e) => return Ended::Lost(format!("could not watch presence: {}", e.report())),
        };
        // The presence stream's first event (who is online) says the server has taken the
        // calls so far, the inbox's included: only then can relayed messages be pushed live
        // rather than stored, and only then is the client online.
        let timeout = self.config.call_timeout;
        match tokio::time::timeout(timeout, presence.next()).await {
            Ok(Some(Ok(event))) => {
                self.directory().apply(&event);
                self.sink.emit(ChatEvent::Presence(event));
            }
            Ok(Some(Err(e))) => {
                return Ended::Lost(format!("presence stream failed: {}", readable(&e)));
            }
            Ok(None) => return Ended::Lost("the server ended the presence stream".to_owned()),
            Err(_) => return Ended::Lost(format!("no presence list within {timeout:?}")),
        }
        self.session.send_replace(Some(session.clone()));
        self.set_state(ClientState::Online {
            user: session.user.clone(),
            reconnects,
        });
        let period = heartbeat_period(session.heartbeat_ms);
        let first = Instant::now()
            .checked_add(period)
            .unwrap_or_else(Instant::now);
        let mut beat = tokio::time::interval_at(first, period);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let heartbeat = self.signal.with_timeout(
            Duration::from_millis(session.presence_ttl_ms.max(100)).min(self.config.call_timeout),
        );
        let mut missed = 0;
        let reason = loop {
            tokio::select! {
                _ = beat.tick() => match heartbeat.heartbeat(token.clone()).await {
                    Ok(()) => missed = 0,
                    Err(RpcError::Application(ChatError::NoSession)) => {
                        break "the server no longer knows the session".to_owned();
                    }
                    Err(e) => {
                        missed += 1;
                        debug!(missed, "heartbeat failed: {e}");
                        if missed >= MAX_MISSED_HEARTBEATS {
                            return Ended::Lost(format!("heartbeats failing: {e}"));
                        }
                    }
                },
                item = inbox.next() => {
                    if let Err(ended) = self.drain_inbox(&token, item, &mut inbox).await {
                        return ended;
                    }
                }
                event = presence.next() => match event {
                    Some(Ok(event)) => {
                        self.directory().apply(&event);
                        self.sink.emit(ChatEvent::Presence(event));
                    }
                    Some(Err(e)) => break format!("presence stream failed: {}", readable(&e)),
                    None => break "the server ended the presence stream".to_owned(),
                },
                Some(stale) = renew.recv() => {
                    if stale == token {
                        break "the server no longer knows the session".to_owned();
                    }
                }
                changed = connection.changed() => {
                    if changed.is_err() {
                        return Ended::Lost("the connection was closed".to_owned());
                    }
                    let state = connection.borrow_and_update().clone();
                    if let ConnectionState::Reconnecting { reason, .. } = state {
                        return Ended::Lost(format!("connection lost: {reason}"));
                    }
                }
            }
        };
        // The server ended the session. If another client took it over, the inbox's last word
        // says so; it comes at about the same time as the rest.
        let verdict = async {
            loop {
                let item = inbox.next().await;
                if let Err(ended) = self.drain_inbox(&token, item, &mut inbox).await {
                    return ended;
                }
            }
        };
        match tokio::time::timeout(VERDICT_WAIT, verdict).await {
            Ok(Ended::Replaced) => Ended::Replaced,
            _ => Ended::Lost(reason),
        }
    }

    /// Handles one inbox item and every other one already waiting, then acknowledges the
    /// messages among them in one call. An `Err` says why the inbox is finished.
    async fn drain_inbox(
        &self,
        token: &str,
        mut item: Option<Result<InboxItem, RpcError>>,
        inbox: &mut RpcStream<InboxItem>,
    ) -> Result<(), Ended> {
        let mut acks = Vec::new();
        let outcome = loop {
            match item {
                Some(Ok(InboxItem::Message(envelope))) if envelope.file.is_some() => {
                    // Acknowledged once the file is saved, which deletes the server's copy.
                    self.download(envelope.clone());
                    self.sink.offer(envelope);
                }
                Some(Ok(InboxItem::Message(envelope))) => {
                    // Handed to the application first, acknowledged after: a crash in between
                    // means a replay (shown once, thanks to the id), never a loss.
                    acks.push(envelope.id);
                    self.sink.offer(envelope);
                }
                Some(Ok(InboxItem::Room(event))) => self.sink.emit(ChatEvent::Room(event)),
                Some(Ok(InboxItem::Friend(event))) => self.sink.emit(ChatEvent::Friend(event)),
                Some(Ok(InboxItem::Call(event))) => self.sink.emit(ChatEvent::Call(event)),
                Some(Ok(InboxItem::Punch(request))) if request.answer => {
                    self.puncher.take_answer(&request);
                }
                Some(Ok(InboxItem::Punch(request))) => self.answer_punch(token, request),
                Some(Err(RpcError::Application(message))) if message.contains(REPLACED) => {
                    break Err(Ended::Replaced);
                }
                Some(Err(e)) => break Err(Ended::Lost(format!("inbox failed: {}", readable(&e)))),
                None => break Err(Ended::Lost("the server ended the inbox".to_owned())),
            }
            match inbox.next().now_or_never() {
                Some(next) => item = next,
                None => break Ok(()),
            }
        };
        if !acks.is_empty() {
            self.ack(token, acks).await.map_err(Ended::Lost)?;
        }
        outcome
    }

    /// Answers another client's hole-punching request, in the background: probes its
    /// candidates from the peer socket (which opens this side's NAT toward them), then tells it
    /// this client's own.
    fn answer_punch(&self, token: &str, request: chat_api::PunchRequest) {
        let Some(delay) = self.puncher.answer_delay(request.from.id) else {
            debug!(from = %request.from.id, "hole-punching request ignored: too many at once");
            return;
        };
        let puncher = self.puncher.clone();
        let signal = self.signal.clone();
        let token = token.to_owned();
        let own_nat = self.nat.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let candidates = parse_candidates(&request.candidates);
            let tactic = punch::tactic(own_nat.as_ref(), request.nat.as_ref());
            if tactic == punch::Tactic::Spray {
                // Before answering, so that the requester's random probes find the ports open.
                puncher.spray(request.attempt, candidates.clone());
            }
            puncher.probe(request.attempt, &candidates).await;
            let answered = signal
                .punch(
                    token,
                    request.from.id,
                    request.attempt,
                    puncher.candidates(),
                    true,
                )
                .await;
            if let Err(e) = answered {
                debug!(from = %request.from.id, "hole-punching answer not sent: {e}");
                return;
            }
            if tactic == punch::Tactic::RandomPorts {
                let ips = punch::public_ips(&candidates);
                tokio::join!(
                    puncher.keep_probing(request.attempt, &candidates),
                    puncher.probe_random_ports(request.attempt, &ips)
                );
            } else {
                puncher.keep_probing(request.attempt, &candidates).await;
            }
        });
    }

    /// Downloads, in the background, the file the server holds for this user that `envelope`
    /// carries, into the files directory (resuming a partial copy), then acknowledges the
    /// message, which deletes the server's copy. A file this client cannot take (too large)
    /// is acknowledged too, and so declined; one that fails for a while (a lost connection, a
    /// full disk) stays on the server and is tried again when the inbox gives it again.
    fn download(&self, envelope: Envelope) {
        let Some(file) = envelope.file.clone() else {
            return;
        };
        if !lock(&self.downloads).insert(envelope.id) {
            return;
        }
        let id = envelope.id;
        let offer = FileOffer {
            id,
            from: envelope.from,
            name: file.name,
            size: file.size,
            sha256: file.sha256,
        };
        let (signal, files, sink) = (self.signal.clone(), self.files.clone(), self.sink.clone());
        let session = self.session.subscribe();
        let downloads = self.downloads.clone();
        tokio::spawn(async move {
            let token = || session.borrow().as_ref().map(|s| s.token.clone());
            let outcome = fetch(&signal, &files, &sink, &offer, &token).await;
            lock(&downloads).remove(&id);
            let (event, done) = match outcome {
                Ok(event) => (Some(event), true),
                Err(Fetch::Declined(reason)) => (Some(failed(&offer, reason)), true),
                Err(Fetch::Later(reason)) => {
                    debug!(file = %id, "download stopped; tried again on the next inbox: {reason}");
                    (
                        Some(failed(&offer, format!("{reason}; it is tried again later"))),
                        false,
                    )
                }
                Err(Fetch::Kept(reason)) => {
                    debug!(file = %id, "file left on the server: {reason}");
                    (None, false)
                }
            };
            if let Some(event) = event {
                sink.emit(ChatEvent::File(event));
            }
            if done
                && let Some(token) = token()
                && let Err(e) = signal.ack(token, vec![id]).await
            {
                debug!(file = %id, "ack after the download failed: {e}");
            }
        });
    }

    async fn ack(&self, token: &str, ids: Vec<Uuid>) -> Result<(), String> {
        match self.signal.ack(token.to_owned(), ids).await {
            Ok(()) => Ok(()),
            Err(RpcError::Application(ChatError::NoSession)) => {
                Err("the server no longer knows the session".to_owned())
            }
            // Unacknowledged messages come again on the next inbox and are shown once.
            Err(e) => {
                debug!("ack failed: {e}");
                Ok(())
            }
        }
    }

    /// Registers again until it works, telling the application each attempt; `Err` with the
    /// last failure once [`ChatClientConfig::max_reconnect_attempts`] attempts failed.
    async fn register_again(&self, mut reason: String) -> Result<Session, (String, u32)> {
        let mut attempt = 0u32;
        loop {
            if self
                .config
                .max_reconnect_attempts
                .is_some_and(|most| attempt >= most)
            {
                return Err((reason, attempt));
            }
            self.set_state(ClientState::Reconnecting {
                reason: reason.clone(),
                attempt,
            });
            if attempt > 0 {
                let backoff = &self.config.reconnect;
                let delay = backoff
                    .delay(attempt, fastrand::f64())
                    .unwrap_or(backoff.cap);
                tokio::time::sleep(delay).await;
            }
            match self.register().await {
                Ok(session) => return Ok(session),
                Err(e) => {
                    debug!(attempt, "registering again failed: {e}");
                    reason = e.to_string();
                    attempt += 1;
                }
            }
        }
    }

    /// Binds this device's identity key to the session, when the client has one: the proof is
    /// the key's signature of the context and the session's token.
    async fn bind_device_key(&self, session: &Session) {
        let Some(identity) = &self.config.device_key else {
            return;
        };
        let mut signed = chat_api::DEVICE_KEY_CONTEXT.to_vec();
        signed.extend_from_slice(session.token.as_bytes());
        let key = chat_api::DeviceKey {
            public: identity.public_key().to_vec(),
            proof: identity.sign(&signed).to_vec(),
        };
        if let Err(e) = self
            .signal
            .bind_device_key(session.token.clone(), key)
            .await
        {
            debug!("the device key was not bound: {e}");
        }
    }

    /// Reads the rooms this user belongs to (the server keeps memberships across sessions),
    /// for [`ChatClient::joined_rooms`](crate::ChatClient::joined_rooms).
    async fn refresh_rooms(&self, session: &Session) {
        let mut rooms = BTreeSet::new();
        let mut after = None;
        loop {
            let page = match self.signal.my_rooms(session.token.clone(), after, 0).await {
                Ok(page) => page,
                Err(e) => {
                    debug!("could not list this user's rooms: {e}");
                    return;
                }
            };
            rooms.extend(
                page.items
                    .into_iter()
                    .filter(|r| matches!(r.membership, Membership::Owner | Membership::Member))
                    .map(|r| r.name),
            );
            match page.next {
                Some(next) if rooms.len() < crate::MAX_LISTED => after = Some(next),
                _ => break,
            }
        }
        *self.rooms() = rooms;
    }
}

/// An error of the server's streams as people read it: the server's own words when it ended
/// the stream itself, else what went wrong with the call.
pub(crate) fn readable(error: &RpcError) -> String {
    match error {
        RpcError::Application(message) => message.clone(),
        other => other.report().to_string(),
    }
}

/// The interval to heartbeat at when the server asks for `heartbeat_ms`, within
/// [`HEARTBEAT_BOUNDS`]: the number comes from the network.
fn heartbeat_period(heartbeat_ms: u64) -> Duration {
    let (shortest, longest) = HEARTBEAT_BOUNDS;
    Duration::from_millis(heartbeat_ms).clamp(shortest, longest)
}

/// The background task: serves sessions one after the other, for ever (until aborted).
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut session: Session,
    mut renew: mpsc::UnboundedReceiver<String>,
) {
    shared.refresh_rooms(&session).await;
    shared.bind_device_key(&session).await;
    let mut reconnects = 0;
    loop {
        let ended = shared.serve(&session, reconnects, &mut renew).await;
        shared.session.send_replace(None);
        let reason = match ended {
            Ended::Lost(reason) => reason,
            Ended::Replaced => {
                warn!(user = %shared.config.name, "another client registered as this user; stopping");
                shared.set_state(ClientState::Replaced);
                return;
            }
        };
        // Peers may have moved while we were away.
        shared.peers.clear();
        warn!(user = %shared.config.name, %reason, "session lost; registering again");
        session = match shared.register_again(reason).await {
            Ok(session) => session,
            Err((reason, attempts)) => {
                warn!(user = %shared.config.name, attempts, %reason, "giving up reconnecting");
                shared.set_state(ClientState::GaveUp { reason, attempts });
                return;
            }
        };
        reconnects += 1;
        info!(user = %shared.config.name, reconnects, "registered again");
        shared.refresh_rooms(&session).await;
        shared.bind_device_key(&session).await;
        let nat = shared.nat.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(report) = nat
            && let Err(e) = shared
                .signal
                .report_nat(session.token.clone(), report)
                .await
        {
            debug!("the NAT report was not sent again: {e}");
        }
    }
}

/// Why a download from the server did not end with a saved file.
enum Fetch {
    /// This client does not take the file (too large, a bad hash, gone from the server): the
    /// message is acknowledged, which deletes it.
    Declined(String),
    /// It failed for now (the connection, the disk): left on the server, tried again later.
    Later(String),
    /// This client takes no files at all: left on the server for another device of the user.
    Kept(String),
}

/// Downloads the file `offer` describes from the server into `files`.
async fn fetch(
    signal: &SignalClient,
    files: &Incoming,
    sink: &Sink,
    offer: &FileOffer,
    token: &impl Fn() -> Option<String>,
) -> Result<FileEvent, Fetch> {
    let (mut offset, event) = match files.offer(Source::Server, offer.clone()).await {
        Ok(taken) => taken,
        Err(PeerError::Refused(reason)) if !files.takes_files() => return Err(Fetch::Kept(reason)),
        Err(PeerError::Refused(reason) | PeerError::Invalid(reason)) => {
            return Err(Fetch::Declined(reason));
        }
        Err(e) => return Err(Fetch::Later(e.to_string())),
    };
    if let Some(event) = event {
        sink.emit(ChatEvent::File(event));
    }
    while offset < offer.size {
        let token = token().ok_or_else(|| Fetch::Later("no session".to_owned()))?;
        let data = match signal.download(token, offer.id, offset, 0).await {
            Ok(data) => data,
            Err(RpcError::Application(ChatError::NoSuchFile(_))) => {
                return Err(Fetch::Declined(
                    "the server no longer holds it (it expired)".to_owned(),
                ));
            }
            Err(e) => return Err(Fetch::Later(e.to_string())),
        };
        if data.is_empty() {
            return Err(Fetch::Later(format!(
                "the server's copy ends at {offset} of {} bytes",
                offer.size
            )));
        }
        files
            .chunk(Source::Server, offer.id, offset, &data)
            .await
            .map_err(|e| Fetch::Later(e.to_string()))?;
        offset += data.len() as u64;
    }
    match files.finish(Source::Server, offer.id).await {
        Ok(FileEvent::Failed { reason, .. }) => Err(Fetch::Declined(reason)),
        Ok(event) => Ok(event),
        Err(e) => Err(Fetch::Later(e.to_string())),
    }
}

fn failed(offer: &FileOffer, reason: String) -> FileEvent {
    FileEvent::Failed {
        id: offer.id,
        from: offer.from.clone(),
        name: offer.name.clone(),
        reason,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation is a single insert or remove: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
