//! The conformance suite against the registry served over RPC (memory transport, paused time),
//! and healing across a registry restart.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Client, Endpoint, Server, ServerHandle};
use rpc_registry::{
    Instance, MemoryRegistry, Registration, RegistrationState, Registry, RegistryApiServer,
    RegistryService, RemoteRegistry, ServiceKey,
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

    // Withdrawing removes it at once.
    registration.withdraw().await.unwrap();
    assert!(remote.discover(&key).await.unwrap().instances.is_empty());
    second.shutdown(Duration::from_secs(1)).await;
}
