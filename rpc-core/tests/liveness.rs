//! Heartbeats, reconnect and go-away, on the memory transport with paused time so that every
//! timer is deterministic and the tests take no real time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Backoff, Client, ConnectionState, Endpoint, RpcError, Server, ServerHandle};
use support::{Echo, mem_endpoint, target};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(3);

async fn server(endpoint: &Endpoint, echo: Echo) -> ServerHandle {
    Server::builder()
        .service(echo)
        .heartbeat_interval(INTERVAL)
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap()
}

async fn client(endpoint: &Endpoint) -> Client {
    Client::builder()
        .heartbeat_interval(INTERVAL)
        .timeout(Duration::from_secs(60))
        .reconnect(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .connect(endpoint)
        .await
        .unwrap()
}

async fn wait_state(client: &Client, want: impl Fn(&ConnectionState) -> bool) {
    let mut rx = client.watch_state();
    while !want(&rx.borrow_and_update()) {
        rx.changed().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn client_detects_a_half_open_server_within_the_idle_timeout() {
    // A "server" that accepts and then neither reads nor writes: the connection stays open.
    let endpoint = mem_endpoint("half-open-server");
    let mut listener = rpc_core::transport::listen(&endpoint).await.unwrap();
    let held = tokio::spawn(async move {
        let conn = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(conn);
    });
    let client = client(&endpoint).await;
    let start = Instant::now();
    let err = client
        .call::<_, u64>(&target("sleep"), &(1u64,))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::ConnectionLost(ref c) if c.to_string().contains("nothing read")),
        "{err}"
    );
    let waited = start.elapsed();
    assert!(
        waited >= IDLE && waited < IDLE + INTERVAL,
        "declared dead after {waited:?}"
    );
    wait_state(&client, |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn server_closes_a_half_open_client_within_the_idle_timeout() {
    let endpoint = mem_endpoint("half-open-client");
    let server = server(&endpoint, Echo::default()).await;
    // A client that connects and then never writes (so never answers pings).
    let conn = rpc_core::transport::connect(&endpoint, Duration::from_secs(1))
        .await
        .unwrap();
    let (mut read, _write) = conn.into_split();
    let start = Instant::now();
    let mut seen = Vec::new();
    // The server pings, then closes: read until EOF.
    let mut buf = [0u8; 256];
    loop {
        let n = read.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let waited = start.elapsed();
    assert!(
        waited >= IDLE && waited < IDLE + INTERVAL,
        "closed after {waited:?}"
    );
    // It pinged before giving up: kind byte 4 in at least one 18-byte header.
    assert!(
        seen.chunks(18).any(|h| h.len() == 18 && h[3] == 4),
        "no ping seen"
    );
    assert_eq!(server.connection_count(), 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_but_healthy_connection_stays_up() {
    let endpoint = mem_endpoint("idle-healthy");
    let server = server(&endpoint, Echo::default()).await;
    let client = client(&endpoint).await;
    let mut states = client.watch_state();
    states.borrow_and_update();
    // Far longer than the idle timeout with no calls: pings and pongs keep both sides alive.
    tokio::time::sleep(IDLE * 20).await;
    assert!(
        !states.has_changed().unwrap(),
        "state changed: {:?}",
        client.state()
    );
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(server.connection_count(), 1);
    let ok: (u64, u64) = client.call(&target("tagged"), &(3u64, 0u64)).await.unwrap();
    assert_eq!(ok, (3, 6));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn client_reconnects_after_a_server_restart_and_no_call_hangs() {
    let endpoint = mem_endpoint("restart");
    let first = server(&endpoint, Echo::default()).await;
    let client = client(&endpoint).await;
    let ok: (u64, u64) = client.call(&target("tagged"), &(1u64, 0u64)).await.unwrap();
    assert_eq!(ok, (1, 2));

    // A call in flight when the server dies fails at once with "connection lost".
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u64>(&target("sleep"), &(60_000u64,)).await })
    };
    while first.in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    first.abort().await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
    wait_state(&client, |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;

    // Calls made while the server is down wait for the reconnect instead of failing.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, (u64, u64)>(&target("tagged"), &(7u64, 0u64))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = server(&endpoint, Echo::default()).await;
    assert_eq!(waiting.await.unwrap().unwrap(), (7, 14));
    wait_state(&client, |s| *s == ConnectionState::Connected).await;
    let ok: (u64, u64) = client.call(&target("tagged"), &(8u64, 0u64)).await.unwrap();
    assert_eq!(ok, (8, 16));
    second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn reconnect_gives_up_after_the_attempt_limit() {
    let endpoint = mem_endpoint("give-up");
    let first = server(&endpoint, Echo::default()).await;
    let client = Client::builder()
        .heartbeat_interval(INTERVAL)
        .reconnect(
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
                .with_max_attempts(Some(3)),
        )
        .connect(&endpoint)
        .await
        .unwrap();
    first.abort().await;
    wait_state(&client, |s| matches!(s, ConnectionState::Failed { .. })).await;
    let err = client
        .call::<_, ()>(&target("echo"), &())
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Connect { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn go_away_under_load_loses_no_call() {
    let endpoint = mem_endpoint("go-away");
    let first = Arc::new(server(&endpoint, Echo::default()).await);
    let client = client(&endpoint).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));

    // Load: calls that take 500 ms each, started every 10 ms for 3 s.
    let load = {
        let (client, failures, done) = (client.clone(), failures.clone(), done.clone());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            for i in 0..300u64 {
                let (client, failures, done) = (client.clone(), failures.clone(), done.clone());
                calls.push(tokio::spawn(async move {
                    match client
                        .call::<_, (u64, u64)>(&target("tagged"), &(i, 500_000u64))
                        .await
                    {
                        Ok(r) if r == (i, i * 2) => done.fetch_add(1, Ordering::SeqCst),
                        other => {
                            eprintln!("call {i}: {other:?}");
                            failures.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for c in calls {
                c.await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(first.in_flight() > 0);
    // Drain the first server; once it has stopped listening, a replacement takes the address.
    let draining = {
        let first = first.clone();
        tokio::spawn(async move { first.shutdown(Duration::from_secs(10)).await })
    };
    wait_state(&client, |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    let second = server(&endpoint, Echo::default()).await;
    load.await.unwrap();
    draining.await.unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(done.load(Ordering::SeqCst), 300);
    second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_cannot_make_the_server_buffer_without_bound() {
    use bytes::BytesMut;
    use rpc_core::codec::{Frame, FrameCodec, FrameKind, RequestHead};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    const REQUESTS: u64 = 400_000;
    let endpoint = mem_endpoint("never-reads");
    let server = server(&endpoint, Echo::default()).await;
    // A peer that sends requests as fast as it can and never reads an answer.
    let conn = rpc_core::transport::connect(&endpoint, Duration::from_secs(1))
        .await
        .unwrap();
    let (_read, mut write) = conn.into_split();
    let sender = tokio::spawn(async move {
        let head = RequestHead {
            service: "no.such.Service".into(),
            method: "m".into(),
            ..Default::default()
        };
        let mut body = BytesMut::new();
        head.put(&mut body).unwrap();
        let body = body.freeze();
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        let mut sent = 0u64;
        for id in 0..REQUESTS {
            let frame = Frame::new(FrameKind::Request, id)
                .with_serializer(rpc_core::SerializerId::MESSAGE_PACK)
                .with_body(body.clone());
            codec.encode(frame, &mut wire).unwrap();
            if wire.len() > 64 * 1024 || id + 1 == REQUESTS {
                if write.write_all(&wire).await.is_err() {
                    // The server gave up on the peer (it read nothing for the idle timeout).
                    return sent;
                }
                sent = id + 1;
                wire.clear();
            }
        }
        sent
    });
    // Each request earns an error answer of ~40 bytes: 400,000 of them would be ~16 MB queued
    // for a peer that reads nothing. The server stops reading it at 4 MiB instead, so the
    // sender blocks on a full pipe (and is dropped at the idle timeout) before sending them all.
    tokio::time::sleep(Duration::from_secs(5)).await;
    if sender.is_finished() {
        let sent = sender.await.unwrap();
        assert!(
            sent < REQUESTS,
            "the server read all {sent} requests of a peer that reads nothing"
        );
    }

    // Everyone else is served as usual meanwhile.
    let client = client(&endpoint).await;
    let ok: (u64, u64) = client
        .call(&target("tagged"), &(11u64, 0u64))
        .await
        .unwrap();
    assert_eq!(ok, (11, 22));
    server.abort().await;
}
