//! The `Registry` trait every backend implements.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

use crate::model::{Instance, Lease, LeaseId, RegistryError, ServiceKey, Snapshot, WatchEvent};
use crate::page::{Page, PageRequest};

/// The events of a watch, until the watch ends or fails.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, RegistryError>> + Send>>;

/// A service registry: leases, registration, discovery and watch.
///
/// Implementations: [`MemoryRegistry`](crate::MemoryRegistry) (embedded, the default),
/// [`RemoteRegistry`](crate::RemoteRegistry) (a registry served over this framework) and, with
/// the `etcd` feature, `EtcdRegistry`. All pass the same conformance suite.
///
/// The model follows etcd: a lease is granted with a TTL; instances are registered under a lease
/// and live while it is kept alive; when it expires or is revoked they are removed and watchers
/// see `Remove`. Every change increases the registry's revision; a watch can resume from a
/// revision. [`Registration`](crate::Registration) keeps a lease alive and registers again after
/// the registry loses it, so applications need not.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Grants a lease that lives for `ttl` unless kept alive.
    async fn grant(&self, ttl: Duration) -> Result<Lease, RegistryError>;

    /// Renews a lease for another TTL; fails with `LeaseNotFound` if it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError>;

    /// Revokes a lease, removing every instance registered under it.
    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError>;

    /// Registers (or updates) an instance under a lease; returns the new revision.
    async fn register(&self, instance: Instance, lease: LeaseId) -> Result<u64, RegistryError>;

    /// Removes one instance; returns the new revision (unchanged if it was not registered).
    async fn deregister(&self, key: &ServiceKey, id: &str) -> Result<u64, RegistryError>;

    /// The instances of `key` now.
    async fn discover(&self, key: &ServiceKey) -> Result<Snapshot, RegistryError>;

    /// One page of the instances of `key`: those after `request.after` in id order, as many as
    /// fit the request's limits (at least one when any remain). Walking the pages from the first
    /// to the one whose `next` is `None` yields every instance once, as long as the key does not
    /// change meanwhile; [`Page::changed`] tells when it did.
    ///
    /// The default reads everything with [`discover`](Registry::discover) and cuts the page
    /// out, saying the snapshot's revision for `changed`; implementations that can read one page
    /// alone override it.
    async fn discover_page(
        &self,
        key: &ServiceKey,
        request: &PageRequest,
    ) -> Result<Page, RegistryError> {
        let snapshot = self.discover(key).await?;
        let revision = snapshot.revision;
        Ok(Page::cut(&snapshot.instances, request, revision, revision))
    }

    /// Watches `key`: from the start (`None`: a snapshot, then changes) or resuming after a
    /// revision already seen (`Some(rev)`: the changes after `rev`, or a snapshot if the
    /// registry no longer has them).
    async fn watch(
        &self,
        key: &ServiceKey,
        after: Option<u64>,
    ) -> Result<WatchStream, RegistryError>;
}
