//! The chat server's own metrics, beside the framework's (calls, connections, bytes): users
//! online, messages relayed by the path they took, messages waiting, calls in progress. With
//! [`ChatServerConfig::metrics`](crate::ChatServerConfig::metrics) set they are read at every
//! scrape.

use std::fmt;
use std::sync::{Arc, Weak};

use rpc_core::metrics::Metrics;
use rpc_core::metrics::prometheus_client::collector::Collector;
use rpc_core::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use rpc_core::metrics::prometheus_client::metrics::counter::ConstCounter;

use crate::state::Shared;

/// Adds the chat server's gauges and counters to `metrics`. They read the server's state
/// through a weak reference: a stopped server reads as zero.
pub(crate) fn register(metrics: &Metrics, shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    metrics.register_gauge_fn(
        "chat_online_users",
        "Users online (on this server and, through a shared registry, others)",
        read(&weak, |s| s.presence.count()),
    );
    metrics.register_gauge_fn(
        "chat_calls_in_progress",
        "Calls (ringing or accepted) that this server's users take part in",
        read(&weak, |s| s.calls.count()),
    );
    metrics.register_gauge_fn(
        "chat_messages_waiting",
        "Relayed messages stored and not yet acknowledged, since this server started",
        read(&weak, |s| {
            usize::try_from(s.messages.waiting()).unwrap_or(usize::MAX)
        }),
    );
    metrics.register_collector(MessagesByPath(weak));
}

fn read(
    shared: &Weak<Shared>,
    f: impl Fn(&Shared) -> usize + Send + Sync + 'static,
) -> impl Fn() -> i64 + Send + Sync + 'static {
    let shared = shared.clone();
    move || {
        shared
            .upgrade()
            .map_or(0, |s| i64::try_from(f(&s)).unwrap_or(i64::MAX))
    }
}

/// `chat_messages_total{path}`: relayed (pushed at once) or stored (for a recipient who was
/// not reachable). Direct messages go peer to peer and never reach the server.
struct MessagesByPath(Weak<Shared>);

impl fmt::Debug for MessagesByPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessagesByPath")
    }
}

impl Collector for MessagesByPath {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let metric_type = ConstCounter::new(0u64).metric_type();
        let mut metric = encoder.encode_descriptor(
            "chat_messages",
            "Messages relayed through the server, by path: relayed (pushed to an open inbox \
             at once) or stored (for a recipient who was not reachable)",
            None,
            metric_type,
        )?;
        for (path, count) in shared.messages.by_path() {
            let labels = [("path", path)];
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
