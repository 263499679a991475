//! Discovery-aware calls: a [`Caller`] for a service name that keeps its instance list current
//! through a registry watch, picks an instance per call and fails over.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use rpc_core::{
    CallOptions, Caller, Client, ClientBuilder, ClientConfig, MethodTarget, RawStream, Response,
    RpcError, Status,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::balance::{Balancer, Candidate, PickContext, Strategy};
use crate::model::{Change, Instance, ServiceKey, WatchEvent};
use crate::registry::Registry;

/// Settings of a [`Discovery`] client. Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// How an instance is picked per call. Default: weighted random.
    pub strategy: Strategy,
    /// How many other instances a failed call may be retried on. A call is retried only when it
    /// cannot have reached a handler (no connection, server busy, server draining) or when the
    /// method is marked idempotent and the failure was a connection error. Default: 2.
    pub retries: usize,
    /// Never retry: fail with the first error. Default: false.
    pub failfast: bool,
    /// The settings of each instance's client. `wait_for_reconnect` is turned off so that an
    /// unreachable instance fails fast and the call moves on. Default: [`ClientConfig::default`].
    pub client: ClientConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            strategy: Strategy::default(),
            retries: 2,
            failfast: false,
            client: ClientConfig::default(),
        }
    }
}

/// A client of every instance of one service, found through a registry.
///
/// It watches the service's key, keeps one lazily connected [`Client`] per instance, picks an
/// instance per call with its [`Strategy`], and fails over to another instance on errors that
/// are safe to retry. When the registry is unreachable it keeps the last known list (and keeps
/// trying to watch again, resuming from the last revision it saw); it never acts on a push that
/// would empty the list — calls keep going to the last known instances, which is right when the
/// registry, not the service, is the one in trouble.
///
/// Generated clients take it as their caller: `GreeterClient::new(discovery)`.
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
    _guard: Arc<StopOnDrop>,
}

struct Shared {
    key: ServiceKey,
    config: DiscoveryConfig,
    client_builder: ClientBuilder,
    balancer: Balancer,
    nodes: ArcSwap<Vec<Arc<Node>>>,
    version: watch::Sender<u64>,
}

struct Node {
    instance: Instance,
    client: Client,
    /// Attempts under way on this instance; shared with the node that replaces this one when
    /// the instance's record changes, so attempts that end later are still counted off.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one attempt on an instance while it lives: dropped when the attempt ends, however it
/// ends (answered, failed, or its caller gave up and dropped the call).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
        let client_builder = ClientBuilder::new()
            .config(config.client.clone())
            .wait_for_reconnect(false);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            balancer: Balancer::new(config.strategy),
            key,
            config,
            client_builder,
            nodes: ArcSwap::from_pointee(Vec::new()),
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

    /// The instances known now.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared
            .nodes
            .load()
            .iter()
            .map(|n| n.instance.clone())
            .collect()
    }

    /// Waits until at least `count` instances are known, or `timeout` passes. Returns whether
    /// they are.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let mut version = self.shared.version.subscribe();
        tokio::time::timeout(timeout, async {
            while self.shared.nodes.load().len() < count {
                if version.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    /// Picks an instance for one attempt, skipping those already tried.
    fn pick(&self, options: &CallOptions, tried: &[String]) -> Option<Arc<Node>> {
        let nodes = self.shared.nodes.load();
        let exclude: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| tried.contains(&n.instance.id))
            .map(|(i, _)| i)
            .collect();
        // Instances whose connection attempts are failing are passed over while others remain.
        let candidates = |skip_unreachable: bool| -> Vec<Candidate<'_>> {
            nodes
                .iter()
                .map(|n| Candidate {
                    id: &n.instance.id,
                    weight: n.instance.weight,
                    healthy: n.instance.healthy && (!skip_unreachable || n.client.is_reachable()),
                    in_flight: n.in_flight.load(Ordering::Relaxed),
                })
                .collect()
        };
        let cx = PickContext {
            hash_key: options.hash_key,
            exclude: &exclude,
        };
        let balancer = &self.shared.balancer;
        balancer
            .pick(&candidates(true), &cx)
            .or_else(|| balancer.pick(&candidates(false), &cx))
            .and_then(|i| nodes.get(i).cloned())
    }

    /// Runs one call with failover; `attempt` makes one try on one instance.
    async fn with_failover<T, F, Fut>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        attempt: F,
    ) -> Result<T, RpcError>
    where
        F: Fn(Arc<Node>, CallOptions) -> Fut,
        Fut: Future<Output = Result<(T, Option<Status>), RpcError>>,
    {
        let timeout = options.timeout.unwrap_or(self.shared.config.client.timeout);
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = None;
        loop {
            let Some(node) = self.pick(options, &tried) else {
                return Err(last_error.unwrap_or_else(|| {
                    RpcError::Unavailable(format!(
                        "no instance of {} is available",
                        self.shared.key
                    ))
                }));
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(last_error.unwrap_or(RpcError::DeadlineExceeded));
            }
            let mut options = options.clone();
            options.timeout = Some(remaining);
            let counted = InFlight::start(&node.in_flight);
            let result = attempt(node.clone(), options).await;
            drop(counted);
            let error = match result {
                // A server that refused the call before starting it answers with a status.
                Ok((_, Some(status)))
                    if status == Status::SERVER_BUSY || status == Status::UNAVAILABLE =>
                {
                    RpcError::Unavailable(format!("{} answered {status}", node.instance.endpoint))
                }
                Ok((value, _)) => return Ok(value),
                Err(e) => e,
            };
            let retryable = error.not_started()
                || (target.idempotent && error.is_connection_error())
                || matches!(error, RpcError::Unavailable(_));
            let config = &self.shared.config;
            if config.failfast || !retryable || tried.len() >= config.retries {
                return Err(error);
            }
            debug!(
                instance = %node.instance.endpoint,
                error = %error,
                "call failed; trying another instance"
            );
            tried.push(node.instance.id.clone());
            last_error = Some(error);
        }
    }
}

impl Caller for Discovery {
    async fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<Response, RpcError> {
        self.with_failover(target, options, |node, options| async move {
            let response = node.client.call_unary(target, &options, args).await?;
            let status = response.status();
            Ok((response, Some(status)))
        })
        .await
    }

    async fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<(), RpcError> {
        self.with_failover(target, options, |node, options| async move {
            node.client.call_one_way(target, &options, args).await?;
            Ok(((), None))
        })
        .await
    }

    async fn call_stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<RawStream, RpcError> {
        self.with_failover(target, options, |node, options| async move {
            Ok((node.client.call_stream(target, &options, args).await?, None))
        })
        .await
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("key", &self.shared.key)
            .field("strategy", &self.shared.config.strategy)
            .field("instances", &self.shared.nodes.load().len())
            .finish()
    }
}

/// Follows the registry: watch, apply events, publish the instance list; on failure keep the
/// last list and watch again from the last revision seen.
async fn follow(shared: Arc<Shared>, registry: Arc<dyn Registry>, stop: CancellationToken) {
    let mut known: BTreeMap<String, Instance> = BTreeMap::new();
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
                            publish(&shared, &known);
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

/// Replaces the node list, keeping the clients (and their connections) of instances that stay.
fn publish(shared: &Shared, known: &BTreeMap<String, Instance>) {
    let old: HashMap<(String, String), Arc<Node>> = shared
        .nodes
        .load()
        .iter()
        .map(|n| {
            (
                (n.instance.id.clone(), n.instance.endpoint.clone()),
                n.clone(),
            )
        })
        .collect();
    let mut nodes = Vec::with_capacity(known.len());
    for instance in known.values() {
        let reuse = old.get(&(instance.id.clone(), instance.endpoint.clone()));
        let node = match reuse {
            Some(n) if n.instance == *instance => n.clone(),
            Some(n) => Arc::new(Node {
                instance: instance.clone(),
                client: n.client.clone(),
                in_flight: n.in_flight.clone(),
            }),
            None => match shared
                .client_builder
                .clone()
                .connect_lazy(&instance.endpoint)
            {
                Ok(client) => Arc::new(Node {
                    instance: instance.clone(),
                    client,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                }),
                Err(e) => {
                    warn!(instance = %instance.id, error = %e, "skipping an instance with a bad endpoint");
                    continue;
                }
            },
        };
        nodes.push(node);
    }
    let candidates: Vec<Candidate<'_>> = nodes
        .iter()
        .map(|n| Candidate {
            id: &n.instance.id,
            weight: n.instance.weight,
            healthy: n.instance.healthy,
            in_flight: 0,
        })
        .collect();
    shared.balancer.update(&candidates);
    info!(key = %shared.key, instances = nodes.len(), "instance list updated");
    shared.nodes.store(Arc::new(nodes));
    shared.version.send_modify(|v| *v += 1);
}
