//! The direct path: the `chat.Peer` service every client serves, where messages from other
//! clients arrive, and the cache of connections this client opens to other clients' peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_api::{Destination, Envelope, MAX_TEXT_BYTES, Path, Peer, PeerClient, PeerError};
use rpc_core::{Backoff, Client, Format};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::dedup::SeenIds;
use crate::event::ChatEvent;

/// Where everything that arrives, by any path, is handed to the application: each message once.
#[derive(Debug)]
pub(crate) struct Sink {
    me: Uuid,
    seen: Mutex<SeenIds>,
    events: mpsc::UnboundedSender<ChatEvent>,
}

impl Sink {
    pub(crate) fn new(me: Uuid, capacity: usize, events: mpsc::UnboundedSender<ChatEvent>) -> Self {
        Sink {
            me,
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
            Destination::User(to) if to == self.sink.me => {}
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
        self.sink.me
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

/// Connections to other clients' peers, one per advertised endpoint, kept while they work.
#[derive(Debug)]
pub(crate) struct PeerClients {
    format: Format,
    timeout: Duration,
    clients: Mutex<HashMap<String, PeerClient>>,
}

/// Beyond this many cached peer connections the cache starts again from empty.
const MAX_CACHED_PEERS: usize = 256;

impl PeerClients {
    pub(crate) fn new(format: Format, timeout: Duration) -> Self {
        PeerClients {
            format,
            timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers `envelope` to the peer at `endpoint` within the direct-send timeout.
    pub(crate) async fn deliver(&self, endpoint: &str, envelope: Envelope) -> Result<(), String> {
        let client = self.client(endpoint)?;
        let result = tokio::time::timeout(self.timeout, client.deliver(envelope)).await;
        let error = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        // A peer that failed once is connected afresh next time (it may have moved or restarted).
        self.lock().remove(endpoint);
        Err(error)
    }

    /// Drops every cached connection.
    pub(crate) fn clear(&self) {
        self.lock().clear();
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
