//! The reference the framework is measured against: a hand-written multiplexed echo over the
//! same frame header, with no serialization ("raw multiplexed").
//!
//! Client: a request-id counter, a map from request id to a one-shot sender, a writer task that
//! writes whatever is queued when it wakes, and a reader task that completes the calls. Server:
//! a read loop that answers each request with its own body, and a writer task. This is the
//! architecture of the framework without its features (no preamble, no deadlines, no routing,
//! no heartbeats), written the way one would by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures::StreamExt;
use rpc_codec::{Frame, FrameCodec, FrameKind, SerializerId, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead};

/// Starts the raw echo server on `listener`; it runs until the runtime stops.
pub fn serve(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(stream));
        }
    });
}

async fn serve_connection(stream: TcpStream) {
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    tokio::spawn(write_frames(rx, write));
    let mut frames = FramedRead::with_capacity(read, FrameCodec::new(), 64 * 1024);
    while let Some(Ok(frame)) = frames.next().await {
        if frame.kind == FrameKind::Request {
            let reply = Frame::new(FrameKind::Response, frame.request_id).with_body(frame.body);
            if tx.send(reply).is_err() {
                return;
            }
        }
    }
}

/// Writes whatever is queued each time it wakes, in one write.
async fn write_frames(mut rx: mpsc::UnboundedReceiver<Frame>, mut io: impl AsyncWriteExt + Unpin) {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        if codec.encode(frame, &mut buf).is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if codec.encode(frame, &mut buf).is_err() {
                return;
            }
        }
        if io.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}

/// A raw echo client: cheap to clone, any number of concurrent calls over one connection.
#[derive(Clone, Debug)]
pub struct RawClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    next_id: AtomicU64,
    pending: DashMap<u64, oneshot::Sender<Bytes>>,
    tx: mpsc::UnboundedSender<Frame>,
}

impl RawClient {
    /// Connects to a raw echo server.
    pub async fn connect(addr: std::net::SocketAddr) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(rx, write));
        let inner = Arc::new(Inner {
            next_id: AtomicU64::new(1),
            pending: DashMap::new(),
            tx,
        });
        let reader = inner.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::with_capacity(read, FrameCodec::new(), 64 * 1024);
            while let Some(Ok(frame)) = frames.next().await {
                if let Some((_, tx)) = reader.pending.remove(&frame.request_id) {
                    let _ = tx.send(frame.body);
                }
            }
            reader.pending.clear();
        });
        Ok(RawClient { inner })
    }

    /// Sends `payload` and waits for it to come back.
    pub async fn echo(&self, payload: Bytes) -> Option<Bytes> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.insert(id, tx);
        let frame = Frame::new(FrameKind::Request, id)
            .with_serializer(SerializerId::NONE)
            .with_status(Status::OK)
            .with_body(payload);
        self.inner.tx.send(frame).ok()?;
        rx.await.ok()
    }
}
