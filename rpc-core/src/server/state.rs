//! What the server's parts share: the server's routes, settings and connections, and each
//! connection's state (its call table, limits and draining flag).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rpc_codec::Formats;
use rpc_transport::PeerAddr;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::calls::CallTable;
use super::config::ServerConfig;
use super::control::CallSignal;
use super::limits::Limits;
use crate::filter::ServerFilters;
use crate::service::Service;

/// What every connection and the server handle share.
pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(crate) routes: Vec<Arc<dyn Service>>,
    pub(crate) formats: Formats,
    pub(crate) filters: ServerFilters,
    /// Calls open on every connection.
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) connections: Mutex<HashMap<u64, Arc<ConnShared>>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) stop_accepting: CancellationToken,
    /// Cancelled when the server closes every connection.
    pub(crate) closed: CancellationToken,
}

impl ServerShared {
    /// The limits a new connection's calls are admitted against.
    pub(crate) fn connection_limits(&self) -> Limits {
        Limits::new(
            self.config.max_concurrent_per_connection,
            self.in_flight.clone(),
            self.config.max_concurrent,
        )
    }

    pub(crate) fn route(&self, service: &str, version: &str) -> Option<&Arc<dyn Service>> {
        self.routes
            .iter()
            .find(|s| s.name() == service && s.version() == version)
    }
}

/// What calls and the server handle share about one connection.
pub(crate) struct ConnShared {
    pub(crate) number: u64,
    pub(crate) peer: Arc<PeerAddr>,
    pub(crate) max_body_len: usize,
    /// Calls running or with answers queued.
    pub(crate) limits: Limits,
    pub(crate) draining: AtomicBool,
    pub(crate) go_away: Notify,
    pub(crate) done: CancellationToken,
    /// Calls (not one-way) running beyond the read step of their request.
    calls: Mutex<CallTable<Arc<CallSignal>>>,
}

impl ConnShared {
    pub(crate) fn new(number: u64, peer: PeerAddr, max_body_len: usize, limits: Limits) -> Self {
        ConnShared {
            number,
            peer: Arc::new(peer),
            max_body_len,
            limits,
            draining: AtomicBool::new(false),
            go_away: Notify::new(),
            done: CancellationToken::new(),
            calls: Mutex::new(CallTable::new()),
        }
    }

    /// Starts draining: new calls are refused with "unavailable" and the client is told.
    pub(crate) fn go_away(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.go_away.notify_one();
        }
    }

    /// Waits until the connection is closed.
    pub(crate) async fn closed(&self) {
        self.done.cancelled().await;
    }

    /// The connection's call table.
    pub(crate) fn calls(&self) -> MutexGuard<'_, CallTable<Arc<CallSignal>>> {
        // The table's methods do not panic; a poisoned lock still holds a consistent table.
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
