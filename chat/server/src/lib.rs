//! The chat signaling server: registration and presence, lookups, relay with store-and-forward,
//! and rooms, served as `chat.Signal` (see [`Signal`](chat_api::Signal)).
//!
//! - **Presence** lives in a registry ([`rpc_registry::Registry`], embedded by default): each
//!   session is an instance of `chat.presence` under its own lease, kept alive by the client's
//!   `heartbeat`. When a client stops, its lease expires, the server's watch on the key sees the
//!   instance go, the session ends, rooms are told and every `presence` stream sees `Left`.
//! - **Accounts**: the first registration of a user id makes its account: the secret given is
//!   its password (an argon2id hash in the store) and the name is reserved to it for good,
//!   compared by a key that folds case, width and look-alike characters
//!   (see `validate::name_key`); later registrations must present the password, and may
//!   rename to a free name. `login` opens a session by name and password. Registering again
//!   replaces the previous session.
//! - **Friends**: requests, acceptance and the list live in the store; each change is pushed
//!   to the other user wherever they are online.
//! - **Relay and store-and-forward**: every relayed message is committed to the
//!   [`Store`] (by default [`RedbStore`], one redb file) before
//!   it is pushed and before `relay` returns, and deleted only when the recipient acknowledges it. A new inbox replays
//!   what is stored, in order, then live messages. Message ids make relaying idempotent.
//! - **Rooms**: members get posts and join/leave events in their inbox (not stored, no ack);
//!   joins are told to every member including the one who joined, leaves to those who stay.
//!   The last posts of each room are stored.
//!
//! The [`store`] and the sizes of a [`page`] are public for the programs and tests that look
//! into them. [`init_logging`] and [`shutdown_signal`] are what the `chat-server` program, and
//! the example programs beside it, log with and wait on before they stop gracefully.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use chat_server::{ChatServer, ChatServerConfig};
//!
//! let mut config = ChatServerConfig::new("chat-data");
//! config.listen = vec!["tcp://127.0.0.1:0".parse()?];
//! let server = ChatServer::start(config).await?;
//! println!("serving on {:?}", server.endpoints());
//! server.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod by_name;
mod calls;
mod config;
mod files;
mod friends;
mod inbox;
mod message_counts;
mod metrics;
mod nodes;
pub mod page;
mod password;
mod presence;
mod rooms;
mod service;
mod shutdown;
mod state;
pub mod store;
mod stun;
mod validate;
mod web;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_api::{NodeServer, SignalServer};
use rpc_core::{Endpoint, Server, ServerHandle};
use rpc_registry::MemoryRegistry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::config::{ChatServerConfig, ConfigError, PasswordHashing};
use self::service::ChatService;
pub use self::shutdown::{StopSignal, shutdown_signal};
use self::state::{Settings, Shared};
use self::store::{RedbStore, Store};
use self::stun::StunServer;
pub use self::stun::{PER_SOURCE_BURST, PER_SOURCE_RATE, StunConfig, TOTAL_RATE};

/// The name of the database file in [`ChatServerConfig::data_dir`].
pub const DATABASE_FILE: &str = "chat.redb";

/// How long acknowledged message ids and room post ids are remembered, so that relaying or
/// posting one again does not deliver it again.
const REMEMBER_IDS: Duration = Duration::from_secs(24 * 3600);

/// A running chat server.
pub struct ChatServer {
    handle: ServerHandle,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    stun: Option<StunServer>,
    stun_advertised: Option<String>,
    web: Option<SocketAddr>,
}

impl ChatServer {
    /// Opens the database (or takes [`ChatServerConfig::store`]), starts watching presence and listens on every endpoint. Fails with a
    /// [`ConfigError`] if a setting is out of its range, before anything is opened.
    pub async fn start(config: ChatServerConfig) -> anyhow::Result<ChatServer> {
        config.check()?;
        let (store, database) = match &config.store {
            Some(store) => (store.clone(), format!("{store:?}")),
            None => {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("creating {}", config.data_dir.display()))?;
                let path = config.data_dir.join(DATABASE_FILE);
                let store = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || RedbStore::open(&path))
                }
                .await?
                .with_context(|| format!("opening {}", path.display()))?;
                (
                    Arc::new(store) as Arc<dyn Store>,
                    path.display().to_string(),
                )
            }
        };
        let node_secret = match store.node_secret().await {
            Ok(secret) => secret,
            Err(e) => {
                store.close().await;
                return Err(e).context("reading the node secret");
            }
        };
        let registry = config
            .registry
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryRegistry::new()));
        let settings = Settings {
            presence_ttl: config.presence_ttl,
            heartbeat: config.heartbeat,
            room_history: config.room_history,
            max_pending: config.max_pending,
            max_rooms_created: config.max_rooms_created,
            max_rooms_joined: config.max_rooms_joined,
            max_room_members: config.max_room_members,
            max_page_items: config.max_page_items,
            max_page_bytes: config.max_page_bytes,
            max_friends: config.max_friends,
            call_answer: config.call_answer,
            max_held_file: config.max_held_file,
            held_files_quota: config.held_files_quota,
            password_hashing: config.password_hashing,
        };
        let shared = Arc::new(Shared::new(
            settings,
            store,
            registry.clone(),
            node_secret,
            config.client_tls.clone(),
        ));
        let stop = CancellationToken::new();
        // Watching before serving: no session can expire unseen.
        let first_watch = match tokio::time::timeout(
            Duration::from_secs(5),
            registry.watch(&presence::key(), None),
        )
        .await
        {
            Ok(Ok(watch)) => Some(watch),
            Ok(Err(e)) => {
                warn!("presence watch could not start yet: {e}");
                None
            }
            Err(_) => {
                warn!("presence watch could not start yet: the registry does not answer");
                None
            }
        };
        let tasks = vec![
            tokio::spawn(presence::watch_registry(
                shared.clone(),
                first_watch,
                stop.clone(),
            )),
            tokio::spawn(forget_old_ids(shared.store.clone(), stop.clone())),
            tokio::spawn(expire_files(
                shared.store.clone(),
                config.file_ttl,
                stop.clone(),
            )),
        ];
        // The advertised host is settled first: bound to every address, the service says it
        // answers from that host when it is an IP.
        let stun_config = config.stun.as_ref().map(|stun| StunConfig {
            advertise: stun_host(stun, &config),
            ..stun.clone()
        });
        let stun = match &stun_config {
            Some(stun) => match StunServer::start(stun, stop.clone()).await {
                Ok(server) => Some(server),
                Err(e) => {
                    stop.cancel();
                    shared.store.close().await;
                    return Err(e).context("starting the STUN service");
                }
            },
            None => None,
        };
        let stun_advertised = match (&stun_config, &stun) {
            (Some(stun_config), Some(server)) => {
                let advertised = stun_config
                    .advertise
                    .as_deref()
                    .zip(server.addresses().first());
                if advertised.is_none() {
                    warn!(
                        "the STUN service listens on every address and nothing says which one \
                         clients should use: set its advertised host; rendezvous lists none"
                    );
                }
                advertised.map(|(host, primary)| host_port(host, primary.port()))
            }
            _ => None,
        };
        let mut builder = Server::builder()
            .service(SignalServer::new(ChatService::new(
                shared.clone(),
                stun_advertised.clone(),
            )))
            .service(NodeServer::new(nodes::NodeService::new(shared.clone())))
            .max_frame_len(config.max_frame_len);
        if let Some(metrics) = &config.metrics {
            builder = builder.metrics(metrics);
            metrics::register(metrics, &shared);
        }
        if let Some(tls) = &config.tls {
            builder = builder.tls(tls.clone());
        }
        let mut listen = config.listen.clone();
        let secure_web = config.tls.is_some();
        if let Some(web) = config.web
            && !listen
                .iter()
                .any(|e| web_socket_endpoint(e, secure_web).is_some())
        {
            // The web chat's browsers need a WebSocket endpoint (over TLS when the page is
            // served over HTTPS): one on the web address's host, on a port of the system's
            // choosing (named in config.json).
            let addr = SocketAddr::new(web.ip(), 0);
            listen.push(if secure_web {
                Endpoint::wss(addr, "/")
            } else {
                Endpoint::ws(addr, "/")
            });
        }
        for endpoint in &listen {
            builder = builder.listen(endpoint.clone());
        }
        let handle = match builder.start().await {
            Ok(handle) => handle,
            Err(e) => {
                stop.cancel();
                if let Some(stun) = stun {
                    stun.join().await;
                }
                shared.store.close().await;
                return Err(e).context("listening");
            }
        };
        let advertise = if config.advertise.is_empty() {
            handle
                .local_endpoints()
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            config.advertise.clone()
        };
        let mut tasks = tasks;
        let web = match config.web {
            Some(addr) => match start_web(
                addr,
                &handle,
                stun_advertised.as_deref(),
                config.tls.as_ref(),
                &stop,
            )
            .await
            {
                Ok((bound, task)) => {
                    tasks.push(task);
                    Some(bound)
                }
                Err(e) => {
                    stop.cancel();
                    handle.shutdown(Duration::ZERO).await;
                    if let Some(stun) = stun {
                        stun.join().await;
                    }
                    shared.store.close().await;
                    return Err(e).context("serving the web chat");
                }
            },
            None => None,
        };
        tasks.push(tokio::spawn(nodes::register_node(
            registry.clone(),
            shared.server_id.clone(),
            advertise,
            config.presence_ttl,
            stop.clone(),
        )));
        info!(
            endpoints = ?handle.local_endpoints(),
            %database,
            presence_ttl = ?config.presence_ttl,
            "chat server started"
        );
        Ok(ChatServer {
            handle,
            shared,
            stop,
            tasks,
            stun,
            stun_advertised,
            web,
        })
    }

    /// Where the web chat is served (with `web` set), with the real port when 0 was asked for.
    pub fn web_address(&self) -> Option<SocketAddr> {
        self.web
    }

    /// The local UDP addresses of the STUN service (empty without one): the primary, the
    /// alternate port, then with a second address its primary and alternate ports. Ports 0 in
    /// the configuration show the real ports.
    pub fn stun_addresses(&self) -> &[std::net::SocketAddr] {
        self.stun.as_ref().map_or(&[], |s| s.addresses())
    }

    /// The `host:port` the server tells clients to send STUN requests to (`rendezvous`), if
    /// it has a STUN service and knows which host to give.
    pub fn stun_advertised(&self) -> Option<&str> {
        self.stun_advertised.as_deref()
    }

    /// Where the server listens; TCP endpoints bound to port 0 show the real port.
    pub fn endpoints(&self) -> &[Endpoint] {
        self.handle.local_endpoints()
    }

    /// Whether the storage works: `false` while the store recovers from a failure (the redb
    /// file opened again after an I/O error, PostgreSQL not answering; calls that need it then
    /// fail with
    /// [`ChatError::StorageUnavailable`](chat_api::ChatError::StorageUnavailable)).
    pub fn is_healthy(&self) -> bool {
        self.shared.store.is_healthy()
    }

    /// How many users are online (on this server and, through a shared registry, others).
    pub fn online_count(&self) -> usize {
        self.shared.presence.count()
    }

    /// Stops accepting, lets calls in flight finish for up to `grace`, ends every session
    /// (revoking its presence lease) and closes the store, so that it can be opened again.
    pub async fn shutdown(self, grace: Duration) {
        let drain = self.handle.shutdown(grace);
        let mut drain = std::pin::pin!(drain);
        // The first poll stops accepting and tells every client the server is draining, so no
        // new call starts. Inboxes and presence streams would run until the grace period is
        // over: end them (and the sessions) now, then wait for the other calls in flight.
        if futures::poll!(drain.as_mut()).is_pending() {
            self.shared.close_all().await;
            drain.await;
        }
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(stun) = self.stun {
            stun.join().await;
        }
        self.shared.store.close().await;
        info!("chat server stopped");
    }
}

impl fmt::Debug for ChatServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatServer")
            .field("endpoints", &self.endpoints())
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

/// The host clients are told to send STUN to: the configured one, else the primary IP when
/// it is a specific one, else the host of the first advertised or listening TCP endpoint
/// (when that is not a wildcard either).
/// The port and path of `endpoint` if it is a WebSocket endpoint the web chat can use: `wss://`
/// when the page is served over HTTPS (`secure`), else `ws://`.
fn web_socket_endpoint(endpoint: &Endpoint, secure: bool) -> Option<(u16, String)> {
    match endpoint {
        Endpoint::Ws { port, path, .. } if !secure => Some((*port, path.clone())),
        Endpoint::Wss { port, path, .. } if secure => Some((*port, path.clone())),
        _ => None,
    }
}

/// Binds the web chat's address and serves it (over HTTPS with `tls`), pointing browsers at
/// the server's first WebSocket endpoint of the same security and at its STUN service (when it
/// has one) for ICE.
async fn start_web(
    addr: SocketAddr,
    handle: &ServerHandle,
    stun: Option<&str>,
    tls: Option<&rpc_core::tls::ServerTls>,
    stop: &CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let secure = tls.is_some();
    let Some((ws_port, ws_path)) = handle
        .local_endpoints()
        .iter()
        .find_map(|e| web_socket_endpoint(e, secure))
    else {
        anyhow::bail!(
            "the web chat needs a {} endpoint to listen on",
            if secure { "wss://" } else { "ws://" }
        );
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let settings = web::WebSettings {
        ws_scheme: if secure { "wss" } else { "ws" },
        ws_port,
        ws_path,
        ice_urls: stun.map(|s| format!("stun:{s}")).into_iter().collect(),
    };
    let tls = tls.map(|tls| tls.rustls_config(&[b"http/1.1"]));
    let task = tokio::spawn(web::serve(listener, settings, tls, stop.clone()));
    Ok((bound, task))
}

fn stun_host(stun: &StunConfig, config: &ChatServerConfig) -> Option<String> {
    if let Some(host) = &stun.advertise {
        return Some(host.clone());
    }
    if !stun.primary.ip().is_unspecified() {
        return Some(stun.primary.ip().to_string());
    }
    let advertised = config
        .advertise
        .iter()
        .filter_map(|a| a.parse::<Endpoint>().ok());
    advertised
        .chain(config.listen.iter().cloned())
        .find_map(|endpoint| match endpoint {
            Endpoint::Tcp { host, .. } | Endpoint::Tls { host, .. } => Some(host),
            _ => None,
        })
        .filter(|host| {
            host.parse::<std::net::IpAddr>()
                .map_or(true, |ip| !ip.is_unspecified())
        })
}

/// `host:port`, with an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Forgets old acknowledged message ids and room post ids, hourly.
async fn forget_old_ids(store: Arc<dyn Store>, stop: CancellationToken) {
    let max_age = u64::try_from(REMEMBER_IDS.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match store.forget_old_ids(max_age).await {
            Ok(0) => {}
            Ok(n) => info!(forgotten = n, "forgot old message ids"),
            Err(e) => warn!("forgetting old message ids: {e}"),
        }
    }
}

/// Deletes the held files not written for `ttl`, every tenth of it (at most hourly).
async fn expire_files(store: Arc<dyn Store>, ttl: Duration, stop: CancellationToken) {
    let max_age = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match store.expire_files(max_age).await {
            Ok(0) => {}
            Ok(n) => info!(files = n, "deleted expired files"),
            Err(e) => warn!("deleting expired files: {e}"),
        }
    }
}

/// Logs to stderr, at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only where a terminal shows them, not in files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
