//! Interceptors that see every call: server filters wrap handlers; client filters see calls
//! before they are sent, wrap them, and see their outcome after.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rpc_codec::Status;
use tokio::time::Instant;
use tracing::Instrument;

use crate::caller::{CallOptions, MethodTarget, RawStream, Response};
use crate::context::CallContext;
use crate::error::{RpcError, ServerError};
use crate::service::{BoxFuture, MethodKind, Reply};

/// A server-side interceptor (Dubbo's filter, a tower layer in spirit): it sees each call's
/// context before the handler runs, may refuse it, and may wrap the handler's future to observe
/// or change its reply.
///
/// ```
/// use rpc_core::{BoxFuture, CallContext, Reply, ServerError, ServerFilter, Status};
///
/// /// Refuses calls without an `authorization` metadata entry.
/// #[derive(Debug)]
/// struct RequireAuth;
///
/// impl ServerFilter for RequireAuth {
///     fn filter(
///         &self,
///         ctx: &CallContext,
///         next: BoxFuture<'static, Reply>,
///     ) -> Result<BoxFuture<'static, Reply>, ServerError> {
///         match ctx.metadata().get("authorization") {
///             Some(_) => Ok(next),
///             None => Err(ServerError::new(Status::REJECTED, "missing authorization")),
///         }
///     }
/// }
/// ```
pub trait ServerFilter: Send + Sync + fmt::Debug + 'static {
    /// Passes `next` on (possibly wrapped), or refuses the call with an error reply.
    fn filter(
        &self,
        ctx: &CallContext,
        next: BoxFuture<'static, Reply>,
    ) -> Result<BoxFuture<'static, Reply>, ServerError>;
}

/// A client-side interceptor. It sees every call of the client it is added to — unary,
/// one-way and server-streaming — in three places, each optional:
///
/// - [`before`](Self::before) the call is sent: it may add metadata or refuse the call;
/// - [`around`](Self::around) the call: it wraps the call's future, as a server filter wraps
///   the handler's, to wait before it (a concurrency limit), bound it, or refuse it late;
/// - [`after`](Self::after) the call has its outcome.
///
/// What "the call" covers depends on its kind: a unary call until its response arrives; a
/// one-way call until its request is queued for writing; a server-streaming call until the
/// stream is set up (or fails to be) — the items that follow, and the stream's end, are not
/// seen by filters.
///
/// With several filters, every `before` runs first, in the order the filters were added; then
/// the first added `around` is the outermost; then every `after`, in the order added.
///
/// ```
/// use std::sync::Arc;
///
/// use rpc_core::{CallFuture, ClientFilter, MethodKind, MethodTarget, RpcError};
/// use tokio::sync::Semaphore;
///
/// /// Lets at most `n` calls of this client be under way at once; the others wait their turn.
/// #[derive(Debug)]
/// struct AtMost(Arc<Semaphore>);
///
/// impl ClientFilter for AtMost {
///     fn around<'a>(
///         &'a self,
///         _target: &'a MethodTarget<'a>,
///         _kind: MethodKind,
///         next: CallFuture<'a>,
///     ) -> CallFuture<'a> {
///         Box::pin(async move {
///             let _turn = self.0.acquire().await.map_err(|_| RpcError::Rejected("closed".into()))?;
///             next.await
///         })
///     }
/// }
/// ```
pub trait ClientFilter: Send + Sync + fmt::Debug + 'static {
    /// Runs before the call is sent; an error fails the call without sending it (and without
    /// running [`after`](Self::after)).
    fn before(&self, target: &MethodTarget<'_>, options: &mut CallOptions) -> Result<(), RpcError> {
        let _ = (target, options);
        Ok(())
    }

    /// Wraps the call: returns `next` (the call, with the filters added after this one around
    /// it), or a future that awaits it, or one that fails without awaiting it (the call is then
    /// never sent). The default passes `next` on.
    fn around<'a>(
        &'a self,
        target: &'a MethodTarget<'a>,
        kind: MethodKind,
        next: CallFuture<'a>,
    ) -> CallFuture<'a> {
        let _ = (target, kind);
        next
    }

    /// Runs when the call has its outcome: the status of a unary call's response, or ok for a
    /// one-way call queued and a stream set up; or the error that failed it.
    fn after(
        &self,
        target: &MethodTarget<'_>,
        outcome: Result<Status, &RpcError>,
        elapsed: Duration,
    ) {
        let _ = (target, outcome, elapsed);
    }
}

/// A call on its way, as a [`ClientFilter::around`] wraps it.
pub type CallFuture<'a> = BoxFuture<'a, Result<CallOutput, RpcError>>;

/// What a call returned, whatever its kind, as client filters and the tower adapters see it.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallOutput {
    /// A unary call's response, not yet decoded (its status may be an error the server sent).
    Response(Response),
    /// A one-way call, queued for writing.
    Sent,
    /// A server-streaming call, set up; its items follow.
    Stream(RawStream),
}

impl CallOutput {
    /// The status of a unary call's response; ok for the other kinds.
    pub fn status(&self) -> Status {
        match self {
            CallOutput::Response(r) => r.status(),
            CallOutput::Sent | CallOutput::Stream(_) => Status::OK,
        }
    }

    /// The kind of call this is the output of.
    pub fn kind(&self) -> MethodKind {
        match self {
            CallOutput::Response(_) => MethodKind::Unary,
            CallOutput::Sent => MethodKind::OneWay,
            CallOutput::Stream(_) => MethodKind::ServerStream,
        }
    }

    pub(crate) fn into_response(self) -> Result<Response, RpcError> {
        match self {
            CallOutput::Response(r) => Ok(r),
            other => Err(other.mismatch(MethodKind::Unary)),
        }
    }

    pub(crate) fn into_sent(self) -> Result<(), RpcError> {
        match self {
            CallOutput::Sent => Ok(()),
            other => Err(other.mismatch(MethodKind::OneWay)),
        }
    }

    pub(crate) fn into_stream(self) -> Result<RawStream, RpcError> {
        match self {
            CallOutput::Stream(s) => Ok(s),
            other => Err(other.mismatch(MethodKind::ServerStream)),
        }
    }

    /// A filter or middleware answered a call with the output of another kind of call.
    fn mismatch(&self, expected: MethodKind) -> RpcError {
        RpcError::Internal(format!(
            "a {:?} call came back with the output of a {:?} call",
            expected,
            self.kind()
        ))
    }
}

/// The built-in filter that gives each call a tracing span (`rpc.server` / `rpc.client`) with
/// service, method, request id, status and duration, and logs its end at debug level.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceCalls;

impl ServerFilter for TraceCalls {
    fn filter(
        &self,
        ctx: &CallContext,
        next: BoxFuture<'static, Reply>,
    ) -> Result<BoxFuture<'static, Reply>, ServerError> {
        let span = tracing::info_span!(
            "rpc.server",
            service = ctx.service(),
            method = ctx.method(),
            request_id = ctx.request_id(),
            peer = %ctx.peer(),
            status = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        Ok(Box::pin(
            async move {
                let start = Instant::now();
                let reply = next.await;
                let span = tracing::Span::current();
                let status = reply.status();
                span.record("status", status.name());
                span.record("duration_us", start.elapsed().as_micros() as u64);
                tracing::debug!(status = status.name(), "call finished");
                reply
            }
            .instrument(span),
        ))
    }
}

impl ClientFilter for TraceCalls {
    fn after(
        &self,
        target: &MethodTarget<'_>,
        outcome: Result<Status, &RpcError>,
        elapsed: Duration,
    ) {
        let status = match outcome {
            Ok(s) => s.name().to_owned(),
            Err(e) => e.to_string(),
        };
        let span = tracing::info_span!(
            "rpc.client",
            service = target.service,
            method = target.method,
            status = %status,
            duration_us = elapsed.as_micros() as u64,
        );
        span.in_scope(|| tracing::debug!("call finished"));
    }
}

/// The server's filter chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerFilters {
    chain: Arc<[Arc<dyn ServerFilter>]>,
}

impl ServerFilters {
    pub(crate) fn new(filters: Vec<Arc<dyn ServerFilter>>) -> Self {
        ServerFilters {
            chain: filters.into(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Applies the filters; the first added is the outermost.
    pub(crate) fn apply(
        &self,
        ctx: &CallContext,
        mut next: BoxFuture<'static, Reply>,
    ) -> Result<BoxFuture<'static, Reply>, ServerError> {
        for filter in self.chain.iter().rev() {
            next = filter.filter(ctx, next)?;
        }
        Ok(next)
    }
}

/// A client's filter chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientFilters {
    chain: Arc<[Arc<dyn ClientFilter>]>,
}

impl ClientFilters {
    pub(crate) fn new(filters: Vec<Arc<dyn ClientFilter>>) -> Self {
        ClientFilters {
            chain: filters.into(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Runs a call through the filters: every `before`, the `around`s wrapped around the
    /// future `send` makes from the options the `before`s left, then every `after`.
    pub(crate) async fn run<'a>(
        &'a self,
        target: &'a MethodTarget<'a>,
        kind: MethodKind,
        options: &CallOptions,
        send: impl FnOnce(CallOptions) -> CallFuture<'a>,
    ) -> Result<CallOutput, RpcError> {
        let mut options = options.clone();
        self.chain
            .iter()
            .try_for_each(|f| f.before(target, &mut options))?;
        let start = Instant::now();
        let mut next = send(options);
        for filter in self.chain.iter().rev() {
            next = filter.around(target, kind, next);
        }
        let result = next.await;
        let outcome = result.as_ref().map(CallOutput::status);
        let elapsed = start.elapsed();
        for filter in self.chain.iter() {
            filter.after(target, outcome, elapsed);
        }
        result
    }
}
