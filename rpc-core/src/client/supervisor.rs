//! The task that keeps a client's connection up: connects, starts each connection's reader and
//! writer, publishes the connection state, and reconnects with backoff when a connection is lost
//! or its server is draining.

use std::sync::Arc;

use rpc_transport::{Connector, TransportError};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::conn::{Conn, run_reader};
use super::state::{ConnectionState, Shared};
use crate::error::{Cause, RpcError};
use crate::poll_on_wake::PollOnWake;
use crate::reader::Disconnect;
use crate::reader::ReaderConfig;
use crate::writer::run_writer;

/// What a connection's tasks tell the supervisor.
enum ConnEvent {
    Closed { number: u64, reason: String },
    GoAway { number: u64 },
}

/// Keeps one connection up: connects, watches it, and reconnects with backoff when it is lost
/// or the server announces it is draining.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    connector: Arc<dyn Connector>,
    mut first: Option<oneshot::Sender<Result<(), RpcError>>>,
) {
    let config = shared.config.clone();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut attempt = 0u32;
    let mut number = 0u64;
    loop {
        let attempt_result = tokio::select! {
            r = tokio::time::timeout(config.connect_timeout, connector.connect()) => r,
            () = shared.shutdown.cancelled() => break,
        };
        let (error, cause) = match attempt_result {
            Ok(Ok(connection)) => {
                attempt = 0;
                number += 1;
                #[cfg(feature = "metrics")]
                if let Some(m) = shared.metrics.as_ref().filter(|_| number > 1) {
                    m.reconnected();
                }
                let peer = connection.peer().clone();
                let conn = start_connection(&shared, connection, number, events_tx.clone());
                shared.current.store(Some(conn.clone()));
                shared.state.send_replace(ConnectionState::Connected);
                info!(target = %shared.target, %peer, connection = number, "connected");
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                let reason = loop {
                    let event = tokio::select! {
                        e = events_rx.recv() => e,
                        () = shared.shutdown.cancelled() => None,
                    };
                    match event {
                        Some(ConnEvent::Closed { number: n, reason }) if n == number => {
                            break reason;
                        }
                        Some(ConnEvent::GoAway { number: n }) if n == number => {
                            break "server is draining".to_owned();
                        }
                        Some(_) => continue,
                        None => {
                            shared.current.store(None);
                            conn.set_draining();
                            // Dropping the last sender lets the writer finish and close.
                            drop(conn);
                            shared.state.send_replace(ConnectionState::Closed);
                            return;
                        }
                    }
                };
                shared.current.store(None);
                warn!(target = %shared.target, connection = number, %reason, "connection ended; reconnecting");
                shared
                    .state
                    .send_replace(ConnectionState::Reconnecting { attempt: 0, reason });
                continue;
            }
            Ok(Err(e)) => (connect_reason(&e), Cause::new(e)),
            Err(_) => {
                let reason = format!("connect timed out after {:?}", config.connect_timeout);
                (reason.clone(), Cause::message(reason))
            }
        };
        attempt += 1;
        if let Some(tx) = first.take() {
            let _ = tx.send(Err(RpcError::Connect {
                endpoint: shared.target.clone(),
                cause,
            }));
            break;
        }
        let Some(delay) = config.reconnect.delay(attempt, fastrand::f64()) else {
            warn!(target = %shared.target, attempt, %error, "giving up reconnecting");
            shared
                .state
                .send_replace(ConnectionState::Failed { reason: error });
            return;
        };
        debug!(target = %shared.target, attempt, %error, ?delay, "connect failed; retrying");
        shared.state.send_replace(ConnectionState::Reconnecting {
            attempt,
            reason: error,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => break,
        }
    }
    shared.current.store(None);
    shared.state.send_replace(ConnectionState::Closed);
}

fn start_connection(
    shared: &Arc<Shared>,
    connection: rpc_transport::Connection,
    number: u64,
    events: mpsc::UnboundedSender<ConnEvent>,
) -> Arc<Conn> {
    let config = &shared.config;
    let (read, write) = connection.into_split();
    #[cfg(feature = "metrics")]
    let (read, write) = match &shared.metrics {
        Some(m) => m.count_bytes(read, write),
        None => (read, write),
    };
    let (tx, rx) = crate::writer::channel();
    let conn = Arc::new(Conn::new(tx));
    let outstanding = conn.outstanding.clone();
    // Weak: the connection holds the writer's queue, which must close once every call and
    // the client are done with the connection.
    let writer_conn = Arc::downgrade(&conn);
    tokio::spawn(async move {
        if let Err(e) = run_writer(rx, write, outstanding).await {
            // A connection that cannot be written to is lost: its calls fail now, not at their
            // deadlines, and its reader stops, which makes the client reconnect.
            debug!(connection = number, "writer stopped: {e}");
            if let Some(conn) = writer_conn.upgrade() {
                conn.close(Cause::new(Disconnect::WriteFailed(e)));
            }
        }
    });
    // Checked when the client was built.
    let reader_config = ReaderConfig {
        heartbeat_interval: config.heartbeat_interval,
        idle_timeout: config.effective_idle_timeout(),
        max_body_len: config.max_frame_len,
    };
    let reader_conn = conn.clone();
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let go_away_events = events.clone();
        let reader = run_reader(reader_conn.clone(), read, reader_config, move || {
            let _ = go_away_events.send(ConnEvent::GoAway { number });
        });
        // Polled whenever the reader is: only when it woke.
        let shut = PollOnWake::new(shutdown.cancelled());
        let reason = tokio::select! {
            reason = reader => reason,
            () = shut => {
                let reason = "client closed".to_owned();
                reader_conn.close(Cause::message(reason.clone()));
                reason
            }
        };
        let _ = events.send(ConnEvent::Closed { number, reason });
    });
    conn
}

/// Why a connection attempt failed, for "could not connect to {endpoint}: {reason}": the
/// underlying causes (say, "Connection refused"), without repeating the endpoint.
fn connect_reason(e: &TransportError) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}
