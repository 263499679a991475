//! What a client's handles and its supervisor share: the connection in use and its state.

use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::ClientConfig;
use super::conn::Conn;
use super::fallback::Fallbacks;
use crate::filter::ClientFilters;

/// Where a client's connection stands. Watch it with [`Client::watch_state`](crate::Client::watch_state).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// The first connection attempt is under way.
    Connecting,
    /// A connection is up and takes calls.
    Connected,
    /// The connection was lost (or the server is draining) and the client is reconnecting.
    Reconnecting {
        /// Failed attempts since the connection was lost.
        attempt: u32,
        /// Why the last attempt failed, or why the connection ended.
        reason: String,
    },
    /// The attempt limit was reached; calls fail at once.
    Failed {
        /// The last connection error.
        reason: String,
    },
    /// [`Client::close`](crate::Client::close) was called or every handle was dropped.
    Closed,
}

/// What every handle of a client and its supervisor share.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) filters: ClientFilters,
    /// `None` when there are none, so that calls check one word.
    pub(crate) fallbacks: Option<Fallbacks>,
    /// Reconnects and bytes, when metrics are on (calls are counted by a filter).
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::ClientMetrics>>,
    pub(crate) target: String,
    pub(crate) next_id: AtomicU64,
    pub(crate) current: ArcSwapOption<Conn>,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) shutdown: CancellationToken,
}

/// Stops the supervisor when the last `Client` handle goes away.
pub(crate) struct DropGuard(pub(crate) CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
