//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses some of these

use std::time::Duration;

use rpc_transport::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes sent each way by [`exchange`]: several times the memory pipe's 64 KiB buffer, so
/// both directions must make progress at once.
pub(crate) const EXCHANGE_LEN: usize = 256 * 1024;

/// A recognisable byte pattern, different for each `seed`.
pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Splits both connections and sends [`EXCHANGE_LEN`] bytes each way at once, each half in its
/// own task; each side writes, shuts down its write half, and reads the other side's bytes to
/// the end. Fails rather than hangs if the exchange stalls.
pub(crate) async fn exchange(client: Connection, server: Connection) {
    tokio::time::timeout(Duration::from_secs(30), exchange_unbounded(client, server))
        .await
        .expect("the exchange stalled");
}

async fn exchange_unbounded(client: Connection, server: Connection) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = pattern(0x11, EXCHANGE_LEN);
    let down = pattern(0x22, EXCHANGE_LEN);

    let client_writer = tokio::spawn({
        let up = up.clone();
        async move {
            client_write.write_all(&up).await.unwrap();
            client_write.shutdown().await.unwrap();
        }
    });
    let server_writer = tokio::spawn({
        let down = down.clone();
        async move {
            server_write.write_all(&down).await.unwrap();
            server_write.shutdown().await.unwrap();
        }
    });
    let server_reader = tokio::spawn(async move {
        let mut received = Vec::new();
        server_read.read_to_end(&mut received).await.unwrap();
        received
    });
    let mut received_down = Vec::new();
    client_read.read_to_end(&mut received_down).await.unwrap();

    client_writer.await.unwrap();
    server_writer.await.unwrap();
    let received_up = server_reader.await.unwrap();
    assert!(
        received_up == up,
        "server received other bytes than the client sent"
    );
    assert!(
        received_down == down,
        "client received other bytes than the server sent"
    );
}

/// Like [`exchange`], for a transport without half-close (a WebSocket's close ends both
/// directions): both sides send [`EXCHANGE_LEN`] bytes at once and read the other side's, and
/// only then shut down; each then reads the end of the stream with nothing more on it.
pub(crate) async fn exchange_then_close(client: Connection, server: Connection) {
    tokio::time::timeout(Duration::from_secs(30), async move {
        let up = pattern(0x11, EXCHANGE_LEN);
        let down = pattern(0x22, EXCHANGE_LEN);
        let client_side = tokio::spawn(duplex_then_close(client, up.clone(), down.clone()));
        let server_side = tokio::spawn(duplex_then_close(server, down, up));
        client_side.await.unwrap();
        server_side.await.unwrap();
    })
    .await
    .expect("the exchange stalled");
}

/// Writes `send` while reading `expect` on one connection, then shuts down and reads to the end.
async fn duplex_then_close(connection: Connection, send: Vec<u8>, expect: Vec<u8>) {
    let (mut read, mut write) = connection.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&send).await.unwrap();
        write.flush().await.unwrap();
        write
    });
    let mut received = vec![0; expect.len()];
    read.read_exact(&mut received).await.unwrap();
    assert!(received == expect, "received other bytes than were sent");
    let mut write = writer.await.unwrap();
    write.shutdown().await.unwrap();
    let mut rest = Vec::new();
    read.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{} bytes after the exchange", rest.len());
}
