//! The server side of a service: the `Service` trait the server routes to, the incoming
//! `ServerCall`, and the `Reply` a handler answers with.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use rpc_codec::{Format, FrameKind, Header, RequestHeadRef, Status};
use rpc_transport::PeerAddr;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::context::CallContext;
use crate::error::ServerError;
use crate::frame_buf::{FrameChunk, FrameRun, OutFrame, RunError};

/// A boxed, sendable future, as returned by [`Service::call`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a method answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, no response.
    OneWay,
    /// One request, a stream of items ended by a stream-end frame.
    ServerStream,
}

/// A method of a service, for routing, introspection and failover decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    /// The method's name on the wire.
    pub name: &'static str,
    /// How it answers.
    pub kind: MethodKind,
    /// Whether running it twice has the same effect as once, so a client may retry it on
    /// another instance after a connection error.
    pub idempotent: bool,
    /// The method's arguments and result as the service's source declares them, for people
    /// and tools (the reflection service, `rpcctl`); `#[service]` fills it in. `None` for a
    /// hand-written service that does not describe its methods.
    pub signature: Option<MethodSignature>,
}

/// What a method takes and returns, as written in the service trait: type names are the type
/// tokens as written (so `Vec<u8>`, `std::time::Duration` or an alias stay as they are), with
/// whitespace normalized. They tell a person what to send; they are not resolved types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodSignature {
    /// The arguments that travel, in order (a `CallContext` argument does not travel and is
    /// not listed).
    pub args: &'static [ArgInfo],
    /// The result: the value of a unary method (`T` of `Result<T, E>`), the type of each item
    /// of a streaming method, `()` for a method that returns nothing or is one-way.
    pub result: &'static str,
    /// The application error `E` of a method returning `Result<T, E>`; `None` otherwise.
    pub error: Option<&'static str>,
}

/// An argument of a method: its name and its type as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgInfo {
    /// The argument's name in the trait.
    pub name: &'static str,
    /// Its type, as written.
    pub ty: &'static str,
}

/// The identity of a service: its name and version on the wire.
///
/// `#[service]` implements it for the generated client and server, so the name and version are
/// written once, in the trait's attribute, and whatever needs them (registering a server,
/// discovering a service, a log line) takes them from the type:
///
/// ```
/// use rpc_core::NamedService;
///
/// #[rpc_core::service(name = "demo.Greeter", version = "1")]
/// trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
///
/// fn identity<S: NamedService>() -> (&'static str, &'static str) {
///     (S::SERVICE, S::VERSION)
/// }
///
/// assert_eq!(identity::<GreeterClient>(), ("demo.Greeter", "1"));
/// # struct Polite;
/// # impl Greeter for Polite {
/// #     async fn hello(&self, name: String) -> String { name }
/// # }
/// assert_eq!(identity::<GreeterServer<Polite>>(), identity::<GreeterClient>());
/// ```
pub trait NamedService {
    /// The service's name on the wire.
    const SERVICE: &'static str;
    /// The service's version; empty for none.
    const VERSION: &'static str;
}

/// A service the server can route calls to. `#[service]` implements it for every service trait
/// (the generated `…Server` type); it can also be implemented by hand.
pub trait Service: Send + Sync + 'static {
    /// The service's name on the wire.
    fn name(&self) -> &'static str;

    /// The service's version; empty for none.
    fn version(&self) -> &'static str {
        ""
    }

    /// The service's methods.
    fn methods(&self) -> &'static [MethodInfo];

    /// Starts a call of `method`, or returns `None` when there is no such method.
    fn call(&self, method: &str, call: ServerCall) -> Option<BoxFuture<'static, Reply>>;
}

impl<S: Service + ?Sized> Service for Arc<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn version(&self) -> &'static str {
        (**self).version()
    }
    fn methods(&self) -> &'static [MethodInfo] {
        (**self).methods()
    }
    fn call(&self, method: &str, call: ServerCall) -> Option<BoxFuture<'static, Reply>> {
        (**self).call(method, call)
    }
}

/// One incoming call, handed to [`Service::call`]: the arguments still encoded, and what is
/// needed to answer in the caller's format.
pub struct ServerCall {
    pub(crate) request_id: u64,
    pub(crate) kind: FrameKind,
    pub(crate) format: Format,
    /// The whole request body: preamble, then arguments from `args_offset`.
    pub(crate) body: Bytes,
    pub(crate) args_offset: usize,
    pub(crate) deadline: Option<Instant>,
    /// Who called, for the call's context.
    pub(crate) peer: Arc<PeerAddr>,
    /// The connection's room for answers.
    pub(crate) frames: Arc<FrameChunk>,
    /// The largest body an answer may have.
    pub(crate) max_body_len: usize,
}

impl ServerCall {
    /// Decodes the arguments (a tuple of the method's arguments in order).
    ///
    /// Arguments that do not decode are the caller's fault: the error is a
    /// [`Status::BAD_REQUEST`] to answer with.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, ServerError> {
        self.format
            .decode(&self.body[self.args_offset..])
            .map_err(|e| ServerError::new(Status::BAD_REQUEST, format!("arguments: {e}")))
    }

    /// As [`args`](Self::args), with every [`SharedBytes`](rpc_codec::SharedBytes) among the
    /// arguments a slice of the request's frame instead of a copy (where the caller's format
    /// lends its bytes: postcard and MessagePack). `#[service]` uses it for methods that take
    /// `Bytes`.
    pub fn args_shared<T: DeserializeOwned>(&self) -> Result<T, ServerError> {
        self.format
            .decode_shared(&self.body.slice(self.args_offset..))
            .map_err(|e| ServerError::new(Status::BAD_REQUEST, format!("arguments: {e}")))
    }

    /// What is known about the call: names, deadline, metadata, peer.
    pub fn context(&self) -> CallContext {
        // The preamble was parsed when the frame arrived; parsing the same bytes again cannot
        // fail, but should it, an empty context is still a valid answer.
        let (service, method, metadata) = match RequestHeadRef::parse(&self.body) {
            Ok((head, _)) => (
                head.service.to_owned(),
                head.method.to_owned(),
                head.metadata(),
            ),
            Err(_) => Default::default(),
        };
        CallContext {
            request_id: self.request_id,
            service,
            method,
            deadline: self.deadline,
            metadata,
            peer: self.peer.clone(),
        }
    }

    /// The format the caller used; the answer is sent in it.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Whether the caller expects no answer.
    pub fn is_one_way(&self) -> bool {
        self.kind == FrameKind::OneWay
    }

    /// Answers with `value`.
    pub fn reply<T: Serialize + ?Sized>(&self, value: &T) -> Reply {
        if self.is_one_way() {
            return Reply(ReplyInner::Nothing);
        }
        let mut buf = self.frames.frame(64);
        if let Err(e) = buf.encode(&self.format, value) {
            return self.reply_error(ServerError::new(
                Status::INTERNAL_ERROR,
                format!("result could not be encoded: {e}"),
            ));
        }
        self.frames.give_back(&mut buf);
        match buf.finish(
            FrameKind::Response,
            self.format.id(),
            Status::OK,
            self.request_id,
            self.max_body_len,
        ) {
            Ok(frame) => Reply(ReplyInner::Frame(frame)),
            Err(len) => self.reply_error(ServerError::new(
                Status::INTERNAL_ERROR,
                format!(
                    "result of {len} bytes exceeds the maximum frame body of {} bytes",
                    self.max_body_len
                ),
            )),
        }
    }

    /// Answers with the value, or with the application error (serialized as the error detail).
    pub fn reply_result<T, E>(&self, result: &Result<T, E>) -> Reply
    where
        T: Serialize,
        E: Serialize + fmt::Debug,
    {
        match result {
            Ok(value) => self.reply(value),
            Err(e) => self.reply_error(ServerError::application(&self.format, e)),
        }
    }

    /// Answers with an error.
    pub fn reply_error(&self, error: ServerError) -> Reply {
        Reply(ReplyInner::Error(error))
    }

    /// Answers with a stream of items.
    pub fn reply_stream<T: Serialize + Send + 'static>(self, stream: ServerStream<T>) -> Reply {
        if self.is_one_way() {
            return Reply(ReplyInner::Nothing);
        }
        let items = EncodedItems {
            items: stream.inner,
            format: self.format.clone(),
            request_id: self.request_id,
            max_body_len: self.max_body_len,
        };
        Reply(ReplyInner::Stream(Box::new(items)))
    }
}

impl fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCall")
            .field("request_id", &self.request_id)
            .field("kind", &self.kind)
            .field("format", &self.format.name())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// A handler's answer, built by the `reply*` methods of [`ServerCall`].
pub struct Reply(pub(crate) ReplyInner);

pub(crate) enum ReplyInner {
    /// A complete, encoded response frame.
    Frame(OutFrame),
    /// An error to encode with the call's request id.
    Error(ServerError),
    /// Stream items, encoded as they are taken; an error ends the stream with that status.
    Stream(Box<dyn ItemSource>),
    /// Nothing to send (one-way calls).
    Nothing,
}

impl Reply {
    /// The status the answer carries (ok for values, streams and one-way calls).
    pub fn status(&self) -> Status {
        match &self.0 {
            ReplyInner::Frame(frame) => Header::status_of(frame.head()).unwrap_or(Status::OK),
            ReplyInner::Error(e) => e.status,
            ReplyInner::Stream(_) | ReplyInner::Nothing => Status::OK,
        }
    }

    /// An error answer.
    pub fn error(error: ServerError) -> Reply {
        Reply(ReplyInner::Error(error))
    }
}

impl From<ServerError> for Reply {
    fn from(error: ServerError) -> Self {
        Reply::error(error)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ReplyInner::Frame(b) => write!(f, "Reply::Frame({} bytes)", b.len()),
            ReplyInner::Error(e) => write!(f, "Reply::Error({e})"),
            ReplyInner::Stream(_) => f.write_str("Reply::Stream"),
            ReplyInner::Nothing => f.write_str("Reply::Nothing"),
        }
    }
}

/// A stream's items, encoded into frames as they are taken.
pub(crate) trait ItemSource: Send {
    /// Polls for the next item and appends its StreamItem frame to `run`: `Some(Ok(()))` when
    /// one was appended, `Some(Err(_))` when the stream failed (or its item could not be sent),
    /// `None` at its end.
    fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
        run: &mut FrameRun,
    ) -> Poll<Option<Result<(), ServerError>>>;
}

/// The items of a [`ServerStream`] and how the call encodes them.
struct EncodedItems<T> {
    items: BoxStream<'static, Result<T, ServerError>>,
    format: Format,
    request_id: u64,
    max_body_len: usize,
}

impl<T: Serialize + Send + 'static> ItemSource for EncodedItems<T> {
    fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
        run: &mut FrameRun,
    ) -> Poll<Option<Result<(), ServerError>>> {
        let value = match self.items.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(value))) => value,
        };
        let pushed = run
            .push(
                &self.format,
                &value,
                FrameKind::StreamItem,
                Status::OK,
                self.request_id,
                self.max_body_len,
            )
            .map_err(|e| match e {
                RunError::Encode(e) => ServerError::new(
                    Status::INTERNAL_ERROR,
                    format!("stream item could not be encoded: {e}"),
                ),
                RunError::TooLarge(len) => ServerError::new(
                    Status::INTERNAL_ERROR,
                    format!("stream item of {len} bytes exceeds the maximum frame body"),
                ),
            });
        Poll::Ready(Some(pushed))
    }
}

/// The items a server-streaming method returns.
///
/// Items are sent as they are produced, with bounded buffering: when the caller reads slowly the
/// stream is polled slowly. An `Err` item ends the stream with that error.
pub struct ServerStream<T> {
    inner: BoxStream<'static, Result<T, ServerError>>,
}

impl<T: Send + 'static> ServerStream<T> {
    /// Streams the items of `stream`.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        ServerStream {
            inner: stream.map(Ok).boxed(),
        }
    }

    /// Streams the items of `stream` until the first error, which ends the stream with it.
    pub fn try_new(stream: impl Stream<Item = Result<T, ServerError>> + Send + 'static) -> Self {
        ServerStream {
            inner: stream.boxed(),
        }
    }

    /// Streams the items of an iterator.
    pub fn iter(iter: impl IntoIterator<Item = T, IntoIter: Send + 'static>) -> Self {
        Self::new(futures::stream::iter(iter))
    }

    /// A stream that ends at once with `error`.
    pub fn error(error: ServerError) -> Self {
        Self::try_new(futures::stream::once(async move { Err(error) }))
    }
}

impl<T> fmt::Debug for ServerStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerStream")
    }
}
