//! The server: accepts connections on any number of endpoints and routes calls to services.

mod call;
mod calls;
mod config;
mod conn;
mod control;
mod limits;
mod state;
mod warn_limit;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_codec::Formats;
use rpc_transport::{Acceptor, Endpoint, IntoEndpoint, TransportError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::config::ServerConfig;
use self::state::{ConnShared, ServerShared};
use self::warn_limit::WarnLimit;
use crate::filter::{ServerFilter, ServerFilters};
use crate::service::Service;
use crate::writer::Backlog;

/// Builds and starts a server.
///
/// ```no_run
/// # async fn demo(svc: impl rpc_core::Service) -> Result<(), Box<dyn std::error::Error>> {
/// use rpc_core::Server;
///
/// let server = Server::builder()
///     .service(svc)
///     .listen("tcp://127.0.0.1:7000")
///     .start()
///     .await?;
/// println!("listening on {:?}", server.local_endpoints());
/// server.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
pub struct ServerBuilder {
    config: ServerConfig,
    services: Vec<Arc<dyn Service>>,
    endpoints: Vec<Result<Endpoint, TransportError>>,
    acceptors: Vec<Box<dyn Acceptor>>,
    formats: Vec<rpc_codec::Format>,
    filters: Vec<Arc<dyn ServerFilter>>,
    #[cfg(feature = "tls")]
    tls: Option<rpc_transport::tls::ServerTls>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting does not make sense (see [`ServerConfig`]).
    #[error("invalid server setting: {0}")]
    InvalidConfig(String),
    /// A user format could not be added.
    #[error("format {name}")]
    Format {
        /// The format's name.
        name: String,
        /// Why it was refused.
        #[source]
        source: rpc_codec::SerializeError,
    },
    /// An endpoint is invalid or could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The entry point: [`Server::builder`].
#[derive(Debug)]
pub struct Server(());

impl Server {
    /// A builder with the default [`ServerConfig`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            services: Vec::new(),
            endpoints: Vec::new(),
            acceptors: Vec::new(),
            formats: Vec::new(),
            filters: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }
}

impl ServerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a service. Several services (and several versions of one) share the server.
    pub fn service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Adds a service that is already shared.
    pub fn service_arc(mut self, service: Arc<dyn Service>) -> Self {
        self.services.push(service);
        self
    }

    /// Listens on a built-in endpoint (TCP, TLS, QUIC, WebSocket, Unix, memory):
    /// `"tcp://127.0.0.1:7000"`,
    /// `"ws://127.0.0.1:7001/rpc"`, an [`Endpoint`]… Call it again to listen on several at once
    /// (TCP for servers and WebSocket for browsers, say). Text that names no endpoint fails
    /// [`start`](ServerBuilder::start).
    pub fn listen(mut self, endpoint: impl IntoEndpoint) -> Self {
        self.endpoints.push(endpoint.into_endpoint());
        self
    }

    /// The certificate, key and client CA of every `tls://` and `wss://` endpoint this server
    /// [listens](ServerBuilder::listen) on; without it, such an endpoint fails
    /// [`start`](ServerBuilder::start).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use rpc_core::Server;
    /// use rpc_core::tls::ServerTls;
    ///
    /// let server = Server::builder()
    ///     .tls(ServerTls::from_pem_files("fullchain.pem", "privkey.pem")?)
    ///     .listen("tls://0.0.0.0:7443")
    ///     .listen("wss://0.0.0.0:8443/rpc")
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: rpc_transport::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Accepts connections from a user [`Acceptor`] (a tunnel or an in-house protocol, say).
    pub fn acceptor(mut self, acceptor: impl Acceptor) -> Self {
        self.acceptors.push(Box::new(acceptor));
        self
    }

    /// Accepts a user format beside the built-in ones; one that cannot be added (its id is
    /// taken, say) fails [`start`](ServerBuilder::start).
    pub fn format(mut self, format: rpc_codec::Format) -> Self {
        self.formats.push(format);
        self
    }

    /// Adds a filter; filters run in the order they were added, before the handler.
    pub fn filter(mut self, filter: impl ServerFilter) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Records the server's calls, connections and bytes in `metrics` (feature `metrics`): see
    /// [`metrics`](crate::metrics) for the families. Its filter runs before every other, so it
    /// sees each call whole.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Sets the per-connection concurrency limit
    /// ([`ServerConfig::max_concurrent_per_connection`]).
    pub fn max_concurrent_per_connection(mut self, limit: usize) -> Self {
        self.config.max_concurrent_per_connection = limit;
        self
    }

    /// Sets the server-wide concurrency limit ([`ServerConfig::max_concurrent`]).
    pub fn max_concurrent(mut self, limit: usize) -> Self {
        self.config.max_concurrent = limit;
        self
    }

    /// Sets the memory for unwritten answers: per connection before its reading pauses and
    /// before it is closed, and for the whole server ([`ServerConfig::connection_buffer`],
    /// [`ServerConfig::max_connection_buffer`], [`ServerConfig::max_server_buffer`]).
    pub fn buffers(mut self, connection: usize, max_connection: usize, max_server: usize) -> Self {
        self.config.connection_buffer = connection;
        self.config.max_connection_buffer = max_connection;
        self.config.max_server_buffer = max_server;
        self
    }

    /// Sets the maximum frame body ([`ServerConfig::max_frame_len`]).
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.config.max_frame_len = len;
        self
    }

    /// Sets the heartbeat interval ([`ServerConfig::heartbeat_interval`]). Unless an idle
    /// timeout is set too, it is three times this.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// Sets the idle timeout ([`ServerConfig::idle_timeout`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Sets whether the server serves the reflection service ([`ServerConfig::reflection`]).
    pub fn reflection(mut self, on: bool) -> Self {
        self.config.reflection = on;
        self
    }

    /// Checks the settings, binds every endpoint and starts accepting. Fails, binding nothing
    /// further, at the first invalid setting, format or endpoint, or endpoint that cannot be
    /// bound.
    pub async fn start(self) -> Result<ServerHandle, StartError> {
        self.config.validate().map_err(StartError::InvalidConfig)?;
        let mut formats = Formats::new();
        for format in self.formats {
            let name = format.name().to_owned();
            formats
                .register(format)
                .map_err(|source| StartError::Format { name, source })?;
        }
        let mut acceptors = self.acceptors;
        for endpoint in self.endpoints {
            let endpoint = endpoint?;
            #[cfg(feature = "tls")]
            let listener = match &self.tls {
                Some(tls) => rpc_transport::listen_tls(&endpoint, tls).await?,
                None => rpc_transport::listen(&endpoint).await?,
            };
            #[cfg(not(feature = "tls"))]
            let listener = rpc_transport::listen(&endpoint).await?;
            acceptors.push(Box::new(listener));
        }
        // A server has a handful of services: a list searched by comparing names beats hashing
        // them. A service added again under the same name and version replaces the earlier one.
        let mut routes: Vec<Arc<dyn Service>> = Vec::with_capacity(self.services.len());
        for service in self.services {
            match routes
                .iter_mut()
                .find(|s| s.name() == service.name() && s.version() == service.version())
            {
                Some(earlier) => {
                    warn!(
                        service = service.name(),
                        version = service.version(),
                        "service added twice; the last one serves"
                    );
                    *earlier = service;
                }
                None => routes.push(service),
            }
        }
        if self.config.reflection {
            crate::reflection::add_to(&mut routes);
        }
        #[cfg(feature = "metrics")]
        let metrics = self
            .metrics
            .map(|m| Arc::new(crate::metrics::ServerCallMetrics::new(m.server(), &routes)));
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut filters = self.filters;
        #[cfg(feature = "metrics")]
        if let Some(m) = &metrics {
            filters.insert(0, m.clone());
        }
        let backlog = Arc::new(Backlog::new(self.config.max_server_buffer, None));
        let shared = Arc::new(ServerShared {
            backlog,
            warnings: Mutex::new(WarnLimit::new(10, Duration::from_secs(1))),
            config: self.config,
            routes,
            formats,
            filters: ServerFilters::new(filters),
            #[cfg(feature = "metrics")]
            metrics,
            in_flight: Arc::new(AtomicUsize::new(0)),
            connections: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            stop_accepting: CancellationToken::new(),
            closed: CancellationToken::new(),
        });
        tokio::spawn(shed_when_over_budget(shared.clone()));
        let local_endpoints = acceptors.iter().map(|a| a.local_endpoint()).collect();
        let mut accept_tasks = Vec::with_capacity(acceptors.len());
        for acceptor in acceptors {
            info!(endpoint = %acceptor.local_endpoint(), "listening");
            accept_tasks.push(tokio::spawn(accept_loop(shared.clone(), acceptor)));
        }
        Ok(ServerHandle {
            shared,
            local_endpoints,
            accept_tasks: Mutex::new(accept_tasks),
        })
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field(
                "services",
                &self.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A running server.
///
/// Dropping the handle does not stop the server: it keeps accepting and serving, as a spawned
/// task does when its `JoinHandle` is dropped, until the runtime shuts down. Stop it with
/// [`ServerHandle::shutdown`] (graceful) or [`ServerHandle::abort`].
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    local_endpoints: Vec<Endpoint>,
    accept_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ServerHandle {
    /// Where the server listens; TCP endpoints bound to port 0 show the real port.
    pub fn local_endpoints(&self) -> &[Endpoint] {
        &self.local_endpoints
    }

    /// The first endpoint the server listens on.
    pub fn local_endpoint(&self) -> Option<&Endpoint> {
        self.local_endpoints.first()
    }

    /// The services served, as (name, version) pairs, without the reflection service
    /// (`rpc.Reflection` version `1`): every server has it, so it is nothing to register.
    pub fn services(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<_> = self
            .shared
            .routes
            .iter()
            .filter(|s| !crate::reflection::is_reflection(&***s))
            .map(|s| (s.name(), s.version()))
            .collect();
        out.sort_unstable();
        out
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.shared
            .connections
            .lock()
            .map(|c| c.len())
            .unwrap_or_default()
    }

    /// How many calls are running (or have answers waiting to be written).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// The memory answers waiting to be written take, on every connection together (frames
    /// counted as they cost; see [`ServerConfig::max_server_buffer`]).
    pub fn buffered(&self) -> usize {
        self.shared.backlog.bytes()
    }

    /// Graceful shutdown: stops accepting, tells every client it is draining (go-away), lets
    /// calls in flight finish for up to `grace`, then closes every connection.
    ///
    /// A client of this framework closes a draining connection itself once its last call is
    /// answered, so every request it sent before it saw the go-away is answered (requests that
    /// arrive after the go-away are answered "unavailable" and retried elsewhere). Connections
    /// still open when `grace` runs out are closed anyway.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_accepting().await;
        let conns: Vec<_> = self.connections();
        info!(connections = conns.len(), ?grace, "draining");
        for conn in &conns {
            conn.go_away();
        }
        let drained = async {
            for conn in &conns {
                conn.closed().await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            warn!("grace period over; closing connections still open");
        }
        self.shared.closed.cancel();
        for conn in &conns {
            conn.closed().await;
        }
        info!("server stopped");
    }

    /// Stops at once: closes every connection, failing calls in flight.
    pub async fn abort(&self) {
        self.stop_accepting().await;
        self.shared.closed.cancel();
        for conn in self.connections() {
            conn.closed().await;
        }
    }

    /// Stops every accept loop and waits until they have dropped their listeners, so that the
    /// addresses are free for a restart when this returns.
    async fn stop_accepting(&self) {
        self.shared.stop_accepting.cancel();
        let tasks = match self.accept_tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    fn connections(&self) -> Vec<Arc<ConnShared>> {
        self.shared
            .connections
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_endpoints", &self.local_endpoints)
            .field("connections", &self.connection_count())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Closes the connection holding the most unwritten answers whenever the whole server holds more
/// than its budget: its peers stopped reading, and everyone else should not pay for them.
async fn shed_when_over_budget(shared: Arc<ServerShared>) {
    loop {
        tokio::select! {
            () = shared.backlog.over_cap() => {}
            () = shared.closed.cancelled() => return,
        }
        let worst = shared
            .connections
            .lock()
            .ok()
            .and_then(|conns| conns.values().max_by_key(|c| c.backlog().bytes()).cloned());
        if let Some(conn) = worst {
            warn!(
                connection = conn.number,
                peer = %conn.peer,
                buffered = conn.backlog().bytes(),
                server_buffered = shared.backlog.bytes(),
                "server over its memory budget; closing the connection that holds the most"
            );
            conn.shed();
        }
        // Let the closed connection's memory go before looking again.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accept_loop(shared: Arc<ServerShared>, mut acceptor: Box<dyn Acceptor>) {
    loop {
        let accepted = tokio::select! {
            a = acceptor.accept() => a,
            () = shared.stop_accepting.cancelled() => return,
        };
        match accepted {
            Ok(connection) => {
                let number = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %connection.peer(), connection = number, "accepted");
                tokio::spawn(conn::serve_connection(shared.clone(), connection, number));
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
