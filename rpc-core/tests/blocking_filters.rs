//! Blocking calls from plain threads, and filters on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{
    BlockingClient, BoxFuture, CallContext, CallOptions, Caller, Client, ClientFilter,
    MethodTarget, Reply, RpcError, Server, ServerError, ServerFilter, Status, TraceCalls,
};
use support::{Echo, target};

#[test]
fn a_blocking_call_from_a_plain_thread() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(
            Server::builder()
                .service(Echo::default())
                .listen("tcp://127.0.0.1:0")
                .start(),
        )
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let client = BlockingClient::connect(&endpoint).unwrap();
        let ok: (u64, u64) = client.call(&target("tagged"), &(9u64, 0u64)).unwrap();
        assert_eq!(ok, (9, 18));
        // Generated or untyped async calls run through `block_on`.
        let async_client = client.client().clone();
        let ok = client
            .block_on(async move {
                async_client
                    .call::<_, (u64, u64)>(&target("tagged"), &(10u64, 0u64))
                    .await
            })
            .unwrap();
        assert_eq!(ok, (10, 20));
    });
    handle.join().unwrap();
    runtime.block_on(server.shutdown(Duration::from_secs(1)));
}

#[tokio::test]
async fn a_blocking_call_inside_a_runtime_is_refused_not_deadlocked() {
    let err = BlockingClient::connect("tcp://127.0.0.1:1").unwrap_err();
    assert!(
        matches!(err, RpcError::Internal(ref m) if m.contains("async runtime")),
        "{err}"
    );
}

/// Refuses calls that lack a `token` metadata entry equal to "secret".
#[derive(Debug)]
struct RequireToken {
    seen: Arc<AtomicUsize>,
}

impl ServerFilter for RequireToken {
    fn filter(
        &self,
        ctx: &CallContext,
        next: BoxFuture<'static, Reply>,
    ) -> Result<BoxFuture<'static, Reply>, ServerError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        match ctx.metadata().get("token") {
            Some("secret") => Ok(next),
            _ => Err(ServerError::new(Status::REJECTED, "bad token")),
        }
    }
}

/// Adds the token to every call, and counts outcomes.
#[derive(Debug)]
struct AddToken {
    outcomes: Arc<AtomicUsize>,
}

impl ClientFilter for AddToken {
    fn before(&self, _: &MethodTarget<'_>, options: &mut CallOptions) -> Result<(), RpcError> {
        options
            .metadata
            .insert("token", "secret")
            .map_err(|e| RpcError::BadRequest(e.to_string()))?;
        Ok(())
    }

    fn after(&self, _: &MethodTarget<'_>, _: Result<Status, &RpcError>, _: Duration) {
        self.outcomes.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn filters_see_every_call_and_can_reject_by_metadata() {
    let seen = Arc::new(AtomicUsize::new(0));
    let endpoint = support::mem_endpoint("filters");
    let server = Server::builder()
        .service(Echo::default())
        .filter(TraceCalls)
        .filter(RequireToken { seen: seen.clone() })
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();

    let plain = Client::builder().connect(&endpoint).await.unwrap();
    let err = plain
        .call::<_, (u64, u64)>(&target("tagged"), &(1u64, 0u64))
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::Rejected("bad token".into()));
    let wrong = CallOptions::new().metadata("token", "guess").unwrap();
    let err = plain
        .call_unary(&target("tagged"), &wrong, &(1u64, 0u64))
        .await
        .unwrap()
        .decode::<(u64, u64)>()
        .unwrap_err();
    assert_eq!(err, RpcError::Rejected("bad token".into()));

    let outcomes = Arc::new(AtomicUsize::new(0));
    let with_token = Client::builder()
        .filter(AddToken {
            outcomes: outcomes.clone(),
        })
        .filter(TraceCalls)
        .connect(&endpoint)
        .await
        .unwrap();
    let ok: (u64, u64) = with_token
        .call(&target("tagged"), &(2u64, 0u64))
        .await
        .unwrap();
    assert_eq!(ok, (2, 4));
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(outcomes.load(Ordering::SeqCst), 1);
    server.shutdown(Duration::from_secs(1)).await;
}
