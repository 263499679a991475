//! The shared conformance suite against a real etcd (started by the test on free loopback
//! ports), with a short real lease TTL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
#![cfg(feature = "etcd")]

#[path = "support/etcd_server.rs"]
mod etcd_server;
mod support;

use std::time::Duration;

use etcd_server::EtcdServer;
use rpc_registry::{EtcdConfig, EtcdRegistry};
use support::conformance;

/// etcd's smallest lease TTL with its default settings.
const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_against_etcd() {
    let server = EtcdServer::start();
    let registry = EtcdRegistry::connect(EtcdConfig::new([server.endpoint()]))
        .await
        .expect("connect to the test etcd");
    conformance::register_discover_deregister(&registry).await;
    conformance::watch_sees_a_snapshot_then_changes_in_order(&registry).await;
    conformance::watch_resumes_from_a_revision(&registry).await;
    conformance::expiry_removes_instances_and_notifies_watchers(&registry, TTL).await;
    conformance::keep_alive_extends_a_lease(&registry, TTL).await;
    conformance::revoke_removes_every_instance_of_the_lease(&registry).await;
    conformance::bad_requests_are_errors(&registry).await;
    conformance::discover_pages_cover_every_instance_once(&registry).await;
    conformance::a_change_between_pages_shows_in_changed(&registry).await;
    conformance::a_large_snapshot_arrives_whole(&registry, 300).await;
}
