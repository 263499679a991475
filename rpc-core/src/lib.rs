//! Client and server of the framework: multiplexed calls keyed by request id, deadlines,
//! cancellation, server streaming with flow control, two-way heartbeats, automatic reconnect,
//! graceful shutdown and filters.
//!
//! Most users depend on this crate alone: it re-exports the wire types of `rpc-codec`, the
//! transports of `rpc-transport` and the [`service`] attribute of `rpc-macros`.
//!
//! - [`Client`] connects to one endpoint and multiplexes any number of concurrent calls over one
//!   connection: a request-id counter, a map of pending calls, a reader task that completes them
//!   and a writer task that coalesces queued frames into few writes. It reconnects by itself.
//! - [`Server`] listens on any number of endpoints and routes each call to a [`Service`] by
//!   name and version, answering in the format the call used.
//! - [`service`] turns a trait of `async fn`s into a typed client and a server adapter.
//! - With the feature `metrics` (on by default), [`metrics::Metrics`] records calls,
//!   latencies, connections, bytes and reconnects of the servers and clients given it, and
//!   serves them to Prometheus over HTTP.
//! - With the feature `tower`, `LayeredService` and `LayeredCaller` put tower middleware
//!   (timeouts, limits, load shedding) around a service or a caller.
//!
//! ```
//! use rpc_core::{Client, Endpoint, RpcError, Server};
//!
//! #[rpc_core::service]
//! trait Greeter {
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! struct Polite;
//!
//! impl Greeter for Polite {
//!     async fn hello(&self, name: String) -> String {
//!         format!("hello, {name}")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint: Endpoint = "mem://greeter-doc".parse()?;
//! let server = Server::builder()
//!     .service(GreeterServer::new(Polite))
//!     .listen(endpoint.clone())
//!     .start()
//!     .await?;
//!
//! let client = GreeterClient::new(Client::builder().connect(&endpoint).await?);
//! assert_eq!(client.hello("world".into()).await?, "hello, world");
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

// `#[service]` writes `::rpc_core::…` paths; this lets the crate use it for its own reflection
// service.
extern crate self as rpc_core;

mod backoff;
mod blocking;
mod caller;
mod client;
mod context;
mod deadlines;
mod error;
mod filter;
mod frame_buf;
mod heartbeat;
mod id_hash;
#[cfg(feature = "metrics")]
pub mod metrics;
mod poll_on_wake;
mod reader;
mod reflection;
mod server;
mod service;
#[cfg(feature = "tower")]
mod tower;
mod writer;

#[cfg(feature = "tower")]
pub use crate::tower::{
    CallArgs, CallRequest, LayeredCaller, LayeredService, ServerRequest, TowerCaller, TowerService,
};
pub use backoff::Backoff;
pub use blocking::BlockingClient;
#[doc(hidden)]
pub use caller::__private;
pub use caller::{
    CallOptions, Caller, MethodTarget, RawStream, Response, RpcStream, ServiceClient,
};
pub use client::{
    Client, ClientBuilder, ClientConfig, ConnectionState, Fallback, Fallbacks, falls_back,
};
pub use context::CallContext;
pub use error::{Cause, Report, RpcError, ServerError};
pub use filter::{CallFuture, CallOutput, ClientFilter, ServerFilter, TraceCalls};
pub use reflection::{
    ArgDescriptor, MethodDescriptor, Reflection, ReflectionClient, ReflectionServer,
    ServiceDescriptor, SignatureDescriptor,
};
pub use rpc_codec::{
    DEFAULT_MAX_BODY_LEN, Format, Formats, Lend, Metadata, MetadataError, SerializeError,
    Serializer, SerializerId, SharedBytes, Status,
};
pub use rpc_macros::service;
pub use rpc_transport::{
    Acceptor, AsyncStream, Connection, Connector, Endpoint, EndpointConnector, Failover,
    IntoEndpoint, PeerAddr, TransportError,
};
pub use serde;
pub use server::{Server, ServerBuilder, ServerConfig, ServerHandle, StartError};
pub use service::{
    ArgInfo, BoxFuture, MethodInfo, MethodKind, MethodSignature, NamedService, Reply, ServerCall,
    ServerStream, Service,
};

/// The wire format crate, for users who need its lower-level types.
pub use rpc_codec as codec;
/// The transport crate, for users who plug in their own byte streams.
pub use rpc_transport as transport;
/// TLS settings for `tls://` and `wss://` endpoints: [`tls::ServerTls`] for
/// [`ServerBuilder::tls`], [`tls::ClientTls`] for [`ClientBuilder::tls`](crate::ClientBuilder::tls).
#[cfg(feature = "tls")]
pub use rpc_transport::tls;

/// The README's code compiles.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
