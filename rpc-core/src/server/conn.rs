//! One server connection: the read loop that routes requests, the in-place/spawned handler
//! runs, stream pumps with credit-based flow control, and teardown.
//!
//! Every call that outlives the read step of its request is in the connection's
//! [`CallTable`] until its handler and its stream have ended; Cancel and StreamCredit frames go
//! through the table, whatever the order in which they arrive.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rpc_codec::{
    ErrorBody, Frame, FrameCodec, FrameKind, GoAway, RequestHeadRef, SerializerId, Status,
    StreamCredit,
};
use rpc_transport::{BoxRead, Connection, PeerAddr};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ServerShared;
use super::calls::{CallKey, CallTable, OpenError};
use super::control::CallSignal;
use crate::error::ServerError;
use crate::frame_buf::{FrameBuf, empty_frame, empty_frame_with};
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::service::{Reply, ReplyInner, ServerCall};
use crate::writer::{Outgoing, OutgoingTx, run_writer};

/// Unwritten answers on one connection beyond which its requests are no longer read.
const READ_PAUSE_BYTES: usize = 4 * 1024 * 1024;

/// How long a closing connection's writer may take to flush what is queued.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The most stream items sent to the writer in one message.
const STREAM_BATCH: usize = 64;

/// What calls and the server handle share about one connection.
pub(crate) struct ConnShared {
    pub(crate) number: u64,
    pub(crate) peer: Arc<PeerAddr>,
    pub(crate) max_body_len: usize,
    /// Calls running or with answers queued; also the writer's coalescing hint.
    in_flight: Arc<AtomicUsize>,
    draining: AtomicBool,
    go_away: Notify,
    done: CancellationToken,
    /// Calls (not one-way) running beyond the read step of their request.
    calls: Mutex<CallTable<Arc<CallSignal>>>,
}

impl ConnShared {
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

    fn calls(&self) -> MutexGuard<'_, CallTable<Arc<CallSignal>>> {
        // The table's methods do not panic; a poisoned lock still holds a consistent table.
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One call's place in the concurrency limits; released when its answer has been written.
pub(crate) struct Slot {
    server: Arc<ServerShared>,
    conn: Arc<ConnShared>,
}

impl Slot {
    fn acquire(server: &Arc<ServerShared>, conn: &Arc<ConnShared>) -> Option<Slot> {
        let limits = &server.config;
        if conn.in_flight.fetch_add(1, Ordering::AcqRel) >= limits.max_concurrent_per_connection {
            conn.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if server.in_flight.fetch_add(1, Ordering::AcqRel) >= limits.max_concurrent {
            server.in_flight.fetch_sub(1, Ordering::AcqRel);
            conn.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot {
            server: server.clone(),
            conn: conn.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn serve_connection(
    server: Arc<ServerShared>,
    connection: Connection,
    number: u64,
) {
    let peer = Arc::new(connection.peer().clone());
    let (read, write) = connection.into_split();
    let (tx, rx) = crate::writer::channel();
    let conn = Arc::new(ConnShared {
        number,
        peer,
        max_body_len: server.config.max_frame_len,
        in_flight: Arc::new(AtomicUsize::new(0)),
        draining: AtomicBool::new(false),
        go_away: Notify::new(),
        done: CancellationToken::new(),
        calls: Mutex::new(CallTable::new()),
    });
    if let Ok(mut conns) = server.connections.lock() {
        conns.insert(number, conn.clone());
    }
    let (write_failed_tx, write_failed) = oneshot::channel();
    let in_flight = conn.in_flight.clone();
    let mut writer = tokio::spawn(async move {
        if let Err(e) = run_writer(rx, write, in_flight).await {
            let _ = write_failed_tx.send(e);
        }
    });

    let reason = read_loop(&server, &conn, read, tx, write_failed).await;
    match &reason {
        Closed::ByClient => {
            debug!(connection = number, peer = %conn.peer, "client closed the connection")
        }
        reason => debug!(connection = number, peer = %conn.peer, %reason, "connection closing"),
    }

    // Stop every call still running: the client is gone, or the connection is being closed.
    // One-way calls answer nothing and run on.
    let cancelled = conn.calls().close();
    if cancelled > 0 {
        debug!(
            connection = number,
            cancelled, "calls stopped with their connection"
        );
    }
    // The writer ends once every sender (held by the read loop and by running calls) is gone.
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    if let Ok(mut conns) = server.connections.lock() {
        conns.remove(&number);
    }
    conn.done.cancel();
}

/// Why a connection's read loop ended.
#[derive(Debug)]
enum Closed {
    /// The client closed its side (EOF between frames).
    ByClient,
    /// The server is closing every connection.
    ByServer,
    /// Nothing was read for the idle timeout.
    Idle(Duration),
    /// The client sent something that breaks the protocol.
    Protocol(String),
    /// Writing to the connection failed.
    WriteFailed(std::io::Error),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::ByClient => f.write_str("client closed the connection"),
            Closed::ByServer => f.write_str("server closed"),
            Closed::Idle(after) => write!(f, "nothing read for {after:?}"),
            Closed::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            Closed::WriteFailed(e) => write!(f, "write failed: {e}"),
        }
    }
}

async fn read_loop(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnShared>,
    read: BoxRead,
    tx: OutgoingTx,
    mut write_failed: oneshot::Receiver<std::io::Error>,
) -> Closed {
    let config = &server.config;
    let mut frames = FramedRead::with_capacity(
        read,
        FrameCodec::with_max_body_len(config.max_frame_len),
        64 * 1024,
    );
    let mut heartbeat = Heartbeat::new(
        config.heartbeat_interval,
        config.idle_timeout,
        Instant::now(),
    );
    let sleep = tokio::time::sleep_until(heartbeat.next_wakeup());
    let closed = server.closed.cancelled();
    let go_away = conn.go_away.notified();
    tokio::pin!(sleep, closed, go_away);
    let mut go_away_sent = false;
    let mut writer_alive = true;
    let backlog = tx.backlog().clone();
    loop {
        // A peer that does not read its answers is not read from either: once its unwritten
        // answers pass the limit, its requests wait in the socket (TCP pushes back on it) until
        // the answers drain. Nothing it sends can make the server buffer without bound.
        let paused = backlog.bytes() > READ_PAUSE_BYTES;
        tokio::select! {
            biased;
            () = &mut closed => return Closed::ByServer,
            failed = &mut write_failed, if writer_alive => match failed {
                Ok(e) => {
                    warn!(connection = conn.number, peer = %conn.peer, error = %e, "write failed; closing connection");
                    return Closed::WriteFailed(e);
                }
                // The writer ended without failing: every sender is gone, which cannot happen
                // while this loop holds one.
                Err(_) => writer_alive = false,
            },
            () = backlog.wait_below(READ_PAUSE_BYTES / 2), if paused => {}
            () = &mut go_away, if !go_away_sent => {
                go_away_sent = true;
                let mut fb = FrameBuf::with_capacity(32);
                GoAway { reason: "server is draining".to_owned() }.put(fb.body());
                if let Ok(frame) = fb.finish(FrameKind::GoAway, SerializerId::NONE, Status::OK, 0, usize::MAX) {
                    let _ = tx.send(Outgoing::frame(frame));
                }
            }
            frame = frames.next(), if !paused => {
                // Everything one read brought in is handled before the answers go to the writer
                // in one message: one channel operation and one wake-up per burst, not per call.
                let now = Instant::now();
                heartbeat.on_read(now);
                let mut answers = Vec::new();
                let mut next = Some(frame);
                while let Some(frame) = next.take() {
                    let outcome = match frame {
                        Some(Ok(frame)) => handle_frame(server, conn, &tx, frame, now, &mut answers),
                        Some(Err(e)) => Err(Closed::Protocol(format!("malformed frame: {e}"))),
                        None => Err(Closed::ByClient),
                    };
                    if let Err(reason) = outcome {
                        let _ = tx.send_many(answers);
                        if !matches!(reason, Closed::ByClient) {
                            warn!(connection = conn.number, peer = %conn.peer, %reason, "closing connection");
                        }
                        return reason;
                    }
                    next = frames.next().now_or_never();
                }
                let _ = tx.send_many(answers);
            }
            () = &mut sleep => {
                match heartbeat.poll(Instant::now()) {
                    HeartbeatAction::Wait => {}
                    HeartbeatAction::Ping => {
                        let _ = tx.send(Outgoing::frame(empty_frame(FrameKind::Ping, 0)));
                    }
                    HeartbeatAction::Dead => {
                        let reason = Closed::Idle(config.idle_timeout);
                        warn!(connection = conn.number, peer = %conn.peer, %reason, "closing connection");
                        return reason;
                    }
                }
                sleep.as_mut().reset(heartbeat.next_wakeup());
            }
        }
    }
}

/// Handles one frame; answers ready at once go to `answers`.
fn handle_frame(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnShared>,
    tx: &OutgoingTx,
    frame: Frame,
    now: Instant,
    answers: &mut Vec<Outgoing>,
) -> Result<(), Closed> {
    match frame.kind {
        FrameKind::Request | FrameKind::OneWay => {
            handle_request(server, conn, tx, frame, now, answers)
        }
        FrameKind::Cancel => {
            // A call that already ended is not an error: its answer and the Cancel crossed.
            conn.calls().cancel(frame.request_id);
            Ok(())
        }
        FrameKind::StreamCredit => {
            let StreamCredit(credit) =
                StreamCredit::parse(&frame.body).map_err(|e| Closed::Protocol(e.to_string()))?;
            conn.calls().credit(frame.request_id, credit);
            Ok(())
        }
        FrameKind::Ping => {
            let _ = tx.send(Outgoing::frame(empty_frame(
                FrameKind::Pong,
                frame.request_id,
            )));
            Ok(())
        }
        FrameKind::Pong => Ok(()),
        FrameKind::Response | FrameKind::StreamItem | FrameKind::StreamEnd | FrameKind::GoAway => {
            Err(Closed::Protocol(format!(
                "client sent a {} frame",
                frame.kind
            )))
        }
    }
}

fn handle_request(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnShared>,
    tx: &OutgoingTx,
    frame: Frame,
    now: Instant,
    answers: &mut Vec<Outgoing>,
) -> Result<(), Closed> {
    let id = frame.request_id;
    let one_way = frame.kind == FrameKind::OneWay;
    // A request id names one open call. One-way calls are never answered or cancelled, so
    // their ids name nothing and may repeat.
    if !one_way && conn.calls().is_open(id) {
        return Err(Closed::Protocol(format!(
            "request id {id} is already in use by an open call"
        )));
    }
    let serializer = frame.serializer;
    let mut respond = |status: Status, message: String| {
        if one_way {
            debug!(id, %status, %message, "one-way call failed");
        } else {
            answers.push(Outgoing::frame(error_frame(
                id,
                serializer,
                &ServerError::new(status, message),
            )));
        }
    };
    let Some(slot) = Slot::acquire(server, conn) else {
        respond(Status::SERVER_BUSY, "too many calls in flight".to_owned());
        return Ok(());
    };
    if conn.draining.load(Ordering::Acquire) {
        respond(Status::UNAVAILABLE, "server is draining".to_owned());
        return Ok(());
    }
    let format = match server.formats.get(frame.serializer) {
        Ok(format) => format,
        Err(e) => {
            respond(Status::UNSUPPORTED_SERIALIZER, e.to_string());
            return Ok(());
        }
    };
    let (head, args_offset) = match RequestHeadRef::parse(&frame.body) {
        Ok(parsed) => parsed,
        Err(e) => {
            respond(Status::BAD_REQUEST, format!("request preamble: {e}"));
            return Ok(());
        }
    };
    let Some(service) = server.route(head.service, head.version) else {
        let message = if head.version.is_empty() {
            format!("no service {:?}", head.service)
        } else {
            format!("no service {:?} version {:?}", head.service, head.version)
        };
        respond(Status::SERVICE_NOT_FOUND, message);
        return Ok(());
    };
    // Deadlines count from when the burst that carried the request was read.
    let deadline = head.deadline.map(|budget| now + budget);
    let call = ServerCall {
        request_id: id,
        kind: frame.kind,
        format,
        body: frame.body.clone(),
        args_offset,
        deadline,
        conn: conn.clone(),
    };
    let ctx = (!server.filters.is_empty()).then(|| call.context());
    let Some(mut future) = service.call(head.method, call) else {
        respond(
            Status::METHOD_NOT_FOUND,
            format!("service {:?} has no method {:?}", head.service, head.method),
        );
        return Ok(());
    };
    if let Some(ctx) = &ctx {
        future = match server.filters.apply(ctx, future) {
            Ok(f) => f,
            Err(e) => {
                respond(e.status, e.message);
                return Ok(());
            }
        };
    }
    // Poll once in place: cheap handlers answer without a task; only those still pending, and
    // streams, get one.
    let mut future = AssertUnwindSafe(future).catch_unwind();
    let ready = match poll_once(&mut future) {
        Poll::Ready(outcome) => Some(outcome),
        Poll::Pending => None,
    };
    if one_way {
        if ready.is_none() {
            tokio::spawn(run_one_way(future, deadline, server.closed.clone(), slot));
        }
        return Ok(());
    }
    let job = Job {
        tx: tx.clone(),
        id,
        serializer,
        slot,
    };
    let reply = match ready {
        Some(outcome) => match job.reply(outcome) {
            ReplyInner::Stream(items) => Start::Stream(items),
            inner => {
                if let Some(frame) = job.answer_frame(inner) {
                    answers.push(job.answer(frame));
                }
                return Ok(());
            }
        },
        None => Start::Handler(future),
    };
    // The call outlives this read step: from here on it is in the table, so a Cancel or a
    // StreamCredit read right after this request reaches it.
    let signal = CallSignal::new();
    let key = match conn.calls().open(id, signal.clone()) {
        Ok(key) => key,
        // Checked above, and nothing else opens calls on this connection meanwhile.
        Err(OpenError::Duplicate) => {
            return Err(Closed::Protocol(format!(
                "request id {id} is already in use by an open call"
            )));
        }
        Err(OpenError::Closed) => return Ok(()),
    };
    tokio::spawn(job.run(conn.clone(), key, signal, reply, deadline));
    Ok(())
}

/// Runs a one-way call that did not finish in place: nobody waits for it, so only its own
/// deadline (if the caller gave one) and the server closing stop it.
async fn run_one_way<F>(future: F, deadline: Option<Instant>, closed: CancellationToken, slot: Slot)
where
    F: Future<Output = std::thread::Result<Reply>>,
{
    tokio::select! {
        outcome = future => {
            if outcome.is_err() {
                warn!("one-way handler panicked");
            }
        }
        () = sleep_until_opt(deadline) => debug!("one-way call stopped at its deadline"),
        () = closed.cancelled() => {}
    }
    drop(slot);
}

/// Where a spawned call starts.
enum Start<F> {
    /// Its handler is still running.
    Handler(F),
    /// Its handler returned a stream.
    Stream(ItemStream),
}

type ItemStream = futures::stream::BoxStream<'static, Result<Bytes, ServerError>>;

/// What is needed to deliver one call's answer.
struct Job {
    tx: OutgoingTx,
    id: u64,
    serializer: SerializerId,
    slot: Slot,
}

impl Job {
    /// The handler's reply; a panic becomes an internal error.
    fn reply(&self, outcome: std::thread::Result<Reply>) -> ReplyInner {
        match outcome {
            Ok(reply) => reply.0,
            Err(_) => {
                warn!(id = self.id, "handler panicked");
                ReplyInner::Error(ServerError::new(Status::INTERNAL_ERROR, "handler panicked"))
            }
        }
    }

    /// The frame answering a reply that is not a stream, if there is one.
    fn answer_frame(&self, reply: ReplyInner) -> Option<Bytes> {
        match reply {
            ReplyInner::Frame(frame) => Some(frame),
            ReplyInner::Error(e) => Some(error_frame(self.id, self.serializer, &e)),
            ReplyInner::Nothing | ReplyInner::Stream(_) => None,
        }
    }

    /// The answer, holding the call's slot until it is written.
    fn answer(self, frame: Bytes) -> Outgoing {
        Outgoing {
            frame,
            token: Some(self.slot),
        }
    }

    /// Runs a call from `start` until it answers, is cancelled or passes its deadline, which
    /// bounds the whole call: the handler and every item of its stream.
    async fn run<F>(
        self,
        conn: Arc<ConnShared>,
        key: CallKey,
        signal: Arc<CallSignal>,
        start: Start<F>,
        deadline: Option<Instant>,
    ) where
        F: Future<Output = std::thread::Result<Reply>>,
    {
        let streaming = AtomicBool::new(false);
        let work = async {
            let items = match start {
                Start::Handler(future) => match self.reply(future.await) {
                    ReplyInner::Stream(items) => items,
                    inner => return self.answer_frame(inner),
                },
                Start::Stream(items) => items,
            };
            streaming.store(true, Ordering::Relaxed);
            self.pump(&signal, items).await
        };
        enum Outcome {
            Done(Option<Bytes>),
            Cancelled,
            DeadlinePassed,
        }
        let outcome = tokio::select! {
            biased;
            () = signal.cancelled() => Outcome::Cancelled,
            end = work => Outcome::Done(end),
            () = sleep_until_opt(deadline) => Outcome::DeadlinePassed,
        };
        // Out of the table before the last frame is queued: once the client has read it, it may
        // reuse the id.
        conn.calls().end(key);
        let frame = match outcome {
            Outcome::Done(frame) => frame,
            Outcome::Cancelled => {
                debug!(id = self.id, "call cancelled");
                None
            }
            Outcome::DeadlinePassed => {
                let kind = if streaming.load(Ordering::Relaxed) {
                    FrameKind::StreamEnd
                } else {
                    FrameKind::Response
                };
                let error = ServerError::new(
                    Status::DEADLINE_EXCEEDED,
                    "the call's deadline passed before it ended",
                );
                Some(end_frame(kind, self.id, self.serializer, &error))
            }
        };
        if let Some(frame) = frame {
            let tx = self.tx.clone();
            let _ = tx.send(self.answer(frame));
        }
    }

    /// Sends a stream's items as the client grants credit; returns its end frame, or nothing if
    /// the connection is gone or the call was cancelled.
    ///
    /// An item is asked of the stream before its credit is taken, so the end of a stream never
    /// waits for credit; at most one item produced beyond the credit waits for it.
    async fn pump(&self, signal: &CallSignal, mut items: ItemStream) -> Option<Bytes> {
        // Items are sent in batches: as many as are ready and covered by credit go to the writer
        // in one message.
        let mut batch = Vec::new();
        loop {
            let mut end = match items.next().await {
                Some(Ok(frame)) => {
                    if !signal.acquire().await {
                        return None;
                    }
                    batch.push(Outgoing::frame(frame));
                    None
                }
                Some(Err(e)) => Some(Err(e)),
                None => Some(Ok(())),
            };
            while end.is_none() && batch.len() < STREAM_BATCH {
                let Some(permit) = signal.try_acquire() else {
                    break;
                };
                match items.next().now_or_never() {
                    Some(Some(Ok(frame))) => {
                        permit.forget();
                        batch.push(Outgoing::frame(frame));
                    }
                    Some(Some(Err(e))) => end = Some(Err(e)),
                    Some(None) => end = Some(Ok(())),
                    // Not ready: the permit goes back (dropping it returns it).
                    None => break,
                }
            }
            if self.tx.send_many(std::mem::take(&mut batch)).is_err() {
                return None;
            }
            match end {
                None => {}
                Some(Ok(())) => {
                    return Some(empty_frame_with(
                        FrameKind::StreamEnd,
                        self.serializer,
                        self.id,
                    ));
                }
                Some(Err(e)) => {
                    return Some(end_frame(
                        FrameKind::StreamEnd,
                        self.id,
                        self.serializer,
                        &e,
                    ));
                }
            }
        }
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(future).poll(&mut cx)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn error_frame(id: u64, serializer: SerializerId, error: &ServerError) -> Bytes {
    end_frame(FrameKind::Response, id, serializer, error)
}

fn end_frame(kind: FrameKind, id: u64, serializer: SerializerId, error: &ServerError) -> Bytes {
    let mut fb = FrameBuf::with_capacity(2 + error.message.len() + error.detail.len());
    ErrorBody {
        message: error.message.clone(),
        detail: error.detail.clone(),
    }
    .put(fb.body());
    // An error body is bounded by its message (65,535 bytes) and the application's detail; a
    // detail over the limit is dropped rather than sending a frame the peer would refuse.
    match fb.finish(kind, serializer, error.status, id, u32::MAX as usize) {
        Ok(frame) => frame,
        Err(_) => {
            let mut fb = FrameBuf::with_capacity(64);
            ErrorBody::new(error.message.clone()).put(fb.body());
            fb.finish(kind, serializer, error.status, id, u32::MAX as usize)
                .unwrap_or_else(|_| empty_frame(kind, id))
        }
    }
}
