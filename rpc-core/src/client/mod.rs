//! The client: one connection at a time to one endpoint, multiplexing every call over it, and
//! reconnecting by itself.

mod config;
mod conn;
mod fallback;
mod inbox;
mod state;
mod stream;
mod supervisor;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rpc_codec::{Format, FrameKind, STREAM_WINDOW_KEY, Status, put_request_head};
use rpc_transport::{Connector, EndpointConnector, IntoEndpoint};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use self::config::ClientConfig;
use self::conn::{Conn, Pending, UnaryCall};
pub use self::fallback::{Fallback, Fallbacks, falls_back};
pub use self::state::ConnectionState;
use self::state::{DropGuard, Shared};
use self::supervisor::supervise;
use crate::backoff::Backoff;
use crate::caller::{CallOptions, Caller, MethodTarget, RawStream, Response};
use crate::error::{Cause, RpcError};
use crate::filter::{CallFuture, CallOutput, ClientFilter, ClientFilters};
use crate::frame_buf::OutFrame;
use crate::service::MethodKind;

/// A client of one server endpoint. Cheap to clone; every clone shares one connection, over
/// which any number of calls run at once.
///
/// ```no_run
/// # async fn demo() -> Result<(), rpc_core::RpcError> {
/// use rpc_core::{CallOptions, Client, MethodTarget};
///
/// let client = Client::connect("tcp://127.0.0.1:7000").await?;
/// let target = MethodTarget { service: "echo", version: "", method: "echo", idempotent: true };
/// let reply: String = client.call(&target, &("hi",)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _handle: Arc<DropGuard>,
}

/// Builds a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: ClientConfig,
    fallbacks: Fallbacks,
    #[cfg(feature = "tls")]
    tls: Option<rpc_transport::tls::ClientTls>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
}

impl ClientBuilder {
    /// A builder with the default [`ClientConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from a whole configuration (replacing every setting made so far).
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the format ([`ClientConfig::format`]).
    pub fn format(mut self, format: Format) -> Self {
        self.config.format = format;
        self
    }

    /// Sets the default call timeout ([`ClientConfig::timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Sets the connect timeout ([`ClientConfig::connect_timeout`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets the heartbeat interval ([`ClientConfig::heartbeat_interval`]). Unless an idle
    /// timeout is set too, it is three times this.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// Sets the idle timeout ([`ClientConfig::idle_timeout`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Sets the maximum frame body ([`ClientConfig::max_frame_len`]).
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.config.max_frame_len = len;
        self
    }

    /// Sets the byte window of server streams ([`ClientConfig::stream_window`]).
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.config.stream_window = bytes;
        self
    }

    /// Sets the reconnect backoff ([`ClientConfig::reconnect`]).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Sets whether calls wait for a reconnect ([`ClientConfig::wait_for_reconnect`]).
    pub fn wait_for_reconnect(mut self, wait: bool) -> Self {
        self.config.wait_for_reconnect = wait;
        self
    }

    /// Adds a filter ([`ClientConfig::filters`]).
    pub fn filter(mut self, filter: impl ClientFilter) -> Self {
        self.config.filters.push(Arc::new(filter));
        self
    }

    /// Answers the unary calls of `service`'s `method` that fail for want of a server
    /// (unreachable, connection lost, busy, draining, deadline passed: see [`falls_back`])
    /// from `fallback` rather than with the error. Filters see the failure; the caller gets
    /// the fallback's answer. A cluster of clients (`rpc_registry::Cluster`) takes its
    /// fallbacks in its own settings, so that a failed member is first failed over.
    pub fn fallback(
        mut self,
        service: impl Into<String>,
        method: impl Into<String>,
        fallback: Fallback,
    ) -> Self {
        self.fallbacks = self.fallbacks.method(service, method, fallback);
        self
    }

    /// Connects to `tls://` and `wss://` endpoints with these TLS settings (a CA of one's own, a
    /// client certificate) rather than the default, which trusts the Mozilla root store:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use rpc_core::Client;
    /// use rpc_core::tls::ClientTls;
    ///
    /// let client = Client::builder()
    ///     .tls(ClientTls::with_ca_pem_file("ca.pem")?)
    ///     .connect("tls://chat.example:7443")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: rpc_transport::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Records the client's calls, reconnects and bytes in `metrics` (feature `metrics`): see
    /// [`metrics`](crate::metrics) for the families. Its filter runs before every other, so it
    /// sees each call whole.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The settings made so far.
    pub fn settings(&self) -> &ClientConfig {
        &self.config
    }

    /// Connects to `endpoint` (`"tcp://127.0.0.1:7000"`, an [`Endpoint`](crate::Endpoint)…), failing if the
    /// settings are invalid or the first attempt fails; later losses reconnect.
    pub async fn connect(self, endpoint: impl IntoEndpoint) -> Result<Client, RpcError> {
        let connector = self.connector(endpoint)?;
        self.connect_with(connector).await
    }

    /// Connects through a user [`Connector`] (a tunnel or an in-house protocol, say), failing if the settings are invalid or
    /// the first attempt fails.
    pub async fn connect_with(self, connector: impl Connector) -> Result<Client, RpcError> {
        let (tx, rx) = oneshot::channel();
        let client = self.start(Arc::new(connector), Some(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RpcError::Connect {
                endpoint: client.shared.target.clone(),
                cause: Cause::message("client stopped"),
            }),
        }
    }

    /// A client that connects in the background and keeps retrying; calls wait for the
    /// connection up to their deadline. Fails only if the endpoint or the settings are invalid.
    /// Needs a Tokio runtime.
    pub fn connect_lazy(self, endpoint: impl IntoEndpoint) -> Result<Client, RpcError> {
        let connector = self.connector(endpoint)?;
        self.start(Arc::new(connector), None)
    }

    /// As [`ClientBuilder::connect_lazy`], through a user [`Connector`].
    pub fn connect_lazy_with(self, connector: impl Connector) -> Result<Client, RpcError> {
        self.start(Arc::new(connector), None)
    }

    fn connector(&self, endpoint: impl IntoEndpoint) -> Result<EndpointConnector, RpcError> {
        let endpoint = endpoint
            .into_endpoint()
            .map_err(|e| RpcError::BadEndpoint(e.to_string()))?;
        let connector = EndpointConnector::new(endpoint, self.config.connect_timeout);
        #[cfg(feature = "tls")]
        let connector = match &self.tls {
            Some(tls) => connector.tls(tls.clone()),
            None => connector,
        };
        Ok(connector)
    }

    fn start(
        self,
        connector: Arc<dyn Connector>,
        first: Option<oneshot::Sender<Result<(), RpcError>>>,
    ) -> Result<Client, RpcError> {
        self.config.validate().map_err(RpcError::InvalidConfig)?;
        let shutdown = CancellationToken::new();
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut filters = self.config.filters.clone();
        #[cfg(feature = "metrics")]
        let metrics = self.metrics.map(|m| m.client());
        #[cfg(feature = "metrics")]
        if let Some(m) = &metrics {
            filters.insert(0, m.clone());
        }
        let shared = Arc::new(Shared {
            filters: ClientFilters::new(filters),
            fallbacks: (!self.fallbacks.is_empty()).then_some(self.fallbacks),
            #[cfg(feature = "metrics")]
            metrics,
            config: self.config,
            target: connector.describe(),
            next_id: AtomicU64::new(1),
            current: ArcSwapOption::empty(),
            state: watch::Sender::new(ConnectionState::Connecting),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(supervise(shared.clone(), connector, first));
        Ok(Client {
            shared,
            _handle: Arc::new(DropGuard(shutdown)),
        })
    }
}

impl Client {
    /// A builder for a client with non-default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Connects with default settings to an endpoint such as `"tcp://127.0.0.1:7000"`.
    pub async fn connect(endpoint: impl IntoEndpoint) -> Result<Client, RpcError> {
        ClientBuilder::new().connect(endpoint).await
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every change of the connection's state.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// The format calls are encoded in.
    pub fn format(&self) -> &Format {
        &self.shared.config.format
    }

    /// Whether calls can be expected to go through: connected, or still trying a first
    /// connection (or a first reconnect) whose outcome is not known yet. False once an attempt
    /// has failed, until a connection is made.
    pub fn is_reachable(&self) -> bool {
        match &*self.shared.state.borrow() {
            ConnectionState::Connected | ConnectionState::Connecting => true,
            ConnectionState::Reconnecting { attempt, .. } => *attempt == 0,
            ConnectionState::Failed { .. } | ConnectionState::Closed => false,
        }
    }

    /// What the client connects to.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Stops reconnecting and closes the connection; pending calls fail with "connection lost".
    pub fn close(&self) {
        self.shared.shutdown.cancel();
    }

    /// Calls a method and decodes its result: the untyped form of what generated clients do.
    pub async fn call<A, T>(&self, target: &MethodTarget<'_>, args: &A) -> Result<T, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        T: serde::de::DeserializeOwned,
    {
        self.call_unary(target, &CallOptions::default(), args)
            .await?
            .decode()
    }

    /// A connection that takes new calls, waiting for one up to `deadline`.
    async fn connection(&self, deadline: Instant) -> Result<Arc<Conn>, RpcError> {
        if let Some(conn) = self.shared.current.load_full()
            && conn.is_open()
        {
            return Ok(conn);
        }
        // Boxed: the waiting state is large and rarely needed; keeping it out of every call's
        // future keeps those small (futures are moved as they are built).
        Box::pin(self.wait_for_connection(deadline)).await
    }

    async fn wait_for_connection(&self, deadline: Instant) -> Result<Arc<Conn>, RpcError> {
        let mut state = self.shared.state.subscribe();
        loop {
            if let Some(conn) = self.shared.current.load_full()
                && conn.is_open()
            {
                return Ok(conn);
            }
            let reason = match &*state.borrow_and_update() {
                ConnectionState::Failed { reason } => Some(reason.clone()),
                ConnectionState::Closed => Some("client closed".to_owned()),
                ConnectionState::Reconnecting { attempt, reason }
                    if *attempt > 0 && !self.shared.config.wait_for_reconnect =>
                {
                    Some(reason.clone())
                }
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(self.connect_error(reason));
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(self.connect_error("client closed".to_owned()));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let reason = match &*state.borrow() {
                        ConnectionState::Reconnecting { reason, .. } => reason.clone(),
                        _ => "no connection before the deadline".to_owned(),
                    };
                    return Err(self.connect_error(reason));
                }
            }
        }
    }

    fn connect_error(&self, reason: String) -> RpcError {
        RpcError::Connect {
            endpoint: self.shared.target.clone(),
            cause: Cause::message(reason),
        }
    }

    /// Encodes a request in `conn`'s frame room.
    #[allow(clippy::too_many_arguments)]
    fn encode<A: Serialize + ?Sized>(
        &self,
        conn: &Conn,
        kind: FrameKind,
        id: u64,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        budget: Option<Duration>,
        args: &A,
    ) -> Result<OutFrame, RpcError> {
        let config = &self.shared.config;
        let mut buf = conn.frames.frame(128);
        put_request_head(
            buf.body(),
            target.service,
            target.version,
            target.method,
            budget,
            &options.metadata,
        )
        .map_err(|e| RpcError::BadRequest(e.to_string()))?;
        buf.encode(&config.format, args)?;
        conn.frames.give_back(&mut buf);
        buf.finish(
            kind,
            config.format.id(),
            Status::OK,
            id,
            config.max_frame_len,
        )
        .map_err(|len| {
            RpcError::BadRequest(format!(
                "request of {len} bytes exceeds the maximum frame body of {} bytes",
                config.max_frame_len
            ))
        })
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Caller for Client {
    async fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<Response, RpcError> {
        let filters = &self.shared.filters;
        let outcome = if filters.is_empty() {
            self.unary(target, options, args).await
        } else {
            let send = |options: CallOptions| -> CallFuture<'_> {
                Box::pin(async move {
                    let response = self.unary(target, &options, args).await?;
                    Ok(CallOutput::Response(response))
                })
            };
            filters
                .run(target, MethodKind::Unary, options, send)
                .await
                .and_then(CallOutput::into_response)
        };
        match &self.shared.fallbacks {
            None => outcome,
            Some(fallbacks) => {
                fallbacks.apply_counted(target, &self.shared.config.format, outcome, || {
                    #[cfg(feature = "metrics")]
                    if let Some(metrics) = &self.shared.metrics {
                        metrics.fell_back(target);
                    }
                })
            }
        }
    }

    async fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<(), RpcError> {
        let filters = &self.shared.filters;
        if filters.is_empty() {
            return self.one_way(target, options, args).await;
        }
        let send = |options: CallOptions| -> CallFuture<'_> {
            Box::pin(async move {
                self.one_way(target, &options, args).await?;
                Ok(CallOutput::Sent)
            })
        };
        filters
            .run(target, MethodKind::OneWay, options, send)
            .await?
            .into_sent()
    }

    async fn call_stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<RawStream, RpcError> {
        let filters = &self.shared.filters;
        if filters.is_empty() {
            return self.stream(target, options, args).await;
        }
        let send = |options: CallOptions| -> CallFuture<'_> {
            Box::pin(async move {
                let stream = self.stream(target, &options, args).await?;
                Ok(CallOutput::Stream(stream))
            })
        };
        filters
            .run(target, MethodKind::ServerStream, options, send)
            .await?
            .into_stream()
    }
}

impl Client {
    async fn one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<(), RpcError> {
        let deadline = Instant::now() + options.timeout.unwrap_or(self.shared.config.timeout);
        let conn = self.connection(deadline).await?;
        let frame = self.encode(
            &conn,
            FrameKind::OneWay,
            self.next_id(),
            target,
            options,
            None,
            args,
        )?;
        conn.send(frame)
    }

    async fn stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<RawStream, RpcError> {
        // A stream lives as long as its reader wants it: only an explicit timeout bounds it.
        let wait = Instant::now() + options.timeout.unwrap_or(self.shared.config.timeout);
        let deadline = options.timeout.map(|t| Instant::now() + t);
        let conn = self.connection(wait).await?;
        let id = self.next_id();
        let budget = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // The byte window goes with the call's metadata (unless that is full).
        let window = self.shared.config.stream_window as u64;
        let mut announced = options.clone();
        let window = announced
            .metadata
            .insert(STREAM_WINDOW_KEY, window.to_string())
            .is_ok()
            .then_some(window);
        let frame = self.encode(
            &conn,
            FrameKind::Request,
            id,
            target,
            &announced,
            budget,
            args,
        )?;
        let (tx, stream) = stream::stream_channel(conn.clone(), id, deadline, window);
        conn.register(id, Pending::Stream(tx))?;
        conn.send(frame)?;
        Ok(RawStream::new(self.shared.config.format.clone(), stream))
    }

    async fn unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<Response, RpcError> {
        let timeout = options.timeout.unwrap_or(self.shared.config.timeout);
        let start = Instant::now();
        let deadline = start + timeout;
        let mut retried = false;
        loop {
            let conn = self.connection(deadline).await?;
            let id = self.next_id();
            // The first attempt's budget is the whole timeout: no second clock read.
            let budget = if retried {
                deadline.saturating_duration_since(Instant::now())
            } else {
                timeout
            };
            let frame = self.encode(
                &conn,
                FrameKind::Request,
                id,
                target,
                options,
                Some(budget),
                args,
            )?;
            let (tx, rx) = oneshot::channel();
            if let Err(e) = conn.register(id, Pending::Unary(UnaryCall { tx, deadline })) {
                // The connection closed (or finished draining) between picking it and
                // registering: nothing was sent, so another connection may take the call.
                if !retried {
                    retried = true;
                    continue;
                }
                return Err(e);
            }
            let mut guard = CancelOnDrop {
                conn: &conn,
                id,
                armed: true,
            };
            // The connection's reader keeps the deadline: one timer for all its calls.
            conn.deadlines.add(deadline);
            conn.send(frame)?;
            let answer = rx.await;
            guard.armed = false;
            let frame = match answer {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(RpcError::DeadlineExceeded),
                Err(_) => return Err(conn.lost()),
            };
            // A draining server refuses calls it has not started; they are safe to send again on
            // the connection that replaces it.
            if frame.status == Status::UNAVAILABLE && !conn.is_open() && !retried {
                retried = true;
                debug!(id, "server draining; retrying on a new connection");
                continue;
            }
            return Ok(Response {
                format: self.shared.config.format.clone(),
                status: frame.status,
                body: frame.body,
            });
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.shared.target)
            .field("format", &self.shared.config.format.name())
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

/// Cancels a call whose future is dropped before its answer arrived.
struct CancelOnDrop<'a> {
    conn: &'a Conn,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.cancel(self.id);
        }
    }
}
