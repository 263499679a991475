//! One call's run on the server once it outlives the read step of its request: its handler,
//! then its stream under flow control, all under the call's deadline, until it answers, is
//! cancelled through the connection's call table, or its deadline passes.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use rpc_codec::{ErrorBody, FrameKind, SerializerId, Status};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::calls::CallKey;
use super::control::{CallSignal, Stop};
use super::limits::Slot;
use super::state::ConnShared;
use crate::error::ServerError;
use crate::frame_buf::{FrameBuf, FrameRun, OutFrame, empty_frame, empty_frame_with};
use crate::service::{ItemSource, Reply, ReplyInner};
use crate::writer::{Outgoing, OutgoingTx};

/// The most stream items sent to the writer in one message.
const STREAM_BATCH: u32 = 1024;
/// A batch of stream items stops growing at this many bytes.
const STREAM_BATCH_BYTES: usize = 64 * 1024;

/// Runs a one-way call that did not finish in place: nobody waits for it, so only its own
/// deadline (if the caller gave one) and the server closing stop it.
pub(super) async fn run_one_way<F>(
    future: F,
    deadline: Option<Instant>,
    closed: CancellationToken,
    slot: Slot,
) where
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
pub(super) enum Start<F> {
    /// Its handler is still running.
    Handler(F),
    /// Its handler returned a stream.
    Stream(ItemStream),
}

pub(super) type ItemStream = Box<dyn ItemSource>;

/// What is needed to deliver one call's answer.
pub(super) struct Job {
    pub(super) tx: OutgoingTx<Slot>,
    pub(super) id: u64,
    pub(super) serializer: SerializerId,
    pub(super) slot: Slot,
}

impl Job {
    /// The handler's reply; a panic becomes an internal error.
    pub(super) fn reply(&self, outcome: std::thread::Result<Reply>) -> ReplyInner {
        match outcome {
            Ok(reply) => reply.0,
            Err(_) => {
                warn!(id = self.id, "handler panicked");
                ReplyInner::Error(ServerError::new(Status::INTERNAL_ERROR, "handler panicked"))
            }
        }
    }

    /// The frame answering a reply that is not a stream, if there is one.
    pub(super) fn answer_frame(&self, reply: ReplyInner) -> Option<OutFrame> {
        match reply {
            ReplyInner::Frame(frame) => Some(frame),
            ReplyInner::Error(e) => Some(error_frame(self.id, self.serializer, &e)),
            ReplyInner::Nothing | ReplyInner::Stream(_) => None,
        }
    }

    /// The answer, holding the call's slot until it is written.
    pub(super) fn answer(self, frame: OutFrame) -> Outgoing<Slot> {
        Outgoing {
            frame,
            token: Some(self.slot),
        }
    }

    /// Runs a call from `start` until it answers, is cancelled or passes its deadline, which
    /// bounds the whole call: the handler and every item of its stream.
    pub(super) async fn run<F>(
        self,
        conn: Arc<ConnShared>,
        key: CallKey,
        signal: Arc<CallSignal>,
        start: Start<F>,
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
            Done(Option<OutFrame>),
            Cancelled,
            DeadlinePassed,
        }
        let outcome = tokio::select! {
            biased;
            stop = signal.stopped() => match stop {
                Stop::Cancelled => Outcome::Cancelled,
                Stop::DeadlinePassed => Outcome::DeadlinePassed,
            },
            end = work => Outcome::Done(end),
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
    async fn pump(&self, signal: &CallSignal, mut items: ItemStream) -> Option<OutFrame> {
        // Items are sent in batches: as many as are ready and covered by credit are encoded
        // one after another into one buffer and go to the writer in one message.
        let mut run = FrameRun::default();
        let mut window = signal.window().map(ByteWindow::new);
        loop {
            let before = run.len();
            let mut end = match poll_fn(|cx| items.poll_item(cx, &mut run)).await {
                Some(Ok(())) => {
                    if !signal.acquire().await {
                        return None;
                    }
                    if let Some(window) = &mut window {
                        signal.wait_for_room(|granted| window.full(granted)).await;
                        window.sent(run.len() - before);
                    }
                    None
                }
                Some(Err(e)) => Some(Err(e)),
                None => Some(Ok(())),
            };
            let mut count = 1;
            // Then what is ready now, credit taken in bulk and the unused part given back.
            let mut now = Context::from_waker(Waker::noop());
            while end.is_none() && count < STREAM_BATCH && run.len() < STREAM_BATCH_BYTES {
                let credit = signal.take_up_to(STREAM_BATCH - count);
                let mut used = 0;
                while used < credit && run.len() < STREAM_BATCH_BYTES {
                    if let Some(window) = &mut window
                        && window.full(signal.granted())
                    {
                        break;
                    }
                    let before = run.len();
                    match items.poll_item(&mut now, &mut run) {
                        Poll::Ready(Some(Ok(()))) => {
                            used += 1;
                            if let Some(window) = &mut window {
                                window.sent(run.len() - before);
                            }
                        }
                        Poll::Ready(Some(Err(e))) => {
                            end = Some(Err(e));
                            break;
                        }
                        Poll::Ready(None) => {
                            end = Some(Ok(()));
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                signal.give_back(credit - used);
                count += used;
                if used < credit || credit == 0 {
                    break;
                }
            }
            if let Some(batch) = run.take()
                && self.tx.send(Outgoing::frame(batch)).is_err()
            {
                return None;
            }
            match end {
                None => {}
                Some(Ok(())) => {
                    return Some(
                        empty_frame_with(FrameKind::StreamEnd, self.serializer, self.id).into(),
                    );
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

/// The bytes of a stream's items sent and not yet granted back, under the byte window its
/// client announced. Items are granted back in the order they were sent, so the sizes are kept
/// in order, a run of equal sizes as one entry.
struct ByteWindow {
    window: u64,
    /// `(frame length, how many)`, oldest first.
    sizes: VecDeque<(u64, u64)>,
    /// Their bytes.
    bytes: u64,
    /// The grants accounted for.
    granted: u64,
}

impl ByteWindow {
    fn new(window: u64) -> Self {
        ByteWindow {
            window,
            sizes: VecDeque::new(),
            bytes: 0,
            granted: 0,
        }
    }

    /// Whether the window is full, once the grants up to `granted` are accounted for. (An
    /// empty window is never full, so an item larger than the window still goes.)
    fn full(&mut self, granted: u64) -> bool {
        let mut back = granted.saturating_sub(self.granted);
        self.granted = granted;
        while back > 0 {
            let Some((size, count)) = self.sizes.front_mut() else {
                break;
            };
            let n = back.min(*count);
            self.bytes -= *size * n;
            *count -= n;
            back -= n;
            if *count == 0 {
                self.sizes.pop_front();
            }
        }
        self.bytes >= self.window
    }

    /// Counts an item of `len` bytes sent.
    fn sent(&mut self, len: usize) {
        let len = len as u64;
        self.bytes += len;
        match self.sizes.back_mut() {
            Some((size, count)) if *size == len => *count += 1,
            _ => self.sizes.push_back((len, 1)),
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) fn error_frame(id: u64, serializer: SerializerId, error: &ServerError) -> OutFrame {
    end_frame(FrameKind::Response, id, serializer, error)
}

fn end_frame(kind: FrameKind, id: u64, serializer: SerializerId, error: &ServerError) -> OutFrame {
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
                .unwrap_or_else(|_| empty_frame(kind, id).into())
        }
    }
}
