//! One server connection: the read loop that routes requests, the in-place/spawned handler
//! runs, stream pumps with credit-based flow control, and teardown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::{FutureExt, StreamExt};
use rpc_codec::{ErrorBody, Frame, FrameCodec, FrameKind, RequestHeadRef, SerializerId, Status};
use rpc_transport::{BoxRead, Connection, PeerAddr};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ServerShared;
use crate::client::STREAM_WINDOW;
use crate::error::ServerError;
use crate::frame_buf::{FrameBuf, empty_frame};
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::id_hash::IdHash;
use crate::service::{Reply, ReplyInner, ServerCall};
use crate::writer::{Outgoing, OutgoingTx, run_writer};

/// Why a connection whose client closed it cleanly ended.
const CLIENT_CLOSED: &str = "client closed the connection";

/// Unwritten answers on one connection beyond which its requests are no longer read.
const READ_PAUSE_BYTES: usize = 4 * 1024 * 1024;

/// How long a closing connection's writer may take to flush what is queued.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The most stream items sent to the writer in one message.
const STREAM_BATCH: usize = 64;
/// The most stream credit a client may hold outstanding; more is ignored.
const MAX_CREDIT: usize = STREAM_WINDOW as usize * 4;

/// What calls and the server handle share about one connection.
pub(crate) struct ConnShared {
    pub(crate) number: u64,
    pub(crate) peer: Arc<PeerAddr>,
    pub(crate) max_body_len: usize,
    /// Calls running or with answers queued; also the writer's coalescing hint.
    in_flight: Arc<AtomicUsize>,
    draining: AtomicBool,
    go_away: Notify,
    idle: Notify,
    done: CancellationToken,
    /// Cancel handles of calls running outside the read loop (dropping one cancels the call).
    calls: DashMap<u64, oneshot::Sender<()>, IdHash>,
    /// Credit of running server streams.
    credits: DashMap<u64, Arc<Semaphore>, IdHash>,
}

impl ConnShared {
    /// Starts draining: new calls are refused with "unavailable" and the client is told.
    pub(crate) fn go_away(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.go_away.notify_one();
        }
    }

    /// Waits until no call is in flight.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until the connection is closed.
    pub(crate) async fn closed(&self) {
        self.done.cancelled().await;
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
            if conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                conn.idle.notify_waiters();
            }
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
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.idle.notify_waiters();
        }
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
        idle: Notify::new(),
        done: CancellationToken::new(),
        calls: DashMap::default(),
        credits: DashMap::default(),
    });
    if let Ok(mut conns) = server.connections.lock() {
        conns.insert(number, conn.clone());
    }
    let mut writer = tokio::spawn(run_writer(rx, write, conn.in_flight.clone()));

    let reason = read_loop(&server, &conn, read, tx).await;
    debug!(connection = number, peer = %conn.peer, %reason, "connection closing");
    if reason == CLIENT_CLOSED {
        // A client that closed its side after sending still gets its answers: calls in flight
        // finish (each within its own deadline, all within the idle timeout) unless the server
        // closes first.
        tokio::select! {
            _ = tokio::time::timeout(server.config.idle_timeout, conn.drained()) => {}
            () = server.closed.cancelled() => {}
        }
    }

    // Stop every call still running; their answers have nowhere to go.
    conn.calls.clear();
    conn.credits.clear();
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

async fn read_loop(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnShared>,
    read: BoxRead,
    tx: OutgoingTx,
) -> String {
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
    let backlog = tx.backlog().clone();
    loop {
        // A peer that does not read its answers is not read from either: once its unwritten
        // answers pass the limit, its requests wait in the socket (TCP pushes back on it) until
        // the answers drain. Nothing it sends can make the server buffer without bound.
        let paused = backlog.bytes() > READ_PAUSE_BYTES;
        tokio::select! {
            biased;
            () = &mut closed => return "server closed".to_owned(),
            () = backlog.wait_below(READ_PAUSE_BYTES / 2), if paused => {}
            () = &mut go_away, if !go_away_sent => {
                go_away_sent = true;
                let mut fb = FrameBuf::with_capacity(16);
                fb.body().extend_from_slice(b"server is draining");
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
                        Some(Err(e)) => Err(format!("malformed frame: {e}")),
                        None => Err(CLIENT_CLOSED.to_owned()),
                    };
                    if let Err(reason) = outcome {
                        let _ = tx.send_many(answers);
                        if reason != CLIENT_CLOSED {
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
                        let reason = format!("nothing read for {:?}", config.idle_timeout);
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
) -> Result<(), String> {
    match frame.kind {
        FrameKind::Request | FrameKind::OneWay => {
            handle_request(server, conn, tx, frame, now, answers);
            Ok(())
        }
        FrameKind::Cancel => {
            // Dropping the sender wakes the call's task, which drops the handler's future.
            conn.calls.remove(&frame.request_id);
            Ok(())
        }
        FrameKind::StreamCredit => {
            let body: [u8; 4] = frame.body[..]
                .try_into()
                .map_err(|_| format!("stream credit body of {} bytes", frame.body.len()))?;
            let credit = u32::from_be_bytes(body) as usize;
            if let Some(sem) = conn.credits.get(&frame.request_id) {
                let room = MAX_CREDIT.saturating_sub(sem.available_permits());
                sem.add_permits(credit.min(room));
            }
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
            Err(format!("client sent a {} frame", frame.kind))
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
) {
    let id = frame.request_id;
    let one_way = frame.kind == FrameKind::OneWay;
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
        return;
    };
    if conn.draining.load(Ordering::Acquire) {
        respond(Status::UNAVAILABLE, "server is draining".to_owned());
        return;
    }
    let format = match server.formats.get(frame.serializer) {
        Ok(format) => format,
        Err(e) => return respond(Status::UNSUPPORTED_SERIALIZER, e.to_string()),
    };
    let (head, args_offset) = match RequestHeadRef::parse(&frame.body) {
        Ok(parsed) => parsed,
        Err(e) => return respond(Status::BAD_REQUEST, format!("request preamble: {e}")),
    };
    let Some(service) = server.route(head.service, head.version) else {
        let message = if head.version.is_empty() {
            format!("no service {:?}", head.service)
        } else {
            format!("no service {:?} version {:?}", head.service, head.version)
        };
        return respond(Status::SERVICE_NOT_FOUND, message);
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
        return respond(
            Status::METHOD_NOT_FOUND,
            format!("service {:?} has no method {:?}", head.service, head.method),
        );
    };
    if let Some(ctx) = &ctx {
        future = match server.filters.apply(ctx, future) {
            Ok(f) => f,
            Err(e) => return respond(e.status, e.message),
        };
    }
    let ser = frame.serializer;
    let job = Job {
        conn: conn.clone(),
        tx: tx.clone(),
        id,
        serializer: ser,
        one_way,
        slot,
    };
    // Poll once in place: cheap handlers answer without a task; only those still pending are
    // spawned.
    let mut future = AssertUnwindSafe(future).catch_unwind();
    match poll_once(&mut future) {
        Poll::Ready(outcome) => {
            if let Some(answer) = job.finish(outcome) {
                answers.push(answer);
            }
        }
        Poll::Pending => {
            let (cancel_tx, cancel_rx) = oneshot::channel();
            conn.calls.insert(id, cancel_tx);
            tokio::spawn(async move {
                let outcome = tokio::select! {
                    outcome = future => Some(outcome),
                    _ = cancel_rx => None,
                    () = sleep_until_opt(deadline) => Some(Ok(Reply::error(ServerError::new(
                        Status::DEADLINE_EXCEEDED,
                        "deadline passed while the handler ran",
                    )))),
                };
                job.conn.calls.remove(&job.id);
                match outcome {
                    Some(outcome) => {
                        let tx = job.tx.clone();
                        if let Some(answer) = job.finish(outcome) {
                            let _ = tx.send(answer);
                        }
                    }
                    None => debug!(id = job.id, "call cancelled"),
                }
            });
        }
    }
}

/// What is needed to deliver one call's answer.
struct Job {
    conn: Arc<ConnShared>,
    tx: OutgoingTx,
    id: u64,
    serializer: SerializerId,
    one_way: bool,
    slot: Slot,
}

impl Job {
    /// The answer to write, if there is one now (streams are pumped by a task of their own).
    fn finish(self, outcome: std::thread::Result<Reply>) -> Option<Outgoing> {
        let reply = match outcome {
            Ok(reply) => reply,
            Err(_) => {
                warn!(id = self.id, "handler panicked");
                Reply::error(ServerError::new(Status::INTERNAL_ERROR, "handler panicked"))
            }
        };
        if self.one_way {
            return None;
        }
        match reply.0 {
            ReplyInner::Frame(frame) => Some(self.answer(frame)),
            ReplyInner::Error(e) => {
                let frame = error_frame(self.id, self.serializer, &e);
                Some(self.answer(frame))
            }
            ReplyInner::Nothing => None,
            ReplyInner::Stream(items) => {
                tokio::spawn(self.pump(items));
                None
            }
        }
    }

    /// The answer, holding the call's slot until it is written.
    fn answer(self, frame: Bytes) -> Outgoing {
        Outgoing {
            frame,
            token: Some(self.slot),
        }
    }

    /// Sends a stream's items as the client grants credit, then its end.
    async fn pump(
        self,
        mut items: futures::stream::BoxStream<'static, Result<Bytes, ServerError>>,
    ) {
        let credit = Arc::new(Semaphore::new(STREAM_WINDOW as usize));
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.conn.credits.insert(self.id, credit.clone());
        self.conn.calls.insert(self.id, cancel_tx);
        let run = async {
            // Items are sent in batches: as many as are ready and covered by credit go to the
            // writer in one message.
            let mut batch = Vec::new();
            loop {
                match credit.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return None,
                }
                let mut end = match items.next().await {
                    Some(Ok(frame)) => {
                        batch.push(Outgoing::frame(frame));
                        None
                    }
                    Some(Err(e)) => Some(Err(e)),
                    None => Some(Ok(())),
                };
                while end.is_none() && batch.len() < STREAM_BATCH {
                    let Ok(permit) = credit.try_acquire() else {
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
                if end.is_some() {
                    return end;
                }
            }
        };
        let end = tokio::select! {
            end = run => end,
            _ = cancel_rx => None,
        };
        self.conn.credits.remove(&self.id);
        self.conn.calls.remove(&self.id);
        let frame = match end {
            None => return debug!(id = self.id, "stream cancelled"),
            Some(Ok(())) => empty_frame(FrameKind::StreamEnd, self.id),
            Some(Err(e)) => end_frame(FrameKind::StreamEnd, self.id, self.serializer, &e),
        };
        let tx = self.tx.clone();
        let _ = tx.send(self.answer(frame));
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
