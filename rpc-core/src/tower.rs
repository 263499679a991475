//! Tower middleware on either side (feature `tower`): a service served through a tower stack,
//! and calls made through one.
//!
//! Server side, [`LayeredService::new(service, layer)`](LayeredService::new) puts any
//! [`Service`] behind a tower [`Layer`]: each call reaches the stack as a [`ServerRequest`], and
//! the stack's innermost service is the original service seen as a
//! `tower::Service<ServerRequest>` ([`TowerService`]). The result is a [`Service`] again, for
//! `ServerBuilder::service`.
//!
//! Client side, [`LayeredCaller::new(caller, layer)`](LayeredCaller::new) puts any [`Caller`]
//! (a `Client`, a cluster) behind a tower [`Layer`]: each call reaches the stack as a
//! [`CallRequest`], and the stack's innermost service is the original caller seen as a
//! `tower::Service<CallRequest>` ([`TowerCaller`]). The result is a [`Caller`] again, for a
//! generated client's `new`.
//!
//! ```
//! use std::time::Duration;
//!
//! use rpc_core::{Client, LayeredCaller, LayeredService, Server};
//! use tower::ServiceBuilder;
//! use tower::limit::ConcurrencyLimitLayer;
//! use tower::timeout::TimeoutLayer;
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
//! // At most 64 calls of this service run at once on the server.
//! let service = LayeredService::new(GreeterServer::new(Polite), ConcurrencyLimitLayer::new(64));
//! let server = Server::builder()
//!     .service(service)
//!     .listen("mem://tower-doc")
//!     .start()
//!     .await?;
//!
//! // Each call of this client is bounded by a tower timeout, with 8 at most under way.
//! let stack = ServiceBuilder::new()
//!     .concurrency_limit(8)
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)));
//! let caller = LayeredCaller::new(Client::connect("mem://tower-doc").await?, stack);
//! let greeter = GreeterClient::new(caller);
//! assert_eq!(greeter.hello("world".into()).await?, "hello, world");
//! server.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! A tower service takes `&mut self` and may not be ready; the adapters clone the stack for each
//! call and wait for it to be ready, as tower's own `ServiceExt::oneshot` does, so middleware
//! whose clones share state (a concurrency limit, a rate limit) works across calls.
//!
//! Middleware errors become the framework's: a tower timeout is a deadline exceeded, a load
//! shed is `SERVER_BUSY` on the server (callers may send the call elsewhere: it never started)
//! and a rejected call on the client; any other error is an internal error on the server and a
//! rejected call on the client, with its message.

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tower::{BoxError, Layer};
use rpc_codec::Status;
use serde::{Serialize, Serializer};

use crate::caller::{CallOptions, Caller, MethodTarget, RawStream, Response};
use crate::error::{RpcError, ServerError};
use crate::filter::{CallFuture, CallOutput};
use crate::service::{BoxFuture, MethodInfo, MethodKind, Reply, ServerCall, Service};

/// One incoming call as a tower request: the method, as the service lists it, and the call.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerRequest {
    /// The method called.
    pub method: MethodInfo,
    /// The call: its arguments, its context, and how to answer it.
    pub call: ServerCall,
}

/// A [`Service`] seen as a `tower::Service<ServerRequest>`: the innermost service of a
/// [`LayeredService`]'s stack.
pub struct TowerService<S> {
    service: Arc<S>,
}

impl<S: Service> TowerService<S> {
    /// `service` as a tower service.
    pub fn new(service: S) -> Self {
        TowerService {
            service: Arc::new(service),
        }
    }
}

impl<S: Service> ::tower::Service<ServerRequest> for TowerService<S> {
    type Response = Reply;
    type Error = ServerError;
    type Future = BoxFuture<'static, Result<Reply, ServerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ServerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ServerRequest) -> Self::Future {
        let name = request.method.name;
        match self.service.call(name, request.call) {
            Some(reply) => Box::pin(async move { Ok(reply.await) }),
            // The service lists a method it does not route.
            None => Box::pin(std::future::ready(Err(ServerError::new(
                Status::METHOD_NOT_FOUND,
                format!("{}/{name}", self.service.name()),
            )))),
        }
    }
}

impl<S> Clone for TowerService<S> {
    fn clone(&self) -> Self {
        TowerService {
            service: self.service.clone(),
        }
    }
}

impl<S: Service> fmt::Debug for TowerService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerService")
            .field("service", &self.service.name())
            .finish()
    }
}

/// A [`Service`] served through a tower stack: the name, version and methods of the service it
/// was made from, each call sent through the stack.
pub struct LayeredService<T> {
    name: &'static str,
    version: &'static str,
    methods: &'static [MethodInfo],
    stack: T,
}

impl<T> LayeredService<T>
where
    T: ::tower::Service<ServerRequest, Response = Reply> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    /// Serves `service` through `layer` (a tower layer or `ServiceBuilder`).
    pub fn new<S, L>(service: S, layer: L) -> Self
    where
        S: Service,
        L: Layer<TowerService<S>, Service = T>,
    {
        let (name, version, methods) = (service.name(), service.version(), service.methods());
        LayeredService {
            name,
            version,
            methods,
            stack: layer.layer(TowerService::new(service)),
        }
    }
}

impl<T> Service for LayeredService<T>
where
    T: ::tower::Service<ServerRequest, Response = Reply> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> &'static str {
        self.version
    }

    fn methods(&self) -> &'static [MethodInfo] {
        self.methods
    }

    fn call(&self, method: &str, call: ServerCall) -> Option<BoxFuture<'static, Reply>> {
        let method = *self.methods.iter().find(|m| m.name == method)?;
        let mut stack = self.stack.clone();
        Some(Box::pin(async move {
            if let Err(e) = poll_fn(|cx| stack.poll_ready(cx)).await {
                return Reply::error(server_error(e.into()));
            }
            match stack.call(ServerRequest { method, call }).await {
                Ok(reply) => reply,
                Err(e) => Reply::error(server_error(e.into())),
            }
        }))
    }
}

impl<T> fmt::Debug for LayeredService<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredService")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The arguments of a call on its way through a tower stack: any `Serialize` value, its type
/// erased so that one stack serves every method.
#[derive(Clone, Copy)]
pub struct CallArgs<'a>(&'a (dyn erased_serde::Serialize + Sync));

impl Serialize for CallArgs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0, serializer)
    }
}

impl fmt::Debug for CallArgs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallArgs")
    }
}

/// One outgoing call as a tower request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallRequest<'a> {
    /// The method called.
    pub target: MethodTarget<'a>,
    /// How it answers: a response, nothing, or a stream.
    pub kind: MethodKind,
    /// Its settings; middleware may change them (add metadata, shorten the timeout).
    pub options: CallOptions,
    /// Its arguments.
    pub args: CallArgs<'a>,
}

/// A [`Caller`] seen as a `tower::Service<CallRequest>`: the innermost service of a
/// [`LayeredCaller`]'s stack.
#[derive(Debug, Clone)]
pub struct TowerCaller<C> {
    caller: C,
}

impl<C: Caller> TowerCaller<C> {
    /// `caller` as a tower service.
    pub fn new(caller: C) -> Self {
        TowerCaller { caller }
    }
}

impl<'a, C: Caller> ::tower::Service<CallRequest<'a>> for TowerCaller<C> {
    type Response = CallOutput;
    type Error = RpcError;
    type Future = CallFuture<'a>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CallRequest<'a>) -> CallFuture<'a> {
        let caller = self.caller.clone();
        Box::pin(async move {
            let CallRequest {
                target,
                kind,
                options,
                args,
            } = request;
            match kind {
                MethodKind::Unary => caller
                    .call_unary(&target, &options, &args)
                    .await
                    .map(CallOutput::Response),
                MethodKind::OneWay => caller
                    .call_one_way(&target, &options, &args)
                    .await
                    .map(|()| CallOutput::Sent),
                MethodKind::ServerStream => caller
                    .call_stream(&target, &options, &args)
                    .await
                    .map(CallOutput::Stream),
            }
        })
    }
}

/// A [`Caller`] whose calls go through a tower stack.
#[derive(Debug, Clone)]
pub struct LayeredCaller<T> {
    stack: T,
}

impl<T> LayeredCaller<T>
where
    T: for<'a> ::tower::Service<CallRequest<'a>, Response = CallOutput>
        + Clone
        + Send
        + Sync
        + 'static,
    for<'a> <T as ::tower::Service<CallRequest<'a>>>::Error: Into<BoxError>,
    for<'a> <T as ::tower::Service<CallRequest<'a>>>::Future: Send,
{
    /// Makes the calls of `caller` through `layer` (a tower layer or `ServiceBuilder`).
    pub fn new<C, L>(caller: C, layer: L) -> Self
    where
        C: Caller,
        L: Layer<TowerCaller<C>, Service = T>,
    {
        LayeredCaller {
            stack: layer.layer(TowerCaller::new(caller)),
        }
    }

    async fn run<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        kind: MethodKind,
        options: &CallOptions,
        args: &A,
    ) -> Result<CallOutput, RpcError> {
        // A sized stand-in, so that arguments of any type (`str`, slices) erase to one.
        let args = Forward(args);
        let request = CallRequest {
            target: *target,
            kind,
            options: options.clone(),
            args: CallArgs(&args),
        };
        let mut stack = self.stack.clone();
        poll_fn(|cx| stack.poll_ready(cx))
            .await
            .map_err(|e| rpc_error(e.into()))?;
        stack.call(request).await.map_err(|e| rpc_error(e.into()))
    }
}

impl<T> Caller for LayeredCaller<T>
where
    T: for<'a> ::tower::Service<CallRequest<'a>, Response = CallOutput>
        + Clone
        + Send
        + Sync
        + 'static,
    for<'a> <T as ::tower::Service<CallRequest<'a>>>::Error: Into<BoxError>,
    for<'a> <T as ::tower::Service<CallRequest<'a>>>::Future: Send,
{
    async fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<Response, RpcError> {
        self.run(target, MethodKind::Unary, options, args)
            .await?
            .into_response()
    }

    async fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<(), RpcError> {
        self.run(target, MethodKind::OneWay, options, args)
            .await?
            .into_sent()
    }

    async fn call_stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<RawStream, RpcError> {
        self.run(target, MethodKind::ServerStream, options, args)
            .await?
            .into_stream()
    }
}

/// Serializes as what it points to.
struct Forward<'a, A: ?Sized>(&'a A);

impl<A: Serialize + ?Sized> Serialize for Forward<'_, A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A server-side middleware error as the answer to the call.
fn server_error(error: BoxError) -> ServerError {
    let error = match error.downcast::<ServerError>() {
        Ok(e) => return *e,
        Err(other) => other,
    };
    if error.is::<::tower::timeout::error::Elapsed>() {
        ServerError::new(Status::DEADLINE_EXCEEDED, error.to_string())
    } else if error.is::<::tower::load_shed::error::Overloaded>() {
        ServerError::new(Status::SERVER_BUSY, error.to_string())
    } else {
        ServerError::new(Status::INTERNAL_ERROR, error.to_string())
    }
}

/// A client-side middleware error as the call's error.
fn rpc_error(error: BoxError) -> RpcError {
    let error = match error.downcast::<RpcError>() {
        Ok(e) => return *e,
        Err(other) => other,
    };
    if error.is::<::tower::timeout::error::Elapsed>() {
        RpcError::DeadlineExceeded
    } else {
        RpcError::Rejected(error.to_string())
    }
}
