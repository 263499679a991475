//! The chat client library: registers with the chat server, keeps the session alive, serves its
//! own `chat.Peer` for direct messages, and sends peer to peer when it can and through the server
//! when it cannot.
//!
//! - [`ChatClient::connect`] starts everything and returns the client and a receiver of
//!   [`ChatEvent`]s: messages (each shown once, whichever path brought it), presence changes,
//!   room events and state changes.
//! - [`ChatClient::send`] looks the recipient up, tries the direct path within
//!   [`ChatClientConfig::direct_timeout`], and falls back to the server's relay, which stores
//!   the message if the recipient is offline. The [`SendReport`] says which path was used. A
//!   relay or post whose answer was lost with the connection is sent again, with the same
//!   message id, once the client is back online.
//! - The client reconnects by itself: when the connection drops or the server forgets the
//!   session, it registers again (same id and secret) and re-opens its streams; the server
//!   keeps its rooms. [`ChatClient::watch_state`] follows it.
//!
//! ```no_run
//! use chat_client::{ChatClient, ChatClientConfig, ChatEvent};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ChatClientConfig::new("tcp://127.0.0.1:7300".parse()?, "alice");
//! let (alice, mut events) = ChatClient::connect(config).await?;
//! let report = alice.send("bob", "hi").await?;
//! println!("sent by path {:?}", report.path);
//! while let Some(event) = events.recv().await {
//!     if let ChatEvent::Message(m) = event {
//!         println!("{}: {}", m.from.name, m.text);
//!     }
//! }
//! # Ok(()) }
//! ```

mod command;
mod config;
mod dedup;
mod directory;
mod event;
mod files;
pub mod nat;
mod peer;
mod punch;
mod render;
mod session;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_api::{
    Access, CallMedia, ChatError, Delivery, Envelope, Friend, FriendState, IceCandidate,
    LoginRequest, Membership, NatReport, Page, Path, PeerServer, Rendezvous, RoomInfo, SdpKind,
    Sender, Session, SignalClient, UserInfo, excerpt, now_ms,
};
use rpc_core::transport::quic::{Identity, QuicConfig, QuicEndpoint};
use rpc_core::{Client, Endpoint, Failover, RpcError, Server, ServerHandle};
use rpc_registry::{Discovery, ServiceKey};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::debug;
use uuid::Uuid;

pub use self::command::{Command, HELP};
pub use self::config::{ChatClientConfig, DEFAULT_LISTEN, DEFAULT_SERVER, new_secret};
pub use self::event::{
    ChatEvent, ClientError, ClientState, FileEvent, FileReport, PeerPath, SendReport,
};
pub use self::files::human_bytes;
pub use self::nat::{NatTimeouts, discover, discover_on};
use self::peer::{PeerCall, PeerClients, PeerService, Sink, check_text};
use self::punch::Puncher;
pub use self::render::{
    event_json, event_text, nat_json, nat_text, path_name, printable, user_json,
};
use self::session::Shared;

/// The most items [`ChatClient::who`], [`ChatClient::rooms`], [`ChatClient::members`] and
/// [`ChatClient::history`] collect before they give up on a list that does not end.
pub const MAX_LISTED: usize = 1 << 20;

/// The first and the longest pause before a relay or post whose outcome is unknown is sent
/// again.
const RESEND_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// The first address of a STUN server's `host:port`.
pub async fn resolve_stun(host_port: &str) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host(host_port)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| {
            ClientError::Invalid(format!(
                "the STUN server {:?} cannot be resolved",
                excerpt(host_port)
            ))
        })
}

/// Whether a failed call may have been done, or certainly was not but may be next time: worth
/// making again with the same message id. Refusals (a bad request, an application error other
/// than the storage recovering) are final.
fn outcome_unknown(error: &ClientError) -> bool {
    match error {
        ClientError::Rpc(e) => matches!(
            e,
            RpcError::ConnectionLost(_)
                | RpcError::DeadlineExceeded
                | RpcError::Connect { .. }
                | RpcError::ServerBusy(_)
                | RpcError::Unavailable(_)
        ),
        ClientError::Chat(ChatError::StorageUnavailable) => true,
        _ => false,
    }
}

/// One way of sending a direct message: the path that delivered, or why none did.
type DirectTry<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Reached, String>> + Send + 'a>>;

/// How long the advertised endpoint may still take to answer once no hole can be punched: a
/// peer on this network answers within it.
const LAN_GRACE: Duration = Duration::from_millis(300);

/// How many times in a row a file transfer resumes without progress before it fails.
pub const FILE_RESUMES: u32 = 5;

/// How long one call of a file transfer (a chunk of up to 1 MiB) may take.
const FILE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a file transfer stopped.
enum FileError {
    /// For good: refused, invalid, the recipient's disk full, the file unreadable here.
    Fatal(String),
    /// The connection broke: resume. `progressed` when some chunk got through first.
    Broken { error: String, progressed: bool },
}

/// Offers `offer` to `peer` and sends what it lacks from `file`, then finishes.
async fn send_file_over(
    peer: &chat_api::PeerClient,
    offer: &chat_api::FileOffer,
    file: &mut tokio::fs::File,
    progress: &(impl Fn(u64, u64) + Send),
) -> Result<(), FileError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut progressed = false;
    let classify = |e: RpcError<chat_api::PeerError>, progressed: bool| match e {
        RpcError::Application(e) => FileError::Fatal(format!("{}: {e}", offer.name)),
        other => FileError::Broken {
            error: other.to_string(),
            progressed,
        },
    };
    let mut offset = peer
        .offer_file(offer.clone())
        .await
        .map_err(|e| classify(e, false))?;
    progress(offset, offer.size);
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| FileError::Fatal(format!("cannot read {}: {e}", offer.name)))?;
    let mut buf = vec![0u8; chat_api::MAX_FILE_CHUNK];
    while offset < offer.size {
        let want = usize::try_from(offer.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        file.read_exact(&mut buf[..want]).await.map_err(|e| {
            FileError::Fatal(format!("cannot read {} (did it change?): {e}", offer.name))
        })?;
        peer.file_chunk(
            offer.id,
            offset,
            bytes::Bytes::copy_from_slice(&buf[..want]),
        )
        .await
        .map_err(|e| classify(e, progressed))?;
        progressed = true;
        offset += want as u64;
        progress(offset, offer.size);
    }
    peer.finish_file(offer.id)
        .await
        .map_err(|e| classify(e, progressed))
}

/// A direct path that answered: its endpoint, and how it was found.
#[derive(Debug, Clone)]
struct Reached {
    endpoint: String,
    how: String,
}

/// The UDP address a `quic://` peer endpoint names.
async fn peer_socket_addr(listen: &Endpoint) -> Result<SocketAddr, String> {
    let Endpoint::Quic { host, port } = listen else {
        return Err(format!(
            "the peer listens on quic:// only (direct messages are authenticated by device \
             keys over QUIC), not on {listen}"
        ));
    };
    let host = host.trim_matches(['[', ']']);
    tokio::net::lookup_host((host, *port))
        .await
        .map_err(|e| format!("cannot resolve {listen}: {e}"))?
        .next()
        .ok_or_else(|| format!("{listen} names no address"))
}

/// The events a [`ChatClient`] sends its application. The channel is unbounded so that the
/// client never waits for the application: read it steadily.
pub type ChatEvents = mpsc::UnboundedReceiver<ChatEvent>;

/// A connected chat client. Cheap to clone; every clone drives the same session. The client
/// stops when [`ChatClient::shutdown`] or [`ChatClient::close`] is called, or when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct ChatClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    task: AbortHandle,
    peer: Mutex<Option<ServerHandle>>,
    peer_endpoint: Endpoint,
    /// What NAT discovery found, once it ran.
    nat: tokio::sync::Mutex<Option<NatReport>>,
    /// How each peer was last reached (or not).
    paths: Mutex<std::collections::HashMap<Uuid, PeerPath>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
        let peer = self.peer.get_mut().map(Option::take).unwrap_or(None);
        if let (Some(server), Ok(runtime)) = (peer, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move { server.abort().await });
        }
    }
}

impl ChatClient {
    /// Serves the peer, connects to the server and registers. Fails when a setting is out of
    /// its range, the peer cannot listen, the server cannot be reached, or the server refuses
    /// the registration (a wrong secret, a name taken, an invalid name); once this succeeded,
    /// every later loss is recovered by itself.
    pub async fn connect(
        mut config: ChatClientConfig,
    ) -> Result<(ChatClient, ChatEvents), ClientError> {
        config.check().map_err(ClientError::Invalid)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let sink = Arc::new(Sink::new(config.id, config.dedup_capacity, events_tx));
        let listen_error = |reason: String| ClientError::Listen {
            endpoint: config.listen.to_string(),
            reason,
        };
        // The peer's QUIC socket: it takes direct messages and sends them, so that peers see
        // one address for this client. Without a device key of its own (none bound), the
        // client still serves and sends with a key made for this run, which the others, not
        // finding it bound, refuse: its messages go through the server.
        let identity = match &config.device_key {
            Some(identity) => identity.clone(),
            None => Identity::generate().map_err(|e| listen_error(e.to_string()))?,
        };
        let listen_addr = peer_socket_addr(&config.listen)
            .await
            .map_err(listen_error)?;
        let (quic, datagrams) = QuicEndpoint::bind_with_datagrams(
            listen_addr,
            QuicConfig::new(identity).require_client_key(true),
        )
        .map_err(|e| listen_error(e.to_string()))?;
        let local = quic.local_addr().map_err(|e| listen_error(e.to_string()))?;
        let dialer = quic.connector(local);
        let puncher = Puncher::start(datagrams, local);
        let incoming = Arc::new(files::Incoming::new(
            config.files_dir.clone(),
            config.max_file_bytes,
        ));
        let peer = Server::builder()
            .service(PeerServer::new(PeerService::new(
                sink.clone(),
                incoming.clone(),
            )))
            .acceptor(quic)
            .start()
            .await
            .map_err(|e| listen_error(e.to_string()))?;
        let peer_endpoint = peer
            .local_endpoint()
            .cloned()
            .unwrap_or_else(|| config.listen.clone());
        let advertised = Some(
            config
                .advertise
                .clone()
                .unwrap_or_else(|| peer_endpoint.to_string()),
        );
        let mut builder = Client::builder()
            .format(config.format.clone())
            .timeout(config.call_timeout)
            .connect_timeout(config.call_timeout)
            .heartbeat_interval(Duration::from_secs(5))
            .reconnect(config.reconnect);
        if let Some(tls) = &config.tls {
            builder = builder.tls(tls.clone());
        }
        let nodes: Vec<Endpoint> = std::iter::once(config.server.clone())
            .chain(config.fallback_servers.iter().cloned())
            .collect();
        let rpc = if let Some(registry) = &config.registry {
            let discovery =
                Discovery::new(registry.clone(), ServiceKey::of::<SignalClient<Client>>());
            discovery.wait_for(1, config.call_timeout).await;
            let listed = move || {
                let found: Vec<Endpoint> = discovery
                    .instances()
                    .iter()
                    .filter(|i| i.healthy)
                    .filter_map(|i| i.endpoint.parse().ok())
                    .collect();
                if found.is_empty() {
                    nodes.clone()
                } else {
                    found
                }
            };
            let mut failover = Failover::from_fn(listed, config.call_timeout);
            if let Some(tls) = &config.tls {
                failover = failover.tls(tls.clone());
            }
            builder.connect_with(failover).await
        } else if nodes.len() > 1 {
            let mut failover = Failover::new(nodes, config.call_timeout);
            if let Some(tls) = &config.tls {
                failover = failover.tls(tls.clone());
            }
            builder.connect_with(failover).await
        } else {
            builder.connect(&config.server).await
        };
        let rpc = match rpc {
            Ok(rpc) => rpc,
            Err(e) => {
                peer.abort().await;
                return Err(ClientError::Rpc(e));
            }
        };
        let signal = SignalClient::new(rpc);
        // Logging in by name tells the id, which every later registration uses.
        let login = if config.login {
            let request = LoginRequest {
                name: config.name.clone(),
                password: config.secret.clone(),
                endpoint: advertised.clone(),
            };
            match signal.login(request).await {
                Ok(session) => {
                    config.id = session.user.id;
                    config.name = session.user.name.clone();
                    sink.set_me(config.id);
                    Some(session)
                }
                Err(e) => {
                    peer.abort().await;
                    signal.caller().close();
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let (renew, renew_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            peers: PeerClients::new(config.format.clone(), config.direct_timeout, dialer),
            puncher,
            config,
            advertised,
            signal,
            sink,
            state: watch::Sender::new(ClientState::Connecting),
            session: watch::Sender::new(None),
            directory: Mutex::default(),
            rooms: Mutex::new(BTreeSet::new()),
            renew,
            nat: Mutex::new(None),
            files: incoming,
            downloads: Arc::default(),
        });
        shared.set_state(ClientState::Connecting);
        let session = match login {
            Some(session) => session,
            None => match shared.register().await {
                Ok(session) => session,
                Err(e) => {
                    peer.abort().await;
                    shared.signal.caller().close();
                    return Err(e);
                }
            },
        };
        let task = tokio::spawn(session::run(shared.clone(), session, renew_rx)).abort_handle();
        let client = ChatClient {
            inner: Arc::new(Inner {
                shared,
                task,
                peer: Mutex::new(Some(peer)),
                peer_endpoint,
                nat: tokio::sync::Mutex::new(None),
                paths: Mutex::new(std::collections::HashMap::new()),
            }),
        };
        // The streams open right after; waiting for them makes "connected" mean "online". If
        // they do not open in time the task keeps trying, and the state says so.
        let mut state = client.watch_state();
        let timeout = client.inner.shared.config.call_timeout;
        let _ = tokio::time::timeout(timeout, state.wait_for(ClientState::is_online)).await;
        // Device keys of other users come from the server, through a client held weakly.
        let weak = Arc::downgrade(&client.inner);
        client
            .inner
            .shared
            .sink
            .keys
            .set_lookup(Arc::new(move |user: Uuid| {
                let weak = weak.clone();
                Box::pin(async move {
                    let inner = weak
                        .upgrade()
                        .ok_or_else(|| "the client stopped".to_owned())?;
                    ChatClient { inner }
                        .device_key_of(&user.to_string())
                        .await
                        .map_err(|e| e.to_string())
                })
            }));
        // NAT discovery in the background, when the server has STUN: `nat` then answers at
        // once. It holds the client weakly, so as not to keep it alive.
        let weak = Arc::downgrade(&client.inner);
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            let client = ChatClient { inner };
            client.learn_public_address().await;
            if let Err(e) = client.nat().await {
                debug!("NAT discovery: {e}");
            }
        });
        Ok((client, events))
    }

    /// Where the server's STUN service is, if it has one.
    pub async fn rendezvous(&self) -> Result<Rendezvous, ClientError> {
        Ok(self.inner.shared.signal.rendezvous().await?)
    }

    /// This client's NAT: its public address and how its NAT maps and filters (RFC 5780),
    /// found with the server's STUN service (see [`nat`]) the first time and reported to the
    /// server (`report_nat`, and again after each new registration), so that other users see
    /// it with [`ChatClient::nat_of`]. Fails when the server has no STUN service.
    pub async fn nat(&self) -> Result<NatReport, ClientError> {
        let mut cached = self.inner.nat.lock().await;
        let report = match &*cached {
            Some(report) => report.clone(),
            None => {
                let rendezvous = self.rendezvous().await?;
                let stun = rendezvous.stun.first().ok_or_else(|| {
                    ClientError::Invalid("the server has no STUN service".to_owned())
                })?;
                let stun = resolve_stun(stun).await?;
                let bind = if stun.is_ipv4() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    SocketAddr::from(([0u16; 8], 0))
                };
                let report = nat::discover(bind, stun, NatTimeouts::default())
                    .await
                    .map_err(|e| ClientError::Invalid(format!("STUN at {stun}: {e}")))?;
                *cached = Some(report.clone());
                report
            }
        };
        drop(cached);
        let sent = report.clone();
        self.call(|s, token| {
            let report = sent.clone();
            async move { s.report_nat(token, report).await }
        })
        .await?;
        *self
            .inner
            .shared
            .nat
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        Ok(report)
    }

    /// Hole-punching datagrams (probes and spray packets) this client has sent since it
    /// started.
    pub fn punch_datagrams_sent(&self) -> u64 {
        self.inner.shared.puncher.sent()
    }

    /// What a user (by name or id) reported about their NAT; `None` if nothing.
    pub async fn nat_of(&self, user: &str) -> Result<Option<NatReport>, ClientError> {
        let user = user.trim().to_owned();
        self.call(|s, token| {
            let user = user.clone();
            async move { s.nat_of(token, user).await }
        })
        .await
    }

    /// The identity key (ed25519, 32 bytes) of the device an online user (by name or id) is
    /// signed in on, as its session bound it; `None` when it bound none.
    pub async fn device_key_of(&self, user: &str) -> Result<Option<[u8; 32]>, ClientError> {
        let user = user.trim().to_owned();
        let key = self
            .call(|s, token| {
                let user = user.clone();
                async move { s.device_key_of(token, user).await }
            })
            .await?;
        Ok(key.and_then(|key| <[u8; 32]>::try_from(key.as_slice()).ok()))
    }

    /// This user's id.
    pub fn id(&self) -> Uuid {
        self.inner.shared.config.id
    }

    /// This user's display name.
    pub fn name(&self) -> &str {
        &self.inner.shared.config.name
    }

    /// Where this client's peer service listens (the real port when asked for port 0).
    pub fn peer_endpoint(&self) -> &Endpoint {
        &self.inner.peer_endpoint
    }

    /// The endpoint registered for direct messages.
    pub fn advertised(&self) -> Option<&str> {
        self.inner.shared.advertised.as_deref()
    }

    /// The state now.
    pub fn state(&self) -> ClientState {
        self.inner.shared.state.borrow().clone()
    }

    /// A receiver that sees every change of state.
    pub fn watch_state(&self) -> watch::Receiver<ClientState> {
        self.inner.shared.state.subscribe()
    }

    /// The session in force, if online: the token, this user as the server recorded them
    /// (with the observed address), and the heartbeat and presence timings.
    pub fn session(&self) -> Option<Session> {
        self.inner.shared.session.borrow().clone()
    }

    /// Everyone online, asked of the server a page at a time, by name.
    pub async fn who(&self) -> Result<Vec<UserInfo>, ClientError> {
        let users = self
            .all_pages(|s, token, after| async move { s.online(token, after, 0).await })
            .await?;
        self.inner.shared.directory().replace_online(&users);
        Ok(users)
    }

    /// One page of who is online (see [`Page`]): the first with `after: None`, the next with
    /// the `next` of the one before; `limit` 0 asks for as many as the server gives.
    pub async fn who_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<UserInfo>, ClientError> {
        self.call(|s, token| {
            let after = after.clone();
            async move { s.online(token, after, limit).await }
        })
        .await
    }

    /// One user, by name (online users only) or by id (as text).
    pub async fn lookup(&self, user: &str) -> Result<UserInfo, ClientError> {
        let user = user.trim().to_owned();
        let info = self
            .call(|s, token| {
                let user = user.clone();
                async move { s.lookup(token, user).await }
            })
            .await?;
        self.inner.shared.directory().remember(&info);
        Ok(info)
    }

    /// Sends `text` to a user given by name or id: peer to peer if the user is online and
    /// reachable within the direct timeout, through the server otherwise (stored if the user
    /// is offline). A user who is offline can be named only if this client saw them before.
    ///
    /// When the connection to the server is lost before the relay is answered, the message is
    /// sent again with the same id once the client is back online (within
    /// [`ChatClientConfig::resend_within`]): the server recognises it, so it is delivered once
    /// and the send reports how it went rather than failing.
    pub async fn send(&self, to: &str, text: &str) -> Result<SendReport, ClientError> {
        check_text(text).map_err(ClientError::Invalid)?;
        let (user, online) = self.resolve(to).await?;
        let envelope = Envelope {
            id: Uuid::new_v4(),
            from: chat_api::Sender {
                id: self.id(),
                name: self.name().to_owned(),
            },
            to: chat_api::Destination::User(user.id),
            text: text.to_owned(),
            sent_at_ms: now_ms(),
            path: Path::Direct,
            file: None,
        };
        let mut direct_error = None;
        match &user.advertised {
            Some(endpoint) if online && user.id != self.id() => {
                let started = tokio::time::Instant::now();
                let sent_before = self.punch_datagrams_sent();
                let call = PeerCall::Deliver(envelope.clone());
                let reached = self.direct(user.id, endpoint, &call).await;
                let path = self.path_report(&user, reached.clone(), started, sent_before);
                self.remember_peer_path(path);
                match reached {
                    Ok(_) => {
                        return Ok(SendReport {
                            id: envelope.id,
                            to: user,
                            path: Path::Direct,
                            direct_error: None,
                        });
                    }
                    Err(e) => direct_error = Some(e),
                }
            }
            _ => {}
        }
        // The same id as the direct attempt: if that one did arrive after all, the recipient
        // shows the message once.
        let (id, to_id, sent_at) = (envelope.id, user.id, envelope.sent_at_ms);
        let text = envelope.text;
        let delivery = self
            .call_until_known(|s, token| {
                let text = text.clone();
                async move { s.relay(token, id, to_id, text, sent_at).await }
            })
            .await?;
        Ok(SendReport {
            id,
            to: user,
            path: match delivery {
                Delivery::Delivered => Path::Relayed,
                Delivery::Stored => Path::Stored,
            },
            direct_error,
        })
    }

    /// Opens a direct path to a user (by name or id) without sending anything, as a message to
    /// them would (the path that worked last, the endpoint they advertise, a hole punched
    /// through both NATs), and says which path messages to them take now, and why; a
    /// message sent next goes the same way.
    pub async fn connect_peer(&self, to: &str) -> Result<PeerPath, ClientError> {
        let (user, online) = self.resolve(to).await?;
        if user.id == self.id() {
            return Err(ClientError::Invalid("that is you".to_owned()));
        }
        if !online {
            return Err(ClientError::Invalid(format!(
                "{} is offline: messages to them are stored by the server",
                user.name
            )));
        }
        let started = tokio::time::Instant::now();
        let sent_before = self.punch_datagrams_sent();
        let reached = match &user.advertised {
            Some(endpoint) => {
                self.direct(user.id, endpoint, &PeerCall::Reach(user.id))
                    .await
            }
            None => Err(format!(
                "{} advertises no direct endpoint (a web or relay-only client)",
                user.name
            )),
        };
        let mut path = self.path_report(&user, reached, started, sent_before);
        if path.path == Path::Relayed
            && let Ok(Some(theirs)) = self.nat_of(&user.id.to_string()).await
        {
            let own = self
                .inner
                .shared
                .nat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(note) = punch::why_no_hole(own.as_ref(), Some(&theirs))
                && !path.why.contains(note)
            {
                path.why = format!("{note}; {}", path.why);
            }
        }
        self.remember_peer_path(path.clone());
        Ok(path)
    }

    /// Sends the file at `path` to a user (by name or id), calling `progress(sent, size)` as
    /// it goes: peer to peer over the direct path (QUIC, authenticated by device keys both
    /// ways) when there is one; else, and when the user is offline, through the server, which
    /// holds it for them (up to its size limit and the recipient's quota) until their client
    /// downloads it. A broken connection resumes where the recipient's (or the server's) copy
    /// ends, up to [`FILE_RESUMES`] times in a row without progress; the file is kept only if
    /// its SHA-256 matches. Fails with a clear error when the file cannot be read, or the
    /// recipient (or the server) refuses it (too large, no room, a full disk).
    pub async fn send_file(
        &self,
        to: &str,
        path: &std::path::Path,
        progress: impl Fn(u64, u64) + Send,
    ) -> Result<FileReport, ClientError> {
        let started = tokio::time::Instant::now();
        let unreadable = |e: &dyn std::fmt::Display| {
            ClientError::Invalid(format!("cannot read {}: {e}", path.display()))
        };
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| unreadable(&e))?;
        if !meta.is_file() {
            return Err(unreadable(&"not a file"));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| unreadable(&"the name is not UTF-8"))?
            .to_owned();
        chat_api::check_file_name(&name).map_err(ClientError::Invalid)?;
        let (user, online) = self.resolve(to).await?;
        if user.id == self.id() {
            return Err(ClientError::Invalid("that is you".to_owned()));
        }
        let owned = path.to_owned();
        let sha256 = tokio::task::spawn_blocking(move || files::sha256_of(&owned))
            .await
            .map_err(|e| unreadable(&e))?
            .map_err(|e| unreadable(&e))?;
        let offer = chat_api::FileOffer {
            id: Uuid::new_v4(),
            from: chat_api::Sender {
                id: self.id(),
                name: self.name().to_owned(),
            },
            name: name.clone(),
            size: meta.len(),
            sha256: files::hex(&sha256),
        };
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| unreadable(&e))?;
        if !online {
            let why = format!("{} is offline", user.name);
            return self
                .send_file_via_server(user, offer, file, why, started, progress)
                .await;
        }
        let mut resumed = 0u32;
        let mut fruitless = 0u32;
        let mut last_error = String::new();
        loop {
            if fruitless > FILE_RESUMES {
                return Err(ClientError::Invalid(format!(
                    "{name} was not sent: the direct path to {} kept failing ({last_error})",
                    user.name
                )));
            }
            if fruitless > 0 {
                tokio::time::sleep(Duration::from_millis(250) * fruitless).await;
            }
            let endpoint = match self.file_path_to(&user).await {
                Ok(endpoint) => endpoint,
                // At first: no direct path, so the server takes the file; after a break, the
                // peer may be coming back: try again.
                Err(e) if resumed == 0 => {
                    let why = match e {
                        ClientError::Invalid(why) => why,
                        other => other.to_string(),
                    };
                    return self
                        .send_file_via_server(user, offer, file, why, started, progress)
                        .await;
                }
                Err(e) => {
                    last_error = e.to_string();
                    fruitless += 1;
                    continue;
                }
            };
            let key = self
                .inner
                .shared
                .sink
                .keys
                .key_of(user.id)
                .await
                .map_err(ClientError::Invalid)?;
            let peer = self
                .inner
                .shared
                .peers
                .client_for(&endpoint, key)
                .await
                .map_err(ClientError::Invalid)?
                .with_timeout(FILE_CALL_TIMEOUT);
            match send_file_over(&peer, &offer, &mut file, &progress).await {
                Ok(()) => {
                    return Ok(FileReport {
                        id: offer.id,
                        to: user,
                        name,
                        size: offer.size,
                        path: Path::Direct,
                        endpoint: Some(endpoint),
                        why_not_direct: None,
                        took: started.elapsed(),
                        resumed,
                    });
                }
                Err(FileError::Fatal(message)) => return Err(ClientError::Invalid(message)),
                Err(FileError::Broken { error, progressed }) => {
                    debug!(%endpoint, "file transfer broken: {error}");
                    self.inner.shared.peers.drop_client(&endpoint, key);
                    self.inner.shared.peers.forget_path(user.id);
                    last_error = error;
                    resumed += 1;
                    fruitless = if progressed { 1 } else { fruitless + 1 };
                }
            }
        }
    }

    /// The direct path to `user` for a file: the one that worked last, or a new one.
    async fn file_path_to(&self, user: &UserInfo) -> Result<String, ClientError> {
        if let Some(path) = self.inner.shared.peers.path_of(user.id) {
            return Ok(path);
        }
        let path = self.connect_peer(&user.id.to_string()).await?;
        match (path.path, path.endpoint) {
            (Path::Direct, Some(endpoint)) => Ok(endpoint),
            _ => Err(ClientError::Invalid(format!(
                "{} cannot be reached directly: {}",
                user.name, path.why
            ))),
        }
    }

    /// Sends a file through the server (`why`: why not directly), resuming where the server's
    /// copy ends after a broken connection.
    async fn send_file_via_server(
        &self,
        user: UserInfo,
        offer: chat_api::FileOffer,
        mut file: tokio::fs::File,
        why: String,
        started: tokio::time::Instant,
        progress: impl Fn(u64, u64) + Send,
    ) -> Result<FileReport, ClientError> {
        let attachment = chat_api::Attachment {
            name: offer.name.clone(),
            size: offer.size,
            sha256: offer.sha256.clone(),
        };
        let mut resumed = 0u32;
        let mut fruitless = 0u32;
        loop {
            match self
                .upload_over(user.id, offer.id, &attachment, &mut file, &progress)
                .await
            {
                Ok(delivery) => {
                    return Ok(FileReport {
                        id: offer.id,
                        to: user,
                        name: offer.name,
                        size: offer.size,
                        path: match delivery {
                            Delivery::Delivered => Path::Relayed,
                            Delivery::Stored => Path::Stored,
                        },
                        endpoint: None,
                        why_not_direct: Some(why),
                        took: started.elapsed(),
                        resumed,
                    });
                }
                Err(FileError::Fatal(message)) => {
                    return Err(ClientError::Invalid(format!(
                        "{message} (not directly either: {why})"
                    )));
                }
                Err(FileError::Broken { error, progressed }) => {
                    debug!("upload broken: {error}");
                    resumed += 1;
                    fruitless = if progressed { 1 } else { fruitless + 1 };
                    if fruitless > FILE_RESUMES {
                        return Err(ClientError::Invalid(format!(
                            "{} was not sent: the server kept failing ({error})",
                            offer.name
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(250) * fruitless).await;
                }
            }
        }
    }

    /// One attempt at an upload: from where the server's copy ends to the end, then finish.
    async fn upload_over(
        &self,
        to: Uuid,
        id: Uuid,
        attachment: &chat_api::Attachment,
        file: &mut tokio::fs::File,
        progress: &(impl Fn(u64, u64) + Send),
    ) -> Result<Delivery, FileError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let name = &attachment.name;
        let classify = |e: ClientError, progressed: bool| {
            if outcome_unknown(&e) {
                FileError::Broken {
                    error: e.to_string(),
                    progressed,
                }
            } else {
                FileError::Fatal(format!("{name}: {e}"))
            }
        };
        let mut offset = self
            .call(|s, token| {
                let attachment = attachment.clone();
                async move { s.upload_file(token, id, to, attachment).await }
            })
            .await
            .map_err(|e| classify(e, false))?;
        progress(offset, attachment.size);
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| FileError::Fatal(format!("cannot read {name}: {e}")))?;
        let mut progressed = false;
        let mut buf = vec![0u8; chat_api::MAX_FILE_CHUNK];
        while offset < attachment.size {
            let want = usize::try_from(attachment.size - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            file.read_exact(&mut buf[..want]).await.map_err(|e| {
                FileError::Fatal(format!("cannot read {name} (did it change?): {e}"))
            })?;
            let data = bytes::Bytes::copy_from_slice(&buf[..want]);
            self.call(|s, token| {
                let data = data.clone();
                async move { s.upload_chunk(token, id, offset, data).await }
            })
            .await
            .map_err(|e| classify(e, progressed))?;
            progressed = true;
            offset += want as u64;
            progress(offset, attachment.size);
        }
        let sent_at = now_ms();
        self.call(|s, token| async move { s.finish_upload(token, id, sent_at).await })
            .await
            .map_err(|e| classify(e, progressed))
    }

    /// How each peer this client tried to reach directly was last reached (or not), by name.
    pub fn peer_paths(&self) -> Vec<PeerPath> {
        let mut paths: Vec<PeerPath> = self
            .inner
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        paths.sort_by(|a, b| a.to.name.cmp(&b.to.name));
        paths
    }

    fn remember_peer_path(&self, path: PeerPath) {
        let mut paths = self.inner.paths.lock().unwrap_or_else(|e| e.into_inner());
        if paths.len() >= 1024 {
            paths.clear();
        }
        paths.insert(path.to.id, path);
    }

    fn path_report(
        &self,
        user: &UserInfo,
        reached: Result<Reached, String>,
        started: tokio::time::Instant,
        sent_before: u64,
    ) -> PeerPath {
        let (path, endpoint, why) = match reached {
            Ok(Reached { endpoint, how }) => (Path::Direct, Some(endpoint), how),
            Err(e) => (Path::Relayed, None, e),
        };
        PeerPath {
            to: user.clone(),
            path,
            endpoint,
            why,
            took: started.elapsed(),
            datagrams: self.punch_datagrams_sent().saturating_sub(sent_before),
        }
    }

    /// Makes `call` on `user` peer to peer: on the path that worked last, else on the endpoint
    /// the user advertises and, when this client knows its public address, through a hole
    /// punched at the same time; the first that answers wins, and is used next time.
    async fn direct(
        &self,
        user: Uuid,
        advertised: &str,
        call: &PeerCall,
    ) -> Result<Reached, String> {
        let shared = &self.inner.shared;
        let key = shared.sink.keys.key_of(user).await?;
        if let Some(path) = shared.peers.path_of(user) {
            if shared.peers.call(&path, key, call.clone()).await.is_ok() {
                return Ok(Reached {
                    endpoint: path,
                    how: "the path that worked last".to_owned(),
                });
            }
            shared.peers.forget_path(user);
        }
        let plain: DirectTry<'_> = Box::pin(async move {
            shared
                .peers
                .call(advertised, key, call.clone())
                .await
                .map(|()| Reached {
                    endpoint: advertised.to_owned(),
                    how: "the endpoint it advertises".to_owned(),
                })
        });
        let hopeless = std::sync::atomic::AtomicBool::new(false);
        let result = if shared.puncher.has_reflexive() {
            let mut plain = plain;
            let mut punched: DirectTry<'_> = Box::pin(self.punched(user, key, call, &hopeless));
            tokio::select! {
                reached = &mut plain => match reached {
                    Ok(reached) => Ok(reached),
                    Err(e) => punched.await.map_err(|p| format!("{p}; {e}")),
                },
                reached = &mut punched => match reached {
                    Ok(reached) => Ok(reached),
                    // No hole can be punched: the advertised endpoint still may answer, if the
                    // peer is on this network, which is quick.
                    Err(p) if hopeless.load(std::sync::atomic::Ordering::Relaxed) => {
                        match tokio::time::timeout(LAN_GRACE, plain).await {
                            Ok(Ok(reached)) => Ok(reached),
                            Ok(Err(e)) => Err(format!("{p}; {e}")),
                            Err(_) => Err(format!("{p}; the endpoint it advertises did not answer")),
                        }
                    }
                    Err(p) => plain.await.map_err(|e| format!("{p}; {e}")),
                },
            }
        } else {
            plain.await
        };
        match result {
            Ok(reached) => {
                shared.peers.remember_path(user, reached.endpoint.clone());
                Ok(reached)
            }
            Err(e) => {
                // The user may be on another device now: ask the server next time.
                shared.sink.keys.forget(user);
                Err(e)
            }
        }
    }

    /// Punches a hole to `user`: asks them, through the server, to probe this client's
    /// candidates and answer with theirs, then delivers to the first of theirs that takes it.
    /// The path that delivered.
    async fn punched(
        &self,
        user: Uuid,
        key: [u8; 32],
        call: &PeerCall,
        hopeless: &std::sync::atomic::AtomicBool,
    ) -> Result<Reached, String> {
        let shared = &self.inner.shared;
        let attempt = Uuid::new_v4();
        let punch::Attempt {
            answer,
            mut sources,
        } = shared.puncher.expect_answer(attempt);
        let candidates = shared.puncher.candidates();
        let asked = self
            .call(|s, token| {
                let candidates = candidates.clone();
                async move { s.punch(token, user, attempt, candidates, false).await }
            })
            .await;
        if let Err(e) = asked {
            shared.puncher.forget(attempt);
            return Err(format!("no hole punched: {e}"));
        }
        let timeout = shared.config.direct_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let punch::Answer {
            candidates: theirs,
            nat: their_nat,
        } = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) if !answer.candidates.is_empty() => answer,
            _ => {
                shared.puncher.forget(attempt);
                return Err(format!("no hole punched: no answer within {timeout:?}"));
            }
        };
        // Against a symmetric NAT that filters by address and port, the birthday paradox:
        // this side sprays, or probes random ports (see `punch`).
        let own_nat = shared.nat.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(why) = punch::why_no_hole(own_nat.as_ref(), their_nat.as_ref()) {
            shared.puncher.forget(attempt);
            hopeless.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(why.to_owned());
        }
        let tactic = punch::tactic(own_nat.as_ref(), their_nat.as_ref());
        let random_ports = match tactic {
            punch::Tactic::Spray => {
                shared.puncher.spray(attempt, theirs.clone());
                Vec::new()
            }
            punch::Tactic::RandomPorts => punch::public_ips(&theirs),
            punch::Tactic::Plain => Vec::new(),
        };
        let probing = shared.puncher.probe_random_ports(attempt, &random_ports);
        tokio::pin!(probing);
        let mut probing_done = random_ports.is_empty();
        // Their candidates, and wherever their probes come from (the port their NAT really
        // uses toward this client, which a symmetric NAT does not show the STUN server), each
        // tried once, all at once; this side's NAT opens as QUIC's first packets leave.
        let mut tried = std::collections::HashSet::new();
        let mut tries = futures::stream::FuturesUnordered::new();
        let try_path = |addr: SocketAddr| {
            let path = format!("quic://{addr}");
            async move {
                shared
                    .peers
                    .call(&path, key, call.clone())
                    .await
                    .map(|()| path)
            }
        };
        for addr in theirs {
            if tried.insert(addr) {
                tries.push(try_path(addr));
            }
        }
        let mut last = "no candidate answered".to_owned();
        let mut listening = true;
        let outcome = loop {
            tokio::select! {
                Some(result) = futures::StreamExt::next(&mut tries) => match result {
                    Ok(path) => break Ok(path),
                    Err(e) => last = e,
                },
                source = sources.recv(), if listening => match source {
                    Some(addr) => {
                        if tried.insert(addr) {
                            tries.push(try_path(addr));
                        }
                    }
                    None => listening = false,
                },
                () = &mut probing, if !probing_done => probing_done = true,
                () = tokio::time::sleep_until(deadline), if listening => listening = false,
                else => break Err(last),
            }
        };
        shared.puncher.forget(attempt);
        let how = match tactic {
            punch::Tactic::Plain => "a hole punched through both NATs".to_owned(),
            punch::Tactic::Spray => format!(
                "a hole punched by the birthday paradox (sprayed from {} ports; the peer \
                 probed random ones)",
                punch::SPRAY_SOCKETS
            ),
            punch::Tactic::RandomPorts => format!(
                "a hole punched by the birthday paradox (up to {} random ports probed; the \
                 peer sprayed)",
                punch::RANDOM_PROBES
            ),
        };
        outcome
            .map(|endpoint| Reached { endpoint, how })
            .map_err(|e| format!("hole punched, no answer through it: {e}"))
    }

    /// Learns the public address of the peer socket from the server's STUN service, when it
    /// has one, for hole punching.
    async fn learn_public_address(&self) {
        let Ok(rendezvous) = self.rendezvous().await else {
            return;
        };
        let Some(stun) = rendezvous.stun.first() else {
            return;
        };
        match resolve_stun(stun).await {
            Ok(stun) => {
                let learned = self.inner.shared.puncher.learn_reflexive(stun).await;
                debug!(?learned, "public address of the peer socket");
            }
            Err(e) => debug!("STUN at {stun}: {e}"),
        }
    }

    /// Joins a room: an open one (made if it does not exist) or an invite-only one this user
    /// was invited to. The server keeps the membership, across sessions, until
    /// [`ChatClient::leave_room`].
    pub async fn join(&self, room: &str) -> Result<RoomInfo, ClientError> {
        let room = room.trim().to_owned();
        let info = self
            .call(|s, token| {
                let room = room.clone();
                async move { s.join(token, room).await }
            })
            .await?;
        self.inner.shared.rooms().insert(info.name.clone());
        Ok(info)
    }

    /// Makes a room owned by this user, open to anyone or invite-only (a group), and joins it.
    pub async fn create_room(&self, room: &str, access: Access) -> Result<RoomInfo, ClientError> {
        let room = room.trim().to_owned();
        let info = self
            .call(|s, token| {
                let room = room.clone();
                async move { s.create_room(token, room, access).await }
            })
            .await?;
        self.inner.shared.rooms().insert(info.name.clone());
        Ok(info)
    }

    /// Leaves a room for good.
    pub async fn leave_room(&self, room: &str) -> Result<(), ClientError> {
        let room = room.trim().to_owned();
        self.call(|s, token| {
            let room = room.clone();
            async move { s.leave_room(token, room).await }
        })
        .await?;
        self.inner.shared.rooms().remove(&room);
        Ok(())
    }

    /// Invites a user (by name or id) to a room this user is a member of; they may then join.
    pub async fn invite(&self, room: &str, user: &str) -> Result<UserInfo, ClientError> {
        let (user, _) = self.resolve(user).await?;
        let (room, id) = (room.trim().to_owned(), user.id);
        self.call(|s, token| {
            let room = room.clone();
            async move { s.invite(token, room, id).await }
        })
        .await?;
        Ok(user)
    }

    /// Adds a user (by name or id) to a room this user owns, at once.
    pub async fn add_member(&self, room: &str, user: &str) -> Result<UserInfo, ClientError> {
        let (user, _) = self.resolve(user).await?;
        let (room, id) = (room.trim().to_owned(), user.id);
        self.call(|s, token| {
            let room = room.clone();
            async move { s.add_member(token, room, id).await }
        })
        .await?;
        Ok(user)
    }

    /// Removes a member (by name or id) from a room this user owns.
    pub async fn remove_member(&self, room: &str, user: &str) -> Result<UserInfo, ClientError> {
        let (user, _) = self.resolve(user).await?;
        let (room, id) = (room.trim().to_owned(), user.id);
        self.call(|s, token| {
            let room = room.clone();
            async move { s.remove_member(token, room, id).await }
        })
        .await?;
        Ok(user)
    }

    /// The rooms this user owns, is a member of, or is invited to, asked of the server a page
    /// at a time, by name.
    pub async fn my_rooms(&self) -> Result<Vec<RoomInfo>, ClientError> {
        let rooms = self
            .all_pages(|s, token, after| async move { s.my_rooms(token, after, 0).await })
            .await?;
        *self.inner.shared.rooms() = rooms
            .iter()
            .filter(|r| matches!(r.membership, Membership::Owner | Membership::Member))
            .map(|r| r.name.clone())
            .collect();
        Ok(rooms)
    }

    /// Asks a user (by name or id) to be friends; if they had asked already, the two are
    /// friends at once (the answer says which).
    pub async fn request_friend(&self, user: &str) -> Result<(UserInfo, FriendState), ClientError> {
        let (user, _) = self.resolve(user).await?;
        let id = user.id;
        let state = self
            .call(|s, token| async move { s.request_friend(token, id).await })
            .await?;
        Ok((user, state))
    }

    /// Calls a user (by name or id) who is online; the answer is the call's id. What happens
    /// next arrives as [`ChatEvent::Call`] events: ringing, accepted, SDP and ICE from the
    /// other side, ended (missed after [`CALL_ANSWER_SECS`](chat_api::CALL_ANSWER_SECS)).
    pub async fn call_user(
        &self,
        user: &str,
        media: Vec<CallMedia>,
    ) -> Result<(UserInfo, Uuid), ClientError> {
        let (user, _) = self.resolve(user).await?;
        let id = user.id;
        let call = self
            .call(|s, token| {
                let media = media.clone();
                async move { s.call(token, id, media).await }
            })
            .await?;
        Ok((user, call))
    }

    /// Tells the caller that this device rings for `call`.
    pub async fn ringing(&self, call: Uuid) -> Result<(), ClientError> {
        self.call(|s, token| async move { s.ringing(token, call).await })
            .await
    }

    /// Accepts `call` (this user is its callee).
    pub async fn accept_call(&self, call: Uuid) -> Result<(), ClientError> {
        self.call(|s, token| async move { s.accept_call(token, call).await })
            .await
    }

    /// Declines `call`, as busy or not.
    pub async fn reject_call(&self, call: Uuid, busy: bool) -> Result<(), ClientError> {
        self.call(|s, token| async move { s.reject_call(token, call, busy).await })
            .await
    }

    /// Ends `call`: cancels it, declines it, or hangs up, as it stands.
    pub async fn hang_up(&self, call: Uuid) -> Result<(), ClientError> {
        self.call(|s, token| async move { s.hang_up(token, call).await })
            .await
    }

    /// Sends an SDP offer or answer to the other side of `call`.
    pub async fn send_sdp(&self, call: Uuid, kind: SdpKind, sdp: &str) -> Result<(), ClientError> {
        self.call(|s, token| {
            let sdp = sdp.to_owned();
            async move { s.send_sdp(token, call, kind, sdp).await }
        })
        .await
    }

    /// Sends an ICE candidate to the other side of `call`.
    pub async fn send_ice(&self, call: Uuid, candidate: IceCandidate) -> Result<(), ClientError> {
        self.call(|s, token| {
            let candidate = candidate.clone();
            async move { s.send_ice(token, call, candidate).await }
        })
        .await
    }

    /// Accepts a user's friend request (the user by name or id).
    pub async fn accept_friend(&self, user: &str) -> Result<UserInfo, ClientError> {
        let user = self.resolve_friend(user).await?;
        let id = user.id;
        self.call(|s, token| async move { s.accept_friend(token, id).await })
            .await?;
        Ok(user)
    }

    /// Ends a friendship, withdraws this user's request, or declines the other's (the user by
    /// name or id).
    pub async fn unfriend(&self, user: &str) -> Result<UserInfo, ClientError> {
        let user = self.resolve_friend(user).await?;
        let id = user.id;
        self.call(|s, token| async move { s.unfriend(token, id).await })
            .await?;
        Ok(user)
    }

    /// This user's friends and friend requests, each with whether the other is online, asked
    /// of the server a page at a time, by name.
    pub async fn friends(&self) -> Result<Vec<Friend>, ClientError> {
        self.all_pages(|s, token, after| async move { s.friends(token, after, 0).await })
            .await
    }

    /// A user named in a friend command: among this user's friends and requests first (they
    /// may be offline, and then not found by name), else as [`ChatClient::send`] finds them.
    async fn resolve_friend(&self, who: &str) -> Result<UserInfo, ClientError> {
        let who = who.trim();
        let id = Uuid::parse_str(who).ok();
        if let Ok(friends) = self.friends().await
            && let Some(friend) = friends
                .into_iter()
                .find(|f| Some(f.user.id) == id || f.user.name == who)
        {
            return Ok(UserInfo {
                id: friend.user.id,
                name: friend.user.name,
                advertised: None,
                observed: String::new(),
            });
        }
        Ok(self.resolve(who).await?.0)
    }

    /// Posts in a room this user is a member of; returns the message id. Like
    /// [`ChatClient::send`], a post whose answer was lost with the connection is sent again with
    /// the same id.
    pub async fn post(&self, room: &str, text: &str) -> Result<Uuid, ClientError> {
        check_text(text).map_err(ClientError::Invalid)?;
        let (room, text, id, sent_at) = (
            room.trim().to_owned(),
            text.to_owned(),
            Uuid::new_v4(),
            now_ms(),
        );
        self.call_until_known(|s, token| {
            let (room, text) = (room.clone(), text.clone());
            async move { s.post(token, room, id, text, sent_at).await }
        })
        .await?;
        Ok(id)
    }

    /// Every room, with how many members it has, asked of the server a page at a time, by
    /// name.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, ClientError> {
        self.all_pages(|s, token, after| async move { s.rooms(token, after, 0).await })
            .await
    }

    /// One page of the rooms (see [`ChatClient::who_page`]).
    pub async fn rooms_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<RoomInfo>, ClientError> {
        self.call(|s, token| {
            let after = after.clone();
            async move { s.rooms(token, after, limit).await }
        })
        .await
    }

    /// A room's members, asked of the server a page at a time, by name.
    pub async fn members(&self, room: &str) -> Result<Vec<Sender>, ClientError> {
        let room = room.trim().to_owned();
        self.all_pages(|s, token, after| {
            let room = room.clone();
            async move { s.members(token, room, after, 0).await }
        })
        .await
    }

    /// One page of a room's members (see [`ChatClient::who_page`]).
    pub async fn members_page(
        &self,
        room: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Sender>, ClientError> {
        let room = room.trim().to_owned();
        self.call(|s, token| {
            let (room, after) = (room.clone(), after.clone());
            async move { s.members(token, room, after, limit).await }
        })
        .await
    }

    /// The rooms this user belongs to, as last read from the server (at every registration and
    /// by [`ChatClient::my_rooms`]) or changed by this client.
    pub fn joined_rooms(&self) -> Vec<String> {
        self.inner.shared.rooms().iter().cloned().collect()
    }

    /// A room's last posts, oldest first, asked of the server a page at a time.
    pub async fn history(&self, room: &str) -> Result<Vec<Envelope>, ClientError> {
        let room = room.trim().to_owned();
        self.all_pages(|s, token, after| {
            let room = room.clone();
            async move { s.history(token, room, after, 0).await }
        })
        .await
    }

    /// One page of a room's last posts (see [`ChatClient::who_page`]).
    pub async fn history_page(
        &self,
        room: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Envelope>, ClientError> {
        let room = room.trim().to_owned();
        self.call(|s, token| {
            let (room, after) = (room.clone(), after.clone());
            async move { s.history(token, room, after, limit).await }
        })
        .await
    }

    /// Stops serving direct messages, while still advertising the endpoint: others' direct
    /// sends then fail and go through the relay (what a peer behind a firewall looks like).
    pub async fn stop_peer(&self) {
        let server = self.inner.peer.lock().ok().and_then(|mut p| p.take());
        if let Some(server) = server {
            server.shutdown(Duration::from_millis(200)).await;
        }
    }

    /// Leaves the server (the user goes offline at once; their rooms keep them), then stops.
    pub async fn shutdown(&self) {
        self.inner.task.abort();
        let session = self.inner.shared.session.send_replace(None);
        if let Some(session) = session {
            let signal = self
                .inner
                .shared
                .signal
                .with_timeout(Duration::from_secs(1));
            let _ = signal.leave(session.token).await;
        }
        self.close().await;
    }

    /// Stops without telling the server, as a crash would: the user stays online for others
    /// until the presence lease expires.
    pub async fn close(&self) {
        self.inner.task.abort();
        self.inner.shared.session.send_replace(None);
        self.stop_peer().await;
        self.inner.shared.peers.clear();
        self.inner.shared.signal.caller().close();
        if !matches!(self.state(), ClientState::Closed) {
            self.inner.shared.set_state(ClientState::Closed);
        }
    }

    /// Resolves a user given by name or id; the flag says whether they are online.
    async fn resolve(&self, who: &str) -> Result<(UserInfo, bool), ClientError> {
        let who = who.trim();
        let id = Uuid::parse_str(who).ok();
        if let Some(user) = self.inner.shared.directory().online(id, who) {
            return Ok((user.clone(), true));
        }
        match self.lookup(who).await {
            // Names resolve to online users only.
            Ok(user) if id.is_none() => Ok((user, true)),
            // The server gives no address for a user who is offline: it observed none.
            Ok(user) => {
                let online = !user.observed.is_empty();
                Ok((user, online))
            }
            Err(ClientError::Chat(ChatError::UnknownUser(_))) if id.is_none() => {
                let known = self.inner.shared.directory().known_by_name(who).cloned();
                match known {
                    Some(user) => {
                        // The server has the newest details (an offline user is found by id).
                        let user = self.lookup(&user.id.to_string()).await.unwrap_or(user);
                        Ok((user, false))
                    }
                    None => Err(ClientError::Chat(ChatError::UnknownUser(
                        excerpt(who).into_owned(),
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Makes a call with the current session's token; if the server no longer knows the
    /// session, waits for the client to register again and makes it once more.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(SignalClient, String) -> Fut,
        Fut: Future<Output = Result<T, RpcError<ChatError>>>,
    {
        let shared = &self.inner.shared;
        let token = self.token_other_than(None).await?;
        match call(shared.signal.clone(), token.clone()).await {
            Err(RpcError::Application(ChatError::NoSession)) => {
                let _ = shared.renew.send(token.clone());
                let token = self.token_other_than(Some(&token)).await?;
                Ok(call(shared.signal.clone(), token).await?)
            }
            result => Ok(result?),
        }
    }

    /// Makes a call that carries a message id (`relay`, `post`) and, when it fails without
    /// saying whether it was done (the connection was lost after the request left, no answer
    /// came in time, the server's storage was recovering), makes it again with the same id,
    /// once the client is back online, for up to [`ChatClientConfig::resend_within`]. The
    /// server recognises the id, so the message is delivered once and reported as sent.
    async fn call_until_known<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(SignalClient, String) -> Fut,
        Fut: Future<Output = Result<T, RpcError<ChatError>>>,
    {
        let (mut pause, longest) = RESEND_BACKOFF;
        let within = self.inner.shared.config.resend_within;
        let until = tokio::time::Instant::now().checked_add(within);
        loop {
            let error = match self.call(&call).await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let next = tokio::time::Instant::now().checked_add(pause);
            let in_time = matches!((next, until), (Some(next), Some(until)) if next <= until);
            if !outcome_unknown(&error) || !in_time {
                return Err(error);
            }
            debug!("sending again with the same id in {pause:?}: {error}");
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2).min(longest);
        }
    }

    /// Every item of a list, asking for one page after the other.
    async fn all_pages<T, F, Fut>(&self, page: F) -> Result<Vec<T>, ClientError>
    where
        F: Fn(SignalClient, String, Option<String>) -> Fut,
        Fut: Future<Output = Result<Page<T>, RpcError<ChatError>>>,
    {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let next = self.call(|s, token| page(s, token, after.clone())).await?;
            items.extend(next.items);
            match next.next {
                None => return Ok(items),
                // A list that does not move on, or goes on and on, is not one to follow.
                Some(cursor) if after.as_ref() == Some(&cursor) || items.len() > MAX_LISTED => {
                    return Err(ClientError::Rpc(RpcError::Protocol(format!(
                        "the server's list does not end (cursor {:?} after {} items)",
                        excerpt(&cursor),
                        items.len()
                    ))));
                }
                Some(cursor) => after = Some(cursor),
            }
        }
    }

    /// The current session's token, waiting up to the call timeout for one (other than
    /// `stale`) while the client registers.
    async fn token_other_than(&self, stale: Option<&str>) -> Result<String, ClientError> {
        let shared = &self.inner.shared;
        let mut sessions = shared.session.subscribe();
        let mut states = shared.state.subscribe();
        let wait = async {
            loop {
                if states.borrow_and_update().is_final() {
                    return Err(ClientError::Closed);
                }
                let current = sessions
                    .borrow_and_update()
                    .as_ref()
                    .map(|s| s.token.clone());
                if let Some(token) = current.filter(|t| Some(t.as_str()) != stale) {
                    return Ok(token);
                }
                tokio::select! {
                    r = sessions.changed() => r.map_err(|_| ClientError::Closed)?,
                    r = states.changed() => r.map_err(|_| ClientError::Closed)?,
                }
            }
        };
        match tokio::time::timeout(shared.config.call_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Offline(match self.state() {
                ClientState::Reconnecting { reason, .. } => reason,
                other => other.name().to_owned(),
            })),
        }
    }
}
