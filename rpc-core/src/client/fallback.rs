//! Fallbacks: what a unary call answers when it fails for want of a server (Dubbo's mock).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rpc_codec::{Format, Status};
use serde::Serialize;

use crate::caller::{MethodTarget, Response, error_from_body};
use crate::error::RpcError;

/// Whether a failure is one a [`Fallback`] answers: the server could not be reached or the
/// connection to it was lost ([`RpcError::Connect`], [`RpcError::ConnectionLost`]), it said it
/// is busy or unavailable (draining) ([`RpcError::ServerBusy`], [`RpcError::Unavailable`]), or
/// the deadline passed ([`RpcError::DeadlineExceeded`], whether the client or the server saw it
/// pass). Errors that say the call itself is wrong (an unknown method, a bad request, a refusal)
/// and the method's own errors pass through: a fallback would hide a bug there.
pub fn falls_back(error: &RpcError) -> bool {
    matches!(
        error,
        RpcError::Connect { .. }
            | RpcError::ConnectionLost(_)
            | RpcError::ServerBusy(_)
            | RpcError::Unavailable(_)
            | RpcError::DeadlineExceeded
    )
}

type Answer = dyn Fn(&RpcError, &Format) -> Result<Bytes, RpcError> + Send + Sync;

/// The answer of one unary method when its call fails as [`falls_back`] says: a value, or a
/// function of the error (which may also fail the call with an error of its own). The answer
/// is what the method returns on success (the `T` of a `Result<T, E>` method), encoded in the
/// client's format and decoded by the caller as if the server had sent it, so a fallback of
/// the wrong type fails the call with a decoding error.
///
/// ```no_run
/// # async fn demo() -> Result<(), rpc_core::RpcError> {
/// use rpc_core::{Client, Fallback};
///
/// let client = Client::builder()
///     // A greeting whatever goes wrong with the greeter.
///     .fallback("hello.Greeter", "hello", Fallback::value("hello from the fallback"))
///     // The last price seen, or the error when there is none.
///     .fallback("shop.Prices", "price", Fallback::with(|error| match last_price() {
///         Some(price) => Ok(price),
///         None => Err(error.clone()),
///     }))
///     .connect_lazy("tcp://127.0.0.1:7000")?;
/// # Ok(()) }
/// # fn last_price() -> Option<u64> { None }
/// ```
#[derive(Clone)]
pub struct Fallback {
    answer: Arc<Answer>,
    used: Arc<AtomicU64>,
}

impl Fallback {
    /// Answers with `value`.
    pub fn value<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        Fallback::from_answer(move |_, format| Ok(format.to_bytes(&value)?))
    }

    /// Answers with what `answer` makes of the error: a value, or an error to fail the call
    /// with (the same error, say, when there is nothing better to give).
    pub fn with<T, F>(answer: F) -> Self
    where
        T: Serialize,
        F: Fn(&RpcError) -> Result<T, RpcError> + Send + Sync + 'static,
    {
        Fallback::from_answer(move |error, format| Ok(format.to_bytes(&answer(error)?)?))
    }

    fn from_answer(
        answer: impl Fn(&RpcError, &Format) -> Result<Bytes, RpcError> + Send + Sync + 'static,
    ) -> Self {
        Fallback {
            answer: Arc::new(answer),
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many calls this fallback has answered (or failed with its own error).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

/// The fallbacks of a client or a cluster, by service and method name (any version of the
/// service). Only unary calls fall back; one-way calls and streams fail as they would without.
#[derive(Clone, Default)]
pub struct Fallbacks {
    by_service: Arc<HashMap<String, HashMap<String, Fallback>>>,
}

impl Fallbacks {
    /// No fallbacks.
    pub fn new() -> Self {
        Fallbacks::default()
    }

    /// Adds (or replaces) the fallback of `service`'s `method`.
    pub fn method(
        mut self,
        service: impl Into<String>,
        method: impl Into<String>,
        fallback: Fallback,
    ) -> Self {
        Arc::make_mut(&mut self.by_service)
            .entry(service.into())
            .or_default()
            .insert(method.into(), fallback);
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty()
    }

    /// The fallback of `service`'s `method`, if it has one.
    pub fn get(&self, service: &str, method: &str) -> Option<&Fallback> {
        self.by_service.get(service)?.get(method)
    }

    /// The outcome of a unary call of `target`, with a failure that [`falls_back`] answered by
    /// the method's fallback, if it has one. An error status in the response counts as that
    /// error.
    pub fn apply(
        &self,
        target: &MethodTarget<'_>,
        format: &Format,
        outcome: Result<Response, RpcError>,
    ) -> Result<Response, RpcError> {
        self.apply_counted(target, format, outcome, || {})
    }

    /// As [`apply`](Self::apply), calling `used` when the fallback answers.
    pub(crate) fn apply_counted(
        &self,
        target: &MethodTarget<'_>,
        format: &Format,
        outcome: Result<Response, RpcError>,
        used: impl FnOnce(),
    ) -> Result<Response, RpcError> {
        let Some(fallback) = self.get(target.service, target.method) else {
            return outcome;
        };
        let error = match outcome {
            Ok(response) if answered_by_fallback(response.status()) => {
                error_from_body(response.status(), response.body(), |body| Ok(body.message))
            }
            Err(error) if falls_back(&error) => error,
            other => return other,
        };
        fallback.used.fetch_add(1, Ordering::Relaxed);
        used();
        tracing::debug!(
            service = target.service,
            method = target.method,
            %error,
            "the call failed; its fallback answers"
        );
        let body = (fallback.answer)(&error, format)?;
        Ok(Response {
            format: format.clone(),
            status: Status::OK,
            body,
        })
    }
}

/// The error statuses a server sends that [`falls_back`] covers.
fn answered_by_fallback(status: Status) -> bool {
    matches!(
        status,
        Status::SERVER_BUSY | Status::UNAVAILABLE | Status::DEADLINE_EXCEEDED
    )
}

impl fmt::Debug for Fallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<String> = self
            .by_service
            .iter()
            .flat_map(|(service, methods)| methods.keys().map(move |m| format!("{service}/{m}")))
            .collect();
        methods.sort();
        f.debug_tuple("Fallbacks").field(&methods).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Cause;

    const TARGET: MethodTarget<'static> = MethodTarget {
        service: "s",
        version: "1",
        method: "m",
        idempotent: false,
    };

    fn fallbacks() -> Fallbacks {
        Fallbacks::new().method("s", "m", Fallback::value(7u32))
    }

    fn answer(outcome: Result<Response, RpcError>) -> Result<u32, RpcError> {
        fallbacks()
            .apply(&TARGET, &Format::Json, outcome)?
            .decode::<u32>()
    }

    fn status_response(status: Status) -> Response {
        let mut body = bytes::BytesMut::new();
        crate::error::ServerError::new(status, "no")
            .body()
            .put(&mut body);
        Response {
            format: Format::Json,
            status,
            body: body.freeze(),
        }
    }

    #[test]
    fn answers_for_want_of_a_server_only() {
        let lost = RpcError::ConnectionLost(Cause::message("reset"));
        assert_eq!(answer(Err(lost)).unwrap(), 7);
        assert_eq!(answer(Err(RpcError::DeadlineExceeded)).unwrap(), 7);
        assert_eq!(answer(Err(RpcError::ServerBusy("full".into()))).unwrap(), 7);
        assert_eq!(answer(Ok(status_response(Status::SERVER_BUSY))).unwrap(), 7);
        assert_eq!(answer(Ok(status_response(Status::UNAVAILABLE))).unwrap(), 7);
        assert_eq!(
            answer(Ok(status_response(Status::DEADLINE_EXCEEDED))).unwrap(),
            7
        );

        assert!(matches!(
            answer(Err(RpcError::MethodNotFound("m".into()))),
            Err(RpcError::MethodNotFound(_))
        ));
        assert!(matches!(
            answer(Ok(status_response(Status::APPLICATION_ERROR))),
            Err(RpcError::Application(_))
        ));
        let ok = Response {
            format: Format::Json,
            status: Status::OK,
            body: Bytes::from_static(b"3"),
        };
        assert_eq!(answer(Ok(ok)).unwrap(), 3);
    }

    #[test]
    fn other_methods_and_functions_of_the_error() {
        let other = MethodTarget {
            method: "n",
            ..TARGET
        };
        let outcome = fallbacks().apply(&other, &Format::Json, Err(RpcError::DeadlineExceeded));
        assert!(matches!(outcome, Err(RpcError::DeadlineExceeded)));

        let fallback = Fallback::with(|e| match e {
            RpcError::DeadlineExceeded => Ok("late".to_owned()),
            other => Err(other.clone()),
        });
        let fallbacks = Fallbacks::new().method("s", "m", fallback.clone());
        let late = fallbacks
            .apply(
                &TARGET,
                &Format::MessagePack,
                Err(RpcError::DeadlineExceeded),
            )
            .unwrap();
        assert_eq!(late.decode::<String>().unwrap(), "late");
        let busy = fallbacks.apply(
            &TARGET,
            &Format::MessagePack,
            Err(RpcError::ServerBusy("full".into())),
        );
        assert!(matches!(busy, Err(RpcError::ServerBusy(_))));
        assert_eq!(fallback.used(), 2);
    }
}
