//! The server programs serve Prometheus metrics with `--metrics ADDR`: each runs as a separate
//! process on 127.0.0.1, answers real calls, and its scraped counters show them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use examples::hello::GreeterClient;
use futures::StreamExt;
use rpc_core::Client;
use rpc_registry::{Instance, Registry, RemoteRegistry, ServiceKey};
use support::{Running, free_port, metric, scrape};

/// Starts `bin` listening on a free port with metrics on another; returns the server, its RPC
/// endpoint and its metrics address, once it said both.
fn start(bin: &str, ready: &str) -> (Running, String, String) {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Running::start(bin, &["--listen", &endpoint, "--metrics", &metrics], ready);
    let line = server.lines.recv_timeout(Running::WAIT).unwrap();
    assert_eq!(line, format!("metrics on http://{metrics}/metrics"));
    (server, endpoint, metrics)
}

async fn scrape_async(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_server_counts_its_calls() {
    let (_server, endpoint, metrics) =
        start(env!("CARGO_BIN_EXE_hello-server"), "serving hello.Greeter");
    let hello = [
        ("service", "hello.Greeter"),
        ("method", "hello"),
        ("status", "ok"),
    ];
    let before = scrape_async(&metrics).await;
    assert_eq!(metric(&before, "rpc_server_calls_total", &hello), Some(0.0));

    let greeter = GreeterClient::new(Client::connect(&endpoint).await.unwrap());
    for _ in 0..2 {
        greeter.hello("tester".into()).await.unwrap();
    }
    let items: Vec<_> = greeter.countdown(3).await.unwrap().collect().await;
    assert_eq!(items.len(), 3);

    let after = scrape_async(&metrics).await;
    assert_eq!(
        metric(&after, "rpc_server_calls_total", &hello),
        Some(2.0),
        "{after}"
    );
    let countdown = [
        ("service", "hello.Greeter"),
        ("method", "countdown"),
        ("status", "ok"),
    ];
    assert_eq!(
        metric(&after, "rpc_server_calls_total", &countdown),
        Some(1.0)
    );
    assert_eq!(metric(&after, "rpc_server_connections", &[]), Some(1.0));
    assert!(metric(&after, "rpc_server_bytes_read_total", &[]).unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_server_counts_instances_leases_and_watchers() {
    let (_server, endpoint, metrics) = start(env!("CARGO_BIN_EXE_registry-server"), "listening on");
    let before = scrape_async(&metrics).await;
    assert_eq!(
        metric(&before, "registry_leases", &[]),
        Some(0.0),
        "{before}"
    );
    assert_eq!(metric(&before, "registry_watchers", &[]), Some(0.0));

    let registry = RemoteRegistry::new(Client::connect(&endpoint).await.unwrap());
    let key = ServiceKey::new("demo.Metrics");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    for port in [7001, 7002] {
        let instance = Instance::new(key.clone(), format!("tcp://127.0.0.1:{port}"));
        registry.register(instance, lease.id).await.unwrap();
    }
    let mut watch = registry.watch(&key, None).await.unwrap();
    watch.next().await.unwrap().unwrap();

    let after = scrape_async(&metrics).await;
    let by_service = [("service", "demo.Metrics")];
    assert_eq!(
        metric(&after, "registry_instances", &by_service),
        Some(2.0),
        "{after}"
    );
    assert_eq!(metric(&after, "registry_leases", &[]), Some(1.0));
    assert_eq!(metric(&after, "registry_watchers", &[]), Some(1.0));
    let register = [
        ("service", "rpc.Registry"),
        ("method", "register"),
        ("status", "ok"),
    ];
    assert_eq!(
        metric(&after, "rpc_server_calls_total", &register),
        Some(2.0)
    );
}
