//! The coalescing writer shared by clients and servers: one task per connection drains
//! everything queued into as few writes as possible.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use rpc_transport::BoxWrite;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use crate::frame_buf::OutFrame;

/// Frames at least this long are written from their own buffer (vectored) instead of being
/// copied into the batch buffer.
const LARGE_FRAME: usize = 16 * 1024;
/// A batch stops growing at this many bytes.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// At most this many buffers go into one vectored write.
const MAX_IOVECS: usize = 64;
/// What the buffer of small frames starts with; it grows (doubling) when bursts need more.
const INITIAL_BATCH_BUFFER: usize = 8 * 1024;
/// A batch buffer grown past this by a burst is given back once the burst is written, so an idle
/// connection holds at most this much for its writes.
const MAX_IDLE_BATCH_BUFFER: usize = 256 * 1024;

/// One frame to write, and what to release once it is written: `T` is the writer's token, a
/// server call's place in the concurrency limits, so that queued answers count against the
/// limits until they reach the socket (a client has none: `()`).
pub(crate) struct Outgoing<T = ()> {
    pub(crate) frame: OutFrame,
    pub(crate) token: Option<T>,
}

impl<T> Outgoing<T> {
    pub(crate) fn frame(frame: impl Into<OutFrame>) -> Self {
        Outgoing {
            frame: frame.into(),
            token: None,
        }
    }
}

/// What travels to the writer: one frame, or a burst of frames produced together (a server's
/// answers to everything one read brought in), which costs one channel operation and one wake-up.
pub(crate) enum WriterMsg<T> {
    One(Outgoing<T>),
    Many(Vec<Outgoing<T>>),
}

/// The writer is gone (the connection is closing).
#[derive(Debug)]
pub(crate) struct WriterGone;

/// The sending side of a writer's queue.
pub(crate) struct OutgoingTx<T = ()> {
    tx: mpsc::UnboundedSender<WriterMsg<T>>,
    backlog: Arc<Backlog>,
}

impl<T> Clone for OutgoingTx<T> {
    fn clone(&self) -> Self {
        OutgoingTx {
            tx: self.tx.clone(),
            backlog: self.backlog.clone(),
        }
    }
}

/// The receiving side of a writer's queue.
pub(crate) struct OutgoingRx<T = ()> {
    rx: mpsc::UnboundedReceiver<WriterMsg<T>>,
    backlog: Arc<Backlog>,
}

/// What one queued frame costs beyond its bytes: the `Bytes` handle, its slot in the queue and
/// the allocator's bookkeeping. Counting it makes a flood of small frames (pongs of 18 bytes)
/// cost what it really costs.
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// What one frame costs while it waits to be written.
fn cost(frame: &OutFrame) -> usize {
    frame.len() + FRAME_OVERHEAD
}

/// What is queued for a writer and not yet written, counted as frames really cost, so that a
/// reader can stop reading from a peer that does not read its answers. A connection's backlog
/// adds to its server's, which bounds the whole server.
#[derive(Debug)]
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
    /// Past this, `over_cap` wakes up: the owner closes the connection, or sheds one.
    cap: usize,
    over: Notify,
    parent: Option<Arc<Backlog>>,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog::new(usize::MAX, None)
    }
}

impl Backlog {
    /// A backlog that wakes `over_cap` waiters past `cap` and adds to `parent`.
    pub(crate) fn new(cap: usize, parent: Option<Arc<Backlog>>) -> Self {
        Backlog {
            bytes: AtomicUsize::new(0),
            drained: Notify::new(),
            cap,
            over: Notify::new(),
            parent,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Waits until at most `limit` bytes are queued.
    pub(crate) async fn wait_below(&self, limit: usize) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.bytes() <= limit {
                return;
            }
            notified.await;
        }
    }

    /// Waits until more than the cap is queued.
    pub(crate) async fn over_cap(&self) {
        loop {
            let notified = self.over.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.bytes() > self.cap {
                return;
            }
            notified.await;
        }
    }

    /// Forgets what is still counted: the writer and its queue are gone, and so is the memory.
    pub(crate) fn discard(&self) {
        let left = self.bytes.swap(0, Ordering::AcqRel);
        self.drained.notify_waiters();
        if let Some(parent) = &self.parent {
            parent.written(left);
        }
    }

    fn add(&self, n: usize) {
        let now = self.bytes.fetch_add(n, Ordering::AcqRel) + n;
        if now > self.cap {
            self.over.notify_waiters();
        }
        if let Some(parent) = &self.parent {
            parent.add(n);
        }
    }

    fn written(&self, n: usize) {
        // Saturating: bytes discarded with a closed connection may be counted off again by a
        // sender that raced the close.
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(n))
            });
        self.drained.notify_waiters();
        if let Some(parent) = &self.parent {
            parent.written(n);
        }
    }
}

impl<T> OutgoingTx<T> {
    pub(crate) fn send(&self, out: Outgoing<T>) -> Result<(), WriterGone> {
        let len = cost(&out.frame);
        self.queue(len, WriterMsg::One(out))
    }

    pub(crate) fn send_many(&self, mut outs: Vec<Outgoing<T>>) -> Result<(), WriterGone> {
        match outs.len() {
            0 => Ok(()),
            1 => match outs.pop() {
                Some(out) => self.send(out),
                None => Ok(()),
            },
            _ => {
                let len = outs.iter().map(|o| cost(&o.frame)).sum();
                self.queue(len, WriterMsg::Many(outs))
            }
        }
    }

    /// Counts the bytes before they are queued: the writer may take and write them before
    /// `send` returns, and subtracting first would wrap the count below zero.
    fn queue(&self, len: usize, msg: WriterMsg<T>) -> Result<(), WriterGone> {
        self.backlog.add(len);
        self.tx.send(msg).map_err(|_| {
            self.backlog.written(len);
            WriterGone
        })
    }

    /// The bytes queued and not yet written.
    pub(crate) fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }
}

/// A writer's queue.
pub(crate) fn channel<T>() -> (OutgoingTx<T>, OutgoingRx<T>) {
    channel_with(Backlog::default())
}

/// A writer's queue whose backlog is counted in `backlog`.
pub(crate) fn channel_with<T>(backlog: Backlog) -> (OutgoingTx<T>, OutgoingRx<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(backlog);
    (
        OutgoingTx {
            tx,
            backlog: backlog.clone(),
        },
        OutgoingRx { rx, backlog },
    )
}

/// Writes queued frames until every sender is gone (then shuts the stream down) or a write fails.
///
/// `outstanding` is how many frames the other side of this connection's logic is about to
/// queue (calls in flight on a client, requests being handled on a server). When it exceeds the
/// frames in hand, the writer yields once before draining: the task that woke it usually runs
/// right after it otherwise, and would find only one frame.
pub(crate) async fn run_writer<T: Send>(
    rx: OutgoingRx<T>,
    mut io: BoxWrite,
    outstanding: Arc<AtomicUsize>,
) -> io::Result<()> {
    let OutgoingRx { mut rx, backlog } = rx;
    let mut batch = Batch::default();
    while let Some(first) = rx.recv().await {
        batch.push_msg(first);
        let mut yielded = false;
        loop {
            while batch.bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(msg) => batch.push_msg(msg),
                    Err(_) => break,
                }
            }
            let more_coming = outstanding.load(Ordering::Relaxed) > batch.frames;
            if yielded || batch.bytes >= MAX_BATCH_BYTES || !more_coming {
                break;
            }
            yielded = true;
            tokio::task::yield_now().await;
        }
        batch.seal();
        write_segments(&mut io, &mut batch.segments).await?;
        io.flush().await?;
        backlog.written(batch.cost);
        batch.reset();
    }
    io.shutdown().await
}

/// The frames of one write: small ones copied together, large ones kept as their own buffers.
struct Batch<T> {
    small: BytesMut,
    segments: Vec<Bytes>,
    tokens: Vec<T>,
    frames: usize,
    bytes: usize,
    /// What the frames cost in the backlog.
    cost: usize,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            small: BytesMut::new(),
            segments: Vec::new(),
            tokens: Vec::new(),
            frames: 0,
            bytes: 0,
            cost: 0,
        }
    }
}

impl<T> Batch<T> {
    fn push_msg(&mut self, msg: WriterMsg<T>) {
        match msg {
            WriterMsg::One(out) => self.push(out),
            WriterMsg::Many(outs) => outs.into_iter().for_each(|out| self.push(out)),
        }
    }

    fn push(&mut self, out: Outgoing<T>) {
        self.frames += 1;
        let len = out.frame.len();
        self.bytes += len;
        self.cost += len + FRAME_OVERHEAD;
        let (head, rest) = out.frame.into_parts();
        if head.len() >= LARGE_FRAME {
            self.push_piece(head.freeze());
        } else {
            self.copy_piece(&head);
        }
        if !rest.is_empty() {
            rest.into_iter().for_each(|piece| self.push_piece(piece));
        }
        if let Some(token) = out.token {
            self.tokens.push(token);
        }
    }

    /// Keeps a large piece as its own buffer and copies a small one into the batch buffer.
    fn push_piece(&mut self, piece: Bytes) {
        if piece.len() >= LARGE_FRAME {
            if !self.small.is_empty() {
                self.segments.push(self.small.split().freeze());
            }
            self.segments.push(piece);
        } else {
            self.copy_piece(&piece);
        }
    }

    fn copy_piece(&mut self, piece: &[u8]) {
        if self.small.capacity() - self.small.len() < piece.len() {
            self.small.reserve(piece.len().max(INITIAL_BATCH_BUFFER));
        }
        self.small.extend_from_slice(piece);
    }

    fn seal(&mut self) {
        if !self.small.is_empty() {
            self.segments.push(self.small.split().freeze());
        }
    }

    fn reset(&mut self) {
        self.segments.clear();
        self.tokens.clear();
        self.frames = 0;
        self.cost = 0;
        // The buffer's capacity after `split` is only what is left of it; the bytes of the burst
        // tell how large it grew.
        if self.bytes > MAX_IDLE_BATCH_BUFFER || self.small.capacity() > MAX_IDLE_BATCH_BUFFER {
            self.small = BytesMut::new();
        }
        self.bytes = 0;
    }
}

async fn write_segments(io: &mut BoxWrite, segments: &mut Vec<Bytes>) -> io::Result<()> {
    if segments.len() == 1 || !io.is_write_vectored() {
        for seg in segments.drain(..) {
            io.write_all(&seg).await?;
        }
        return Ok(());
    }
    let mut start = 0;
    while start < segments.len() {
        let slices: Vec<IoSlice<'_>> = segments[start..]
            .iter()
            .take(MAX_IOVECS)
            .map(|s| IoSlice::new(s))
            .collect();
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let seg = &mut segments[start];
            let take = written.min(seg.len());
            seg.advance(take);
            written -= take;
            if seg.is_empty() {
                start += 1;
            }
        }
    }
    segments.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use rpc_codec::{FrameCodec, FrameKind};
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::frame_buf::FrameBuf;

    fn frame(id: u64, len: usize) -> OutFrame {
        let mut fb = FrameBuf::with_capacity(len);
        fb.body().resize(18 + len, (id % 251) as u8);
        fb.finish(
            FrameKind::Response,
            rpc_codec::SerializerId::NONE,
            rpc_codec::Status::OK,
            id,
            usize::MAX >> 1,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn small_and_large_frames_arrive_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = channel::<()>();
        let writer = tokio::spawn(run_writer(rx, Box::new(a), Arc::new(AtomicUsize::new(0))));
        let sizes = [10usize, 40_000, 3, 3, 100_000, 0, 17_000, 5];
        for (i, len) in sizes.iter().enumerate().take(4) {
            tx.send(Outgoing::frame(frame(i as u64, *len))).unwrap();
        }
        let rest = sizes.iter().enumerate().skip(4);
        tx.send_many(
            rest.map(|(i, len)| Outgoing::frame(frame(i as u64, *len)))
                .collect(),
        )
        .unwrap();
        drop(tx);
        let mut wire = Vec::new();
        b.read_to_end(&mut wire).await.unwrap();
        writer.await.unwrap().unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        let mut codec = FrameCodec::new();
        for (i, len) in sizes.iter().enumerate() {
            let f = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.request_id, i as u64);
            assert_eq!(f.body.len(), *len);
            assert!(f.body.iter().all(|&x| x == (i % 251) as u8));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn the_backlog_never_counts_below_zero_while_the_writer_races_the_sender() {
        // The writer side takes each message and subtracts its bytes as soon as it can, from
        // another thread, spinning so that it often runs between the sender's channel send and
        // whatever the sender does next. Counting after the send let it subtract first, and the
        // count wrapped to nearly `usize::MAX` (which pauses the connection's reader for good).
        let (tx, rx) = channel::<()>();
        let OutgoingRx { mut rx, backlog } = rx;
        const FRAMES: usize = 1_000_000;
        let drain = std::thread::spawn(move || {
            let mut seen = 0;
            let mut highest = 0;
            while seen < FRAMES {
                match rx.try_recv() {
                    Ok(WriterMsg::One(out)) => {
                        backlog.written(cost(&out.frame));
                        highest = highest.max(backlog.bytes());
                        seen += 1;
                    }
                    Ok(WriterMsg::Many(_)) => unreachable!("only single frames are sent"),
                    Err(_) => std::hint::spin_loop(),
                }
            }
            (highest, backlog.bytes())
        });
        let frame = Bytes::from_static(&[0; 18]);
        for _ in 0..FRAMES {
            tx.send(Outgoing::frame(frame.clone())).unwrap();
        }
        let (highest, left) = drain.join().unwrap();
        assert!(
            highest <= FRAMES * (18 + FRAME_OVERHEAD),
            "backlog wrapped: {highest}"
        );
        assert_eq!(left, 0);
    }
}
