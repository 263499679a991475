//! Tower middleware on both sides (feature `tower`): limits and timeouts that act on real calls.
//! Memory transport and paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{
    CallOptions, Caller, Client, LayeredCaller, LayeredService, RpcError, RpcStream, Server,
    ServerHandle, Service,
};
use support::{Echo, target};
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;

async fn serve(service: impl Service, name: &str) -> (ServerHandle, rpc_core::Endpoint) {
    let endpoint = support::mem_endpoint(name);
    let server = Server::builder()
        .service(service)
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    (server, endpoint)
}

#[tokio::test(start_paused = true)]
async fn a_server_side_concurrency_limit_holds_calls_back() {
    let echo = Echo::default();
    let limited = LayeredService::new(echo.clone(), ConcurrencyLimitLayer::new(1));
    assert_eq!(limited.name(), "test.Echo");
    assert_eq!(limited.methods(), echo.methods());
    let (server, endpoint) = serve(limited, "tower-server-limit").await;
    let client = Client::connect(&endpoint).await.unwrap();

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call::<_, u64>(&target("sleep"), &(100u64,))
                    .await
                    .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 2);
    for call in calls {
        assert_eq!(call.await.unwrap(), 100);
    }
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 3);

    // Streams and unknown methods pass through unchanged.
    let items: Vec<u64> = RpcStream::<u64>::new(
        client
            .call_stream(&target("count"), &CallOptions::default(), &(3u64,))
            .await
            .unwrap(),
    )
    .map(|item| item.unwrap())
    .collect()
    .await;
    assert_eq!(items, [0, 1, 2]);
    let missing = client
        .call::<_, ()>(&target("nowhere"), &())
        .await
        .unwrap_err();
    assert!(matches!(missing, RpcError::MethodNotFound(_)), "{missing}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn server_side_middleware_errors_become_statuses() {
    let echo = Echo::default();
    // One call at a time, and a call that finds the slot taken is shed rather than queued.
    let stack = ServiceBuilder::new()
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(1))
        .layer(TimeoutLayer::new(Duration::from_millis(500)));
    let (server, endpoint) = serve(LayeredService::new(echo.clone(), stack), "tower-shed").await;
    let client = Client::connect(&endpoint).await.unwrap();

    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, u64>(&target("sleep"), &(100u64,)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let shed = client
        .call::<_, u64>(&target("sleep"), &(100u64,))
        .await
        .unwrap_err();
    assert!(matches!(shed, RpcError::ServerBusy(_)), "{shed}");
    assert!(shed.not_started());
    assert_eq!(first.await.unwrap(), Ok(100));

    let late = client
        .call::<_, u64>(&target("sleep"), &(1000u64,))
        .await
        .unwrap_err();
    assert_eq!(late, RpcError::DeadlineExceeded);
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 2);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_side_stack_limits_and_times_out_calls() {
    let echo = Echo::default();
    let (server, endpoint) = serve(echo.clone(), "tower-client").await;
    let client = Client::connect(&endpoint).await.unwrap();
    let stack = ServiceBuilder::new()
        .concurrency_limit(1)
        .layer(TimeoutLayer::new(Duration::from_millis(500)));
    let caller = LayeredCaller::new(client, stack);

    let calls: Vec<_> = (0..2)
        .map(|_| {
            let caller = caller.clone();
            tokio::spawn(async move {
                caller
                    .call_unary(&target("sleep"), &CallOptions::default(), &(100u64,))
                    .await
                    .unwrap()
                    .decode::<u64>()
                    .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 1);
    for call in calls {
        assert_eq!(call.await.unwrap(), 100);
    }
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 2);

    // The tower timeout ends the call before the client's own 10 s default would.
    let err = caller
        .call_unary(&target("sleep"), &CallOptions::default(), &(2000u64,))
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::DeadlineExceeded);
    echo.probe.wait_dropped(1).await;

    // One-way calls and streams go through the stack too.
    caller
        .call_one_way(&target("note"), &CallOptions::default(), &())
        .await
        .unwrap();
    echo.probe.wait_one_way(1).await;
    let items: Vec<u64> = RpcStream::<u64>::new(
        caller
            .call_stream(&target("count"), &CallOptions::default(), &(2u64,))
            .await
            .unwrap(),
    )
    .map(|item| item.unwrap())
    .collect()
    .await;
    assert_eq!(items, [0, 1]);
    server.shutdown(Duration::from_secs(1)).await;
}

/// Generated clients take a layered caller like any other.
#[rpc_core::service(name = "test.Echo")]
trait Sleeper {
    async fn sleep(&self, ms: u64) -> u64;
}

#[tokio::test(start_paused = true)]
async fn a_generated_client_over_a_layered_caller() {
    let (server, endpoint) = serve(Echo::default(), "tower-typed").await;
    let client = Client::connect(&endpoint).await.unwrap();
    let caller = LayeredCaller::new(client, TimeoutLayer::new(Duration::from_millis(50)));
    let sleeper = SleeperClient::new(caller);
    assert_eq!(sleeper.sleep(10).await, Ok(10));
    assert_eq!(sleeper.sleep(100).await, Err(RpcError::DeadlineExceeded));
    server.shutdown(Duration::from_secs(1)).await;
}
