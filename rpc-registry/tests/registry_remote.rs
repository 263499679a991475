//! The conformance suite against the registry served over RPC (memory transport, paused time),
//! healing across a registry restart, and keys with more instances than one frame holds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Client, Endpoint, Server, ServerHandle};
use rpc_registry::{
    Instance, Lease, LeaseId, MemoryConfig, MemoryRegistry, Page, PageRequest, Registration,
    RegistrationState, Registry, RegistryApiServer, RegistryError, RegistryService, RemoteRegistry,
    ServiceKey, Snapshot, WatchEvent, WatchStream,
};
use support::conformance;

const TTL: Duration = Duration::from_secs(10);

fn endpoint() -> Endpoint {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "mem://registry-remote-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
    .parse()
    .unwrap()
}

async fn serve(endpoint: &Endpoint, registry: MemoryRegistry) -> ServerHandle {
    Server::builder()
        .service(RegistryApiServer::new(RegistryService::new(Arc::new(
            registry,
        ))))
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap()
}

async fn remote() -> (ServerHandle, RemoteRegistry) {
    let endpoint = endpoint();
    let server = serve(&endpoint, MemoryRegistry::new()).await;
    let client = Client::builder().connect(&endpoint).await.unwrap();
    (server, RemoteRegistry::new(client))
}

#[tokio::test(start_paused = true)]
async fn register_discover_deregister() {
    let (_server, registry) = remote().await;
    conformance::register_discover_deregister(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn watch_sees_a_snapshot_then_changes_in_order() {
    let (_server, registry) = remote().await;
    conformance::watch_sees_a_snapshot_then_changes_in_order(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn watch_resumes_from_a_revision() {
    let (_server, registry) = remote().await;
    conformance::watch_resumes_from_a_revision(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn expiry_removes_instances_and_notifies_watchers() {
    let (_server, registry) = remote().await;
    conformance::expiry_removes_instances_and_notifies_watchers(&registry, TTL).await;
}

#[tokio::test(start_paused = true)]
async fn keep_alive_extends_a_lease() {
    let (_server, registry) = remote().await;
    conformance::keep_alive_extends_a_lease(&registry, TTL).await;
}

#[tokio::test(start_paused = true)]
async fn revoke_removes_every_instance_of_the_lease() {
    let (_server, registry) = remote().await;
    conformance::revoke_removes_every_instance_of_the_lease(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_errors() {
    let (_server, registry) = remote().await;
    conformance::bad_requests_are_errors(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn discover_pages_cover_every_instance_once() {
    let (_server, registry) = remote().await;
    conformance::discover_pages_cover_every_instance_once(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn a_change_between_pages_shows_in_changed() {
    let (_server, registry) = remote().await;
    conformance::a_change_between_pages_shows_in_changed(&registry).await;
}

#[tokio::test(start_paused = true)]
async fn a_large_snapshot_arrives_whole() {
    let (_server, registry) = remote().await;
    conformance::a_large_snapshot_arrives_whole(&registry, 2000).await;
}

#[tokio::test(start_paused = true)]
async fn a_large_snapshot_arrives_whole_through_small_frames() {
    let (_server, registry) = small_frames(Arc::new(MemoryRegistry::new())).await;
    // About 500 KB of instances: eight times the frame.
    conformance::a_large_snapshot_arrives_whole(&registry, 2000).await;
}

#[tokio::test(start_paused = true)]
async fn a_registry_restart_heals_registrations_without_the_application() {
    let endpoint = endpoint();
    let first = serve(&endpoint, MemoryRegistry::new()).await;
    let remote = RemoteRegistry::new(
        Client::builder()
            .heartbeat_interval(Duration::from_secs(1))
            .connect(&endpoint)
            .await
            .unwrap(),
    );
    let key = ServiceKey::new("healing");
    let instance = Instance::new(key.clone(), "tcp://127.0.0.1:9000");
    let registration = Registration::start(Arc::new(remote.clone()), vec![instance.clone()], TTL)
        .await
        .unwrap();
    assert_eq!(
        remote.discover(&key).await.unwrap().instances,
        vec![instance.clone()]
    );

    // The registry goes away, losing everything; a fresh one comes back on the same address.
    first.abort().await;
    let mut states = registration.watch_state();
    states
        .wait_for(|s| matches!(s, RegistrationState::Retrying { .. }))
        .await
        .unwrap();
    let second = serve(&endpoint, MemoryRegistry::new()).await;
    states
        .wait_for(|s| matches!(s, RegistrationState::Registered { .. }))
        .await
        .unwrap();
    assert_eq!(
        remote.discover(&key).await.unwrap().instances,
        vec![instance]
    );

    // Withdrawing removes it at once, from any task (the future is Send).
    tokio::spawn(registration.withdraw())
        .await
        .unwrap()
        .unwrap();
    assert!(remote.discover(&key).await.unwrap().instances.is_empty());
    second.shutdown(Duration::from_secs(1)).await;
}

/// A frame limit far below the default, so that a few thousand instances outgrow it.
const SMALL_FRAME: usize = 64 * 1024;

/// `n` instances of `key` of about 250 bytes each (as JSON), ids `i-00000` on.
async fn fill(registry: &dyn Registry, key: &ServiceKey, n: usize) -> Lease {
    let lease = registry.grant(TTL * 100).await.unwrap();
    for i in 0..n {
        let instance = Instance::new(
            key.clone(),
            format!("tcp://10.0.{}.{}:7000", i / 250, i % 250),
        )
        .with_id(format!("i-{i:05}"))
        .with_metadata("name", "x".repeat(100));
        registry.register(instance, lease.id).await.unwrap();
    }
    lease
}

/// A server and a client that both refuse frames over [`SMALL_FRAME`], the server serving
/// `registry` with pages of at most a quarter of that.
async fn small_frames(registry: Arc<dyn Registry>) -> (ServerHandle, RemoteRegistry) {
    let endpoint = endpoint();
    let service = RegistryService::new(registry).with_page_limits(100_000, SMALL_FRAME as u32 / 4);
    let server = Server::builder()
        .max_frame_len(SMALL_FRAME)
        .service(RegistryApiServer::new(service))
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .max_frame_len(SMALL_FRAME)
        .connect(&endpoint)
        .await
        .unwrap();
    (server, RemoteRegistry::new(client))
}

#[tokio::test(start_paused = true)]
async fn discover_answers_more_instances_than_one_frame_holds() {
    let store = MemoryRegistry::new();
    let key = ServiceKey::new("crowded");
    fill(&store, &key, 2000).await;
    let whole = store.discover(&key).await.unwrap();
    let json = serde_json::to_vec(&whole).unwrap().len();
    assert!(
        json > 4 * SMALL_FRAME,
        "{json} bytes are not enough to test with"
    );

    let (_server, remote) = small_frames(Arc::new(store)).await;
    assert_eq!(remote.discover(&key).await.unwrap(), whole);
    // One page is cut to the server's byte budget, whatever the client asked for.
    let page = remote
        .discover_page(&key, &PageRequest::first().with_max_bytes(u32::MAX))
        .await
        .unwrap();
    let len = serde_json::to_vec(&page.instances).unwrap().len();
    assert!(len <= SMALL_FRAME / 4, "{len}");
    assert!(page.next.is_some());
}

#[tokio::test(start_paused = true)]
async fn the_server_lowers_the_page_limit_asked_for() {
    let store = MemoryRegistry::new();
    let key = ServiceKey::new("clamped");
    fill(&store, &key, 10).await;
    let endpoint = endpoint();
    let service = RegistryService::new(Arc::new(store)).with_page_limits(4, u32::MAX);
    let _server = Server::builder()
        .service(RegistryApiServer::new(service))
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let remote = RemoteRegistry::new(Client::builder().connect(&endpoint).await.unwrap());
    let pages = conformance::pages(&remote, &key, PageRequest::first().with_limit(100)).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.instances.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(remote.discover(&key).await.unwrap().instances.len(), 10);
}

/// A memory registry that registers one more instance of the key before each of the next
/// `changes` page reads that are not a first page, and counts page reads and watches.
#[derive(Debug)]
struct ChangesBetweenPages {
    store: MemoryRegistry,
    lease: LeaseId,
    key: ServiceKey,
    changes: AtomicUsize,
    pages: AtomicUsize,
    watches: AtomicUsize,
}

impl ChangesBetweenPages {
    async fn new(key: &ServiceKey, instances: usize, changes: usize) -> Self {
        let store = MemoryRegistry::new();
        let lease = fill(&store, key, instances).await;
        ChangesBetweenPages {
            store,
            lease: lease.id,
            key: key.clone(),
            changes: AtomicUsize::new(changes),
            pages: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Registry for ChangesBetweenPages {
    async fn grant(&self, ttl: Duration) -> Result<Lease, RegistryError> {
        self.store.grant(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError> {
        self.store.keep_alive(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError> {
        self.store.revoke(lease).await
    }
    async fn register(&self, instance: Instance, lease: LeaseId) -> Result<u64, RegistryError> {
        self.store.register(instance, lease).await
    }
    async fn deregister(&self, key: &ServiceKey, id: &str) -> Result<u64, RegistryError> {
        self.store.deregister(key, id).await
    }
    async fn discover(&self, key: &ServiceKey) -> Result<Snapshot, RegistryError> {
        self.store.discover(key).await
    }
    async fn discover_page(
        &self,
        key: &ServiceKey,
        request: &PageRequest,
    ) -> Result<Page, RegistryError> {
        let n = self.pages.fetch_add(1, Ordering::SeqCst);
        let change = self
            .changes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1));
        if request.after.is_some() && change.is_ok() {
            // Sorts right after the first instance: on a page already read.
            let late = Instance::new(self.key.clone(), "tcp://10.9.9.9:7000")
                .with_id(format!("i-00000-late-{n:03}"));
            self.store.register(late, self.lease).await?;
        } else if change.is_ok() {
            // Not spent on a first page.
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
        self.store.discover_page(key, request).await
    }
    async fn watch(
        &self,
        key: &ServiceKey,
        after: Option<u64>,
    ) -> Result<WatchStream, RegistryError> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.store.watch(key, after).await
    }
}

async fn serve_paged(registry: Arc<dyn Registry>, page_len: u32) -> (ServerHandle, RemoteRegistry) {
    let endpoint = endpoint();
    let service = RegistryService::new(registry).with_page_limits(page_len, u32::MAX);
    let server = Server::builder()
        .service(RegistryApiServer::new(service))
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    let client = Client::builder().connect(&endpoint).await.unwrap();
    (server, RemoteRegistry::new(client))
}

#[tokio::test(start_paused = true)]
async fn discover_reads_the_pages_again_when_the_key_changed_between_them() {
    let key = ServiceKey::new("changing-once");
    let registry = Arc::new(ChangesBetweenPages::new(&key, 10, 1).await);
    let (_server, remote) = serve_paged(registry.clone(), 3).await;
    let seen = remote.discover(&key).await.unwrap();
    let now = registry.store.discover(&key).await.unwrap();
    // The instance registered after the first page was read is there: the pages were read again.
    assert_eq!(seen.instances, now.instances);
    assert_eq!(seen.instances.len(), 11);
    // Two pages, then the four pages of 11 instances.
    assert_eq!(registry.pages.load(Ordering::SeqCst), 2 + 4);
    assert_eq!(registry.watches.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn discover_takes_a_watch_snapshot_when_the_key_keeps_changing() {
    let key = ServiceKey::new("changing-always");
    let registry = Arc::new(ChangesBetweenPages::new(&key, 10, usize::MAX).await);
    let (_server, remote) = serve_paged(registry.clone(), 3).await;
    let seen = remote.discover(&key).await.unwrap();
    let now = registry.store.discover(&key).await.unwrap();
    assert_eq!(seen, now);
    // Each of the three attempts changed the key once, on its second page.
    assert_eq!(seen.instances.len(), 13);
    assert_eq!(registry.watches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_watcher_that_falls_behind_gets_its_fresh_snapshot_in_chunks() {
    let store = MemoryRegistry::with_config({
        let mut c = MemoryConfig::default();
        c.watch_buffer = 8;
        c
    });
    let key = ServiceKey::new("lagging");
    let (_server, remote) = small_frames(Arc::new(store.clone())).await;
    let mut watch = remote.watch(&key, None).await.unwrap();
    assert!(matches!(
        conformance::next(&mut watch).await,
        WatchEvent::Snapshot(s) if s.instances.is_empty()
    ));
    // Registered in one go, without yielding to the server's stream: the watcher falls behind
    // by far more than its buffer, and the registry sends it a snapshot of everything instead.
    fill(&store, &key, 2000).await;
    let whole = store.discover(&key).await.unwrap();
    let mut known = std::collections::BTreeSet::new();
    let mut snapshots = 0;
    while known.len() < 2000 {
        match conformance::next(&mut watch).await {
            WatchEvent::Snapshot(s) => {
                snapshots += 1;
                known = s.instances.into_iter().map(|i| i.id).collect();
            }
            WatchEvent::Change { change, .. } => {
                known.insert(change.instance().id.clone());
            }
        }
    }
    assert_eq!(snapshots, 1, "the fresh snapshot, larger than a frame");
    let ids: std::collections::BTreeSet<String> =
        whole.instances.into_iter().map(|i| i.id).collect();
    assert_eq!(known, ids);
}
