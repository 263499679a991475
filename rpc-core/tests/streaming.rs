//! Server streaming: order, bounded buffering end to end, and cancellation by dropping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{CallOptions, Caller, Client, Format, RpcStream, Server};
use support::{Echo, mem_endpoint, target};

/// The byte window the bounded-buffering tests announce (the smallest a server accepts).
const WINDOW_BYTES: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_items_arrive_in_order() {
    let endpoint = mem_endpoint("stream-100k");
    let server = Server::builder()
        .service(Echo::default())
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .format(Format::Postcard)
        .connect(&endpoint)
        .await
        .unwrap();
    let raw = client
        .call_stream(&target("count"), &CallOptions::new(), &(100_000u64,))
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    let mut expected = 0u64;
    while let Some(item) = stream.next().await {
        assert_eq!(item.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, 100_000);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_stops_reading_bounds_what_the_server_buffers() {
    let echo = Echo::default();
    let probe = echo.probe.clone();
    let endpoint = mem_endpoint("stream-slow");
    let server = Server::builder()
        .service(echo)
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .stream_window(WINDOW_BYTES)
        .connect(&endpoint)
        .await
        .unwrap();
    let raw = client
        .call_stream(&target("ticks"), &CallOptions::new(), &())
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    let mut consumed = 0;
    for expected in 0..100u64 {
        assert_eq!(stream.next().await.unwrap().unwrap(), expected);
        consumed += 1;
    }
    // Stop reading for a long while: the producer must stop too.
    tokio::time::sleep(Duration::from_secs(30)).await;
    // At most the window's bytes of items are ahead of the reader (a frame is at least its
    // 20-byte header), plus the one item the server holds until there is room for it.
    let produced = probe.produced.load(Ordering::SeqCst);
    assert!(
        produced <= consumed + WINDOW_BYTES / rpc_codec::HEADER_LEN + 1,
        "server produced {produced} items for {consumed} consumed"
    );
    // Other calls on the same connection are not blocked by the stalled stream.
    let ok: (u64, u64) = client.call(&target("tagged"), &(4u64, 0u64)).await.unwrap();
    assert_eq!(ok, (4, 8));
    // Reading again resumes where it stopped.
    assert_eq!(stream.next().await.unwrap().unwrap(), 100);
    drop(stream);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dropping_the_stream_stops_the_producer() {
    let echo = Echo::default();
    let probe = echo.probe.clone();
    let endpoint = mem_endpoint("stream-drop");
    let server = Server::builder()
        .service(echo)
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let client = Client::builder().connect(&endpoint).await.unwrap();
    let raw = client
        .call_stream(&target("ticks"), &CallOptions::new(), &())
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    for expected in 0..10u64 {
        assert_eq!(stream.next().await.unwrap().unwrap(), expected);
    }
    drop(stream);
    tokio::time::timeout(Duration::from_secs(5), probe.wait_producer_dropped())
        .await
        .expect("the producer was dropped after the client dropped the stream");
    // The call's slot was released.
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.in_flight() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    server.shutdown(Duration::from_secs(1)).await;
}

/// Streams `count` items of `size` bytes, counting what it produced.
#[rpc_core::service(name = "test.Blobs")]
trait Blobs {
    async fn blobs(&self, size: u64, count: u64) -> rpc_core::ServerStream<Vec<u8>>;
}

#[derive(Clone, Default)]
struct BlobsImpl {
    produced: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Blobs for BlobsImpl {
    async fn blobs(&self, size: u64, count: u64) -> rpc_core::ServerStream<Vec<u8>> {
        let produced = self.produced.clone();
        rpc_core::ServerStream::iter((0..count).map(move |i| {
            produced.fetch_add(1, Ordering::SeqCst);
            vec![i as u8; size as usize]
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn large_items_are_bounded_by_the_byte_window_not_by_the_item_count() {
    let blobs = BlobsImpl::default();
    let produced = blobs.produced.clone();
    let endpoint = mem_endpoint("stream-blobs");
    let server = Server::builder()
        .service(BlobsServer::new(blobs))
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let client = BlobsClient::new(
        Client::builder()
            .stream_window(64 * 1024)
            .connect(&endpoint)
            .await
            .unwrap(),
    );
    let mut stream = client.blobs(16 * 1024, 1_000).await.unwrap();
    for i in 0..3u8 {
        assert_eq!(stream.next().await.unwrap().unwrap(), vec![i; 16 * 1024]);
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Four 16 KiB items fill the 64 KiB window (with their headers, the fourth goes beyond
    // it); one more waits at the server. An item window of 256 would have let 256 through.
    let ahead = produced.load(Ordering::SeqCst) - 3;
    assert!(ahead <= 5, "{ahead} items produced ahead of the reader");
    // The rest arrives in order as it is read.
    let mut next = 3u64;
    while let Some(item) = stream.next().await {
        assert_eq!(item.unwrap(), vec![next as u8; 16 * 1024]);
        next += 1;
    }
    assert_eq!(next, 1_000);
    server.shutdown(Duration::from_secs(1)).await;
}

/// A server that knows nothing of byte windows (as servers before them did): it starts every
/// stream with 256 items of credit, adds what each StreamCredit grants (keeping at most 1,024),
/// and never sends beyond it.
async fn item_counting_server(listener: tokio::net::TcpListener, items: u64) {
    use bytes::BytesMut;
    use rpc_codec::{Frame, FrameCodec, FrameKind, StreamCredit};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    let (socket, _) = listener.accept().await.unwrap();
    let (read, mut write) = socket.into_split();
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let request: Frame = frames.next().await.unwrap().unwrap();
    assert_eq!(request.kind, FrameKind::Request);
    let id = request.request_id;
    let frame = |kind, body: &[u8]| {
        let mut out = BytesMut::new();
        put_frame(&mut out, kind, id, body);
        out
    };
    let (mut credit, mut sent) = (256u64, 0u64);
    while sent < items {
        let mut out = BytesMut::new();
        while credit > 0 && sent < items {
            let item = Format::Postcard.to_bytes(&sent).unwrap();
            out.extend_from_slice(&frame(FrameKind::StreamItem, &item));
            credit -= 1;
            sent += 1;
        }
        write.write_all(&out).await.unwrap();
        if sent == items {
            break;
        }
        let grant: Frame = frames.next().await.unwrap().unwrap();
        assert_eq!(grant.kind, FrameKind::StreamCredit);
        credit = (credit + u64::from(StreamCredit::parse(&grant.body).unwrap().0)).min(1_024);
    }
    write
        .write_all(&frame(FrameKind::StreamEnd, &[]))
        .await
        .unwrap();
    // Stay until the client is done.
    while frames.next().await.is_some() {}
}

#[tokio::test]
async fn a_stream_from_a_server_that_counts_only_items_never_stalls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(item_counting_server(listener, 5_000));
    let client = Client::builder()
        .format(Format::Postcard)
        .connect(format!("tcp://{addr}").as_str())
        .await
        .unwrap();
    let raw = client
        .call_stream(&target("count"), &CallOptions::new(), &(5_000u64,))
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    let mut expected = 0u64;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream stalled")
    {
        assert_eq!(item.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, 5_000);
    drop(stream);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn a_server_that_sends_beyond_the_credit_loses_the_connection() {
    use bytes::BytesMut;
    use rpc_codec::{FrameCodec, FrameKind, WINDOWED_STREAM_CREDIT};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (written_tx, written) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut frames = FramedRead::new(read, FrameCodec::new());
        let request = frames.next().await.unwrap().unwrap();
        // One item more than a client that announced a byte window can have granted, without
        // waiting for any grant.
        let item = Format::Postcard.to_bytes(&7u64).unwrap();
        let mut out = BytesMut::new();
        for _ in 0..=WINDOWED_STREAM_CREDIT {
            put_frame(&mut out, FrameKind::StreamItem, request.request_id, &item);
        }
        write.write_all(&out).await.unwrap();
        written_tx.send(()).unwrap();
        while frames.next().await.is_some() {}
    });
    let client = Client::builder()
        .format(Format::Postcard)
        .connect(format!("tcp://{addr}").as_str())
        .await
        .unwrap();
    let raw = client
        .call_stream(&target("count"), &CallOptions::new(), &(1u64,))
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    written.await.unwrap();
    // Nothing is read (so nothing granted) until the client has dropped the connection.
    let mut state = client.watch_state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| !matches!(s, rpc_core::ConnectionState::Connected)),
    )
    .await
    .expect("the client drops the connection")
    .unwrap();
    // Every item within the credit arrives, then the stream fails: the client closed the
    // connection on the one beyond it.
    let mut items = 0u32;
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends")
        {
            Some(Ok(7)) => items += 1,
            Some(Ok(other)) => panic!("item {other}"),
            Some(Err(e)) => break e,
            None => panic!("the stream ended normally"),
        }
    };
    assert_eq!(items, WINDOWED_STREAM_CREDIT);
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain += &format!(": {cause}");
        source = cause.source();
    }
    assert!(chain.contains("more than its credit"), "{chain}");
    drop(stream);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn a_server_that_keeps_the_window_is_granted_by_bytes_not_every_128_items() {
    use bytes::BytesMut;
    use rpc_codec::{FrameCodec, FrameKind};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    const ITEMS: u64 = 20_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that keeps the window: 20,000 items of about 21 bytes are well inside 2 MiB, so
    // it sends them all at once, then counts the grants that come back.
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut frames = FramedRead::new(read, FrameCodec::new());
        let request = frames.next().await.unwrap().unwrap();
        let head = rpc_codec::RequestHeadRef::parse(&request.body).unwrap().0;
        assert!(
            head.metadata_iter()
                .any(|(key, _)| key == rpc_codec::STREAM_WINDOW_KEY),
            "the client announces its window"
        );
        let mut out = BytesMut::new();
        let mut frame = |kind, body: &[u8]| put_frame(&mut out, kind, request.request_id, body);
        for i in 0..ITEMS {
            frame(
                FrameKind::StreamItem,
                &Format::Postcard.to_bytes(&i).unwrap(),
            );
        }
        frame(FrameKind::StreamEnd, &[]);
        write.write_all(&out).await.unwrap();
        let mut grants = 0;
        while let Some(Ok(frame)) = frames.next().await {
            if frame.kind == FrameKind::StreamCredit {
                grants += 1;
            }
        }
        grants
    });
    let client = Client::builder()
        .format(Format::Postcard)
        .connect(format!("tcp://{addr}").as_str())
        .await
        .unwrap();
    let raw = client
        .call_stream(&target("count"), &CallOptions::new(), &(ITEMS,))
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    let mut expected = 0;
    while let Some(item) = stream.next().await {
        assert_eq!(item.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, ITEMS);
    drop(stream);
    drop(client);
    // Once more arrived than a 256-item server could have sent, grants wait for a quarter of
    // the window's bytes (512 KiB, more than the whole stream): at most the one grant of 128
    // made before the client could tell (every 128 items would have been 156).
    let grants = server.await.unwrap();
    assert!(grants <= 1, "{grants} grants");
}

/// Appends a postcard frame, as a hand-written server sends it.
fn put_frame(out: &mut bytes::BytesMut, kind: rpc_codec::FrameKind, id: u64, body: &[u8]) {
    use bytes::BufMut;
    out.put_slice(
        &rpc_codec::Header {
            kind,
            serializer: rpc_codec::SerializerId::POSTCARD,
            status: rpc_codec::Status::OK,
            request_id: id,
            body_len: body.len() as u32,
        }
        .to_bytes(),
    );
    out.put_slice(body);
}
