//! Memory limits: what a client that does not read its answers can make a server hold, per
//! connection and for the whole server, and that the other clients are served meanwhile. Raw
//! frames over the memory transport (whose pipes, like sockets, stop taking bytes when nobody
//! reads them), paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::{FrameKind, Header, Metadata, put_request_head};
use rpc_core::transport::{self, Connection};
use rpc_core::{Client, Endpoint, Format, SerializerId, Server, ServerHandle, Status};
use serde_bytes::ByteBuf;
use tokio::io::AsyncWriteExt;

#[rpc_core::service(name = "test.Big")]
trait Big {
    /// `len` bytes, after a yield (so the call outlives the read step that brought it in).
    async fn big(&self, len: usize) -> ByteBuf;
    async fn ping(&self) -> u8;
    /// `len` bytes at once (the call answers within the read step that brought it in).
    async fn big_now(&self, len: usize) -> ByteBuf;
}

/// How many `big_now` calls have run.
static BIG_NOW_CALLS: AtomicUsize = AtomicUsize::new(0);

struct Impl;

impl Big for Impl {
    async fn big(&self, len: usize) -> ByteBuf {
        tokio::task::yield_now().await;
        ByteBuf::from(vec![7u8; len])
    }

    async fn ping(&self) -> u8 {
        1
    }

    async fn big_now(&self, len: usize) -> ByteBuf {
        BIG_NOW_CALLS.fetch_add(1, Ordering::Relaxed);
        ByteBuf::from(vec![7u8; len])
    }
}

const KIB: usize = 1024;

async fn start(
    name: &str,
    connection: usize,
    max_connection: usize,
    max_server: usize,
) -> ServerHandle {
    Server::builder()
        .service(BigServer::new(Impl))
        .buffers(connection, max_connection, max_server)
        .listen(format!("mem://limits-{name}"))
        .start()
        .await
        .unwrap()
}

fn frame(kind: FrameKind, id: u64, body: &[u8], serializer: SerializerId) -> Bytes {
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

fn big_request(id: u64, len: usize) -> Bytes {
    request(id, "big", len)
}

fn request(id: u64, method: &str, len: usize) -> Bytes {
    let mut body = BytesMut::new();
    put_request_head(&mut body, "test.Big", "", method, None, &Metadata::new()).unwrap();
    Format::MessagePack.encode(&(len,), &mut body).unwrap();
    frame(FrameKind::Request, id, &body, SerializerId::MESSAGE_PACK)
}

async fn raw(endpoint: &Endpoint) -> Connection {
    transport::connect(endpoint, Duration::from_secs(1))
        .await
        .unwrap()
}

/// Writes `bytes` in the background until the server stops reading them.
fn flood(mut connection: Connection, bytes: Bytes) -> tokio::task::JoinHandle<Connection> {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.write_all(&bytes)).await;
        connection
    })
}

async fn a_well_behaved_client_is_served(endpoint: &Endpoint) {
    let client = BigClient::new(Client::connect(endpoint).await.unwrap());
    assert_eq!(client.ping().await.unwrap(), 1);
    assert_eq!(client.big(100 * KIB).await.unwrap().len(), 100 * KIB);
}

#[tokio::test(start_paused = true)]
async fn a_ping_flood_that_never_reads_costs_what_the_connection_may_buffer() {
    let server = start("pings", 64 * KIB, 1024 * KIB, 4096 * KIB).await;
    let endpoint = server.local_endpoint().unwrap().clone();
    // 200,000 pings (3.6 MB on the wire) whose pongs the client never reads. Each pong costs
    // far more in memory than its 18 bytes: counting only the bytes let this grow to ~5x the
    // limit.
    let ping = frame(FrameKind::Ping, 0, &[], SerializerId::NONE);
    let pings = Bytes::from(ping.repeat(200_000));
    let flooder = flood(raw(&endpoint).await, pings);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let buffered = server.buffered();
    assert!(
        buffered > 32 * KIB,
        "the flood reached the limit: {buffered}"
    );
    assert!(
        buffered <= 64 * KIB + 128,
        "{buffered} bytes held for one connection"
    );
    a_well_behaved_client_is_served(&endpoint).await;
    drop(flooder.await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.buffered(),
        0,
        "a closed connection's memory is given back"
    );
}

#[tokio::test(start_paused = true)]
async fn answers_ready_at_once_count_toward_the_pause_within_a_burst() {
    let server = start("at-once", 64 * KIB, 1024 * KIB, 4096 * KIB).await;
    let endpoint = server.local_endpoint().unwrap().clone();
    // A thousand calls whose 16 KiB answers are ready as soon as each request is read, all in one
    // write, never read: the server must stop reading after about a connection buffer's worth
    // (not handle the whole burst and hold 16 MB of answers first).
    let requests: Vec<Bytes> = (1..=1000)
        .map(|id| request(id, "big_now", 16 * KIB))
        .collect();
    let flooder = flood(raw(&endpoint).await, Bytes::from(requests.concat()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = BIG_NOW_CALLS.load(Ordering::Relaxed);
    assert!(
        (4..=16).contains(&calls),
        "{calls} calls ran for a client that reads nothing"
    );
    assert!(
        server.buffered() <= 192 * KIB,
        "{} bytes held",
        server.buffered()
    );
    assert_eq!(
        server.connection_count(),
        1,
        "the connection is paused, not closed"
    );
    a_well_behaved_client_is_served(&endpoint).await;
    drop(flooder.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_client_whose_answers_pile_up_past_the_cap_is_disconnected() {
    let server = start("cap", 64 * KIB, 256 * KIB, 4096 * KIB).await;
    let endpoint = server.local_endpoint().unwrap().clone();
    // A hundred calls of 16 KiB answers in one write: they all start before any answers, and
    // their answers (1.6 MB) would all wait for a client that never reads.
    let requests: Vec<Bytes> = (1..=100).map(|id| big_request(id, 16 * KIB)).collect();
    let connection = raw(&endpoint).await;
    let flooder = flood(connection, Bytes::from(requests.concat()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.connection_count(), 0, "the connection was closed");
    assert_eq!(server.buffered(), 0);
    assert_eq!(server.in_flight(), 0);
    a_well_behaved_client_is_served(&endpoint).await;
    drop(flooder.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn over_the_server_budget_the_connection_holding_the_most_is_closed() {
    // Each connection may hold 1 MiB; together they may hold 1.5 MiB.
    let server = start("budget", 64 * KIB, 1024 * KIB, 1536 * KIB).await;
    let endpoint = server.local_endpoint().unwrap().clone();
    let heavy: Vec<Bytes> = (1..=56).map(|id| big_request(id, 16 * KIB)).collect();
    let light: Vec<Bytes> = (1..=40).map(|id| big_request(id, 16 * KIB)).collect();
    let heavy = flood(raw(&endpoint).await, Bytes::from(heavy.concat()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let light = flood(raw(&endpoint).await, Bytes::from(light.concat()));
    // The closed connection's writer is given a second to flush before it is dropped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ~900 KiB and ~640 KiB: each under its own cap, together over the budget. The heavier one
    // goes; the other stays, and so does its memory.
    assert_eq!(server.connection_count(), 1);
    let buffered = server.buffered();
    assert!(
        (600 * KIB..1536 * KIB).contains(&buffered),
        "{buffered} bytes held"
    );
    a_well_behaved_client_is_served(&endpoint).await;
    drop(heavy.await.unwrap());
    drop(light.await.unwrap());
}
