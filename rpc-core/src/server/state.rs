//! What the server's parts share: the server's routes, settings and connections, and each
//! connection's state (its call table, limits and draining flag).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rpc_codec::{Formats, FrameKind, GoAway, SerializerId, Status};
use rpc_transport::PeerAddr;
use tokio_util::sync::CancellationToken;

use super::calls::CallTable;
use super::config::ServerConfig;
use super::control::CallSignal;
use super::limits::{Limits, Slot};
use super::warn_limit::WarnLimit;
use crate::deadlines::Deadlines;
use crate::filter::ServerFilters;
use crate::frame_buf::{FrameBuf, FrameChunk};
use crate::service::Service;
use crate::writer::{Backlog, Outgoing, OutgoingTx};

/// What every connection and the server handle share.
pub(crate) struct ServerShared {
    /// Connections closed for a fault are logged, but not a flood of them.
    pub(crate) warnings: Mutex<WarnLimit>,
    /// Unwritten answers of every connection, against `max_server_buffer`.
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) config: ServerConfig,
    pub(crate) routes: Vec<Arc<dyn Service>>,
    pub(crate) formats: Formats,
    pub(crate) filters: ServerFilters,
    /// Calls, connections and bytes, when metrics are on.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<Arc<crate::metrics::ServerCallMetrics>>,
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
    /// The room answers are encoded in.
    pub(crate) frames: Arc<FrameChunk>,
    /// The deadlines of the calls in `calls`, for the reader's one timer.
    pub(crate) deadlines: Deadlines,
    /// Calls running or with answers queued.
    pub(crate) limits: Limits,
    pub(crate) draining: AtomicBool,
    /// The writer's queue, for the GoAway frame; emptied when the connection closes, so that
    /// the writer can finish.
    go_away_tx: Mutex<Option<OutgoingTx<Slot>>>,
    /// The connection's unwritten answers (shared with its writer's queue).
    backlog: Arc<Backlog>,
    /// Told to close because the server is over its memory budget.
    shed: CancellationToken,
    pub(crate) done: CancellationToken,
    /// Calls (not one-way) running beyond the read step of their request.
    calls: Mutex<CallTable<Arc<CallSignal>>>,
}

impl ConnShared {
    pub(crate) fn new(
        number: u64,
        peer: PeerAddr,
        max_body_len: usize,
        limits: Limits,
        tx: OutgoingTx<Slot>,
    ) -> Self {
        ConnShared {
            number,
            peer: Arc::new(peer),
            max_body_len,
            frames: Arc::default(),
            deadlines: Deadlines::default(),
            limits,
            draining: AtomicBool::new(false),
            backlog: tx.backlog().clone(),
            shed: CancellationToken::new(),
            go_away_tx: Mutex::new(Some(tx)),
            done: CancellationToken::new(),
            calls: Mutex::new(CallTable::new()),
        }
    }

    /// Starts draining: new calls are refused with "unavailable" and the client is told.
    pub(crate) fn go_away(&self) {
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        let tx = self.go_away_tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            let mut fb = FrameBuf::with_capacity(32);
            GoAway {
                reason: "server is draining".to_owned(),
            }
            .put(fb.body());
            if let Ok(frame) = fb.finish(
                FrameKind::GoAway,
                SerializerId::NONE,
                Status::OK,
                0,
                usize::MAX,
            ) {
                let _ = tx.send(Outgoing::frame(frame));
            }
        }
    }

    /// The connection is closing: every call still open is cancelled, none opens any more,
    /// and nothing more is queued from here.
    pub(crate) fn close(&self) {
        self.go_away_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let cancelled = self.calls().close();
        if cancelled > 0 {
            tracing::debug!(
                connection = self.number,
                cancelled,
                "calls stopped with their connection"
            );
        }
    }

    /// The connection's unwritten answers.
    pub(crate) fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Tells the connection to close: the server is over its memory budget.
    pub(crate) fn shed(&self) {
        self.shed.cancel();
    }

    /// Resolves once the connection was told to close.
    pub(crate) async fn shed_requested(&self) {
        self.shed.cancelled().await;
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
