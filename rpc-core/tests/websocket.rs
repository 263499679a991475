//! Calls over the WebSocket transport (`ws://`), alone and beside TCP on one server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rpc_core::{CallOptions, Caller, Client, Endpoint, Format, RpcStream, Server};
use serde_bytes::ByteBuf;
use support::{Echo, target};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn client(endpoint: &Endpoint) -> Client {
    Client::builder()
        .format(Format::Postcard)
        .connect(endpoint)
        .await
        .expect("client connects")
}

async fn echo_and_tag(client: &Client) {
    let payload = ByteBuf::from(vec![7u8; 1000]);
    let back: ByteBuf = client
        .call(&target("echo"), &(payload.clone(),))
        .await
        .unwrap();
    assert_eq!(back, payload);
    let (tag, double): (u64, u64) = client
        .call(&target("tagged"), &(21u64, 0u64))
        .await
        .unwrap();
    assert_eq!((tag, double), (21, 42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming_calls_over_ws() {
    support::init_tracing();
    let server = Server::builder()
        .service(Echo::default())
        .max_frame_len(16 << 20)
        .listen("ws://127.0.0.1:0/rpc")
        .start()
        .await
        .unwrap();
    let local = server.local_endpoint().unwrap().clone();
    assert_eq!(local.scheme(), "ws");
    for format in [Format::MessagePack, Format::Postcard, Format::Json] {
        let client = Client::builder()
            .format(format)
            .connect(&local)
            .await
            .unwrap();
        echo_and_tag(&client).await;
    }

    let client = Client::builder()
        .format(Format::Postcard)
        .max_frame_len(16 << 20)
        .connect(&local)
        .await
        .unwrap();
    // A frame larger than a WebSocket message (8 MiB + 18 bytes) crosses two, each way.
    let big = ByteBuf::from(vec![0xA5u8; 9 << 20]);
    let back: ByteBuf = client.call(&target("echo"), &(big.clone(),)).await.unwrap();
    assert_eq!(back, big);
    let raw = client
        .call_stream(&target("count"), &CallOptions::new(), &(10_000u64,))
        .await
        .unwrap();
    let mut stream = RpcStream::<u64>::new(raw);
    let mut expected = 0u64;
    while let Some(item) = stream.next().await {
        assert_eq!(item.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, 10_000);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_answers_on_tcp_and_ws_at_once() {
    let server = Server::builder()
        .service(Echo::default())
        .listen("tcp://127.0.0.1:0")
        .listen("ws://127.0.0.1:0/")
        .start()
        .await
        .unwrap();
    let schemes: Vec<&str> = server
        .local_endpoints()
        .iter()
        .map(Endpoint::scheme)
        .collect();
    assert_eq!(schemes, ["tcp", "ws"]);
    let tcp = client(&server.local_endpoints()[0]).await;
    let ws = client(&server.local_endpoints()[1]).await;
    let (a, b) = tokio::join!(echo_and_tag(&tcp), echo_and_tag(&ws));
    let ((), ()) = (a, b);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_closes_only_its_own_connection() {
    let server = Server::builder()
        .service(Echo::default())
        .listen("ws://127.0.0.1:0/")
        .start()
        .await
        .unwrap();
    let local = server.local_endpoint().unwrap().clone();
    let good = client(&local).await;
    echo_and_tag(&good).await;

    let (mut rude, _) = tokio_tungstenite::client_async(
        local.to_string(),
        tokio::net::TcpStream::connect(match &local {
            Endpoint::Ws { host, port, .. } => format!("{host}:{port}"),
            other => panic!("{other:?}"),
        })
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    rude.send(Message::text("{\"method\":\"echo\"}"))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rude.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.unwrap().code, CloseCode::Unsupported);

    echo_and_tag(&good).await;
    server.shutdown(Duration::from_secs(1)).await;
}
