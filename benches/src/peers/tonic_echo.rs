//! The echo service on tonic: gRPC over HTTP/2 with prost messages generated from
//! `proto/echo.proto` by `build.rs`, `bytes` fields as [`Bytes`] so payloads are not copied
//! into a `Vec<u8>`.
//!
//! One [`TonicClient`] is one `Channel`, that is one HTTP/2 connection carrying every
//! concurrent call as its own stream. `TCP_NODELAY` is set on both ends (it is tonic's default
//! for `Endpoint` and `Server`; [`serve`] sets it on the accepted streams itself because
//! `serve_with_incoming` ignores the builder's setting).

use std::net::SocketAddr;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use self::pb::echo_client::EchoClient;
use self::pb::echo_server::{Echo, EchoServer};
use self::pb::{Payload, StreamRequest};

mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #![allow(clippy::all, clippy::pedantic)]

    tonic::include_proto!("bench.echo");
}

#[derive(Debug, Clone, Copy, Default)]
struct EchoImpl;

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type StreamStream = BoxStream<'static, Result<Payload, Status>>;

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let StreamRequest { payload, count } = request.into_inner();
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let items = std::iter::repeat_n(payload, count).map(|data| Ok(Payload { data }));
        Ok(Response::new(stream::iter(items).boxed()))
    }
}

/// Starts the tonic echo server on `listener`, with `TCP_NODELAY` on accepted streams; it runs
/// until the runtime stops.
pub fn serve(listener: TcpListener) {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoImpl))
            .serve_with_incoming(incoming),
    );
}

/// A tonic echo client over one HTTP/2 connection: cheap to clone, any number of concurrent
/// calls.
#[derive(Clone, Debug)]
pub struct TonicClient {
    inner: EchoClient<Channel>,
}

impl TonicClient {
    /// Connects to a tonic echo server with `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr) -> Result<TonicClient, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(TonicClient {
            inner: EchoClient::new(channel),
        })
    }

    /// Sends `payload` and waits for it to come back.
    pub async fn echo(&self, payload: Bytes) -> Result<Bytes, Status> {
        let mut client = self.inner.clone();
        let reply = client.echo(Payload { data: payload }).await?;
        Ok(reply.into_inner().data)
    }

    /// Asks for `count` copies of `payload` as a server stream.
    pub async fn stream(
        &self,
        payload: Bytes,
        count: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, Status>> + use<>, Status> {
        let mut client = self.inner.clone();
        let items = client.stream(StreamRequest { payload, count }).await?;
        Ok(items.into_inner().map_ok(|item| item.data))
    }
}
