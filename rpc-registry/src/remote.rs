//! The registry served over this framework, and its client.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{Client, RpcError, ServerError, ServerStream, Status};

use crate::model::{Instance, Lease, LeaseId, RegistryError, ServiceKey, Snapshot, WatchEvent};
use crate::registry::{Registry, WatchStream};

/// The registry's RPC interface. [`RegistryService`] implements it over any [`Registry`];
/// [`RemoteRegistry`] calls it.
#[rpc_core::service(name = "rpc.Registry", version = "1")]
pub trait RegistryApi {
    /// Grants a lease of `ttl_ms` milliseconds (clamped to the server's bounds).
    async fn grant(&self, ttl_ms: u64) -> Result<Lease, RegistryError>;
    /// Renews a lease.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError>;
    /// Revokes a lease and removes its instances.
    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError>;
    /// Registers an instance under a lease.
    async fn register(&self, instance: Instance, lease: LeaseId) -> Result<u64, RegistryError>;
    /// Removes an instance.
    async fn deregister(&self, key: ServiceKey, id: String) -> Result<u64, RegistryError>;
    /// The instances of a key.
    #[rpc(idempotent)]
    async fn discover(&self, key: ServiceKey) -> Result<Snapshot, RegistryError>;
    /// Watches a key.
    async fn watch(&self, key: ServiceKey, after: Option<u64>) -> ServerStream<WatchEvent>;
}

/// Serves any [`Registry`] over RPC: wrap it in [`RegistryApiServer`] and add it to a server.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
///
/// use rpc_registry::{MemoryRegistry, RegistryApiServer, RegistryService};
///
/// let service = RegistryService::new(Arc::new(MemoryRegistry::new()));
/// let server = rpc_core::Server::builder()
///     .service(RegistryApiServer::new(service))
///     .listen("tcp://127.0.0.1:7100")
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: Arc<dyn Registry>,
    min_ttl: Duration,
    max_ttl: Duration,
}

impl RegistryService {
    /// The smallest lease TTL granted by default: 1 s.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// The largest lease TTL granted by default: 1 h.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);

    /// Serves `registry` with the default TTL bounds.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        RegistryService {
            registry,
            min_ttl: Self::DEFAULT_MIN_TTL,
            max_ttl: Self::DEFAULT_MAX_TTL,
        }
    }

    /// Sets the bounds requested TTLs are clamped to.
    pub fn with_ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max.max(min);
        self
    }
}

impl RegistryApi for RegistryService {
    async fn grant(&self, ttl_ms: u64) -> Result<Lease, RegistryError> {
        let ttl = Duration::from_millis(ttl_ms).clamp(self.min_ttl, self.max_ttl);
        self.registry.grant(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError> {
        self.registry.keep_alive(lease).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError> {
        self.registry.revoke(lease).await
    }

    async fn register(&self, instance: Instance, lease: LeaseId) -> Result<u64, RegistryError> {
        self.registry.register(instance, lease).await
    }

    async fn deregister(&self, key: ServiceKey, id: String) -> Result<u64, RegistryError> {
        self.registry.deregister(&key, &id).await
    }

    async fn discover(&self, key: ServiceKey) -> Result<Snapshot, RegistryError> {
        self.registry.discover(&key).await
    }

    async fn watch(&self, key: ServiceKey, after: Option<u64>) -> ServerStream<WatchEvent> {
        match self.registry.watch(&key, after).await {
            Ok(stream) => ServerStream::try_new(stream.map(|event| event.map_err(to_server_error))),
            Err(e) => ServerStream::error(to_server_error(e)),
        }
    }
}

fn to_server_error(e: RegistryError) -> ServerError {
    ServerError::new(Status::INTERNAL_ERROR, e.to_string())
}

/// A [`Registry`] on a registry server, reached over RPC.
///
/// The underlying [`Client`] reconnects by itself. Use it with
/// [`Registration`](crate::Registration) to keep instances registered across registry restarts,
/// and with [`Discovery`](crate::Discovery) to keep watching across them.
#[derive(Debug, Clone)]
pub struct RemoteRegistry {
    api: RegistryApiClient<Client>,
}

impl RemoteRegistry {
    /// A registry reached through `client`.
    pub fn new(client: Client) -> Self {
        RemoteRegistry {
            api: RegistryApiClient::new(client),
        }
    }

    /// Connects to a registry server at `endpoint` (e.g. `"tcp://127.0.0.1:7100"`), in the
    /// background: calls wait for the connection up to their deadline. Fails only if the
    /// endpoint is invalid.
    pub fn connect_lazy(endpoint: impl rpc_core::IntoEndpoint) -> Result<Self, rpc_core::RpcError> {
        Ok(Self::new(Client::builder().connect_lazy(endpoint)?))
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        self.api.caller()
    }
}

#[async_trait::async_trait]
impl Registry for RemoteRegistry {
    async fn grant(&self, ttl: Duration) -> Result<Lease, RegistryError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(self.api.grant(ms).await?)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError> {
        Ok(self.api.keep_alive(lease).await?)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError> {
        Ok(self.api.revoke(lease).await?)
    }

    async fn register(&self, instance: Instance, lease: LeaseId) -> Result<u64, RegistryError> {
        Ok(self.api.register(instance, lease).await?)
    }

    async fn deregister(&self, key: &ServiceKey, id: &str) -> Result<u64, RegistryError> {
        Ok(self.api.deregister(key.clone(), id.to_owned()).await?)
    }

    async fn discover(&self, key: &ServiceKey) -> Result<Snapshot, RegistryError> {
        Ok(self.api.discover(key.clone()).await?)
    }

    async fn watch(
        &self,
        key: &ServiceKey,
        after: Option<u64>,
    ) -> Result<WatchStream, RegistryError> {
        let stream = self.api.watch(key.clone(), after).await?;
        Ok(Box::pin(stream.map(|item| {
            item.map_err(|e: RpcError| RegistryError::Unavailable(e.to_string()))
        })))
    }
}
