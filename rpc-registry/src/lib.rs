//! The service registry: where servers announce their instances and clients find them.
//!
//! - [`Registry`] is the interface: leases with a TTL, register, keep-alive, deregister,
//!   discover (a [`Snapshot`], or a [`Page`] at a time), and watch (a snapshot, then
//!   [`Change`]s, resumable from a revision).
//! - [`MemoryRegistry`] is the embedded default: in process, zero setup.
//! - [`RegistryService`] serves any registry over this framework (wrapped in
//!   [`RegistryApiServer`]); [`RemoteRegistry`] is its client. No answer grows with the number
//!   of instances: `discover` travels in pages.
//! - [`Discovery`] calls a service by name: it watches the registry, balances over the instances
//!   and fails over; [`RegisteredServer`] registers a server's services while it runs. Both
//!   take the service's name and version from the types `#[service]` generates:
//!   [`ServiceKey::of`] and [`DiscoverClient`] (`GreeterClient::discover(registry)`).
//! - [`Cluster`] balances calls over a set of clients and fails over, with or without a
//!   registry: over a fixed list of endpoints ([`Cluster::connect_lazy`]), or fed by a
//!   [`Discovery`].
//! - `EtcdRegistry` (feature `etcd`) stores instances in etcd under a prefix, bound to leases.
//! - [`Registration`] keeps an instance registered: it renews the lease and registers again
//!   when the registry lost it (expiry during a partition, a registry restart).
//!
//! ```
//! use std::time::Duration;
//!
//! use rpc_registry::{Instance, MemoryRegistry, Registry, ServiceKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rpc_registry::RegistryError> {
//! let registry = MemoryRegistry::new();
//! let key = ServiceKey::new("demo.Greeter");
//! let lease = registry.grant(Duration::from_secs(10)).await?;
//! registry
//!     .register(Instance::new(key.clone(), "tcp://127.0.0.1:7000"), lease.id)
//!     .await?;
//! let snapshot = registry.discover(&key).await?;
//! assert_eq!(snapshot.instances.len(), 1);
//! # Ok(()) }
//! ```

mod balance;
mod cluster;
mod discovery;
#[cfg(feature = "etcd")]
mod etcd;
mod memory;
mod model;
mod page;
mod registration;
mod registry;
mod remote;
mod serve;
mod typed;

pub use balance::{Balancer, Candidate, PickContext, Strategy};
pub use cluster::{Cluster, ClusterConfig, Member};
pub use discovery::{Discovery, DiscoveryConfig};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdRegistry};
pub use memory::{MemoryConfig, MemoryRegistry};
pub use model::{
    Change, Instance, Lease, LeaseId, RegistryError, ServiceKey, Snapshot, WatchEvent,
};
pub use page::{Page, PageRequest, WatchItem};
pub use registration::{Registration, RegistrationState};
pub use registry::{Registry, WatchStream};
pub use remote::{
    RegistryApi, RegistryApiClient, RegistryApiServer, RegistryService, RemoteRegistry,
};
pub use serve::{RegisterOptions, RegisteredServer, ServeError};
pub use typed::DiscoverClient;
