//! The echo service measured through the framework.

use bytes::Bytes;

/// Echoes its argument.
#[rpc_core::service(name = "bench.Echo")]
pub trait Echo {
    /// Returns `payload` unchanged.
    async fn echo(&self, payload: Bytes) -> Bytes;
    /// Streams `count` copies of `payload`.
    async fn stream(&self, payload: Bytes, count: u64) -> rpc_core::ServerStream<Bytes>;
}

/// The echo implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, payload: Bytes) -> Bytes {
        payload
    }

    async fn stream(&self, payload: Bytes, count: u64) -> rpc_core::ServerStream<Bytes> {
        rpc_core::ServerStream::iter(std::iter::repeat_n(payload, count as usize))
    }
}
