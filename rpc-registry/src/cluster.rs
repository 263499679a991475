//! Load balancing and failover over a set of clients (Dubbo's cluster, apart from its registry):
//! a [`Caller`] that picks a member per call and moves a failed call to another member when
//! that is safe.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use rpc_core::{
    CallOptions, Caller, Client, ClientBuilder, ClientConfig, Fallbacks, IntoEndpoint,
    MethodTarget, RawStream, Response, RpcError, Status,
};
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::{Balancer, Candidate, PickContext, Strategy};
use crate::model::Instance;

/// Settings of a [`Cluster`] (and of a [`Discovery`](crate::Discovery), which is a cluster fed
/// by a registry). Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// How a member is picked per call. Default: weighted random.
    pub strategy: Strategy,
    /// How many other members a failed call may be retried on. A call is retried only when it
    /// cannot have reached a handler (no connection, server busy, server draining) or when the
    /// method is marked idempotent and the failure was a connection error. Default: 2.
    pub retries: usize,
    /// Never retry: fail with the first error. Default: false.
    pub failfast: bool,
    /// The settings of the clients the cluster makes ([`Cluster::connect_lazy`], a
    /// discovery's instances), with `wait_for_reconnect` turned off so that an unreachable
    /// member fails fast and the call moves on. Its `timeout` is also the budget of a whole
    /// call, across its attempts, when the call sets none. Default: [`ClientConfig::default`].
    pub client: ClientConfig,
    /// What unary calls that fail for want of a server answer, once the failover has run out
    /// of members to try ([`rpc_core::falls_back`] says which failures). Default: none.
    pub fallbacks: Fallbacks,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            strategy: Strategy::default(),
            retries: 2,
            failfast: false,
            client: ClientConfig::default(),
            fallbacks: Fallbacks::new(),
        }
    }
}

/// One member of a [`Cluster`]: a client and how much of the traffic it takes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Member {
    /// Unique among the members; the balancer knows members by it (round robin's turn,
    /// consistent hashing's place on the ring) and a failover skips the ids already tried.
    pub id: String,
    /// Relative share of traffic; 0 takes none. Default: 100.
    pub weight: u32,
    /// Whether it takes traffic. Default: true.
    pub healthy: bool,
    /// The client calls to this member go through.
    pub client: Client,
}

impl Member {
    /// A healthy member of the default weight.
    pub fn new(id: impl Into<String>, client: Client) -> Self {
        Member {
            id: id.into(),
            weight: Instance::DEFAULT_WEIGHT,
            healthy: true,
            client,
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the health flag.
    pub fn with_health(mut self, healthy: bool) -> Self {
        self.healthy = healthy;
        self
    }
}

/// A client of a set of servers that offer the same services: each call goes to one member,
/// picked with the configured [`Strategy`], and a call that fails where retrying is safe moves
/// to another member, up to [`ClusterConfig::retries`] times within the call's deadline.
///
/// Members whose connection attempts are failing are passed over while others remain. The
/// member list is fixed at construction or replaced with [`Cluster::update`]; a
/// [`Discovery`](crate::Discovery) is a cluster whose list follows a registry.
///
/// ```
/// use rpc_core::Server;
/// use rpc_registry::{Cluster, ClusterConfig};
///
/// #[rpc_core::service]
/// trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
///
/// struct Polite;
///
/// impl Greeter for Polite {
///     async fn hello(&self, name: String) -> String {
///         format!("hello, {name}")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .service(GreeterServer::new(Polite))
///     .listen("mem://cluster-doc-a")
///     .start()
///     .await?;
/// // The second endpoint has no server: calls fail over to the first.
/// let cluster = Cluster::connect_lazy(
///     ["mem://cluster-doc-a", "mem://cluster-doc-b"],
///     ClusterConfig::default(),
/// )?;
/// let greeter = GreeterClient::new(cluster);
/// for _ in 0..4 {
///     assert_eq!(greeter.hello("world".into()).await?, "hello, world");
/// }
/// server.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    /// Names the cluster in errors: "no instance of {label} is available".
    label: String,
    config: ClusterConfig,
    balancer: Balancer,
    nodes: ArcSwap<Vec<Arc<Node>>>,
}

struct Node {
    member: Member,
    /// Attempts under way on this member; carried over to the node that replaces this one when
    /// the list is updated with the same member (same id and target), so attempts that end
    /// later are still counted off.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one attempt on a member while it lives: dropped when the attempt ends, however it
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

impl Cluster {
    /// A cluster of `members`.
    pub fn new(members: impl IntoIterator<Item = Member>, config: ClusterConfig) -> Cluster {
        let cluster = Cluster::labelled("the cluster".to_owned(), config);
        cluster.update(members);
        cluster
    }

    /// A cluster of one lazily connected client per endpoint (`"tcp://10.0.0.7:7000"`…), each
    /// of the default weight with the endpoint as its id, made with [`ClusterConfig::client`].
    /// Fails only if an endpoint or the client settings are invalid. Needs a Tokio runtime.
    pub fn connect_lazy<E: IntoEndpoint>(
        endpoints: impl IntoIterator<Item = E>,
        config: ClusterConfig,
    ) -> Result<Cluster, RpcError> {
        let builder = client_builder(&config.client);
        let members = endpoints
            .into_iter()
            .map(|endpoint| {
                let endpoint = endpoint
                    .into_endpoint()
                    .map_err(|e| RpcError::BadEndpoint(e.to_string()))?;
                let id = endpoint.to_string();
                Ok(Member::new(id, builder.clone().connect_lazy(endpoint)?))
            })
            .collect::<Result<Vec<_>, RpcError>>()?;
        Ok(Cluster::new(members, config))
    }

    /// An empty cluster named `label` in its errors.
    pub(crate) fn labelled(label: String, config: ClusterConfig) -> Cluster {
        Cluster {
            shared: Arc::new(Shared {
                label,
                balancer: Balancer::new(config.strategy),
                config,
                nodes: ArcSwap::from_pointee(Vec::new()),
            }),
        }
    }

    /// Replaces the member list. Calls already under way finish where they are; a member that
    /// stays (same id, same client target) keeps its count of calls in flight.
    pub fn update(&self, members: impl IntoIterator<Item = Member>) {
        let old: HashMap<(String, String), Arc<AtomicUsize>> = self
            .shared
            .nodes
            .load()
            .iter()
            .map(|n| (n.key(), n.in_flight.clone()))
            .collect();
        let nodes: Vec<Arc<Node>> = members
            .into_iter()
            .map(|member| {
                let in_flight = old
                    .get(&(member.id.clone(), member.client.target().to_owned()))
                    .cloned()
                    .unwrap_or_default();
                Arc::new(Node { member, in_flight })
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|n| Candidate {
                id: &n.member.id,
                weight: n.member.weight,
                healthy: n.member.healthy,
                in_flight: 0,
            })
            .collect();
        self.shared.balancer.update(&candidates);
        self.shared.nodes.store(Arc::new(nodes));
    }

    /// The members now.
    pub fn members(&self) -> Vec<Member> {
        self.shared
            .nodes
            .load()
            .iter()
            .map(|n| n.member.clone())
            .collect()
    }

    /// The settings it was made with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// Picks a member for one attempt, skipping those already tried.
    fn pick(&self, options: &CallOptions, tried: &[String]) -> Option<Arc<Node>> {
        let nodes = self.shared.nodes.load();
        let exclude: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| tried.contains(&n.member.id))
            .map(|(i, _)| i)
            .collect();
        // Members whose connection attempts are failing are passed over while others remain.
        let candidates = |skip_unreachable: bool| -> Vec<Candidate<'_>> {
            nodes
                .iter()
                .map(|n| Candidate {
                    id: &n.member.id,
                    weight: n.member.weight,
                    healthy: n.member.healthy
                        && (!skip_unreachable || n.member.client.is_reachable()),
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

    /// Runs one call with failover; `attempt` makes one try on one member.
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
        let config = &self.shared.config;
        let timeout = options.timeout.unwrap_or(config.client.timeout);
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = None;
        loop {
            let Some(node) = self.pick(options, &tried) else {
                return Err(last_error.unwrap_or_else(|| {
                    RpcError::Unavailable(format!(
                        "no instance of {} is available",
                        self.shared.label
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
                    RpcError::Unavailable(format!(
                        "{} answered {status}",
                        node.member.client.target()
                    ))
                }
                Ok((value, _)) => return Ok(value),
                Err(e) => e,
            };
            let retryable = error.not_started()
                || (target.idempotent && error.is_connection_error())
                || matches!(error, RpcError::Unavailable(_));
            if config.failfast || !retryable || tried.len() >= config.retries {
                return Err(error);
            }
            debug!(
                member = %node.member.id,
                error = %error,
                "call failed; trying another member"
            );
            tried.push(node.member.id.clone());
            last_error = Some(error);
        }
    }
}

impl Node {
    /// What makes two nodes the same member across updates.
    fn key(&self) -> (String, String) {
        (
            self.member.id.clone(),
            self.member.client.target().to_owned(),
        )
    }
}

impl Caller for Cluster {
    async fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<Response, RpcError> {
        let outcome = self
            .with_failover(target, options, |node, options| async move {
                let response = node
                    .member
                    .client
                    .call_unary(target, &options, args)
                    .await?;
                let status = response.status();
                Ok((response, Some(status)))
            })
            .await;
        let config = &self.shared.config;
        if config.fallbacks.is_empty() {
            return outcome;
        }
        config
            .fallbacks
            .apply(target, &config.client.format, outcome)
    }

    async fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<(), RpcError> {
        self.with_failover(target, options, |node, options| async move {
            node.member
                .client
                .call_one_way(target, &options, args)
                .await?;
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
            let stream = node
                .member
                .client
                .call_stream(target, &options, args)
                .await?;
            Ok((stream, None))
        })
        .await
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("label", &self.shared.label)
            .field("strategy", &self.shared.config.strategy)
            .field("members", &self.shared.nodes.load().len())
            .finish()
    }
}

/// How a cluster makes its members' clients: `wait_for_reconnect` off, so that a member that
/// cannot be reached fails the attempt at once and the call moves on.
pub(crate) fn client_builder(config: &ClientConfig) -> ClientBuilder {
    ClientBuilder::new()
        .config(config.clone())
        .wait_for_reconnect(false)
}
