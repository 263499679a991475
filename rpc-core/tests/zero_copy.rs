//! `Bytes` arguments and results cross the framework without being copied: a 64 KiB echo over
//! real TCP on loopback, with the bytes allocated counted per call: an encode or a decode that
//! copied a payload would allocate its size again.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::alloc::System;

use bytes::Bytes;
use rpc_core::{Client, Format, Server};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The payload: 64 KiB.
const LARGE: usize = 64 << 10;

#[rpc_core::service(name = "test.Blob")]
trait Blob {
    /// Returns its argument; the server checks nothing else.
    async fn echo(&self, payload: Bytes) -> Bytes;
    /// Returns its argument as the success of a result.
    async fn echo_result(&self, payload: bytes::Bytes) -> Result<bytes::Bytes, String>;
}

struct BlobImpl;

impl Blob for BlobImpl {
    async fn echo(&self, payload: Bytes) -> Bytes {
        payload
    }

    async fn echo_result(&self, payload: bytes::Bytes) -> Result<bytes::Bytes, String> {
        Ok(payload)
    }
}

/// Bytes allocated per call, in payloads (64 KiB), over `calls` sequential echoes after a
/// warm-up that grows the connection's buffers to their size.
async fn payloads_allocated_per_call(client: &BlobClient, payload: &Bytes, calls: u32) -> f64 {
    for _ in 0..5 {
        client.echo(payload.clone()).await.unwrap();
        client.echo_result(payload.clone()).await.unwrap();
    }
    let region = Region::new(ALLOCATOR);
    for _ in 0..calls {
        let back = client.echo(payload.clone()).await.unwrap();
        assert!(back == *payload);
        let back = client.echo_result(payload.clone()).await.unwrap();
        assert!(back == *payload);
    }
    let stats = region.change();
    stats.bytes_allocated as f64 / LARGE as f64 / f64::from(2 * calls)
}

#[tokio::test(flavor = "current_thread")]
async fn a_64_kib_echo_is_copied_only_by_the_socket() {
    let server = Server::builder()
        .service(BlobServer::new(BlobImpl))
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().clone();
    let payload = Bytes::from((0..LARGE as u32).map(|i| i as u8).collect::<Vec<u8>>());
    for format in [Format::Postcard, Format::MessagePack] {
        let client = BlobClient::new(
            Client::builder()
                .format(format.clone())
                .connect(&endpoint)
                .await
                .unwrap(),
        );
        let per_call = payloads_allocated_per_call(&client, &payload, 50).await;
        println!("{format}: {per_call:.2} payloads' worth of bytes allocated per call");
        // Two are left, and neither is a copy: the buffers the socket reads the request and
        // the answer into (a frame's payload keeps its read buffer until it is dropped, so the
        // next read gets a new one). The payload is written from its own memory (lent to the
        // frame, vectored writes) on both sides and decoded as a slice of the read buffer on
        // both sides; a copy anywhere would need a buffer of its own and add one (five per
        // call before `Bytes` was decoded in place, three before it was lent to the frame).
        assert!(
            per_call < 2.5,
            "{format}: {per_call:.2} payloads allocated per call: the payload was copied"
        );
    }
    server.shutdown(std::time::Duration::from_millis(100)).await;
}
