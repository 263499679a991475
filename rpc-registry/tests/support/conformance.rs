//! The conformance suite every `Registry` implementation passes. Each function takes the
//! registry under test and a TTL short enough to wait out (with paused time for the memory and
//! RPC-served registries, for real with etcd).

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use rpc_registry::{
    Change, Instance, Page, PageRequest, Registry, RegistryError, ServiceKey, WatchEvent,
    WatchStream,
};

/// A key no other test of the same process uses.
pub fn unique_key(name: &str) -> ServiceKey {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    ServiceKey::new(format!(
        "conformance.{name}.{}",
        N.fetch_add(1, Ordering::Relaxed)
    ))
    .with_version("1.0")
    .with_group("test")
}

pub async fn next(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a watch event in time")
        .expect("the watch is still open")
        .expect("a watch event, not an error")
}

fn ids(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}

pub async fn register_discover_deregister(registry: &dyn Registry) {
    let key = unique_key("basic");
    let other = unique_key("other");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7001").with_metadata("zone", "a");
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7002").with_weight(5);
    let r1 = registry.register(a.clone(), lease.id).await.unwrap();
    let r2 = registry.register(b.clone(), lease.id).await.unwrap();
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    let snapshot = registry.discover(&key).await.unwrap();
    assert_eq!(snapshot.instances, vec![a.clone(), b.clone()]);
    assert!(snapshot.revision >= r2);
    assert!(
        registry
            .discover(&other)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    // Another version or group of the same service is another key.
    let mut v2 = key.clone();
    v2.version = "2.0".into();
    assert!(registry.discover(&v2).await.unwrap().instances.is_empty());

    let r3 = registry.deregister(&key, &a.id).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(
        ids(&registry.discover(&key).await.unwrap().instances),
        vec![b.id.as_str()]
    );
    registry.revoke(lease.id).await.unwrap();
    assert!(registry.discover(&key).await.unwrap().instances.is_empty());
}

pub async fn watch_sees_a_snapshot_then_changes_in_order(registry: &dyn Registry) {
    let key = unique_key("watch");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7101");
    registry.register(a.clone(), lease.id).await.unwrap();
    let mut watch = registry.watch(&key, None).await.unwrap();
    let WatchEvent::Snapshot(snapshot) = next(&mut watch).await else {
        panic!("a watch starts with a snapshot");
    };
    assert_eq!(snapshot.instances, vec![a.clone()]);

    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7102");
    let rb = registry.register(b.clone(), lease.id).await.unwrap();
    let a2 = a.clone().with_weight(7);
    let ra2 = registry.register(a2.clone(), lease.id).await.unwrap();
    let rd = registry.deregister(&key, &b.id).await.unwrap();

    let events = [
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
    ];
    assert_eq!(
        events,
        [
            WatchEvent::Change {
                revision: rb,
                change: Change::Insert(b.clone())
            },
            WatchEvent::Change {
                revision: ra2,
                change: Change::Update(a2.clone())
            },
            WatchEvent::Change {
                revision: rd,
                change: Change::Remove(b.clone())
            },
        ]
    );
    // Changes to other keys are not seen.
    let other = unique_key("watch-other");
    registry
        .register(Instance::new(other, "tcp://127.0.0.1:7103"), lease.id)
        .await
        .unwrap();
    let c = Instance::new(key.clone(), "tcp://127.0.0.1:7104");
    let rc = registry.register(c.clone(), lease.id).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Change {
            revision: rc,
            change: Change::Insert(c)
        }
    );
    registry.revoke(lease.id).await.unwrap();
}

pub async fn watch_resumes_from_a_revision(registry: &dyn Registry) {
    let key = unique_key("resume");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7201");
    let ra = registry.register(a.clone(), lease.id).await.unwrap();
    // Changes made while nobody watched.
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7202");
    let rb = registry.register(b.clone(), lease.id).await.unwrap();
    let rd = registry.deregister(&key, &a.id).await.unwrap();

    let mut watch = registry.watch(&key, Some(ra)).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Change {
            revision: rb,
            change: Change::Insert(b.clone())
        }
    );
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Change {
            revision: rd,
            change: Change::Remove(a.clone())
        }
    );
    // And then live changes.
    let c = Instance::new(key.clone(), "tcp://127.0.0.1:7203");
    let rc = registry.register(c.clone(), lease.id).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Change {
            revision: rc,
            change: Change::Insert(c)
        }
    );
    registry.revoke(lease.id).await.unwrap();
}

/// `ttl` is the lease TTL to test with; the caller's clock must let it pass (paused time, or
/// real time for a short TTL).
pub async fn expiry_removes_instances_and_notifies_watchers(
    registry: &dyn Registry,
    ttl: Duration,
) {
    let key = unique_key("expiry");
    let kept = registry.grant(Duration::from_secs(600)).await.unwrap();
    let short = registry.grant(ttl).await.unwrap();
    let stays = Instance::new(key.clone(), "tcp://127.0.0.1:7301");
    let goes = Instance::new(key.clone(), "tcp://127.0.0.1:7302");
    registry.register(stays.clone(), kept.id).await.unwrap();
    registry.register(goes.clone(), short.id).await.unwrap();
    let mut watch = registry.watch(&key, None).await.unwrap();
    let WatchEvent::Snapshot(s) = next(&mut watch).await else {
        panic!("snapshot first")
    };
    assert_eq!(s.instances.len(), 2);

    // Nobody keeps `short` alive: its instance is removed and the watcher told.
    let WatchEvent::Change { change, .. } = next(&mut watch).await else {
        panic!("a change after the snapshot")
    };
    assert_eq!(change, Change::Remove(goes));
    assert_eq!(
        registry.discover(&key).await.unwrap().instances,
        vec![stays]
    );
    assert_eq!(
        registry.keep_alive(short.id).await.unwrap_err(),
        RegistryError::LeaseNotFound(short.id)
    );
    registry.revoke(kept.id).await.unwrap();
}

pub async fn keep_alive_extends_a_lease(registry: &dyn Registry, ttl: Duration) {
    let key = unique_key("keepalive");
    let lease = registry.grant(ttl).await.unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7401");
    registry.register(a.clone(), lease.id).await.unwrap();
    // Renew at a third of the TTL for three TTLs.
    for _ in 0..9 {
        tokio::time::sleep(ttl / 3).await;
        registry.keep_alive(lease.id).await.unwrap();
    }
    assert_eq!(registry.discover(&key).await.unwrap().instances, vec![a]);
    registry.revoke(lease.id).await.unwrap();
}

pub async fn revoke_removes_every_instance_of_the_lease(registry: &dyn Registry) {
    let key = unique_key("revoke");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    for port in 7501..7504 {
        registry
            .register(
                Instance::new(key.clone(), format!("tcp://127.0.0.1:{port}")),
                lease.id,
            )
            .await
            .unwrap();
    }
    assert_eq!(registry.discover(&key).await.unwrap().instances.len(), 3);
    registry.revoke(lease.id).await.unwrap();
    assert!(registry.discover(&key).await.unwrap().instances.is_empty());
    assert_eq!(
        registry.revoke(lease.id).await.unwrap_err(),
        RegistryError::LeaseNotFound(lease.id)
    );
}

pub async fn bad_requests_are_errors(registry: &dyn Registry) {
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    let unknown = rpc_registry::LeaseId(lease.id.0.wrapping_add(1_000_000));
    let key = unique_key("bad");
    assert_eq!(
        registry
            .register(Instance::new(key.clone(), "tcp://127.0.0.1:7601"), unknown)
            .await
            .unwrap_err(),
        RegistryError::LeaseNotFound(unknown)
    );
    assert_eq!(
        registry.keep_alive(unknown).await.unwrap_err(),
        RegistryError::LeaseNotFound(unknown)
    );
    let nameless = Instance::new(ServiceKey::new(""), "tcp://127.0.0.1:7602");
    assert!(matches!(
        registry.register(nameless, lease.id).await.unwrap_err(),
        RegistryError::Invalid(_)
    ));
    registry.revoke(lease.id).await.unwrap();
}

/// Every page from the first to the one without `next`.
pub async fn pages(registry: &dyn Registry, key: &ServiceKey, first: PageRequest) -> Vec<Page> {
    let mut request = first;
    let mut pages = Vec::new();
    loop {
        let page = registry.discover_page(key, &request).await.unwrap();
        let next = page.next.clone();
        pages.push(page);
        match next {
            Some(after) => request.after = Some(after),
            None => return pages,
        }
    }
}

pub async fn discover_pages_cover_every_instance_once(registry: &dyn Registry) {
    let key = unique_key("pages");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    // Registered out of id order.
    for n in [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 4, 6] {
        let instance = Instance::new(key.clone(), format!("tcp://127.0.0.1:{}", 7700 + n))
            .with_id(format!("i-{n:02}"));
        registry.register(instance, lease.id).await.unwrap();
    }
    let whole = registry.discover(&key).await.unwrap();
    assert_eq!(whole.instances.len(), 12);

    let by_five = pages(registry, &key, PageRequest::first().with_limit(5)).await;
    let sizes: Vec<usize> = by_five.iter().map(|p| p.instances.len()).collect();
    assert_eq!(sizes, [5, 5, 2]);
    assert_eq!(by_five[0].next.as_deref(), Some("i-04"));
    let joined: Vec<Instance> = by_five.iter().flat_map(|p| p.instances.clone()).collect();
    assert_eq!(joined, whole.instances);
    // Nothing changed between the pages, and each says so.
    for page in &by_five {
        assert_eq!(page.changed, by_five[0].changed);
        assert!(page.changed <= page.revision);
    }

    // A byte budget smaller than one instance still moves on, one instance a page.
    let by_bytes = pages(registry, &key, PageRequest::first().with_max_bytes(1)).await;
    assert_eq!(by_bytes.len(), 12);
    assert!(by_bytes.iter().all(|p| p.instances.len() == 1));

    // A cursor past the last id: an empty last page.
    let past = PageRequest::first().after("i-99");
    let page = registry.discover_page(&key, &past).await.unwrap();
    assert!(page.instances.is_empty());
    assert_eq!(page.next, None);
    registry.revoke(lease.id).await.unwrap();
}

pub async fn a_change_between_pages_shows_in_changed(registry: &dyn Registry) {
    let key = unique_key("pages-change");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    for n in 0..4 {
        let instance = Instance::new(key.clone(), format!("tcp://127.0.0.1:{}", 7800 + n))
            .with_id(format!("i-{n}"));
        registry.register(instance, lease.id).await.unwrap();
    }
    let two = PageRequest::first().with_limit(2);
    let first = registry.discover_page(&key, &two).await.unwrap();
    let after = first.next.clone().expect("two more instances follow");
    let late = Instance::new(key.clone(), "tcp://127.0.0.1:7899").with_id("i-9");
    let registered = registry.register(late, lease.id).await.unwrap();
    let second = registry
        .discover_page(&key, &two.clone().after(after))
        .await
        .unwrap();
    assert!(
        second.changed > first.changed && second.changed >= registered,
        "{first:?} then {second:?}"
    );
    registry.revoke(lease.id).await.unwrap();
}

/// `count` instances of about 250 bytes each (as JSON): over RPC, more than one frame holds when
/// the frame is small.
pub async fn a_large_snapshot_arrives_whole(registry: &dyn Registry, count: usize) {
    let key = unique_key("large");
    let lease = registry.grant(Duration::from_secs(600)).await.unwrap();
    for i in 0..count {
        let endpoint = format!("tcp://10.1.{}.{}:7000", i / 250, i % 250);
        let instance = Instance::new(key.clone(), endpoint)
            .with_id(format!("i-{i:05}"))
            .with_metadata("name", "x".repeat(100));
        registry.register(instance, lease.id).await.unwrap();
    }
    let whole = registry.discover(&key).await.unwrap();
    assert_eq!(whole.instances.len(), count);

    let mut watch = registry.watch(&key, None).await.unwrap();
    assert_eq!(next(&mut watch).await, WatchEvent::Snapshot(whole.clone()));
    // Changes follow the snapshot as usual.
    let late = Instance::new(key.clone(), "tcp://10.1.255.255:7000");
    let revision = registry.register(late.clone(), lease.id).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        WatchEvent::Change {
            revision,
            change: Change::Insert(late)
        }
    );
    registry.revoke(lease.id).await.unwrap();
}
