//! Fallbacks over real sockets: a server that cannot be reached, a busy one, a call past its
//! deadline, each answered from the method's fallback; the errors that must not be hidden pass
//! through; filters still see the failure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{
    CallOptions, Client, ClientFilter, Fallback, MethodTarget, RpcError, Server, ServerHandle,
    ServerStream, Status,
};
use serde::{Deserialize, Serialize};

/// `price`'s error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PriceError {
    /// Nothing by that name.
    NoSuchItem,
}

/// A service with a method of each shape that falls back, or not.
#[rpc_core::service(name = "test.Shop", version = "1")]
pub trait Shop {
    /// A greeting.
    async fn greet(&self, name: String) -> String;
    /// The price of `item`, or an application error.
    async fn price(&self, item: String) -> Result<u64, PriceError>;
    /// Answers after `ms` milliseconds.
    async fn slow(&self, ms: u64) -> u64;
    /// A short stream.
    async fn items(&self) -> ServerStream<u32>;
}

struct Imp;

impl Shop for Imp {
    async fn greet(&self, name: String) -> String {
        format!("hello, {name}")
    }
    async fn price(&self, item: String) -> Result<u64, PriceError> {
        match item.as_str() {
            "tea" => Ok(3),
            _ => Err(PriceError::NoSuchItem),
        }
    }
    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn items(&self) -> ServerStream<u32> {
        ServerStream::iter([1, 2])
    }
}

async fn serve() -> (ServerHandle, String) {
    let server = Server::builder()
        .service(ShopServer::new(Imp))
        .max_concurrent_per_connection(1)
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().to_string();
    (server, endpoint)
}

/// An endpoint nobody listens on: a port that was free a moment ago.
async fn dead_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("tcp://{addr}")
}

fn builder() -> rpc_core::ClientBuilder {
    Client::builder()
        .fallback(
            "test.Shop",
            "greet",
            Fallback::value("hello from the fallback"),
        )
        .fallback(
            "test.Shop",
            "price",
            Fallback::with(|error| match error {
                RpcError::DeadlineExceeded => Ok(0u64),
                other => Err(other.clone()),
            }),
        )
        .fallback("test.Shop", "slow", Fallback::value(u64::MAX))
        .fallback("test.Shop", "items", Fallback::value(9u32))
}

#[tokio::test]
async fn an_unreachable_server_is_answered_from_the_fallbacks() {
    let client = builder()
        .wait_for_reconnect(false)
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy(dead_endpoint().await)
        .unwrap();
    let shop = ShopClient::new(client);

    assert_eq!(
        shop.greet("ann".into()).await.unwrap(),
        "hello from the fallback"
    );
    // A function of the error may give the error back.
    let price = shop.price("tea".into()).await;
    assert!(matches!(price, Err(RpcError::Connect { .. })), "{price:?}");
    // Streams do not fall back.
    let items = shop.items().await;
    assert!(items.is_err(), "a stream of a dead server");
}

#[tokio::test]
async fn deadlines_and_a_busy_server_fall_back_and_the_rest_passes() {
    let (server, endpoint) = serve().await;
    let client = builder().connect(&endpoint).await.unwrap();
    let shop = ShopClient::new(client.clone());

    // Answers that came pass through untouched, an application error included.
    assert_eq!(shop.greet("ann".into()).await.unwrap(), "hello, ann");
    assert_eq!(shop.price("tea".into()).await.unwrap(), 3);
    assert_eq!(
        shop.price("gold".into()).await,
        Err(RpcError::Application(PriceError::NoSuchItem))
    );
    let items: Vec<u32> = {
        use futures::StreamExt;
        shop.items()
            .await
            .unwrap()
            .map(|item| item.unwrap())
            .collect()
            .await
    };
    assert_eq!(items, [1, 2]);

    // Past the deadline: the fallback's answer.
    let hurried = shop.with_options(CallOptions::default().timeout(Duration::from_millis(50)));
    assert_eq!(hurried.slow(5_000).await.unwrap(), u64::MAX);
    // The server stops the call it gave up on; until then its one slot is taken.
    wait_idle(&server).await;
    assert_eq!(hurried.price("tea".into()).await.unwrap(), 3);

    // One call at a time on this connection: the second is refused as busy, and falls back.
    let busy = tokio::spawn({
        let shop = shop.clone();
        async move { shop.slow(300).await }
    });
    let mut refused = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let answer = shop.greet("bob".into()).await.unwrap();
        if answer == "hello from the fallback" {
            refused = Some(answer);
            break;
        }
    }
    assert!(refused.is_some(), "no call was refused as busy");
    assert_eq!(busy.await.unwrap().unwrap(), 300);
    wait_idle(&server).await;

    // A method without a fallback fails as it would.
    let target = MethodTarget {
        service: "test.Shop",
        version: "1",
        method: "nope",
        idempotent: false,
    };
    let unknown = client.call::<_, u64>(&target, &()).await;
    assert!(
        matches!(unknown, Err(RpcError::MethodNotFound(_))),
        "{unknown:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// Waits until the server runs no call (at most 5 s).
async fn wait_idle(server: &ServerHandle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.in_flight() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "a call never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Records what its `after` sees.
#[derive(Debug, Default)]
struct Seen(Arc<Mutex<Vec<Result<Status, String>>>>);

impl ClientFilter for Seen {
    fn after(
        &self,
        _target: &MethodTarget<'_>,
        outcome: Result<Status, &RpcError>,
        _elapsed: Duration,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(outcome.map_err(|e| e.to_string()));
    }
}

#[tokio::test]
async fn filters_see_the_failure_the_caller_gets_the_fallback() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fallback = Fallback::value("hello from the fallback");
    let client = Client::builder()
        .filter(Seen(seen.clone()))
        .fallback("test.Shop", "greet", fallback.clone())
        .wait_for_reconnect(false)
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy(dead_endpoint().await)
        .unwrap();
    let shop = ShopClient::new(client);
    assert_eq!(
        shop.greet("ann".into()).await.unwrap(),
        "hello from the fallback"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .as_ref()
            .is_err_and(|e| e.contains("could not connect")),
        "{seen:?}"
    );
    assert_eq!(fallback.used(), 1);
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn fallbacks_are_counted_in_the_metrics() {
    let metrics = rpc_core::metrics::Metrics::new();
    let client = builder()
        .metrics(&metrics)
        .wait_for_reconnect(false)
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy(dead_endpoint().await)
        .unwrap();
    let shop = ShopClient::new(client);
    for _ in 0..2 {
        assert_eq!(
            shop.greet("ann".into()).await.unwrap(),
            "hello from the fallback"
        );
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"rpc_client_fallbacks_total{service="test.Shop",method="greet"} 2"#),
        "{text}"
    );
    // The failures themselves are counted as what they were.
    assert!(text.contains(r#"status="connect failed""#), "{text}");
}
