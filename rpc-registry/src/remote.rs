//! The registry served over this framework, and its client.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{Client, ServerError, ServerStream, Status};
use tracing::debug;

use crate::model::{Instance, Lease, LeaseId, RegistryError, ServiceKey, Snapshot, WatchEvent};
use crate::page::{Page, PageRequest, Reassembly, WatchItem};
use crate::registry::{Registry, WatchStream};

/// How many times [`RemoteRegistry::discover`] walks the pages again after the key changed
/// under it, before it takes a watch's snapshot instead.
const PAGED_ATTEMPTS: usize = 3;

/// The registry's RPC interface. [`RegistryService`] implements it over any [`Registry`];
/// [`RemoteRegistry`] calls it.
///
/// Version 2: `discover` answers one page at a time and `watch` sends its snapshots in chunks,
/// so that no answer outgrows a frame however many instances a key has. (Version 1 sent every
/// instance in one answer or one stream item.)
#[rpc_core::service(name = "rpc.Registry", version = "2")]
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
    /// One page of the instances of a key; the limits asked for are lowered to the server's.
    #[rpc(idempotent)]
    async fn discover(&self, key: ServiceKey, page: PageRequest) -> Result<Page, RegistryError>;
    /// Watches a key; snapshots come in chunks of about `max_chunk_bytes` at most (lowered to
    /// the server's page byte limit).
    async fn watch(
        &self,
        key: ServiceKey,
        after: Option<u64>,
        max_chunk_bytes: u32,
    ) -> ServerStream<WatchItem>;
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
    max_page_len: u32,
    max_page_bytes: u32,
}

impl RegistryService {
    /// The smallest lease TTL granted by default: 1 s.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// The largest lease TTL granted by default: 1 h.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);

    /// Serves `registry` with the default TTL bounds and page limits.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        RegistryService {
            registry,
            min_ttl: Self::DEFAULT_MIN_TTL,
            max_ttl: Self::DEFAULT_MAX_TTL,
            max_page_len: PageRequest::DEFAULT_LIMIT,
            max_page_bytes: PageRequest::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets the bounds requested TTLs are clamped to.
    pub fn with_ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max.max(min);
        self
    }

    /// Sets the most instances, and about the most bytes (counted as JSON), that one page or one
    /// chunk of a watch's snapshot may hold; a request asking for more gets this much. Keep `max_bytes` well under the server's
    /// maximum frame body. Defaults: [`PageRequest::DEFAULT_LIMIT`] and
    /// [`PageRequest::DEFAULT_MAX_BYTES`] (1 MiB, an eighth of the default 8 MiB frame).
    pub fn with_page_limits(mut self, max_len: u32, max_bytes: u32) -> Self {
        self.max_page_len = max_len.max(1);
        self.max_page_bytes = max_bytes;
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

    async fn discover(&self, key: ServiceKey, page: PageRequest) -> Result<Page, RegistryError> {
        let request = PageRequest {
            after: page.after,
            limit: page.limit.clamp(1, self.max_page_len),
            max_bytes: page.max_bytes.min(self.max_page_bytes),
        };
        self.registry.discover_page(&key, &request).await
    }

    async fn watch(
        &self,
        key: ServiceKey,
        after: Option<u64>,
        max_chunk_bytes: u32,
    ) -> ServerStream<WatchItem> {
        let limit = self.max_page_len;
        let max_bytes = max_chunk_bytes.min(self.max_page_bytes);
        match self.registry.watch(&key, after).await {
            Ok(events) => ServerStream::try_new(events.flat_map(move |event| {
                let items: Vec<Result<WatchItem, ServerError>> = match event {
                    Ok(event) => WatchItem::split(event, limit, max_bytes)
                        .into_iter()
                        .map(Ok)
                        .collect(),
                    Err(e) => vec![Err(to_server_error(e))],
                };
                futures::stream::iter(items)
            })),
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
///
/// [`discover`](Registry::discover) reads page after page and answers the instances of one
/// moment: when the key changed between two pages (their [`Page::changed`] differ) it starts
/// again, and after three such attempts it takes the snapshot a watch starts with, which the
/// server reads at once. [`discover_page`](Registry::discover_page) reads one page.
/// [`watch`](Registry::watch) puts each snapshot back together from the chunks it travels in.
#[derive(Debug, Clone)]
pub struct RemoteRegistry {
    api: RegistryApiClient<Client>,
    page: PageRequest,
}

impl RemoteRegistry {
    /// A registry reached through `client`.
    pub fn new(client: Client) -> Self {
        RemoteRegistry {
            api: RegistryApiClient::new(client),
            page: PageRequest::first(),
        }
    }

    /// Connects to a registry server at `endpoint` (e.g. `"tcp://127.0.0.1:7100"`), in the
    /// background: calls wait for the connection up to their deadline. Fails only if the
    /// endpoint is invalid.
    pub fn connect_lazy(endpoint: impl rpc_core::IntoEndpoint) -> Result<Self, rpc_core::RpcError> {
        Ok(Self::new(Client::builder().connect_lazy(endpoint)?))
    }

    /// Sets how many instances, and about how many bytes (counted as JSON), `discover` asks for
    /// per page, and the bytes a watch asks for per snapshot chunk; the server may lower them.
    /// Keep `max_bytes` well under the client's maximum frame body. Defaults: [`PageRequest::DEFAULT_LIMIT`] and
    /// [`PageRequest::DEFAULT_MAX_BYTES`] (1 MiB, an eighth of the default 8 MiB frame).
    pub fn with_page_limits(mut self, len: u32, max_bytes: u32) -> Self {
        self.page = PageRequest::first()
            .with_limit(len)
            .with_max_bytes(max_bytes);
        self
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        self.api.caller()
    }

    /// Every page of `key`, from the first to the last; `None` if the key changed between two of
    /// them.
    async fn read_pages(&self, key: &ServiceKey) -> Result<Option<Snapshot>, RegistryError> {
        let mut request = self.page.clone();
        let first = self.discover_page(key, &request).await?;
        let changed = first.changed;
        let mut revision = first.revision;
        let mut instances = first.instances;
        let mut next = first.next;
        while let Some(after) = next {
            request.after = Some(after);
            let page = self.discover_page(key, &request).await?;
            if page.changed != changed {
                return Ok(None);
            }
            // A server that does not move on would keep this loop going for ever.
            let moved_on = match (&page.next, &request.after) {
                (Some(next), Some(after)) => next > after && !page.instances.is_empty(),
                _ => true,
            };
            if !moved_on {
                return Err(RegistryError::Unavailable(
                    "the registry answered a page that does not move past its cursor".into(),
                ));
            }
            revision = page.revision;
            instances.extend(page.instances);
            next = page.next;
        }
        Ok(Some(Snapshot {
            revision,
            instances,
        }))
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
        for _ in 0..PAGED_ATTEMPTS {
            if let Some(snapshot) = self.read_pages(key).await? {
                return Ok(snapshot);
            }
            debug!(%key, "the key changed between two pages; reading them again");
        }
        debug!(%key, "the key keeps changing; taking a watch's snapshot");
        let mut watch = self.watch(key, None).await?;
        match watch.next().await {
            Some(Ok(WatchEvent::Snapshot(snapshot))) => Ok(snapshot),
            Some(Err(e)) => Err(e),
            Some(Ok(WatchEvent::Change { .. })) | None => Err(RegistryError::Unavailable(
                "the registry's watch did not start with a snapshot".into(),
            )),
        }
    }

    async fn discover_page(
        &self,
        key: &ServiceKey,
        request: &PageRequest,
    ) -> Result<Page, RegistryError> {
        Ok(self.api.discover(key.clone(), request.clone()).await?)
    }

    async fn watch(
        &self,
        key: &ServiceKey,
        after: Option<u64>,
    ) -> Result<WatchStream, RegistryError> {
        let items = self
            .api
            .watch(key.clone(), after, self.page.max_bytes)
            .await?;
        let events =
            futures::stream::unfold(Some((items, Reassembly::default())), |state| async move {
                let (mut items, mut reassembly) = state?;
                loop {
                    let failed = match items.next().await {
                        Some(Ok(item)) => match reassembly.push(item) {
                            Ok(Some(event)) => return Some((Ok(event), Some((items, reassembly)))),
                            Ok(None) => continue,
                            Err(e) => e,
                        },
                        Some(Err(e)) => RegistryError::Unavailable(e.report().to_string()),
                        None if reassembly.is_partial() => {
                            RegistryError::Unavailable("the watch ended inside a snapshot".into())
                        }
                        None => return None,
                    };
                    // The first error ends the watch.
                    return Some((Err(failed), None));
                }
            });
        Ok(Box::pin(events))
    }
}
