//! The client's families, and the filter that records each call into them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use rpc_codec::Status;
use rpc_transport::{BoxRead, BoxWrite};

use super::calls::{CallFamilies, MethodLabels, MethodStats};
use super::io::{CountedRead, CountedWrite};
use crate::caller::MethodTarget;
use crate::error::RpcError;
use crate::filter::{CallFuture, ClientFilter};
use crate::service::MethodKind;

/// The families every client given one `Metrics` records into; also the clients' filter
/// (installed outermost).
#[derive(Debug)]
pub(crate) struct ClientMetrics {
    calls: CallFamilies,
    /// Each method's series, by service and method, made at its first call.
    methods: RwLock<HashMap<String, HashMap<String, Arc<MethodStats>>>>,
    in_flight: Gauge,
    reconnects: Counter,
    /// Calls answered by their fallback, by service and method.
    fallbacks: Family<MethodLabels, Counter>,
    bytes_read: Counter,
    bytes_written: Counter,
}

impl ClientMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let calls = CallFamilies::new();
        registry.register(
            "rpc_client_calls",
            "Calls made, by service, method and status (the response's, or the error's)",
            calls.calls.clone(),
        );
        registry.register_with_unit(
            "rpc_client_call_duration",
            "How long calls took, from sending to the outcome",
            Unit::Seconds,
            calls.duration.clone(),
        );
        let metrics = ClientMetrics {
            calls,
            methods: RwLock::new(HashMap::new()),
            in_flight: Gauge::default(),
            reconnects: Counter::default(),
            fallbacks: Family::default(),
            bytes_read: Counter::default(),
            bytes_written: Counter::default(),
        };
        registry.register(
            "rpc_client_in_flight_calls",
            "Calls under way now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "rpc_client_reconnects",
            "Connections made after a client's first",
            metrics.reconnects.clone(),
        );
        registry.register(
            "rpc_client_fallbacks",
            "Failed calls answered by their fallback instead, by service and method",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "rpc_client_bytes_read",
            "Bytes read from servers",
            metrics.bytes_read.clone(),
        );
        registry.register(
            "rpc_client_bytes_written",
            "Bytes written to servers",
            metrics.bytes_written.clone(),
        );
        metrics
    }

    /// A call of `target` was answered by its fallback.
    pub(crate) fn fell_back(&self, target: &MethodTarget<'_>) {
        self.fallbacks
            .get_or_create(&[
                ("service", target.service.to_owned()),
                ("method", target.method.to_owned()),
            ])
            .inc();
    }

    /// A client made a connection after its first.
    pub(crate) fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// The connection's halves, counting the bytes they move.
    pub(crate) fn count_bytes(&self, read: BoxRead, write: BoxWrite) -> (BoxRead, BoxWrite) {
        (
            Box::new(CountedRead::new(read, self.bytes_read.clone())),
            Box::new(CountedWrite::new(write, self.bytes_written.clone())),
        )
    }

    fn stats(&self, service: &str, method: &str) -> Arc<MethodStats> {
        {
            let methods = self.methods.read().unwrap_or_else(|p| p.into_inner());
            if let Some(stats) = methods.get(service).and_then(|m| m.get(method)) {
                return stats.clone();
            }
        }
        let mut methods = self.methods.write().unwrap_or_else(|p| p.into_inner());
        methods
            .entry(service.to_owned())
            .or_default()
            .entry(method.to_owned())
            .or_insert_with(|| Arc::new(self.calls.method(service, method)))
            .clone()
    }
}

impl ClientFilter for ClientMetrics {
    fn around<'a>(
        &'a self,
        _target: &'a MethodTarget<'a>,
        _kind: MethodKind,
        next: CallFuture<'a>,
    ) -> CallFuture<'a> {
        Box::pin(async move {
            self.in_flight.inc();
            let _running = InFlight(&self.in_flight);
            next.await
        })
    }

    fn after(
        &self,
        target: &MethodTarget<'_>,
        outcome: Result<Status, &RpcError>,
        elapsed: Duration,
    ) {
        let stats = self.stats(target.service, target.method);
        let status = match outcome {
            Ok(status) => status.name(),
            Err(e) => error_label(e),
        };
        self.calls.count(&stats, status);
        stats.observe(elapsed);
    }
}

/// A call under way, counted until dropped.
struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A short label for an error, from its kind (never its message): the status it travelled as,
/// or what failed on this side.
pub(crate) fn error_label(e: &RpcError) -> &'static str {
    if let Some(status) = e.status() {
        return status.name();
    }
    match e {
        RpcError::Connect { .. } => "connect failed",
        RpcError::ConnectionLost(_) => "connection lost",
        RpcError::BadEndpoint(_) => "bad endpoint",
        RpcError::InvalidConfig(_) => "invalid config",
        RpcError::Serialize(_) => "serialize error",
        RpcError::Protocol(_) => Status::PROTOCOL_ERROR.name(),
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Cause;

    #[test]
    fn errors_are_labelled_by_kind_not_message() {
        let connect = RpcError::Connect {
            endpoint: "tcp://127.0.0.1:1".into(),
            cause: Cause::message("refused"),
        };
        assert_eq!(error_label(&connect), "connect failed");
        let lost = RpcError::ConnectionLost(Cause::message("reset"));
        assert_eq!(error_label(&lost), "connection lost");
        assert_eq!(
            error_label(&RpcError::DeadlineExceeded),
            "deadline exceeded"
        );
        assert_eq!(
            error_label(&RpcError::Application("any text".into())),
            "application error"
        );
        assert_eq!(
            error_label(&RpcError::ServerBusy("a b c".into())),
            "server busy"
        );
        assert_eq!(
            error_label(&RpcError::Protocol("x".into())),
            "protocol error"
        );
        assert_eq!(
            error_label(&RpcError::BadEndpoint("x".into())),
            "bad endpoint"
        );
    }
}
