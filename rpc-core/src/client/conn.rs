//! One client connection: the pending-call map, the reader task and the stream plumbing.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use rpc_codec::{Frame, FrameKind};
use rpc_transport::BoxRead;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::inbox::{InboxTx, StreamBatcher};
use crate::deadlines::Deadlines;
use crate::error::{Cause, Report, RpcError};
use crate::frame_buf::{FrameChunk, OutFrame, empty_frame};
use crate::id_hash::IdHash;
use crate::reader::{Disconnect, ReadHandler, ReaderConfig, read_frames};
use crate::writer::{Outgoing, OutgoingTx};

const OPEN: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

pub(crate) enum Pending {
    Unary(UnaryCall),
    Stream(InboxTx),
}

/// A unary call waiting for its answer: `None` when its deadline passed first.
pub(crate) struct UnaryCall {
    pub(crate) tx: oneshot::Sender<Option<Frame>>,
    pub(crate) deadline: Instant,
}

/// A connection's shared state: what calls need to send on it and to be completed from it.
pub(crate) struct Conn {
    pub(crate) tx: OutgoingTx,
    pub(crate) pending: DashMap<u64, Pending, IdHash>,
    /// Calls waiting on this connection; the writer's coalescing hint.
    pub(crate) outstanding: Arc<AtomicUsize>,
    /// The room requests are encoded in.
    pub(crate) frames: FrameChunk,
    /// The deadlines of the unary calls in `pending`, for the reader's one timer.
    pub(crate) deadlines: Deadlines,
    status: AtomicU8,
    close_cause: OnceLock<Cause>,
    /// Cancelled when the connection closes, from whichever side noticed first (the reader, the
    /// writer, or the client closing).
    closed: CancellationToken,
}

impl Conn {
    pub(crate) fn new(tx: OutgoingTx) -> Self {
        Conn {
            tx,
            pending: DashMap::default(),
            outstanding: Arc::new(AtomicUsize::new(0)),
            frames: FrameChunk::default(),
            deadlines: Deadlines::default(),
            status: AtomicU8::new(OPEN),
            close_cause: OnceLock::new(),
            closed: CancellationToken::new(),
        }
    }

    /// Whether new calls may be sent on this connection.
    pub(crate) fn is_open(&self) -> bool {
        self.status.load(Ordering::Acquire) == OPEN
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.status.load(Ordering::SeqCst) == CLOSED
    }

    pub(crate) fn set_draining(&self) {
        let _ = self
            .status
            .compare_exchange(OPEN, DRAINING, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(crate) fn lost(&self) -> RpcError {
        RpcError::ConnectionLost(
            self.close_cause
                .get()
                .cloned()
                .unwrap_or_else(|| Cause::message("connection closed")),
        )
    }

    /// Registers a pending call; fails if the connection has already closed (checked after the
    /// insert, so that either this sees the close or the close sees the entry).
    pub(crate) fn register(&self, id: u64, pending: Pending) -> Result<(), RpcError> {
        self.pending.insert(id, pending);
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        if self.is_closed() {
            self.forget(id);
            return Err(self.lost());
        }
        Ok(())
    }

    /// Removes a pending call; true if it was still there.
    pub(crate) fn forget(&self, id: u64) -> bool {
        let removed = self.pending.remove(&id).is_some();
        if removed {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    pub(crate) fn send(&self, frame: OutFrame) -> Result<(), RpcError> {
        self.tx
            .send(Outgoing::frame(frame))
            .map_err(|_| self.lost())
    }

    /// Gives up on a call: forgets it and, if it was still pending, tells the server.
    pub(crate) fn cancel(&self, id: u64) {
        if self.forget(id) {
            let _ = self
                .tx
                .send(Outgoing::frame(empty_frame(FrameKind::Cancel, id)));
        }
    }

    /// Marks the connection closed, fails every pending call and stops its reader. The first
    /// reason given is the one calls report.
    pub(crate) fn close(&self, cause: Cause) {
        let _ = self.close_cause.set(cause);
        self.status.store(CLOSED, Ordering::SeqCst);
        // Dropping the senders wakes every waiting call with "connection lost".
        self.pending.clear();
        self.outstanding.store(0, Ordering::Relaxed);
        self.closed.cancel();
    }

    /// Why the connection closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.close_cause.get().map(|c| Report(c).to_string())
    }
}

/// Reads frames until the connection ends, completing calls; then fails what is left and says
/// why the connection ended (the first reason found, by the reader or the writer).
/// `on_go_away` runs when the server announces it is draining.
pub(crate) async fn run_reader(
    conn: Arc<Conn>,
    io: BoxRead,
    config: ReaderConfig,
    on_go_away: impl Fn(),
) -> String {
    let closed = conn.closed.clone();
    let stop = async {
        closed.cancelled().await;
        Disconnect::Local("the connection was closed")
    };
    let mut handler = Answers {
        conn: &conn,
        on_go_away,
        streams: StreamBatcher::default(),
    };
    let reason = read_frames(io, config, &mut handler, None, Some(&conn.deadlines), stop).await;
    conn.close(Cause::new(reason));
    conn.close_reason()
        .unwrap_or_else(|| "connection closed".to_owned())
}

/// The client's side of reading: answers complete the pending calls.
struct Answers<'a, F> {
    conn: &'a Conn,
    on_go_away: F,
    /// Stream items collected for their stream's consumer.
    streams: StreamBatcher,
}

impl<F: Fn()> ReadHandler for Answers<'_, F> {
    fn frame(&mut self, frame: Frame, _now: Instant) -> Result<(), Disconnect> {
        if frame.kind == FrameKind::StreamItem {
            return stream_item(self.conn, &mut self.streams, frame);
        }
        // Whatever comes next (a stream's end, say) comes after the items before it.
        self.streams.flush()?;
        if matches!(frame.kind, FrameKind::StreamEnd | FrameKind::Response) {
            self.streams.forget(frame.request_id);
        }
        dispatch(self.conn, frame, &self.on_go_away)
    }

    fn burst_done(&mut self) -> Result<(), Disconnect> {
        self.streams.flush()?;
        // After a go-away, the connection is closed from this side once its last call is
        // answered: the server then knows every request it will ever get has arrived.
        if !self.conn.is_open() && self.conn.pending.is_empty() {
            return Err(Disconnect::Drained);
        }
        Ok(())
    }

    fn ping(&mut self) {
        let _ = self
            .conn
            .tx
            .send(Outgoing::frame(empty_frame(FrameKind::Ping, 0)));
    }

    fn deadlines_passed(&mut self, now: Instant) {
        expire(self.conn, now);
    }
}

/// Fails the unary calls whose deadline has passed (the server is told with a Cancel, as when a
/// caller gives up) and notes the earliest deadline of those still waiting.
fn expire(conn: &Conn, now: Instant) {
    conn.deadlines.take();
    let mut passed = Vec::new();
    let mut earliest: Option<Instant> = None;
    for entry in conn.pending.iter() {
        if let Pending::Unary(call) = entry.value() {
            if call.deadline <= now {
                passed.push(*entry.key());
            } else if earliest.is_none_or(|e| call.deadline < e) {
                earliest = Some(call.deadline);
            }
        }
    }
    if let Some(earliest) = earliest {
        conn.deadlines.add(earliest);
    }
    for id in passed {
        if let Some((_, Pending::Unary(call))) = conn.pending.remove(&id) {
            conn.outstanding.fetch_sub(1, Ordering::Relaxed);
            let _ = call.tx.send(None);
            let _ = conn
                .tx
                .send(Outgoing::frame(empty_frame(FrameKind::Cancel, id)));
        }
    }
}

/// Collects a stream item for its stream; an item for a unary call breaks the protocol.
fn stream_item(conn: &Conn, streams: &mut StreamBatcher, frame: Frame) -> Result<(), Disconnect> {
    let id = frame.request_id;
    let mut unary = false;
    streams.push(id, frame.body, || match conn.pending.get(&id).as_deref() {
        Some(Pending::Stream(tx)) => Some(tx.inbox().clone()),
        Some(Pending::Unary(_)) => {
            unary = true;
            None
        }
        None => None,
    })?;
    if unary {
        return Err(Disconnect::Protocol(format!(
            "stream item for unary call {id}"
        )));
    }
    Ok(())
}

fn dispatch(conn: &Conn, frame: Frame, on_go_away: &impl Fn()) -> Result<(), Disconnect> {
    match frame.kind {
        FrameKind::Response => {
            if let Some((_, pending)) = conn.pending.remove(&frame.request_id) {
                conn.outstanding.fetch_sub(1, Ordering::Relaxed);
                match pending {
                    Pending::Unary(call) => {
                        let _ = call.tx.send(Some(frame));
                    }
                    // A stream that fails before its first item is answered with a response.
                    Pending::Stream(tx) => tx.end(frame.status, frame.body),
                }
            }
            // Otherwise the caller gave up (deadline, cancel) before the answer came.
        }
        // Handled by `stream_item`.
        FrameKind::StreamItem => {}
        FrameKind::StreamEnd => {
            if let Some((_, pending)) = conn.pending.remove(&frame.request_id) {
                conn.outstanding.fetch_sub(1, Ordering::Relaxed);
                if let Pending::Stream(tx) = pending {
                    tx.end(frame.status, frame.body);
                }
            }
        }
        FrameKind::Ping => {
            let _ = conn.tx.send(Outgoing::frame(empty_frame(
                FrameKind::Pong,
                frame.request_id,
            )));
        }
        FrameKind::Pong => {}
        FrameKind::GoAway => {
            conn.set_draining();
            on_go_away();
            if conn.pending.is_empty() {
                return Err(Disconnect::Drained);
            }
        }
        FrameKind::Request | FrameKind::OneWay | FrameKind::Cancel | FrameKind::StreamCredit => {
            return Err(Disconnect::Protocol(format!(
                "server sent a {} frame",
                frame.kind
            )));
        }
    }
    Ok(())
}
