//! Balancing and failover over a fixed list of members, without a registry. Memory transport
//! and paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Client, Endpoint, RpcError, Server, ServerHandle};
use rpc_registry::{Cluster, ClusterConfig, Member, Strategy};

/// Says which member answered, and counts the calls each member started.
#[rpc_core::service(name = "test.Who")]
trait Who {
    #[rpc(idempotent)]
    async fn who(&self) -> String;
    /// Answers after `ms` milliseconds; safe to run twice.
    #[rpc(idempotent)]
    async fn slow_who(&self, ms: u64) -> String;
    /// Answers after `ms` milliseconds; not safe to run twice.
    async fn charge(&self, ms: u64) -> String;
}

struct Named {
    name: String,
    started: Arc<AtomicUsize>,
}

impl Who for Named {
    async fn who(&self) -> String {
        self.name.clone()
    }
    async fn slow_who(&self, ms: u64) -> String {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.name.clone()
    }
    async fn charge(&self, ms: u64) -> String {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.name.clone()
    }
}

fn mem(name: &str) -> Endpoint {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mem://cluster-{name}-{}", N.fetch_add(1, Ordering::Relaxed))
        .parse()
        .unwrap()
}

/// A server named `name`, with the count of calls it started.
async fn serve(name: &str) -> (ServerHandle, Endpoint, Arc<AtomicUsize>) {
    let endpoint = mem(name);
    let started = Arc::new(AtomicUsize::new(0));
    let server = Server::builder()
        .service(WhoServer::new(Named {
            name: name.to_owned(),
            started: started.clone(),
        }))
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    (server, endpoint, started)
}

async fn tally(client: &WhoClient<Cluster>, calls: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts.entry(client.who().await.unwrap()).or_default() += 1;
    }
    counts
}

fn member(id: &str, endpoint: &Endpoint, weight: u32) -> Member {
    let client = Client::builder()
        .wait_for_reconnect(false)
        .connect_lazy(endpoint)
        .unwrap();
    Member::new(id, client).with_weight(weight)
}

#[tokio::test(start_paused = true)]
async fn calls_spread_over_a_fixed_list_by_weight() {
    let (_a, a, _) = serve("a").await;
    let (_b, b, _) = serve("b").await;
    let (_c, c, _) = serve("c").await;
    let mut config = ClusterConfig::default();
    config.strategy = Strategy::RoundRobin;
    let cluster = Cluster::new(
        [
            member("a", &a, 100),
            member("b", &b, 100),
            member("c", &c, 200),
        ],
        config,
    );
    let counts = tally(&WhoClient::new(cluster.clone()), 400).await;
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&200), "{counts:?}");

    // A new list takes over: calls go to its members only.
    cluster.update([member("b", &b, 100)]);
    assert_eq!(cluster.members().len(), 1);
    let counts = tally(&WhoClient::new(cluster), 50).await;
    assert_eq!(counts.get("b"), Some(&50), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn calls_fail_over_from_a_member_that_is_down() {
    let (_a, a, _) = serve("a").await;
    let (_b, b, _) = serve("b").await;
    let down = mem("down"); // nothing listens here
    let cluster = Cluster::connect_lazy([&a, &down, &b], ClusterConfig::default()).unwrap();
    assert_eq!(cluster.members().len(), 3);
    let client = WhoClient::new(cluster);
    // Even calls that are not idempotent: a member that cannot be connected to never ran them.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *counts.entry(client.charge(0).await.unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts["a"] > 50 && counts["b"] > 50, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn failfast_fails_on_the_member_that_is_down() {
    let down = mem("down");
    let mut config = ClusterConfig::default();
    config.failfast = true;
    let (_a, a, _) = serve("a").await;
    let cluster = Cluster::new([member("down", &down, 100)], config);
    let err = WhoClient::new(cluster.clone()).who().await.unwrap_err();
    assert!(matches!(err, RpcError::Connect { .. }), "{err}");
    // With the dead member replaced by a live one, calls succeed.
    cluster.update([member("a", &a, 100)]);
    assert_eq!(WhoClient::new(cluster).who().await.unwrap(), "a");
}

/// Two members, a call in flight on one of them when that one dies: the other one takes it
/// only if the method is idempotent.
async fn call_while_its_member_dies(idempotent: bool) -> (Result<String, RpcError>, usize) {
    let (first, a, started_a) = serve("a").await;
    let (second, b, started_b) = serve("b").await;
    let mut config = ClusterConfig::default();
    config.strategy = Strategy::RoundRobin;
    let client = WhoClient::new(Cluster::new(
        [member("a", &a, 100), member("b", &b, 100)],
        config,
    ));
    let call = tokio::spawn(async move {
        if idempotent {
            client.slow_who(1000).await
        } else {
            client.charge(1000).await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (picked, other, started_other) = if started_a.load(Ordering::SeqCst) == 1 {
        (first, second, started_b)
    } else {
        assert_eq!(started_b.load(Ordering::SeqCst), 1);
        (second, first, started_a)
    };
    picked.abort().await;
    let result = call.await.unwrap();
    let ran_elsewhere = started_other.load(Ordering::SeqCst);
    other.abort().await;
    (result, ran_elsewhere)
}

#[tokio::test(start_paused = true)]
async fn a_call_that_may_have_run_moves_only_if_idempotent() {
    let (result, ran_elsewhere) = call_while_its_member_dies(false).await;
    assert!(
        matches!(result, Err(RpcError::ConnectionLost(_))),
        "{result:?}"
    );
    assert_eq!(ran_elsewhere, 0);

    let (result, ran_elsewhere) = call_while_its_member_dies(true).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(ran_elsewhere, 1);
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stays_keeps_its_calls_in_flight_across_an_update() {
    let (_a, a, _) = serve("a").await;
    let (_b, b, _) = serve("b").await;
    let mut config = ClusterConfig::default();
    config.strategy = Strategy::LeastInFlight;
    let cluster = Cluster::new([member("a", &a, 100)], config);
    let client = WhoClient::new(cluster.clone());
    let long: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.slow_who(1000).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;

    // "a" stays (same id, same client) with its two calls; "b" joins with none.
    let same_a = cluster.members().remove(0);
    cluster.update([same_a, member("b", &b, 100)]);
    let short: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.slow_who(100).await.unwrap() })
        })
        .collect();
    for call in short {
        assert_eq!(call.await.unwrap(), "b");
    }
    for call in long {
        assert_eq!(call.await.unwrap(), "a");
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_cluster_says_nothing_is_available() {
    let cluster = Cluster::new([], ClusterConfig::default());
    let err = WhoClient::new(cluster).who().await.unwrap_err();
    assert!(matches!(err, RpcError::Unavailable(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_answers_once_every_member_has_failed() {
    let (a_server, a, _) = serve("a").await;
    let down = mem("down"); // nothing listens here
    let fallback = rpc_core::Fallback::value("nobody");
    let mut config = ClusterConfig::default();
    config.fallbacks = rpc_core::Fallbacks::new().method("test.Who", "who", fallback.clone());
    let cluster = Cluster::connect_lazy([&down, &a], config).unwrap();
    let client = WhoClient::new(cluster);
    // A member that is down is failed over, not answered from the fallback.
    for _ in 0..20 {
        assert_eq!(client.who().await.unwrap(), "a");
    }
    assert_eq!(fallback.used(), 0);

    // With every member down, the fallback answers; a method without one fails.
    a_server.abort().await;
    assert_eq!(client.who().await.unwrap(), "nobody");
    assert_eq!(fallback.used(), 1);
    let charged = client.charge(0).await;
    assert!(charged.is_err(), "{charged:?}");
}
