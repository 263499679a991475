//! Prometheus metrics (feature `metrics`, on by default): a [`Metrics`] registry that servers and
//! clients record into, programs add their own gauges to, and [`Metrics::serve`] answers
//! `GET /metrics` with, in the OpenMetrics text format.
//!
//! The framework's families:
//!
//! ```text
//! rpc_server_calls_total{service,method,status}        calls answered (status: Status::name())
//! rpc_server_call_duration_seconds{service,method}     histogram, 50 µs to 10 s
//! rpc_server_in_flight_calls                           calls running now
//! rpc_server_connections                               connections open now
//! rpc_server_connections_accepted_total
//! rpc_server_bytes_read_total, rpc_server_bytes_written_total
//! rpc_client_calls_total{service,method,status}        status: the response's, or the error's
//! rpc_client_call_duration_seconds{service,method}
//! rpc_client_in_flight_calls
//! rpc_client_reconnects_total                          connections made after a client's first
//! rpc_client_bytes_read_total, rpc_client_bytes_written_total
//! ```

mod calls;
mod client;
mod http;
mod io;
mod server;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

pub(crate) use self::client::ClientMetrics;
pub use self::http::MetricsServer;
pub(crate) use self::server::{ServerCallMetrics, ServerMetrics};
pub use prometheus_client;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry of metrics, shared by every clone: give it to servers
/// ([`ServerBuilder::metrics`](crate::ServerBuilder::metrics)) and clients
/// ([`ClientBuilder::metrics`](crate::ClientBuilder::metrics)), add gauges of your own, and
/// serve it.
///
/// Servers (and clients) given the same `Metrics` add up into the same series.
///
/// ```
/// use rpc_core::metrics::Metrics;
///
/// let metrics = Metrics::new();
/// metrics.register_gauge_fn("queue_length", "Jobs waiting", || 3);
/// assert!(metrics.encode().contains("queue_length 3"));
/// ```
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: Mutex<Registry>,
    server: OnceLock<Arc<ServerMetrics>>,
    client: OnceLock<Arc<ClientMetrics>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a metric of one's own (a `prometheus_client` counter, gauge, family…); keep a
    /// clone of it to update it.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Registers a collector, asked for its metrics at every scrape. It runs while the registry
    /// is locked, so it must not use this `Metrics`.
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry().register_collector(Box::new(collector));
    }

    /// Registers a gauge whose value `read` gives at every scrape (the size of a map, say).
    pub fn register_gauge_fn(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.register_collector(GaugeFn {
            name: name.to_owned(),
            help: help.to_owned(),
            read: Read::Plain(Box::new(read)),
        });
    }

    /// Registers a gauge with one label, whose values `read` gives at every scrape as (label
    /// value, value) pairs (instances by service, say).
    pub fn register_gauge_family_fn(
        &self,
        name: &str,
        help: &str,
        label: &'static str,
        read: impl Fn() -> Vec<(String, i64)> + Send + Sync + 'static,
    ) {
        self.register_collector(GaugeFn {
            name: name.to_owned(),
            help: help.to_owned(),
            read: Read::Family(label, Box::new(read)),
        });
    }

    /// Runs `f` with the registry locked, for what the other methods do not cover.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry())
    }

    /// Every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; a collector that fails leaves its part out.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry());
        text
    }

    /// Serves the metrics over HTTP at `addr` (`"127.0.0.1:9100"`): `GET /metrics` answers
    /// [`Metrics::encode`]'s text, other paths 404 and other methods 405. It stops when the
    /// returned handle is dropped or shut down.
    pub async fn serve(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> std::io::Result<MetricsServer> {
        MetricsServer::start(self.clone(), addr).await
    }

    /// The server families, registered the first time a server asks for them.
    pub(crate) fn server(&self) -> Arc<ServerMetrics> {
        self.inner
            .server
            .get_or_init(|| Arc::new(ServerMetrics::register(&mut self.registry())))
            .clone()
    }

    /// The client families, registered the first time a client asks for them.
    pub(crate) fn client(&self) -> Arc<ClientMetrics> {
        self.inner
            .client
            .get_or_init(|| Arc::new(ClientMetrics::register(&mut self.registry())))
            .clone()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registering and encoding leave the registry whole even if a collector panicked.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A gauge read at scrape time.
struct GaugeFn {
    name: String,
    help: String,
    read: Read,
}

/// How a [`GaugeFn`] reads its values.
enum Read {
    Plain(Box<dyn Fn() -> i64 + Send + Sync>),
    Family(
        &'static str,
        Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>,
    ),
}

impl fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GaugeFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for GaugeFn {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let metric_type = ConstGauge::new(0i64).metric_type();
        match &self.read {
            Read::Plain(read) => {
                let metric =
                    encoder.encode_descriptor(&self.name, &self.help, None, metric_type)?;
                ConstGauge::new(read()).encode(metric)
            }
            Read::Family(label, read) => {
                let values = read();
                let mut metric =
                    encoder.encode_descriptor(&self.name, &self.help, None, metric_type)?;
                for (label_value, value) in values {
                    let labels = [(*label, label_value)];
                    ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
                }
                Ok(())
            }
        }
    }
}
