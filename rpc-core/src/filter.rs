//! Interceptors that see every call: server filters wrap handlers, client filters see calls
//! before they are sent and their outcome after.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rpc_codec::Status;
use tokio::time::Instant;
use tracing::Instrument;

use crate::caller::{CallOptions, MethodTarget};
use crate::context::CallContext;
use crate::error::{RpcError, ServerError};
use crate::service::{BoxFuture, Reply};

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

/// A client-side interceptor: sees each call before it is sent (and may add metadata or refuse
/// it) and its outcome after.
pub trait ClientFilter: Send + Sync + fmt::Debug + 'static {
    /// Runs before the call is sent; an error fails the call without sending it.
    fn before(&self, target: &MethodTarget<'_>, options: &mut CallOptions) -> Result<(), RpcError> {
        let _ = (target, options);
        Ok(())
    }

    /// Runs when the call has its outcome.
    fn after(
        &self,
        target: &MethodTarget<'_>,
        outcome: Result<Status, &RpcError>,
        elapsed: Duration,
    ) {
        let _ = (target, outcome, elapsed);
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

    pub(crate) fn before(
        &self,
        target: &MethodTarget<'_>,
        options: &mut CallOptions,
    ) -> Result<(), RpcError> {
        self.chain
            .iter()
            .try_for_each(|f| f.before(target, options))
    }

    pub(crate) fn after(
        &self,
        target: &MethodTarget<'_>,
        outcome: Result<Status, &RpcError>,
        elapsed: Duration,
    ) {
        for f in self.chain.iter() {
            f.after(target, outcome, elapsed);
        }
    }
}
