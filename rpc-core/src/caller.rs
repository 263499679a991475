//! What generated clients call through: the `Caller` trait, per-call options, raw and typed
//! answers and streams.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use rpc_codec::{ErrorBody, Format, Metadata, MetadataError, SerializeError, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RpcError;
use crate::service::NamedService;

/// Per-call settings: a deadline overriding the client's default, and metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// How long the call may take; `None` uses the client's default timeout.
    pub timeout: Option<Duration>,
    /// Key/value pairs sent with the call.
    pub metadata: Metadata,
    /// A key that picks the same instance for the same value, for a consistent-hash balancer.
    pub hash_key: Option<u64>,
}

impl CallOptions {
    /// Default options: the client's timeout, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MetadataError> {
        self.metadata.insert(key, value)?;
        Ok(self)
    }

    /// Sets the consistent-hash key.
    pub fn hash_key(mut self, key: u64) -> Self {
        self.hash_key = Some(key);
        self
    }
}

/// The method a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodTarget<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The service's version; empty for none.
    pub version: &'a str,
    /// The method's name.
    pub method: &'a str,
    /// Whether the method may safely run twice (a balancer may then retry it elsewhere).
    pub idempotent: bool,
}

/// Something calls can be made through: a [`Client`](crate::Client) on one connection, or a
/// discovery-aware client that balances over many. Generated service clients are generic over
/// it.
pub trait Caller: Clone + Send + Sync + 'static {
    /// Makes a call and waits for its response.
    fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> impl Future<Output = Result<Response, RpcError>> + Send;

    /// Sends a one-way call; completes once the request is queued for writing.
    fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> impl Future<Output = Result<(), RpcError>> + Send;

    /// Starts a server-streaming call.
    fn call_stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> impl Future<Output = Result<RawStream, RpcError>> + Send;
}

/// A typed client of one service, making its calls through a [`Caller`]: what `#[service]`
/// generates (`GreeterClient<C>`). Code that makes callers (a discovery client, a cluster) can
/// hand back a typed client of any service with it, and find the service's name and version
/// through [`NamedService`].
pub trait ServiceClient: NamedService + Clone + Send + Sync + 'static {
    /// What the calls are made through.
    type Caller: Caller;

    /// A client making its calls through `caller`, with default options.
    fn from_caller(caller: Self::Caller) -> Self;
}

/// A response frame not yet decoded.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) format: Format,
    pub(crate) status: Status,
    pub(crate) body: Bytes,
}

impl Response {
    /// The status the server sent.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The body as the server sent it: the encoded result when the status is ok, else an
    /// error body ([`ErrorBody`]). For tools that print or relay answers without knowing their
    /// types, such as a JSON caller that sends a `serde_json::value::RawValue` as arguments.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Decodes the result; an application error keeps the server's message.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, RpcError> {
        self.decode_with(|body| Ok(body.message), false)
    }

    /// Decodes the result; an application error is decoded as `E`.
    pub fn decode_result<T: DeserializeOwned, E: DeserializeOwned>(self) -> Result<T, RpcError<E>> {
        self.decode_result_with(false)
    }

    /// As [`decode`](Self::decode), with every [`SharedBytes`](rpc_codec::SharedBytes) in `T`
    /// a slice of the answer's frame instead of a copy (where the format lends its bytes).
    pub fn decode_shared<T: DeserializeOwned>(self) -> Result<T, RpcError> {
        self.decode_with(|body| Ok(body.message), true)
    }

    /// As [`decode_result`](Self::decode_result), with the result's
    /// [`SharedBytes`](rpc_codec::SharedBytes) slices of the answer's frame.
    pub fn decode_result_shared<T: DeserializeOwned, E: DeserializeOwned>(
        self,
    ) -> Result<T, RpcError<E>> {
        self.decode_result_with(true)
    }

    /// A successful answer whose result is a byte string, as a slice of its frame
    /// ([`Format::decode_bytes`]).
    fn bytes(&self) -> Result<rpc_codec::SharedBytes, RpcError> {
        self.format
            .decode_bytes(&self.body)
            .map(rpc_codec::SharedBytes)
            .map_err(RpcError::Serialize)
    }

    fn decode_result_with<T: DeserializeOwned, E: DeserializeOwned>(
        self,
        shared: bool,
    ) -> Result<T, RpcError<E>> {
        let format = self.format.clone();
        self.decode_with(
            move |body| {
                format.decode::<E>(&body.detail).map_err(|e| {
                    RpcError::Protocol(format!(
                        "application error {:?} did not decode: {e}",
                        body.message
                    ))
                })
            },
            shared,
        )
    }

    fn decode_with<T: DeserializeOwned, E>(
        self,
        app: impl FnOnce(ErrorBody) -> Result<E, RpcError<E>>,
        shared: bool,
    ) -> Result<T, RpcError<E>> {
        if self.status.is_ok() {
            let decoded = if shared {
                self.format.decode_shared(&self.body)
            } else {
                self.format.decode(&self.body)
            };
            return decoded.map_err(RpcError::Serialize);
        }
        Err(error_from_body(self.status, &self.body, app))
    }
}

pub(crate) fn error_from_body<E>(
    status: Status,
    body: &Bytes,
    app: impl FnOnce(ErrorBody) -> Result<E, RpcError<E>>,
) -> RpcError<E> {
    match ErrorBody::parse(body) {
        Ok(body) => RpcError::from_status(status, body, app),
        Err(e) => RpcError::Protocol(format!("error body of status {status}: {e}")),
    }
}

/// The items of a server-streaming call, still encoded. [`RpcStream`] decodes them.
pub struct RawStream {
    pub(crate) format: Format,
    pub(crate) inner: Pin<Box<dyn Stream<Item = Result<Bytes, RpcError>> + Send>>,
}

impl RawStream {
    /// Wraps any stream of encoded items (for callers other than [`Client`](crate::Client)).
    pub fn new(
        format: Format,
        inner: impl Stream<Item = Result<Bytes, RpcError>> + Send + 'static,
    ) -> Self {
        RawStream {
            format,
            inner: Box::pin(inner),
        }
    }

    /// The format the items are encoded in.
    pub fn format(&self) -> &Format {
        &self.format
    }
}

impl Stream for RawStream {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for RawStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStream")
            .field("format", &self.format.name())
            .finish_non_exhaustive()
    }
}

/// The items of a server-streaming call. Ends after the last item (`None`), or with one `Err`
/// when the server ended the stream with an error or the connection broke.
///
/// Dropping it before the end tells the server to stop producing.
pub struct RpcStream<T> {
    raw: RawStream,
    decode: fn(&Format, &Bytes) -> Result<T, SerializeError>,
}

impl<T: DeserializeOwned> RpcStream<T> {
    /// Decodes the items of a raw stream.
    pub fn new(raw: RawStream) -> Self {
        fn decode<T: DeserializeOwned>(format: &Format, body: &Bytes) -> Result<T, SerializeError> {
            format.decode(body)
        }
        RpcStream {
            raw,
            decode: decode::<T>,
        }
    }
}

impl<T: From<rpc_codec::SharedBytes>> RpcStream<T> {
    /// Decodes the items of a raw stream whose items are byte strings as slices of the frames
    /// that brought them (postcard and MessagePack; other formats copy).
    pub fn shared(raw: RawStream) -> Self {
        fn decode<T: From<rpc_codec::SharedBytes>>(
            format: &Format,
            body: &Bytes,
        ) -> Result<T, SerializeError> {
            format
                .decode_bytes(body)
                .map(|bytes| T::from(rpc_codec::SharedBytes(bytes)))
        }
        RpcStream {
            raw,
            decode: decode::<T>,
        }
    }
}

impl<T> Stream for RpcStream<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.raw).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(
                (self.decode)(&self.raw.format, &bytes).map_err(RpcError::Serialize),
            )),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> fmt::Debug for RpcStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcStream").field("raw", &self.raw).finish()
    }
}

/// Helpers called by `#[service]`-generated code. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;

    pub use crate::service::BoxFuture;

    use super::*;

    pub async fn unary<C, A, T>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<T, RpcError>
    where
        C: Caller,
        A: Serialize + Sync,
        T: DeserializeOwned,
    {
        caller.call_unary(target, options, args).await?.decode()
    }

    pub async fn unary_result<C, A, T, E>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<T, RpcError<E>>
    where
        C: Caller,
        A: Serialize + Sync,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        match caller.call_unary(target, options, args).await {
            Ok(response) => response.decode_result(),
            Err(e) => Err(e.cast()),
        }
    }

    /// As [`unary`], for a result whose type is `Bytes`: a slice of the answer's frame.
    pub async fn unary_shared<C, A, T>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<T, RpcError>
    where
        C: Caller,
        A: Serialize + Sync,
        T: From<rpc_codec::SharedBytes>,
    {
        let response = caller.call_unary(target, options, args).await?;
        if response.status.is_ok() {
            return response.bytes().map(T::from);
        }
        response
            .decode_shared::<rpc_codec::SharedBytes>()
            .map(T::from)
    }

    /// As [`unary_result`], for a success whose type is `Bytes`: a slice of the answer's frame.
    pub async fn unary_result_shared<C, A, T, E>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<T, RpcError<E>>
    where
        C: Caller,
        A: Serialize + Sync,
        T: From<rpc_codec::SharedBytes>,
        E: DeserializeOwned,
    {
        match caller.call_unary(target, options, args).await {
            Ok(response) if response.status.is_ok() => {
                response.bytes().map(T::from).map_err(RpcError::cast)
            }
            Ok(response) => response
                .decode_result_shared::<rpc_codec::SharedBytes, E>()
                .map(T::from),
            Err(e) => Err(e.cast()),
        }
    }

    pub async fn one_way<C, A>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<(), RpcError>
    where
        C: Caller,
        A: Serialize + Sync,
    {
        caller.call_one_way(target, options, args).await
    }

    pub async fn server_stream<C, A, T>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<RpcStream<T>, RpcError>
    where
        C: Caller,
        A: Serialize + Sync,
        T: DeserializeOwned,
    {
        Ok(RpcStream::new(
            caller.call_stream(target, options, args).await?,
        ))
    }

    /// As [`server_stream`], for items whose type is `Bytes`: slices of the frames.
    pub async fn server_stream_shared<C, A, T>(
        caller: &C,
        options: &CallOptions,
        target: &MethodTarget<'static>,
        args: &A,
    ) -> Result<RpcStream<T>, RpcError>
    where
        C: Caller,
        A: Serialize + Sync,
        T: From<rpc_codec::SharedBytes>,
    {
        Ok(RpcStream::shared(
            caller.call_stream(target, options, args).await?,
        ))
    }
}
