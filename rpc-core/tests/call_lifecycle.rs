//! Every call's lifecycle on the server, whatever order its frames arrive in: control frames
//! right behind their request, deadlines that bound whole streams, a client that closes, a
//! writer that fails, request ids reused. Raw frames over the memory transport, paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use rpc_core::codec::{Frame, FrameCodec, FrameKind, Header, Metadata, put_request_head};
use rpc_core::transport::{self, AsyncStream, BoxRead, Connection, Connector};
use rpc_core::{
    CallOptions, Client, Endpoint, Format, RpcError, SerializerId, Server, ServerHandle,
    ServerStream, Status, TransportError,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

/// What the handlers did, for the tests to check.
#[derive(Debug, Default)]
struct Seen {
    produced: AtomicUsize,
    producers_dropped: AtomicUsize,
    notes_done: AtomicUsize,
    sleeps_dropped: AtomicUsize,
}

#[rpc_core::service(name = "test.Life")]
trait Life {
    /// An endless stream, one item every `every_ms` (0: as fast as credit allows), after the
    /// handler has waited `delay_ms`.
    async fn ticks(&self, delay_ms: u64, every_ms: u64) -> ServerStream<u64>;
    /// Answers after `ms`.
    async fn sleep(&self, ms: u64) -> u64;
    /// Takes `ms`; nobody waits for it.
    #[rpc(oneway)]
    async fn note(&self, ms: u64);
}

struct Impl(Arc<Seen>);

/// Counts items and notices when the stream is dropped.
struct Ticks {
    seen: Arc<Seen>,
    next: u64,
    interval: Option<tokio::time::Interval>,
}

impl futures::Stream for Ticks {
    type Item = u64;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<u64>> {
        if let Some(interval) = &mut self.interval
            && interval.poll_tick(cx).is_pending()
        {
            return Poll::Pending;
        }
        self.seen.produced.fetch_add(1, Ordering::SeqCst);
        self.next += 1;
        Poll::Ready(Some(self.next))
    }
}

impl Drop for Ticks {
    fn drop(&mut self) {
        self.seen.producers_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

struct Flag(Arc<Seen>, bool);

impl Drop for Flag {
    fn drop(&mut self) {
        if self.1 {
            self.0.sleeps_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Life for Impl {
    async fn ticks(&self, delay_ms: u64, every_ms: u64) -> ServerStream<u64> {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let interval = (every_ms > 0).then(|| {
            let mut i = tokio::time::interval(Duration::from_millis(every_ms));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        ServerStream::new(Ticks {
            seen: self.0.clone(),
            next: 0,
            interval,
        })
    }

    async fn sleep(&self, ms: u64) -> u64 {
        let mut flag = Flag(self.0.clone(), true);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        flag.1 = false;
        ms
    }

    async fn note(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.notes_done.fetch_add(1, Ordering::SeqCst);
    }
}

fn endpoint(name: &str) -> Endpoint {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mem://life-{name}-{}", N.fetch_add(1, Ordering::Relaxed))
        .parse()
        .unwrap()
}

async fn start(name: &str) -> (ServerHandle, Arc<Seen>, Endpoint) {
    let seen = Arc::new(Seen::default());
    let server = Server::builder()
        .service(LifeServer::new(Impl(seen.clone())))
        .listen(endpoint(name))
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().clone();
    (server, seen, endpoint)
}

/// A client that writes frames by hand, in MessagePack.
struct Raw {
    write: Box<dyn AsyncWrite + Send + Unpin>,
    frames: FramedRead<BoxRead, FrameCodec>,
}

impl Raw {
    async fn connect(endpoint: &Endpoint) -> Raw {
        let connection = transport::connect(endpoint, Duration::from_secs(1))
            .await
            .unwrap();
        let (read, write) = connection.into_split();
        Raw {
            write,
            frames: FramedRead::new(read, FrameCodec::new()),
        }
    }

    /// Writes all the frames in one write.
    async fn send(&mut self, frames: &[Bytes]) {
        self.write.write_all(&frames.concat()).await.unwrap();
    }

    /// The next frame, or `None` if the server closes the connection or sends nothing within
    /// `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        match tokio::time::timeout(wait, self.frames.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(e))) => panic!("bad frame from the server: {e}"),
            Ok(None) | Err(_) => None,
        }
    }

    /// Whether the server closed the connection (as opposed to staying silent).
    async fn closed_by_server(&mut self, wait: Duration) -> bool {
        loop {
            match tokio::time::timeout(wait, self.frames.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn frame(kind: FrameKind, serializer: SerializerId, id: u64, body: &[u8]) -> Bytes {
    let header = Header {
        kind,
        serializer,
        status: Status::OK,
        request_id: id,
        body_len: body.len() as u32,
    };
    let mut buf = BytesMut::new();
    buf.put_slice(&header.to_bytes());
    buf.put_slice(body);
    buf.freeze()
}

fn request(kind: FrameKind, id: u64, method: &str, args: &impl serde::Serialize) -> Bytes {
    request_with_deadline(kind, id, method, None, args)
}

fn request_with_deadline(
    kind: FrameKind,
    id: u64,
    method: &str,
    deadline: Option<Duration>,
    args: &impl serde::Serialize,
) -> Bytes {
    request_with(kind, id, method, deadline, &Metadata::new(), args)
}

fn request_with(
    kind: FrameKind,
    id: u64,
    method: &str,
    deadline: Option<Duration>,
    metadata: &Metadata,
    args: &impl serde::Serialize,
) -> Bytes {
    let mut body = BytesMut::new();
    put_request_head(&mut body, "test.Life", "", method, deadline, metadata).unwrap();
    Format::MessagePack.encode(args, &mut body).unwrap();
    frame(kind, SerializerId::MESSAGE_PACK, id, &body)
}

fn cancel(id: u64) -> Bytes {
    frame(FrameKind::Cancel, SerializerId::NONE, id, &[])
}

fn credit(id: u64, n: u32) -> Bytes {
    frame(
        FrameKind::StreamCredit,
        SerializerId::NONE,
        id,
        &n.to_be_bytes(),
    )
}

const A_WHILE: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_cancel_in_the_same_write_as_its_stream_request_stops_the_stream() {
    let (server, seen, endpoint) = start("cancel-stream").await;
    let mut raw = Raw::connect(&endpoint).await;
    // The handler returns its stream at once, so the stream is set up after this whole read.
    raw.send(&[
        request(FrameKind::Request, 1, "ticks", &(0u64, 0u64)),
        cancel(1),
    ])
    .await;
    assert!(
        raw.next(A_WHILE).await.is_none(),
        "nothing is sent after a cancel"
    );
    assert_eq!(seen.producers_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(server.in_flight(), 0, "the call's slot is free");
    // Graceful shutdown has nothing to wait for.
    drop(raw);
    tokio::time::timeout(
        Duration::from_millis(100),
        server.shutdown(Duration::from_secs(60)),
    )
    .await
    .expect("shutdown waits for no call");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_before_a_slow_handler_returns_its_stream_stops_it() {
    let (server, seen, endpoint) = start("cancel-slow-stream").await;
    let mut raw = Raw::connect(&endpoint).await;
    raw.send(&[request(FrameKind::Request, 1, "ticks", &(50u64, 0u64))])
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    raw.send(&[cancel(1)]).await;
    assert!(raw.next(A_WHILE).await.is_none());
    // The handler was dropped before it returned a stream: no producer was ever made.
    assert_eq!(seen.produced.load(Ordering::SeqCst), 0);
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn credit_in_the_same_write_as_its_request_reaches_the_stream() {
    let (_server, _seen, endpoint) = start("early-credit").await;
    let mut raw = Raw::connect(&endpoint).await;
    // 256 items of initial credit plus 200 granted at once: 456 items, then silence until the
    // client grants more (it never does).
    raw.send(&[
        request(FrameKind::Request, 1, "ticks", &(0u64, 0u64)),
        credit(1, 200),
    ])
    .await;
    let mut items = 0;
    while let Some(frame) = raw.next(A_WHILE).await {
        assert_eq!(frame.kind, FrameKind::StreamItem);
        items += 1;
    }
    assert_eq!(items, 456);
}

/// Reads stream items until the server is silent, noting each frame's length.
async fn read_item_sizes(raw: &mut Raw, sizes: &mut Vec<usize>) {
    while let Some(frame) = raw.next(A_WHILE).await {
        assert_eq!(frame.kind, FrameKind::StreamItem);
        sizes.push(rpc_codec::HEADER_LEN + frame.body.len());
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_with_a_byte_window_keeps_its_bytes_unread_below_the_window() {
    let (_server, _seen, endpoint) = start("byte-window").await;
    let mut raw = Raw::connect(&endpoint).await;
    let mut metadata = Metadata::new();
    metadata
        .insert(rpc_codec::STREAM_WINDOW_KEY, "16384")
        .unwrap();
    raw.send(&[request_with(
        FrameKind::Request,
        1,
        "ticks",
        None,
        &metadata,
        &(0u64, 0u64),
    )])
    .await;
    // The frames' lengths, in order: the window is full once they add up to 16 KiB, and every
    // item but the last was sent while they did not.
    let mut sizes = Vec::new();
    read_item_sizes(&mut raw, &mut sizes).await;
    let unread = |sizes: &[usize], granted: usize| -> (usize, usize) {
        let all: usize = sizes[granted..].iter().sum();
        (all - sizes[sizes.len() - 1], all)
    };
    let (before_last, all) = unread(&sizes, 0);
    assert!(
        before_last < 16_384 && all >= 16_384,
        "{} items, {all} bytes",
        sizes.len()
    );
    // Far more than 256 items: the window, not the item count, stopped the stream.
    assert!(sizes.len() > 256, "{} items", sizes.len());
    // A grant of 100 items frees the bytes of the oldest 100, and the stream fills them again.
    raw.send(&[credit(1, 100)]).await;
    let first = sizes.len();
    read_item_sizes(&mut raw, &mut sizes).await;
    assert!(sizes.len() > first, "nothing sent after the grant");
    let (before_last, all) = unread(&sizes, 100);
    assert!(before_last < 16_384 && all >= 16_384, "{all} bytes unread");
}

#[tokio::test(start_paused = true)]
async fn credit_granted_while_a_slow_handler_runs_is_kept_for_its_stream() {
    let (_server, _seen, endpoint) = start("credit-before-stream").await;
    let mut raw = Raw::connect(&endpoint).await;
    raw.send(&[request(FrameKind::Request, 1, "ticks", &(50u64, 0u64))])
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    raw.send(&[credit(1, 100)]).await;
    let mut items = 0;
    while let Some(frame) = raw.next(A_WHILE).await {
        assert_eq!(frame.kind, FrameKind::StreamItem);
        items += 1;
    }
    assert_eq!(items, 356);
}

#[tokio::test(start_paused = true)]
async fn the_server_ends_a_stream_at_its_deadline() {
    let (server, seen, endpoint) = start("server-stream-deadline").await;
    let mut raw = Raw::connect(&endpoint).await;
    // One item every 2 ms stays within the initial credit for the 300 ms the call may last.
    raw.send(&[request_with_deadline(
        FrameKind::Request,
        1,
        "ticks",
        Some(Duration::from_millis(300)),
        &(0u64, 2u64),
    )])
    .await;
    let mut items = 0;
    let end = loop {
        let frame = raw.next(A_WHILE).await.expect("the stream ends");
        match frame.kind {
            FrameKind::StreamItem => items += 1,
            _ => break frame,
        }
    };
    assert_eq!(end.kind, FrameKind::StreamEnd);
    assert_eq!(end.status, Status::DEADLINE_EXCEEDED);
    assert_eq!(end.request_id, 1);
    assert!((140..=151).contains(&items), "{items} items");
    assert_eq!(seen.producers_dropped.load(Ordering::SeqCst), 1);
    assert!(raw.next(A_WHILE).await.is_none(), "nothing after the end");
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_bounds_the_whole_stream() {
    let (server, seen, endpoint) = start("stream-deadline").await;
    let client = LifeClient::new(Client::builder().connect(&endpoint).await.unwrap());
    let mut stream = client
        .with_options(CallOptions::new().timeout(Duration::from_millis(300)))
        .ticks(0, 1)
        .await
        .unwrap();
    let mut items = 0u64;
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => items += 1,
            Some(Err(e)) => break Some(e),
            None => break None,
        }
        assert!(items < 10_000, "items still flow long after the deadline");
    };
    let end = end.expect("the stream ends with an error, not cleanly");
    assert!(matches!(end, RpcError::DeadlineExceeded), "{end}");
    // One item at once, then one a millisecond for 300 ms.
    assert!((250..=301).contains(&items), "{items} items");
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(seen.producers_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_closes_ends_its_calls_at_once() {
    let (server, seen, endpoint) = start("eof").await;
    let mut raw = Raw::connect(&endpoint).await;
    raw.send(&[
        // A stream that will wait for credit, a handler that would run for a minute, and a
        // one-way call that runs on after the client has gone.
        request(FrameKind::Request, 1, "ticks", &(0u64, 0u64)),
        request(FrameKind::Request, 2, "sleep", &(60_000u64,)),
        request(FrameKind::OneWay, 3, "note", &(500u64,)),
    ])
    .await;
    let mut items = 0;
    while let Some(frame) = raw.next(Duration::from_millis(100)).await {
        assert_eq!(frame.kind, FrameKind::StreamItem);
        items += 1;
    }
    assert_eq!(items, 256);
    assert_eq!(server.connection_count(), 1);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.connection_count(),
        0,
        "closed well before the idle timeout"
    );
    assert_eq!(seen.producers_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(seen.sleeps_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(seen.notes_done.load(Ordering::SeqCst), 0);
    tokio::time::sleep(A_WHILE).await;
    assert_eq!(
        seen.notes_done.load(Ordering::SeqCst),
        1,
        "one-way calls run on"
    );
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_id_reused_while_its_call_is_open_closes_the_connection() {
    let (server, seen, endpoint) = start("duplicate-id").await;
    let mut raw = Raw::connect(&endpoint).await;
    raw.send(&[
        request(FrameKind::Request, 9, "sleep", &(60_000u64,)),
        request(FrameKind::Request, 9, "sleep", &(1u64,)),
    ])
    .await;
    assert!(raw.closed_by_server(A_WHILE).await);
    assert_eq!(seen.sleeps_dropped.load(Ordering::SeqCst), 1);
    // Other connections are served as ever, and ids of ended calls may be used again.
    let mut other = Raw::connect(&endpoint).await;
    for _ in 0..2 {
        other
            .send(&[request(FrameKind::Request, 9, "sleep", &(1u64,))])
            .await;
        let answer = other.next(A_WHILE).await.unwrap();
        assert_eq!(
            (answer.kind, answer.status),
            (FrameKind::Response, Status::OK)
        );
    }
    // A cancelled call's id is free at once.
    other
        .send(&[
            request(FrameKind::Request, 4, "sleep", &(60_000u64,)),
            cancel(4),
            request(FrameKind::Request, 4, "sleep", &(1u64,)),
        ])
        .await;
    let answer = other.next(A_WHILE).await.unwrap();
    assert_eq!((answer.request_id, answer.status), (4, Status::OK));
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_server_handle_leaves_the_server_serving() {
    let (server, _seen, endpoint) = start("dropped-handle").await;
    drop(server);
    let client = LifeClient::new(Client::builder().connect(&endpoint).await.unwrap());
    assert_eq!(client.sleep(5).await.unwrap(), 5);
}

/// A byte stream whose writes fail once `broken` is set.
struct Breakable<S> {
    inner: S,
    broken: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Breakable<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Breakable<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Debug)]
struct BreakableConnector {
    endpoint: Endpoint,
    broken: Arc<AtomicBool>,
}

#[rpc_core::transport::async_trait]
impl Connector for BreakableConnector {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let connection = transport::connect(&self.endpoint, Duration::from_secs(1)).await?;
        let peer = connection.peer().clone();
        Ok(Connection::new(
            Breakable {
                inner: connection,
                broken: self.broken.clone(),
            },
            peer,
        ))
    }

    fn describe(&self) -> String {
        format!("breakable {}", self.endpoint)
    }
}

fn is_stream<S: AsyncStream>(_: &S) {}

#[tokio::test(start_paused = true)]
async fn a_client_whose_writes_fail_fails_its_calls_at_once_and_reconnects() {
    let (_server, _seen, endpoint) = start("client-write-fails").await;
    let broken = Arc::new(AtomicBool::new(false));
    let connector = BreakableConnector {
        endpoint,
        broken: broken.clone(),
    };
    let client = LifeClient::new(
        Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_with(connector)
            .await
            .unwrap(),
    );
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.sleep(30_000).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    broken.store(true, Ordering::SeqCst);
    // The next write fails: the call that made it and the one already waiting both fail now,
    // with the connection lost, not at their 60 s deadline.
    let started = tokio::time::Instant::now();
    let err = client.sleep(1).await.unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
    assert!(err.report().to_string().contains("write failed"), "{err}");
    let err = slow.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The client reconnects (its new connection writes again).
    broken.store(false, Ordering::SeqCst);
    assert_eq!(client.sleep(1).await.unwrap(), 1);
}

#[derive(Debug)]
struct BreakableAcceptor {
    listener: transport::Listener,
    broken: Arc<AtomicBool>,
}

#[rpc_core::transport::async_trait]
impl rpc_core::Acceptor for BreakableAcceptor {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        let connection = self.listener.accept().await?;
        let peer = connection.peer().clone();
        let stream = Breakable {
            inner: connection,
            broken: self.broken.clone(),
        };
        is_stream(&stream);
        Ok(Connection::new(stream, peer))
    }

    fn local_endpoint(&self) -> Endpoint {
        self.listener.local_endpoint()
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_whose_writes_fail_closes_the_connection() {
    let broken = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let listener = transport::listen(&endpoint("server-write-fails"))
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    let server = Server::builder()
        .service(LifeServer::new(Impl(seen.clone())))
        .acceptor(BreakableAcceptor {
            listener,
            broken: broken.clone(),
        })
        .start()
        .await
        .unwrap();
    let client = LifeClient::new(
        Client::builder()
            .timeout(Duration::from_secs(60))
            .connect(&endpoint)
            .await
            .unwrap(),
    );
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.sleep(30_000).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    broken.store(true, Ordering::SeqCst);
    // The server cannot write this answer: it closes the connection, which fails both calls
    // at once on the client instead of leaving them to their deadline.
    let err = client.sleep(1).await.unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
    let err = slow.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seen.sleeps_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_client_ends_a_stream_at_its_deadline_even_if_the_server_does_not() {
    // A server that answers a stream request with items and never ends it.
    let mut listener = transport::listen(&endpoint("endless-server"))
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    let server = tokio::spawn(async move {
        let connection = listener.accept().await.unwrap();
        let (read, mut write) = connection.into_split();
        let mut frames = FramedRead::new(read, FrameCodec::new());
        let request = frames.next().await.unwrap().unwrap();
        let item = {
            let mut body = BytesMut::new();
            Format::MessagePack.encode(&1u64, &mut body).unwrap();
            frame(
                FrameKind::StreamItem,
                SerializerId::MESSAGE_PACK,
                request.request_id,
                &body,
            )
        };
        let mut sent = 0;
        loop {
            tokio::select! {
                next = frames.next() => match next {
                    Some(Ok(f)) if f.kind == FrameKind::Cancel => return (sent, true),
                    Some(Ok(_)) => {}
                    _ => return (sent, false),
                },
                () = tokio::time::sleep(Duration::from_millis(10)) => {
                    write.write_all(&item).await.unwrap();
                    sent += 1;
                }
            }
        }
    });
    let client = LifeClient::new(Client::builder().connect(&endpoint).await.unwrap());
    let mut stream = client
        .with_options(CallOptions::new().timeout(Duration::from_millis(200)))
        .ticks(0, 0)
        .await
        .unwrap();
    let mut items = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(_)) => items += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended cleanly"),
        }
    };
    assert!(matches!(err, RpcError::DeadlineExceeded), "{err}");
    assert!(stream.next().await.is_none());
    let (sent, cancelled) = server.await.unwrap();
    assert!(cancelled, "the client tells the server");
    assert!(items <= sent && items >= 15, "{items} of {sent}");
}

#[tokio::test(start_paused = true)]
async fn each_call_fails_at_its_own_deadline_and_the_server_is_told() {
    // A server that answers nothing until the fourth request, then answers it and (late) the
    // first; it reports the requests and cancels it reads, in order.
    let mut listener = transport::listen(&endpoint("silent-server")).await.unwrap();
    let endpoint = listener.local_endpoint();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let connection = listener.accept().await.unwrap();
        let (read, mut write) = connection.into_split();
        let mut frames = FramedRead::new(read, FrameCodec::new());
        let mut requests = Vec::new();
        while let Some(Ok(f)) = frames.next().await {
            let _ = events_tx.send((f.kind, f.request_id));
            if f.kind != FrameKind::Request {
                continue;
            }
            requests.push(f.request_id);
            if requests.len() == 4 {
                for id in [requests[0], f.request_id] {
                    let mut body = BytesMut::new();
                    Format::MessagePack.encode(&7u64, &mut body).unwrap();
                    let answer = frame(FrameKind::Response, SerializerId::MESSAGE_PACK, id, &body);
                    write.write_all(&answer).await.unwrap();
                }
            }
        }
    });
    let client = LifeClient::new(Client::builder().connect(&endpoint).await.unwrap());
    let start = tokio::time::Instant::now();
    let call = |secs: u64| {
        let client = &client;
        async move {
            let result = client
                .with_options(CallOptions::new().timeout(Duration::from_secs(secs)))
                .sleep(0)
                .await;
            (result, start.elapsed())
        }
    };
    // Later deadlines first: the connection's one timer moves to the earlier ones.
    let (a, b, c) = tokio::join!(call(5), call(1), call(3));
    for ((result, took), secs) in [(a, 5), (b, 1), (c, 3)] {
        assert_eq!(result, Err(RpcError::DeadlineExceeded));
        let due = Duration::from_secs(secs);
        assert!(
            took >= due && took < due + Duration::from_millis(50),
            "{took:?} for {due:?}"
        );
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(events.recv().await.unwrap());
    }
    let requests: Vec<u64> = seen
        .iter()
        .filter(|(kind, _)| *kind == FrameKind::Request)
        .map(|(_, id)| *id)
        .collect();
    let cancels: Vec<u64> = seen
        .iter()
        .filter(|(kind, _)| *kind == FrameKind::Cancel)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(requests.len(), 3, "{seen:?}");
    // Told of each call as its deadline passed, the earliest first.
    assert_eq!(cancels, [requests[1], requests[2], requests[0]], "{seen:?}");
    // A late answer to a call that gave up is dropped; the connection serves on.
    assert_eq!(client.sleep(0).await, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn the_server_ends_each_call_at_its_own_deadline() {
    let (server, seen, endpoint) = start("server-deadlines").await;
    let mut raw = Raw::connect(&endpoint).await;
    let start = tokio::time::Instant::now();
    // Later deadlines first, and one call with none that answers on its own.
    let sleeping = |id: u64, deadline_ms: Option<u64>, ms: u64| {
        request_with_deadline(
            FrameKind::Request,
            id,
            "sleep",
            deadline_ms.map(Duration::from_millis),
            &(ms,),
        )
    };
    raw.send(&[
        sleeping(1, Some(3_000), 60_000),
        sleeping(2, Some(1_000), 60_000),
        sleeping(3, None, 4_000),
        sleeping(4, Some(2_000), 60_000),
    ])
    .await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let frame = raw.next(Duration::from_secs(10)).await.expect("an answer");
        answers.push((frame.request_id, frame.status, start.elapsed()));
    }
    let expected = [
        (2, Status::DEADLINE_EXCEEDED, 1_000),
        (4, Status::DEADLINE_EXCEEDED, 2_000),
        (1, Status::DEADLINE_EXCEEDED, 3_000),
        (3, Status::OK, 4_000),
    ];
    for ((id, status, took), (want_id, want_status, ms)) in answers.iter().zip(expected) {
        assert_eq!((*id, *status), (want_id, want_status), "{answers:?}");
        let due = Duration::from_millis(ms);
        assert!(
            *took >= due && *took < due + Duration::from_millis(50),
            "{answers:?}"
        );
    }
    // The handlers of the three calls that ran out of time were dropped.
    assert_eq!(seen.sleeps_dropped.load(Ordering::SeqCst), 3);
    assert_eq!(server.in_flight(), 0);
}
