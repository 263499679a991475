//! The echo service on tarpc: its serde transport over TCP (length-delimited frames) with
//! bincode, the payload as [`Bytes`].
//!
//! `Bytes` serializes as one byte string (`serialize_bytes`), as `serde_bytes` would; a plain
//! `Vec<u8>` goes through serde element by element, which costs about 4x at 64 KiB and would
//! measure serde rather than tarpc.
//!
//! Nagle: [`serve`] and [`TarpcClient::connect`] take `nodelay`. With `false` they use tarpc's
//! own `serde_transport::tcp::{listen_on, connect}`, which leave Nagle's algorithm on (tarpc's
//! default); with `true` they build the same transport on streams with `TCP_NODELAY` set.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{StreamExt, future};
use tarpc::serde_transport;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tarpc::{ClientMessage, Response, client, context};
use tokio::net::{TcpListener, TcpStream};

use self::service::{Echo, EchoClient};

mod service {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

    /// Echoes its argument.
    #[tarpc::service]
    pub trait Echo {
        /// Returns `payload` unchanged.
        async fn echo(payload: bytes::Bytes) -> bytes::Bytes;
    }
}

#[derive(Clone, Copy)]
struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(self, _: context::Context, payload: Bytes) -> Bytes {
        payload
    }
}

/// Starts the tarpc echo server on `listener`, with `TCP_NODELAY` on accepted streams if
/// `nodelay`; it runs until the runtime stops. Each request runs in its own task, as tarpc's
/// examples do.
pub fn serve(listener: TcpListener, nodelay: bool) {
    tokio::spawn(async move {
        if nodelay {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let framed = LengthDelimitedCodec::builder().new_framed(stream);
                serve_channel(serde_transport::new(framed, Bincode::default()));
            }
        } else {
            let Ok(incoming) = serde_transport::tcp::listen_on(listener, Bincode::default).await
            else {
                return;
            };
            incoming
                .filter_map(|transport| future::ready(transport.ok()))
                .for_each(|transport| {
                    serve_channel(transport);
                    future::ready(())
                })
                .await;
        }
    });
}

/// What the server reads and writes on one connection.
type ServerTransport = serde_transport::Transport<
    TcpStream,
    ClientMessage<service::EchoRequest>,
    Response<service::EchoResponse>,
    Bincode<ClientMessage<service::EchoRequest>, Response<service::EchoResponse>>,
>;

fn serve_channel(transport: ServerTransport) {
    let channel = BaseChannel::with_defaults(transport);
    tokio::spawn(
        channel
            .execute(EchoImpl.serve())
            .for_each(|response| async {
                tokio::spawn(response);
            }),
    );
}

/// A tarpc echo client: cheap to clone, any number of concurrent calls over one connection.
#[derive(Clone, Debug)]
pub struct TarpcClient {
    inner: EchoClient,
}

impl TarpcClient {
    /// Connects to a tarpc echo server, with `TCP_NODELAY` if `nodelay`.
    pub async fn connect(addr: SocketAddr, nodelay: bool) -> std::io::Result<TarpcClient> {
        let transport = if nodelay {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            serde_transport::new(
                LengthDelimitedCodec::builder().new_framed(stream),
                Bincode::default(),
            )
        } else {
            serde_transport::tcp::connect(addr, Bincode::default).await?
        };
        let inner = EchoClient::new(client::Config::default(), transport).spawn();
        Ok(TarpcClient { inner })
    }

    /// Sends `payload` and waits for it to come back (deadline: tarpc's default, 10 s).
    pub async fn echo(&self, payload: Bytes) -> Result<Bytes, client::RpcError> {
        self.inner.echo(context::current(), payload).await
    }
}
