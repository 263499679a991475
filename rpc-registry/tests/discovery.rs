//! Discovery-aware calls: spreading, failover, and riding out registry trouble. Memory
//! transport and paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{CallOptions, Client, Endpoint, RpcError, Server, ServerHandle};
use rpc_registry::{
    DiscoverClient, Discovery, DiscoveryConfig, Instance, MemoryRegistry, RegisterOptions,
    RegisteredServer, Registry, RegistryApiServer, RegistryService, RemoteRegistry, ServiceKey,
    Strategy,
};

/// Says which instance answered.
#[rpc_core::service(name = "test.Who")]
trait Who {
    #[rpc(idempotent)]
    async fn who(&self) -> String;
    /// Answers after `ms` milliseconds.
    #[rpc(idempotent)]
    async fn slow_who(&self, ms: u64) -> String;
    /// Not idempotent: never retried after it may have run.
    async fn charge(&self, ms: u64) -> String;
}

struct Named(String);

impl Who for Named {
    async fn who(&self) -> String {
        self.0.clone()
    }
    async fn slow_who(&self, ms: u64) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.clone()
    }
    async fn charge(&self, ms: u64) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.clone()
    }
}

fn mem(name: &str) -> Endpoint {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "mem://discovery-{name}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
    .parse()
    .unwrap()
}

fn key() -> ServiceKey {
    ServiceKey::of::<WhoClient>()
}

async fn start(registry: Arc<dyn Registry>, name: &str, weight: u32) -> RegisteredServer {
    let builder = Server::builder()
        .service(WhoServer::new(Named(name.to_owned())))
        .listen(mem(name));
    let mut options = RegisterOptions::default();
    options.weight = weight;
    RegisteredServer::start(builder, registry, options)
        .await
        .unwrap()
}

async fn tally(client: &WhoClient<Discovery>, calls: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts.entry(client.who().await.unwrap()).or_default() += 1;
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn calls_spread_over_instances_by_weight() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _a = start(registry.clone(), "a", 100).await;
    let _b = start(registry.clone(), "b", 100).await;
    let _c = start(registry.clone(), "c", 200).await;
    let discovery = Discovery::new(registry.clone(), key());
    assert!(discovery.wait_for(3, Duration::from_secs(5)).await);
    let counts = tally(&WhoClient::new(discovery), 4000).await;
    let share = |n: &str| counts.get(n).copied().unwrap_or(0) as f64 / 4000.0;
    assert!((share("a") - 0.25).abs() < 0.05, "{counts:?}");
    assert!((share("b") - 0.25).abs() < 0.05, "{counts:?}");
    assert!((share("c") - 0.50).abs() < 0.05, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_typed_client_finds_what_its_server_registered_without_naming_it() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _a = start(registry.clone(), "a", 100).await;
    // The server registered under the name and version of its `#[service]` attribute.
    let registered = registry
        .discover(&ServiceKey::new("test.Who"))
        .await
        .unwrap();
    assert_eq!(registered.instances.len(), 1);
    assert_eq!(
        ServiceKey::of::<WhoServer<Named>>(),
        ServiceKey::of::<WhoClient>()
    );

    let client = WhoClient::discover(registry.clone());
    assert_eq!(client.caller().key(), &ServiceKey::new("test.Who"));
    assert!(client.caller().wait_for(1, Duration::from_secs(5)).await);
    assert_eq!(client.who().await.unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn round_robin_and_consistent_hash() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _servers = [
        start(registry.clone(), "a", 100).await,
        start(registry.clone(), "b", 100).await,
        start(registry.clone(), "c", 100).await,
    ];
    let mut config = DiscoveryConfig::default();
    config.strategy = Strategy::RoundRobin;
    let rr = Discovery::with_config(registry.clone(), key(), config.clone());
    assert!(rr.wait_for(3, Duration::from_secs(5)).await);
    let counts = tally(&WhoClient::new(rr), 300).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{counts:?}"
    );

    config.strategy = Strategy::ConsistentHash { virtual_nodes: 160 };
    let ch = Discovery::with_config(registry.clone(), key(), config);
    assert!(ch.wait_for(3, Duration::from_secs(5)).await);
    let client = WhoClient::new(ch);
    for user in 0..20u64 {
        let pinned = client.with_options(CallOptions::new().hash_key(user));
        let first = pinned.who().await.unwrap();
        for _ in 0..5 {
            assert_eq!(pinned.who().await.unwrap(), first, "key {user} moved");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stopping_an_instance_moves_its_share_with_no_failed_idempotent_call() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut a = Some(start(registry.clone(), "a", 100).await);
    let _b = start(registry.clone(), "b", 100).await;
    let _c = start(registry.clone(), "c", 100).await;
    let discovery = Discovery::new(registry.clone(), key());
    assert!(discovery.wait_for(3, Duration::from_secs(5)).await);
    let client = WhoClient::new(discovery.clone());

    // Calls in flight on every instance while one of them is killed outright (no go-away, no
    // deregistration): its in-flight idempotent calls fail over, later calls avoid it.
    let failures = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for i in 0..600u64 {
        let (client, failures) = (client.clone(), failures.clone());
        calls.push(tokio::spawn(async move {
            if let Err(e) = client.slow_who(50).await {
                eprintln!("call {i}: {e}");
                failures.fetch_add(1, Ordering::SeqCst);
            }
        }));
        if i == 200 {
            // As a killed process: the server and its lease renewals stop together.
            let a = a.take().unwrap();
            a.server().abort().await;
            drop(a);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    // Once its lease expires, the killed instance disappears from the list.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut ids: Vec<_> = discovery
        .instances()
        .into_iter()
        .map(|i| i.endpoint)
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let counts = tally(&client, 100).await;
    assert!(!counts.contains_key("a"), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_call_that_may_have_run_is_not_retried_unless_idempotent() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let only = start(registry.clone(), "only", 100).await;
    let _other = start(registry.clone(), "other", 0).await; // weight 0: never picked first
    let discovery = Discovery::new(registry.clone(), key());
    assert!(discovery.wait_for(2, Duration::from_secs(5)).await);
    let client = WhoClient::new(discovery);
    let charge = {
        let client = client.clone();
        tokio::spawn(async move { client.charge(1000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    only.server().abort().await;
    let err = charge.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn failfast_does_not_retry() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dead = start(registry.clone(), "dead", 100).await;
    let mut config = DiscoveryConfig::default();
    config.failfast = true;
    let discovery = Discovery::with_config(registry.clone(), key(), config);
    assert!(discovery.wait_for(1, Duration::from_secs(5)).await);
    dead.server().abort().await;
    let err = WhoClient::new(discovery).who().await.unwrap_err();
    assert!(err.is_connection_error(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_last_known_list_survives_an_unreachable_registry_and_an_empty_push() {
    // The registry itself is served over RPC so it can be taken away.
    let registry_endpoint = mem("registry");
    let store = MemoryRegistry::new();
    let registry_server: ServerHandle = Server::builder()
        .service(RegistryApiServer::new(RegistryService::new(Arc::new(
            store.clone(),
        ))))
        .listen(registry_endpoint.clone())
        .start()
        .await
        .unwrap();
    let remote: Arc<dyn Registry> = Arc::new(RemoteRegistry::new(
        Client::builder().connect(&registry_endpoint).await.unwrap(),
    ));
    // Servers register straight in the store; the client discovers through the remote.
    let store: Arc<dyn Registry> = Arc::new(store);
    let a = start(store.clone(), "a", 100).await;
    let discovery = Discovery::new(remote, key());
    assert!(discovery.wait_for(1, Duration::from_secs(5)).await);
    let client = WhoClient::new(discovery.clone());

    registry_server.abort().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(discovery.instances().len(), 1);
    assert_eq!(client.who().await.unwrap(), "a");

    // An empty push (every instance gone at once) is not acted on either.
    let direct = Discovery::new(store.clone(), key());
    assert!(direct.wait_for(1, Duration::from_secs(5)).await);
    let registration_ids: Vec<Instance> = store.discover(&key()).await.unwrap().instances;
    for i in &registration_ids {
        store.deregister(&key(), &i.id).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(direct.instances().len(), 1);
    assert_eq!(WhoClient::new(direct).who().await.unwrap(), "a");
    a.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn registered_servers_withdraw_on_graceful_shutdown() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let a = start(registry.clone(), "a", 100).await;
    let b = start(registry.clone(), "b", 100).await;
    assert_eq!(registry.discover(&key()).await.unwrap().instances.len(), 2);
    a.shutdown(Duration::from_secs(1)).await;
    assert_eq!(registry.discover(&key()).await.unwrap().instances.len(), 1);
    b.shutdown(Duration::from_secs(1)).await;
    assert!(
        registry
            .discover(&key())
            .await
            .unwrap()
            .instances
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn calls_given_up_by_their_callers_are_counted_off_for_least_in_flight() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let _a = start(registry.clone(), "a", 100).await;
    let mut config = DiscoveryConfig::default();
    config.strategy = Strategy::LeastInFlight;
    let discovery = Discovery::with_config(registry.clone(), key(), config);
    assert!(discovery.wait_for(1, Duration::from_secs(5)).await);
    let client = WhoClient::new(discovery.clone());

    // Five calls on "a" whose callers give up: their futures are dropped mid-call.
    for _ in 0..5 {
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), client.slow_who(10_000)).await;
        assert!(gave_up.is_err());
    }

    let _b = start(registry.clone(), "b", 100).await;
    assert!(discovery.wait_for(2, Duration::from_secs(5)).await);
    // Six calls at once: with nothing in flight anywhere they split evenly. Had the dropped
    // calls stayed counted on "a", at most one would go there.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.slow_who(100).await.unwrap() })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for call in calls {
        *counts.entry(call.await.unwrap()).or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&3), "{counts:?}");
}
