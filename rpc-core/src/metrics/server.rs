//! The server's families, and the filter that records each call into them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use rpc_codec::Status;
use rpc_transport::{BoxRead, BoxWrite};
use tokio::time::Instant;

use super::calls::{CallFamilies, MethodStats};
use super::io::{CountedRead, CountedWrite};
use crate::context::CallContext;
use crate::error::ServerError;
use crate::filter::ServerFilter;
use crate::service::{BoxFuture, Reply, Service};

/// The families every server given one `Metrics` records into.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    calls: CallFamilies,
    in_flight: Gauge,
    connections: Gauge,
    accepted: Counter,
    bytes_read: Counter,
    bytes_written: Counter,
}

impl ServerMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let calls = CallFamilies::new();
        registry.register(
            "rpc_server_calls",
            "Calls answered, by service, method and status",
            calls.calls.clone(),
        );
        registry.register_with_unit(
            "rpc_server_call_duration",
            "How long calls took, from the request read to the answer ready",
            Unit::Seconds,
            calls.duration.clone(),
        );
        let metrics = ServerMetrics {
            calls,
            in_flight: Gauge::default(),
            connections: Gauge::default(),
            accepted: Counter::default(),
            bytes_read: Counter::default(),
            bytes_written: Counter::default(),
        };
        registry.register(
            "rpc_server_in_flight_calls",
            "Calls running now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "rpc_server_connections",
            "Connections open now",
            metrics.connections.clone(),
        );
        registry.register(
            "rpc_server_connections_accepted",
            "Connections accepted",
            metrics.accepted.clone(),
        );
        registry.register(
            "rpc_server_bytes_read",
            "Bytes read from clients",
            metrics.bytes_read.clone(),
        );
        registry.register(
            "rpc_server_bytes_written",
            "Bytes written to clients",
            metrics.bytes_written.clone(),
        );
        metrics
    }
}

/// One server's view of the families: its routes' series made up front, so a call costs two
/// lookups of names in small maps and no allocation, and no name a client makes up becomes a
/// label. Also the server's filter (installed outermost).
#[derive(Debug)]
pub(crate) struct ServerCallMetrics {
    metrics: Arc<ServerMetrics>,
    services: HashMap<&'static str, ServiceStats>,
    /// Calls refused before they reached a service: `service=""`, `method=""`.
    unrouted: Arc<MethodStats>,
}

#[derive(Debug)]
struct ServiceStats {
    methods: HashMap<&'static str, Arc<MethodStats>>,
    /// Methods the service does not list: `method=""`.
    other: Arc<MethodStats>,
}

impl ServerCallMetrics {
    pub(crate) fn new(metrics: Arc<ServerMetrics>, routes: &[Arc<dyn Service>]) -> Self {
        let mut services: HashMap<&'static str, ServiceStats> = HashMap::new();
        for route in routes {
            let name = route.name();
            let stats = services.entry(name).or_insert_with(|| ServiceStats {
                methods: HashMap::new(),
                other: Arc::new(metrics.calls.method(name, "")),
            });
            for method in route.methods() {
                stats
                    .methods
                    .entry(method.name)
                    .or_insert_with(|| Arc::new(metrics.calls.method(name, method.name)));
            }
        }
        let unrouted = Arc::new(metrics.calls.method("", ""));
        ServerCallMetrics {
            metrics,
            services,
            unrouted,
        }
    }

    /// Counts a call answered with an error before it ran (no such service or method, busy,
    /// draining, refused by a filter).
    pub(crate) fn refused(&self, service: &str, method: &str, status: Status) {
        self.metrics
            .calls
            .count(self.stats(service, method), status.name());
    }

    /// A connection was accepted; the guard counts it open until it is dropped.
    pub(crate) fn connection(&self) -> OpenConnection {
        self.metrics.accepted.inc();
        self.metrics.connections.inc();
        OpenConnection(self.metrics.connections.clone())
    }

    /// The connection's halves, counting the bytes they move.
    pub(crate) fn count_bytes(&self, read: BoxRead, write: BoxWrite) -> (BoxRead, BoxWrite) {
        (
            Box::new(CountedRead::new(read, self.metrics.bytes_read.clone())),
            Box::new(CountedWrite::new(write, self.metrics.bytes_written.clone())),
        )
    }

    fn stats(&self, service: &str, method: &str) -> &Arc<MethodStats> {
        match self.services.get(service) {
            Some(s) => s.methods.get(method).unwrap_or(&s.other),
            None => &self.unrouted,
        }
    }
}

impl ServerFilter for ServerCallMetrics {
    fn filter(
        &self,
        ctx: &CallContext,
        next: BoxFuture<'static, Reply>,
    ) -> Result<BoxFuture<'static, Reply>, ServerError> {
        let call = RunningCall {
            stats: self.stats(ctx.service(), ctx.method()).clone(),
            metrics: self.metrics.clone(),
            start: Instant::now(),
            status: Status::CANCELLED,
        };
        call.metrics.in_flight.inc();
        Ok(Box::pin(async move {
            let reply = next.await;
            call.finished(reply.status());
            reply
        }))
    }
}

/// A call under way; counted with its status when dropped: the reply's, or cancelled if it was
/// dropped unfinished, or an internal error if its handler panicked (the server answers that).
struct RunningCall {
    stats: Arc<MethodStats>,
    metrics: Arc<ServerMetrics>,
    start: Instant,
    status: Status,
}

impl RunningCall {
    fn finished(mut self, status: Status) {
        self.status = status;
    }
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        if std::thread::panicking() {
            self.status = Status::INTERNAL_ERROR;
        }
        let elapsed: Duration = self.start.elapsed();
        self.metrics.calls.count(&self.stats, self.status.name());
        self.stats.observe(elapsed);
    }
}

/// An open connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
