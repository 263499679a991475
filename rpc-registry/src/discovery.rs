//! Discovery-aware calls: a [`Caller`] for a service name that keeps its instance list current
//! through a registry watch and hands it to a [`Cluster`], which picks an instance per call and
//! fails over.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use rpc_core::{
    CallOptions, Caller, Client, ClientBuilder, Failover, MethodTarget, RawStream, Response,
    RpcError,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, ClusterConfig, Member, client_builder};
use crate::model::{Change, Instance, ServiceKey, WatchEvent};
use crate::registry::Registry;

/// Settings of a [`Discovery`] client: those of the [`Cluster`] it feeds.
pub type DiscoveryConfig = ClusterConfig;

/// A client of every instance of one service, found through a registry.
///
/// It watches the service's key and hands the instances to a [`Cluster`], which keeps one
/// lazily connected [`Client`] per instance, picks an instance per call with its [`Strategy`](crate::Strategy),
/// and fails over to another instance on errors that are safe to retry. When the registry is
/// unreachable it keeps the last known list (and keeps trying to watch again, resuming from the
/// last revision it saw); it never acts on a push that would empty the list — calls keep going
/// to the last known instances, which is right when the registry, not the service, is the one
/// in trouble.
///
/// Generated clients take it as their caller: `GreeterClient::new(discovery)`, or in one step
/// `GreeterClient::discover(registry)` (see [`DiscoverClient`](crate::DiscoverClient)).
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
    _guard: Arc<StopOnDrop>,
}

struct Shared {
    key: ServiceKey,
    cluster: Cluster,
    client_builder: ClientBuilder,
    /// The instances the cluster has as members (those with a valid endpoint).
    instances: ArcSwap<Vec<Instance>>,
    version: watch::Sender<u64>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Discovery {
    /// Starts watching `key` in `registry` with the default settings.
    pub fn new(registry: Arc<dyn Registry>, key: ServiceKey) -> Self {
        Self::with_config(registry, key, DiscoveryConfig::default())
    }

    /// Starts watching `key` in `registry`. Needs a Tokio runtime.
    pub fn with_config(
        registry: Arc<dyn Registry>,
        key: ServiceKey,
        config: DiscoveryConfig,
    ) -> Self {
        let client_builder = client_builder(&config.client);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            cluster: Cluster::labelled(key.to_string(), config),
            key,
            client_builder,
            instances: ArcSwap::from_pointee(Vec::new()),
            version: watch::Sender::new(0),
        });
        tokio::spawn(follow(shared.clone(), registry, stop.clone()));
        Discovery {
            shared,
            _guard: Arc::new(StopOnDrop(stop)),
        }
    }

    /// The key this client serves.
    pub fn key(&self) -> &ServiceKey {
        &self.shared.key
    }

    /// The cluster the instances are balanced over.
    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// The instances known now.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared.instances.load().to_vec()
    }

    /// A connector to one of the service's healthy instances as they are known at each connect,
    /// for a client that keeps one connection to the service and moves to another instance
    /// when its instance dies (see [`Failover`]); the discovery keeps watching while the
    /// connector lives.
    ///
    /// ```no_run
    /// # async fn demo(registry: std::sync::Arc<dyn rpc_registry::Registry>) -> Result<(), rpc_core::RpcError> {
    /// use std::time::Duration;
    /// use rpc_registry::{Discovery, ServiceKey};
    ///
    /// let discovery = Discovery::new(registry, ServiceKey::new("chat.Signal").with_version("2"));
    /// discovery.wait_for(1, Duration::from_secs(5)).await;
    /// let client = rpc_core::Client::builder()
    ///     .connect_with(discovery.failover(Duration::from_secs(1)))
    ///     .await?;
    /// # drop(client); Ok(()) }
    /// ```
    pub fn failover(&self, timeout: Duration) -> Failover {
        let discovery = self.clone();
        Failover::from_fn(
            move || {
                discovery
                    .instances()
                    .iter()
                    .filter(|i| i.healthy)
                    .filter_map(|i| i.endpoint.parse().ok())
                    .collect()
            },
            timeout,
        )
    }

    /// Waits until at least `count` instances are known, or `timeout` passes. Returns whether
    /// they are.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let mut version = self.shared.version.subscribe();
        tokio::time::timeout(timeout, async {
            while self.shared.instances.load().len() < count {
                if version.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }
}

impl Caller for Discovery {
    fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> impl Future<Output = Result<Response, RpcError>> + Send {
        self.shared.cluster.call_unary(target, options, args)
    }

    fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> impl Future<Output = Result<(), RpcError>> + Send {
        self.shared.cluster.call_one_way(target, options, args)
    }

    fn call_stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> impl Future<Output = Result<RawStream, RpcError>> + Send {
        self.shared.cluster.call_stream(target, options, args)
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("key", &self.shared.key)
            .field("strategy", &self.shared.cluster.config().strategy)
            .field("instances", &self.shared.instances.load().len())
            .finish()
    }
}

/// Follows the registry: watch, apply events, publish the instance list; on failure keep the
/// last list and watch again from the last revision seen.
async fn follow(shared: Arc<Shared>, registry: Arc<dyn Registry>, stop: CancellationToken) {
    let mut known: BTreeMap<String, Instance> = BTreeMap::new();
    let mut clients: HashMap<(String, String), Client> = HashMap::new();
    let mut revision: Option<u64> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let watched = tokio::select! {
            w = registry.watch(&shared.key, revision) => w,
            () = stop.cancelled() => return,
        };
        match watched {
            Ok(mut stream) => loop {
                let event = tokio::select! {
                    e = stream.next() => e,
                    () = stop.cancelled() => return,
                };
                match event {
                    Some(Ok(event)) => {
                        delay = Duration::from_millis(100);
                        revision = Some(event.revision());
                        let mut next = known.clone();
                        match event {
                            WatchEvent::Snapshot(s) => {
                                next = s.instances.into_iter().map(|i| (i.id.clone(), i)).collect();
                            }
                            WatchEvent::Change { change, .. } => match change {
                                Change::Insert(i) | Change::Update(i) => {
                                    next.insert(i.id.clone(), i);
                                }
                                Change::Remove(i) => {
                                    next.remove(&i.id);
                                }
                            },
                        }
                        if next.is_empty() && !known.is_empty() {
                            warn!(key = %shared.key, "ignoring a push that empties the instance list");
                            continue;
                        }
                        if next != known {
                            known = next;
                            publish(&shared, &known, &mut clients);
                        }
                    }
                    Some(Err(e)) => {
                        warn!(key = %shared.key, error = %e, "watch failed; keeping the last known instances");
                        break;
                    }
                    None => {
                        debug!(key = %shared.key, "watch ended");
                        break;
                    }
                }
            },
            Err(e) => {
                warn!(key = %shared.key, error = %e, "cannot watch; keeping the last known instances");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64())) => {}
            () = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Hands the instances to the cluster as its members, keeping the clients (and their
/// connections) of instances that stay at the same endpoint.
fn publish(
    shared: &Shared,
    known: &BTreeMap<String, Instance>,
    clients: &mut HashMap<(String, String), Client>,
) {
    let mut kept = HashMap::with_capacity(known.len());
    let mut members = Vec::with_capacity(known.len());
    let mut instances = Vec::with_capacity(known.len());
    for instance in known.values() {
        let key = (instance.id.clone(), instance.endpoint.clone());
        let client = match clients.remove(&key) {
            Some(client) => client,
            None => match shared
                .client_builder
                .clone()
                .connect_lazy(&instance.endpoint)
            {
                Ok(client) => client,
                Err(e) => {
                    warn!(instance = %instance.id, error = %e, "skipping an instance with a bad endpoint");
                    continue;
                }
            },
        };
        members.push(
            Member::new(instance.id.clone(), client.clone())
                .with_weight(instance.weight)
                .with_health(instance.healthy),
        );
        instances.push(instance.clone());
        kept.insert(key, client);
    }
    *clients = kept;
    shared.cluster.update(members);
    info!(key = %shared.key, instances = instances.len(), "instance list updated");
    shared.instances.store(Arc::new(instances));
    shared.version.send_modify(|v| *v += 1);
}
