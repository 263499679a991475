//! The direct path: the `chat.Peer` service every client serves, where messages from other
//! clients arrive, and the cache of connections this client opens to other clients' peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_api::{Destination, Envelope, MAX_TEXT_BYTES, Path, Peer, PeerClient, PeerError};
use rpc_core::{Backoff, Client, Format};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::dedup::SeenIds;
use crate::event::ChatEvent;

/// Where everything that arrives, by any path, is handed to the application: each message once.
#[derive(Debug)]
pub(crate) struct Sink {
    /// This client's user; set again once a login by name tells the id.
    me: Mutex<Uuid>,
    seen: Mutex<SeenIds>,
    events: mpsc::UnboundedSender<ChatEvent>,
}

impl Sink {
    pub(crate) fn new(me: Uuid, capacity: usize, events: mpsc::UnboundedSender<ChatEvent>) -> Self {
        Sink {
            me: Mutex::new(me),
            seen: Mutex::new(SeenIds::new(capacity)),
            events,
        }
    }

    /// Hands a message to the application unless its id was seen already; true when it was new.
    pub(crate) fn offer(&self, envelope: Envelope) -> bool {
        // The check and the send happen under one lock, so two copies racing in by the two
        // paths cannot both pass.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.insert(envelope.id) {
            return false;
        }
        let _ = self.events.send(ChatEvent::Message(envelope));
        true
    }

    /// This client's user.
    pub(crate) fn me(&self) -> Uuid {
        *self.me.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records this client's user, learned by logging in by name.
    pub(crate) fn set_me(&self, me: Uuid) {
        *self.me.lock().unwrap_or_else(|p| p.into_inner()) = me;
    }

    /// Hands any other event to the application.
    pub(crate) fn emit(&self, event: ChatEvent) {
        let _ = self.events.send(event);
    }
}

/// The `chat.Peer` service: takes direct messages for this client's user.
#[derive(Debug)]
pub(crate) struct PeerService {
    sink: Arc<Sink>,
}

impl PeerService {
    pub(crate) fn new(sink: Arc<Sink>) -> Self {
        PeerService { sink }
    }
}

impl Peer for PeerService {
    async fn deliver(&self, mut envelope: Envelope) -> Result<(), PeerError> {
        match envelope.to {
            Destination::User(to) if to == self.sink.me() => {}
            Destination::User(to) => return Err(PeerError::WrongRecipient(to)),
            Destination::Room(_) => {
                return Err(PeerError::Invalid(
                    "room posts go through the server".to_owned(),
                ));
            }
        }
        check_text(&envelope.text).map_err(PeerError::Invalid)?;
        // Whatever the sender wrote, this copy came peer to peer.
        envelope.path = Path::Direct;
        self.sink.offer(envelope);
        Ok(())
    }

    async fn whoami(&self) -> Uuid {
        self.sink.me()
    }
}

/// Checks a message text against the contract's rules.
pub(crate) fn check_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the text is empty".to_owned());
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "the text is {} bytes; the limit is {MAX_TEXT_BYTES}",
            text.len()
        ));
    }
    Ok(())
}

/// Connections to other clients' peers, one per advertised endpoint, kept while they work, and
/// the endpoints whose direct path failed lately.
#[derive(Debug)]
pub(crate) struct PeerClients {
    format: Format,
    timeout: Duration,
    clients: Mutex<HashMap<String, PeerClient>>,
    /// When each endpoint's direct path last failed, and why: messages to it go through the
    /// server at once until [`DIRECT_RETRY_AFTER`] has passed, instead of each waiting for the
    /// direct timeout again.
    failed: Mutex<HashMap<String, (Instant, String)>>,
}

/// Beyond this many cached peer connections (or remembered failures) the cache starts again
/// from empty.
const MAX_CACHED_PEERS: usize = 256;

/// How long after a direct path failed messages to that peer skip it and go through the server.
pub(crate) const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(30);

impl PeerClients {
    pub(crate) fn new(format: Format, timeout: Duration) -> Self {
        PeerClients {
            format,
            timeout,
            clients: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers `envelope` to the peer at `endpoint` within the direct-send timeout; fails at
    /// once when the direct path to it failed less than [`DIRECT_RETRY_AFTER`] ago.
    pub(crate) async fn deliver(&self, endpoint: &str, envelope: Envelope) -> Result<(), String> {
        if let Some((at, why)) = self.failed_lately(endpoint) {
            return Err(format!(
                "the direct path failed {}s ago ({why}); tried again after {}s",
                at.elapsed().as_secs(),
                DIRECT_RETRY_AFTER.as_secs()
            ));
        }
        let client = self.client(endpoint)?;
        let result = tokio::time::timeout(self.timeout, client.deliver(envelope)).await;
        let error = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        // A peer that failed once is connected afresh next time (it may have moved or restarted),
        // and not before a while.
        self.lock().remove(endpoint);
        let mut failed = self.lock_failed();
        if failed.len() >= MAX_CACHED_PEERS {
            failed.clear();
        }
        failed.insert(endpoint.to_owned(), (Instant::now(), error.clone()));
        Err(error)
    }

    /// When and why the direct path to `endpoint` failed, if less than [`DIRECT_RETRY_AFTER`]
    /// ago.
    fn failed_lately(&self, endpoint: &str) -> Option<(Instant, String)> {
        let mut failed = self.lock_failed();
        match failed.get(endpoint) {
            Some((at, _)) if at.elapsed() >= DIRECT_RETRY_AFTER => {
                failed.remove(endpoint);
                None
            }
            other => other.cloned(),
        }
    }

    /// Drops every cached connection and remembered failure.
    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.lock_failed().clear();
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client(&self, endpoint: &str) -> Result<PeerClient, String> {
        let mut clients = self.lock();
        if let Some(client) = clients.get(endpoint) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CACHED_PEERS {
            clients.clear();
        }
        // Not waiting for reconnects makes a closed or refusing endpoint fail at once, so the
        // relay takes over without spending the whole timeout.
        let client = Client::builder()
            .format(self.format.clone())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .wait_for_reconnect(false)
            .reconnect(Backoff::new(self.timeout, self.timeout * 4))
            .connect_lazy(endpoint)
            .map_err(|e| format!("bad peer endpoint: {e}"))?;
        let client = PeerClient::new(client).with_timeout(self.timeout);
        clients.insert(endpoint.to_owned(), client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerClient>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_api::Sender;

    fn envelope(to: Destination, text: &str) -> Envelope {
        Envelope {
            id: Uuid::new_v4(),
            from: Sender {
                id: Uuid::new_v4(),
                name: "alice".to_owned(),
            },
            to,
            text: text.to_owned(),
            sent_at_ms: 1,
            path: Path::Relayed,
        }
    }

    #[tokio::test]
    async fn a_peer_whose_direct_path_failed_is_skipped_for_a_while() {
        // A peer that takes connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("tcp://{}", silent.local_addr().unwrap());
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let peers = PeerClients::new(Format::MessagePack, Duration::from_millis(100));
        let message = envelope(Destination::User(Uuid::new_v4()), "hi");
        let first = peers.deliver(&endpoint, message.clone()).await.unwrap_err();
        assert!(!first.contains("the direct path failed"), "{first}");
        // Within the retry window the direct path is not tried: the error says so.
        let second = peers.deliver(&endpoint, message.clone()).await.unwrap_err();
        assert!(second.contains("the direct path failed"), "{second}");
        assert!(second.contains(&first), "{second}");
        // Forgetting (as when the session changes) tries it again.
        peers.clear();
        let third = peers.deliver(&endpoint, message).await.unwrap_err();
        assert_eq!(third, first, "tried again, failing the same way");
        accepting.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_direct_path_is_tried_again_after_the_retry_window() {
        let peers = PeerClients::new(Format::MessagePack, Duration::from_millis(100));
        peers.lock_failed().insert(
            "tcp://127.0.0.1:9".into(),
            (Instant::now(), "refused".into()),
        );
        assert!(peers.failed_lately("tcp://127.0.0.1:9").is_some());
        tokio::time::advance(DIRECT_RETRY_AFTER).await;
        assert!(peers.failed_lately("tcp://127.0.0.1:9").is_none());
    }

    #[tokio::test]
    async fn a_direct_message_is_shown_once_and_marked_direct() {
        let me = Uuid::new_v4();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let service = PeerService::new(Arc::new(Sink::new(me, 16, tx)));
        let message = envelope(Destination::User(me), "hi");
        service.deliver(message.clone()).await.unwrap();
        service.deliver(message.clone()).await.unwrap();
        let Some(ChatEvent::Message(got)) = rx.recv().await else {
            panic!("expected a message");
        };
        assert_eq!(got.path, Path::Direct);
        assert_eq!(got.id, message.id);
        assert!(rx.try_recv().is_err(), "the second copy must not be shown");
    }

    #[tokio::test]
    async fn messages_for_someone_else_or_out_of_rules_are_refused() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let service = PeerService::new(Arc::new(Sink::new(me, 16, tx)));
        assert_eq!(
            service
                .deliver(envelope(Destination::User(other), "hi"))
                .await,
            Err(PeerError::WrongRecipient(other))
        );
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            service
                .deliver(envelope(Destination::User(me), &long))
                .await,
            Err(PeerError::Invalid(_))
        ));
        assert!(matches!(
            service.deliver(envelope(Destination::User(me), "")).await,
            Err(PeerError::Invalid(_))
        ));
        assert!(matches!(
            service
                .deliver(envelope(Destination::Room("lobby".into()), "hi"))
                .await,
            Err(PeerError::Invalid(_))
        ));
        assert!(rx.try_recv().is_err());
        assert_eq!(service.whoami().await, me);
    }
}
