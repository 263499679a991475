//! The conformance suite against the embedded registry, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use futures::StreamExt;
use rpc_registry::{
    Instance, MemoryConfig, MemoryRegistry, PageRequest, Registry, ServiceKey, WatchEvent,
};
use support::conformance;

const TTL: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn register_discover_deregister() {
    conformance::register_discover_deregister(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn watch_sees_a_snapshot_then_changes_in_order() {
    conformance::watch_sees_a_snapshot_then_changes_in_order(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn watch_resumes_from_a_revision() {
    conformance::watch_resumes_from_a_revision(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn expiry_removes_instances_and_notifies_watchers() {
    let registry = MemoryRegistry::new();
    let start = tokio::time::Instant::now();
    conformance::expiry_removes_instances_and_notifies_watchers(&registry, TTL).await;
    // Expired at the TTL, not before, and not much after.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= TTL && elapsed < TTL + Duration::from_secs(1),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_extends_a_lease() {
    conformance::keep_alive_extends_a_lease(&MemoryRegistry::new(), TTL).await;
}

#[tokio::test(start_paused = true)]
async fn revoke_removes_every_instance_of_the_lease() {
    conformance::revoke_removes_every_instance_of_the_lease(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_errors() {
    conformance::bad_requests_are_errors(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn discover_pages_cover_every_instance_once() {
    conformance::discover_pages_cover_every_instance_once(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_change_between_pages_shows_in_changed() {
    conformance::a_change_between_pages_shows_in_changed(&MemoryRegistry::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_large_snapshot_arrives_whole() {
    conformance::a_large_snapshot_arrives_whole(&MemoryRegistry::new(), 2000).await;
}

#[tokio::test(start_paused = true)]
async fn a_change_to_another_key_between_pages_does_not_show() {
    let registry = MemoryRegistry::new();
    let (key, other) = (ServiceKey::new("paged"), ServiceKey::new("paged-other"));
    let lease = registry.grant(TTL).await.unwrap();
    for port in 0..4 {
        registry
            .register(
                Instance::new(key.clone(), format!("tcp://127.0.0.1:{port}")),
                lease.id,
            )
            .await
            .unwrap();
    }
    let two = PageRequest::first().with_limit(2);
    let first = registry.discover_page(&key, &two).await.unwrap();
    registry
        .register(Instance::new(other, "tcp://127.0.0.1:9"), lease.id)
        .await
        .unwrap();
    let after = first.next.clone().unwrap();
    let second = registry
        .discover_page(&key, &two.after(after))
        .await
        .unwrap();
    assert_eq!(second.changed, first.changed);
    assert!(second.revision > first.revision);
}

#[tokio::test(start_paused = true)]
async fn a_key_emptied_between_pages_shows_in_changed() {
    let registry = MemoryRegistry::new();
    let key = ServiceKey::new("emptied");
    let lease = registry.grant(TTL).await.unwrap();
    for port in 0..4 {
        registry
            .register(
                Instance::new(key.clone(), format!("tcp://127.0.0.1:{port}")),
                lease.id,
            )
            .await
            .unwrap();
    }
    let two = PageRequest::first().with_limit(2);
    let first = registry.discover_page(&key, &two).await.unwrap();
    // The key's last instance goes, and with it the registry's state for the key.
    registry.revoke(lease.id).await.unwrap();
    let after = first.next.clone().unwrap();
    let second = registry
        .discover_page(&key, &two.after(after))
        .await
        .unwrap();
    assert!(second.instances.is_empty());
    assert_ne!(second.changed, first.changed);
}

#[tokio::test(start_paused = true)]
async fn resuming_from_beyond_the_history_gets_a_snapshot() {
    let registry = MemoryRegistry::with_config({
        let mut c = MemoryConfig::default();
        c.history = 4;
        c
    });
    let key = ServiceKey::new("history");
    let lease = registry.grant(TTL * 100).await.unwrap();
    let first = registry
        .register(Instance::new(key.clone(), "tcp://127.0.0.1:1"), lease.id)
        .await
        .unwrap();
    for port in 2..10 {
        registry
            .register(
                Instance::new(key.clone(), format!("tcp://127.0.0.1:{port}")),
                lease.id,
            )
            .await
            .unwrap();
    }
    let mut watch = registry.watch(&key, Some(first)).await.unwrap();
    let Some(Ok(WatchEvent::Snapshot(s))) = watch.next().await else {
        panic!("expected a snapshot")
    };
    assert_eq!(s.instances.len(), 9);
    assert_eq!(s.revision, registry.revision());
}

#[tokio::test(start_paused = true)]
async fn a_watcher_that_falls_behind_gets_a_snapshot_and_loses_nothing() {
    let registry = MemoryRegistry::with_config({
        let mut c = MemoryConfig::default();
        c.watch_buffer = 8;
        c
    });
    let key = ServiceKey::new("lagging");
    let lease = registry.grant(TTL * 100).await.unwrap();
    let mut watch = registry.watch(&key, None).await.unwrap();
    assert!(matches!(
        watch.next().await,
        Some(Ok(WatchEvent::Snapshot(_)))
    ));
    for port in 0..100 {
        registry
            .register(
                Instance::new(key.clone(), format!("tcp://127.0.0.1:{port}")),
                lease.id,
            )
            .await
            .unwrap();
    }
    // The watcher missed most of the changes: it must end up with all 100 instances.
    let mut known = std::collections::BTreeSet::new();
    while known.len() < 100 {
        match watch.next().await.unwrap().unwrap() {
            WatchEvent::Snapshot(s) => {
                known = s.instances.into_iter().map(|i| i.id).collect();
            }
            WatchEvent::Change { change, .. } => {
                known.insert(change.instance().id.clone());
            }
        }
    }
    assert_eq!(known.len(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_instances() {
    let registry = MemoryRegistry::new();
    let lease = registry.grant(TTL).await.unwrap();
    for s in 0..100 {
        let key = ServiceKey::new(format!("svc-{s}"));
        for i in 0..1000 {
            registry
                .register(
                    Instance::new(key.clone(), format!("tcp://10.0.{s}.{i}:7000")),
                    lease.id,
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(registry.instance_count(), 100_000);
    assert_eq!(
        registry
            .discover(&ServiceKey::new("svc-42"))
            .await
            .unwrap()
            .instances
            .len(),
        1000
    );
    // One lease expiry removes all of them.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    assert_eq!(registry.instance_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lease_longer_than_the_clock_can_count_is_granted_and_renewed() {
    let registry = MemoryRegistry::new();
    // Adding Duration::MAX to the clock overflowed (a panic under the registry's lock).
    let lease = registry.grant(Duration::MAX).await.unwrap();
    assert_eq!(lease.ttl, Duration::MAX);
    registry.keep_alive(lease.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600 * 24 * 365)).await;
    registry.keep_alive(lease.id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn counts_of_instances_leases_and_watchers_follow_the_store() {
    let registry = MemoryRegistry::new();
    let a = ServiceKey::new("svc-a");
    let mut a2 = ServiceKey::new("svc-a");
    a2.version = "2".into();
    let b = ServiceKey::new("svc-b");
    let lease = registry.grant(Duration::from_secs(10)).await.unwrap();
    let other = registry.grant(Duration::from_secs(20)).await.unwrap();
    for (key, endpoint) in [(&a, "tcp://a:1"), (&a2, "tcp://a:2"), (&b, "tcp://b:1")] {
        let instance = Instance::new(key.clone(), endpoint);
        registry.register(instance, lease.id).await.unwrap();
    }
    assert_eq!(
        registry.instances_by_service(),
        [("svc-a".to_owned(), 2), ("svc-b".to_owned(), 1)]
    );
    assert_eq!(registry.lease_count(), 2);
    assert_eq!(registry.watcher_count(), 0);
    let watch = registry.watch(&a, None).await.unwrap();
    let watch2 = registry.watch(&b, None).await.unwrap();
    assert_eq!(registry.watcher_count(), 2);
    drop(watch);
    assert_eq!(registry.watcher_count(), 1);
    drop(watch2);
    registry.revoke(lease.id).await.unwrap();
    assert!(registry.instances_by_service().is_empty());
    assert_eq!(registry.lease_count(), 1);
    registry.revoke(other.id).await.unwrap();
    assert_eq!(registry.lease_count(), 0);
}
