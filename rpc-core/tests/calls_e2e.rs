//! End-to-end calls over real sockets (127.0.0.1, Unix) and memory pipes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{CallOptions, Caller, Client, Endpoint, Format, RpcError, Server, ServerHandle};
use serde_bytes::ByteBuf;
use support::{Echo, mem_endpoint, target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(echo: Echo, endpoint: Endpoint) -> (ServerHandle, Endpoint) {
    let server = Server::builder()
        .service(echo)
        .listen(endpoint)
        .start()
        .await
        .expect("server starts");
    let local = server.local_endpoint().expect("one endpoint").clone();
    (server, local)
}

async fn client(endpoint: &Endpoint, format: Format) -> Client {
    Client::builder()
        .format(format)
        .connect(endpoint)
        .await
        .expect("client connects")
}

fn formats() -> [Format; 3] {
    [Format::MessagePack, Format::Postcard, Format::Json]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_with_every_format() {
    support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let endpoints: Vec<Endpoint> = vec![
        "tcp://127.0.0.1:0".parse().unwrap(),
        Endpoint::unix(dir.path().join("rpc.sock")),
        mem_endpoint("matrix"),
    ];
    for endpoint in endpoints {
        let (server, local) = start(Echo::default(), endpoint).await;
        for format in formats() {
            let client = client(&local, format.clone()).await;
            let payload = ByteBuf::from(vec![7u8; 1000]);
            let back: ByteBuf = client
                .call(&target("echo"), &(payload.clone(),))
                .await
                .unwrap();
            assert_eq!(back, payload, "{local} {format}");
            let (tag, double): (u64, u64) = client
                .call(&target("tagged"), &(21u64, 0u64))
                .await
                .unwrap();
            assert_eq!((tag, double), (21, 42), "{local} {format}");
            // A large body crosses many reads and goes through the vectored write path.
            let big = ByteBuf::from(vec![0xA5u8; 1 << 20]);
            let back: ByteBuf = client.call(&target("echo"), &(big.clone(),)).await.unwrap();
            assert_eq!(back, big, "{local} {format}");
        }
        server.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_from_eight_clients_each_get_their_own_answer() {
    let server = Server::builder()
        .service(Echo::default())
        .max_concurrent_per_connection(4096)
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let local = server.local_endpoint().unwrap().clone();
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let client = client(&local, formats()[c as usize % 3].clone()).await;
        for i in 0..1250u64 {
            let client = client.clone();
            let tag = c * 1_000_000 + i;
            // Random delays reorder the answers on the wire.
            let delay = fastrand::u64(0..2000);
            tasks.push(tokio::spawn(async move {
                let (got, double): (u64, u64) =
                    client.call(&target("tagged"), &(tag, delay)).await.unwrap();
                assert_eq!((got, double), (tag, tag * 2));
            }));
        }
    }
    assert_eq!(tasks.len(), 10_000);
    for task in tasks {
        task.await.unwrap();
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn deadline_exceeded_is_seen_by_the_client_and_stops_the_handler() {
    let echo = Echo::default();
    let probe = echo.probe.clone();
    let (server, local) = start(echo, mem_endpoint("deadline")).await;
    let client = client(&local, Format::MessagePack).await;
    let options = CallOptions::new().timeout(Duration::from_millis(50));
    let err = client
        .call_unary(&target("sleep"), &options, &(60_000u64,))
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::DeadlineExceeded);
    // The server stops the handler at the deadline (or on the cancel frame): its future is
    // dropped before it finished.
    tokio::time::timeout(Duration::from_secs(5), probe.wait_dropped(1))
        .await
        .expect("handler dropped");
    assert_eq!(probe.finished.load(Ordering::SeqCst), 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler() {
    let echo = Echo::default();
    let probe = echo.probe.clone();
    let (server, local) = start(echo, mem_endpoint("cancel")).await;
    let client = client(&local, Format::Postcard).await;
    let call_client = client.clone();
    let call = tokio::spawn(async move {
        call_client
            .call::<_, u64>(&target("sleep"), &(60_000u64,))
            .await
    });
    // Wait until the handler runs, then drop the caller's future.
    while probe.started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    call.abort();
    tokio::time::timeout(Duration::from_secs(5), probe.wait_dropped(1))
        .await
        .expect("the cancel frame reached the handler");
    assert_eq!(server.in_flight(), 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unknown_service_method_and_bad_arguments_get_their_status() {
    let (server, local) = start(Echo::default(), mem_endpoint("status")).await;
    for format in formats() {
        let client = client(&local, format.clone()).await;
        let mut wrong = target("echo");
        wrong.service = "no.Such";
        let err = client.call::<_, ()>(&wrong, &()).await.unwrap_err();
        assert!(
            matches!(err, RpcError::ServiceNotFound(ref m) if m.contains("no.Such")),
            "{err}"
        );

        let err = client
            .call::<_, ()>(&target("nope"), &())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::MethodNotFound(ref m) if m.contains("nope")),
            "{err}"
        );

        let err = client
            // No arguments where one is expected: postcard is not self-describing, so the
            // mismatch must be one every format can detect.
            .call::<_, u64>(&target("sleep"), &())
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::BadRequest(_)), "{format}: {err}");

        let err = client
            .call::<_, ()>(&target("fail"), &("boom",))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Application(ref m) if m.contains("boom")),
            "{err}"
        );

        let err = client
            .call::<_, ()>(&target("panic"), &())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Internal(ref m) if m.contains("panicked")),
            "{err}"
        );

        // The connection survived every error above.
        let ok: (u64, u64) = client.call(&target("tagged"), &(1u64, 0u64)).await.unwrap();
        assert_eq!(ok, (1, 2));
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn typed_application_errors_decode() {
    let (server, local) = start(Echo::default(), mem_endpoint("typed")).await;
    let client = client(&local, Format::Postcard).await;
    let err = client
        .call_unary(&target("fail"), &CallOptions::new(), &("typed",))
        .await
        .unwrap()
        .decode_result::<(), String>()
        .unwrap_err();
    assert_eq!(err, RpcError::Application("typed".to_owned()));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn metadata_and_one_way_calls_arrive() {
    let echo = Echo::default();
    let probe = echo.probe.clone();
    let (server, local) = start(echo, mem_endpoint("meta")).await;
    let client = client(&local, Format::Json).await;
    let options = CallOptions::new()
        .metadata("trace-id", "abc")
        .unwrap()
        .metadata("tenant", "ü")
        .unwrap();
    let pairs: Vec<(String, String)> = client
        .call_unary(&target("metadata"), &options, &())
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(
        pairs,
        vec![
            ("trace-id".into(), "abc".into()),
            ("tenant".into(), "ü".into())
        ]
    );
    for _ in 0..3 {
        client
            .call_one_way(&target("note"), &CallOptions::new(), &())
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), probe.wait_one_way(3))
        .await
        .expect("one-way calls ran");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn server_stream_delivers_in_order() {
    let (server, local) = start(Echo::default(), mem_endpoint("stream")).await;
    let client = client(&local, Format::Postcard).await;
    let stream = client
        .call_stream(&target("count"), &CallOptions::new(), &(1000u64,))
        .await
        .unwrap();
    let items: Vec<u64> = rpc_core::RpcStream::<u64>::new(stream)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_call_fails_pending_calls_promptly() {
    let (server, local) = start(Echo::default(), "tcp://127.0.0.1:0".parse().unwrap()).await;
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .connect(&local)
        .await
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client.call::<_, u64>(&target("sleep"), &(60_000u64,)).await
        }));
    }
    while server.in_flight() < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = tokio::time::Instant::now();
    server.abort().await;
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
    }
    // Promptly: not at the 60 s deadline.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_their_connection() {
    let server = Server::builder()
        .service(Echo::default())
        .max_frame_len(1024)
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let local = server.local_endpoint().unwrap().clone();
    let Endpoint::Tcp { host, port } = &local else {
        unreachable!()
    };
    let addr = format!("{host}:{port}");
    let good = client(&local, Format::MessagePack).await;

    // Garbage: the server closes the connection (read sees EOF).
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("server closes")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // An oversized length: closed before the body is sent.
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let header = rpc_core::codec::Header {
        kind: rpc_core::codec::FrameKind::Request,
        serializer: rpc_core::SerializerId::MESSAGE_PACK,
        status: rpc_core::Status::OK,
        request_id: 1,
        body_len: u32::MAX,
    };
    raw.write_all(&header.to_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("server closes")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // The well-behaved client never noticed.
    let ok: (u64, u64) = good.call(&target("tagged"), &(5u64, 0u64)).await.unwrap();
    assert_eq!(ok, (5, 10));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn busy_when_the_connection_limit_is_reached() {
    let echo = Echo::default();
    let probe = echo.probe.clone();
    let server = Server::builder()
        .service(echo)
        .max_concurrent_per_connection(2)
        .listen(mem_endpoint("busy"))
        .start()
        .await
        .unwrap();
    let local = server.local_endpoint().unwrap().clone();
    let client = client(&local, Format::MessagePack).await;
    let mut sleepers = Vec::new();
    for _ in 0..2 {
        let client = client.clone();
        sleepers.push(tokio::spawn(async move {
            client.call::<_, u64>(&target("sleep"), &(60_000u64,)).await
        }));
    }
    while probe.started.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    let err = client
        .call::<_, (u64, u64)>(&target("tagged"), &(1u64, 0u64))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::ServerBusy(_)), "{err}");
    for s in sleepers {
        s.abort();
    }
    server.abort().await;
}

#[tokio::test]
async fn oversized_requests_fail_locally() {
    let (server, local) = start(Echo::default(), mem_endpoint("big")).await;
    let client = Client::builder()
        .max_frame_len(1024)
        .connect(&local)
        .await
        .unwrap();
    let err = client
        .call::<_, ByteBuf>(&target("echo"), &(ByteBuf::from(vec![0u8; 2048]),))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::BadRequest(ref m) if m.contains("exceeds")),
        "{err}"
    );
    let _ = Arc::new(());
    server.shutdown(Duration::from_secs(1)).await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_builtin_quic_with_every_format() {
    let (server, local) = start(Echo::default(), "quic://127.0.0.1:0".parse().unwrap()).await;
    assert!(
        matches!(&local, Endpoint::Quic { port, .. } if *port != 0),
        "{local}"
    );
    for format in formats() {
        let client = client(&local, format.clone()).await;
        let payload = ByteBuf::from(vec![7u8; 1000]);
        let back: ByteBuf = client
            .call(&target("echo"), &(payload.clone(),))
            .await
            .unwrap();
        assert_eq!(back, payload, "{format}");
        let big = ByteBuf::from(vec![0xA5u8; 1 << 20]);
        let back: ByteBuf = client.call(&target("echo"), &(big.clone(),)).await.unwrap();
        assert_eq!(back, big, "{format}");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_quic_endpoints_that_pin_each_other() {
    use rpc_core::transport::quic::{Identity, PeerAuth, QuicConfig, QuicEndpoint};

    let server_identity = Identity::generate().unwrap();
    let client_identity = Identity::generate().unwrap();
    let server_key = server_identity.public_key();
    let client_key = client_identity.public_key();
    let server_endpoint = QuicEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        QuicConfig::new(server_identity).peer(PeerAuth::pinned(client_key)),
    )
    .unwrap();
    let addr = server_endpoint.local_addr().unwrap();
    let server = Server::builder()
        .service(Echo::default())
        .acceptor(server_endpoint)
        .start()
        .await
        .unwrap();
    assert_eq!(server.local_endpoint(), Some(&Endpoint::quic(addr)));

    let client_endpoint = QuicEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        QuicConfig::new(client_identity).peer(PeerAuth::pinned(server_key)),
    )
    .unwrap();
    let client = Client::builder()
        .connect_with(client_endpoint.connector(addr))
        .await
        .unwrap();
    let (tag, double): (u64, u64) = client
        .call(&target("tagged"), &(21u64, 0u64))
        .await
        .unwrap();
    assert_eq!((tag, double), (21, 42));
    drop(client);
    server.shutdown(Duration::from_secs(1)).await;
}
