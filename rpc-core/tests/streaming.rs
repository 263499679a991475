//! Server streaming: order, bounded buffering end to end, and cancellation by dropping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{CallOptions, Caller, Client, Format, RpcStream, Server};
use support::{Echo, mem_endpoint, target};

/// The client grants credit for 256 items up front; the server may run at most that far ahead.
const WINDOW: usize = 256;

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
    let client = Client::builder().connect(&endpoint).await.unwrap();
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
    let produced = probe.produced.load(Ordering::SeqCst);
    assert!(
        produced <= consumed + WINDOW + 1,
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
