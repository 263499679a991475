//! One server connection: the read loop that routes requests, the in-place/spawned handler
//! runs, stream pumps with credit-based flow control, and teardown.
//!
//! Every call that outlives the read step of its request is in the connection's call table
//! until its handler and its stream have ended; Cancel and StreamCredit frames go
//! through the table, whatever the order in which they arrive.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use rpc_codec::{
    Frame, FrameKind, RequestHeadRef, STREAM_WINDOW_KEY, Status, StreamCredit, parse_stream_window,
};
use rpc_transport::Connection;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::call::{Job, Start, error_frame, run_one_way};
use super::calls::OpenError;
use super::control::CallSignal;
use super::limits::Slot;
use super::state::{ConnShared, ServerShared};
use super::warn_limit::Verdict;
use crate::error::{Report, ServerError};
use crate::frame_buf::empty_frame;
use crate::reader::{Disconnect, ReadHandler, ReadPause, ReaderConfig, read_frames};
use crate::service::{ReplyInner, ServerCall};
use crate::writer::{Backlog, Outgoing, OutgoingTx, run_writer};

/// How long a closing connection's writer may take to flush what is queued.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) async fn serve_connection(
    server: Arc<ServerShared>,
    connection: Connection,
    number: u64,
) {
    let peer = connection.peer().clone();
    let (read, write) = connection.into_split();
    #[cfg(feature = "metrics")]
    let (open, (read, write)) = match &server.metrics {
        Some(m) => (Some(m.connection()), m.count_bytes(read, write)),
        None => (None, (read, write)),
    };
    let (tx, rx) = crate::writer::channel_with(Backlog::new(
        server.config.max_connection_buffer,
        Some(server.backlog.clone()),
    ));
    let conn = Arc::new(ConnShared::new(
        number,
        peer,
        server.config.max_frame_len,
        server.connection_limits(),
        tx.clone(),
    ));
    if let Ok(mut conns) = server.connections.lock() {
        conns.insert(number, conn.clone());
    }
    let (write_failed_tx, write_failed) = oneshot::channel();
    let in_flight = conn.limits.connection_count().clone();
    let mut writer = tokio::spawn(async move {
        if let Err(e) = run_writer(rx, write, in_flight).await {
            let _ = write_failed_tx.send(e);
        }
    });

    let config = ReaderConfig {
        heartbeat_interval: server.config.heartbeat_interval,
        idle_timeout: server.config.effective_idle_timeout(),
        max_body_len: server.config.max_frame_len,
    };
    let pause = ReadPause {
        backlog: tx.backlog(),
        limit: server.config.connection_buffer,
        server: &server.backlog,
        server_limit: server.config.max_server_buffer,
    };
    let stop = async {
        tokio::select! {
            () = server.closed.cancelled() => Disconnect::Local("the server closed"),
            Ok(e) = write_failed => Disconnect::WriteFailed(e),
            () = conn.backlog().over_cap() => {
                Disconnect::Local("the client does not read its answers")
            }
            () = conn.shed_requested() => Disconnect::Local(
                "the server is over its memory budget and this connection held the most",
            ),
        }
    };
    let mut handler = Requests {
        server: &server,
        conn: &conn,
        tx: tx.clone(),
        answers: Vec::new(),
        held_bytes: 0,
    };
    let reason = read_frames(
        read,
        config,
        &mut handler,
        Some(pause),
        Some(&conn.deadlines),
        stop,
    )
    .await;
    drop(handler);
    drop(tx);
    let report = Report(&reason).to_string();
    if reason.is_orderly() {
        debug!(connection = number, peer = %conn.peer, reason = %report, "connection closed");
    } else {
        let verdict = server
            .warnings
            .lock()
            .map(|mut limit| limit.check(Instant::now()))
            .unwrap_or(Verdict::Log { held_back: 0 });
        match verdict {
            Verdict::Log { held_back: 0 } => {
                warn!(connection = number, peer = %conn.peer, reason = %report, "closing connection");
            }
            Verdict::Log { held_back } => warn!(
                connection = number,
                peer = %conn.peer,
                reason = %report,
                held_back,
                "closing connection (and {held_back} more closed for a fault, not logged)"
            ),
            Verdict::HoldBack => {
                debug!(connection = number, peer = %conn.peer, reason = %report, "closing connection");
            }
        }
    }

    // Stop every call still running: the client is gone, or the connection is being closed.
    // One-way calls answer nothing and run on.
    conn.close();
    // The writer ends once every sender (held by running calls) is gone.
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
        let _ = writer.await;
    }
    // What was never written is gone with the writer's queue.
    conn.backlog().discard();
    if let Ok(mut conns) = server.connections.lock() {
        conns.remove(&number);
    }
    #[cfg(feature = "metrics")]
    drop(open);
    conn.done.cancel();
}

/// Answers ready at once are handed to the writer together at the end of a burst, or as soon as
/// they add up to this many bytes: until then the read pause does not count them, so a burst of
/// requests with large answers could otherwise pile up any amount of them.
const MAX_HELD_ANSWERS: usize = 64 * 1024;

/// The server's side of reading: requests start calls, control frames reach them through the
/// call table, and the answers ready at the end of a burst go to the writer together.
struct Requests<'a> {
    server: &'a Arc<ServerShared>,
    conn: &'a Arc<ConnShared>,
    tx: OutgoingTx<Slot>,
    answers: Vec<Outgoing<Slot>>,
    /// The bytes of `answers`.
    held_bytes: usize,
}

impl Requests<'_> {
    fn hand_over(&mut self) {
        // A lone answer goes by itself and the vector keeps its room for the next burst; many
        // go together, the vector with them.
        if self.answers.len() <= 1 {
            if let Some(answer) = self.answers.pop() {
                let _ = self.tx.send(answer);
            }
            return;
        }
        let _ = self.tx.send_many(std::mem::take(&mut self.answers));
    }
}

impl ReadHandler for Requests<'_> {
    fn frame(&mut self, frame: Frame, now: Instant) -> Result<(), Disconnect> {
        let held = self.answers.len();
        let handled = handle_frame(
            self.server,
            self.conn,
            &self.tx,
            frame,
            now,
            &mut self.answers,
        );
        // The frames are counted as they are added, so a burst sums each answer once.
        let added: usize = self.answers[held..].iter().map(|a| a.frame.len()).sum();
        self.held_bytes += added;
        if self.held_bytes >= MAX_HELD_ANSWERS {
            self.held_bytes = 0;
            self.hand_over();
        }
        handled
    }

    fn burst_done(&mut self) -> Result<(), Disconnect> {
        // One channel operation and one wake-up of the writer per burst, not per call.
        self.held_bytes = 0;
        self.hand_over();
        Ok(())
    }

    fn ping(&mut self) {
        let _ = self
            .tx
            .send(Outgoing::frame(empty_frame(FrameKind::Ping, 0)));
    }

    fn deadlines_passed(&mut self, now: Instant) {
        self.conn.deadlines.take();
        if let Some(earliest) = self.conn.calls().deadlines_passed(now) {
            self.conn.deadlines.add(earliest);
        }
    }
}

/// Handles one frame; answers ready at once go to `answers`.
fn handle_frame(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnShared>,
    tx: &OutgoingTx<Slot>,
    frame: Frame,
    now: Instant,
    answers: &mut Vec<Outgoing<Slot>>,
) -> Result<(), Disconnect> {
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
            let StreamCredit(credit) = StreamCredit::parse(&frame.body)
                .map_err(|e| Disconnect::Protocol(e.to_string()))?;
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
            Err(Disconnect::Protocol(format!(
                "client sent a {} frame",
                frame.kind
            )))
        }
    }
}

fn handle_request(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnShared>,
    tx: &OutgoingTx<Slot>,
    frame: Frame,
    now: Instant,
    answers: &mut Vec<Outgoing<Slot>>,
) -> Result<(), Disconnect> {
    let id = frame.request_id;
    let one_way = frame.kind == FrameKind::OneWay;
    // A request id names one open call. One-way calls are never answered or cancelled, so
    // their ids name nothing and may repeat.
    if !one_way && conn.calls().is_open(id) {
        return Err(Disconnect::Protocol(format!(
            "request id {id} is already in use by an open call"
        )));
    }
    let serializer = frame.serializer;
    // `service` and `method` are for metrics; they label only what the server routes.
    let mut respond = |status: Status, message: String, service: &str, method: &str| {
        #[cfg(feature = "metrics")]
        if let Some(m) = &server.metrics {
            m.refused(service, method, status);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (service, method);
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
    let Some(slot) = conn.limits.acquire() else {
        respond(
            Status::SERVER_BUSY,
            "too many calls in flight".to_owned(),
            "",
            "",
        );
        return Ok(());
    };
    if conn.draining.load(Ordering::Acquire) {
        respond(Status::UNAVAILABLE, "server is draining".to_owned(), "", "");
        return Ok(());
    }
    let format = match server.formats.get(frame.serializer) {
        Ok(format) => format,
        Err(e) => {
            respond(Status::UNSUPPORTED_SERIALIZER, e.to_string(), "", "");
            return Ok(());
        }
    };
    let (head, args_offset) = match RequestHeadRef::parse(&frame.body) {
        Ok(parsed) => parsed,
        Err(e) => {
            respond(
                Status::BAD_REQUEST,
                format!("request preamble: {e}"),
                "",
                "",
            );
            return Ok(());
        }
    };
    let Some(service) = server.route(head.service, head.version) else {
        let message = if head.version.is_empty() {
            format!("no service {:?}", head.service)
        } else {
            format!("no service {:?} version {:?}", head.service, head.version)
        };
        respond(Status::SERVICE_NOT_FOUND, message, "", "");
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
        peer: conn.peer.clone(),
        frames: conn.frames.clone(),
        max_body_len: conn.max_body_len,
    };
    let ctx = (!server.filters.is_empty()).then(|| call.context());
    let Some(mut future) = service.call(head.method, call) else {
        respond(
            Status::METHOD_NOT_FOUND,
            format!("service {:?} has no method {:?}", head.service, head.method),
            service.name(),
            "",
        );
        return Ok(());
    };
    if let Some(ctx) = &ctx {
        future = match server.filters.apply(ctx, future) {
            Ok(f) => f,
            Err(e) => {
                respond(e.status, e.message, head.service, head.method);
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
    let signal = CallSignal::new(stream_window(&head), deadline);
    let key = match conn.calls().open(id, signal.clone()) {
        Ok(key) => key,
        // Checked above, and nothing else opens calls on this connection meanwhile.
        Err(OpenError::Duplicate) => {
            return Err(Disconnect::Protocol(format!(
                "request id {id} is already in use by an open call"
            )));
        }
        Err(OpenError::Closed) => return Ok(()),
    };
    // The connection's one timer keeps the deadline (only this task opens calls, so the
    // timer cannot miss it).
    if let Some(deadline) = deadline {
        conn.deadlines.add(deadline);
    }
    tokio::spawn(job.run(conn.clone(), key, signal, reply));
    Ok(())
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(future).poll(&mut cx)
}

/// The byte window a streaming request announced in its metadata, if any.
fn stream_window(head: &RequestHeadRef<'_>) -> Option<u64> {
    head.metadata_iter()
        .filter(|(key, _)| *key == STREAM_WINDOW_KEY)
        .last()
        .and_then(|(_, value)| parse_stream_window(value))
}
