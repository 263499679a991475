//! The direct path: the `chat.Peer` service every client serves, where messages from other
//! clients arrive, and the cache of connections this client opens to other clients' peers.
//!
//! Peers talk over QUIC, each end presenting its device's identity key: the sender pins the
//! recipient's key as the server has it (bound to the recipient's session), and the recipient
//! checks the sender's key against the key the server has for the user the envelope names. So
//! a message that arrives directly is from who it says, and goes to whom it was meant for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chat_api::{
    Destination, Envelope, FileOffer, MAX_TEXT_BYTES, Path, Peer, PeerClient, PeerError,
};
use rpc_core::transport::quic::{PeerAuth, QuicConnector};
use rpc_core::{Backoff, CallContext, Client, Endpoint, Format, PeerAddr};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::dedup::SeenIds;
use crate::event::{ChatEvent, FileEvent};
use crate::files::{Incoming, Source};

/// Looks up the device key the server has for a user: `None` when the user bound none (or is
/// offline), an error when the server could not be asked.
pub(crate) type KeyLookup = Arc<
    dyn Fn(Uuid) -> futures::future::BoxFuture<'static, Result<Option<[u8; 32]>, String>>
        + Send
        + Sync,
>;

/// The device keys of other users as the server has them, remembered until a direct exchange
/// with one fails (the user may have moved to another device).
#[derive(Default)]
pub(crate) struct KeyBook {
    lookup: OnceLock<KeyLookup>,
    known: Mutex<HashMap<Uuid, [u8; 32]>>,
}

impl std::fmt::Debug for KeyBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBook")
            .field("known", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl KeyBook {
    /// Sets how keys are looked up (once the client can ask its server).
    pub(crate) fn set_lookup(&self, lookup: KeyLookup) {
        let _ = self.lookup.set(lookup);
    }

    /// The key of `user`: remembered, or asked of the server.
    pub(crate) async fn key_of(&self, user: Uuid) -> Result<[u8; 32], String> {
        if let Some(key) = self.lock().get(&user) {
            return Ok(*key);
        }
        self.fetch(user).await
    }

    async fn fetch(&self, user: Uuid) -> Result<[u8; 32], String> {
        let lookup = self
            .lookup
            .get()
            .ok_or_else(|| "not signed in yet".to_owned())?
            .clone();
        let key = lookup(user)
            .await
            .map_err(|e| format!("the server could not tell the device key: {e}"))?
            .ok_or_else(|| "no device key is bound to the user's session".to_owned())?;
        let mut known = self.lock();
        if known.len() >= MAX_CACHED_PEERS {
            known.clear();
        }
        known.insert(user, key);
        Ok(key)
    }

    /// Checks that `presented` is the key the server has for `user`, asking the server again
    /// when it differs from the one remembered.
    pub(crate) async fn check(&self, user: Uuid, presented: [u8; 32]) -> Result<(), String> {
        if self.lock().get(&user) == Some(&presented) {
            return Ok(());
        }
        let key = self.fetch(user).await?;
        if key == presented {
            Ok(())
        } else {
            Err("the sender's device key is not the one bound to that user's session".to_owned())
        }
    }

    /// Forgets the key of `user`, to ask the server next time.
    pub(crate) fn forget(&self, user: Uuid) {
        self.lock().remove(&user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, [u8; 32]>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where everything that arrives, by any path, is handed to the application: each message once.
#[derive(Debug)]
pub(crate) struct Sink {
    /// This client's user; set again once a login by name tells the id.
    me: Mutex<Uuid>,
    seen: Mutex<SeenIds>,
    events: mpsc::UnboundedSender<ChatEvent>,
    /// Other users' device keys, to check who sent what arrives directly, and whom this client
    /// sends to.
    pub(crate) keys: KeyBook,
}

impl Sink {
    pub(crate) fn new(me: Uuid, capacity: usize, events: mpsc::UnboundedSender<ChatEvent>) -> Self {
        Sink {
            me: Mutex::new(me),
            seen: Mutex::new(SeenIds::new(capacity)),
            events,
            keys: KeyBook::default(),
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
    files: Arc<Incoming>,
}

impl PeerService {
    pub(crate) fn new(sink: Arc<Sink>, files: Arc<Incoming>) -> Self {
        PeerService { sink, files }
    }
}

impl Peer for PeerService {
    async fn deliver(&self, ctx: CallContext, envelope: Envelope) -> Result<(), PeerError> {
        self.accept(ctx.peer(), envelope).await
    }

    async fn whoami(&self) -> Uuid {
        self.sink.me()
    }

    async fn offer_file(&self, ctx: CallContext, offer: FileOffer) -> Result<u64, PeerError> {
        let key = device_key(ctx.peer())?;
        self.sink
            .keys
            .check(offer.from.id, key)
            .await
            .map_err(PeerError::Unauthenticated)?;
        let (offset, event) = self.files.offer(Source::Device(key), offer).await?;
        if let Some(event) = event {
            self.sink.emit(ChatEvent::File(event));
        }
        Ok(offset)
    }

    async fn file_chunk(
        &self,
        ctx: CallContext,
        id: Uuid,
        offset: u64,
        data: bytes::Bytes,
    ) -> Result<(), PeerError> {
        let key = device_key(ctx.peer())?;
        self.files
            .chunk(Source::Device(key), id, offset, &data)
            .await
    }

    async fn finish_file(&self, ctx: CallContext, id: Uuid) -> Result<(), PeerError> {
        let key = device_key(ctx.peer())?;
        let event = self.files.finish(Source::Device(key), id).await?;
        let failed = match &event {
            FileEvent::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        self.sink.emit(ChatEvent::File(event));
        match failed {
            Some(reason) => Err(PeerError::Invalid(reason)),
            None => Ok(()),
        }
    }
}

/// The device key a direct connection proved.
fn device_key(peer: &PeerAddr) -> Result<[u8; 32], PeerError> {
    match peer {
        PeerAddr::Quic { key: Some(key), .. } => Ok(*key),
        _ => Err(PeerError::Unauthenticated(
            "direct messages and files come over QUIC, from the sender's device key".to_owned(),
        )),
    }
}

impl PeerService {
    /// Takes a message that came directly from `peer`.
    async fn accept(&self, peer: &PeerAddr, mut envelope: Envelope) -> Result<(), PeerError> {
        let key = device_key(peer)?;
        self.sink
            .keys
            .check(envelope.from.id, key)
            .await
            .map_err(PeerError::Unauthenticated)?;
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

/// What is asked of a peer over a direct path.
#[derive(Debug, Clone)]
pub(crate) enum PeerCall {
    /// Take this message.
    Deliver(Envelope),
    /// Say who you are, which must be this user: the path works, and nothing is sent.
    Reach(Uuid),
}

/// Connections to other clients' peers, one per advertised endpoint and key, kept while they
/// work, and the endpoints whose direct path failed lately.
#[derive(Debug)]
pub(crate) struct PeerClients {
    format: Format,
    timeout: Duration,
    /// Opens QUIC connections from this client's own peer socket (the address others know),
    /// presenting this device's key.
    dialer: QuicConnector,
    clients: Mutex<HashMap<String, PeerClient>>,
    /// The endpoint that last delivered to each user (advertised, or a punched hole).
    paths: Mutex<HashMap<Uuid, String>>,
    /// When each endpoint's direct path last failed, and why: messages to it go through the
    /// server at once until [`DIRECT_RETRY_AFTER`] has passed, instead of each waiting for the
    /// direct timeout again.
    failed: Mutex<HashMap<String, (Instant, String)>>,
}

/// Beyond this many cached peer connections (or remembered failures or keys) the cache starts
/// again from empty.
const MAX_CACHED_PEERS: usize = 256;

/// How long after a direct path failed messages to that peer skip it and go through the server.
pub(crate) const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(30);

impl PeerClients {
    pub(crate) fn new(format: Format, timeout: Duration, dialer: QuicConnector) -> Self {
        PeerClients {
            format,
            timeout,
            dialer,
            clients: Mutex::new(HashMap::new()),
            paths: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint that last delivered to `user`.
    pub(crate) fn path_of(&self, user: Uuid) -> Option<String> {
        self.lock_paths().get(&user).cloned()
    }

    /// Remembers the endpoint that delivered to `user`.
    pub(crate) fn remember_path(&self, user: Uuid, endpoint: String) {
        let mut paths = self.lock_paths();
        if paths.len() >= MAX_CACHED_PEERS {
            paths.clear();
        }
        paths.insert(user, endpoint);
    }

    /// Forgets the path to `user`, which failed.
    pub(crate) fn forget_path(&self, user: Uuid) {
        self.lock_paths().remove(&user);
    }

    fn lock_paths(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, String>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers `envelope` to the peer at `endpoint`, which must hold the device key `key`,
    /// within the direct-send timeout; fails at once when the direct path to it failed less
    /// than [`DIRECT_RETRY_AFTER`] ago.
    #[cfg(test)]
    pub(crate) async fn deliver(
        &self,
        endpoint: &str,
        key: [u8; 32],
        envelope: Envelope,
    ) -> Result<(), String> {
        self.call(endpoint, key, PeerCall::Deliver(envelope)).await
    }

    /// Makes `call` on the peer at `endpoint`, as [`PeerClients::deliver`] does.
    pub(crate) async fn call(
        &self,
        endpoint: &str,
        key: [u8; 32],
        call: PeerCall,
    ) -> Result<(), String> {
        if let Some((at, why)) = self.failed_lately(endpoint) {
            return Err(format!(
                "the direct path failed {}s ago ({why}); tried again after {}s",
                at.elapsed().as_secs(),
                DIRECT_RETRY_AFTER.as_secs()
            ));
        }
        let cached = cache_key(endpoint, &key);
        let error = match self.client(endpoint, &cached, key).await {
            Ok(client) => {
                let outcome = tokio::time::timeout(self.timeout, async {
                    match call {
                        PeerCall::Deliver(envelope) => {
                            client.deliver(envelope).await.map_err(|e| e.to_string())
                        }
                        PeerCall::Reach(user) => match client.whoami().await {
                            Ok(id) if id == user => Ok(()),
                            Ok(id) => Err(format!("the peer there is {id}, not {user}")),
                            Err(e) => Err(e.to_string()),
                        },
                    }
                })
                .await;
                match outcome {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {:?}", self.timeout),
                }
            }
            Err(e) => e,
        };
        // A peer that failed once is connected afresh next time (it may have moved or restarted),
        // and not before a while.
        self.lock().remove(&cached);
        let mut failed = self.lock_failed();
        if failed.len() >= MAX_CACHED_PEERS {
            failed.clear();
        }
        failed.insert(endpoint.to_owned(), (Instant::now(), error.clone()));
        Err(error)
    }

    /// The connection to the peer at `endpoint` holding `key` (cached, or opened lazily),
    /// for calls of its own, such as a file's.
    pub(crate) async fn client_for(
        &self,
        endpoint: &str,
        key: [u8; 32],
    ) -> Result<PeerClient, String> {
        self.client(endpoint, &cache_key(endpoint, &key), key).await
    }

    /// Forgets the connection to `endpoint` for `key`, which failed.
    pub(crate) fn drop_client(&self, endpoint: &str, key: [u8; 32]) {
        self.lock().remove(&cache_key(endpoint, &key));
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
        self.lock_paths().clear();
        self.lock_failed().clear();
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn client(
        &self,
        endpoint: &str,
        cached: &str,
        key: [u8; 32],
    ) -> Result<PeerClient, String> {
        if let Some(client) = self.lock().get(cached) {
            return Ok(client.clone());
        }
        let remote = quic_addr(endpoint).await?;
        let connector = self
            .dialer
            .to(remote, &PeerAuth::pinned(key))
            .map_err(|e| e.to_string())?;
        // Not waiting for reconnects makes a refused endpoint fail at once, so the relay takes
        // over without spending the whole timeout.
        let client = Client::builder()
            .format(self.format.clone())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .wait_for_reconnect(false)
            .reconnect(Backoff::new(self.timeout, self.timeout * 4))
            .connect_lazy_with(connector)
            .map_err(|e| format!("bad peer endpoint: {e}"))?;
        let client = PeerClient::new(client).with_timeout(self.timeout);
        let mut clients = self.lock();
        if clients.len() >= MAX_CACHED_PEERS {
            clients.clear();
        }
        clients.insert(cached.to_owned(), client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerClient>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A peer connection is for one endpoint and the key expected there.
fn cache_key(endpoint: &str, key: &[u8; 32]) -> String {
    let mut cached = String::with_capacity(endpoint.len() + 65);
    cached.push_str(endpoint);
    cached.push('#');
    for byte in key {
        cached.push_str(&format!("{byte:02x}"));
    }
    cached
}

/// The UDP address of a `quic://` peer endpoint; other schemes cannot carry an authenticated
/// direct message.
async fn quic_addr(endpoint: &str) -> Result<SocketAddr, String> {
    let parsed: Endpoint = endpoint
        .parse()
        .map_err(|e| format!("bad peer endpoint {endpoint:?}: {e}"))?;
    let Endpoint::Quic { host, port } = parsed else {
        return Err(format!(
            "the peer advertises {endpoint}; direct messages go over quic:// only, where both \
             ends prove their device keys"
        ));
    };
    let host = host.trim_matches(['[', ']']);
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
        .next()
        .ok_or_else(|| format!("{endpoint} names no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_api::Sender;
    use rpc_core::transport::quic::{Identity, QuicConfig, QuicEndpoint};

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
            file: None,
        }
    }

    fn dialer() -> QuicConnector {
        let identity = Identity::generate().unwrap();
        let endpoint =
            QuicEndpoint::bind("127.0.0.1:0".parse().unwrap(), QuicConfig::new(identity)).unwrap();
        endpoint.connector(endpoint.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_peer_whose_direct_path_failed_is_skipped_for_a_while() {
        // A UDP socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("quic://{}", silent.local_addr().unwrap());
        let peers = PeerClients::new(Format::MessagePack, Duration::from_millis(100), dialer());
        let key = [7; 32];
        let message = envelope(Destination::User(Uuid::new_v4()), "hi");
        let first = peers
            .deliver(&endpoint, key, message.clone())
            .await
            .unwrap_err();
        assert!(!first.contains("the direct path failed"), "{first}");
        // Within the retry window the direct path is not tried: the error says so.
        let second = peers
            .deliver(&endpoint, key, message.clone())
            .await
            .unwrap_err();
        assert!(second.contains("the direct path failed"), "{second}");
        assert!(second.contains(&first), "{second}");
        // Forgetting (as when the session changes) tries it again.
        peers.clear();
        let third = peers.deliver(&endpoint, key, message).await.unwrap_err();
        assert!(
            !third.contains("the direct path failed"),
            "tried again: {third}"
        );
    }

    #[tokio::test]
    async fn only_quic_endpoints_are_tried() {
        let peers = PeerClients::new(Format::MessagePack, Duration::from_millis(100), dialer());
        let message = envelope(Destination::User(Uuid::new_v4()), "hi");
        let error = peers
            .deliver("tcp://127.0.0.1:9", [7; 32], message)
            .await
            .unwrap_err();
        assert!(error.contains("quic:// only"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_direct_path_is_tried_again_after_the_retry_window() {
        let peers = PeerClients::new(Format::MessagePack, Duration::from_millis(100), dialer());
        peers.lock_failed().insert(
            "quic://127.0.0.1:9".into(),
            (Instant::now(), "refused".into()),
        );
        assert!(peers.failed_lately("quic://127.0.0.1:9").is_some());
        tokio::time::advance(DIRECT_RETRY_AFTER).await;
        assert!(peers.failed_lately("quic://127.0.0.1:9").is_none());
    }

    /// A peer service whose key book knows `sender`'s key.
    fn service(me: Uuid, sender: Uuid, key: [u8; 32]) -> (PeerService, ChatEventsRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Arc::new(Sink::new(me, 16, tx));
        sink.keys.set_lookup(Arc::new(move |user| {
            Box::pin(async move { Ok((user == sender).then_some(key)) })
        }));
        (PeerService::new(sink, Arc::new(Incoming::new(None, 0))), rx)
    }

    type ChatEventsRx = mpsc::UnboundedReceiver<ChatEvent>;

    fn quic_peer(key: [u8; 32]) -> PeerAddr {
        PeerAddr::Quic {
            addr: "127.0.0.1:1".parse().unwrap(),
            key: Some(key),
        }
    }

    #[tokio::test]
    async fn a_direct_message_is_shown_once_and_marked_direct() {
        let me = Uuid::new_v4();
        let message = envelope(Destination::User(me), "hi");
        let (service, mut rx) = service(me, message.from.id, [1; 32]);
        let peer = quic_peer([1; 32]);
        service.accept(&peer, message.clone()).await.unwrap();
        service.accept(&peer, message.clone()).await.unwrap();
        let Some(ChatEvent::Message(got)) = rx.recv().await else {
            panic!("expected a message");
        };
        assert_eq!(got.path, Path::Direct);
        assert_eq!(got.id, message.id);
        assert!(rx.try_recv().is_err(), "the second copy must not be shown");
    }

    #[tokio::test]
    async fn a_sender_without_the_users_key_is_refused() {
        let me = Uuid::new_v4();
        let message = envelope(Destination::User(me), "hi");
        let (service, mut rx) = service(me, message.from.id, [1; 32]);
        // Another key than the server's for that user: someone posing as them.
        assert!(matches!(
            service.accept(&quic_peer([2; 32]), message.clone()).await,
            Err(PeerError::Unauthenticated(_))
        ));
        // A connection without a key, or not over QUIC.
        let keyless = PeerAddr::Quic {
            addr: "127.0.0.1:1".parse().unwrap(),
            key: None,
        };
        assert!(matches!(
            service.accept(&keyless, message.clone()).await,
            Err(PeerError::Unauthenticated(_))
        ));
        let tcp = PeerAddr::Tcp("127.0.0.1:1".parse().unwrap());
        assert!(matches!(
            service.accept(&tcp, message.clone()).await,
            Err(PeerError::Unauthenticated(_))
        ));
        // A user with no key bound.
        let mut stranger = message;
        stranger.from.id = Uuid::new_v4();
        assert!(matches!(
            service.accept(&quic_peer([1; 32]), stranger).await,
            Err(PeerError::Unauthenticated(_))
        ));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn messages_for_someone_else_or_out_of_rules_are_refused() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let sender = Uuid::new_v4();
        let (service, mut rx) = service(me, sender, [1; 32]);
        let peer = quic_peer([1; 32]);
        let from = |mut e: Envelope| {
            e.from.id = sender;
            e
        };
        assert_eq!(
            service
                .accept(&peer, from(envelope(Destination::User(other), "hi")))
                .await,
            Err(PeerError::WrongRecipient(other))
        );
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            service
                .accept(&peer, from(envelope(Destination::User(me), &long)))
                .await,
            Err(PeerError::Invalid(_))
        ));
        assert!(matches!(
            service
                .accept(&peer, from(envelope(Destination::User(me), "")))
                .await,
            Err(PeerError::Invalid(_))
        ));
        assert!(matches!(
            service
                .accept(
                    &peer,
                    from(envelope(Destination::Room("lobby".into()), "hi"))
                )
                .await,
            Err(PeerError::Invalid(_))
        ));
        assert!(rx.try_recv().is_err());
        assert_eq!(service.whoami().await, me);
    }
}
