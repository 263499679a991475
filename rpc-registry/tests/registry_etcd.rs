//! The etcd backend against a real etcd, which each test starts on free loopback ports (see
//! `support/etcd_server.rs`; it needs the `etcd` binary, `apt-get install etcd-server`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
#![cfg(feature = "etcd")]

#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use futures::StreamExt;
use rpc_registry::{
    Change, EtcdConfig, EtcdRegistry, Instance, LeaseId, Registry, RegistryError, ServiceKey,
    Snapshot, WatchEvent, WatchStream,
};

/// The longest any single expected event may take (lease expiry included).
const WAIT: Duration = Duration::from_secs(10);
/// A lease TTL long enough to outlive any test.
const LONG: Duration = Duration::from_secs(60);

async fn connect(server: &EtcdServer) -> EtcdRegistry {
    EtcdRegistry::connect(EtcdConfig::new([server.endpoint()]))
        .await
        .expect("connect to the test etcd")
}

async fn raw_client(server: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([server.endpoint()], None)
        .await
        .expect("connect to the test etcd")
}

async fn next(watch: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a watch event in time")
        .expect("the watch is still open")
        .expect("a watch event, not an error")
}

async fn next_snapshot(watch: &mut WatchStream) -> Snapshot {
    match next(watch).await {
        WatchEvent::Snapshot(snapshot) => snapshot,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn change(revision: u64, change: Change) -> WatchEvent {
    WatchEvent::Change { revision, change }
}

fn ids(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.instances.iter().map(|i| i.id.as_str()).collect()
}

#[tokio::test]
async fn register_discover_deregister() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    // Names with `/` and `%` in every segment: these two keys must not see each other.
    let key = ServiceKey::new("demo/Greeter")
        .with_version("1%0")
        .with_group("a/b");
    let near = ServiceKey::new("demo")
        .with_version("Greeter/1%0")
        .with_group("a");
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7002").with_weight(5);
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7001").with_metadata("zone", "a");
    let pct = Instance::new(key.clone(), "tcp://127.0.0.1:7003").with_id("%/");
    let rb = registry.register(b.clone(), lease.id).await.unwrap();
    let ra = registry.register(a.clone(), lease.id).await.unwrap();
    let rp = registry.register(pct.clone(), lease.id).await.unwrap();
    assert!(rb < ra && ra < rp, "revisions grow: {rb}, {ra}, {rp}");
    registry
        .register(
            Instance::new(near.clone(), "tcp://127.0.0.1:7004"),
            lease.id,
        )
        .await
        .unwrap();

    let snapshot = registry.discover(&key).await.unwrap();
    assert!(snapshot.revision > rp);
    // Ordered by id, not by etcd key.
    assert_eq!(snapshot.instances, vec![pct.clone(), a.clone(), b.clone()]);
    assert_eq!(
        ids(&registry.discover(&near).await.unwrap()),
        ["tcp://127.0.0.1:7004"]
    );
    assert!(
        registry
            .discover(&ServiceKey::new("demo"))
            .await
            .unwrap()
            .instances
            .is_empty()
    );

    // The documented layout, with the instance as JSON.
    let stored = raw_client(&server)
        .await
        .get(
            "/rpc/registry/demo%2FGreeter/1%250/a%2Fb/tcp:%2F%2F127.0.0.1:7001",
            None,
        )
        .await
        .unwrap();
    let value: Instance = serde_json::from_slice(stored.kvs()[0].value()).unwrap();
    assert_eq!(value, a);

    let rd = registry.deregister(&key, &a.id).await.unwrap();
    assert!(rd > snapshot.revision);
    assert_eq!(
        ids(&registry.discover(&key).await.unwrap()),
        ["%/", "tcp://127.0.0.1:7002"]
    );
    // Removing what is not there changes nothing.
    assert_eq!(registry.deregister(&key, &a.id).await.unwrap(), rd);
}

#[tokio::test]
async fn watch_starts_with_a_snapshot_then_inserts_updates_and_removes_in_order() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    let other_lease = registry.grant(LONG).await.unwrap();
    let key = ServiceKey::new("demo.Greeter").with_version("1.0");
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7101");
    let ra = registry.register(a.clone(), lease.id).await.unwrap();

    let mut watch = registry.watch(&key, None).await.unwrap();
    let snapshot = next_snapshot(&mut watch).await;
    assert_eq!(snapshot.instances, vec![a.clone()]);
    assert!(snapshot.revision >= ra);

    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7102");
    let rb = registry.register(b.clone(), lease.id).await.unwrap();
    // The same data again writes nothing...
    assert_eq!(registry.register(a.clone(), lease.id).await.unwrap(), rb);
    // ...and under another lease it is rewritten, but that is not a change either.
    registry.register(a.clone(), other_lease.id).await.unwrap();
    let a2 = a.clone().with_weight(7).with_health(false);
    let ra2 = registry.register(a2.clone(), other_lease.id).await.unwrap();
    let rd = registry.deregister(&key, &b.id).await.unwrap();

    assert_eq!(
        next(&mut watch).await,
        change(rb, Change::Insert(b.clone()))
    );
    assert_eq!(
        next(&mut watch).await,
        change(ra2, Change::Update(a2.clone()))
    );
    assert_eq!(next(&mut watch).await, change(rd, Change::Remove(b)));
    // `a` now lives on `other_lease` only.
    registry.revoke(lease.id).await.unwrap();
    assert_eq!(registry.discover(&key).await.unwrap().instances, vec![a2]);
}

#[tokio::test]
async fn watch_resumes_after_a_revision() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    let key = ServiceKey::new("demo.Resume");
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7201");
    let ra = registry.register(a.clone(), lease.id).await.unwrap();
    // Changes made while nobody watched.
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7202");
    let rb = registry.register(b.clone(), lease.id).await.unwrap();
    let b2 = b.clone().with_metadata("build", "2");
    let rb2 = registry.register(b2.clone(), lease.id).await.unwrap();
    let rd = registry.deregister(&key, &a.id).await.unwrap();

    let mut watch = registry.watch(&key, Some(ra)).await.unwrap();
    assert_eq!(next(&mut watch).await, change(rb, Change::Insert(b)));
    assert_eq!(
        next(&mut watch).await,
        change(rb2, Change::Update(b2.clone()))
    );
    assert_eq!(next(&mut watch).await, change(rd, Change::Remove(a)));
    // Then live changes.
    let c = Instance::new(key.clone(), "tcp://127.0.0.1:7203");
    let rc = registry.register(c.clone(), lease.id).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        change(rc, Change::Insert(c.clone()))
    );

    // Resuming from the latest revision replays nothing.
    let mut watch = registry.watch(&key, Some(rc)).await.unwrap();
    let rd2 = registry.deregister(&key, &b2.id).await.unwrap();
    assert_eq!(next(&mut watch).await, change(rd2, Change::Remove(b2)));
}

#[tokio::test]
async fn watch_from_a_compacted_or_future_revision_starts_with_a_snapshot() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    let key = ServiceKey::new("demo.Compacted");
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7301");
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7302");
    let ra = registry.register(a.clone(), lease.id).await.unwrap();
    registry.register(b.clone(), lease.id).await.unwrap();
    let rd = registry.deregister(&key, &a.id).await.unwrap();
    raw_client(&server)
        .await
        .compact(i64::try_from(rd).unwrap(), None)
        .await
        .unwrap();

    let mut watch = registry.watch(&key, Some(ra)).await.unwrap();
    let snapshot = next_snapshot(&mut watch).await;
    assert_eq!(snapshot.instances, vec![b.clone()]);
    assert!(snapshot.revision >= rd);
    let c = Instance::new(key.clone(), "tcp://127.0.0.1:7303");
    let rc = registry.register(c.clone(), lease.id).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        change(rc, Change::Insert(c.clone()))
    );

    // A revision etcd has not reached (another cluster, a restored backup): start over.
    let mut watch = registry.watch(&key, Some(rc + 1000)).await.unwrap();
    let snapshot = next_snapshot(&mut watch).await;
    assert_eq!(snapshot.instances, vec![b.clone(), c]);
    assert_eq!(snapshot.revision, rc);
    let rd = registry.deregister(&key, &b.id).await.unwrap();
    assert_eq!(next(&mut watch).await, change(rd, Change::Remove(b)));
}

#[tokio::test]
async fn an_expired_lease_removes_its_instances_and_watchers_see_it() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let key = ServiceKey::new("demo.Expiry");
    let kept = registry.grant(LONG).await.unwrap();
    let short = registry.grant(Duration::from_secs(2)).await.unwrap();
    assert_eq!(short.ttl, Duration::from_secs(2));
    let stays = Instance::new(key.clone(), "tcp://127.0.0.1:7401");
    let goes = Instance::new(key.clone(), "tcp://127.0.0.1:7402");
    registry.register(stays.clone(), kept.id).await.unwrap();
    registry.register(goes.clone(), short.id).await.unwrap();
    let mut watch = registry.watch(&key, None).await.unwrap();
    assert_eq!(next_snapshot(&mut watch).await.instances.len(), 2);

    // Nobody renews `short`: etcd removes its instance and the watcher is told, within the
    // TTL and etcd's expiry check interval (`WAIT` bounds it).
    let started = Instant::now();
    let WatchEvent::Change { change, .. } = next(&mut watch).await else {
        panic!("a change after the snapshot");
    };
    assert_eq!(change, Change::Remove(goes));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "removed before its TTL"
    );
    assert_eq!(
        registry.discover(&key).await.unwrap().instances,
        vec![stays]
    );
    assert_eq!(
        registry.keep_alive(short.id).await.unwrap_err(),
        RegistryError::LeaseNotFound(short.id)
    );
}

#[tokio::test]
async fn keep_alive_keeps_instances_past_the_ttl() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let key = ServiceKey::new("demo.KeepAlive");
    let ttl = Duration::from_secs(2);
    let lease = registry.grant(ttl).await.unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7501");
    registry.register(a.clone(), lease.id).await.unwrap();
    let started = Instant::now();
    while started.elapsed() < ttl * 3 / 2 {
        tokio::time::sleep(ttl / 3).await;
        let renewed = registry.keep_alive(lease.id).await.unwrap();
        assert_eq!(renewed.id, lease.id);
        assert_eq!(renewed.ttl, ttl);
    }
    assert_eq!(registry.discover(&key).await.unwrap().instances, vec![a]);
}

#[tokio::test]
async fn revoke_removes_every_instance_of_the_lease() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    let key = ServiceKey::new("demo.Revoke");
    let elsewhere = ServiceKey::new("demo.Revoke").with_group("canary");
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7601");
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7602");
    for instance in [
        &a,
        &b,
        &Instance::new(elsewhere.clone(), "tcp://127.0.0.1:7603"),
    ] {
        registry.register(instance.clone(), lease.id).await.unwrap();
    }
    let mut watch = registry.watch(&key, None).await.unwrap();
    assert_eq!(next_snapshot(&mut watch).await.instances.len(), 2);

    registry.revoke(lease.id).await.unwrap();
    // One etcd revision removes them all.
    let first = next(&mut watch).await;
    let second = next(&mut watch).await;
    assert_eq!(first.revision(), second.revision());
    let WatchEvent::Change { change: first, .. } = first else {
        panic!("{first:?}")
    };
    let WatchEvent::Change { change: second, .. } = second else {
        panic!("{second:?}")
    };
    let mut removed = [first, second];
    removed.sort_by(|x, y| x.instance().id.cmp(&y.instance().id));
    assert_eq!(removed, [Change::Remove(a), Change::Remove(b)]);
    assert!(registry.discover(&key).await.unwrap().instances.is_empty());
    assert!(
        registry
            .discover(&elsewhere)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    assert_eq!(
        registry.revoke(lease.id).await.unwrap_err(),
        RegistryError::LeaseNotFound(lease.id)
    );
}

#[tokio::test]
async fn unknown_leases_and_bad_requests_are_errors() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(Duration::from_millis(2500)).await.unwrap();
    // Whole seconds, rounded up.
    assert_eq!(lease.ttl, Duration::from_secs(3));
    let key = ServiceKey::new("demo.Bad");
    let instance = Instance::new(key.clone(), "tcp://127.0.0.1:7701");
    for unknown in [LeaseId(lease.id.0.wrapping_add(1_000_000)), LeaseId(0)] {
        assert_eq!(
            registry
                .register(instance.clone(), unknown)
                .await
                .unwrap_err(),
            RegistryError::LeaseNotFound(unknown)
        );
        assert_eq!(
            registry.keep_alive(unknown).await.unwrap_err(),
            RegistryError::LeaseNotFound(unknown)
        );
        assert_eq!(
            registry.revoke(unknown).await.unwrap_err(),
            RegistryError::LeaseNotFound(unknown)
        );
    }
    assert!(registry.discover(&key).await.unwrap().instances.is_empty());
    assert!(matches!(
        registry.grant(Duration::ZERO).await.unwrap_err(),
        RegistryError::Invalid(_)
    ));
    let nameless = Instance::new(ServiceKey::new(""), "tcp://127.0.0.1:7702");
    assert!(matches!(
        registry.register(nameless, lease.id).await.unwrap_err(),
        RegistryError::Invalid(_)
    ));
}

#[tokio::test]
async fn keys_do_not_see_each_others_changes() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    let key = ServiceKey::new("demo");
    // Keys whose etcd ranges would overlap `demo`'s without escaping or the closing `/`.
    let others = [
        ServiceKey::new("demo/x"),
        ServiceKey::new("demox"),
        ServiceKey::new("demo").with_version("1"),
        ServiceKey::new("demo").with_group("g"),
    ];
    let mut watch = registry.watch(&key, None).await.unwrap();
    assert!(next_snapshot(&mut watch).await.instances.is_empty());
    for other in &others {
        let i = Instance::new(other.clone(), "tcp://127.0.0.1:7801");
        registry.register(i.clone(), lease.id).await.unwrap();
        registry.register(i.with_weight(1), lease.id).await.unwrap();
        registry
            .deregister(other, "tcp://127.0.0.1:7801")
            .await
            .unwrap();
    }
    // The first event is this key's own.
    let mine = Instance::new(key.clone(), "tcp://127.0.0.1:7801");
    let rm = registry.register(mine.clone(), lease.id).await.unwrap();
    assert_eq!(next(&mut watch).await, change(rm, Change::Insert(mine)));

    // And the other way round.
    let mut watch = registry.watch(&others[0], None).await.unwrap();
    assert!(next_snapshot(&mut watch).await.instances.is_empty());
    registry
        .deregister(&key, "tcp://127.0.0.1:7801")
        .await
        .unwrap();
    let theirs = Instance::new(others[0].clone(), "tcp://127.0.0.1:7802");
    let rt = registry.register(theirs.clone(), lease.id).await.unwrap();
    assert_eq!(next(&mut watch).await, change(rt, Change::Insert(theirs)));
}

#[tokio::test]
async fn prefixes_keep_registries_apart() {
    let server = EtcdServer::start();
    let mut config = EtcdConfig::new([server.endpoint()]);
    config.prefix = "/one".into();
    let one = EtcdRegistry::connect(config.clone()).await.unwrap();
    assert_eq!(one.config().prefix, "/one/");
    config.prefix = "/one/two/".into();
    let two = EtcdRegistry::connect(config).await.unwrap();
    let key = ServiceKey::new("demo.Prefix");
    let lease = one.grant(LONG).await.unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7901");
    // Leases are etcd's, shared by both.
    two.register(a.clone(), lease.id).await.unwrap();
    assert!(one.discover(&key).await.unwrap().instances.is_empty());
    assert_eq!(two.discover(&key).await.unwrap().instances, vec![a]);
}

#[tokio::test]
async fn values_that_are_not_instances_are_skipped() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let mut raw = raw_client(&server).await;
    let lease = registry.grant(LONG).await.unwrap();
    let key = ServiceKey::new("demo.Garbage");
    let elsewhere = Instance::new(ServiceKey::new("demo.Other"), "tcp://127.0.0.1:7001");
    let range = "/rpc/registry/demo.Garbage///";
    raw.put(format!("{range}junk"), "not json", None)
        .await
        .unwrap();
    // Valid JSON, but an instance of another key.
    raw.put(
        format!("{range}moved"),
        serde_json::to_vec(&elsewhere).unwrap(),
        None,
    )
    .await
    .unwrap();
    let a = Instance::new(key.clone(), "tcp://127.0.0.1:7002");
    registry.register(a.clone(), lease.id).await.unwrap();
    assert_eq!(
        registry.discover(&key).await.unwrap().instances,
        vec![a.clone()]
    );

    let mut watch = registry.watch(&key, None).await.unwrap();
    assert_eq!(next_snapshot(&mut watch).await.instances, vec![a]);
    raw.put(
        format!("{range}junk"),
        "{\"still\": \"not an instance\"}",
        None,
    )
    .await
    .unwrap();
    raw.delete(format!("{range}junk"), None).await.unwrap();
    raw.put(format!("{range}bytes"), vec![0xff, 0xfe], None)
        .await
        .unwrap();
    let b = Instance::new(key.clone(), "tcp://127.0.0.1:7003");
    let rb = registry.register(b.clone(), lease.id).await.unwrap();
    assert_eq!(next(&mut watch).await, change(rb, Change::Insert(b)));
}

#[tokio::test]
async fn connect_fails_when_etcd_is_not_there() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let mut config = EtcdConfig::new([format!("http://{address}")]);
    config.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = EtcdRegistry::connect(config).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < WAIT);
    let err = EtcdRegistry::connect(EtcdConfig::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn a_key_with_more_instances_than_one_grpc_message_holds() {
    let server = EtcdServer::start();
    let registry = connect(&server).await;
    let key = ServiceKey::new("crowded");
    let lease = registry.grant(LONG).await.unwrap();
    // 6 MiB of instances: more than the 4 MiB a gRPC client accepts in one message by default.
    let padding = "x".repeat(64 * 1024);
    for i in 0..96 {
        let instance = Instance::new(key.clone(), format!("tcp://10.0.0.{i}:7000"))
            .with_id(format!("i-{i:03}"))
            .with_metadata("padding", padding.clone());
        registry.register(instance, lease.id).await.unwrap();
    }
    let snapshot = registry.discover(&key).await.unwrap();
    assert_eq!(snapshot.instances.len(), 96);
    let mut watch = registry.watch(&key, None).await.unwrap();
    assert_eq!(next_snapshot(&mut watch).await, snapshot);
    // One revoke removes all of them in one revision: one watch response of 6 MiB of previous
    // values.
    registry.revoke(lease.id).await.unwrap();
    for _ in 0..96 {
        let WatchEvent::Change { change, .. } = next(&mut watch).await else {
            panic!("a change after the snapshot");
        };
        assert!(matches!(change, Change::Remove(_)));
    }
}

#[tokio::test]
async fn instances_read_in_several_ranges_are_all_there_once() {
    let server = EtcdServer::start();
    let mut config = EtcdConfig::new([server.endpoint()]);
    config.range_limit = 3;
    let registry = EtcdRegistry::connect(config).await.unwrap();
    let key = ServiceKey::new("ranged");
    let lease = registry.grant(LONG).await.unwrap();
    // Ids whose escaped keys sort differently from the ids.
    let ids: Vec<String> = (0..10)
        .map(|i| format!("{}{i}", ["a/", "a%", "a"][i % 3]))
        .collect();
    for id in &ids {
        let instance = Instance::new(key.clone(), "tcp://127.0.0.1:1").with_id(id.clone());
        registry.register(instance, lease.id).await.unwrap();
    }
    let snapshot = registry.discover(&key).await.unwrap();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(self::ids(&snapshot), expected);
    let mut watch = registry.watch(&key, None).await.unwrap();
    assert_eq!(next_snapshot(&mut watch).await, snapshot);
}
